//! How an agent's status and flags are derived from stored facts. Pure
//! functions only: the callers read the clock and the store, these decide.

use std::cmp::Ordering;

use tether_store::{AgentRecord, StatusChange};
use tether_wire::{AgentChannelView, AgentFlag, AgentStatus};
use time::OffsetDateTime;

/// Seconds of silence after which an agent is Inactive:
/// `ceil(2 × interval × (1 + jitter%)) + grace`.
pub fn inactive_after_secs(interval_secs: u32, jitter_percent: u8, grace_secs: u32) -> u32 {
    let scaled = 2 * u64::from(interval_secs) * (100 + u64::from(jitter_percent));
    let base = scaled.div_ceil(100);
    u32::try_from(base + u64::from(grace_secs)).unwrap_or(u32::MAX)
}

/// What a check-in means for the agent's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckinVerdict {
    /// The agent needs an admin's approval: its facts are recorded, its
    /// status stays Pending and it is told so (403).
    AwaitingApproval,
    /// The agent is served; `change` is the transition to record, if any.
    Serve { change: Option<StatusChange> },
}

/// The facts [`on_checkin`] needs, so it can be tested without a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckinFacts {
    pub recorded: AgentStatus,
    pub requires_approval: bool,
    pub approved: bool,
    pub last_seen: Option<OffsetDateTime>,
}

impl From<&AgentRecord> for CheckinFacts {
    fn from(a: &AgentRecord) -> Self {
        CheckinFacts {
            recorded: a.status,
            requires_approval: a.requires_approval,
            approved: a.approved_at.is_some(),
            last_seen: a.last_seen,
        }
    }
}

/// Decides the status after a check-in at `now`.
pub fn on_checkin(facts: CheckinFacts, now: OffsetDateTime) -> CheckinVerdict {
    if facts.requires_approval && !facts.approved {
        return CheckinVerdict::AwaitingApproval;
    }
    let reason = match facts.recorded {
        AgentStatus::Active => return CheckinVerdict::Serve { change: None },
        AgentStatus::Pending => match facts.last_seen {
            None => "first check-in".to_owned(),
            Some(_) => "first check-in after approval".to_owned(),
        },
        AgentStatus::Inactive => match facts.last_seen {
            Some(seen) => format!("check-in after {} s of silence", whole_secs(now - seen)),
            None => "check-in after silence".to_owned(),
        },
        AgentStatus::Stopped => "check-in after clean stop".to_owned(),
    };
    CheckinVerdict::Serve {
        change: Some(StatusChange {
            from: facts.recorded,
            to: AgentStatus::Active,
            reason,
        }),
    }
}

/// The reason recorded when the sweeper declares an agent Inactive.
pub fn overdue_reason(
    last_seen: Option<OffsetDateTime>,
    now: OffsetDateTime,
    threshold_secs: u32,
) -> String {
    match last_seen {
        Some(seen) => format!(
            "no check-in for {} s (threshold {threshold_secs} s)",
            whole_secs(now - seen)
        ),
        None => format!("no check-in (threshold {threshold_secs} s)"),
    }
}

/// The reason recorded when the sweeper declares an overdue agent Inactive.
/// When the deadline was moved by a control-plane outage (it lies further
/// than one threshold after the last check-in), the reason says the count
/// started again from the control plane's recovery.
pub fn overdue_reason_for(o: &tether_store::Overdue, now: OffsetDateTime) -> String {
    let threshold = time::Duration::seconds(i64::from(o.inactive_after_secs));
    let counted_from = o.deadline_at - threshold;
    let base = overdue_reason(o.last_seen, now, o.inactive_after_secs);
    match o.last_seen {
        Some(seen) if counted_from - seen >= time::Duration::SECOND => format!(
            "{base}; counted from {} when the control plane recovered from its own outage",
            crate::service::rfc(counted_from)
        ),
        _ => base,
    }
}

/// The flags shown on top of the status: the one computation behind both
/// `agents list` and `agents show`. `defs` is the agent's view of each
/// subscribed channel (`service::defs::agent_views`).
pub fn flags(
    agent: &AgentRecord,
    current_version: &str,
    defs: &[AgentChannelView],
) -> Vec<AgentFlag> {
    let mut out = Vec::new();
    if compare_versions(&agent.version, current_version) == Some(Ordering::Less) {
        out.push(AgentFlag::VersionOutdated);
    }
    if let Some(rejected) = agent.credential_rejected_at
        && agent.last_seen.is_none_or(|seen| rejected > seen)
    {
        out.push(AgentFlag::CredentialRejected);
    }
    if defs.iter().any(|c| c.download_path_problem) {
        out.push(AgentFlag::DownloadPathProblem);
    }
    if defs.iter().any(|c| c.never_installed) {
        out.push(AgentFlag::DefsNeverInstalled);
    }
    out
}

