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
