//! Request and response bodies of the control plane's HTTP API.
//!
//! Paths (all JSON; admin routes need `Authorization: Bearer <admin token>`,
//! agent routes `Authorization: Bearer <agent credential>`):
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | GET | `/health` | → [`Health`] (no auth) |
//! | GET | `/v1/openapi.json` | → the OpenAPI 3.1 document of every route here (no auth; `tether-server`'s `api::openapi`) |
//! | POST | `/v1/enroll` | [`EnrollRequest`] → [`EnrollResponse`] (the token is the auth) |
//! | POST | `/v1/agent/checkin` | [`CheckinRequest`] → [`CheckinResponse`] |
//! | POST | `/v1/agent/shutdown` | [`ShutdownNotice`] → 204 |
//! | POST | `/v1/admin/tokens` | [`CreateTokenRequest`] → [`CreatedToken`] |
//! | GET | `/v1/admin/tokens` | → `Vec<`[`TokenInfo`]`>` |
//! | POST | `/v1/admin/tokens/{id}/revoke` | → [`TokenInfo`] |
//! | GET | `/v1/admin/agents?status=S` | → `Vec<`[`AgentSummary`]`>` |
//! | GET | `/v1/admin/agents/{id}` | → [`AgentDetail`] |
//! | GET | `/v1/fleet/diagnosis?limit=N` | → [`FleetDiagnosis`](crate::fleet::FleetDiagnosis) (admin; docs/fleet-diagnosis.md) |
//! | GET | `/v1/admin/audit?limit=N&after=CURSOR&actor=NAME&since=WHEN` | → `Vec<`[`crate::AuditEntry`]`>`, newest first, paged (`crate::audit`) |
//! | POST | `/v1/admin/agents/{id}/approve` | → [`AgentSummary`] |
//! | DELETE | `/v1/admin/agents/{id}` | → 204 |
//! | GET | `/v1/admin/policies` | → `Vec<`[`Policy`]`>` |
//! | PUT | `/v1/admin/policies/{name}` | [`PolicyUpdate`] → [`Policy`] |
//! | POST | `/v1/agent/bundles` | gzip bytes (`Content-Type: application/gzip`) → [`BundleInfo`] |
//! | POST | `/v1/agent/actions/{id}/result` | [`ActionResult`] → [`ActionInfo`] |
//! | POST | `/v1/admin/agents/{id}/actions` | [`ActionKind`] → [`ActionInfo`] |
//! | GET | `/v1/admin/agents/{id}/actions` | → `Vec<`[`ActionInfo`]`>` |
//! | GET | `/v1/admin/agents/{id}/bundles` | → `Vec<`[`BundleInfo`]`>` |
//! | GET | `/v1/admin/bundles/{id}` | → the bundle's gzip bytes |
//! | POST | `/v1/admin/groups/{group}/actions` | [`ActionKind`] → `Vec<`[`ActionInfo`]`>` (every agent of the group; 404 when it has none) |
//! | GET | `/defs/{*path}` | → a file of the signed TUF tree (no auth; ETag, Last-Modified, single `Range`, `If-Range`) |
//! | POST | `/v1/admin/defs/{channel}/versions?notes=N` | the definitions file (`application/octet-stream`) → [`DefsVersion`](crate::defs::DefsVersion) (201) |
//! | GET | `/v1/admin/defs/summary?channel=C` | → `Vec<`[`ChannelSummary`](crate::defs::ChannelSummary)`>` |
//! | GET | `/v1/admin/defs/{channel}/export` | → the offline bundle (`application/x-tar`) |
//! | GET | `/v1/admin/releases` | → `Vec<`[`Release`](crate::rollout::Release)`>` (agent binaries on their release channels) |
//! | GET | `/v1/admin/rollouts` | → `Vec<`[`Rollout`](crate::rollout::Rollout)`>` with progress |
//! | PUT | `/v1/admin/rollouts/{group}` | [`RolloutUpdate`](crate::rollout::RolloutUpdate) → [`Rollout`](crate::rollout::Rollout) |
//! | DELETE | `/v1/admin/rollouts/{group}` | → 204 |
//! | POST | `/v1/admin/rollouts/{group}/pause` | [`RolloutPause`](crate::rollout::RolloutPause) → [`Rollout`](crate::rollout::Rollout) |
//! | POST | `/v1/admin/rollouts/{group}/resume` | → [`Rollout`](crate::rollout::Rollout) |
//! | POST | `/v1/admin/rollouts/{group}/promote` | → [`Rollout`](crate::rollout::Rollout) (canary to all) |
//!
//! Admin credentials, the agent's read-only probe and paging are in
//! [`crate::control`].
//!
//! Compatibility (ARCHITECTURE.md, "Wire compatibility"): an agent one
//! version older or newer than the server keeps working. So no body here
//! rejects a field it does not know, a field added later has a default, and
//! nothing is renamed or removed while a supported peer still sends or reads
//! it. Recorded bodies of each released version live in
//! `tests/fixtures/` and are parsed by `tests/wire_compat.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ErrorCode;

