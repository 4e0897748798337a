//! Whether an agent's definitions are "in policy": the pure computation,
//! from the published versions, the agent's reported channel state, its
//! status and the time. No I/O, so every case is a unit test with fixed
//! times.
//!
//! Per subscribed channel: `versions_behind` counts published versions newer
//! than the installed one; `hours_behind` runs from the publication of the
//! oldest version the agent lacks (from the channel's first publish when
//! nothing is installed; 0 when current). The channel is in policy while
//! `hours_behind` stays within the channel's usual publish interval (the
//! median gap between its last 8 publishes; 6 h with fewer than 2) plus the
//! configured grace. The agent is in policy when every subscribed channel is
//! and it is Active. A channel never published is ignored (in policy).
//!
//! A channel with nothing installed is judged differently: the agent gets one
//! definitions interval (its policy's `interval_secs`) to install it, counted
//! from whichever came later, its enrollment or the channel's first publish
//! (an agent with nothing installed checks within 10 minutes of starting, so
//! one interval is ample). Past that it is "never installed" and out of
//! policy; within it, it is in policy however old the channel is, because a
//! new agent cannot be behind for longer than it has existed.

use tether_wire::{AgentChannelView, AgentStatus, ChannelState, DefsVersion};
use time::{Duration, OffsetDateTime};

/// The publish interval assumed for a channel with fewer than 2 versions.
pub const DEFAULT_INTERVAL: Duration = Duration::hours(6);
/// How many of the newest publishes the interval is estimated from.
const INTERVAL_WINDOW: usize = 8;
/// Failed attempts in a row after which an agent seen recently, yet not
/// current, has a download-path problem rather than bad luck.
pub const PROBLEM_FAILURES: u32 = 2;

/// One channel's published versions, as the computation needs them.
#[derive(Debug, Clone)]
pub struct Channel<'a> {
    /// Any order.
    pub versions: Vec<&'a DefsVersion>,
    /// [`publish_interval`] of `versions`, computed once per channel.
    pub interval: Duration,
}

impl<'a> Channel<'a> {
    pub fn new(versions: Vec<&'a DefsVersion>) -> Self {
        let interval = publish_interval(&versions);
        Channel { versions, interval }
    }
}

/// The median gap between the channel's last [`INTERVAL_WINDOW`] publishes,
/// or [`DEFAULT_INTERVAL`] with fewer than 2 versions.
pub fn publish_interval(versions: &[&DefsVersion]) -> Duration {
    let mut times: Vec<OffsetDateTime> = versions.iter().map(|v| v.published_at).collect();
    times.sort();
    let recent = &times[times.len().saturating_sub(INTERVAL_WINDOW)..];
    let mut gaps: Vec<Duration> = recent.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.is_empty() {
        return DEFAULT_INTERVAL;
    }
    gaps.sort();
    let mid = gaps.len() / 2;
    if gaps.len() % 2 == 1 {
        gaps[mid]
    } else {
        (gaps[mid - 1] + gaps[mid]) / 2
    }
}

/// What the computation needs to know about the agent itself.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub status: AgentStatus,
    pub enrolled_at: OffsetDateTime,
    /// The agent's definitions interval (its policy's `interval_secs`).
    pub defs_interval: Duration,
}

