//! The control plane's own outages. Silence the control plane caused is not
//! the agent's fault: after a start, and after the store recovers from a
//! failure, every Active agent gets a full inactivity threshold before the
//! sweeper may declare it Inactive, and the outage is recorded so that an
//! agent's history says why nothing changed.
//!
//! How an outage is seen:
//! - a restart: at start, the server reads when this instance was last alive
//!   (its heartbeat, written every [`HEARTBEAT_EVERY`]) and records the gap;
//! - a store failure: any request or sweep that the store failed marks the
//!   store as failing ([`Tracker::note_failure`]). While it fails, the
//!   sweeper declares nobody Inactive; at each tick it probes the store with
//!   a write (the heartbeat), and the first probe that succeeds records the
//!   outage and gives the grace.
//!
//! Granting the grace moves deadlines in the store ([`Store::record_outage`]),
//! so it holds across restarts and for every server sharing a PostgreSQL
//! store. A server that starts while others of the same store kept running
//! grants a grace they did not need; that costs at most one threshold of
//! delay before a dead agent is declared Inactive.
//!
//! [`Store::record_outage`]: tether_store::Store::record_outage

use std::sync::Mutex;
use std::time::Duration;

use tether_store::{NewOutage, StoreError};
use tether_wire::{ControlPlaneOutage, OutageKind};
use time::OffsetDateTime;
use tracing::{info, warn};
use uuid::Uuid;

use super::Ctx;

/// How often a running server records that it is alive. A restart's outage
/// starts at most this long before the server really stopped.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What the server knows about its own health.
#[derive(Debug)]
pub struct Tracker {
    /// This server's identity in `server_heartbeats` and outages.
    instance: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the store first failed, if it is failing now.
    failing_since: Option<OffsetDateTime>,
    /// When the heartbeat was last written.
    last_beat: Option<OffsetDateTime>,
}

impl Tracker {
    pub fn new(instance: impl Into<String>) -> Tracker {
        Tracker {
            instance: instance.into(),
            state: Mutex::default(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two timestamps; a panic elsewhere cannot leave it
        // half written, so a poisoned lock is still good to use.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store failed a request at `at`: an outage starts, unless one is
    /// already running.
    pub fn note_failure(&self, at: OffsetDateTime) {
        let mut st = self.state();
        if st.failing_since.is_none() {
            warn!(
                since = %crate::service::rfc(at),
                "the store is failing; no agent is declared Inactive until it recovers"
            );
            st.failing_since = Some(at);
        }
    }

    /// Since when the store has been failing, if it is.
    pub fn failing_since(&self) -> Option<OffsetDateTime> {
        self.state().failing_since
    }
}

/// Notes a store failure in `error` (one that may pass by itself).
pub fn observe(ctx: &Ctx, error: &StoreError) {
    if error.is_retriable() {
        ctx.outages.note_failure(ctx.now());
    }
}

/// At start: records the restart's outage (from this instance's last
/// heartbeat; a first start has none and is recorded with no down time) and
/// gives every Active agent a full threshold from now.
pub async fn on_start(ctx: &Ctx) -> Result<ControlPlaneOutage, StoreError> {
    let now = ctx.now();
    let last_alive = ctx.store.heartbeat(ctx.outages.instance(), now).await?;
    ctx.outages.state().last_beat = Some(now);
    let outage = ctx
        .store
        .record_outage(&NewOutage {
            id: Uuid::new_v4(),
            kind: OutageKind::Restart,
            instance: ctx.outages.instance().to_owned(),
            started_at: last_alive.unwrap_or(now).min(now),
            ended_at: now,
        })
        .await?;
    info!(
        down_secs = (outage.ended_at - outage.started_at).whole_seconds(),
        agents_given_grace = outage.agents_given_grace,
        "every Active agent has a full threshold from this start before it can be declared Inactive"
    );
    Ok(outage)
}

/// Before each sweep: beats the heartbeat when it is due and, while the
/// store is failing, probes it. Returns whether the sweep may run (the store
/// works and any outage has been recorded with its grace).
pub async fn before_sweep(ctx: &Ctx) -> bool {
    let now = ctx.now();
    let (failing_since, due) = {
        let st = ctx.outages.state();
        let due = st.last_beat.is_none_or(|b| {
            now - b >= time::Duration::try_from(HEARTBEAT_EVERY).unwrap_or_default()
        });
        (st.failing_since, due)
    };
    if failing_since.is_none() && !due {
        return true;
    }
    // The heartbeat is a write: it also proves the store takes writes again
    // (a held SQLite lock lets reads through).
    if let Err(error) = ctx.store.heartbeat(ctx.outages.instance(), now).await {
        if error.is_retriable() {
            // Failing since this attempt began, not since it gave up.
            ctx.outages.note_failure(now);
        }
        warn!(%error, "the store failed the heartbeat; sweeping waits");
        return failing_since.is_none() && !error.is_retriable();
    }
    ctx.outages.state().last_beat = Some(now);
    let Some(since) = failing_since else {
        return true;
    };
    // The grace runs from when the store took a write again, which may be
    // well after this tick began (a write waits for a lock).
    let back = ctx.now();
    match ctx
        .store
        .record_outage(&NewOutage {
            id: Uuid::new_v4(),
            kind: OutageKind::Store,
            instance: ctx.outages.instance().to_owned(),
            started_at: since,
            ended_at: back,
        })
        .await
    {
        Ok(outage) => {
            ctx.outages.state().failing_since = None;
            info!(
                down_secs = (outage.ended_at - outage.started_at).whole_seconds(),
                agents_given_grace = outage.agents_given_grace,
                "the store recovered; every Active agent has a full threshold from now"
            );
            true
        }
        Err(error) => {
            warn!(%error, "the store recovered the heartbeat but failed to record the outage");
            false
        }
    }
}
