//! The retention job: status transitions, control-plane outages,
//! completed actions and admin audit entries older than their configured retention are deleted, in
//! bounded batches, once at start and then every [`EVERY`]. An agent's
//! newest transition is kept whatever its age, because it explains the
//! agent's current status.

use std::time::Duration;

use tether_store::StoreError;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Ctx;

/// How often the job runs.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement, so no transaction holds the store long.
pub const BATCH: u32 = 1000;
/// Statements per kind per run; the rest waits for the next run.
pub const MAX_BATCHES: usize = 100;

/// What one run deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub transitions: u64,
    pub outages: u64,
    pub actions: u64,
    pub audit: u64,
}

/// Deletes with `prune` until a batch comes back short.
async fn drain<F, Fut>(prune: F) -> Result<u64, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let n = prune().await?;
        total += n;
        if n < u64::from(BATCH) {
            break;
        }
        // Let check-ins through between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

fn days(n: u32) -> time::Duration {
    time::Duration::days(i64::from(n))
}

/// One run of the job.
pub async fn prune_once(ctx: &Ctx) -> Result<Pruned, StoreError> {
    let now = ctx.now();
    let mut pruned = Pruned::default();
    let keep = ctx.settings.transitions_retention_days;
    if keep > 0 {
        let before = now - days(keep);
        pruned.transitions = drain(|| ctx.store.prune_transitions(before, BATCH)).await?;
        pruned.outages = drain(|| ctx.store.prune_outages(before, BATCH)).await?;
    }
    let keep = ctx.settings.actions_retention_days;
    if keep > 0 {
        let before = now - days(keep);
        pruned.actions = drain(|| ctx.store.prune_completed_actions(before, BATCH)).await?
            // Doctor runs and definitions checks are tasks now; finished
            // tasks keep the same retention.
            + drain(|| ctx.store.prune_finished_tasks(before, BATCH)).await?;
    }
    let keep = ctx.settings.audit_retention_days;
    if keep > 0 {
        let before = now - days(keep);
        pruned.audit = drain(|| ctx.store.prune_audit(before, BATCH)).await?;
    }
    if pruned != Pruned::default() {
        info!(
            transitions = pruned.transitions,
            outages = pruned.outages,
            actions = pruned.actions,
            audit = pruned.audit,
            "deleted history past its retention"
        );
    }
    Ok(pruned)
}

/// Runs the job at start and every [`EVERY`] until `stop`.
pub async fn run(ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if !ctx.singletons.holds(crate::singleton::Job::Retention) {
            continue;
        }
        if let Err(error) = prune_once(&ctx).await {
            warn!(%error, "the retention job failed; it runs again in an hour");
        }
    }
    debug!("retention job stopped");
}
