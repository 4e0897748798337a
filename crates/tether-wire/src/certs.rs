//! The discovery inventory: certificates deduplicated by fingerprint, and
//! every location (address:port, SNI, agent) where each was seen; issuance
//! and the ACME issuers.
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | POST | `/v1/agent/tasks/{id}/issue` | [`IssueRequest`] → [`IssueResponse`] (200) or [`IssuePending`] (202) |
//! | POST | `/v1/admin/acme-issuers` | [`AcmeIssuerAdd`] → [`AcmeIssuerInfo`] (201) |
//! | GET | `/v1/admin/acme-issuers` | → [`AcmeIssuerList`] |
//! | DELETE | `/v1/admin/acme-issuers/{name}` | → 204 |

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The most locations `GET /v1/admin/certs/{fingerprint}` returns; the
/// reply says how many there are in all.
pub const MAX_CERT_LOCATIONS: u32 = 1_000;

/// What one certificate says, as the scanner recorded it (the same fields
/// as `tether_scan::CertFacts`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[serde(default)]
    pub sans: Vec<String>,
    #[serde(default)]
    pub sans_total: usize,
    pub key_type: String,
    #[serde(default)]
    pub key_bits: usize,
    pub signature_algorithm: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// `sha256:<hex>` of the DER.
    pub fingerprint: String,
    #[serde(default)]
    pub aia_urls: Vec<String>,
    #[serde(default)]
    pub cdp_urls: Vec<String>,
    #[serde(default)]
    pub is_ca: bool,
    /// The certificate's own problems, by their stable names.
    #[serde(default)]
    pub verdicts: Vec<String>,
}

/// One certificate of the inventory (`GET /v1/admin/certs`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// `sha256:<hex>`.
    pub fingerprint: String,
    /// The end-entity certificate's facts.
    pub cert: CertFacts,
    /// The verdicts of the newest sighting (the certificate's own and its
    /// chain's, e.g. `expired`, `unknown_issuer`, `name_mismatch`).
    pub verdicts: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// How many locations it was seen at.
    pub locations: u64,
}

/// What a location shows now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationState {
    /// The newest scan of the location found this certificate.
    Current,
    /// A later scan found another certificate there (`replaced_by`).
    Changed,
    /// A later scan found no TLS there (refused, filtered, not TLS, or a
    /// failed handshake without a chain).
    Gone,
}

impl LocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationState::Current => "current",
            LocationState::Changed => "changed",
            LocationState::Gone => "gone",
        }
    }
}

impl std::str::FromStr for LocationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "current" => Ok(LocationState::Current),
            "changed" => Ok(LocationState::Changed),
            "gone" => Ok(LocationState::Gone),
            other => Err(format!("unknown location state {other:?}")),
        }
    }
}

/// One place a certificate was seen.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertLocation {
    /// `ip:port` (`[ip]:port` for IPv6).
    pub address: String,
    /// The SNI name sent; `None` sent none.
    pub sni: Option<String>,
    /// The agent whose scan saw it.
    pub agent_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub state: LocationState,
    /// When the state became `changed` or `gone`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub state_since: Option<OffsetDateTime>,
    /// The certificate seen there before this one, if it changed.
    #[serde(default)]
    pub previous: Option<String>,
    /// The certificate seen there after this one (state `changed`).
    #[serde(default)]
    pub replaced_by: Option<String>,
}

/// `GET /v1/admin/certs/{fingerprint}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertDetail {
    #[serde(flatten)]
    pub info: CertInfo,
    /// The full chain the newest sighting presented, end-entity first.
    pub chain: Vec<CertFacts>,
    /// The locations, newest sighting first, at most
    /// [`MAX_CERT_LOCATIONS`]; `info.locations` counts them all.
    pub seen_at: Vec<CertLocation>,
}

/// One step of a deploy transaction, as the agent recorded it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStep {
    /// `backup`, `write`, `reload`, `verify`, `restore`, `rollback.reload`,
    /// `rollback.verify`, `recover`…
    pub name: String,
    pub ok: bool,
    pub duration_ms: u64,
    /// What happened, command output redacted and bounded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Why a deploy failed: a catalog code (`TETHER-E85xx`) and one line.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFailure {
    pub code: String,
    pub message: String,
}

/// How one deploy transaction ended: the last result chunk of a `deploy`
/// task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReport {
    pub id: Uuid,
    /// `deployed` (the new certificate is served and verified),
    /// `rolled_back` (the old set is back and served) or `rollback_failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<DeployFailure>,
    pub new_fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    pub steps: Vec<DeployStep>,
    /// Finished by the agent's recovery after a restart.
    #[serde(default)]
    pub recovered: bool,
    /// Where: `ip:port` verified, and the certificate file's path.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub path: String,
}

impl DeployReport {
    pub fn is_deployed(&self) -> bool {
        self.state == "deployed"
    }
}