/// What an agent is for. A token allows exactly one kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Discovery,
    Provisioning,
    Connector,
}

impl AgentKind {
    pub const ALL: [AgentKind; 3] = [
        AgentKind::Discovery,
        AgentKind::Provisioning,
        AgentKind::Connector,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Discovery => "discovery",
            AgentKind::Provisioning => "provisioning",
            AgentKind::Connector => "connector",
        }
    }
}

impl std::str::FromStr for AgentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AgentKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown agent kind {s:?} (expected discovery, provisioning or connector)")
            })
    }
}

impl std::fmt::Display for AgentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status every agent is judged by. It is derived from stored facts by the
/// server; every change is recorded as a [`Transition`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Enrolled, awaiting approval or its first check-in.
    Pending,
    /// Checking in within its threshold.
    Active,
    /// No check-in within the threshold derived from its own interval.
    Inactive,
    /// The agent announced a clean shutdown.
    Stopped,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 4] = [
        AgentStatus::Pending,
        AgentStatus::Active,
        AgentStatus::Inactive,
        AgentStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Inactive => "inactive",
            AgentStatus::Stopped => "stopped",
        }
    }
}

impl std::str::FromStr for AgentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        AgentStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                format!("unknown status {s:?} (expected pending, active, inactive or stopped)")
            })
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flags shown on top of the status, the same in `agents list` and
/// `agents show` (the server computes them once, `status::flags`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentFlag {
    /// The agent runs an older version than the server's current agent version.
    VersionOutdated,
    /// The agent's credential was rejected recently (removed or re-registered).
    CredentialRejected,
    /// Active, yet updates of a subscribed channel keep failing while it is
    /// behind: a download-path problem, not an offline agent.
    DownloadPathProblem,
    /// A subscribed, published channel was never installed although the
    /// agent has been enrolled for more than one definitions interval.
    DefsNeverInstalled,
    /// A flag from a newer server that this version does not know.
    #[serde(other)]
    Unknown,
}

impl AgentFlag {
    /// The flag's name on the wire (`download_path_problem`), as tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentFlag::VersionOutdated => "version_outdated",
            AgentFlag::CredentialRejected => "credential_rejected",
            AgentFlag::DownloadPathProblem => "download_path_problem",
            AgentFlag::DefsNeverInstalled => "defs_never_installed",
            AgentFlag::Unknown => "unknown",
        }
    }
}

/// `GET /health`: the first thing an admin curls.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"tether"`: lets a client tell our server from a captive portal.
    pub service: String,
    /// `"ok"` or `"degraded"`.
    pub status: String,
    pub version: String,
    pub store: StoreHealth,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    /// The singleton jobs this server runs now (`status-sweeper`,
    /// `task-sweeper`, `retention`, `defs-refresh`); with several servers on
    /// one database, each job is listed by one of them. Absent from older
    /// servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `"sqlite"` or `"postgres"`.
    pub backend: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Facts an agent reports about its host, at enrollment and at each check-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// For example `"linux debian 12"`.
    pub os: String,
    pub internal_ips: Vec<String>,
    pub uptime_secs: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub installed_at: Option<OffsetDateTime>,
}

/// `POST /v1/enroll`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    /// A display name; defaults to the hostname on the agent side.
    pub name: String,
    /// The kind the agent asks for; `None` takes the token's kind.
    #[serde(default)]
    pub kind: Option<AgentKind>,
    pub agent_version: String,
    pub facts: HostFacts,
    /// When re-registering: the agent's current credential. The server
    /// replaces that agent's identity and the old credential stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_credential: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: Uuid,
    /// The agent's own secret, distinct from the token. Shown once.
    pub credential: String,
    pub status: AgentStatus,
    pub kind: AgentKind,
    pub group: String,
    pub policy: Policy,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    /// The definitions repository's trusted root metadata (TUF `root.json`),
    /// which the agent pins; absent from servers that serve no definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defs_root: Option<String>,
}

