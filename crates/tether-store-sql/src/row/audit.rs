//! Decoding admin audit rows.

use tether_store::StoreError;
use tether_wire::AuditEntry;

use super::{Fields, RawRow};

pub(crate) fn audit_entry(row: &dyn RawRow) -> Result<AuditEntry, StoreError> {
    let f = Fields::new(row, "admin_audit", "id")?;
    let actor_id = match f.opt_text("actor_id")? {
        None => None,
        Some(_) => Some(f.uuid("actor_id")?),
    };
    let status = f.int("status")?;
    let status = u16::try_from(status)
        .map_err(|_| f.corrupt("status", format!("{status} is not an HTTP status")))?;
    Ok(AuditEntry {
        id: f.uuid("id")?,
        at: f.time("at")?,
        actor: f.text("actor")?,
        actor_id,
        method: f.text("method")?,
        route: f.text("route")?,
        path: f.text("path")?,
        target: f.opt_text("target")?,
        address: f.opt_text("address")?,
        status,
        code: f.opt_text("code")?,
    })
}
