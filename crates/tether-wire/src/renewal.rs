//! Certificate renewal: the policy, the states a renewal goes through and
//! what the admin API shows of it (`GET /v1/admin/renewals`,
//! `POST /v1/admin/certs/{fingerprint}/renew`, `PUT
//! /v1/admin/renewal-policies`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// When a certificate is due for renewal.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RenewalTrigger {
    /// At this fraction of the lifetime (2/3 by default).
    Fraction { fraction: f64 },
    /// This many days before expiry (never before the start of validity).
    DaysBefore { days: u32 },
}

/// How one certificate (or the certificates of a group's locations) is
/// renewed. An ARI window (RFC 9773), when the issuer gives one, takes
/// precedence over the trigger.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewalPolicy {
    pub trigger: RenewalTrigger,
    /// `builtin` or `acme:NAME`.
    pub issuer: String,
    /// Used after the issuer failed twice in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_issuer: Option<String>,
    /// The change window of the deploy tasks a renewal creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hours: Option<crate::AllowedHours>,
    /// The deploy tasks a renewal creates wait for an admin's approval
    /// before any agent leases them (`tether certs approve ID`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
}

impl Default for RenewalPolicy {
    fn default() -> RenewalPolicy {
        RenewalPolicy {
            trigger: RenewalTrigger::Fraction {
                fraction: 2.0 / 3.0,
            },
            issuer: "builtin".to_owned(),
            fallback_issuer: None,
            allowed_hours: None,
            require_approval: false,
        }
    }
}

/// The explicit states of a renewal.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RenewalState {
    /// Due: waiting for its attempt to start (now, or at `next_attempt_at`).
    Due,
    /// Deploy tasks created; no certificate issued yet.
    Issuing,
    /// Issued, not yet deployed anywhere.
    Issued,
    /// Deploying at location `done + 1` of `locations`.
    Deploying,
    /// Deployed at every location and verified on the wire.
    Verified,
    /// The last attempt failed; `reason` says why, `next_attempt_at` when it
    /// is tried again.
    Failed,
}

impl RenewalState {
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalState::Due => "due",
            RenewalState::Issuing => "issuing",
            RenewalState::Issued => "issued",
            RenewalState::Deploying => "deploying",
            RenewalState::Verified => "verified",
            RenewalState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RenewalState> {
        Some(match s {
            "due" => RenewalState::Due,
            "issuing" => RenewalState::Issuing,
            "issued" => RenewalState::Issued,
            "deploying" => RenewalState::Deploying,
            "verified" => RenewalState::Verified,
            "failed" => RenewalState::Failed,
            _ => return None,
        })
    }

    /// Whether the renewal is over (only `verified`: a failed renewal is
    /// retried).
    pub fn is_final(self) -> bool {
        self == RenewalState::Verified
    }
}

impl std::fmt::Display for RenewalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One renewal, as the admin sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalInfo {
    pub id: Uuid,
    /// The certificate being renewed.
    pub fingerprint: String,
    pub state: RenewalState,
    /// The issuer of the current (or next) attempt.
    pub issuer: String,
    /// Attempts started so far.
    pub attempt: u32,
    /// Failed attempts in a row (the back-off's exponent).
    pub failures: u32,
    /// Locations to deploy to, and how many are deployed and verified.
    pub locations: u32,
    pub done: u32,
    /// The deploy tasks of the current attempt, one per location.
    #[serde(default)]
    pub tasks: Vec<Uuid>,
    /// The certificate that replaced it, once deployed.
    #[serde(default)]
    pub new_fingerprint: Option<String>,
    /// A stable code (`TETHER-E86xx`) when the renewal waits or failed.
    #[serde(default)]
    pub reason_code: Option<String>,
    /// Why it is in this state, in one sentence.
    pub reason: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Asked for by an admin (`tether certs renew`) rather than the policy.
    #[serde(default)]
    pub forced: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `PUT /v1/admin/renewal-policies`: the policy of one scope: `default`,
/// `cert:<fingerprint>` or `group:<name>`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewalPolicyUpdate {
    pub scope: String,
    pub policy: RenewalPolicy,
}
