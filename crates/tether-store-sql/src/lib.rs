//! SQLite and PostgreSQL backends of the Tether store.
//!
//! [`connect`] picks the backend from a URL. Both backends share one
//! implementation of [`Store`] (`store_impl.rs`), one set of SQL text
//! (`sql.rs`) and one row decoder (`row.rs`); each backend module holds only
//! its pools, its migrations and the few statements whose dialect differs.
//! The `conformance` feature exposes the story both backends are tested
//! with.
//!
//! Architecture Invariant: no SQL string is built from values. Values are
//! always bound; the only interpolation is a PostgreSQL schema name checked
//! against `[a-z_][a-z0-9_]*` first.

use std::path::PathBuf;
use std::sync::Arc;

use tether_store::{Store, StoreError};

mod batch;
mod error;
pub mod migrations;
mod row;
mod sql;
#[macro_use]
mod store_impl;
#[macro_use]
mod tasks;
#[macro_use]
mod certs;
#[macro_use]
mod leases;
#[macro_use]
mod upgrades;
#[macro_use]
mod audit;
#[macro_use]
mod rollouts;
#[macro_use]
mod renewals;
#[macro_use]
mod revocation;
#[macro_use]
mod acme;
pub mod backup;
mod postgres;
mod sqlite;
mod wakeups;

#[cfg(feature = "conformance")]
pub mod conformance;
mod seed;

pub use postgres::{
    DEFAULT_POOL_SIZE as DEFAULT_PG_POOL_SIZE, MIN_POOL_SIZE as MIN_PG_POOL_SIZE, PgSettings,
    PostgresStore, SslMode,
};
pub use seed::seed_agents;
pub use sqlite::SqliteStore;

/// The URL forms [`connect`] accepts, for error messages.
pub const ACCEPTED_URLS: &str = "sqlite:///absolute/path/tether.db, sqlite://relative/path.db, sqlite::memory:, postgres://… or postgresql://…";

/// Opens the store a database URL names, applying pending migrations.
///
/// Accepted: `sqlite:///abs/path/tether.db`, `sqlite://relative.db`,
/// `sqlite::memory:`, `postgres://…` and `postgresql://…`.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, &PgSettings::default()).await
}

/// Like [`connect`], with the server's PostgreSQL settings (TLS, pool size)
/// over the URL's; SQLite ignores them.
pub async fn connect_with(url: &str, pg: &PgSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match Target::parse(url)? {
        Target::SqliteFile(path) => Arc::new(SqliteStore::open(&path).await?),
        Target::SqliteMemory => Arc::new(SqliteStore::open_in_memory().await?),
        Target::Postgres => Arc::new(PostgresStore::connect_with(url, pg).await?),
    })
}

/// What a database URL names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    SqliteFile(PathBuf),
    SqliteMemory,
    Postgres,
}

impl Target {
    fn parse(url: &str) -> Result<Target, StoreError> {
        if url == "sqlite::memory:" {
            return Ok(Target::SqliteMemory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            // `sqlite:///abs` leaves `/abs`, `sqlite://rel.db` leaves `rel.db`.
            if path.is_empty() {
                return Err(StoreError::InvalidUrl(format!(
                    "the SQLite URL names no file; expected one of {ACCEPTED_URLS}"
                )));
            }
            return Ok(Target::SqliteFile(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres);
        }
        // Only the scheme is echoed: the rest of a URL may hold a password.
        let scheme = match url.split_once(':') {
            Some((scheme, _)) => format!("scheme {scheme:?}"),
            None => String::from("no scheme"),
        };
        Err(StoreError::InvalidUrl(format!(
            "unsupported database URL ({scheme}); expected one of {ACCEPTED_URLS}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Target::parse("sqlite::memory:").ok(),
            Some(Target::SqliteMemory)
        );
        assert_eq!(
            Target::parse("sqlite:///var/lib/tether/tether.db").ok(),
            Some(Target::SqliteFile(PathBuf::from(
                "/var/lib/tether/tether.db"
            )))
        );
        assert_eq!(
            Target::parse("sqlite://data/tether.db").ok(),
            Some(Target::SqliteFile(PathBuf::from("data/tether.db")))
        );
        assert_eq!(
            Target::parse("postgres://u@h/db").ok(),
            Some(Target::Postgres)
        );
        assert_eq!(
            Target::parse("postgresql://u@h/db").ok(),
            Some(Target::Postgres)
        );
    }

    #[test]
    fn unknown_urls_name_the_accepted_forms_but_not_the_password() {
        for url in [
            "mysql://root:hunter2@db/tether",
            "tether.db",
            "sqlite://",
            "sqlite:tether.db",
        ] {
            let Err(StoreError::InvalidUrl(message)) = Target::parse(url) else {
                panic!("{url} was accepted");
            };
            assert!(
                message.contains("sqlite::memory:") && message.contains("postgres://"),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[tokio::test]
    async fn connect_opens_sqlite_in_memory_and_on_disk() {
        let memory = connect("sqlite::memory:").await.expect("opens in memory");
        assert_eq!(memory.backend(), "sqlite");
        memory.ping().await.expect("pings");

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tether.db");
        let url = format!("sqlite://{}", path.display());
        assert!(url.starts_with("sqlite:///"), "{url}");
        let file = connect(&url).await.expect("opens on disk");
        assert!(file.policy("default").await.expect("reads").is_some());
        assert!(path.exists());
    }

    #[tokio::test]
    async fn connect_rejects_unknown_schemes() {
        let Err(e) = connect("redis://127.0.0.1/").await else {
            panic!("redis accepted");
        };
        assert!(matches!(e, StoreError::InvalidUrl(_)), "{e:?}");
        assert!(!e.is_retriable());
    }
}
