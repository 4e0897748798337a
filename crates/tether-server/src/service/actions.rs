//! Actions an admin queues for an agent ("run the doctor and upload"),
//! handed out at the agent's next check-in and completed by the agent.
//!
//! The check-in stays cheap: the agent row it already loads carries a
//! `pending_actions` counter, and only when that is above zero does
//! [`deliver`] ask the store for actions. Each action is delivered once; an
//! agent that dies before completing it leaves it `delivered`, and the admin
//! queues another.

use tether_store::{AgentRecord, StoreError};
use tether_wire::{Action, ActionInfo, ActionKind, ActionResult, DoctorSummary};
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError};

/// The most actions one check-in reply carries; the rest wait for the next.
pub const MAX_PER_CHECKIN: u32 = 8;
/// The most actions the admin list shows, newest first.
pub const MAX_LIST: u32 = 100;
/// The longest debug window an admin can ask for, in minutes (24 h).
pub const MAX_DEBUG_MINUTES: u32 = 24 * 60;
/// The bounds of a capture action's window, in seconds (the agent's own
/// `tether-agent capture --for` bounds).
pub const MIN_CAPTURE_SECS: u32 = 2;
pub const MAX_CAPTURE_SECS: u32 = 3600;
/// The longest free-text field an agent may report.
pub const MAX_TEXT: usize = 2048;

/// The actions to put in this check-in's reply. Costs nothing when the agent
/// row says none are pending.
pub async fn deliver(ctx: &Ctx, agent: &AgentRecord) -> Result<Vec<Action>, ServiceError> {
    if agent.pending_actions == 0 {
        return Ok(Vec::new());
    }
    let taken = ctx
        .store
        .take_actions(agent.id, ctx.now(), MAX_PER_CHECKIN)
        .await?;
    for a in &taken {
        info!(agent_id = %agent.id, action_id = %a.id, kind = ?a.kind, "delivered an action");
    }
    let mut actions: Vec<Action> = taken
        .into_iter()
        .map(|a| Action {
            id: a.id,
            kind: a.kind,
        })
        .collect();
    // Doctor runs and definitions checks are tasks: an agent that holds no
    // task poll here gets them now, the way it always did.
    let room = MAX_PER_CHECKIN.saturating_sub(u32::try_from(actions.len()).unwrap_or(u32::MAX));
    actions.extend(super::tasks::deliver_actions(ctx, agent, room).await?);
    Ok(actions)
}

/// Queues an action for an agent. Only kinds this server knows are accepted.
pub async fn queue(
    ctx: &Ctx,
    agent_id: Uuid,
    kind: ActionKind,
) -> Result<ActionInfo, ServiceError> {
    check_kind(&kind)?;
    queue_checked(ctx, agent_id, kind).await
}

/// Debug windows stay actions (a setting, not work); the doctor and
/// definitions checks are tasks of the queue, shown here the old way.
async fn queue_checked(
    ctx: &Ctx,
    agent_id: Uuid,
    kind: ActionKind,
) -> Result<ActionInfo, ServiceError> {
    match kind {
        ActionKind::Doctor { .. } | ActionKind::UpdateDefs { .. } => {
            let task = super::tasks::create_action(ctx, agent_id, &kind).await?;
            Ok(super::tasks::action_info(&task, agent_id, None))
        }
        other => queue_action(ctx, agent_id, other).await,
    }
}

