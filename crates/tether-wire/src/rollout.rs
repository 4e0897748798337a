//! Agent releases and rollouts (issue #13, docs/upgrades.md).
//!
//! A release is an agent binary published on a definitions channel of its
//! own, one per platform and version: `agent-<os>-<arch>-<version>`. It gets
//! what every definitions channel gets (TUF signatures from the root the
//! agent pinned, resumable downloads, mirrors). A rollout names, for one
//! agent group, the version its agents should run, offered first to a
//! canary share of the group and then to all; it can be paused, and it
//! pauses itself when an agent reports that the version rolled back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The prefix of every release channel.
pub const RELEASE_CHANNEL_PREFIX: &str = "agent-";
/// The longest release version: the channel name (at most 64 characters)
/// must hold the prefix and the longest platform too.
pub const MAX_RELEASE_VERSION_LEN: usize = 32;
/// The longest platform name (`<os>-<arch>`).
pub const MAX_PLATFORM_LEN: usize = 24;

/// Whether `v` can be a release version: 1 to [`MAX_RELEASE_VERSION_LEN`]
/// of `[0-9a-z.-]`, starting with a digit, no `..`. Stricter than what an
/// agent installs by hand, because it becomes part of a channel name
/// (lowercase, no `+`).
pub fn valid_release_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_RELEASE_VERSION_LEN
        && v.starts_with(|c: char| c.is_ascii_digit())
        && !v.contains("..")
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
}

/// Whether `p` is a platform name: `<os>-<arch>` as Rust names them
/// (`linux-x86_64`, `linux-aarch64`), each part `[a-z0-9_]+`.
pub fn valid_platform(p: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    p.len() <= MAX_PLATFORM_LEN
        && p.split_once('-')
            .is_some_and(|(os, arch)| part(os) && part(arch))
}

/// The channel that carries `version` for `platform`, if both are valid.
pub fn release_channel(platform: &str, version: &str) -> Option<String> {
    (valid_platform(platform) && valid_release_version(version))
        .then(|| format!("{RELEASE_CHANNEL_PREFIX}{platform}-{version}"))
}

/// The platform and version a release channel carries; `None` for any
/// other channel.
pub fn parse_release_channel(channel: &str) -> Option<(String, String)> {
    let rest = channel.strip_prefix(RELEASE_CHANNEL_PREFIX)?;
    let (os, rest) = rest.split_once('-')?;
    let (arch, version) = rest.split_once('-')?;
    let platform = format!("{os}-{arch}");
    (release_channel(&platform, version).as_deref() == Some(channel))
        .then(|| (platform, version.to_owned()))
}

/// In a check-in reply: the version this agent should run. Agents that
/// predate rollouts ignore it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOffer {
    /// The release version; the agent fetches the channel
    /// [`release_channel`]`(its platform, version)`.
    pub version: String,
}

/// A rollout's stage.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStage {
    /// Offered to the canary share of the group only.
    Canary,
    /// Offered to every agent of the group.
    All,
}

impl RolloutStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStage::Canary => "canary",
            RolloutStage::All => "all",
        }
    }
}

impl std::fmt::Display for RolloutStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a rollout got in its group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// Agents in the group (removed ones excluded).
    pub agents: u64,
    /// Of those, how many report the target version.
    pub on_target: u64,
    /// Of those, how many report that the target version rolled back.
    pub rolled_back: u64,
}

/// `GET /v1/admin/rollouts`: one group's rollout.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub group: String,
    /// The version the group's agents should run.
    pub version: String,
    pub stage: RolloutStage,
    /// In the canary stage, the share of the group offered the version
    /// (1–100); which agents is a stable hash of their id and the version.
    pub canary_percent: u8,
    /// While paused, no agent is offered the version; those that took it
    /// keep it.
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub paused_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default)]
    pub progress: RolloutProgress,
}

/// `PUT /v1/admin/rollouts/{group}`: start (or replace) a group's rollout.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutUpdate {
    pub version: String,
    /// A canary share (1–99) first; absent or 100: every agent at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<u8>,
}

/// `POST /v1/admin/rollouts/{group}/pause`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/admin/releases`: one published agent release.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub platform: String,
    pub channel: String,
    /// The binary's size in bytes and SHA-256 (of the newest publish).
    pub length: u64,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

/// Where one agent stands in its group's rollout (in the fleet list).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRolloutState {
    /// It runs the target version.
    OnTarget,
    /// It is offered the version at each check-in.
    Offered,
    /// In the canary stage, and not in the canary share.
    WaitingForCanary,
    /// The rollout is paused.
    Paused,
    /// The target version rolled back on this agent; it is not offered again.
    RolledBack,
    /// A value from a newer server.
    #[serde(other)]
    Unknown,
}

impl AgentRolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRolloutState::OnTarget => "on_target",
            AgentRolloutState::Offered => "offered",
            AgentRolloutState::WaitingForCanary => "waiting_for_canary",
            AgentRolloutState::Paused => "paused",
            AgentRolloutState::RolledBack => "rolled_back",
            AgentRolloutState::Unknown => "unknown",
        }
    }
}

/// One agent's place in its group's rollout.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRollout {
    /// The group's target version.
    pub target: String,
    pub state: AgentRolloutState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_channels_round_trip_and_refuse_what_is_not_one() {
        let ch = release_channel("linux-x86_64", "1.4.2").expect("valid");
        assert_eq!(ch, "agent-linux-x86_64-1.4.2");
        assert_eq!(
            parse_release_channel(&ch),
            Some(("linux-x86_64".into(), "1.4.2".into()))
        );
        let ch = release_channel("linux-aarch64", "99.0.0-next").expect("valid");
        assert_eq!(
            parse_release_channel(&ch),
            Some(("linux-aarch64".into(), "99.0.0-next".into()))
        );
        for bad in [
            "signatures",
            "agent-",
            "agent-linux",
            "agent-linux-x86_64",
            "agent-linux-x86_64-",
            "agent-linux-x86_64-v1",
            "agent-Linux-x86_64-1.0",
            "agent-linux-x86_64-1..0",
        ] {
            assert_eq!(parse_release_channel(bad), None, "{bad}");
        }
        for (p, v) in [
            ("linux", "1.0"),
            ("linux-x86_64", "1.0+b"),
            ("linux-x86_64", "1.0.0-RC1"),
            ("linux-x86-64-x", "1.0"),
            ("LINUX-x86_64", "1.0"),
            ("linux-x86_64", &"1".repeat(33)),
            (&"l".repeat(20), "1.0"),
            ("linux-x86_64", "../1"),
            ("linux-x86_64", ""),
        ] {
            assert_eq!(release_channel(p, v), None, "{p} {v}");
        }
        // Every valid channel fits the definitions' 64-character limit.
        let longest = release_channel(
            &format!("{}-{}", "a".repeat(11), "b".repeat(12)),
            &format!("1{}", "0".repeat(31)),
        )
        .expect("valid");
        assert!(longest.len() <= 64, "{}", longest.len());
    }

    #[test]
    fn rollout_states_from_a_newer_server_read_as_unknown() {
        let s: AgentRolloutState = serde_json::from_str("\"staged\"").expect("reads");
        assert_eq!(s, AgentRolloutState::Unknown);
        let r: Rollout = serde_json::from_str(
            r#"{"group":"g","version":"1.0","stage":"canary","canary_percent":10,"paused":false,"updated_at":"2026-12-08T00:00:00Z"}"#,
        )
        .expect("reads without progress");
        assert_eq!(r.progress, RolloutProgress::default());
    }
}
