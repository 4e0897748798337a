//! Check-ins and shutdown notices from agents.
//!
//! Decision on unapproved agents: their check-in facts are recorded (so the
//! admin sees the host, its version and its address while deciding), their
//! status stays Pending, and they are answered 403 `AgentPendingApproval` so
//! the agent knows why it is not served. After approval, the next check-in
//! makes them Active; approval itself never fakes a check-in.

use tether_store::{AgentRecord, Checkin};
use tether_wire::{AgentProbe, CheckinRequest, CheckinResponse};
use tracing::{debug, info};

use super::{Ctx, ServiceError, policies, validate};
use crate::status::{self, CheckinVerdict};

pub async fn checkin(
    ctx: &Ctx,
    agent: AgentRecord,
    req: CheckinRequest,
    external_ip: Option<String>,
) -> Result<CheckinResponse, ServiceError> {
    let now = ctx.now();
    validate::version(&req.agent_version)?;
    validate::facts(&req.facts)?;
    validate::definitions(&req.definitions)?;
    validate::last_errors(&req.last_errors)?;
    let proxy = validate::proxy(req.proxy.as_deref())?;
    let defs = validate::defs_state(req.defs)?;
    if let Some(u) = &req.upgrade {
        validate::upgrade(u)?;
    }
    let policy = policies::resolve(ctx, &agent.policy).await?;
    let verdict = status::on_checkin((&agent).into(), now);
    let status_change = match &verdict {
        CheckinVerdict::AwaitingApproval => None,
        CheckinVerdict::Serve { change } => change.clone(),
    };
    let checkin = Checkin {
        agent_id: agent.id,
        at: now,
        external_ip,
        version: req.agent_version,
        facts: req.facts,
        definitions: req.definitions,
        defs,
        last_errors: req.last_errors,
        proxy,
        checkin_interval_secs: policy.checkin_interval_secs,
        inactive_after_secs: status::inactive_after_secs(
            policy.checkin_interval_secs,
            policy.jitter_percent,
            ctx.settings.inactive_grace_secs,
        ),
        status_change,
    };
    let stored = ctx.store.record_checkin(&checkin).await?;
    if verdict == CheckinVerdict::AwaitingApproval {
        debug!(agent_id = %agent.id, "check-in from an agent awaiting approval");
        return Err(ServiceError::PendingApproval {
            agent_id: agent.id,
            enrolled_at: agent.enrolled_at,
        });
    }
    match &checkin.status_change {
        Some(c) if stored.status == c.to => {
            info!(agent_id = %agent.id, from = %c.from, to = %c.to, reason = %c.reason, "agent status changed");
        }
        _ => debug!(agent_id = %agent.id, status = %stored.status, "check-in"),
    }
    if let Some(u) = &req.upgrade {
        ctx.store.record_agent_upgrade(agent.id, u, now).await?;
        if u.state == tether_wire::UpgradeState::RolledBack {
            debug!(agent_id = %agent.id, version = %u.version, reason = u.reason.as_deref().unwrap_or(""), "agent reports a rolled-back upgrade");
            super::rollouts::on_report(ctx, &agent, u).await?;
        }
    }
    let upgrade =
        super::rollouts::offer(ctx, &agent, &checkin.version, req.upgrade.as_ref()).await?;
    // Doctor/bundle feature: queued actions, looked up only when the stored
    // row's `pending_actions` flag says there are some (see service/actions.rs).
    let actions = super::actions::deliver(ctx, &stored).await?;
    Ok(CheckinResponse {
        agent_id: agent.id,
        status: stored.status,
        policy,
        actions,
        server_time: now,
        current_agent_version: Some(ctx.settings.current_agent_version.clone()),
        upgrade,
    })
}

/// The read-only probe: the credential works, and what the server has
/// recorded about the agent. Nothing is written and no action is handed out.
/// An agent awaiting approval is told so, as at check-in.
pub fn probe(ctx: &Ctx, agent: &AgentRecord) -> Result<AgentProbe, ServiceError> {
    if status::on_checkin(agent.into(), ctx.now()) == CheckinVerdict::AwaitingApproval {
        return Err(ServiceError::PendingApproval {
            agent_id: agent.id,
            enrolled_at: agent.enrolled_at,
        });
    }
    Ok(AgentProbe {
        agent_id: agent.id,
        status: agent.status,
        server_time: ctx.now(),
        current_agent_version: Some(ctx.settings.current_agent_version.clone()),
    })
}

/// Records a clean stop. An agent still awaiting approval is refused like at
/// check-in: it was never served, so it cannot stop being served.
pub async fn shutdown(ctx: &Ctx, agent: AgentRecord, reason: &str) -> Result<(), ServiceError> {
    if status::on_checkin((&agent).into(), ctx.now()) == CheckinVerdict::AwaitingApproval {
        return Err(ServiceError::PendingApproval {
            agent_id: agent.id,
            enrolled_at: agent.enrolled_at,
        });
    }
    validate::name("reason", reason)
        .or_else(|e| if reason.is_empty() { Ok(()) } else { Err(e) })?;
    let reason = if reason.is_empty() {
        "clean shutdown".to_owned()
    } else {
        format!("clean shutdown: {reason}")
    };
    ctx.store
        .record_shutdown(agent.id, &reason, ctx.now())
        .await?;
    info!(agent_id = %agent.id, reason = %reason, "agent stopped cleanly");
    Ok(())
}
