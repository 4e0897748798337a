//! Certificate renewal as a pure state machine, the way `lease` is for
//! tasks: no I/O, no clock (callers pass `now`), no store.
//!
//! A renewal is created `due` when its certificate's policy says so (or an
//! admin forces it), then goes `issuing` (deploy tasks created, one per
//! location), `issued` (a certificate signed, none deployed yet),
//! `deploying` (K of N locations deployed and verified) and `verified`
//! (every location serves the new certificate, checked by the deploy's
//! handshake, which is the rescan). Any failure makes it `failed` with a
//! reason code and text, and the next attempt waits an exponential back-off
//! per certificate. A renewal is never silently stuck: every state carries
//! a reason.

use tether_wire::{ErrorCode, RenewalInfo, RenewalPolicy, RenewalState, RenewalTrigger, TaskState};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The first back-off after a failed attempt; it doubles with each failure
/// in a row.
pub const FIRST_BACKOFF: Duration = Duration::minutes(5);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::hours(24);
/// Failures in a row of the issuer before the fallback issuer is used.
pub const FAILURES_BEFORE_FALLBACK: u32 = 2;
/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 1024;

/// An ARI suggested window (RFC 9773), when the issuer gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuggestedWindow {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {observed:?} is not valid; expected {expected}")]
pub struct PolicyError {
    pub field: &'static str,
    pub observed: String,
    pub expected: &'static str,
}

/// Checks a policy an admin gave.
pub fn check_policy(p: &RenewalPolicy) -> Result<(), PolicyError> {
    match p.trigger {
        RenewalTrigger::Fraction { fraction } if !(0.1..=0.95).contains(&fraction) => {
            return Err(PolicyError {
                field: "trigger.fraction",
                observed: fraction.to_string(),
                expected: "a fraction of the lifetime between 0.1 and 0.95",
            });
        }
        RenewalTrigger::DaysBefore { days } if !(1..=365).contains(&days) => {
            return Err(PolicyError {
                field: "trigger.days",
                observed: days.to_string(),
                expected: "1 to 365 days before expiry",
            });
        }
        _ => {}
    }
    for (field, issuer) in [
        ("issuer", Some(&p.issuer)),
        ("fallback_issuer", p.fallback_issuer.as_ref()),
    ] {
        if let Some(i) = issuer
            && !issuer_is_valid(i)
        {
            return Err(PolicyError {
                field,
                observed: i.chars().take(80).collect(),
                expected: "`builtin` or `acme:NAME` (NAME: 1-64 letters, digits, '-', '_')",
            });
        }
    }
    Ok(())
}

fn issuer_is_valid(s: &str) -> bool {
    s == "builtin"
        || s.strip_prefix("acme:").is_some_and(|n| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// When a certificate valid from `not_before` to `not_after` is due. An ARI
/// window, when given, decides: its start (RFC 9773 lets the client pick
/// any time in it; the start is the earliest safe one and keeps this pure).
pub fn due_at(
    policy: &RenewalPolicy,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ari: Option<SuggestedWindow>,
) -> OffsetDateTime {
    if let Some(w) = ari {
        return w.start.min(not_after);
    }
    let lifetime = not_after - not_before;
    match policy.trigger {
        RenewalTrigger::Fraction { fraction } => not_before + lifetime * fraction.clamp(0.0, 1.0),
        RenewalTrigger::DaysBefore { days } => {
            (not_after - Duration::days(i64::from(days))).max(not_before)
        }
    }
}

/// The back-off after `failures` failed attempts in a row (1 for the first):
/// 5 min, 10 min, 20 min … capped at 24 h. No jitter: renewals are spread
/// by their certificates' own lifetimes, and a fixed delay is one an admin
/// can predict from `next_attempt_at`.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let factor = 1i32 << exp;
    FIRST_BACKOFF
        .checked_mul(factor)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// The issuer of the next attempt: the policy's, or its fallback after
/// [`FAILURES_BEFORE_FALLBACK`] CA failures in a row.
pub fn issuer_for(policy: &RenewalPolicy, ca_failures: u32) -> String {
    match &policy.fallback_issuer {
        Some(f) if ca_failures >= FAILURES_BEFORE_FALLBACK => f.clone(),
        _ => policy.issuer.clone(),
    }
}

/// A renewal as stored: everything the state machine reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub id: Uuid,
    pub fingerprint: String,
    pub state: RenewalState,
    pub issuer: String,
    pub attempt: u32,
    /// Failed attempts in a row.
    pub failures: u32,
    /// CA failures in a row (decides the fallback issuer).
    pub ca_failures: u32,
    pub locations: u32,
    pub done: u32,
    /// The deploy tasks of the current attempt, in location order.
    pub tasks: Vec<Uuid>,
    pub new_fingerprint: Option<String>,
    pub reason_code: Option<ErrorCode>,
    pub reason: String,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub forced: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Bumped by every write; the store's compare-and-set key.
    pub version: i64,
}

/// Whether the agent at a location can run a deploy now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    Ready,
    /// The agent was removed (or never existed).
    Gone {
        agent_id: Uuid,
    },
    /// The agent is Inactive since this time.
    Inactive {
        agent_id: Uuid,
        since: OffsetDateTime,
    },
}

