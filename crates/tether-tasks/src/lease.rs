//! The lease, epoch and attempt state machine.
//!
//! ```text
//!            lease (epoch+1, attempt+1)
//!  Queued ───────────────────────────────► Leased ──ok──────────► Succeeded
//!    ▲  ▲                                   │ │ │
//!    │  └──── failed / expired, attempts left┘ │ └─cancelled──────► Cancelled
//!    │                                          └─failed / expired,
//!    │                                            last attempt ───► Dead
//!    └───────────────────── retry ◄──────────────── Dead | Cancelled
//! ```
//!
//! The epoch is a fencing token: it only ever grows, each lease takes the
//! next one, and a heartbeat or result carrying another epoch is refused
//! ([`Refusal::StaleEpoch`]), so an agent that comes back after its task
//! moved on cannot overwrite the newer attempt. A result with the current
//! epoch is still accepted after the lease expired, as long as no other
//! agent leased the task since: the work is done, and nobody else holds it.

use serde_json::Value;
use tether_wire::{
    AllowedHours, Approval, ApprovalState, Outcome, Progress, TaskInfo, TaskKind, TaskOutcome,
    TaskState, TaskTarget,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The longest back-off between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::minutes(5);
/// The first back-off; it doubles with each attempt.
pub const FIRST_RETRY_DELAY: Duration = Duration::seconds(5);
/// The longest error or reason kept, in characters.
pub const MAX_TEXT: usize = 1024;
/// A lease handed to a poll runs this long (at most) until the agent
/// confirms it with its first heartbeat, which it sends when it starts the
/// work. A poll held for an agent that went away meanwhile thus costs the
/// task seconds, not a whole visibility timeout, and no attempt.
pub const PICKUP_SECS: u32 = 15;

/// A task as stored: everything the state machine reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    pub id: Uuid,
    pub kind: TaskKind,
    pub spec: Value,
    pub target: TaskTarget,
    pub state: TaskState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub epoch: u64,
    pub lease_secs: u32,
    pub deadline_at: Option<OffsetDateTime>,
    pub allowed_hours: Option<AllowedHours>,
    /// The IANA zone `allowed_hours` is read in.
    pub tz: String,
    pub leased_to: Option<Uuid>,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub heartbeat_at: Option<OffsetDateTime>,
    pub progress: Option<Progress>,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    pub outcome: Option<TaskOutcome>,
    pub not_before: OffsetDateTime,
    pub schedule_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    /// Bumped by every write; the store's compare-and-set key.
    pub version: i64,
    /// Result chunks stored for the current epoch.
    pub result_chunks: u32,
    /// `Some` for a task created to wait for an admin's approval: while it
    /// is [`ApprovalState::Awaiting`] no agent may lease it.
    pub approval: Option<Approval>,
}

/// Why the state machine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("stale lease epoch {observed}: the task is at epoch {current} now")]
    StaleEpoch { observed: u64, current: u64 },
    #[error("the task is {state}{}", holder.map(|h| format!(" and leased to {h}")).unwrap_or_default())]
    NotLeased {
        state: TaskState,
        holder: Option<Uuid>,
    },
    #[error("the task already ended ({state})")]
    Final { state: TaskState },
    #[error("the task is {state}; only a dead-lettered or cancelled task can be retried")]
    NotRetriable { state: TaskState },
    #[error("the task is a {kind} task; only deploy tasks wait for an approval")]
    ApprovalNotApplicable { kind: TaskKind },
    #[error("the task was not created to wait for an approval; it is {state}")]
    NotHeld { state: TaskState },
    #[error("the task was already approved{}{}", by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default(), at.map(|t| format!(" at {}", hhmm(t))).unwrap_or_default())]
    AlreadyApproved {
        by: Option<String>,
        at: Option<OffsetDateTime>,
    },
}

/// What a finished attempt did to the task, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Requeued,
    Succeeded,
    Dead,
    Cancelled,
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

