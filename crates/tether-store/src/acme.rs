//! The ACME issuers' registry (issue #10): each named ACME CA the server
//! may order certificates from, with the account registered there.
//!
//! The account's key is stored sealed with the server's KEK (the same as the
//! built-in CA's key, see `tether_pki::acme::SealedAccount`); the store only
//! ever sees the sealed bytes, never the plaintext key.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// One ACME issuer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeIssuer {
    /// The name deploys refer to as `acme:NAME`.
    pub name: String,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM roots to trust for the ACME server's TLS, when not the system's.
    pub ca_pem: Option<String>,
    /// The account's contact (an email address), when one was given.
    pub contact: Option<String>,
    /// The account (its key and URL), sealed with the server's KEK.
    pub sealed_account: Vec<u8>,
    pub created_at: OffsetDateTime,
}

/// The ACME issuers' half of the store.
#[async_trait]
pub trait AcmeIssuerStore: Send + Sync {
    /// Adds an issuer. A `Conflict` when the name exists.
    async fn insert_acme_issuer(&self, issuer: &AcmeIssuer) -> Result<(), StoreError>;

    /// The issuer named `name`, if any.
    async fn acme_issuer(&self, name: &str) -> Result<Option<AcmeIssuer>, StoreError>;

    /// Every issuer, by name.
    async fn acme_issuers(&self) -> Result<Vec<AcmeIssuer>, StoreError>;

    /// Removes the issuer named `name`; returns whether it existed.
    async fn remove_acme_issuer(&self, name: &str) -> Result<bool, StoreError>;
}
