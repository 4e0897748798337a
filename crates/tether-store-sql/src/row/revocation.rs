//! Decoding the built-in CA's revocation rows.

use tether_store::StoreError;
use tether_wire::{Revocation, RevocationReason};

use super::{Fields, RawRow};

pub(crate) fn revocation(row: &dyn RawRow) -> Result<Revocation, StoreError> {
    let f = Fields::new(row, "cert_revocations", "fingerprint")?;
    let reason = f.text("reason")?;
    Ok(Revocation {
        fingerprint: f.text("fingerprint")?,
        serial: f.text("serial")?,
        reason: RevocationReason::parse(&reason)
            .ok_or_else(|| f.corrupt("reason", format!("{reason:?} is not a CRLReason")))?,
        revoked_at: f.time("revoked_at")?,
        revoked_by: f.text("revoked_by")?,
        not_after: f.time("not_after")?,
    })
}

/// `(fingerprint, not_after)` of an issued certificate found by serial.
pub(crate) fn issued_serial(
    row: &dyn RawRow,
) -> Result<(String, time::OffsetDateTime), StoreError> {
    let f = Fields::new(row, "issued_certs", "fingerprint")?;
    Ok((f.text("fingerprint")?, f.time("not_after")?))
}
