//! Tasks on the agent: the long poll, one thread per running attempt, its
//! heartbeats, and the spool that delivers results.
//!
//! The check-in loop never waits for any of this. The poll, the heartbeats
//! and the result sender are small tasks on the agent's runtime that only
//! wait on the network; the work itself runs on a thread of its own with its
//! own current-thread runtime, started when a lease arrives and gone when
//! the attempt ends, so an idle agent keeps its idle footprint, and a stuck
//! or CPU-heavy task cannot delay a check-in, a heartbeat or another task.
//! Admin actions (doctor, definitions check) have a lane of their own
//! beside the `max_concurrent` slots, so a long scan never holds up an
//! admin's request and a stream of actions never starves scans. The number
//! of slots is the policy's `max_concurrent_tasks` ([`TaskLimit`]): the
//! check-in loop sets it from each reply, and the poll reads it each time it
//! asks for work, so a change takes effect at the next check-in without a
//! restart (running attempts are never stopped to honour a lower limit).
//!
//! Architecture Invariant: a result is on disk before it is sent, and
//! leaves the disk only when the server acknowledged it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_client::{ApiClient, ClientError};
use tether_wire::{ErrorCode, Heartbeat, Outcome, TaskKind, TaskLease, TaskOutcome, TaskPoll};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub mod deploy;
pub mod executor;
pub mod kinds;
pub mod spool;

use executor::{Executors, ProgressCell, ResultSink, Work};
use spool::Spool;

/// Slots for long work (scans, deployments) before any policy is known.
pub const DEFAULT_MAX_CONCURRENT: usize = tether_wire::DEFAULT_MAX_CONCURRENT_TASKS as usize;

/// How many long tasks may run at once: the policy's `max_concurrent_tasks`,
/// shared between the check-in loop that learns it and the poll that obeys
/// it. Values outside the policy's bounds (a broken or hostile server) are
/// clamped into them.
#[derive(Debug, Clone)]
pub struct TaskLimit(Arc<AtomicUsize>);

impl TaskLimit {
    pub fn new(n: u32) -> TaskLimit {
        let limit = TaskLimit(Arc::new(AtomicUsize::new(DEFAULT_MAX_CONCURRENT)));
        limit.set(n);
        limit
    }

    /// The limit from a policy, if the agent has one.
    pub fn from_policy(policy: Option<&tether_wire::Policy>) -> TaskLimit {
        TaskLimit::new(
            policy.map_or(tether_wire::DEFAULT_MAX_CONCURRENT_TASKS, |p| {
                p.max_concurrent_tasks
            }),
        )
    }

