//! The conformance story on PostgreSQL: every check in its own fresh schema,
//! dropped afterwards.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless
//! `TETHER_TEST_DATABASE_URL` says otherwise. If it cannot be reached these
//! tests fail with the reason; they are skipped only when
//! `TETHER_SKIP_POSTGRES=1` is set explicitly.

use std::sync::Arc;

use sqlx::Connection;
use tether_store_sql::PostgresStore;
use tether_store_sql::conformance::{self, Fixture};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_url() -> String {
    std::env::var("TETHER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn skipped() -> bool {
    std::env::var("TETHER_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// Runs one check in a fresh schema and drops the schema afterwards, even
/// when the check fails.
async fn run<F, Fut>(check: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
    let store = match PostgresStore::connect_in_schema(&url, &schema).await {
        Ok(store) => Arc::new(store),
        Err(e) => panic!(
            "PostgreSQL is required for these tests and could not be used: {e}. \
             Start it, point TETHER_TEST_DATABASE_URL at one, or set TETHER_SKIP_POSTGRES=1 to skip explicitly."
        ),
    };
    let outcome = tokio::spawn(check(Fixture::new(Arc::clone(&store)))).await;
    store.close().await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn drop_schema(url: &str, schema: &str) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connects to drop the test schema");
    // The name is ours, made of [a-z0-9_] only.
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .expect("drops the schema");
    conn.close().await.expect("closes");
}

macro_rules! postgres_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run(conformance::$name).await;
        }
    )*};
}

tether_store_sql::for_each_check!(postgres_checks);

/// `connect` reaches PostgreSQL through both URL schemes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_accepts_both_schemes() {
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
    // Run the migrations in a schema of its own, then point `connect` at it
    // through the URL's `options`, which is how an operator would do it too.
    let store = PostgresStore::connect_in_schema(&url, &schema)
        .await
        .expect("connects");
    store.close().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
    for scheme_url in [
        scoped.clone(),
        scoped.replacen("postgres://", "postgresql://", 1),
    ] {
        let store = tether_store_sql::connect(&scheme_url)
            .await
            .expect("connects by URL");
        assert_eq!(store.backend(), "postgres");
        store.ping().await.expect("pings");
        assert!(store.policy("default").await.expect("reads").is_some());
    }
    drop_schema(&url, &schema).await;
}

/// A database written at migration 0003 (before definitions) keeps its rows
/// when this version opens it and applies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0003_keeps_data() {
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("temp dir");
    let copied = conformance::copy_migrations_before("postgres", 4, dir.path()).expect("copies");
    assert_eq!(copied, 3, "migrations 0001 to 0003");
    {
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("connects to PostgreSQL");
        // The name is ours, made of [a-z0-9_] only.
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
        ))
        .execute(&mut conn)
        .await
        .expect("creates the schema");
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .expect("reads the old migrations")
            .run(&mut conn)
            .await
            .expect("applies the old migrations");
        sqlx::raw_sql(&conformance::pre_defs_rows("postgres"))
            .execute(&mut conn)
            .await
            .expect("writes rows the old way");
        conn.close().await.expect("closes");
    }
    let store = Arc::new(
        PostgresStore::connect_in_schema(&url, &schema)
            .await
            .expect("upgrades"),
    );
    let outcome = tokio::spawn(conformance::upgraded_from_0003_keeps_data(Fixture::new(
        Arc::clone(&store),
    )))
    .await;
    store.close().await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// PostgreSQL refuses NUL characters in text (SQLite stores them): the
