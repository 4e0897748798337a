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
    /// `None`: the endpoint answered without TLS (or did not answer).
    pub cert: Option<SeenCert>,
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
    /// Records what one batch of endpoints showed at `at`, in one
    /// transaction. A certificate is stored once per fingerprint; a location
    /// (address, SNI, agent) once per certificate seen there. Seeing a
    /// different certificate at a location marks the older ones seen there
    /// `changed`; seeing no TLS marks them `gone`. Recording the same batch
    /// again changes nothing but the last-seen times.
    async fn record_sightings(
        &self,
        sightings: &[Sighting],
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
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
