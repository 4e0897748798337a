//! Policies: the check-in interval and jitter agents follow.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tether_store::{PolicyRecord, PolicySettings};
use tether_wire::{Policy, PolicyUpdate};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Ctx, ServiceError, tokens::DEFAULT_POLICY, validate};

pub fn to_wire(p: &PolicyRecord) -> Policy {
    Policy {
        defs: p.defs.clone(),
        name: p.name.clone(),
        revision: p.revision,
        checkin_interval_secs: p.checkin_interval_secs,
        jitter_percent: p.jitter_percent,
        targets: p.targets.clone(),
        max_concurrent_tasks: p.max_concurrent_tasks,
    }
}

/// How long a policy read from the store is reused. Check-ins read their
/// policy every time and policies change rarely, so the hot path skips that
/// query. An update through this server clears the cache at once; other
/// servers sharing a PostgreSQL store see it within this time.
pub const POLICY_TTL: Duration = Duration::from_secs(2);

/// Policies by name, with the time they were read.
#[derive(Debug, Default)]
pub struct PolicyCache(RwLock<HashMap<String, (Policy, Instant)>>);

impl PolicyCache {
    fn get(&self, name: &str) -> Option<Policy> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .filter(|(_, at)| at.elapsed() < POLICY_TTL)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, name: &str, policy: &Policy) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(name.to_owned(), (policy.clone(), Instant::now()));
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The named policy, from the cache when fresh.
pub async fn resolve(ctx: &Ctx, name: &str) -> Result<Policy, ServiceError> {
    if let Some(p) = ctx.policies.get(name) {
        return Ok(p);
    }
    let p = resolve_uncached(ctx, name).await?;
    ctx.policies.put(name, &p);
    Ok(p)
}

/// The named policy, or the default one if it no longer exists (policies are
/// never deleted today, so that fallback only guards against a damaged store).
async fn resolve_uncached(ctx: &Ctx, name: &str) -> Result<Policy, ServiceError> {
    if let Some(p) = ctx.store.policy(name).await? {
        return Ok(to_wire(&p));
    }
    warn!(policy = %name, "policy missing; falling back to the default policy");
    match ctx.store.policy(DEFAULT_POLICY).await? {
        Some(p) => Ok(to_wire(&p)),
        None => Err(ServiceError::Store(tether_store::StoreError::Corrupt(
            format!("neither policy {name:?} nor {DEFAULT_POLICY:?} exists"),
        ))),
    }
}

pub async fn list(ctx: &Ctx) -> Result<Vec<Policy>, ServiceError> {
    Ok(ctx
        .store
        .list_policies()
        .await?
        .iter()
        .map(to_wire)
        .collect())
}

pub async fn upsert(ctx: &Ctx, name: &str, update: PolicyUpdate) -> Result<Policy, ServiceError> {
    validate::slug("name", name)?;
    validate::interval(update.checkin_interval_secs)?;
    validate::jitter(update.jitter_percent)?;
    validate::targets(&update.targets)?;
    validate::defs_policy(&update.defs)?;
    if let Some(n) = update.max_concurrent_tasks {
        validate::max_concurrent_tasks(n)?;
    }
    let p = ctx
        .store
        .upsert_policy(
            name,
            &PolicySettings {
                checkin_interval_secs: update.checkin_interval_secs,
                jitter_percent: update.jitter_percent,
                targets: update.targets,
                defs: update.defs,
                max_concurrent_tasks: update.max_concurrent_tasks,
            },
            update.if_revision,
            ctx.now(),
        )
        .await
        .map_err(|e| match e {
            // Our own message (the revisions), safe to show the admin.
            tether_store::StoreError::Conflict(m) if update.if_revision.is_some() => {
                ServiceError::Conflict(m)
            }
            e => ServiceError::Store(e),
        })?;
    ctx.policies.clear();
    info!(
        policy = %p.name,
        revision = p.revision,
        interval_secs = p.checkin_interval_secs,
        jitter_percent = p.jitter_percent,
        targets = p.targets.len(),
        max_concurrent_tasks = p.max_concurrent_tasks,
        "saved a policy"
    );
    Ok(to_wire(&p))
}