/// The back-off before attempt `attempt + 1`, after `attempt` attempts failed.
pub fn retry_delay(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    let d = FIRST_RETRY_DELAY * (1i32 << shift);
    d.min(MAX_RETRY_DELAY)
}

/// What every reason naming a hold for approval contains.
pub(crate) const APPROVAL_HOLD: &str = "awaiting an admin's approval";

/// The reason a held task gives, wherever task reasons show.
pub fn awaiting_approval(id: Uuid) -> String {
    format!("{APPROVAL_HOLD} (tether certs approve {id})")
}

/// `10:02` in UTC, for reasons; the full time is in the task's fields.
pub fn hhmm(at: OffsetDateTime) -> String {
    format!("{:02}:{:02} UTC", at.hour(), at.minute())
}

impl TaskSnapshot {
    /// Whether the lease holder is `agent` and the epoch is current.
    fn fence(&self, agent: Uuid, epoch: u64) -> Result<(), Refusal> {
        if epoch != self.epoch {
            return Err(Refusal::StaleEpoch {
                observed: epoch,
                current: self.epoch,
            });
        }
        if self.state.is_final() {
            return Err(Refusal::Final { state: self.state });
        }
        if self.leased_to != Some(agent) {
            return Err(Refusal::NotLeased {
                state: self.state,
                holder: self.leased_to,
            });
        }
        Ok(())
    }

    fn touched(mut self, now: OffsetDateTime) -> TaskSnapshot {
        self.updated_at = now;
        self
    }

    /// Whether the task waits for an admin's approval: no agent may lease
    /// it, so nothing on its target changes.
    pub fn held(&self) -> bool {
        self.approval
            .as_ref()
            .is_some_and(|a| a.state == ApprovalState::Awaiting)
    }

    /// Whether an approval decision may be taken on the task now.
    fn decidable(&self) -> Result<(), Refusal> {
        if self.kind != TaskKind::Deploy {
            return Err(Refusal::ApprovalNotApplicable { kind: self.kind });
        }
        let Some(approval) = &self.approval else {
            return Err(Refusal::NotHeld { state: self.state });
        };
        match approval.state {
            ApprovalState::Approved => Err(Refusal::AlreadyApproved {
                by: approval.by.clone(),
                at: approval.at,
            }),
            _ if self.state.is_final() => Err(Refusal::Final { state: self.state }),
            ApprovalState::Rejected => Err(Refusal::Final {
                state: TaskState::Cancelled,
            }),
            ApprovalState::Awaiting => Ok(()),
        }
    }

    /// An admin (`by`, the credential's name) releases a held task: agents
    /// may lease it from now on, within its allowed hours.
    pub fn approve(&self, by: &str, now: OffsetDateTime) -> Result<TaskSnapshot, Refusal> {
        self.decidable()?;
        let mut t = self.clone();
        let by = cut(by);
        t.reason = Some(format!("approved by {by} at {}", hhmm(now)));
        t.approval = Some(Approval {
            state: ApprovalState::Approved,
            by: Some(by),
            at: Some(now),
        });
        Ok(t.touched(now))
    }

    /// An admin refuses a held task: it ends cancelled, with `why` as its
    /// error, having never been leased.
    pub fn reject(
        &self,
        by: &str,
        why: &str,
        now: OffsetDateTime,
    ) -> Result<TaskSnapshot, Refusal> {
        self.decidable()?;
        let mut t = self.clone();
        let by = cut(by);
        let error = cut(&format!("rejected by {by}: {why}"));
        t.state = TaskState::Cancelled;
        t.cancel_requested = true;
        t.finished_at = Some(now);
        t.last_error = Some(error.clone());
        t.reason = Some(error);
        t.approval = Some(Approval {
            state: ApprovalState::Rejected,
            by: Some(by),
            at: Some(now),
        });
        Ok(t.touched(now))
    }