    /// Sets the limit, clamped to the policy's bounds; logs a change.
    pub fn set(&self, n: u32) {
        let n = n.clamp(
            tether_wire::MIN_MAX_CONCURRENT_TASKS,
            tether_wire::MAX_MAX_CONCURRENT_TASKS,
        ) as usize;
        let before = self.0.swap(n, Ordering::Relaxed);
        if before != n {
            tracing::info!(
                from = before,
                to = n,
                "long tasks at once changed by the policy"
            );
        }
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}
/// How long the agent asks the server to hold a poll: below a load
/// balancer's usual 60 s idle timeout.
pub const POLL_WAIT_SECS: u32 = 50;
/// The poll's HTTP timeout is the wait plus this margin.
pub const POLL_MARGIN: Duration = Duration::from_secs(20);
/// The longest pause between two polls after failures.
pub const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
/// The longest pause before resending spooled results: short, because a
/// finished attempt no longer heartbeats and its lease runs out.
pub const MAX_SEND_BACKOFF: Duration = Duration::from_secs(10);

/// What the worker needs.
pub struct TaskWorker {
    /// For the long poll: its HTTP timeout exceeds [`POLL_WAIT_SECS`].
    pub poll_client: ApiClient,
    /// For heartbeats and results.
    pub client: ApiClient,
    pub spool: Spool,
    pub executors: Executors,
    /// Long tasks at once, from the policy.
    pub max_concurrent: TaskLimit,
    pub poll_wait_secs: u32,
}

#[derive(Default)]
struct Shared {
    /// Running attempts by task, with whether each is an admin action.
    running: Mutex<HashMap<Uuid, bool>>,
    /// A running attempt ended: a slot is free.
    freed: Notify,
    /// A chunk was spooled.
    spooled: Arc<Notify>,
}

impl Shared {
    fn counts(&self) -> (usize, usize) {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let actions = r.values().filter(|a| **a).count();
        (r.len() - actions, actions)
    }
}

impl TaskWorker {
    /// Starts the poll and the result sender on the current runtime.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let shared = Arc::new(Shared::default());
        let this = Arc::new(self);
        tokio::spawn(send_results(
            this.client.clone(),
            this.spool.clone(),
            Arc::clone(&shared.spooled),
        ));
        let kinds = this.executors.kinds();
        let mut failures: u32 = 0;
        loop {
            let (long, actions) = shared.counts();
            let capacity =
                this.max_concurrent.get().saturating_sub(long) + usize::from(actions == 0);
            if capacity == 0 {
                // Every slot is busy: wait for one to free (bounded, so a
                // lost wake-up costs seconds, not the agent's work).
                let _ = tokio::time::timeout(Duration::from_secs(5), shared.freed.notified()).await;
                continue;
            }
            let poll = TaskPoll {
                wait_secs: this.poll_wait_secs,
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
                kinds: kinds.clone(),
            };
            match this.poll_client.poll_tasks(&poll).await {
                Ok(reply) => {
                    failures = 0;
                    for lease in reply.leases {
                        this.start(&shared, lease);
                    }
                    if let Some(secs) = reply.retry_after_secs {
                        tokio::time::sleep(Duration::from_secs(u64::from(secs.min(300)))).await;
                    }
                }
                Err(error) => {
                    let delay = crate::backoff::retry_delay(
                        failures,
                        MAX_POLL_BACKOFF,
                        error.retry_after(),
                        rand::random(),
                    );
                    failures = failures.saturating_add(1);
                    tracing::debug!(code = %error.code(), error = %error, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "task poll failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Starts one attempt: its thread and its supervisor.
    fn start(self: &Arc<Self>, shared: &Arc<Shared>, lease: TaskLease<serde_json::Value>) {
        let id = lease.task_id;
        let is_action = lease.kind.is_action();
        shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, is_action);
        tracing::info!(task_id = %id, kind = %lease.kind, epoch = lease.epoch, attempt = lease.attempt, "task leased");
        let this = Arc::clone(self);
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            this.supervise(&shared, lease).await;
            shared
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            shared.freed.notify_one();
        });
    }

    /// Runs an attempt on its own thread, heartbeating meanwhile, and spools
    /// its outcome.
    async fn supervise(&self, shared: &Shared, lease: TaskLease<serde_json::Value>) {
        let id = lease.task_id;
        let epoch = lease.epoch;
        let sink = ResultSink::new(id, epoch, self.spool.clone(), Arc::clone(&shared.spooled));
        let Some(executor) = self.executors.get(lease.kind) else {
            let _ = sink.end(TaskOutcome {
                outcome: Outcome::Failed,
                message: format!("this agent cannot run {} tasks", lease.kind),
            });
            return;
        };
        let progress = ProgressCell::default();
        let work = Work {
            lease: lease.clone(),
            progress: progress.clone(),
            results: sink.clone(),
            client: self.client.clone(),
        };
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("task-{}", &id.simple().to_string()[..8]))
            .spawn(move || {
                let outcome = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        tokio::select! {
                            biased;
                            _ = cancel_rx.wait_for(|c| *c) => Err(()),
                            o = executor.run(work) => Ok(o),
                        }
                    }),
                    Err(e) => Ok(Some(TaskOutcome {
                        outcome: Outcome::Failed,
                        message: format!("could not start the task's runtime: {e}"),
                    })),
                };
                let _ = done_tx.send(outcome);
            });
        if let Err(e) = spawned {
            let _ = sink.end(TaskOutcome {
                outcome: Outcome::Failed,
                message: format!("could not start the task's thread: {e}"),
            });
            return;
        }
        let every = Duration::from_secs(u64::from(lease.lease_secs.max(3) / 3));
        let mut abandoned = false;
        let mut cancelled = false;
        // The first heartbeat confirms the pickup (the server keeps an
        // unconfirmed lease only briefly).
        match self.heartbeat(id, epoch, None).await {
            Beat::Keep => {}
            Beat::Cancel => {
                cancelled = true;
                let _ = cancel_tx.send(true);
            }
            Beat::Gone(code) => {
                tracing::warn!(task_id = %id, code = %code, "the server no longer gives this attempt the task; dropping it");
                abandoned = true;
                let _ = cancel_tx.send(true);
            }
        }
        let finished = loop {
            tokio::select! {
                r = &mut done_rx => break r,
                () = tokio::time::sleep(every) => {
                    match self.heartbeat(id, epoch, progress.get()).await {
                        Beat::Keep => {}
                        Beat::Cancel => {
                            tracing::info!(task_id = %id, "the task was cancelled; stopping its work");
                            cancelled = true;
                            let _ = cancel_tx.send(true);
                        }
                        Beat::Gone(code) => {
                            tracing::warn!(task_id = %id, code = %code, "the server no longer gives this attempt the task; dropping it");
                            abandoned = true;
                            let _ = cancel_tx.send(true);
                        }
                    }
                }
            }
        };
        if abandoned {
            return;
        }
        let outcome = match finished {
            Ok(Ok(Some(outcome))) => outcome,
            Ok(Ok(None)) => {
                // Handed off: keep the lease alive until the server says the
                // task ended (the other component reported it).
                loop {
                    tokio::time::sleep(every).await;
                    if !matches!(self.heartbeat(id, epoch, None).await, Beat::Keep) {
                        return;
                    }
                }
            }
            Ok(Err(())) => TaskOutcome {
                outcome: Outcome::Cancelled,
                message: if cancelled {
                    "stopped: the task was cancelled".to_owned()
                } else {
                    "stopped".to_owned()
                },
            },
            Err(_) => TaskOutcome {
                outcome: Outcome::Failed,
                message: "the task's thread ended without an outcome (it panicked)".to_owned(),
            },
        };
        tracing::info!(task_id = %id, outcome = ?outcome.outcome, message = %outcome.message, "task attempt ended");
        if let Err(e) = sink.end(outcome) {
            tracing::error!(task_id = %id, error = %e, "could not spool the task's outcome; its lease will expire and it is retried");
        }
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        epoch: u64,
        progress: Option<tether_wire::Progress>,
    ) -> Beat {
        match self
            .client
            .task_heartbeat(id, &Heartbeat { epoch, progress })
            .await
        {
            Ok(reply) if reply.cancel => Beat::Cancel,
            Ok(_) => Beat::Keep,
            Err(ClientError::Api { error, .. }) if gone(error.code) => Beat::Gone(error.code),
            Err(error) => {
                // The server may be down: keep working; results are spooled.
                tracing::debug!(task_id = %id, code = %error.code(), error = %error, "heartbeat failed");
                Beat::Keep
            }
        }
    }
}