/// One subscribed channel of one agent.
pub fn channel_view(
    name: &str,
    channel: &Channel<'_>,
    state: Option<&ChannelState>,
    agent: Subject,
    now: OffsetDateTime,
    grace: Duration,
) -> AgentChannelView {
    let status = agent.status;
    let installed = state.and_then(|s| s.version);
    let newest_version = channel.versions.iter().map(|v| v.version).max();
    let missing: Vec<&&DefsVersion> = channel
        .versions
        .iter()
        .filter(|v| installed.is_none_or(|i| v.version > i))
        .collect();
    let versions_behind = missing.len() as u64;
    let oldest_missing = missing.iter().map(|v| v.published_at).min();
    let behind = oldest_missing.map_or(Duration::ZERO, |at| (now - at).max(Duration::ZERO));
    let hours_behind = behind.as_seconds_f64() / 3600.0;
    let never_installed = installed.is_none()
        && oldest_missing
            .is_some_and(|first| now - first.max(agent.enrolled_at) > agent.defs_interval);
    // A channel never published is ignored: nothing can be missing.
    let in_policy = if installed.is_none() {
        !never_installed
    } else {
        behind <= channel.interval + grace
    };
    let current = versions_behind == 0;
    let failures = state.map_or(0, |s| s.consecutive_failures);
    AgentChannelView {
        channel: name.to_owned(),
        version: installed,
        newest_version,
        versions_behind,
        hours_behind,
        updated_at: state.and_then(|s| s.updated_at),
        last_attempt_at: state.and_then(|s| s.last_attempt_at),
        last_error: state.and_then(|s| s.last_error.clone()),
        consecutive_failures: failures,
        server: state.and_then(|s| s.server.clone()),
        via_proxy: state.and_then(|s| s.via_proxy.clone()),
        in_policy,
        download_path_problem: status == AgentStatus::Active
            && failures >= PROBLEM_FAILURES
            && !current,
        never_installed,
    }
}

