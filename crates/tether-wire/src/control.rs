//! Bodies of the control plane's own housekeeping: named admin credentials,
//! the read-only credential probe, the control plane's outages and paging.
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | GET | `/v1/agent/probe` | → [`AgentProbe`] (the agent credential; records nothing, except that presenting a rotated credential for the first time makes it the credential) |
//! | POST | `/v1/agent/credential/rotate` | → [`RotatedCredential`] (the agent credential; the old one works until the new one is first presented) |
//! | POST | `/v1/admin/admin-tokens` | [`CreateAdminTokenRequest`] → [`CreatedAdminToken`] (201) |
//! | GET | `/v1/admin/admin-tokens?limit=N&after=CURSOR` | → `Vec<`[`AdminTokenInfo`]`>`, paged |
//! | POST | `/v1/admin/admin-tokens/{id}/revoke` | → [`AdminTokenInfo`] |
//! | POST | `/v1/admin/admin-tokens/{id}/rotate` | → [`CreatedAdminToken`] (the old one is revoked) |
//!
//! Paged lists (`/v1/admin/agents`, `/v1/admin/tokens`, `/v1/admin/admin-tokens`)
//! take `limit` (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]) and `after` (a
//! cursor), and answer a JSON array; when more rows follow, the reply carries
//! the cursor of the next page in the [`NEXT_CURSOR_HEADER`] header.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AgentStatus;

/// The reply header that carries the cursor of the next page.
pub const NEXT_CURSOR_HEADER: &str = "tether-next-cursor";
/// Rows per page when the request names no `limit`.
pub const DEFAULT_PAGE: u32 = 500;
/// The largest `limit` a paged list accepts.
pub const MAX_PAGE: u32 = 1000;

/// An admin API credential as listed; its secret is never shown again.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenInfo {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Whether this is the credential a server wrote to its data dir's
    /// `admin.token` (deleting that file and restarting the server rotates it).
    #[serde(default)]
    pub bootstrap: bool,
}

/// `POST /v1/admin/admin-tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAdminTokenRequest {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`, unique among the
    /// credentials that are not revoked.
    pub name: String,
}

/// An admin credential's secret, shown once at creation or rotation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAdminToken {
    pub token: String,
    pub info: AdminTokenInfo,
}

/// `GET /v1/agent/probe`: the credential is accepted. Unlike a check-in it
/// records nothing and hands out no queued action.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProbe {
    pub agent_id: Uuid,
    /// The status the server has recorded for the agent.
    pub status: AgentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_agent_version: Option<String>,
}

/// `POST /v1/agent/credential/rotate`: the agent's next credential. The
/// current one keeps working until the agent first presents this one;
/// from then on only this one is accepted. Shown once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedCredential {
    pub credential: String,
}

impl std::fmt::Debug for RotatedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedCredential")
            .field("credential", &"***")
            .finish()
    }
}

/// What kind of outage of the control plane itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageKind {
    /// The server was stopped (or crashed) and started again.
    Restart,
    /// The server ran but its database failed.
    Store,
}

impl OutageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutageKind::Restart => "restart",
            OutageKind::Store => "store",
        }
    }
}

impl std::str::FromStr for OutageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restart" => Ok(OutageKind::Restart),
            "store" => Ok(OutageKind::Store),
            other => Err(format!(
                "unknown outage kind {other:?} (expected restart or store)"
            )),
        }
    }
}

/// A time the control plane itself could not hear its agents. Afterwards
/// every Active agent got a full inactivity threshold before it could be
/// declared Inactive, so agent histories show no transition for it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneOutage {
    pub kind: OutageKind,
    /// For a restart, the last time the server was known alive.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the server (or its store) was back.
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
    /// How many Active agents were given a new threshold from `ended_at`.
    pub agents_given_grace: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_kinds_round_trip() {
        for k in [OutageKind::Restart, OutageKind::Store] {
            assert_eq!(k.as_str().parse::<OutageKind>(), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).expect("serializes"),
                format!("\"{}\"", k.as_str())
            );
        }
        assert!("nap".parse::<OutageKind>().is_err());
    }
}