/// The last error of one agent subsystem (transport, checkin, definitions…).
/// A code from a newer agent's catalog reads as
/// [`ErrorCode::UnknownPeerCode`], with the agent's code heading the message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LastErrorWire")]
pub struct LastError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// [`LastError`] as read from the wire, its code still a string.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Deserialize)]
struct LastErrorWire {
    code: String,
    message: String,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

impl From<LastErrorWire> for LastError {
    fn from(w: LastErrorWire) -> Self {
        let (code, message) = crate::error::peer_code(&w.code, w.message);
        LastError {
            code,
            message,
            at: w.at,
        }
    }
}

/// `POST /v1/agent/checkin`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinRequest {
    pub agent_version: String,
    pub facts: HostFacts,
    /// Installed definition version per channel (empty until definitions exist).
    #[serde(default)]
    pub definitions: BTreeMap<String, String>,
    /// The last error per subsystem, as recorded in the agent's state file.
    #[serde(default)]
    pub last_errors: BTreeMap<String, LastError>,
    /// The proxy the agent uses, without credentials, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Definitions state per subscribed channel.
    #[serde(default)]
    pub defs: Vec<crate::defs::ChannelState>,
    /// The host's last agent upgrade, as the agent and its `launch`
    /// supervisor recorded it (absent: none, or an agent that predates
    /// upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeReport>,
}

/// Where an agent's last upgrade stands on its host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeState {
    /// The new binary is installed and switched to; it has not checked in yet.
    Upgrading,
    /// The new version checked in within the supervisor's bound.
    Upgraded,
    /// The new version failed to start or to check in in time; the host
    /// runs the previous one again (the reason says why).
    RolledBack,
    /// A state from a newer agent that this version does not know.
    #[serde(other)]
    Unknown,
}

impl UpgradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeState::Upgrading => "upgrading",
            UpgradeState::Upgraded => "upgraded",
            UpgradeState::RolledBack => "rolled_back",
            UpgradeState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for UpgradeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's last upgrade: to which version, from which, and for a
/// rollback why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub state: UpgradeState,
    /// The version upgraded to (or tried).
    pub version: String,
    /// The version it replaced (`None`: the packaged binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinResponse {
    pub agent_id: Uuid,
    pub status: AgentStatus,
    pub policy: Policy,
    pub actions: Vec<Action>,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    /// The agent version the server considers current, if it knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_agent_version: Option<String>,
    /// The version this agent's group rollout offers it (absent: none, or
    /// a server that predates rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::rollout::UpgradeOffer>,
}

/// `POST /v1/agent/shutdown`: the agent is stopping cleanly.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownNotice {
    pub reason: String,
}

/// A policy, revision-tracked: the agent applies a policy when its revision
/// is newer than the one it holds.
///
/// Every agent reads this struct leniently, so this is where new settings
/// go, each with a default for servers that predate it. Never in
/// [`DefsPolicy`](crate::defs::DefsPolicy), which agents 0.1 read strictly.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub revision: i64,
    pub checkin_interval_secs: u32,
    /// Jitter applied to each interval, in percent (0–50).
    pub jitter_percent: u8,
    /// Extra `host:port` targets the connectivity doctor checks (empty when
    /// the server predates the field).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Definitions: channels, update servers, interval, user updates.
    #[serde(default)]
    pub defs: crate::defs::DefsPolicy,
    /// How many long tasks (scans, deployments) an agent runs at once, from
    /// [`MIN_MAX_CONCURRENT_TASKS`] to [`MAX_MAX_CONCURRENT_TASKS`]; admin
    /// actions have a lane of their own beside them. Absent (a server that
    /// predates it, or the default): [`DEFAULT_MAX_CONCURRENT_TASKS`].
    #[serde(
        default = "default_max_concurrent_tasks",
        skip_serializing_if = "is_default_max_concurrent_tasks"
    )]
    pub max_concurrent_tasks: u32,
}

/// Long tasks an agent runs at once unless its policy says otherwise.
pub const DEFAULT_MAX_CONCURRENT_TASKS: u32 = 4;
/// The fewest long tasks a policy may allow at once.
pub const MIN_MAX_CONCURRENT_TASKS: u32 = 1;
/// The most long tasks a policy may allow at once: each runs on a thread of
/// its own on an endpoint that has other work to do.
pub const MAX_MAX_CONCURRENT_TASKS: u32 = 32;

fn default_max_concurrent_tasks() -> u32 {
    DEFAULT_MAX_CONCURRENT_TASKS
}

fn is_default_max_concurrent_tasks(n: &u32) -> bool {
    *n == DEFAULT_MAX_CONCURRENT_TASKS
}