enum Beat {
    Keep,
    Cancel,
    Gone(ErrorCode),
}

/// Refusals that no retry can turn around: the attempt is over for us.
fn gone(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TaskStaleEpoch
            | ErrorCode::TaskNotLeased
            | ErrorCode::TaskFinal
            | ErrorCode::NotFound
    )
}

/// Chunks the server will never take: drop them rather than retry forever.
fn undeliverable(code: ErrorCode) -> bool {
    gone(code)
        || matches!(
            code,
            ErrorCode::InvalidField
                | ErrorCode::MalformedJson
                | ErrorCode::BodyTooLarge
                | ErrorCode::TaskResultTooLarge
        )
}

/// Sends spooled chunks in order; on a failure, backs off and starts over
/// from the oldest, so a chunk never overtakes the one before it.
async fn send_results(client: ApiClient, spool: Spool, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        let mut failed = None;
        for s in spool.list() {
            match client.task_result(s.task_id, &s.chunk).await {
                Ok(ack) => {
                    tracing::debug!(task_id = %s.task_id, chunk = s.chunk.chunk, stored = ack.stored, "result delivered");
                    spool.remove(&s);
                }
                Err(ClientError::Api { error, .. }) if undeliverable(error.code) => {
                    tracing::warn!(task_id = %s.task_id, chunk = s.chunk.chunk, code = %error.code, message = %error.message, "the server refused a result; dropping it");
                    spool.remove(&s);
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        match failed {
            None => {
                failures = 0;
                let _ = tokio::time::timeout(Duration::from_secs(30), wake.notified()).await;
            }
            Some(error) => {
                let delay = crate::backoff::retry_delay(
                    failures,
                    MAX_SEND_BACKOFF,
                    error.retry_after(),
                    rand::random(),
                );
                failures = failures.saturating_add(1);
                tracing::debug!(code = %error.code(), error = %error, "could not deliver results; they stay spooled");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = wake.notified() => {}
                }
            }
        }
    }
}

/// The kinds this build of the agent runs (for logs).
pub fn describe(executors: &Executors) -> String {
    executors
        .kinds()
        .iter()
        .map(|k: &TaskKind| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
