//! Decoding agent upgrade rows.

use tether_store::StoreError;
use tether_wire::{UpgradeReport, UpgradeState};
use uuid::Uuid;

use super::{Fields, RawRow};

pub(crate) fn agent_upgrade(row: &dyn RawRow) -> Result<(Uuid, UpgradeReport), StoreError> {
    let f = Fields::new(row, "agent_upgrades", "agent_id")?;
    let state = f.text("state")?;
    let state = match state.as_str() {
        "upgrading" => UpgradeState::Upgrading,
        "upgraded" => UpgradeState::Upgraded,
        "rolled_back" => UpgradeState::RolledBack,
        _ => UpgradeState::Unknown,
    };
    Ok((
        f.uuid("agent_id")?,
        UpgradeReport {
            state,
            version: f.text("version")?,
            from: f.opt_text("from_version")?,
            reason: f.opt_text("reason")?,
            at: f.time("at")?,
        },
    ))
}
