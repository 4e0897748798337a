//! What `tether backup` and `tether restore` need from the databases
//! themselves: a consistent copy of a live SQLite file (`VACUUM INTO`, which
//! reads inside one transaction while the server keeps writing) and whether
//! a PostgreSQL database already holds tables. The PostgreSQL dump itself is
//! pg_dump's job (tether-server's `backup` module runs it).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tether_store::StoreError;

use crate::{PgSettings, Target};

/// What a database URL names, for callers outside this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseKind {
    /// A SQLite file at this path.
    Sqlite(PathBuf),
    /// `sqlite::memory:`, which nothing can back up.
    SqliteMemory,
    Postgres,
}

/// Reads a database URL without connecting.
pub fn database_kind(url: &str) -> Result<DatabaseKind, StoreError> {
    Ok(match Target::parse(url)? {
        Target::SqliteFile(path) => DatabaseKind::Sqlite(path),
        Target::SqliteMemory => DatabaseKind::SqliteMemory,
        Target::Postgres => DatabaseKind::Postgres,
    })
}

/// Writes a consistent copy of the SQLite database at `db` to `dest` (which
/// must not exist) with `VACUUM INTO`, while other connections keep
/// writing. The live file is opened read-only and never created.
pub async fn sqlite_snapshot(db: &Path, dest: &Path) -> Result<(), StoreError> {
    let unavailable = |e: sqlx::Error| {
        StoreError::Unavailable(format!(
            "could not copy the SQLite database {}: {e}",
            db.display()
        ))
    };
    let options = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(30));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(unavailable)?;
    let target = dest.to_str().ok_or_else(|| {
        StoreError::Unavailable(format!("{} is not a UTF-8 path", dest.display()))
    })?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await
        .map_err(unavailable)?;
    conn.close().await.map_err(unavailable)?;
    Ok(())
}

/// How many tables the PostgreSQL database at `url` holds outside the
/// system schemas: a restore refuses a database that is not empty.
pub async fn postgres_table_count(url: &str, settings: &PgSettings) -> Result<i64, StoreError> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidUrl(format!("the PostgreSQL URL cannot be read: {e}")))?;
    if let Some(mode) = settings.ssl_mode {
        options = options.ssl_mode(mode.pg());
    }
    if let Some(ca) = &settings.ca_file {
        options = options.ssl_root_cert(ca);
    }
    let mut conn = PgConnection::connect_with(&options).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "could not connect to PostgreSQL at {}:{}: {e}",
            options.get_host(),
            options.get_port()
        ))
    })?;
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_catalog.pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(crate::error::db)?;
    let _ = conn.close().await;
    Ok(count)
}
