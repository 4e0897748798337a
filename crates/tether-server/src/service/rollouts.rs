//! Agent releases and rollouts (issue #13, docs/upgrades.md).
//!
//! A release is an agent binary on a definitions channel of its own
//! (`tether_wire::release_channel`); publishing one is an ordinary
//! definitions publish. A rollout says which version a group's agents
//! should run. At check-in, [`offer`] decides whether this agent is offered
//! it: not while paused, not to an agent on which that version rolled back,
//! and in the canary stage only to the agents whose stable bucket (a hash
//! of the agent id and the version) falls in the canary share. A rollback
//! reported at check-in pauses the rollout ([`on_report`]). Rollouts are
//! read through a cache like policies (`policies::POLICY_TTL`), so the
//! check-in path does not query them each time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};
use tether_store::{AgentRecord, RolloutChange, RolloutRecord};
use tether_wire::{
    AgentRollout, AgentRolloutState, ErrorCode, Release, Rollout, RolloutStage, RolloutUpdate,
    UpgradeOffer, UpgradeReport, UpgradeState,
};
use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Ctx, ServiceError, policies::POLICY_TTL, validate};

/// The longest pause reason kept.
pub const MAX_REASON_CHARS: usize = 512;

/// Every group's rollout, by group.
pub type Rollouts = Arc<HashMap<String, RolloutRecord>>;

/// Every group's rollout, with the time it was read.
#[derive(Debug, Default)]
pub struct RolloutCache(RwLock<Option<(Rollouts, Instant)>>);

impl RolloutCache {
    fn get(&self) -> Option<Rollouts> {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|(_, at)| at.elapsed() < POLICY_TTL)
            .map(|(m, _)| m.clone())
    }

    fn put(&self, map: Rollouts) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some((map, Instant::now()));
    }

    /// Forgets what was read: the next check-in reads the store.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Every group's rollout, from the cache when fresh.
pub async fn current(ctx: &Ctx) -> Result<Rollouts, ServiceError> {
    if let Some(m) = ctx.rollouts.get() {
        return Ok(m);
    }
    let map: HashMap<String, RolloutRecord> = ctx
        .store
        .rollouts()
        .await?
        .into_iter()
        .map(|r| (r.group.clone(), r))
        .collect();
    let map = Arc::new(map);
    ctx.rollouts.put(map.clone());
    Ok(map)
}