    /// Leases the task to `agent`: the next epoch and attempt. A lease
    /// handed over in a synchronous reply the agent is known to read (a
    /// check-in) is `confirmed` at once and runs for the task's visibility
    /// timeout; one handed to a poll runs [`PICKUP_SECS`] until the agent's
    /// first heartbeat confirms it.
    pub fn lease(&self, agent: Uuid, now: OffsetDateTime, confirmed: bool) -> TaskSnapshot {
        let mut t = self.clone();
        t.state = TaskState::Leased;
        t.epoch += 1;
        t.attempt = t.attempt.saturating_add(1);
        t.leased_to = Some(agent);
        let secs = if confirmed {
            t.lease_secs
        } else {
            t.lease_secs.min(PICKUP_SECS)
        };
        t.lease_expires_at = Some(now + Duration::seconds(i64::from(secs)));
        t.heartbeat_at = confirmed.then_some(now);
        t.progress = None;
        t.result_chunks = 0;
        t.touched(now)
    }

    /// Extends the lease; the reply says whether to stop (cancelled).
    pub fn heartbeat(
        &self,
        agent: Uuid,
        epoch: u64,
        progress: Option<Progress>,
        now: OffsetDateTime,
    ) -> Result<TaskSnapshot, Refusal> {
        self.fence(agent, epoch)?;
        let mut t = self.clone();
        if t.state == TaskState::Queued {
            // Expired but not leased again since: the holder is alive after
            // all, so it keeps the task.
            t.state = TaskState::Leased;
            t.reason = None;
        }
        t.lease_expires_at = Some(now + Duration::seconds(i64::from(t.lease_secs)));
        t.heartbeat_at = Some(now);
        if let Some(mut p) = progress {
            p.message = cut(&p.message);
            t.progress = Some(p);
        }
        Ok(t.touched(now))
    }

    /// Whether a result chunk from `agent` at `epoch` may be stored.
    pub fn accept_result(&self, agent: Uuid, epoch: u64) -> Result<(), Refusal> {
        self.fence(agent, epoch)
    }

    /// Ends the current attempt with the agent's outcome.
    pub fn finish(
        &self,
        agent: Uuid,
        epoch: u64,
        outcome: &TaskOutcome,
        now: OffsetDateTime,
    ) -> Result<(TaskSnapshot, Transition), Refusal> {
        self.fence(agent, epoch)?;
        let mut t = self.clone();
        let message = cut(&outcome.message);
        t.outcome = Some(TaskOutcome {
            outcome: outcome.outcome.clone(),
            message: message.clone(),
        });
        t.lease_expires_at = None;
        let transition = match outcome.outcome {
            Outcome::Ok => {
                t.state = TaskState::Succeeded;
                t.reason = Some("completed".to_owned());
                Transition::Succeeded
            }
            Outcome::Cancelled => {
                t.state = TaskState::Cancelled;
                t.reason = Some("cancelled; the agent stopped the work".to_owned());
                Transition::Cancelled
            }
            Outcome::Failed if t.cancel_requested => {
                t.state = TaskState::Cancelled;
                t.last_error = Some(message);
                t.reason = Some("cancelled".to_owned());
                Transition::Cancelled
            }
            Outcome::Failed => return Ok(t.failed(message, now)),
        };
        t.finished_at = Some(now);
        Ok((t.touched(now), transition))
    }

    /// An attempt failed with `error`: back into the queue after a back-off
    /// while attempts remain, else dead-lettered keeping the error.
    fn failed(mut self, error: String, now: OffsetDateTime) -> (TaskSnapshot, Transition) {
        self.last_error = Some(error.clone());
        self.lease_expires_at = None;
        if self.attempt >= self.max_attempts {
            self.state = TaskState::Dead;
            self.finished_at = Some(now);
            self.reason = Some(format!(
                "dead-lettered after attempt {}/{}: {error}",
                self.attempt, self.max_attempts
            ));
            return (self.touched(now), Transition::Dead);
        }
        self.state = TaskState::Queued;
        self.not_before = now + retry_delay(self.attempt);
        self.reason = Some(format!(
            "attempt {}/{} after \"{error}\"",
            self.attempt + 1,
            self.max_attempts
        ));
        (self.touched(now), Transition::Requeued)
    }