/// How a deploy ended at one location, from the recorded report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// The new certificate is served (verified by the handshake).
    Verified { fingerprint: String },
    /// The deploy rolled back (or could not), with the report's code.
    RolledBack {
        code: Option<String>,
        message: String,
    },
}

/// What the store says about one location's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: Uuid,
    /// `None` when the task is missing (not inserted yet, or pruned).
    pub state: Option<TaskState>,
    pub last_error: Option<String>,
    /// The certificate issued for this task, if any.
    pub issued: Option<String>,
    pub deployed: Option<Deployed>,
    /// The task is held until an admin approves it (the policy's
    /// `require_approval`).
    pub awaiting_approval: bool,
}

/// What the scheduler should do next with a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes.
    Wait,
    /// Store this new state.
    Update(Renewal),
    /// Store this new state, then create its deploy tasks (one per
    /// location, ids in `tasks`) with this issuer.
    StartAttempt(Renewal),
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_REASON).collect()
}

impl Renewal {
    /// A renewal that is due now: created by the scheduler or an admin.
    pub fn due(
        fingerprint: &str,
        policy: &RenewalPolicy,
        forced: bool,
        now: OffsetDateTime,
    ) -> Renewal {
        Renewal {
            id: Uuid::new_v4(),
            fingerprint: fingerprint.to_owned(),
            state: RenewalState::Due,
            issuer: policy.issuer.clone(),
            attempt: 0,
            failures: 0,
            ca_failures: 0,
            locations: 0,
            done: 0,
            tasks: Vec::new(),
            new_fingerprint: None,
            reason_code: None,
            reason: if forced {
                "renewal asked for by an admin".to_owned()
            } else {
                "due by the renewal policy".to_owned()
            },
            next_attempt_at: Some(now),
            forced,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// Whether the scheduler may start an attempt at `now`.
    /// When the scheduler must look at this renewal next: at once (its
    /// last change) while an attempt runs, since its tasks move on their
    /// own; at its next attempt while due or failed; never once it is
    /// verified. The store keeps it in an indexed column, so a tick reads
    /// only the renewals whose time has come.
    pub fn wake_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            s if s.is_final() => None,
            RenewalState::Due | RenewalState::Failed => {
                Some(self.next_attempt_at.unwrap_or(self.updated_at))
            }
            _ => Some(self.updated_at),
        }
    }

    pub fn may_start(&self, now: OffsetDateTime) -> bool {
        matches!(self.state, RenewalState::Due | RenewalState::Failed)
            && self.next_attempt_at.is_none_or(|t| t <= now)
    }

    /// Starts an attempt: every location must have a ready agent, else the
    /// renewal fails with the first location's reason (and backs off).
    /// `new_task_ids` gives one fresh id per location.
    pub fn start(
        &self,
        policy: &RenewalPolicy,
        locations: &[Eligibility],
        mut new_task_ids: impl FnMut() -> Uuid,
        now: OffsetDateTime,
    ) -> Step {
        if !self.may_start(now) {
            return Step::Wait;
        }
        if locations.is_empty() {
            return Step::Update(self.fail(
                ErrorCode::RenewalNoLocation,
                "no verified deploy of this certificate is recorded, so there is nowhere to renew it"
                    .to_owned(),
                false,
                now,
            ));
        }
        for l in locations {
            match l {
                Eligibility::Ready => {}
                Eligibility::Gone { agent_id } => {
                    return Step::Update(self.fail(
                        ErrorCode::RenewalNoEligibleAgent,
                        format!(
                            "no eligible bot: agent {agent_id}, which deployed it, no longer exists"
                        ),
                        false,
                        now,
                    ));
                }
                Eligibility::Inactive { agent_id, since } => {
                    return Step::Update(self.fail(
                        ErrorCode::RenewalAgentInactive,
                        format!("bot Inactive since {}: agent {agent_id}", rfc(*since)),
                        false,
                        now,
                    ));
                }
            }
        }
        let mut next = self.clone();
        next.state = RenewalState::Issuing;
        next.attempt += 1;
        next.issuer = issuer_for(policy, self.ca_failures);
        next.locations = u32::try_from(locations.len()).unwrap_or(u32::MAX);
        next.done = 0;
        next.tasks = locations.iter().map(|_| new_task_ids()).collect();
        next.new_fingerprint = None;
        next.reason_code = None;
        next.reason = format!(
            "attempt {}: deploy tasks created at {} location(s), issuer {}",
            next.attempt, next.locations, next.issuer
        );
        next.next_attempt_at = None;
        next.updated_at = now;
        Step::StartAttempt(next)
    }

