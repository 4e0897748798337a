//! The discovery inventory's half of the store: certificates deduplicated by
//! fingerprint and the locations where each was seen.

use async_trait::async_trait;
use tether_wire::{CertInfo, CertLocation, DeploymentRecord, IssuedCert};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Cursor, StoreError};

/// What one scanned endpoint showed, as the inventory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// `ip:port` (`[ip]:port` for IPv6).
    pub address: String,
    pub sni: Option<String>,
    pub agent_id: Uuid,
    /// When the agent probed the endpoint (its own clock, kept within the
    /// task's lifetime by the server): first and last seen are made of it.
    pub at: OffsetDateTime,
    pub seen: Seen,
}

/// What a probe found at a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A certificate: recorded at once.
    Cert(SeenCert),
    /// The endpoint answered without a certificate (refused, not TLS, a TLS
    /// failure with no chain): what was seen there is gone once the scan
    /// completes.
    NoTls,
    /// No answer at all (filtered), which may be a passing network fault:
    /// what was seen there is gone after [`SILENT_SCANS_TO_GONE`] completed
    /// scans in a row found it silent.
    Silent,
}

/// How many completed scans in a row must find a location silent
/// (filtered) before what was seen there is marked gone.
pub const SILENT_SCANS_TO_GONE: i64 = 2;

/// One attempt of a discover task: the absences it observed wait under it
/// until the scan completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanId {
    pub task_id: Uuid,
    pub epoch: u64,
}

/// What completing a scan changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSettled {
    /// Locations marked gone.
    pub gone: u64,
    /// Locations found silent, not (yet) gone.
    pub silent: u64,
}

/// The certificate an endpoint presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCert {
    /// `sha256:<hex>`.
    pub fingerprint: String,
    /// `tether_wire::CertFacts` of the end-entity certificate, as JSON.
    pub facts: String,
    /// `Vec<tether_wire::CertFacts>`: the full presented chain, as JSON.
    pub chain: String,
    pub not_after: OffsetDateTime,
    /// Stable verdict names.
    pub verdicts: Vec<String>,
}

/// Which certificates to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertFilter {
    /// Only certificates whose `not_after` is at or before this instant
    /// (already expired ones included).
    pub expiring_before: Option<OffsetDateTime>,
    /// Only certificates whose newest verdicts include this one.
    pub verdict: Option<String>,
}

/// One certificate of the inventory, with the key a paged listing resumes
/// after (`first_seen`, `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub id: Uuid,
    pub info: CertInfo,
    /// `Vec<tether_wire::CertFacts>` as JSON.
    pub chain: String,
}

impl CertRecord {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.info.first_seen,
            id: self.id,
        }
    }
}

#[async_trait]
pub trait CertStore: Send + Sync + 'static {
    /// Records what one batch of endpoints of `scan` showed, in one
    /// transaction. A certificate is stored once per fingerprint; a location
    /// (address, SNI, agent) once per certificate seen there. Seeing a
    /// different certificate at a location marks the older ones seen there
    /// `changed`. An absence (no TLS, silence) at a location with a current
    /// certificate is kept under `scan` and acted on only when the scan
    /// completes ([`CertStore::complete_scan`]). Recording the same batch
    /// again changes nothing but the last-seen times.
    async fn record_sightings(
        &self,
        scan: ScanId,
        sightings: &[Sighting],
    ) -> Result<(), StoreError>;
    /// The scan completed: in one transaction, a location it found without
    /// TLS is gone; one it found silent is gone when this is the
    /// [`SILENT_SCANS_TO_GONE`]th completed scan in a row to find it so (a
    /// sighting of a certificate there resets the count). Its absences, and
    /// those of the task's earlier attempts, are then forgotten, so
    /// completing the same scan twice changes nothing.
    async fn complete_scan(&self, scan: ScanId) -> Result<ScanSettled, StoreError>;
    /// An attempt of the task ended without completing its scan: the
    /// absences it kept are forgotten, and mark nothing gone.
    async fn abandon_scan(&self, task_id: Uuid) -> Result<(), StoreError>;
    /// Oldest first (by first sighting), after `after`.
    async fn list_certs(
        &self,
        filter: &CertFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<CertRecord>, StoreError>;
    async fn cert(&self, fingerprint: &str) -> Result<Option<CertRecord>, StoreError>;
    /// The locations of one certificate, newest sighting first, at most
    /// `limit`.
    async fn cert_locations(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> Result<Vec<CertLocation>, StoreError>;
    /// Records a certificate the built-in CA issued. Idempotent by
    /// fingerprint: the first record stays.
    async fn record_issued(&self, cert: &IssuedCert, pem: &str) -> Result<(), StoreError>;
    async fn issued_cert(&self, fingerprint: &str) -> Result<Option<IssuedCert>, StoreError>;
    /// The PEM of an issued certificate.
    async fn issued_cert_pem(&self, fingerprint: &str) -> Result<Option<String>, StoreError>;
    /// Records an ACME CA's suggested renewal window (RFC 9773) for an
    /// issued certificate; `false` when no such certificate is recorded.
    async fn set_renewal_window(
        &self,
        fingerprint: &str,
        window: &tether_wire::RenewalWindowSeen,
    ) -> Result<bool, StoreError>;
    /// Records how a deploy ended. Idempotent by the report's id (a result
    /// delivered twice is kept once).
    async fn record_deployment(&self, deployment: &DeploymentRecord) -> Result<(), StoreError>;
    /// Deploys of this certificate, or that replaced it (or tried to),
    /// newest first, at most `limit`.
    async fn deployments(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> Result<Vec<DeploymentRecord>, StoreError>;
}
