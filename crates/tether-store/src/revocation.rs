//! Revocations of certificates the built-in CA issued: the CRL and the OCSP
//! responder read them, `tether certs revoke` writes them.

use async_trait::async_trait;
use tether_wire::Revocation;
use time::OffsetDateTime;

use crate::StoreError;

/// What revoking did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// This call revoked it.
    Now(Revocation),
    /// It was revoked before: the first revocation stays as it was.
    Already(Revocation),
}

/// What the CA knows about one serial number (the OCSP responder's
/// question).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialStatus {
    pub fingerprint: String,
    pub not_after: OffsetDateTime,
    /// `None` while the certificate is good.
    pub revocation: Option<Revocation>,
}

/// The revocations' half of the store.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes the issued certificate with this fingerprint, in one
    /// transaction: [`StoreError::NotFound`] when the built-in CA never
    /// issued it; idempotent otherwise (the first reason, time and admin
    /// stay).
    async fn revoke_issued(
        &self,
        fingerprint: &str,
        reason: tether_wire::RevocationReason,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<Revoked, StoreError>;
    async fn revocation(&self, fingerprint: &str) -> Result<Option<Revocation>, StoreError>;
    /// The issued certificate with this serial (lower-case hex without
    /// leading zero octets, as issued), and its revocation if any.
    async fn serial_status(&self, serial: &str) -> Result<Option<SerialStatus>, StoreError>;
    /// Every revocation of a certificate that has not expired at `now`
    /// (what a CRL lists), oldest first. Not paged: a CRL lists them all.
    async fn unexpired_revocations(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>, StoreError>;
}
