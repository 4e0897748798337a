//! The SQLite backend: one file, WAL mode, a single-connection writer pool
//! and a multi-connection reader pool.
//!
//! SQLite allows one writer at a time. Funnelling every write through one
//! pooled connection makes writes queue in the pool (cheap, fair, bounded by
//! the acquire timeout) instead of racing for the file lock and spinning on
//! `SQLITE_BUSY`; WAL lets the readers run concurrently with that writer.
//! Write transactions still start with `BEGIN IMMEDIATE`, so that another
//! process writing the same file cannot make a transaction fail half way when
//! it upgrades from a read lock to a write lock.
//!
//! Durability: WAL with `synchronous=NORMAL` survives a crash of the process
//! but may lose the last commits on power loss. That is acceptable for
//! check-ins (the next one rewrites them) but not for what an agent or an
//! admin acts on once and never repeats: an enrollment (the agent holds a
//! credential the database forgot), a token's use, a revocation. Those run on
//! the writer connection switched to `synchronous=FULL` for the transaction
//! ([`SqliteStore::durable_conn`]), which fsyncs the WAL at commit.
//!
//! The database file is created mode 0600: it holds every secret's hash and
//! every agent's facts. SQLite gives the `-wal` and `-shm` files the same mode.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tether_store::StoreError;

use crate::batch::Batcher;

use crate::error;
use crate::migrations;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Readers are cheap in WAL mode; a few cover a small machine's cores.
const READERS: u32 = 4;

/// A [`tether_store::Store`] on a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    /// The same pool as `writer` for an in-memory database, which exists
    /// only inside its one connection.
    reader: SqlitePool,
    path: Option<PathBuf>,
    /// Check-ins without a status change, group-committed (see batch.rs).
    checkins: Batcher,
    /// The `synchronous` level read back on the connection of the last
    /// durable write (2 is FULL), so tests can assert it.
    durable_level: Arc<AtomicI64>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let unavailable = |e: sqlx::Error| {
            StoreError::Unavailable(format!(
                "could not open SQLite database {}: {e}",
                path.display()
            ))
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        Self::migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            checkins: Batcher::spawn(Self::batch_writer(writer.clone()), 1),
            writer,
            reader,
            path: Some(path.to_owned()),
            durable_level: Arc::default(),
        })
    }

    /// Applies this build's migrations under the rolling-upgrade rule
    /// (migrations.rs): refuses a contract migration of a newer build and a
    /// changed released one, runs against newer expand-only ones.
    async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        migrations::check(&MIGRATOR.migrations, &Self::applied(pool).await?)?;
        migrations::tolerant(&MIGRATOR)
            .run(pool)
            .await
            .map_err(|e| error::migrate("SQLite", e))?;
        let unknown = migrations::check(&MIGRATOR.migrations, &Self::applied(pool).await?)?;
        migrations::log_unknown("SQLite", &unknown);
        Ok(())
    }

    /// The rows of `_sqlx_migrations`, none before the first migration.
    async fn applied(pool: &SqlitePool) -> Result<Vec<migrations::Applied>, StoreError> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
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

    /// A private in-memory database, gone when the store is dropped. For
    /// tests and demos.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(error::db)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The database lives in this one connection: it must never be closed
        // for idleness or age.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("could not open in-memory SQLite database: {e}"))
            })?;
        Self::migrate(&pool).await?;
        Ok(SqliteStore {
            checkins: Batcher::spawn(Self::batch_writer(pool.clone()), 1),
            writer: pool.clone(),
            reader: pool,
            path: None,
            durable_level: Arc::default(),
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Nothing: `BEGIN IMMEDIATE` already serializes lessors (see tasks.rs).
    const TASK_LOCK: &'static str = "";

    /// SQLite has no row locks: the `BEGIN IMMEDIATE` transaction already
    /// holds the database's write lock, so a plain read is enough (and
    /// `FOR UPDATE` is a syntax error here).
    const LOCK_AGENT_STATUS: &'static str =
        "SELECT status FROM agents WHERE id = $1 AND removed_at IS NULL";

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// How a write transaction starts on a connection from [`Self::durable_conn`].
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// Every admin credential that is not revoked. The `BEGIN IMMEDIATE`
    /// transaction already holds the write lock, so no row lock is needed.
    const LOCK_ACTIVE_ADMIN_CREDENTIALS: &'static str =
        "SELECT id FROM admin_credentials WHERE revoked_at IS NULL";

    /// The writer connection, switched to `synchronous=FULL` (and checked)
    /// for one transaction that must survive power loss. Hand it back with
    /// [`Self::release_durable`].
    async fn durable_conn(&self) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        let mut conn = self.writer.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?;
        self.durable_level.store(level, Ordering::SeqCst);
        if level < 2 {
            return Err(sqlx::Error::Protocol(format!(
                "SQLite kept synchronous={level} where FULL (2) was set"
            )));
        }
        Ok(conn)
    }

    /// Back to `synchronous=NORMAL` for the check-in path. Should that fail,
    /// the connection stays at FULL, which is slower but never less safe.
    async fn release_durable(&self, conn: &mut PoolConnection<Sqlite>) {
        if let Err(error) = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut **conn)
            .await
        {
            tracing::warn!(%error, "could not set the SQLite writer back to synchronous=NORMAL");
        }
    }

    /// The `synchronous` level (0 OFF, 1 NORMAL, 2 FULL) the last durable
    /// write ran with; 0 before the first.
    pub fn last_durable_synchronous(&self) -> i64 {
        self.durable_level.load(Ordering::SeqCst)
    }

    /// The writer connection's `synchronous` level now.
    pub async fn writer_synchronous(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .map_err(error::db)
    }
}

