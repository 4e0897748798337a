//! Decoding agent rollout rows.

use tether_store::{RolloutRecord, StoreError};
use tether_wire::{RolloutProgress, RolloutStage};

use super::{Fields, RawRow};

pub(crate) fn rollout(row: &dyn RawRow) -> Result<RolloutRecord, StoreError> {
    let f = Fields::new(row, "agent_rollouts", "group_name")?;
    let stage = match f.text("stage")?.as_str() {
        "canary" => RolloutStage::Canary,
        "all" => RolloutStage::All,
        other => return Err(f.corrupt("stage", format!("unknown stage {other:?}"))),
    };
    let percent = f.int("canary_percent")?;
    let canary_percent = u8::try_from(percent)
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| f.corrupt("canary_percent", format!("{percent} is not 1–100")))?;
    let paused = match f.opt_time("paused_at")? {
        Some(at) => Some((at, f.opt_text("pause_reason")?.unwrap_or_default())),
        None => None,
    };
    Ok(RolloutRecord {
        group: f.text("group_name")?,
        version: f.text("version")?,
        stage,
        canary_percent,
        paused,
        created_at: f.time("created_at")?,
        updated_at: f.time("updated_at")?,
    })
}

pub(crate) fn progress(row: &dyn RawRow) -> Result<RolloutProgress, StoreError> {
    let f = Fields::keyed(row, "agents", "(rollout progress)");
    let count = |c: &str| -> Result<u64, StoreError> {
        let n = f.opt_int(c)?.unwrap_or(0);
        u64::try_from(n).map_err(|_| f.corrupt(c, format!("negative count {n}")))
    };
    Ok(RolloutProgress {
        agents: count("agents")?,
        on_target: count("on_target")?,
        rolled_back: count("rolled_back")?,
    })
}