/// `POST /v1/agent/tasks/{id}/issue`: the CSR of a leased `deploy` task.
///
/// For an ACME issuer the exchange takes two calls (docs/pki.md, "ACME"):
/// the first, with `http01` set, is answered 202 with an [`IssuePending`];
/// the agent serves the challenges and calls again with the same CSR and
/// `order`, and is answered with the [`IssueResponse`]. An agent that
/// leaves `http01` unset (every agent before it, whose bodies lack the
/// field) is never given a challenge.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub epoch: u64,
    pub csr_pem: String,
    /// This agent can answer ACME http-01 challenges on its host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http01: bool,
    /// The second call of an ACME issuance: the order whose challenges
    /// the agent now serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// The 202 answer to an [`IssueRequest`] for an ACME issuer: the
/// challenges to serve before calling again with `order`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuePending {
    pub order: String,
    #[serde(default)]
    pub challenges: Vec<Http01Challenge>,
}

/// One ACME http-01 challenge (RFC 8555 §8.3) that the provisioning agent
/// answers on the target host: it serves `key_authorization` at
/// `http://{name}/.well-known/acme-challenge/{token}` (from the web
/// server's webroot, or its own listener), then removes it. The token is
/// hostile input to the agent until checked (base64url only).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http01Challenge {
    pub name: String,
    pub token: String,
    pub key_authorization: String,
}

impl Http01Challenge {
    /// The path the CA fetches.
    pub fn path(&self) -> String {
        format!("/.well-known/acme-challenge/{}", self.token)
    }
}

/// The certificate the built-in CA signed for an [`IssueRequest`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueResponse {
    pub cert_pem: String,
    /// The intermediates, PEM.
    pub chain_pem: String,
    pub fingerprint: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// A certificate the built-in CA issued.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub fingerprint: String,
    pub serial: String,
    pub names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(default)]
    pub task_id: Option<Uuid>,
    #[serde(default)]
    pub agent_id: Option<Uuid>,
    /// `acme:NAME` for a certificate an ACME CA issued through this control
    /// plane; absent for the built-in CA's (every record before ACME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The ACME CA's suggested renewal window (RFC 9773), when it offers
    /// one, as last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_window: Option<RenewalWindowSeen>,
}

/// An ACME CA's suggested renewal window (RFC 9773) and when it was read.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalWindowSeen {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// `POST /v1/admin/acme-issuers`: register an account with an ACME CA.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeIssuerAdd {
    /// The name deploys use as `acme:NAME`.
    pub name: String,
    /// The CA's directory URL (`https://…/directory`).
    pub directory: String,
    /// PEM of the CA(s) that sign the ACME API's TLS certificate, for a
    /// private ACME server; the system roots are trusted as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The account's contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A registered ACME issuer (never its key).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeIssuerInfo {
    pub name: String,
    pub directory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Whether the ACME API is trusted through a CA file of its own.
    #[serde(default)]
    pub private_ca: bool,
    /// The account's URL at the CA, when this answer registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/admin/acme-issuers`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeIssuerList {
    pub issuers: Vec<AcmeIssuerInfo>,
}

/// One deploy of a certificate to a location, as the server recorded it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub task_id: Uuid,
    pub agent_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub report: DeployReport,
}

/// `GET /v1/admin/certs/{fingerprint}/history`: issuance, deploys (of this
/// certificate, or replacing it) and where it is seen.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertHistory {
    pub fingerprint: String,
    #[serde(default)]
    pub issued: Option<IssuedCert>,
    #[serde(default)]
    pub deployments: Vec<DeploymentRecord>,
    #[serde(default)]
    pub seen_at: Vec<CertLocation>,
    /// Renewals of this certificate, newest first.
    #[serde(default)]
    pub renewals: Vec<crate::RenewalInfo>,
}

#[cfg(test)]
mod acme_wire_tests {
    use super::*;

    #[test]
    fn an_issue_request_of_an_agent_without_acme_still_parses_and_is_unchanged() {
        let old: IssueRequest =
            serde_json::from_str(r#"{"epoch":3,"csr_pem":"-----BEGIN CERTIFICATE REQUEST-----"}"#)
                .expect("old body");
        assert!(!old.http01);
        assert_eq!(old.order, None);
        // Today's agent without ACME sends exactly the old body.
        assert_eq!(
            serde_json::to_string(&old).expect("json"),
            r#"{"epoch":3,"csr_pem":"-----BEGIN CERTIFICATE REQUEST-----"}"#
        );
    }

    #[test]
    fn the_acme_exchange_round_trips_and_ignores_fields_it_does_not_know() {
        let second: IssueRequest = serde_json::from_str(
            r#"{"epoch":3,"csr_pem":"x","http01":true,"order":"https://ca/order/1","later":1}"#,
        )
        .expect("new body");
        assert!(second.http01);
        assert_eq!(second.order.as_deref(), Some("https://ca/order/1"));
        let pending: IssuePending = serde_json::from_str(
            r#"{"order":"https://ca/order/1","challenges":[{"name":"www.example","token":"tok","key_authorization":"tok.thumb","later":true}]}"#,
        )
        .expect("pending");
        assert_eq!(
            pending.challenges[0].path(),
            "/.well-known/acme-challenge/tok"
        );
        let back: IssuePending =
            serde_json::from_str(&serde_json::to_string(&pending).expect("json")).expect("back");
        assert_eq!(back, pending);
    }
}
