//! The admin's view of the fleet: list, inspect, approve, remove.

use tether_store::{AgentFilter, AgentRecord, Cursor, StoreError};
use tether_wire::{AgentChannelView, AgentDetail, AgentSummary};
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError, defs, policies};
use crate::status;

/// Rows per page when the server walks every agent itself (group actions,
/// the definitions summary).
pub const PAGE: u32 = 1000;
/// How many transitions the detail view shows, newest first.
pub const DETAIL_TRANSITIONS: u32 = 100;
/// How many of the control plane's outages the detail view shows.
pub const DETAIL_OUTAGES: u32 = 20;

/// Walks every agent that matches a filter, a page at a time: no listing
/// stops silently at a cap.
#[derive(Debug)]
pub struct Pages {
    filter: AgentFilter,
    after: Option<Cursor>,
    done: bool,
}

impl Pages {
    pub fn new(filter: AgentFilter) -> Pages {
        Pages {
            filter,
            after: None,
            done: false,
        }
    }

    /// The next page, or `None` once every agent was returned.
    pub async fn next(&mut self, ctx: &Ctx) -> Result<Option<Vec<AgentRecord>>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        let page = ctx
            .store
            .list_agents_page(&self.filter, self.after.as_ref(), PAGE)
            .await?;
        self.done = page.len() < PAGE as usize;
        self.after = page.last().map(cursor);
        if page.is_empty() {
            return Ok(None);
        }
        Ok(Some(page))
    }
}

/// Where a listing resumes after `a`.
pub fn cursor(a: &AgentRecord) -> Cursor {
    Cursor {
        at: a.enrolled_at,
        id: a.id,
    }
}

/// An agent as the fleet list and the detail show it; `defs` comes from
/// [`defs_of`] (the definitions computation), so both show the same flags.
pub fn summary(a: &AgentRecord, current_version: &str, defs: &DefsOf) -> AgentSummary {
    AgentSummary {
        in_policy: defs.in_policy,
        id: a.id,
        name: a.name.clone(),
        kind: a.kind,
        group: a.group.clone(),
        status: a.status,
        flags: status::flags(a, current_version, &defs.views),
        hostname: a.facts.hostname.clone(),
        version: a.version.clone(),
        last_seen: a.last_seen,
        external_ip: a.external_ip.clone(),
        enrolled_at: a.enrolled_at,
        upgrade: None,
        rollout: None,
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

/// One page of the fleet list, and where the next page starts (`None` on
/// the last page).
pub async fn list(
    ctx: &Ctx,
    filter: &AgentFilter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<AgentSummary>, Option<Cursor>), ServiceError> {
    let agents = ctx
        .store
        .list_agents_page(filter, after.as_ref(), limit)
        .await?;
    let next = (agents.len() == limit as usize)
        .then(|| agents.last().map(cursor))
        .flatten();
    let defs = defs_of(ctx, &agents).await?;
    // The page's agents' last upgrades, in one query.
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let mut upgrades: std::collections::HashMap<Uuid, tether_wire::UpgradeReport> =
        if agents.is_empty() {
            Default::default()
        } else {
            ctx.store
                .agent_upgrades_of(&ids)
                .await?
                .into_iter()
                .collect()
        };
    let rollouts = super::rollouts::agent_views(ctx, &agents, &upgrades).await?;
    Ok((
        agents
            .iter()
            .zip(defs)
            .zip(rollouts)
            .map(|((a, d), r)| {
                let mut s = summary(a, &ctx.settings.current_agent_version, &d);
                s.upgrade = upgrades.remove(&a.id);
                s.rollout = r;
                s
            })
            .collect(),
        next,
    ))
}

/// One agent's definitions as the list and the detail need them.
#[derive(Debug, Default)]
pub struct DefsOf {
    /// Each subscribed channel.
    pub views: Vec<AgentChannelView>,
    /// `None` for an agent subscribed to no channel.
    pub in_policy: Option<bool>,
}

/// Each agent's definitions views and in-policy verdict, from one read of
/// the published versions.
pub async fn defs_of(ctx: &Ctx, agents: &[AgentRecord]) -> Result<Vec<DefsOf>, ServiceError> {
    let policies = defs::policies_of(ctx, agents).await?;
    if policies.values().all(|p| p.channels.is_empty()) {
        return Ok(agents.iter().map(|_| DefsOf::default()).collect());
    }
    let published = defs::Published::load(ctx).await?;
    let channels = published.channels();
    Ok(agents
        .iter()
        .map(|a| {
            policies.get(&a.policy).map_or_else(DefsOf::default, |p| {
                let (views, in_policy) = defs::agent_views(ctx, &channels, p, a);
                DefsOf { views, in_policy }
            })
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
    let outages = ctx.store.outages(a.enrolled_at, DETAIL_OUTAGES).await?;
    let published = defs::Published::load(ctx).await?;
    let (views, in_policy) = defs::agent_views(ctx, &published.channels(), &policy.defs, &a);
    let defs = DefsOf { views, in_policy };
    let site = ctx.store.agent_site(id).await?;
    let mut summary = summary(&a, &ctx.settings.current_agent_version, &defs);
    summary.upgrade = ctx.store.agent_upgrade(id).await?;
    let upgrades: std::collections::HashMap<Uuid, tether_wire::UpgradeReport> =
        summary.upgrade.iter().map(|u| (id, u.clone())).collect();
    summary.rollout = super::rollouts::agent_views(ctx, std::slice::from_ref(&a), &upgrades)
        .await?
        .pop()
        .flatten();
    Ok(AgentDetail {
        site,
        summary,
        defs: defs.views,
        in_policy,
        facts: a.facts,
        policy,
        definitions: a.definitions,
        last_errors: a.last_errors,
        proxy: a.proxy,
        checkin_interval_secs: a.checkin_interval_secs,
        inactive_after_secs: a.inactive_after_secs,
        transitions,
        last_doctor,
        outages,
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
    let defs = defs_of(ctx, std::slice::from_ref(&a))
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(summary(&a, &ctx.settings.current_agent_version, &defs))
}

pub async fn remove(ctx: &Ctx, id: Uuid) -> Result<(), ServiceError> {
    ctx.store
        .remove_agent(id, ctx.now())
        .await
        .map_err(not_found(id))?;
    info!(agent_id = %id, "removed an agent");
    Ok(())
}