/// Compares dotted numeric versions (`1.2.10` > `1.2.9`; a leading `v` and a
/// `-pre`/`+build` suffix are ignored; missing parts count as 0). When either
/// side is not numeric, only equality is known: `None` means "different, order
/// unknown"; for flagging, unknown-but-different counts as outdated.
pub fn compare_versions(agent: &str, current: &str) -> Option<Ordering> {
    fn parse(v: &str) -> Option<Vec<u64>> {
        let v = v.trim().trim_start_matches('v');
        let core = v.split(['-', '+']).next().unwrap_or(v);
        if core.is_empty() {
            return None;
        }
        core.split('.').map(|p| p.parse::<u64>().ok()).collect()
    }
    match (parse(agent), parse(current)) {
        (Some(mut a), Some(mut c)) => {
            let len = a.len().max(c.len());
            a.resize(len, 0);
            c.resize(len, 0);
            Some(a.cmp(&c))
        }
        _ if agent == current => Some(Ordering::Equal),
        // Non-numeric and different: we cannot order them, but they differ,
        // which is what the flag is about.
        _ => Some(Ordering::Less),
    }
}

/// Whole seconds of a duration, never negative.
pub fn whole_secs(d: time::Duration) -> i64 {
    d.whole_seconds().max(0)
}

/// A short human form of a duration: `45 s`, `4 min`, `3 h`, `2 d`.
pub fn human(d: time::Duration) -> String {
    let s = d.whole_seconds().unsigned_abs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-05-17 12:00 UTC);

    fn facts(recorded: AgentStatus, last_seen: Option<OffsetDateTime>) -> CheckinFacts {
        CheckinFacts {
            recorded,
            requires_approval: false,
            approved: false,
            last_seen,
        }
    }

    #[test]
    fn threshold_is_twice_the_interval_with_jitter_plus_grace() {
        assert_eq!(inactive_after_secs(30, 10, 10), 66 + 10);
        assert_eq!(inactive_after_secs(5, 0, 0), 10);
        // ceil(2 × 7 × 1.33) = ceil(18.62) = 19
        assert_eq!(inactive_after_secs(7, 33, 1), 20);
        assert_eq!(inactive_after_secs(u32::MAX, 50, u32::MAX), u32::MAX);
    }

    #[test]
    fn unapproved_agents_wait_and_approved_ones_become_active() {
        let mut f = facts(AgentStatus::Pending, None);
        f.requires_approval = true;
        assert_eq!(on_checkin(f, NOW), CheckinVerdict::AwaitingApproval);
        f.approved = true;
        let CheckinVerdict::Serve { change: Some(c) } = on_checkin(f, NOW) else {
            panic!("expected a change")
        };
        assert_eq!(
            (c.from, c.to, c.reason.as_str()),
            (AgentStatus::Pending, AgentStatus::Active, "first check-in")
        );
        f.last_seen = Some(NOW - Duration::seconds(40));
        let CheckinVerdict::Serve { change: Some(c) } = on_checkin(f, NOW) else {
            panic!("expected a change")
        };
        assert_eq!(c.reason, "first check-in after approval");
    }

    #[test]
    fn returns_from_silence_and_stops_are_explained() {
        let f = facts(AgentStatus::Inactive, Some(NOW - Duration::seconds(95)));
        let CheckinVerdict::Serve { change: Some(c) } = on_checkin(f, NOW) else {
            panic!("expected a change")
        };
        assert_eq!(c.reason, "check-in after 95 s of silence");
        assert_eq!(c.from, AgentStatus::Inactive);
        let f = facts(AgentStatus::Stopped, Some(NOW - Duration::seconds(5)));
        let CheckinVerdict::Serve { change: Some(c) } = on_checkin(f, NOW) else {
            panic!("expected a change")
        };
        assert_eq!(c.reason, "check-in after clean stop");
        let f = facts(AgentStatus::Active, Some(NOW));
        assert_eq!(on_checkin(f, NOW), CheckinVerdict::Serve { change: None });
    }

    #[test]
    fn overdue_reason_names_silence_and_threshold() {
        assert_eq!(
            overdue_reason(Some(NOW - Duration::seconds(80)), NOW, 76),
            "no check-in for 80 s (threshold 76 s)"
        );
    }

    #[test]
    fn an_overdue_reason_says_when_the_count_restarted_after_an_outage() {
        let seen = NOW - Duration::seconds(100);
        let plain = tether_store::Overdue {
            id: uuid::Uuid::nil(),
            last_seen: Some(seen),
            deadline_at: seen + Duration::seconds(20),
            inactive_after_secs: 20,
        };
        assert_eq!(
            overdue_reason_for(&plain, NOW),
            "no check-in for 100 s (threshold 20 s)"
        );
        let graced = tether_store::Overdue {
            deadline_at: NOW - Duration::seconds(1),
            ..plain
        };
        assert_eq!(
            overdue_reason_for(&graced, NOW),
            "no check-in for 100 s (threshold 20 s); counted from 2026-05-17T11:59:39Z when the control plane recovered from its own outage"
        );
    }

    #[test]
    fn versions_compare_numerically_then_by_inequality() {
        assert_eq!(compare_versions("1.2.9", "1.2.10"), Some(Ordering::Less));
        assert_eq!(compare_versions("v1.2", "1.2.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("0.2.0", "0.1.9"), Some(Ordering::Greater));
        assert_eq!(
            compare_versions("1.0.0-rc1", "1.0.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare_versions("nightly", "nightly"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_versions("nightly", "1.0"), Some(Ordering::Less));
        assert_eq!(compare_versions("", "1.0"), Some(Ordering::Less));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::seconds(45)), "45 s");
        assert_eq!(human(Duration::minutes(4)), "4 min");
        assert_eq!(human(Duration::hours(3)), "3 h");
        assert_eq!(human(Duration::days(-3)), "3 d");
    }
}