    /// Advances an attempt in progress from its tasks' state. `views` are
    /// in the order of `self.tasks`.
    pub fn observe(&self, views: &[TaskView], now: OffsetDateTime) -> Step {
        if !matches!(
            self.state,
            RenewalState::Issuing | RenewalState::Issued | RenewalState::Deploying
        ) {
            return Step::Wait;
        }
        // A failure anywhere fails the attempt: the rolled-back deploy's code
        // first, then the task's own error.
        for v in views {
            if let Some(Deployed::RolledBack { code, message }) = &v.deployed {
                let text = format!(
                    "task {}: the deploy rolled back{}: {message}",
                    v.id,
                    code.as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                );
                let renewal_code =
                    if code.as_deref() == Some(ErrorCode::DeployVerifyMismatch.as_str()) {
                        ErrorCode::RenewalVerifyMismatch
                    } else {
                        ErrorCode::RenewalTaskFailed
                    };
                return Step::Update(self.fail(renewal_code, text, false, now));
            }
            if let Some(state) = v.state
                && matches!(state, TaskState::Dead | TaskState::Cancelled)
            {
                let error = v.last_error.as_deref().unwrap_or("no error recorded");
                let ca = v.issued.is_none() && error.contains("TETHER-E84");
                let (code, what) = if ca {
                    (ErrorCode::RenewalCaFailed, "the CA's error")
                } else {
                    (ErrorCode::RenewalTaskFailed, "task")
                };
                let text = format!("task {} {state} ({what}): {error}", v.id);
                return Step::Update(self.fail(code, text, ca, now));
            }
            if v.state == Some(TaskState::Succeeded) && v.deployed.is_none() {
                let text = format!("task {} succeeded but recorded no deploy report", v.id);
                return Step::Update(self.fail(ErrorCode::RenewalTaskFailed, text, false, now));
            }
        }
        let verified: Vec<&str> = views
            .iter()
            .filter_map(|v| match &v.deployed {
                Some(Deployed::Verified { fingerprint }) => Some(fingerprint.as_str()),
                _ => None,
            })
            .collect();
        let done = u32::try_from(verified.len()).unwrap_or(u32::MAX);
        let issued = views.iter().filter(|v| v.issued.is_some()).count();
        let mut next = self.clone();
        next.done = done;
        if done == self.locations && !views.is_empty() {
            next.state = RenewalState::Verified;
            next.new_fingerprint = verified.first().map(|s| (*s).to_owned());
            next.failures = 0;
            next.ca_failures = 0;
            next.reason_code = None;
            next.reason = format!(
                "deployed and verified at {done} location(s) on attempt {}",
                self.attempt
            );
        } else if done > 0 {
            next.state = RenewalState::Deploying;
            next.reason = format!("deploying at location {} of {}", done + 1, self.locations);
        } else if issued > 0 {
            next.state = RenewalState::Issued;
            next.reason = format!(
                "issued at {issued} of {} location(s), not yet deployed",
                self.locations
            );
        } else {
            next.state = RenewalState::Issuing;
            let held = views.iter().find(|v| v.awaiting_approval);
            next.reason = match (views.iter().find(|v| v.state.is_none()), held) {
                (Some(v), _) => format!("waiting for deploy task {} to be created", v.id),
                (None, Some(v)) => format!(
                    "attempt {}: deploy task {} is {}",
                    self.attempt,
                    v.id,
                    crate::lease::awaiting_approval(v.id)
                ),
                // The attempt's own reason (tasks created, issuer) stands,
                // unless it told of a hold that an approval has lifted.
                (None, None)
                    if self.state == RenewalState::Issuing
                        && !self.reason.contains(crate::lease::APPROVAL_HOLD) =>
                {
                    self.reason.clone()
                }
                (None, None) => format!(
                    "attempt {}: waiting for the agents to ask the CA ({})",
                    self.attempt, self.issuer
                ),
            };
        }
        if next.state == self.state && next.done == self.done && next.reason == self.reason {
            return Step::Wait;
        }
        next.updated_at = now;
        Step::Update(next)
    }