/// The agent as a whole: `None` when it subscribes to no channel; otherwise
/// in policy when it is Active and every subscribed channel is.
pub fn agent_in_policy(status: AgentStatus, views: &[AgentChannelView]) -> Option<bool> {
    if views.is_empty() {
        return None;
    }
    Some(status == AgentStatus::Active && views.iter().all(|v| v.in_policy))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-05-17 12:00 UTC);
    const GRACE: Duration = Duration::hours(12);

    /// Versions 1..=n of "sig", published every `every`, the newest at `newest`.
    fn published(n: u64, every: Duration, newest: OffsetDateTime) -> Vec<DefsVersion> {
        (1..=n)
            .map(|v| DefsVersion {
                channel: "sig".to_owned(),
                version: v,
                sha256: format!("{v:064x}"),
                length: 10,
                content: "text".to_owned(),
                published_at: newest - every * i32::try_from(n - v).expect("small"),
                notes: None,
                full_size: 10,
                deltas: Vec::new(),
                agents: 0,
            })
            .collect()
    }

    fn installed(version: Option<u64>, failures: u32) -> ChannelState {
        ChannelState {
            channel: "sig".to_owned(),
            version,
            sha256: None,
            updated_at: None,
            method: None,
            last_attempt_at: Some(NOW - Duration::minutes(5)),
            last_error: None,
            consecutive_failures: failures,
            server: None,
            via_proxy: None,
        }
    }

    /// An agent enrolled 30 days ago with the default 6 h definitions interval.
    fn subject(status: AgentStatus) -> Subject {
        Subject {
            status,
            enrolled_at: NOW - Duration::days(30),
            defs_interval: INTERVAL,
        }
    }

    const INTERVAL: Duration = Duration::hours(6);

    fn view(
        versions: &[DefsVersion],
        state: Option<&ChannelState>,
        status: AgentStatus,
    ) -> AgentChannelView {
        view_as(versions, state, subject(status))
    }

    fn view_as(
        versions: &[DefsVersion],
        state: Option<&ChannelState>,
        agent: Subject,
    ) -> AgentChannelView {
        let channel = Channel::new(versions.iter().collect());
        channel_view("sig", &channel, state, agent, NOW, GRACE)
    }

    #[test]
    fn current_is_in_policy() {
        let versions = published(10, Duration::hours(6), NOW - Duration::hours(1));
        let v = view(
            &versions,
            Some(&installed(Some(10), 0)),
            AgentStatus::Active,
        );
        assert_eq!((v.versions_behind, v.hours_behind), (0, 0.0));
        assert_eq!(v.newest_version, Some(10));
        assert!(v.in_policy && !v.download_path_problem);
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(true));
    }

    #[test]
    fn one_missed_publish_is_still_in_policy() {
        // v10 came out 5 h ago; the agent has v9.
        let versions = published(10, Duration::hours(6), NOW - Duration::hours(5));
        let v = view(&versions, Some(&installed(Some(9), 0)), AgentStatus::Active);
        assert_eq!(v.versions_behind, 1);
        assert!((v.hours_behind - 5.0).abs() < 1e-9, "{}", v.hours_behind);
        assert!(v.in_policy, "5 h <= 6 h interval + 12 h grace");
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(true));
    }

    #[test]
    fn two_days_behind_is_out_of_policy() {
        // Published every 6 h, the newest 1 h ago; the agent lacks the last
        // 8 versions, the oldest of which came out 43 h ago.
        let versions = published(20, Duration::hours(6), NOW - Duration::hours(1));
        let v = view(
            &versions,
            Some(&installed(Some(12), 0)),
            AgentStatus::Active,
        );
        assert_eq!(v.versions_behind, 8);
        assert!((v.hours_behind - 43.0).abs() < 1e-9, "{}", v.hours_behind);
        assert!(!v.in_policy);
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(false));
    }

    #[test]
    fn never_installed_after_one_interval_is_out_of_policy() {
        // First published 13 h ago; the agent, enrolled 30 days ago, has
        // had more than one 6 h interval to install it.
        let versions = published(3, Duration::hours(6), NOW - Duration::hours(1));
        let v = view(&versions, Some(&installed(None, 0)), AgentStatus::Active);
        assert_eq!(v.versions_behind, 3);
        assert!((v.hours_behind - 13.0).abs() < 1e-9, "{}", v.hours_behind);
        assert!(v.never_installed && !v.in_policy);
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(false));
        let none = view(&versions, None, AgentStatus::Active);
        assert!(
            none.never_installed && !none.in_policy,
            "no report at all is the same"
        );
        assert_eq!(none.versions_behind, 3);
    }

    #[test]
    fn enrolled_less_than_one_interval_is_not_flagged() {
        // The channel is 97 h old, but the agent enrolled 5 h ago: it still
        // has an hour of its first interval to install it.
        let old = published(3, Duration::days(2), NOW - Duration::hours(1));
        let fresh = Subject {
            enrolled_at: NOW - Duration::hours(5),
            ..subject(AgentStatus::Active)
        };
        let v = view_as(&old, None, fresh);
        assert!(!v.never_installed && v.in_policy, "{v:?}");
        assert_eq!(v.versions_behind, 3, "it is still behind, and says so");
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(true));
        // Exactly one interval is still within it; one second more is not.
        let at_edge = Subject {
            enrolled_at: NOW - INTERVAL,
            ..fresh
        };
        assert!(view_as(&old, None, at_edge).in_policy);
        let past = Subject {
            enrolled_at: NOW - INTERVAL - Duration::seconds(1),
            ..fresh
        };
        let v = view_as(&old, None, past);
        assert!(v.never_installed && !v.in_policy);
        // The policy's own interval counts, not the default.
        let daily = Subject {
            defs_interval: Duration::days(1),
            ..past
        };
        assert!(view_as(&old, None, daily).in_policy);
    }

    #[test]
    fn a_channel_first_published_within_one_interval_is_not_flagged() {
        // Enrolled long ago, but the channel's first version is 2 h old: the
        // agent has not had a whole interval to fetch it.
        let versions = published(1, Duration::hours(6), NOW - Duration::hours(2));
        let v = view(&versions, None, AgentStatus::Active);
        assert!(!v.never_installed && v.in_policy, "{v:?}");
        let versions = published(1, Duration::hours(6), NOW - Duration::hours(7));
        assert!(view(&versions, None, AgentStatus::Active).never_installed);
    }

    #[test]
    fn installed_once_is_never_never_installed() {
        // v2 of 4 came out 97 h ago; the agent has v1.
        let versions = published(4, Duration::days(2), NOW - Duration::hours(1));
        let v = view(&versions, Some(&installed(Some(1), 0)), AgentStatus::Active);
        assert!(!v.never_installed);
        assert!(
            !v.in_policy,
            "97 h behind > 48 h + 12 h: behind, not never installed"
        );
    }

    #[test]
    fn an_agent_that_is_not_active_is_out_of_policy() {
        let versions = published(10, Duration::hours(6), NOW - Duration::hours(1));
        for status in [
            AgentStatus::Inactive,
            AgentStatus::Pending,
            AgentStatus::Stopped,
        ] {
            let v = view(&versions, Some(&installed(Some(10), 0)), status);
            assert!(v.in_policy, "the channel itself is current");
            assert_eq!(agent_in_policy(status, &[v]), Some(false), "{status}");
        }
        assert_eq!(agent_in_policy(AgentStatus::Active, &[]), None);
    }

    #[test]
    fn download_path_problem_needs_active_failures_and_not_current() {
        let versions = published(10, Duration::hours(6), NOW - Duration::hours(1));
        let behind = installed(Some(9), 2);
        assert!(view(&versions, Some(&behind), AgentStatus::Active).download_path_problem);
        assert!(
            !view(&versions, Some(&behind), AgentStatus::Inactive).download_path_problem,
            "not seen recently: the agent is the problem, not its path"
        );
        assert!(
            !view(&versions, Some(&installed(Some(9), 1)), AgentStatus::Active)
                .download_path_problem,
            "one failure is bad luck"
        );
        assert!(
            !view(
                &versions,
                Some(&installed(Some(10), 5)),
                AgentStatus::Active
            )
            .download_path_problem,
            "current despite failures"
        );
    }

    #[test]
    fn a_channel_never_published_is_ignored() {
        let v = view(&[], Some(&installed(None, 3)), AgentStatus::Active);
        assert!(v.in_policy && !v.download_path_problem);
        assert_eq!((v.newest_version, v.versions_behind), (None, 0));
        assert_eq!(agent_in_policy(AgentStatus::Active, &[v]), Some(true));
    }

    #[test]
    fn the_interval_is_the_median_of_the_last_eight_publishes() {
        let one = published(1, Duration::hours(1), NOW);
        assert_eq!(
            publish_interval(&one.iter().collect::<Vec<_>>()),
            DEFAULT_INTERVAL
        );
        let mut versions = published(12, Duration::hours(2), NOW);
        // An old, slow start is outside the window.
        versions[0].published_at = NOW - Duration::days(30);
        // One late publish inside the window does not move the median.
        versions[11].published_at += Duration::hours(5);
        let refs: Vec<&DefsVersion> = versions.iter().collect();
        assert_eq!(publish_interval(&refs), Duration::hours(2));
        let two = published(2, Duration::hours(3), NOW);
        assert_eq!(
            publish_interval(&two.iter().collect::<Vec<_>>()),
            Duration::hours(3)
        );
        let even =
            [NOW, NOW + Duration::hours(1), NOW + Duration::hours(4)].map(|at| DefsVersion {
                published_at: at,
                ..one[0].clone()
            });
        assert_eq!(
            publish_interval(&even.iter().collect::<Vec<_>>()),
            Duration::minutes(120),
            "two gaps (1 h, 3 h): their mean"
        );
    }

    #[test]
    fn an_unknown_newer_installed_version_counts_as_current() {
        let versions = published(3, Duration::hours(6), NOW - Duration::days(10));
        let v = view(
            &versions,
            Some(&installed(Some(99), 3)),
            AgentStatus::Active,
        );
        assert_eq!(v.versions_behind, 0);
        assert!(v.in_policy && !v.download_path_problem);
    }
}
