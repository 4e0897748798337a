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

/// One subscribed channel of one agent.
pub fn channel_view(
    name: &str,
    channel: &Channel<'_>,
    state: Option<&ChannelState>,
    status: AgentStatus,
    now: OffsetDateTime,
    grace: Duration,
) -> AgentChannelView {
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
    // A channel never published is ignored: nothing can be missing.
    let in_policy = behind <= channel.interval + grace;
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

    fn view(
        versions: &[DefsVersion],
        state: Option<&ChannelState>,
        status: AgentStatus,
    ) -> AgentChannelView {
        let channel = Channel::new(versions.iter().collect());
        channel_view("sig", &channel, state, status, NOW, GRACE)
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
    fn never_installed_counts_from_the_first_publish() {
        let versions = published(3, Duration::hours(6), NOW - Duration::hours(1));
        let v = view(&versions, Some(&installed(None, 0)), AgentStatus::Active);
        assert_eq!(v.versions_behind, 3);
        assert!((v.hours_behind - 13.0).abs() < 1e-9, "{}", v.hours_behind);
        assert!(v.in_policy, "13 h <= 18 h");
        let none = view(&versions, None, AgentStatus::Active);
        assert_eq!(none.versions_behind, 3, "no report at all is the same");
        let old = published(3, Duration::days(2), NOW - Duration::hours(1));
        let v = view(&old, None, AgentStatus::Active);
        assert!(!v.in_policy, "97 h > 48 h interval + 12 h grace");
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
