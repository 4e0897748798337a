//! Definitions: signed content channels the agent keeps current (detection
//! signatures, scan rules). These are the bodies that cross the wire; the
//! signed metadata itself is TUF and lives in `tether-defs`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api::LastError;

/// What an agent's policy says about definitions.
///
/// **Frozen.** Agents 0.1 read this struct with `deny_unknown_fields`, so a
/// field added here would make every such agent fail to read its check-in
/// reply. Never add a field: put new settings beside it in [`Policy`]
/// (`crate::api::Policy`), which every agent reads leniently. This version
/// reads it leniently too, and `tests/wire_compat.rs` pins its field set.
///
/// [`Policy`]: crate::api::Policy
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefsPolicy {
    /// The channels the agent subscribes to.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Update servers (https:// base URLs of a `tether defs mirror` tree), in
    /// fallback order. Empty: the control plane's own `/defs/`.
    #[serde(default)]
    pub update_urls: Vec<String>,
    /// Seconds between update checks (with the policy's jitter).
    #[serde(default = "default_update_interval")]
    pub interval_secs: u32,
    /// Whether a local user may force an update (`tether agent update --now`).
    #[serde(default = "yes")]
    pub allow_user_update: bool,
}

impl Default for DefsPolicy {
    fn default() -> Self {
        DefsPolicy {
            channels: Vec::new(),
            update_urls: Vec::new(),
            interval_secs: DEFAULT_UPDATE_INTERVAL_SECS,
            allow_user_update: true,
        }
    }
}

/// Six hours: about four checks a day, the typical publish rate.
pub const DEFAULT_UPDATE_INTERVAL_SECS: u32 = 6 * 3600;

fn default_update_interval() -> u32 {
    DEFAULT_UPDATE_INTERVAL_SECS
}

fn yes() -> bool {
    true
}

/// How the last successful update arrived.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateMethod {
    /// A delta against the installed version.
    Delta,
    /// The full content.
    Full,
    /// An offline bundle (`tether agent defs import`).
    Bundle,
}

impl UpdateMethod {
    /// The name used on the wire and in human output.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMethod::Delta => "delta",
            UpdateMethod::Full => "full",
            UpdateMethod::Bundle => "bundle",
        }
    }
}

/// One channel's state as the agent reports it at check-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub channel: String,
    /// The installed version; `None` before the first successful update.
    #[serde(default)]
    pub version: Option<u64>,
    /// SHA-256 (hex) of the installed content.
    #[serde(default)]
    pub sha256: Option<String>,
    /// When the installed version was installed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    /// How it arrived.
    #[serde(default)]
    pub method: Option<UpdateMethod>,
    /// When the agent last tried to update this channel.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The last attempt's failure; `None` when it succeeded (or found the
    /// channel current).
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The update server (base URL) used by the last attempt.
    #[serde(default)]
    pub server: Option<String>,
    /// The proxy the last attempt went through (no credentials).
    #[serde(default)]
    pub via_proxy: Option<String>,
}

/// A delta published for a version: from `from_version` to it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaInfo {
    pub from_version: u64,
    /// `"line"` (record-level) or `"zstd"` (zstd patch-from).
    pub kind: String,
    /// Bytes on the wire.
    pub size: u64,
}

/// One published version of a channel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefsVersion {
    pub channel: String,
    pub version: u64,
    /// SHA-256 (hex) of the content.
    pub sha256: String,
    /// Length of the content in bytes.
    pub length: u64,
    /// `"text"` (line deltas) or `"binary"` (zstd deltas).
    pub content: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    #[serde(default)]
    pub notes: Option<String>,
    /// Bytes of the compressed full object on the wire.
    pub full_size: u64,
    /// Deltas published with this version, from earlier versions to it.
    #[serde(default)]
    pub deltas: Vec<DeltaInfo>,
    /// How many agents report this version installed (summary only).
    #[serde(default)]
    pub agents: u64,
}

/// `GET /v1/admin/defs/summary`: one channel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub channel: String,
    /// Newest first.
    pub versions: Vec<DefsVersion>,
    /// Agents whose policy subscribes to the channel.
    pub agents_subscribed: u64,
    pub agents_in_policy: u64,
    /// Agents seen recently whose updates keep failing: a download-path problem.
    pub agents_download_problem: u64,
    /// Agents that never installed the channel although enrolled for more
    /// than one definitions interval (0 from a server that predates it).
    #[serde(default)]
    pub agents_never_installed: u64,
}

/// One channel of one agent, as the fleet view shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentChannelView {
    pub channel: String,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub newest_version: Option<u64>,
    /// Published versions newer than the installed one.
    pub versions_behind: u64,
    /// Hours since the first version the agent lacks was published (0 when current).
    pub hours_behind: f64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<LastError>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub via_proxy: Option<String>,
    pub in_policy: bool,
    /// Seen recently, yet updates keep failing.
    pub download_path_problem: bool,
    /// Nothing installed although the channel is published and the agent
    /// has been enrolled for more than one definitions interval: out of
    /// policy for that reason (false from a server that predates it).
    #[serde(default)]
    pub never_installed: bool,
}