/// refusal is a non-retriable `Conflict`, and nothing is half written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_as_conflict() {
    run(|f: Fixture| async move {
        let at = time::macros::datetime!(2026-05-17 19:16 UTC);
        let result = f
            .store
            .upsert_policy(
                "nul\0inside",
                &conformance::policy_settings(30, 10, &[]),
                None,
                at,
            )
            .await;
        match result {
            Err(tether_store::StoreError::Conflict(message)) => {
                assert!(message.contains("refused"), "{message}")
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(
            f.store.list_policies().await.expect("lists").len(),
            1,
            "only the default policy"
        );
    })
    .await;
}

/// A database written at migration 0004 keeps its admin credentials, which
/// get ids and names, when this version applies 0005.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0004_keeps_admin_credentials() {
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("temp dir");
    let copied = conformance::copy_migrations_before("postgres", 5, dir.path()).expect("copies");
    assert_eq!(copied, 4, "migrations 0001 to 0004");
    {
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("connects to PostgreSQL");
        // The name is ours, made of [a-z0-9_] only.
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
        ))
        .execute(&mut conn)
        .await
        .expect("creates the schema");
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .expect("reads the old migrations")
            .run(&mut conn)
            .await
            .expect("applies the old migrations");
        sqlx::raw_sql(&conformance::pre_hardening_rows("postgres"))
            .execute(&mut conn)
            .await
            .expect("writes rows the old way");
        conn.close().await.expect("closes");
    }
    let store = Arc::new(
        PostgresStore::connect_in_schema(&url, &schema)
            .await
            .expect("upgrades"),
    );
    let outcome = tokio::spawn(conformance::upgraded_from_0004_keeps_admin_credentials(
        Fixture::new(Arc::clone(&store)),
    ))
    .await;
    store.close().await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Migrates a fresh schema with a newer build's migrations (every real one
/// plus `extra`), as that build would; returns the schema's name.
async fn migrated_by_newer_build(extra: &[(&str, &str)], alter_first: bool) -> String {
    let url = database_url();
    let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("temp dir");
    conformance::newer_build_migrations("postgres", dir.path(), extra, alter_first)
        .expect("copies");
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("connects to PostgreSQL");
    // The name is ours, made of [a-z0-9_] only.
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
    ))
    .execute(&mut conn)
    .await
    .expect("creates the schema");
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("reads the newer migrations")
        .run(&mut conn)
        .await
        .expect("applies the newer migrations");
    conn.close().await.expect("closes");
    schema
}

/// Rolling upgrades: this build opens (and reopens) a database a newer build
/// migrated with an expand-only migration it does not know, and works on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_a_database_with_newer_expand_only_migrations() {
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let schema = migrated_by_newer_build(&[conformance::NEWER_EXPAND], false).await;
    let mut outcome = Ok(());
    for _ in 0..2 {
        let store = Arc::new(
            PostgresStore::connect_in_schema(&url, &schema)
                .await
                .expect("opens"),
        );
        outcome = tokio::spawn(conformance::runs_against_a_newer_expand_only_schema(
            Fixture::new(Arc::clone(&store)),
        ))
        .await;
        store.close().await;
        if outcome.is_err() {
            break;
        }
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
    let sql = format!("SELECT max(version) FROM \"{schema}\"._sqlx_migrations");
    let newest: i64 = sqlx::query_scalar(&sql)
        .fetch_one(&mut conn)
        .await
        .expect("reads");
    conn.close().await.expect("closes");
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(newest, 9001, "the newer build's migration stays recorded");
}

/// A contract migration of a newer build, or a changed released migration:
/// the store refuses to open, with the error the server turns into
/// TETHER-E8770 or E8771.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_newer_contract_migration_and_an_altered_one() {
    if skipped() {
        eprintln!("skipped: TETHER_SKIP_POSTGRES=1");
        return;
    }
    let url = database_url();
    let contract = migrated_by_newer_build(
        &[conformance::NEWER_EXPAND, conformance::NEWER_CONTRACT],
        false,
    )
    .await;
    let refused_contract = PostgresStore::connect_in_schema(&url, &contract).await;
    drop_schema(&url, &contract).await;
    let altered = migrated_by_newer_build(&[], true).await;
    let refused_altered = PostgresStore::connect_in_schema(&url, &altered).await;
    drop_schema(&url, &altered).await;
    match refused_contract {
        Err(tether_store::StoreError::SchemaTooNew(m)) => {
            assert!(
                m.contains("9002 (contract drop policy jitter percent)"),
                "{m}"
            )
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
    match refused_altered {
        Err(tether_store::StoreError::MigrationAltered(m)) => {
            assert!(m.contains("migration 1 "), "{m}")
        }
        other => panic!("expected MigrationAltered, got {:?}", other.map(|_| ())),
    }
}