/// `PUT /v1/admin/policies/{name}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    pub checkin_interval_secs: u32,
    #[serde(default = "default_jitter")]
    pub jitter_percent: u8,
    /// `host:port` targets the doctor checks; at most 64. Empty when absent.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Definitions settings; the defaults when absent.
    #[serde(default)]
    pub defs: crate::defs::DefsPolicy,
    /// Long tasks an agent runs at once. Absent: the stored value is kept
    /// ([`DEFAULT_MAX_CONCURRENT_TASKS`] for a new policy), so an admin
    /// client that predates the setting does not reset it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<u32>,
    /// Save only if the stored policy is still at this revision (the one the
    /// edit was based on); otherwise the server answers 409 `Conflict` and
    /// changes nothing. Absent: save unconditionally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_revision: Option<i64>,
}

fn default_jitter() -> u8 {
    10
}

fn yes() -> bool {
    true
}

/// Something the server asks the agent to do at its next check-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: Uuid,
    #[serde(flatten)]
    pub kind: ActionKind,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionKind {
    /// Turn on debug logging for a bounded time.
    Debug { minutes: u32 },
    /// Run the connectivity doctor, report its verdict and, when `upload`
    /// is set, upload the escalation bundle. `{"type":"doctor"}` uploads.
    Doctor {
        #[serde(default = "yes")]
        upload: bool,
    },
    /// Check the definitions channels now (all subscribed ones, or one).
    UpdateDefs {
        #[serde(default)]
        channel: Option<String>,
    },
    /// Run the escalation capture (`tether-agent capture --upload`): debug
    /// logging and a packet capture of the agent's own traffic for `secs`
    /// (default: the policy's definitions interval; 2 to 3600), one check-in
    /// and one definitions update inside, then the bundle is uploaded. With
    /// `tls_keylog` the bundle carries the TLS key log and the agent's
    /// credential is rotated after the upload.
    Capture {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secs: Option<u32>,
        #[serde(default)]
        tls_keylog: bool,
    },
    /// An action this agent version does not know; it is acknowledged and ignored.
    #[serde(other)]
    Unknown,
}

/// `POST /v1/admin/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub kind: AgentKind,
    pub group: String,
    pub valid_for_secs: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    #[serde(default)]
    pub require_approval: bool,
    /// The policy agents enrolled with this token get; `"default"` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The site label agents enrolled with this token get (an existing site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub kind: AgentKind,
    pub group: String,
    pub policy: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub require_approval: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The token secret is returned once, at creation; the server keeps a hash.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

/// One row of the fleet's status table.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: Uuid,
    pub name: String,
    pub kind: AgentKind,
    pub group: String,
    pub status: AgentStatus,
    pub flags: Vec<AgentFlag>,
    pub hostname: String,
    pub version: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub external_ip: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// Definitions in policy (see [`AgentDetail::in_policy`]).
    #[serde(default)]
    pub in_policy: Option<bool>,
    /// The agent's last upgrade as its host reported it (absent: none, or
    /// an agent or server that predates upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeReport>,
    /// Where the agent stands in its group's rollout (absent: no rollout,
    /// or a server that predates rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::AgentRollout>,
}

/// One recorded status change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<AgentStatus>,
    pub to: AgentStatus,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// `GET /v1/admin/agents/{id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    pub summary: AgentSummary,
    pub facts: HostFacts,
    pub policy: Policy,
    pub definitions: BTreeMap<String, String>,
    pub last_errors: BTreeMap<String, LastError>,
    pub proxy: Option<String>,
    pub checkin_interval_secs: u32,
    /// Seconds of silence after which this agent becomes Inactive.
    pub inactive_after_secs: u32,
    pub transitions: Vec<Transition>,
    /// The verdict of the last doctor run this agent reported (by a queued
    /// action or an uploaded bundle), if any.
    #[serde(default)]
    pub last_doctor: Option<DoctorSummary>,
    /// Definitions per subscribed channel.
    #[serde(default)]
    pub defs: Vec<crate::defs::AgentChannelView>,
    /// Whether every subscribed channel is in policy and the agent checked
    /// in recently; `None` when it subscribes to no channel.
    #[serde(default)]
    pub in_policy: Option<bool>,
    /// The control plane's own outages since the agent enrolled, newest
    /// first: they explain a silence that led to no transition.
    #[serde(default)]
    pub outages: Vec<crate::control::ControlPlaneOutage>,
    /// The site label (from the enrollment token, or set by an admin).
    #[serde(default)]
    pub site: Option<String>,
}

