//! The PostgreSQL backend: one pool of modest size (configurable), over TLS
//! when the URL or the server's settings ask for it ([`PgSettings`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use tether_store::StoreError;

use crate::batch::Batcher;

use crate::error;
use crate::migrations;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Enough to keep a couple of cores busy; PostgreSQL itself does the rest.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// One connection for a check-in batch writer and one for everything else.
pub const MIN_POOL_SIZE: u32 = 2;
/// Concurrent check-in batch writers (see batch.rs) at most, and never more
/// than half the pool; the rest of the pool serves reads and other writes.
const WRITERS: usize = 4;

/// How PostgreSQL's `sslmode` is spelled in the settings, and what it means
/// (libpq's meanings; `allow` is not offered, it is `prefer` reversed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise.
    Prefer,
    /// TLS or nothing, unverified.
    Require,
    /// TLS, the certificate chained to the CA file (or system roots).
    VerifyCa,
    /// Like `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The accepted spellings, for error messages.
    pub const ACCEPTED: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq spelling (`PGSSLMODE`), for pg_dump and pg_restore.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub(crate) fn pg(self) -> sqlx::postgres::PgSslMode {
        use sqlx::postgres::PgSslMode;
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// The server configuration's say over the PostgreSQL connection; each
/// `None` leaves what the URL says (or the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgSettings {
    pub ssl_mode: Option<SslMode>,
    /// A PEM file of the CA that signed PostgreSQL's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// The pool's size; [`DEFAULT_POOL_SIZE`] when `None`.
    pub pool_size: Option<u32>,
}
/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`tether_store::Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    /// Check-ins without a status change, group-committed (see batch.rs).
    checkins: Batcher,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies
    /// pending migrations in the connection's default schema.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_with(url, &PgSettings::default()).await
    }

    /// Like [`PostgresStore::connect`], with the server's settings over the
    /// URL's for TLS and the pool's size.
    pub async fn connect_with(
        url: &str,
        settings: &PgSettings,
    ) -> Result<PostgresStore, StoreError> {
        let mut options = parse(url)?;
        if let Some(mode) = settings.ssl_mode {
            options = options.ssl_mode(mode.pg());
        }
        if let Some(ca) = &settings.ca_file {
            // Read now, so a missing or unreadable file is named as such
            // rather than as a TLS failure on the first connection.
            let pem = std::fs::read(ca).map_err(|e| {
                StoreError::Tls(format!(
                    "cannot read the database CA file {}: {e}",
                    ca.display()
                ))
            })?;
            options = options.ssl_root_cert_from_pem(pem);
        }
        let size = settings
            .pool_size
            .unwrap_or(DEFAULT_POOL_SIZE)
            .max(MIN_POOL_SIZE);
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| unreachable_at(&options, e))?;
        Self::migrated(pool, None, size).await
    }

    /// Like [`PostgresStore::connect`], but creates `schema` if needed and
    /// keeps every table in it: each pooled connection sets its
    /// `search_path` to that schema alone. Tests use one schema per case.
    ///
    /// `schema` must be a lowercase SQL identifier (`[a-z_][a-z0-9_]*`, at
    /// most 63 bytes), because identifiers cannot be bound as parameters.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        check_schema_name(schema)?;
        let options = parse(url)?;
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| unreachable_at(&options, e))?;
        // Safe to interpolate: `check_schema_name` admits only [a-z0-9_].
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await
            .map_err(error::db)?;
        conn.close().await.map_err(error::db)?;

        let set_path: Arc<str> = Arc::from(format!("SET search_path TO \"{schema}\""));
        let pool = PgPoolOptions::new()
            .max_connections(DEFAULT_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let set_path = Arc::clone(&set_path);
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, &*set_path).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| unreachable_at(&options, e))?;
        Self::migrated(pool, Some(schema.to_owned()), DEFAULT_POOL_SIZE).await
    }

    async fn migrated(
        pool: PgPool,
        schema: Option<String>,
        size: u32,
    ) -> Result<PostgresStore, StoreError> {
        let writers = WRITERS.min(usize::try_from(size / 2).unwrap_or(1).max(1));
        Self::migrate(&pool).await?;
        tracing::debug!(schema = ?schema, "opened PostgreSQL store");
        Ok(PostgresStore {
            checkins: Batcher::spawn(Self::batch_writer(pool.clone()), writers),
            pool,
            schema,
        })
    }

    /// Applies this build's migrations under the rolling-upgrade rule
    /// (migrations.rs): refuses a contract migration of a newer build and a
    /// changed released one, runs against newer expand-only ones. Checked
    /// again after migrating, in case a newer server migrated meanwhile.
    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        migrations::check(&MIGRATOR.migrations, &Self::applied(pool).await?)?;
        migrations::tolerant(&MIGRATOR)
            .run(pool)
            .await
            .map_err(|e| error::migrate("PostgreSQL", e))?;
        let unknown = migrations::check(&MIGRATOR.migrations, &Self::applied(pool).await?)?;
        migrations::log_unknown("PostgreSQL", &unknown);
        Ok(())
    }

    /// The rows of `_sqlx_migrations` (in the connection's `search_path`),
    /// none before the first migration.
    async fn applied(pool: &PgPool) -> Result<Vec<migrations::Applied>, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(error::db)?;
        if !exists {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as(migrations::APPLIED)
            .fetch_all(pool)
            .await
            .map_err(error::db)?;
        Ok(migrations::applied_rows(rows))
    }

    /// The dedicated schema given to [`PostgresStore::connect_in_schema`].
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Appended to the lease query (see tasks.rs).
    const TASK_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";

    /// Locks the agent's row until the transaction ends, so the status read
    /// here is still the recorded one when the change is written.
    const LOCK_AGENT_STATUS: &'static str =
        "SELECT status FROM agents WHERE id = $1 AND removed_at IS NULL FOR UPDATE";

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// How a write transaction starts on a connection from [`Self::durable_conn`].
    const BEGIN_WRITE: &'static str = "BEGIN";

    /// Locks every admin credential that is not revoked until the
    /// transaction ends, so two concurrent revocations cannot both see
    /// "another one is left" and leave none.
    const LOCK_ACTIVE_ADMIN_CREDENTIALS: &'static str =
        "SELECT id FROM admin_credentials WHERE revoked_at IS NULL FOR UPDATE";

    /// Any connection: PostgreSQL's default `synchronous_commit = on`
    /// already makes every commit durable.
    async fn durable_conn(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    async fn release_durable(&self, _conn: &mut PoolConnection<Postgres>) {}
}

impl_task_store!(PostgresStore);
impl_cert_store!(PostgresStore);
impl_lease_store!(PostgresStore);
impl_upgrade_store!(PostgresStore);
impl_audit_store!(PostgresStore);
impl_rollout_store!(PostgresStore);
impl_renewal_store!(PostgresStore);
impl_revocation_store!(PostgresStore);
impl_acme_issuer_store!(PostgresStore);
impl_store!(PostgresStore, "postgres", PgPool);

fn parse(url: &str) -> Result<PgConnectOptions, StoreError> {
    // sqlx's parse errors do not echo the URL, so no password can leak here.
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidUrl(format!("PostgreSQL URL does not parse: {e}")))
}

/// Names where we tried to connect without the password the URL may hold.
/// A TLS failure is its own error: retrying cannot help.
fn unreachable_at(options: &PgConnectOptions, e: sqlx::Error) -> StoreError {
    let place = format!(
        "PostgreSQL at {}:{} (database {:?}, user {:?}, sslmode {})",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)"),
        options.get_username(),
        ssl_mode_name(options.get_ssl_mode()),
    );
    match e {
        sqlx::Error::Tls(tls) => StoreError::Tls(format!("{place}: {tls}")),
        // rustls's refusal (an unknown issuer, another name) reaches us
        // inside the I/O error of the handshake.
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            StoreError::Tls(format!("{place}: {io}"))
        }
        e => StoreError::Unavailable(format!("could not connect to {place}: {e}")),
    }
}

fn ssl_mode_name(mode: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode;
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::InvalidUrl(format!(
            "schema name {schema:?} is not a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("tether_test_0a1b").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "a\"b",
            "x; DROP SCHEMA public",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_schema_name(bad), Err(StoreError::InvalidUrl(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn connection_errors_never_show_the_password() {
        let options = parse("postgres://alice:s3cret@db.example:6543/tether").expect("parses");
        let e = unreachable_at(&options, sqlx::Error::PoolTimedOut);
        let text = e.to_string();
        assert!(text.contains("db.example:6543"), "{text}");
        assert!(text.contains("alice"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(e.is_retriable());
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        let e = unreachable_at(&options, sqlx::Error::Io(refused));
        assert!(matches!(e, StoreError::Tls(_)), "{e:?}");
        assert!(!e.is_retriable());
        let e = unreachable_at(
            &options,
            sqlx::Error::Tls("server does not support TLS".into()),
        );
        assert!(matches!(e, StoreError::Tls(_)), "{e:?}");
    }
}
