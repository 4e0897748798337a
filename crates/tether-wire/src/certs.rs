//! The discovery inventory: certificates deduplicated by fingerprint, and
//! every location (address:port, SNI, agent) where each was seen.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The most locations `GET /v1/admin/certs/{fingerprint}` returns; the
/// reply says how many there are in all.
pub const MAX_CERT_LOCATIONS: u32 = 1_000;

/// What one certificate says, as the scanner recorded it (the same fields
/// as `tether_scan::CertFacts`).
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFailure {
    pub code: String,
    pub message: String,
}

/// How one deploy transaction ended: the last result chunk of a `deploy`
/// task.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub epoch: u64,
    pub csr_pem: String,
}

/// The certificate the built-in CA signed for an [`IssueRequest`].
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
}

/// One deploy of a certificate to a location, as the server recorded it.
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