/// The agent's bucket for `version`, 0–99: stable across servers and
/// restarts, and different per version, so one canary share does not
/// always take the same agents.
pub fn bucket(agent: Uuid, version: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(agent.as_bytes())
        .chain_update(version.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder of a division by 100 fits a u8.
    u8::try_from(u64::from_be_bytes(first) % 100).unwrap_or(0)
}

/// Where an agent running `running` with last report `report` stands in
/// `rollout`.
pub fn agent_state(
    rollout: &RolloutRecord,
    agent: Uuid,
    running: &str,
    report: Option<&UpgradeReport>,
) -> AgentRolloutState {
    if running == rollout.version {
        return AgentRolloutState::OnTarget;
    }
    if report.is_some_and(|r| r.state == UpgradeState::RolledBack && r.version == rollout.version) {
        return AgentRolloutState::RolledBack;
    }
    if rollout.paused.is_some() {
        return AgentRolloutState::Paused;
    }
    match rollout.stage {
        RolloutStage::All => AgentRolloutState::Offered,
        RolloutStage::Canary if bucket(agent, &rollout.version) < rollout.canary_percent => {
            AgentRolloutState::Offered
        }
        RolloutStage::Canary => AgentRolloutState::WaitingForCanary,
    }
}

/// The offer for this check-in, if any. `report` is the upgrade report the
/// agent sent with it (absent from agents that predate upgrades, which
/// ignore offers anyway).
pub async fn offer(
    ctx: &Ctx,
    agent: &AgentRecord,
    running: &str,
    report: Option<&UpgradeReport>,
) -> Result<Option<UpgradeOffer>, ServiceError> {
    let rollouts = current(ctx).await?;
    let Some(r) = rollouts.get(&agent.group) else {
        return Ok(None);
    };
    Ok(
        (agent_state(r, agent.id, running, report) == AgentRolloutState::Offered).then(|| {
            UpgradeOffer {
                version: r.version.clone(),
            }
        }),
    )
}

/// A rollback of the group's target version, reported at check-in, pauses
/// the group's rollout (unless an admin changed it since).
pub async fn on_report(
    ctx: &Ctx,
    agent: &AgentRecord,
    report: &UpgradeReport,
) -> Result<(), ServiceError> {
    if report.state != UpgradeState::RolledBack {
        return Ok(());
    }
    let rollouts = current(ctx).await?;
    let Some(r) = rollouts.get(&agent.group) else {
        return Ok(());
    };
    if r.version != report.version || r.paused.is_some() || report.at < r.updated_at {
        return Ok(());
    }
    let mut reason = format!(
        "version {} rolled back on agent {} ({}): {}",
        report.version,
        agent.name,
        agent.id,
        report.reason.as_deref().unwrap_or("no reason given")
    );
    truncate(&mut reason, MAX_REASON_CHARS);
    let paused = ctx
        .store
        .pause_rollout_on_rollback(&agent.group, &report.version, &reason, report.at, ctx.now())
        .await?;
    if paused {
        ctx.rollouts.clear();
        warn!(group = %agent.group, version = %report.version, code = %ErrorCode::UpgradeRolledBack, reason = %reason, "paused the group's rollout");
    }
    Ok(())
}

fn truncate(s: &mut String, max_chars: usize) {
    if let Some((i, _)) = s.char_indices().nth(max_chars) {
        s.truncate(i);
    }
}

/// Every published release (the newest publish of each release channel),
/// newest first.
pub async fn releases(ctx: &Ctx) -> Result<Vec<Release>, ServiceError> {
    let versions = ctx.store.list_defs_versions(None).await?;
    let mut newest: HashMap<String, Release> = HashMap::new();
    for v in versions {
        let Some((platform, version)) = tether_wire::parse_release_channel(&v.channel) else {
            continue;
        };
        let release = Release {
            version,
            platform,
            channel: v.channel.clone(),
            length: v.length,
            sha256: v.sha256.clone(),
            published_at: v.published_at,
        };
        // Listed newest version first within a channel: the first one seen
        // is what the channel serves.
        newest.entry(v.channel.clone()).or_insert(release);
    }
    let mut out: Vec<Release> = newest.into_values().collect();
    out.sort_by(|a, b| {
        b.published_at
            .cmp(&a.published_at)
            .then_with(|| a.channel.cmp(&b.channel))
    });
    Ok(out)
}

fn release_version(version: &str) -> Result<(), ServiceError> {
    if tether_wire::valid_release_version(version) {
        Ok(())
    } else {
        Err(ServiceError::Rollout(
            ErrorCode::RolloutVersionInvalid,
            format!(
                "{:?} is not a release version",
                version.chars().take(40).collect::<String>()
            ),
        ))
    }
}

async fn to_wire(ctx: &Ctx, r: RolloutRecord) -> Result<Rollout, ServiceError> {
    let progress = ctx.store.rollout_progress(&r.group, &r.version).await?;
    Ok(Rollout {
        group: r.group,
        version: r.version,
        stage: r.stage,
        canary_percent: r.canary_percent,
        pause_reason: r.paused.as_ref().map(|(_, why)| why.clone()),
        paused_at: r.paused.as_ref().map(|(at, _)| *at),
        paused: r.paused.is_some(),
        updated_at: r.updated_at,
        progress,
    })
}

/// Every rollout with its progress.
pub async fn list(ctx: &Ctx) -> Result<Vec<Rollout>, ServiceError> {
    let mut out = Vec::new();
    for r in ctx.store.rollouts().await? {
        out.push(to_wire(ctx, r).await?);
    }
    Ok(out)
}

/// Starts or replaces `group`'s rollout. The version must be published
/// for at least one platform.
pub async fn set(ctx: &Ctx, group: &str, update: &RolloutUpdate) -> Result<Rollout, ServiceError> {
    validate::slug("group", group)?;
    release_version(&update.version)?;
    let percent = match update.canary_percent {
        None => 100,
        Some(p @ 1..=100) => p,
        Some(p) => {
            return Err(ServiceError::Rollout(
                ErrorCode::RolloutCanaryInvalid,
                format!("canary_percent {p} is not 1–100"),
            ));
        }
    };
    let platforms: Vec<String> = releases(ctx)
        .await?
        .into_iter()
        .filter(|r| r.version == update.version)
        .map(|r| r.platform)
        .collect();
    if platforms.is_empty() {
        return Err(ServiceError::Rollout(
            ErrorCode::RolloutReleaseMissing,
            format!("no release {} is published", update.version),
        ));
    }
    let record = RolloutRecord::new(group, &update.version, percent, ctx.now());
    ctx.store.put_rollout(&record).await?;
    ctx.rollouts.clear();
    info!(group, version = %record.version, stage = %record.stage, canary_percent = percent, platforms = ?platforms, "rollout set");
    to_wire(ctx, record).await
}

/// Pauses, resumes or promotes `group`'s rollout.
pub async fn change(
    ctx: &Ctx,
    group: &str,
    change: RolloutChange,
) -> Result<Rollout, ServiceError> {
    validate::slug("group", group)?;
    if let RolloutChange::Pause { reason } = &change {
        validate::name("reason", reason)
            .or_else(|e| if reason.is_empty() { Ok(()) } else { Err(e) })?;
    }
    let change = match change {
        RolloutChange::Pause { reason } if reason.is_empty() => RolloutChange::Pause {
            reason: "paused by an admin".to_owned(),
        },
        other => other,
    };
    let record = ctx
        .store
        .change_rollout(group, &change, ctx.now())
        .await
        .map_err(|e| not_found(e, group))?;
    ctx.rollouts.clear();
    info!(group, change = ?change, "rollout changed");
    to_wire(ctx, record).await
}

/// Ends `group`'s rollout.
pub async fn delete(ctx: &Ctx, group: &str) -> Result<(), ServiceError> {
    validate::slug("group", group)?;
    ctx.store
        .delete_rollout(group)
        .await
        .map_err(|e| not_found(e, group))?;
    ctx.rollouts.clear();
    info!(group, "rollout ended");
    Ok(())
}

fn not_found(e: tether_store::StoreError, group: &str) -> ServiceError {
    match e {
        tether_store::StoreError::NotFound => ServiceError::NotFound {
            what: "rollout of group",
            id: group.to_owned(),
        },
        other => other.into(),
    }
}

/// Each agent's place in its group's rollout, for the fleet list.
pub async fn agent_views(
    ctx: &Ctx,
    agents: &[AgentRecord],
    upgrades: &HashMap<Uuid, UpgradeReport>,
) -> Result<Vec<Option<AgentRollout>>, ServiceError> {
    let rollouts = current(ctx).await?;
    Ok(agents
        .iter()
        .map(|a| {
            rollouts.get(&a.group).map(|r| AgentRollout {
                target: r.version.clone(),
                state: agent_state(r, a.id, &a.version, upgrades.get(&a.id)),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).expect("time")
    }

    fn rollout(percent: u8) -> RolloutRecord {
        RolloutRecord::new("g", "2.0.0", percent, at(0))
    }

    #[test]
    fn a_canary_share_takes_about_its_percentage_and_grows_monotonically() {
        let agents: Vec<Uuid> = (0..10_000u128).map(Uuid::from_u128).collect();
        let offered = |p: u8| -> Vec<Uuid> {
            let r = rollout(p);
            agents
                .iter()
                .copied()
                .filter(|a| agent_state(&r, *a, "1.0.0", None) == AgentRolloutState::Offered)
                .collect()
        };
        let ten = offered(10);
        assert!((800..1200).contains(&ten.len()), "{}", ten.len());
        let fifty = offered(50);
        assert!((4500..5500).contains(&fifty.len()), "{}", fifty.len());
        // A larger share keeps every agent of the smaller one.
        assert!(ten.iter().all(|a| fifty.contains(a)));
        assert_eq!(offered(100).len(), agents.len());
        // Another version draws another sample.
        let other: Vec<Uuid> = agents
            .iter()
            .copied()
            .filter(|a| bucket(*a, "2.0.1") < 10)
            .collect();
        assert_ne!(other, ten);
    }

    #[test]
    fn paused_rolled_back_and_current_agents_are_not_offered() {
        let agent = Uuid::from_u128(7);
        let mut r = rollout(100);
        assert_eq!(
            agent_state(&r, agent, "1.0.0", None),
            AgentRolloutState::Offered
        );
        assert_eq!(
            agent_state(&r, agent, "2.0.0", None),
            AgentRolloutState::OnTarget
        );
        let back = UpgradeReport {
            state: UpgradeState::RolledBack,
            version: "2.0.0".into(),
            from: Some("1.0.0".into()),
            reason: Some("exited".into()),
            at: at(10),
        };
        assert_eq!(
            agent_state(&r, agent, "1.0.0", Some(&back)),
            AgentRolloutState::RolledBack
        );
        // A rollback of another version does not hold this one back.
        let older = UpgradeReport {
            version: "1.9.0".into(),
            ..back.clone()
        };
        assert_eq!(
            agent_state(&r, agent, "1.0.0", Some(&older)),
            AgentRolloutState::Offered
        );
        r.paused = Some((at(5), "by hand".into()));
        assert_eq!(
            agent_state(&r, agent, "1.0.0", None),
            AgentRolloutState::Paused
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(600);
        truncate(&mut s, MAX_REASON_CHARS);
        assert_eq!(s.chars().count(), MAX_REASON_CHARS);
    }
}
