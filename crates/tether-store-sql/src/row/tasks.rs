//! Decoding the task queue's rows.

use tether_store::{ScheduleRecord, StoreError};
use tether_tasks::TaskSnapshot;
use tether_wire::{AgentKind, Approval, ApprovalState, Site, TaskKind, TaskTarget};

use super::{Fields, RawRow};

pub(crate) fn task(row: &dyn RawRow) -> Result<TaskSnapshot, StoreError> {
    let f = Fields::new(row, "tasks", "id")?;
    let kind: TaskKind = {
        let text = f.text("kind")?;
        // A kind a newer server created is kept as Unknown, not refused:
        // listing the queue must not fail because of one row.
        serde_json::from_value(serde_json::Value::String(text)).map_err(|e| f.corrupt("kind", e))?
    };
    let target = match (f.opt_text("target_agent")?, f.opt_text("target_group")?) {
        (Some(_), _) => TaskTarget::Agent {
            agent_id: f.uuid("target_agent")?,
        },
        (None, Some(group)) => TaskTarget::Group {
            group,
            agent_kind: f.parsed::<AgentKind>("target_kind")?,
            site: f.opt_text("target_site")?,
        },
        (None, None) => return Err(f.corrupt("target_agent", "neither an agent nor a group")),
    };
    let epoch = f.u64("epoch")?;
    Ok(TaskSnapshot {
        id: f.uuid("id")?,
        kind,
        spec: f.json("spec")?,
        target,
        state: f.parsed("state")?,
        attempt: f.u32("attempt")?,
        max_attempts: f.u32("max_attempts")?,
        epoch,
        lease_secs: f.u32("lease_secs")?,
        deadline_at: f.opt_time("deadline_at")?,
        allowed_hours: f.opt_json("allowed_hours")?,
        tz: f.text("tz")?,
        leased_to: f
            .opt_text("leased_to")?
            .map(|_| f.uuid("leased_to"))
            .transpose()?,
        lease_expires_at: f.opt_time("lease_expires_at")?,
        heartbeat_at: f.opt_time("heartbeat_at")?,
        progress: f.opt_json("progress")?,
        cancel_requested: f.boolean("cancel_requested")?,
        last_error: f.opt_text("last_error")?,
        reason: f.opt_text("reason")?,
        outcome: f.opt_json("outcome")?,
        not_before: f.time("not_before")?,
        schedule_id: f
            .opt_text("schedule_id")?
            .map(|_| f.uuid("schedule_id"))
            .transpose()?,
        created_at: f.time("created_at")?,
        updated_at: f.time("updated_at")?,
        finished_at: f.opt_time("finished_at")?,
        version: f.int("version")?,
        result_chunks: f.u32("result_chunks")?,
        approval: match f.opt_parsed::<ApprovalState>("approval")? {
            None => None,
            Some(state) => Some(Approval {
                state,
                by: f.opt_text("approval_by")?,
                at: f.opt_time("approval_at")?,
            }),
        },
    })
}

pub(crate) fn schedule(row: &dyn RawRow) -> Result<ScheduleRecord, StoreError> {
    let f = Fields::new(row, "task_schedules", "id")?;
    Ok(ScheduleRecord {
        id: f.uuid("id")?,
        rule: f.text("rule")?,
        tz: f.text("tz")?,
        template: f.text("template")?,
        next_run_at: f.time("next_run_at")?,
        last_run_at: f.opt_time("last_run_at")?,
        last_task_id: f
            .opt_text("last_task_id")?
            .map(|_| f.uuid("last_task_id"))
            .transpose()?,
        missed: f.json("missed")?,
        created_at: f.time("created_at")?,
    })
}

pub(crate) fn site(row: &dyn RawRow) -> Result<Site, StoreError> {
    let f = Fields::new(row, "sites", "name")?;
    Ok(Site {
        name: f.text("name")?,
        tz: f.text("tz")?,
    })
}

pub(crate) fn result_items(row: &dyn RawRow, task_id: &str) -> Result<Option<String>, StoreError> {
    let f = Fields::keyed(row, "task_results", task_id);
    f.opt_text("items")
}

/// One row of the queue depth: a state and its count.
pub(crate) fn state_count(row: &dyn RawRow) -> Result<(tether_wire::TaskState, u64), StoreError> {
    let f = Fields::new(row, "tasks", "state")?;
    let state = f.parsed("state")?;
    Ok((state, f.u64("n")?))
}