/// The one-line verdict of a doctor run, as the agent reports it and the
/// server stores it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorSummary {
    /// `"healthy"`, `"warnings"` or `"failed"` (the doctor's exit codes 0, 1, 2).
    pub status: String,
    /// The root cause's error code, if there is one.
    #[serde(default)]
    pub code: Option<ErrorCode>,
    /// The root cause in one sentence.
    pub root_cause: String,
    /// What to do about it.
    #[serde(default)]
    pub action: String,
    /// The id of the check that names the root cause.
    #[serde(default)]
    pub check: Option<String>,
    /// When the doctor ran, by the agent's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The bundle uploaded with this run, if any.
    #[serde(default)]
    pub bundle_id: Option<Uuid>,
}

/// `POST /v1/agent/actions/{id}/result`: what became of an action.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Whether the action was carried out (a doctor run that found a fault
    /// still counts as carried out).
    pub ok: bool,
    /// One line for the admin: what happened, or why it could not be done.
    pub message: String,
    /// For a doctor action: its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor: Option<DoctorSummary>,
}

/// Where an action is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// Waiting for the agent's next check-in.
    Queued,
    /// Handed to the agent in a check-in reply.
    Delivered,
    /// The agent reported its result.
    Completed,
}

impl ActionState {
    pub const ALL: [ActionState; 3] = [
        ActionState::Queued,
        ActionState::Delivered,
        ActionState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Queued => "queued",
            ActionState::Delivered => "delivered",
            ActionState::Completed => "completed",
        }
    }
}

impl std::str::FromStr for ActionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ActionState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown action state {s:?} (expected queued, delivered or completed)")
            })
    }
}

/// An action queued for an agent, with its state and result.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub kind: ActionKind,
    pub state: ActionState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub result: Option<ActionResult>,
}

/// An escalation bundle stored for an agent (the bytes are downloaded
/// separately).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub size_bytes: u64,
    /// SHA-256 of the gzip bytes, hex.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The doctor verdict recorded in the bundle's `MANIFEST.json`, if any.
    #[serde(default)]
    pub verdict: Option<DoctorSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_action_kinds_are_tolerated() {
        let a: Action = serde_json::from_str(
            r#"{"id":"7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e","type":"launch_rockets","count":3}"#,
        )
        .expect("parses");
        assert_eq!(a.kind, ActionKind::Unknown);
        let d: Action = serde_json::from_str(
            r#"{"id":"7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e","type":"debug","minutes":15}"#,
        )
        .expect("parses");
        assert_eq!(d.kind, ActionKind::Debug { minutes: 15 });
        let doctor: ActionKind = serde_json::from_str(r#"{"type":"doctor"}"#).expect("parses");
        assert_eq!(doctor, ActionKind::Doctor { upload: true });
        let quiet: ActionKind =
            serde_json::from_str(r#"{"type":"doctor","upload":false}"#).expect("parses");
        assert_eq!(quiet, ActionKind::Doctor { upload: false });
    }

    #[test]
    fn agent_detail_without_last_doctor_still_parses() {
        let v = serde_json::json!({
            "summary": {"id": "7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e", "name": "n", "kind": "discovery",
                "group": "g", "status": "active", "flags": [], "hostname": "h", "version": "1",
                "last_seen": null, "external_ip": null, "enrolled_at": "2026-05-17T19:16:00Z"},
            "facts": {"hostname": "h", "os": "o", "internal_ips": [], "uptime_secs": 1},
            "policy": {"name": "default", "revision": 1, "checkin_interval_secs": 30, "jitter_percent": 10},
            "definitions": {}, "last_errors": {}, "proxy": null, "checkin_interval_secs": 30,
            "inactive_after_secs": 90, "transitions": []
        });
        let d: AgentDetail = serde_json::from_value(v).expect("parses without last_doctor");
        assert_eq!(d.last_doctor, None);
    }

    #[test]
    fn enroll_request_ignores_fields_it_does_not_know() {
        // A newer agent may send a field this server does not know yet
        // (ARCHITECTURE.md, wire compatibility); it grants nothing.
        let r = serde_json::from_str::<EnrollRequest>(
            r#"{"token":"t","name":"n","agent_version":"1","facts":{"hostname":"h","os":"o","internal_ips":[],"uptime_secs":1},"admin":true}"#,
        )
        .expect("parses");
        assert_eq!(r.token, "t");
    }

    #[test]
    fn status_parses_case_insensitively() {
        assert_eq!("Active".parse::<AgentStatus>(), Ok(AgentStatus::Active));
        assert!("gone".parse::<AgentStatus>().is_err());
    }
}
