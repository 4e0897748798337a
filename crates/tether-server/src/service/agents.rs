//! The admin's view of the fleet: list, inspect, approve, remove.

use tether_store::{AgentRecord, StoreError};
use tether_wire::{AgentDetail, AgentStatus, AgentSummary};
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError, defs, policies};
use crate::status;

/// The most agents one list call returns.
pub const MAX_LIST: u32 = 10_000;
/// How many transitions the detail view shows, newest first.
pub const DETAIL_TRANSITIONS: u32 = 100;

/// An agent as the fleet list shows it; `in_policy` comes from
/// [`in_policy`] (the definitions computation).
pub fn summary(a: &AgentRecord, current_version: &str, in_policy: Option<bool>) -> AgentSummary {
    AgentSummary {
        in_policy,
        id: a.id,
        name: a.name.clone(),
        kind: a.kind,
        group: a.group.clone(),
        status: a.status,
        flags: status::flags(a, current_version),
        hostname: a.facts.hostname.clone(),
        version: a.version.clone(),
        last_seen: a.last_seen,
        external_ip: a.external_ip.clone(),
        enrolled_at: a.enrolled_at,
    }
}

fn not_found(id: Uuid) -> impl Fn(StoreError) -> ServiceError {
    move |e| match e {
        StoreError::NotFound => ServiceError::NotFound {
            what: "agent",
            id: id.to_string(),
        },
        other => other.into(),
    }
}

pub async fn list(
    ctx: &Ctx,
    status: Option<AgentStatus>,
    limit: Option<u32>,
) -> Result<Vec<AgentSummary>, ServiceError> {
    let limit = limit.unwrap_or(MAX_LIST);
    if limit == 0 || limit > MAX_LIST {
        return Err(ServiceError::invalid(
            "limit",
            limit,
            format!("1 to {MAX_LIST}"),
        ));
    }
    let agents = ctx.store.list_agents(status, limit).await?;
    let in_policy = in_policy(ctx, &agents).await?;
    Ok(agents
        .iter()
        .zip(in_policy)
        .map(|(a, p)| summary(a, &ctx.settings.current_agent_version, p))
        .collect())
}

/// Whether each agent's definitions are in policy (`None` for an agent
/// subscribed to no channel), from one read of the published versions.
pub async fn in_policy(
    ctx: &Ctx,
    agents: &[AgentRecord],
) -> Result<Vec<Option<bool>>, ServiceError> {
    let policies = defs::policies_of(ctx, agents).await?;
    if policies.values().all(|p| p.channels.is_empty()) {
        return Ok(vec![None; agents.len()]);
    }
    let published = defs::Published::load(ctx).await?;
    let channels = published.channels();
    Ok(agents
        .iter()
        .map(|a| {
            policies
                .get(&a.policy)
                .and_then(|p| defs::agent_views(ctx, &channels, p, a).1)
        })
        .collect())
}

pub async fn detail(ctx: &Ctx, id: Uuid) -> Result<AgentDetail, ServiceError> {
    let a = ctx.store.agent(id).await?.ok_or(ServiceError::NotFound {
        what: "agent",
        id: id.to_string(),
    })?;
    let policy = policies::resolve(ctx, &a.policy).await?;
    let transitions = ctx
        .store
        .transitions(id, DETAIL_TRANSITIONS)
        .await
        .map_err(not_found(id))?;
    let last_doctor = ctx.store.last_doctor(id).await.map_err(not_found(id))?;
    let published = defs::Published::load(ctx).await?;
    let (views, in_policy) = defs::agent_views(ctx, &published.channels(), &policy.defs, &a);
    let site = ctx.store.agent_site(id).await?;
    Ok(AgentDetail {
        site,
        defs: views,
        in_policy,
        summary: summary(&a, &ctx.settings.current_agent_version, in_policy),
        facts: a.facts,
        policy,
        definitions: a.definitions,
        last_errors: a.last_errors,
        proxy: a.proxy,
        checkin_interval_secs: a.checkin_interval_secs,
        inactive_after_secs: a.inactive_after_secs,
        transitions,
        last_doctor,
    })
}

/// Approves an agent. A Pending agent that has checked in before becomes
/// Active at its next check-in, not now: approval is not a sign of life.
pub async fn approve(ctx: &Ctx, id: Uuid) -> Result<AgentSummary, ServiceError> {
    let a = ctx
        .store
        .approve_agent(id, ctx.now())
        .await
        .map_err(not_found(id))?;
    info!(agent_id = %id, "approved an agent");
    let in_policy = in_policy(ctx, std::slice::from_ref(&a)).await?;
    Ok(summary(
        &a,
        &ctx.settings.current_agent_version,
        in_policy.into_iter().next().flatten(),
    ))
}

pub async fn remove(ctx: &Ctx, id: Uuid) -> Result<(), ServiceError> {
    ctx.store
        .remove_agent(id, ctx.now())
        .await
        .map_err(not_found(id))?;
    info!(agent_id = %id, "removed an agent");
    Ok(())
}
