//! Revocation of certificates the built-in CA issued (issue #10):
//! `POST /v1/admin/certs/{fingerprint}/revoke` and what it answers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why a certificate was revoked: the CRLReason names of RFC 5280
/// (section 5.3.1) that a CA may state for an end-entity certificate.
/// `certificateHold` and `removeFromCRL` are not offered: a revocation here
/// is final.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason, in RFC 5280 order.
    pub const ALL: &'static [RevocationReason] = &[
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 name (`keyCompromise`), which is also the wire and
    /// stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The CRLReason code (RFC 5280): keyCompromise is 1, and so on.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    /// Parses the RFC 5280 name, case-insensitively (`keycompromise` too).
    pub fn parse(s: &str) -> Option<RevocationReason> {
        RevocationReason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/admin/certs/{fingerprint}/revoke`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub reason: RevocationReason,
}

/// One revocation, as the CA keeps it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// `sha256:<hex>` of the certificate.
    pub fingerprint: String,
    /// Lower-case hex, as `issued_certs` keeps it.
    pub serial: String,
    pub reason: RevocationReason,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// The admin credential's name that revoked it.
    pub revoked_by: String,
    /// The certificate's own expiry: after it, the CRL no longer lists it.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// What `POST /v1/admin/certs/{fingerprint}/revoke` answers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// The revocation in force: the first one when the certificate was
    /// revoked before (the request's reason is then not applied).
    pub revocation: Revocation,
    /// Whether this request revoked it (false: it already was).
    pub newly_revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_use_rfc_5280_names_and_codes() {
        for r in RevocationReason::ALL {
            let json = serde_json::to_string(r).expect("serializes");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(RevocationReason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(
            RevocationReason::parse("KEYCOMPROMISE"),
            Some(RevocationReason::KeyCompromise)
        );
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::CessationOfOperation.code(), 5);
        assert_eq!(RevocationReason::parse("certificateHold"), None);
    }
}