/// Queues an action for every agent of `group` (not removed). `NotFound`
/// when the group has no agent.
pub async fn queue_group(
    ctx: &Ctx,
    group: &str,
    kind: ActionKind,
) -> Result<Vec<ActionInfo>, ServiceError> {
    check_kind(&kind)?;
    // Every member, a page at a time: a group larger than a page is not cut.
    let mut pages = super::agents::Pages::new(tether_store::AgentFilter {
        status: None,
        group: Some(group.to_owned()),
    });
    let mut members = 0_usize;
    let mut queued = Vec::new();
    while let Some(page) = pages.next(ctx).await? {
        members += page.len();
        for a in page {
            match queue_checked(ctx, a.id, kind.clone()).await {
                Ok(action) => queued.push(action),
                // Removed since it was listed: nothing to queue for it.
                Err(ServiceError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if members == 0 {
        return Err(ServiceError::NotFound {
            what: "group",
            id: group.chars().take(64).collect(),
        });
    }
    info!(group = %group, agents = queued.len(), kind = ?kind, "queued an action for a group");
    Ok(queued)
}

fn check_kind(kind: &ActionKind) -> Result<(), ServiceError> {
    match kind {
        ActionKind::UpdateDefs { channel: None } => {}
        ActionKind::UpdateDefs {
            channel: Some(channel),
        } => tether_defs_publish::repo::validate_channel(channel)?,
        ActionKind::Doctor { .. } => {}
        ActionKind::Capture { secs: None, .. } => {}
        ActionKind::Capture {
            secs: Some(secs), ..
        } if (MIN_CAPTURE_SECS..=MAX_CAPTURE_SECS).contains(secs) => {}
        ActionKind::Capture {
            secs: Some(secs), ..
        } => {
            return Err(ServiceError::invalid(
                "secs",
                secs,
                format!(
                    "{MIN_CAPTURE_SECS} to {MAX_CAPTURE_SECS} (or absent: the policy's definitions interval)"
                ),
            ));
        }
        ActionKind::Debug { minutes } if (1..=MAX_DEBUG_MINUTES).contains(minutes) => {}
        ActionKind::Debug { minutes } => {
            return Err(ServiceError::invalid(
                "minutes",
                minutes,
                format!("1 to {MAX_DEBUG_MINUTES}"),
            ));
        }
        other => {
            return Err(ServiceError::invalid(
                "type",
                format!("{other:?}"),
                "\"doctor\", \"debug\", \"update_defs\" or \"capture\"",
            ));
        }
    }
    Ok(())
}

async fn queue_action(
    ctx: &Ctx,
    agent_id: Uuid,
    kind: ActionKind,
) -> Result<ActionInfo, ServiceError> {
    let action = ctx
        .store
        .queue_action(Uuid::new_v4(), agent_id, &kind, ctx.now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound {
                what: "agent",
                id: agent_id.to_string(),
            },
            other => other.into(),
        })?;
    info!(agent_id = %agent_id, action_id = %action.id, kind = ?kind, "queued an action");
    Ok(action)
}

/// The agent's actions, newest first.
pub async fn list(ctx: &Ctx, agent_id: Uuid) -> Result<Vec<ActionInfo>, ServiceError> {
    if ctx.store.agent(agent_id).await?.is_none() {
        return Err(ServiceError::NotFound {
            what: "agent",
            id: agent_id.to_string(),
        });
    }
    let mut all = ctx.store.list_actions(agent_id, MAX_LIST).await?;
    let filter = tether_store::TaskFilter {
        agent: Some(agent_id),
        ..Default::default()
    };
    for t in super::tasks::list(ctx, &filter, Some(MAX_LIST)).await? {
        if t.kind.is_action() {
            let doctor = super::tasks::doctor_of(ctx, &t).await?;
            all.push(super::tasks::action_info(&t, agent_id, doctor));
        }
    }
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    all.truncate(MAX_LIST as usize);
    Ok(all)
}

/// Records what became of an action the agent was given.
pub async fn complete(
    ctx: &Ctx,
    agent: &AgentRecord,
    action_id: Uuid,
    result: ActionResult,
) -> Result<ActionInfo, ServiceError> {
    text("message", &result.message)?;
    if let Some(d) = &result.doctor {
        summary(d)?;
        if let Some(bundle) = d.bundle_id
            && let Err(not_owned) = super::bundles::check_owned(ctx, agent, bundle).await
        {
            // An action that is not this agent's is the first thing wrong.
            let own = ctx.store.list_actions(agent.id, MAX_LIST).await?;
            if !own.iter().any(|a| a.id == action_id)
                && !super::tasks::holds_action(ctx, agent, action_id).await?
            {
                return Err(ServiceError::NotFound {
                    what: "action",
                    id: action_id.to_string(),
                });
            }
            return Err(not_owned);
        }
    }
    let done = match ctx
        .store
        .complete_action(agent.id, action_id, &result, ctx.now())
        .await
    {
        Ok(done) => done,
        // Not an action: a task handed out as one.
        Err(StoreError::NotFound) => super::tasks::complete_action(ctx, agent, action_id, &result)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "action",
                id: action_id.to_string(),
            })?,
        Err(StoreError::Conflict(m)) => return Err(ServiceError::Conflict(m)),
        Err(other) => return Err(other.into()),
    };
    info!(
        agent_id = %agent.id,
        action_id = %action_id,
        ok = result.ok,
        verdict = result.doctor.as_ref().map_or("-", |d| d.status.as_str()),
        "an action completed"
    );
    Ok(done)
}

/// Checks a doctor summary an agent sent (in an action result or a bundle
/// manifest): a known status and bounded, control-free text.
pub fn summary(d: &DoctorSummary) -> Result<(), ServiceError> {
    if !["healthy", "warnings", "failed"].contains(&d.status.as_str()) {
        return Err(ServiceError::invalid(
            "doctor.status",
            excerpt(&d.status),
            "healthy, warnings or failed",
        ));
    }
    text("doctor.root_cause", &d.root_cause)?;
    text("doctor.action", &d.action)?;
    if let Some(check) = &d.check {
        text("doctor.check", check)?;
    }
    Ok(())
}

fn text(field: &'static str, value: &str) -> Result<(), ServiceError> {
    if value.len() > MAX_TEXT {
        return Err(ServiceError::invalid(
            field,
            format!("{} bytes", value.len()),
            format!("at most {MAX_TEXT} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ServiceError::invalid(
            field,
            excerpt(value),
            "text without control characters",
        ));
    }
    Ok(())
}

fn excerpt(s: &str) -> String {
    format!("{:?}", s.chars().take(40).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::ErrorCode;
    use time::macros::datetime;

    fn doctor(status: &str, cause: &str) -> DoctorSummary {
        DoctorSummary {
            status: status.to_owned(),
            code: Some(ErrorCode::ConnectRefused),
            root_cause: cause.to_owned(),
            action: "start it".to_owned(),
            check: None,
            at: datetime!(2026-05-17 12:00 UTC),
            bundle_id: None,
        }
    }

    #[test]
    fn summaries_are_validated() {
        assert!(summary(&doctor("failed", "refused")).is_ok());
        let e = summary(&doctor("great", "x")).expect_err("unknown status");
        assert_eq!(e.code(), ErrorCode::InvalidField);
        assert!(e.to_string().contains("healthy, warnings or failed"), "{e}");
        assert!(summary(&doctor("failed", "a\u{1b}[31mred")).is_err());
        assert!(summary(&doctor("failed", &"x".repeat(MAX_TEXT + 1))).is_err());
    }
}
