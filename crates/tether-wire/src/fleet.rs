//! Fleet diagnosis (`GET /v1/fleet/diagnosis`, `tether fleet diagnose`):
//! failing agents grouped by what they share, one verdict per incident with
//! its evidence, and best-practice hints. docs/fleet-diagnosis.md.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// `GET /v1/fleet/diagnosis`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetDiagnosis {
    /// The server's time of the diagnosis.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Agents read (Active and Inactive ones are judged; Pending and
    /// Stopped ones are neither failing nor healthy).
    pub agents_read: u64,
    /// Agents judged (Active or Inactive).
    pub judged: u64,
    /// Failing agents among them.
    pub failing: u64,
    /// More agents exist than the request's limit: the diagnosis covers the
    /// oldest `agents_read` only.
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub incidents: Vec<Incident>,
    #[serde(default)]
    pub hints: Vec<Hint>,
}

/// What an incident is most likely caused by.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Most agents sharing a path element fail the same way.
    Network,
    /// One or a few agents fail while their peers on the same path are fine.
    Configuration,
    /// Most of the fleet fails the same way, across paths.
    Server,
    /// A kind from a newer server.
    #[serde(other)]
    Unknown,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Network => "network",
            IncidentKind::Configuration => "configuration",
            IncidentKind::Server => "server",
            IncidentKind::Unknown => "unknown",
        }
    }
}

/// What failing agents are grouped by.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The proxy in use, as the agent reported it (no credentials).
    Proxy,
    /// A definitions update server (the last attempt's).
    UpdateServer,
    /// The address the control plane saw the agent come from.
    ExternalIp,
    /// An internal subnet: /24 for IPv4, /64 for IPv6.
    Subnet,
    /// The site label.
    Site,
    /// The whole fleet (a server incident).
    Fleet,
    #[serde(other)]
    Unknown,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Proxy => "proxy",
            Dimension::UpdateServer => "update_server",
            Dimension::ExternalIp => "external_ip",
            Dimension::Subnet => "subnet",
            Dimension::Site => "site",
            Dimension::Fleet => "fleet",
            Dimension::Unknown => "unknown",
        }
    }
}

/// One agent named in an incident or a hint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub id: Uuid,
    pub name: String,
}

/// One verdict with its evidence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub kind: IncidentKind,
    /// The shared dimension the verdict is about.
    pub dimension: Dimension,
    /// Its value (`10.4.1.0/24`, `http://10.2.0.5:3128`, a site name…).
    pub value: String,
    /// Failing agents of this incident.
    pub failing: u64,
    /// Judged agents sharing `value` (failing or not).
    pub total: u64,
    /// The error class: `dns`, `connect`, `proxy`, `proxy-auth`, `tls`,
    /// `clock`, `http`, `credential`, `definitions`, `local`, `other`, or
    /// `silent` for agents that stopped checking in (their error never
    /// reached the control plane).
    pub error_class: String,
    /// The stable code the agents reported, if they could report one.
    #[serde(default)]
    pub code: Option<String>,
    /// When the earliest of them started failing (for silent agents: their
    /// last check-in).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Extra evidence, e.g. `clock 2 h ahead`.
    #[serde(default)]
    pub detail: Option<String>,
    /// The healthy contrast, e.g. `3 agents of the same subnet without the
    /// proxy are fine`.
    #[serde(default)]
    pub contrast: Option<String>,
    /// The verdict in one sentence.
    pub summary: String,
    /// The failing agents (at most 20 named).
    #[serde(default)]
    pub agents: Vec<AgentRef>,
}

/// Which best practice a hint is about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintKind {
    /// Several agents in one segment fail the same way.
    SegmentFailing,
    /// Agents older than the current version.
    VersionOutdated,
    /// Agents without a site label.
    NoSite,
    #[serde(other)]
    Unknown,
}

/// A best-practice hint from the support guides.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub kind: HintKind,
    /// How many agents it concerns.
    pub count: u64,
    pub message: String,
    /// Some of them (at most 20 named).
    #[serde(default)]
    pub agents: Vec<AgentRef>,
}