    /// Whether the lease has expired at `now`. `grace_until` extends every
    /// lease (a server that just started gives agents time to reach it).
    pub fn lease_expired(&self, now: OffsetDateTime, grace_until: OffsetDateTime) -> bool {
        self.state == TaskState::Leased
            && self
                .lease_expires_at
                .is_some_and(|at| at.max(grace_until) <= now)
    }

    /// The lease expired: the task goes back with its attempt count and the
    /// reason, is dead-lettered after its last attempt, or ends cancelled if
    /// an admin cancelled it meanwhile.
    pub fn expire(&self, holder_name: &str, now: OffsetDateTime) -> (TaskSnapshot, Transition) {
        if self.heartbeat_at.is_none() && !self.cancel_requested {
            // Never confirmed: the work never started (the poll's agent went
            // away). Back in the queue at once, and the attempt is not spent.
            let mut t = self.clone();
            t.state = TaskState::Queued;
            t.attempt = t.attempt.saturating_sub(1);
            t.lease_expires_at = None;
            t.not_before = now;
            t.reason = Some(format!(
                "lease expired: agent {holder_name} never confirmed it (gone while its poll was held?); attempt {}/{} next",
                t.attempt + 1,
                t.max_attempts
            ));
            return (t.touched(now), Transition::Requeued);
        }
        let silent_since = self.heartbeat_at.unwrap_or(self.updated_at);
        let why = format!(
            "lease expired: agent {holder_name} silent since {}",
            hhmm(silent_since)
        );
        let mut t = self.clone();
        if t.cancel_requested {
            t.state = TaskState::Cancelled;
            t.lease_expires_at = None;
            t.finished_at = Some(now);
            t.reason = Some(format!("cancelled; {why}"));
            return (t.touched(now), Transition::Cancelled);
        }
        let (mut t, tr) = t.failed(why.clone(), now);
        if tr == Transition::Requeued {
            // Another agent may take it at once: the holder is gone, there
            // is no fault in the work to back off from.
            t.not_before = now;
            t.reason = Some(format!(
                "{why}; attempt {}/{} next",
                t.attempt + 1,
                t.max_attempts
            ));
        }
        (t, tr)
    }

    /// Dead-letters a task whose deadline passed before it finished.
    pub fn past_deadline(&self, now: OffsetDateTime) -> Option<TaskSnapshot> {
        let deadline = self.deadline_at?;
        if self.state.is_final() || deadline > now {
            return None;
        }
        let mut t = self.clone();
        let why = format!("deadline passed at {}", hhmm(deadline));
        t.state = TaskState::Dead;
        t.lease_expires_at = None;
        t.finished_at = Some(now);
        t.last_error = Some(why.clone());
        t.reason = Some(why);
        Some(t.touched(now))
    }

    /// Cancels: a queued task ends at once; a leased one is marked, and its
    /// agent learns it at the next heartbeat.
    pub fn cancel(&self, now: OffsetDateTime) -> Result<TaskSnapshot, Refusal> {
        if self.state.is_final() {
            return Err(Refusal::Final { state: self.state });
        }
        let mut t = self.clone();
        t.cancel_requested = true;
        if t.state == TaskState::Queued {
            t.state = TaskState::Cancelled;
            t.finished_at = Some(now);
            t.reason = Some("cancelled before it started".to_owned());
        } else {
            t.reason = Some("cancel requested; the agent stops at its next heartbeat".to_owned());
        }
        Ok(t.touched(now))
    }

