//! Decoding the discovery inventory's rows.

use tether_store::{CertRecord, StoreError};
use tether_wire::{CertInfo, CertLocation, DeploymentRecord, IssuedCert, RenewalWindowSeen};

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

pub(crate) fn issued(row: &dyn RawRow) -> Result<IssuedCert, StoreError> {
    let f = Fields::new(row, "issued_certs", "fingerprint")?;
    let opt_uuid = |c: &str| -> Result<Option<uuid::Uuid>, StoreError> {
        match f.opt_text(c)? {
            None => Ok(None),
            Some(_) => f.uuid(c).map(Some),
        }
    };
    Ok(IssuedCert {
        fingerprint: f.text("fingerprint")?,
        serial: f.text("serial")?,
        names: f.json("names")?,
        not_before: f.time("not_before")?,
        not_after: f.time("not_after")?,
        issued_at: f.time("issued_at")?,
        task_id: opt_uuid("task_id")?,
        agent_id: opt_uuid("agent_id")?,
        issuer: f.opt_text("issuer")?,
        renewal_window: match (
            f.opt_time("ari_start")?,
            f.opt_time("ari_end")?,
            f.opt_time("ari_checked_at")?,
        ) {
            (Some(start), Some(end), Some(checked_at)) => Some(RenewalWindowSeen {
                start,
                end,
                checked_at,
            }),
            _ => None,
        },
    })
}

pub(crate) fn issued_pem(row: &dyn RawRow, fingerprint: &str) -> Result<String, StoreError> {
    Fields::keyed(row, "issued_certs", fingerprint).text("cert_pem")
}

pub(crate) fn deployment(
    row: &dyn RawRow,
    fingerprint: &str,
) -> Result<DeploymentRecord, StoreError> {
    let f = Fields::keyed(row, "cert_deployments", fingerprint);
    Ok(DeploymentRecord {
        task_id: f.uuid("task_id")?,
        agent_id: f.uuid("agent_id")?,
        at: f.time("at")?,
        report: f.json("report")?,
    })
}
