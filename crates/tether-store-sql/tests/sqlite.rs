//! The conformance story on SQLite: every check on a fresh database file.

use std::sync::Arc;

use tether_store_sql::SqliteStore;
use tether_store_sql::conformance::{self, Fixture};

/// Runs one check on a fresh temp-file database, removed afterwards.
async fn run<F, Fut>(check: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("tether.db"))
            .await
            .expect("opens SQLite"),
    );
    check(Fixture::new(Arc::clone(&store))).await;
    store.close().await;
}

macro_rules! sqlite_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run(conformance::$name).await;
        }
    )*};
}

tether_store_sql::for_each_check!(sqlite_checks);

/// The whole story in one go, as another crate would run it, on in-memory
/// databases (the single-connection path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_story_in_memory() {
    conformance::run_all(|| async {
        Fixture::new(Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("opens in memory"),
        ))
    })
    .await;
}

/// A database written at migration 0003 (before definitions) keeps its rows
/// when this version opens it and applies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0003_keeps_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).expect("creates the migrations dir");
    let copied = conformance::copy_migrations_before("sqlite", 4, &old).expect("copies");
    assert_eq!(copied, 3, "migrations 0001 to 0003");
    let path = dir.path().join("tether.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("opens the old database");
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("reads the old migrations")
            .run(&pool)
            .await
            .expect("applies the old migrations");
        sqlx::raw_sql(&conformance::pre_defs_rows("sqlite"))
            .execute(&pool)
            .await
            .expect("writes rows the old way");
        pool.close().await;
    }
    let store = Arc::new(SqliteStore::open(&path).await.expect("upgrades"));
    conformance::upgraded_from_0003_keeps_data(Fixture::new(Arc::clone(&store))).await;
    store.close().await;
}

/// A database written at migration 0004 keeps its admin credentials, which
/// get ids and names, when this version applies 0005.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0004_keeps_admin_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).expect("creates the migrations dir");
    let copied = conformance::copy_migrations_before("sqlite", 5, &old).expect("copies");
    assert_eq!(copied, 4, "migrations 0001 to 0004");
    let path = dir.path().join("tether.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("opens the old database");
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("reads the old migrations")
            .run(&pool)
            .await
            .expect("applies the old migrations");
        sqlx::raw_sql(&conformance::pre_hardening_rows("sqlite"))
            .execute(&pool)
            .await
            .expect("writes rows the old way");
        pool.close().await;
    }
    let store = Arc::new(SqliteStore::open(&path).await.expect("upgrades"));
    conformance::upgraded_from_0004_keeps_admin_credentials(Fixture::new(Arc::clone(&store))).await;
    store.close().await;
}

/// Migrates a fresh SQLite file with `migrations` (a newer build's), as that
/// build would, and returns its path.
async fn migrated_by_newer_build(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
    alter_first: bool,
) -> std::path::PathBuf {
    let newer = dir.join("newer-migrations");
    std::fs::create_dir(&newer).expect("creates the migrations dir");
    conformance::newer_build_migrations("sqlite", &newer, extra, alter_first).expect("copies");
    let path = dir.join("tether.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("opens the database");
    sqlx::migrate::Migrator::new(newer.as_path())
        .await
        .expect("reads the newer migrations")
        .run(&pool)
        .await
        .expect("applies the newer migrations");
    pool.close().await;
    path
}

/// Rolling upgrades: this build opens (and reopens) a database a newer build
/// migrated with an expand-only migration it does not know, and works on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_a_database_with_newer_expand_only_migrations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = migrated_by_newer_build(dir.path(), &[conformance::NEWER_EXPAND], false).await;
    for _ in 0..2 {
        let store = Arc::new(SqliteStore::open(&path).await.expect("opens"));
        conformance::runs_against_a_newer_expand_only_schema(Fixture::new(Arc::clone(&store)))
            .await;
        store.close().await;
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens");
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("reads");
    assert_eq!(newest, 9001, "the newer build's migration stays recorded");
}

/// A contract migration of a newer build, or a changed released migration:
/// the store refuses to open, with the error the server turns into
/// TETHER-E8770 or E8771, and the database is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_newer_contract_migration_and_an_altered_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = migrated_by_newer_build(
        dir.path(),
        &[conformance::NEWER_EXPAND, conformance::NEWER_CONTRACT],
        false,
    )
    .await;
    match SqliteStore::open(&path).await {
        Err(tether_store::StoreError::SchemaTooNew(m)) => {
            assert!(
                m.contains("9002 (contract drop policy jitter percent)"),
                "{m}"
            )
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = migrated_by_newer_build(dir.path(), &[], true).await;
    match SqliteStore::open(&path).await {
        Err(tether_store::StoreError::MigrationAltered(m)) => {
            assert!(m.contains("migration 1 "), "{m}")
        }
        other => panic!("expected MigrationAltered, got {:?}", other.map(|_| ())),
    }
}