/// Creates the database file mode 0600 if it does not exist yet, so it is
/// never readable by others, not even for a moment.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "could not create SQLite database {}: {e}",
            path.display()
        ))),
    }
}

impl_task_store!(SqliteStore);
impl_cert_store!(SqliteStore);
impl_lease_store!(SqliteStore);
impl_upgrade_store!(SqliteStore);
impl_audit_store!(SqliteStore);
impl_rollout_store!(SqliteStore);
impl_renewal_store!(SqliteStore);
impl_revocation_store!(SqliteStore);
impl_acme_issuer_store!(SqliteStore);
impl_store!(SqliteStore, "sqlite", SqlitePool);

/// One server owns the file: its own hub wakes its polls.
impl tether_store::TaskWakeups for SqliteStore {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_database_uses_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("opens");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.reader)
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.writer)
            .await
            .expect("pragma");
        assert_eq!(fk, 1);
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.writer)
            .await
            .expect("pragma");
        assert_eq!(sync, 1, "NORMAL is 1");
    }

    /// A committed enrollment must survive power loss, which a kill -9
    /// cannot show (WAL survives it): the connection that enrolls runs
    /// `synchronous=FULL`, and the check-in path is back at NORMAL after.
    #[tokio::test]
    async fn the_connection_that_enrolls_runs_synchronous_full() {
        use tether_store::Store;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("opens");
        let at = time::macros::datetime!(2026-05-17 19:16 UTC);
        let token = tether_store::NewToken {
            id: uuid::Uuid::new_v4(),
            hash: [7; 32],
            kind: tether_wire::AgentKind::Discovery,
            group: "g".into(),
            policy: "default".into(),
            not_before: at,
            expires_at: at + time::Duration::hours(1),
            max_uses: Some(1),
            require_approval: false,
            created_at: at,
        };
        store.insert_token(&token).await.expect("inserts");
        assert_eq!(store.last_durable_synchronous(), 2, "token creation");
        store.durable_level.store(0, Ordering::SeqCst);
        let agent_id = uuid::Uuid::new_v4();
        store
            .enroll(&tether_store::Enrollment {
                token_id: token.id,
                agent_id,
                replaces: None,
                name: "a".into(),
                kind: token.kind,
                group: "g".into(),
                policy: "default".into(),
                credential_hash: [8; 32],
                requires_approval: false,
                version: "1.0.0".into(),
                facts: tether_wire::HostFacts::default(),
                external_ip: None,
                at,
                status: tether_wire::AgentStatus::Pending,
                reason: "enrolled".into(),
            })
            .await
            .expect("enrolls");
        assert_eq!(
            store.last_durable_synchronous(),
            2,
            "the enrolling connection ran synchronous=FULL"
        );
        assert_eq!(
            store.writer_synchronous().await.expect("reads"),
            1,
            "the writer is back at NORMAL for check-ins"
        );
        assert!(store.agent(agent_id).await.expect("reads").is_some());
    }

    #[tokio::test]
    async fn a_new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        use tether_store::Store;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).await.expect("opens");
        store.ping().await.expect("pings");
        for file in [path.clone(), dir.path().join("t.db-wal")] {
            let mode = std::fs::metadata(&file)
                .expect("the file exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", file.display());
        }
    }

    #[tokio::test]
    async fn overdue_queries_are_served_by_their_index() {
        let store = SqliteStore::open_in_memory().await.expect("opens");
        for sql in [crate::sql::OVERDUE_AGENTS, crate::sql::RAISE_SWEEP_AT] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(0_i64)
                    .bind(10_i64)
                    .fetch_all(&store.reader)
                    .await
                    .expect("explains");
            let detail: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
            assert!(
                detail
                    .iter()
                    .any(|d| d.contains("USING INDEX agents_sweep")),
                "plan: {detail:?}"
            );
            assert!(
                !detail.iter().any(|d| d.starts_with("SCAN agents")),
                "plan: {detail:?}"
            );
        }
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_remigrate() {
        use tether_store::Store;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let at = time::macros::datetime!(2026-05-17 19:16 UTC);
        {
            let store = SqliteStore::open(&path).await.expect("opens");
            store
                .upsert_policy(
                    "night",
                    &tether_store::PolicySettings {
                        checkin_interval_secs: 300,
                        jitter_percent: 5,
                        targets: Vec::new(),
                        defs: tether_wire::DefsPolicy::default(),
                        max_concurrent_tasks: None,
                    },
                    None,
                    at,
                )
                .await
                .expect("upserts");
            store.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("reopens");
        let policy = store.policy("night").await.expect("reads").expect("kept");
        assert_eq!((policy.revision, policy.checkin_interval_secs), (1, 300));
        let default = store
            .policy("default")
            .await
            .expect("reads")
            .expect("seeded once");
        assert_eq!(default.revision, 1);
    }
}