    /// An admin asked for a renewal now: a failed one is retried at once;
    /// one under way is refused.
    pub fn force(&self, now: OffsetDateTime) -> Result<Renewal, ErrorCode> {
        match self.state {
            RenewalState::Failed | RenewalState::Due => {
                let mut next = self.clone();
                next.next_attempt_at = Some(now);
                next.forced = true;
                next.reason = format!("{} (retry asked for by an admin)", self.reason);
                next.reason = clip(&next.reason);
                next.updated_at = now;
                Ok(next)
            }
            _ => Err(ErrorCode::RenewalInProgress),
        }
    }

    /// Fails the attempt with `code` and `reason`, backing off per
    /// certificate.
    pub fn fail(&self, code: ErrorCode, reason: String, ca: bool, now: OffsetDateTime) -> Renewal {
        let mut next = self.clone();
        next.state = RenewalState::Failed;
        next.failures = self.failures.saturating_add(1);
        next.ca_failures = if ca {
            self.ca_failures.saturating_add(1)
        } else {
            0
        };
        let at = now + backoff(next.failures);
        next.reason_code = Some(code);
        next.reason = clip(&format!("{reason}; next attempt at {}", rfc(at)));
        next.next_attempt_at = Some(at);
        next.updated_at = now;
        next
    }

    pub fn info(&self) -> RenewalInfo {
        RenewalInfo {
            id: self.id,
            fingerprint: self.fingerprint.clone(),
            state: self.state,
            issuer: self.issuer.clone(),
            attempt: self.attempt,
            failures: self.failures,
            locations: self.locations,
            done: self.done,
            tasks: self.tasks.clone(),
            new_fingerprint: self.new_fingerprint.clone(),
            reason_code: self.reason_code.map(|c| c.as_str().to_owned()),
            reason: self.reason.clone(),
            next_attempt_at: self.next_attempt_at,
            forced: self.forced,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn t0() -> OffsetDateTime {
        datetime!(2026-12-07 12:00 UTC)
    }

    fn ids() -> impl FnMut() -> Uuid {
        let mut n = 0u128;
        move || {
            n += 1;
            Uuid::from_u128(n)
        }
    }

    fn view(id: u128) -> TaskView {
        TaskView {
            id: Uuid::from_u128(id),
            state: Some(TaskState::Queued),
            last_error: None,
            issued: None,
            deployed: None,
            awaiting_approval: false,
        }
    }

    fn started(locations: usize) -> Renewal {
        let p = RenewalPolicy::default();
        let r = Renewal::due("sha256:aa", &p, false, t0());
        match r.start(&p, &vec![Eligibility::Ready; locations], ids(), t0()) {
            Step::StartAttempt(r) => r,
            other => panic!("expected an attempt, got {other:?}"),
        }
    }

    #[test]
    fn due_at_follows_the_trigger_and_ari_wins() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-04-01 00:00 UTC); // 90 days
        let p = RenewalPolicy::default();
        assert_eq!(due_at(&p, nb, na, None), datetime!(2026-03-02 00:00 UTC));
        let days = RenewalPolicy {
            trigger: RenewalTrigger::DaysBefore { days: 30 },
            ..RenewalPolicy::default()
        };
        assert_eq!(due_at(&days, nb, na, None), datetime!(2026-03-02 00:00 UTC));
        let long = RenewalPolicy {
            trigger: RenewalTrigger::DaysBefore { days: 365 },
            ..RenewalPolicy::default()
        };
        assert_eq!(due_at(&long, nb, na, None), nb, "never before validity");
        let ari = SuggestedWindow {
            start: datetime!(2026-03-20 00:00 UTC),
            end: datetime!(2026-03-22 00:00 UTC),
        };
        assert_eq!(due_at(&p, nb, na, Some(ari)), ari.start);
    }

