//! Bulk enrollment for load tests and benchmarks.

use std::sync::Arc;

use tether_store::{Enrollment, NewToken, SecretHash, Store, StoreError};
use tether_wire::{AgentKind, AgentStatus, HostFacts};
use time::OffsetDateTime;
use uuid::Uuid;

/// How many enrollments run at once. SQLite serializes them anyway;
/// PostgreSQL turns the concurrency into group commits.
const WORKERS: usize = 16;

/// Enrolls `n` agents through [`Store::enroll`] with one fresh token without
/// a use limit, so seeded agents are indistinguishable from real ones.
/// `credential_hash(i)` gives the i-th agent's credential digest (the caller
/// keeps the secrets to check in with). Returns the agents' ids, the i-th
/// being the agent with `credential_hash(i)`, named `seed-{i}`.
///
/// Going through `enroll` keeps this backend-agnostic and exercises the real
/// write path. Measured rates are in the crate's `examples/store_bench.rs`
/// header.
pub async fn seed_agents(
    store: &Arc<dyn Store>,
    n: u32,
    credential_hash: impl Fn(u32) -> SecretHash + Send + Sync + 'static,
    at: OffsetDateTime,
) -> Result<Vec<Uuid>, StoreError> {
    let token = NewToken {
        id: Uuid::new_v4(),
        hash: unguessable_digest(),
        kind: AgentKind::Connector,
        group: String::from("seed"),
        policy: String::from("default"),
        not_before: at,
        expires_at: at + time::Duration::days(1),
        max_uses: None,
        require_approval: false,
        created_at: at,
    };
    store.insert_token(&token).await?;
    let ids: Arc<Vec<Uuid>> = Arc::new((0..n).map(|_| Uuid::new_v4()).collect());
    let credential_hash = Arc::new(credential_hash);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (store, ids, credential_hash) = (
            Arc::clone(store),
            Arc::clone(&ids),
            Arc::clone(&credential_hash),
        );
        let token_id = token.id;
        workers.spawn(async move {
            for (i, id) in (0..n).zip(ids.iter()).skip(worker).step_by(WORKERS) {
                store
                    .enroll(&seed_enrollment(token_id, *id, i, credential_hash(i), at))
                    .await?;
            }
            Ok::<(), StoreError>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| StoreError::Unavailable(format!("a seeding task failed: {e}")))??;
    }
    // Every worker has finished, so this is the only reference left.
    Ok(Arc::try_unwrap(ids).unwrap_or_else(|shared| (*shared).clone()))
}

fn seed_enrollment(
    token_id: Uuid,
    id: Uuid,
    i: u32,
    credential_hash: SecretHash,
    at: OffsetDateTime,
) -> Enrollment {
    Enrollment {
        token_id,
        agent_id: id,
        replaces: None,
        name: format!("seed-{i}"),
        kind: AgentKind::Connector,
        group: String::from("seed"),
        policy: String::from("default"),
        credential_hash,
        requires_approval: false,
        version: tether_wire::VERSION.to_owned(),
        facts: HostFacts {
            hostname: format!("seed-{i}"),
            os: String::from("linux"),
            internal_ips: vec![String::from("10.0.0.1")],
            uptime_secs: 1,
            installed_at: None,
        },
        external_ip: None,
        at,
        status: AgentStatus::Pending,
        reason: String::from("seeded"),
    }
}

/// A unique 32-byte value for a token nobody will ever present.
fn unguessable_digest() -> SecretHash {
    let mut hash = [0_u8; 32];
    hash[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    hash[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeds_agents_in_order_with_their_credentials() {
        let store: Arc<dyn Store> =
            Arc::new(crate::SqliteStore::open_in_memory().await.expect("opens"));
        let at = time::macros::datetime!(2026-05-17 19:16 UTC);
        let credential = |i: u32| {
            let mut hash = [7_u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            hash
        };
        let ids = seed_agents(&store, 100, credential, at)
            .await
            .expect("seeds");
        assert_eq!(ids.len(), 100);
        for i in [0_u32, 17, 99] {
            let agent = store
                .agent_by_credential(&credential(i))
                .await
                .expect("reads")
                .expect("seeded");
            assert_eq!(agent.id, ids[i as usize]);
            assert_eq!(agent.name, format!("seed-{i}"));
        }
        assert_eq!(
            store.list_agents(None, 1000).await.expect("lists").len(),
            100
        );
    }
}