    /// Revives a dead-lettered or cancelled task with a fresh set of
    /// attempts. The epoch keeps growing, so results of older attempts stay
    /// refused.
    pub fn retry(&self, now: OffsetDateTime) -> Result<TaskSnapshot, Refusal> {
        if !matches!(self.state, TaskState::Dead | TaskState::Cancelled) {
            return Err(Refusal::NotRetriable { state: self.state });
        }
        let mut t = self.clone();
        t.state = TaskState::Queued;
        t.attempt = 0;
        t.cancel_requested = false;
        t.finished_at = None;
        t.not_before = now;
        t.lease_expires_at = None;
        t.outcome = None;
        t.progress = None;
        if let Some(deadline) = t.deadline_at
            && deadline <= now
        {
            // A revived task gets the same span it had at creation.
            t.deadline_at = Some(now + (deadline - t.created_at));
        }
        t.reason = Some(format!(
            "retried by an admin{}",
            t.last_error
                .as_deref()
                .map(|e| format!(" after \"{e}\""))
                .unwrap_or_default()
        ));
        if t.approval.is_some() {
            // An approval covers one run: a revived task, rejected or not,
            // waits for a new one before anything on its target changes.
            t.approval = Some(Approval::awaiting());
            t.reason = Some(format!(
                "{}; {}",
                t.reason.as_deref().unwrap_or_default(),
                awaiting_approval(t.id)
            ));
        }
        Ok(t.touched(now))
    }