    #[test]
    fn policies_are_checked() {
        assert!(check_policy(&RenewalPolicy::default()).is_ok());
        let bad = |trigger, issuer: &str| RenewalPolicy {
            trigger,
            issuer: issuer.to_owned(),
            ..RenewalPolicy::default()
        };
        let frac = |f| RenewalTrigger::Fraction { fraction: f };
        assert_eq!(
            check_policy(&bad(frac(1.5), "builtin"))
                .expect_err("refused")
                .field,
            "trigger.fraction"
        );
        assert_eq!(
            check_policy(&bad(RenewalTrigger::DaysBefore { days: 0 }, "builtin"))
                .expect_err("refused")
                .field,
            "trigger.days"
        );
        assert_eq!(
            check_policy(&bad(frac(0.5), "acme:"))
                .expect_err("refused")
                .field,
            "issuer"
        );
        assert_eq!(
            check_policy(&bad(frac(0.5), "letsencrypt"))
                .expect_err("refused")
                .field,
            "issuer"
        );
        assert!(check_policy(&bad(frac(0.5), "acme:le-prod")).is_ok());
    }

    #[test]
    fn backoff_doubles_per_failure_and_is_capped() {
        assert_eq!(backoff(1), Duration::minutes(5));
        assert_eq!(backoff(2), Duration::minutes(10));
        assert_eq!(backoff(5), Duration::minutes(80));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_attempt_goes_through_every_state_to_verified() {
        let r = started(2);
        assert_eq!(
            (r.state, r.attempt, r.locations),
            (RenewalState::Issuing, 1, 2)
        );
        assert_eq!(r.tasks, [Uuid::from_u128(1), Uuid::from_u128(2)]);
        let mut v = vec![view(1), view(2)];
        assert_eq!(
            r.observe(&v, t0()),
            Step::Wait,
            "nothing new, nothing written"
        );

        v[0].state = Some(TaskState::Leased);
        v[0].issued = Some("sha256:bb".into());
        let Step::Update(r) = r.observe(&v, t0()) else {
            panic!("issued")
        };
        assert_eq!(r.state, RenewalState::Issued);

        v[0].state = Some(TaskState::Succeeded);
        v[0].deployed = Some(Deployed::Verified {
            fingerprint: "sha256:bb".into(),
        });
        let Step::Update(r) = r.observe(&v, t0()) else {
            panic!("deploying")
        };
        assert_eq!((r.state, r.done), (RenewalState::Deploying, 1));
        assert_eq!(r.reason, "deploying at location 2 of 2");

        v[1].issued = Some("sha256:cc".into());
        v[1].deployed = Some(Deployed::Verified {
            fingerprint: "sha256:cc".into(),
        });
        let Step::Update(r) = r.observe(&v, t0()) else {
            panic!("verified")
        };
        assert_eq!((r.state, r.done), (RenewalState::Verified, 2));
        assert_eq!(r.new_fingerprint.as_deref(), Some("sha256:bb"));
        assert!(r.state.is_final());
        assert_eq!(r.observe(&v, t0()), Step::Wait, "a verified renewal stays");
        assert_eq!(
            r.start(
                &RenewalPolicy::default(),
                &[Eligibility::Ready],
                ids(),
                t0()
            ),
            Step::Wait
        );
    }

    #[test]
    fn an_attempt_held_for_approval_says_so_and_which_task() {
        let r = started(2);
        let mut v = vec![view(1), view(2)];
        v[1].awaiting_approval = true;
        let Step::Update(held) = r.observe(&v, t0()) else {
            panic!("the reason changes")
        };
        assert_eq!(held.state, RenewalState::Issuing);
        assert_eq!(
            held.reason,
            format!(
                "attempt 1: deploy task {} is awaiting an admin's approval (tether certs approve {})",
                Uuid::from_u128(2),
                Uuid::from_u128(2)
            )
        );
        assert_eq!(held.observe(&v, t0()), Step::Wait);
        // Approved: the attempt's reason no longer claims a hold.
        v[1].awaiting_approval = false;
        let Step::Update(approved) = held.observe(&v, t0()) else {
            panic!("the hold is lifted")
        };
        assert_eq!(
            approved.reason,
            "attempt 1: waiting for the agents to ask the CA (builtin)"
        );
        let held = approved;
        v[1].state = Some(TaskState::Leased);
        v[1].issued = Some("sha256:cc".into());
        let Step::Update(issued) = held.observe(&v, t0()) else {
            panic!("issued")
        };
        assert_eq!(issued.state, RenewalState::Issued);
    }

    #[test]
    fn failures_are_explained_and_back_off() {
        let p = RenewalPolicy::default();
        let due = Renewal::due("sha256:aa", &p, false, t0());
        let since = datetime!(2026-12-06 08:00 UTC);
        let agent = Uuid::from_u128(9);
        let Step::Update(f) = due.start(
            &p,
            &[Eligibility::Inactive {
                agent_id: agent,
                since,
            }],
            ids(),
            t0(),
        ) else {
            panic!("fails")
        };
        assert_eq!(
            (f.state, f.reason_code),
            (RenewalState::Failed, Some(ErrorCode::RenewalAgentInactive))
        );
        assert!(
            f.reason.contains("bot Inactive since 2026-12-06T08:00:00Z"),
            "{}",
            f.reason
        );
        assert_eq!(f.next_attempt_at, Some(t0() + Duration::minutes(5)));
        assert!(!f.may_start(t0() + Duration::minutes(4)), "backs off");
        // The scheduler wakes for it when it may start, and for a running
        // attempt at every tick, never for a verified one.
        assert_eq!(due.wake_at(), Some(t0()));
        assert_eq!(f.wake_at(), f.next_attempt_at);
        let running = started(1);
        assert_eq!(running.wake_at(), Some(running.updated_at));
        let mut verified = started(1);
        verified.state = RenewalState::Verified;
        assert_eq!(verified.wake_at(), None);
        let Step::Update(f2) = f.start(
            &p,
            &[Eligibility::Gone { agent_id: agent }],
            ids(),
            t0() + Duration::minutes(5),
        ) else {
            panic!("fails again")
        };
        assert_eq!(f2.reason_code, Some(ErrorCode::RenewalNoEligibleAgent));
        assert!(f2.reason.starts_with("no eligible bot"));
        assert_eq!(f2.failures, 2);
        assert_eq!(f2.next_attempt_at, Some(t0() + Duration::minutes(15)));
        let Step::Update(none) = due.start(&p, &[], ids(), t0()) else {
            panic!()
        };
        assert_eq!(none.reason_code, Some(ErrorCode::RenewalNoLocation));

        // A dead-lettered task with the CA's code is the CA's error.
        let r = started(1);
        let mut v = vec![view(1)];
        v[0].state = Some(TaskState::Dead);
        v[0].last_error = Some("TETHER-E8508: TETHER-E8405 no built-in CA".into());
        let Step::Update(ca) = r.observe(&v, t0()) else {
            panic!()
        };
        assert_eq!(ca.reason_code, Some(ErrorCode::RenewalCaFailed));
        assert!(
            ca.reason.contains("dead_lettered") || ca.reason.contains("dead"),
            "{}",
            ca.reason
        );
        assert!(ca.reason.contains("TETHER-E8405"));
        assert_eq!(ca.ca_failures, 1);

        // A rolled-back deploy that did not verify is a verification mismatch.
        let mut v = vec![view(1)];
        v[0].deployed = Some(Deployed::RolledBack {
            code: Some(ErrorCode::DeployVerifyMismatch.as_str().into()),
            message: "served sha256:aa".into(),
        });
        let Step::Update(mm) = r.observe(&v, t0()) else {
            panic!()
        };
        assert_eq!(mm.reason_code, Some(ErrorCode::RenewalVerifyMismatch));
        assert!(mm.reason.contains("served sha256:aa"));
    }

    #[test]
    fn the_fallback_issuer_takes_over_after_two_ca_failures() {
        let p = RenewalPolicy {
            fallback_issuer: Some("acme:backup".into()),
            ..RenewalPolicy::default()
        };
        let mut r = Renewal::due("sha256:aa", &p, false, t0());
        let mut now = t0();
        let mut issuers = Vec::new();
        for _ in 0..3 {
            let Step::StartAttempt(s) = r.start(&p, &[Eligibility::Ready], ids(), now) else {
                panic!("starts")
            };
            issuers.push(s.issuer.clone());
            let mut v = vec![view(1)];
            v[0].state = Some(TaskState::Dead);
            v[0].last_error = Some("TETHER-E8405".into());
            let Step::Update(f) = s.observe(&v, now) else {
                panic!()
            };
            now = f.next_attempt_at.expect("backs off");
            r = f;
        }
        assert_eq!(issuers, ["builtin", "builtin", "acme:backup"]);
    }

    #[test]
    fn forcing_retries_a_failed_renewal_and_refuses_one_under_way() {
        let r = started(1);
        assert_eq!(r.force(t0()), Err(ErrorCode::RenewalInProgress));
        let f = r.fail(ErrorCode::RenewalTaskFailed, "x".into(), false, t0());
        let forced = f.force(t0()).expect("retried");
        assert!(forced.may_start(t0()) && forced.forced);
    }
}
