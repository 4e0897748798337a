//! The admin audit log (issue #11): every admin action the API answered.
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | GET | `/v1/admin/audit?limit=N&after=CURSOR&actor=NAME&since=WHEN` | → `Vec<`[`AuditEntry`]`>`, newest first, paged |
//!
//! `since` is an RFC 3339 time or a duration back from the server's clock
//! (`90s`, `30m`, `2h`, `7d`). An entry never holds a request body, a
//! token or a credential: only who, what, when, from where and the outcome.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The actor recorded for a request whose admin credential was missing,
/// malformed, unknown or revoked.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// The longest concrete path an entry keeps, in characters; a longer path
/// is cut there and ends with `…`.
pub const AUDIT_PATH_MAX: usize = 256;

/// One admin action, recorded after it was answered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: Uuid,
    /// When the server answered, by its clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The admin credential's name, or `unauthenticated`.
    pub actor: String,
    /// The admin credential's id; `None` when unauthenticated.
    #[serde(default)]
    pub actor_id: Option<Uuid>,
    /// The HTTP method (`POST`, `PUT`, `DELETE`…).
    pub method: String,
    /// The route's template, e.g. `/v1/admin/agents/{id}/approve`.
    pub route: String,
    /// The concrete path, at most [`AUDIT_PATH_MAX`] characters, without
    /// the query.
    pub path: String,
    /// The first path parameter (an id, a name, a fingerprint), if the
    /// route has one.
    #[serde(default)]
    pub target: Option<String>,
    /// The client's address: a trusted balancer's PROXY-protocol address
    /// when it sent one, else the TCP peer.
    #[serde(default)]
    pub address: Option<String>,
    /// The reply's HTTP status.
    pub status: u16,
    /// The reply's error code (`TETHER-E…`), if it was an error.
    #[serde(default)]
    pub code: Option<String>,
}