    /// The admin's view, with the reason it waits (from [`crate::reason`]).
    pub fn info(&self, waiting: Option<String>) -> TaskInfo<Value> {
        TaskInfo {
            id: self.id,
            kind: self.kind,
            spec: self.spec.clone(),
            target: self.target.clone(),
            state: self.state,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            epoch: self.epoch,
            lease_secs: self.lease_secs,
            deadline_at: self.deadline_at,
            allowed_hours: self.allowed_hours.clone(),
            leased_to: self.leased_to,
            lease_expires_at: self.lease_expires_at,
            heartbeat_at: self.heartbeat_at,
            progress: self.progress.clone(),
            cancel_requested: self.cancel_requested,
            last_error: self.last_error.clone(),
            reason: self.reason.clone(),
            outcome: self.outcome.clone(),
            not_before: Some(self.not_before),
            schedule_id: self.schedule_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            waiting,
            result_chunks: self.result_chunks,
            approval: self.approval.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn queued(max_attempts: u32) -> TaskSnapshot {
        let at = datetime!(2026-05-17 10:00 UTC);
        TaskSnapshot {
            id: Uuid::from_u128(1),
            kind: TaskKind::Doctor,
            spec: serde_json::json!({"upload": false}),
            target: TaskTarget::Agent {
                agent_id: Uuid::from_u128(7),
            },
            state: TaskState::Queued,
            attempt: 0,
            max_attempts,
            epoch: 0,
            lease_secs: 60,
            deadline_at: None,
            allowed_hours: None,
            tz: "UTC".into(),
            leased_to: None,
            lease_expires_at: None,
            heartbeat_at: None,
            progress: None,
            cancel_requested: false,
            last_error: None,
            reason: None,
            outcome: None,
            not_before: at,
            schedule_id: None,
            created_at: at,
            updated_at: at,
            finished_at: None,
            version: 0,
            result_chunks: 0,
            approval: None,
        }
    }

    fn failed(msg: &str) -> TaskOutcome {
        TaskOutcome {
            outcome: Outcome::Failed,
            message: msg.into(),
        }
    }

    #[test]
    fn each_lease_takes_the_next_epoch_and_fences_the_old_one() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let a = Uuid::from_u128(7);
        let b = Uuid::from_u128(8);
        let t = queued(3).lease(a, now, false);
        assert_eq!((t.state, t.epoch, t.attempt), (TaskState::Leased, 1, 1));
        assert_eq!(
            t.lease_expires_at,
            Some(now + Duration::seconds(15)),
            "until picked up"
        );
        let t = t.heartbeat(a, 1, None, now).expect("confirms");
        assert_eq!(t.lease_expires_at, Some(now + Duration::seconds(60)));
        let (t, tr) = t.expire("a", now + Duration::minutes(2));
        assert_eq!(tr, Transition::Requeued);
        assert_eq!(
            t.reason.as_deref(),
            Some("lease expired: agent a silent since 10:00 UTC; attempt 2/3 next")
        );
        let t = t.lease(b, now + Duration::minutes(3), false);
        assert_eq!(t.epoch, 2);
        assert_eq!(
            t.heartbeat(a, 1, None, now).expect_err("zombie"),
            Refusal::StaleEpoch {
                observed: 1,
                current: 2
            }
        );
        assert!(matches!(
            t.accept_result(a, 2),
            Err(Refusal::NotLeased { .. })
        ));
        assert!(t.accept_result(b, 2).is_ok());
    }

    #[test]
    fn failures_back_off_then_dead_letter_keeping_the_last_error() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let a = Uuid::from_u128(7);
        let t = queued(2).lease(a, now, true);
        let (t, tr) = t.finish(a, 1, &failed("disk full"), now).expect("accepted");
        assert_eq!(tr, Transition::Requeued);
        assert_eq!(t.reason.as_deref(), Some("attempt 2/2 after \"disk full\""));
        assert_eq!(t.not_before, now + FIRST_RETRY_DELAY);
        let t = t.lease(a, now + Duration::minutes(1), true);
        let (t, tr) = t
            .finish(a, 2, &failed("still full"), now)
            .expect("accepted");
        assert_eq!(tr, Transition::Dead);
        assert_eq!(t.state, TaskState::Dead);
        assert_eq!(t.last_error.as_deref(), Some("still full"));
        let r = t.retry(now).expect("revives");
        assert_eq!((r.state, r.attempt, r.epoch), (TaskState::Queued, 0, 2));
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|s| s.contains("still full"))
        );
        assert!(matches!(r.retry(now), Err(Refusal::NotRetriable { .. })));
    }

    #[test]
    fn cancel_ends_queued_tasks_and_flags_leased_ones() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let a = Uuid::from_u128(7);
        assert_eq!(
            queued(1).cancel(now).expect("ok").state,
            TaskState::Cancelled
        );
        let leased = queued(1).lease(a, now, true).cancel(now).expect("ok");
        assert_eq!(leased.state, TaskState::Leased);
        assert!(leased.cancel_requested);
        let (gone, tr) = leased.expire("a", now + Duration::minutes(5));
        assert_eq!(
            (gone.state, tr),
            (TaskState::Cancelled, Transition::Cancelled)
        );
        let done = TaskOutcome {
            outcome: Outcome::Cancelled,
            message: "stopped".into(),
        };
        let (t, _) = leased.finish(a, 1, &done, now).expect("ok");
        assert_eq!(t.state, TaskState::Cancelled);
        assert!(matches!(t.cancel(now), Err(Refusal::Final { .. })));
    }

    #[test]
    fn a_result_after_expiry_is_kept_while_nobody_else_leased_it() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let a = Uuid::from_u128(7);
        let (t, _) = queued(3)
            .lease(a, now, true)
            .expire("a", now + Duration::minutes(2));
        assert_eq!(t.state, TaskState::Queued);
        assert!(t.accept_result(a, 1).is_ok());
        let back = t
            .heartbeat(a, 1, None, now + Duration::minutes(3))
            .expect("ok");
        assert_eq!(back.state, TaskState::Leased);
    }

    #[test]
    fn grace_defers_expiry_and_deadlines_dead_letter() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let t = queued(3).lease(Uuid::from_u128(7), now, true);
        let later = now + Duration::minutes(2);
        assert!(t.lease_expired(later, now));
        assert!(!t.lease_expired(later, later + Duration::seconds(1)));
        let mut d = queued(3);
        d.deadline_at = Some(now + Duration::minutes(1));
        assert!(d.past_deadline(now).is_none());
        let dead = d.past_deadline(later).expect("dead");
        assert_eq!(dead.state, TaskState::Dead);
        assert_eq!(
            dead.last_error.as_deref(),
            Some("deadline passed at 10:01 UTC")
        );
    }

    #[test]
    fn a_lease_never_picked_up_costs_no_attempt() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let t = queued(2).lease(Uuid::from_u128(7), now, false);
        let (t, tr) = t.expire("gone", now + Duration::seconds(16));
        assert_eq!(
            (tr, t.state, t.attempt, t.epoch),
            (Transition::Requeued, TaskState::Queued, 0, 1)
        );
        assert!(
            t.reason
                .as_deref()
                .is_some_and(|r| r.contains("never confirmed")),
            "{:?}",
            t.reason
        );
    }

    fn held() -> TaskSnapshot {
        let mut t = queued(3);
        t.kind = TaskKind::Deploy;
        t.approval = Some(Approval::awaiting());
        t
    }

    #[test]
    fn approval_releases_a_held_deploy_once_and_records_who_and_when() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let t = held();
        assert!(t.held());
        let a = t.approve("ops-alice", now).expect("approved");
        assert!(!a.held());
        assert_eq!(a.state, TaskState::Queued);
        assert_eq!(
            a.approval,
            Some(Approval {
                state: ApprovalState::Approved,
                by: Some("ops-alice".into()),
                at: Some(now),
            })
        );
        assert_eq!(
            a.reason.as_deref(),
            Some("approved by ops-alice at 10:00 UTC")
        );
        assert_eq!(
            a.approve("ops-bob", now).expect_err("twice"),
            Refusal::AlreadyApproved {
                by: Some("ops-alice".into()),
                at: Some(now)
            }
        );
        assert!(matches!(
            a.reject("ops-bob", "no", now),
            Err(Refusal::AlreadyApproved { .. })
        ));
        // Not held, not a deploy, already ended: refused with their reasons.
        let mut plain = queued(3);
        plain.kind = TaskKind::Deploy;
        assert_eq!(
            plain.approve("x", now).expect_err("not held"),
            Refusal::NotHeld {
                state: TaskState::Queued
            }
        );
        let mut doctor = held();
        doctor.kind = TaskKind::Doctor;
        assert_eq!(
            doctor.approve("x", now).expect_err("not a deploy"),
            Refusal::ApprovalNotApplicable {
                kind: TaskKind::Doctor
            }
        );
        let cancelled = held().cancel(now).expect("cancelled");
        assert_eq!(
            cancelled.approve("x", now).expect_err("ended"),
            Refusal::Final {
                state: TaskState::Cancelled
            }
        );
    }

    #[test]
    fn rejection_ends_a_held_deploy_with_the_reason_and_retry_asks_again() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let r = held()
            .reject("ops-alice", "change freeze until Monday", now)
            .expect("rejected");
        assert_eq!(r.state, TaskState::Cancelled);
        assert_eq!(r.epoch, 0, "never leased");
        assert_eq!(
            r.last_error.as_deref(),
            Some("rejected by ops-alice: change freeze until Monday")
        );
        assert_eq!(r.reason, r.last_error);
        assert_eq!(
            r.approval.as_ref().map(|a| a.state),
            Some(ApprovalState::Rejected)
        );
        assert!(matches!(
            r.approve("ops-bob", now),
            Err(Refusal::Final { .. })
        ));
        let again = r.retry(now).expect("revived");
        assert!(again.held(), "a revived task waits for a new approval");
        assert!(
            again
                .reason
                .as_deref()
                .is_some_and(|s| s.ends_with(&awaiting_approval(again.id))),
            "{:?}",
            again.reason
        );
        // An approved task that was dead-lettered is held again too.
        let approved = held().approve("a", now).expect("ok");
        let leased = approved.lease(Uuid::from_u128(7), now, true);
        let (dead, _) = leased
            .finish(Uuid::from_u128(7), 1, &failed("reload failed"), now)
            .expect("finished");
        let (dead, _) = dead
            .lease(Uuid::from_u128(7), now, true)
            .finish(Uuid::from_u128(7), 2, &failed("reload failed"), now)
            .expect("finished");
        let (dead, tr) = dead
            .lease(Uuid::from_u128(7), now, true)
            .finish(Uuid::from_u128(7), 3, &failed("reload failed"), now)
            .expect("finished");
        assert_eq!(tr, Transition::Dead);
        assert!(dead.retry(now).expect("revived").held());
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::seconds(5));
        assert_eq!(retry_delay(2), Duration::seconds(10));
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }
}
