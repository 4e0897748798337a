//! Decoding the discovery inventory's rows.

use tether_store::{CertRecord, StoreError};
use tether_wire::{CertInfo, CertLocation};

use super::{Fields, RawRow};

pub(crate) fn cert(row: &dyn RawRow) -> Result<CertRecord, StoreError> {
    let f = Fields::new(row, "certs", "fingerprint")?;
    Ok(CertRecord {
        id: f.uuid("id")?,
        info: CertInfo {
            fingerprint: f.text("fingerprint")?,
            cert: f.json("facts")?,
            verdicts: f.json("verdicts")?,
            first_seen: f.time("first_seen")?,
            last_seen: f.time("last_seen")?,
            locations: f.u64("locations")?,
        },
        chain: f.text("chain")?,
    })
}

pub(crate) fn cert_location(
    row: &dyn RawRow,
    fingerprint: &str,
) -> Result<CertLocation, StoreError> {
    let f = Fields::keyed(row, "cert_locations", fingerprint);
    let sni = f.text("sni")?;
    Ok(CertLocation {
        address: f.text("address")?,
        sni: (!sni.is_empty()).then_some(sni),
        agent_id: f.uuid("agent_id")?,
        first_seen: f.time("first_seen")?,
        last_seen: f.time("last_seen")?,
        state: f.parsed("state")?,
        state_since: f.opt_time("state_since")?,
        previous: f.opt_text("previous")?,
        replaced_by: f.opt_text("replaced_by")?,
    })
}
