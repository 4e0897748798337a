//! The sweeper: declares agents Inactive once they are silent past their
//! deadline. It runs every `sweep_interval`, reads "now" from the injected
//! clock, and works through overdue agents in bounded batches. While the
//! store fails it declares nobody Inactive, and the outage's grace is given
//! before it sweeps again (see [`crate::service::outage`]). With several
//! servers on one database, only the holder of the `status-sweeper` lease
//! sweeps ([`crate::singleton`]).

use std::time::Duration;

use tether_store::{StatusChange, StoreError};
use tether_wire::AgentStatus;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::service::{Ctx, outage};
use crate::singleton::Job;
use crate::status::overdue_reason_for;

/// Agents fetched per batch.
pub const BATCH: u32 = 1000;
/// Batches per sweep; the rest waits for the next tick, so one sweep can
/// never monopolise the store.
pub const MAX_BATCHES: usize = 100;

/// One sweep. Returns how many agents became Inactive.
pub async fn sweep_once(ctx: &Ctx) -> Result<usize, StoreError> {
    let now = ctx.now();
    let mut changed = 0;
    for _ in 0..MAX_BATCHES {
        let overdue = ctx.store.overdue_agents(now, BATCH).await?;
        let mut applied_in_batch = 0;
        for agent in &overdue {
            let reason = overdue_reason_for(agent, now);
            let change = StatusChange {
                from: AgentStatus::Active,
                to: AgentStatus::Inactive,
                reason,
            };
            match ctx.store.change_status(agent.id, &change, now).await {
                Ok(true) => {
                    applied_in_batch += 1;
                    info!(agent_id = %agent.id, reason = %change.reason, "agent became inactive");
                }
                // A check-in or removal won the race; nothing to do.
                Ok(false) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        changed += applied_in_batch;
        // A short batch was the last; a batch where nothing applied would
        // only return the same rows again.
        if overdue.len() < BATCH as usize || applied_in_batch == 0 {
            break;
        }
    }
    if changed > 0 {
        debug!(changed, "sweep finished");
    }
    Ok(changed)
}

/// Sweeps every `interval` until `stop` turns true.
pub async fn run(ctx: Ctx, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // The heartbeat is this server's own, so it beats whoever sweeps.
                if !outage::before_sweep(&ctx).await {
                    continue;
                }
                if !ctx.singletons.holds(Job::StatusSweeper) {
                    continue;
                }
                if let Err(error) = sweep_once(&ctx).await {
                    outage::observe(&ctx, &error);
                    warn!(error = %error, "sweep failed; retrying at the next tick");
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    debug!("sweeper stopped");
}
