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
