//! Decoding renewal rows.

use tether_store::{Renewal, RenewalCandidate, RenewalLocation, StoreError};
use tether_wire::{ErrorCode, RenewalState};
use uuid::Uuid;

use super::{Fields, RawRow};

pub(crate) fn renewal(row: &dyn RawRow) -> Result<Renewal, StoreError> {
    let f = Fields::new(row, "cert_renewals", "id")?;
    let state = f.text("state")?;
    let tasks = f.text("tasks")?;
    let reason_code = f.opt_text("reason_code")?;
    Ok(Renewal {
        id: f.uuid("id")?,
        fingerprint: f.text("fingerprint")?,
        state: RenewalState::parse(&state)
            .ok_or_else(|| f.corrupt("state", format!("unknown state {state:?}")))?,
        issuer: f.text("issuer")?,
        attempt: f.u32("attempt")?,
        failures: f.u32("failures")?,
        ca_failures: f.u32("ca_failures")?,
        locations: f.u32("locations")?,
        done: f.u32("done")?,
        tasks: serde_json::from_str::<Vec<Uuid>>(&tasks).map_err(|e| f.corrupt("tasks", e))?,
        new_fingerprint: f.opt_text("new_fingerprint")?,
        // A code this build does not know (written by a newer server) is
        // kept out rather than failing the row; the reason text stays.
        reason_code: reason_code.as_deref().and_then(ErrorCode::parse),
        reason: f.text("reason")?,
        next_attempt_at: f.opt_time("next_attempt_at")?,
        forced: f.boolean("forced")?,
        created_at: f.time("created_at")?,
        updated_at: f.time("updated_at")?,
        version: f.int("version")?,
    })
}

pub(crate) fn renewal_location(row: &dyn RawRow) -> Result<RenewalLocation, StoreError> {
    let f = Fields::new(row, "renewal_locations", "task_id")?;
    Ok(RenewalLocation {
        fingerprint: f.text("fingerprint")?,
        task_id: f.uuid("task_id")?,
        agent_id: f.uuid("agent_id")?,
        spec: f.text("spec")?,
        at: f.time("at")?,
    })
}

pub(crate) fn renewal_candidate(row: &dyn RawRow) -> Result<RenewalCandidate, StoreError> {
    let f = Fields::new(row, "issued_certs", "fingerprint")?;
    Ok(RenewalCandidate {
        fingerprint: f.text("fingerprint")?,
        not_before: f.time("not_before")?,
        not_after: f.time("not_after")?,
    })
}
