//! Definitions on the control plane: publishing into the TUF repository
//! (`tether_defs_publish::repo`), the fleet summary, offline bundles, and keeping the
//! store's record of versions and the repository's signatures fresh.
//!
//! The repository on disk is the source of truth for what was published;
//! the store's `defs_versions` mirrors it so summaries are one query. A
//! publish writes the repository first, then the store; should the store
//! fail in between, [`reconcile`] (at start and before each summary) inserts
//! what is missing, so no version is lost or published twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use tether_defs_publish::repo::{self, RepoError};
use tether_store::{AgentRecord, StoreError};
use tether_wire::{AgentChannelView, AgentStatus, ChannelSummary, DefsPolicy, DefsVersion};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Ctx, ServiceError, agents::MAX_LIST, policies};

pub mod policy;

/// How often the background task re-signs metadata nearing expiry. The
/// timestamp lives a day and is re-signed past half its life, so 10 minutes
/// leaves ample margin.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The longest publish notes accepted.
pub const MAX_NOTES: usize = 4096;

/// Publishes a new version of `channel` and records it.
pub async fn publish(
    ctx: &Ctx,
    channel: &str,
    content: Vec<u8>,
    notes: Option<String>,
) -> Result<DefsVersion, ServiceError> {
    repo::validate_channel(channel)?;
    if let Some(n) = &notes
        && (n.len() > MAX_NOTES || n.contains('\0'))
    {
        return Err(ServiceError::invalid(
            "notes",
            format!("{} bytes", n.len()),
            format!("at most {MAX_NOTES} bytes of text without NUL"),
        ));
    }
    let bytes = content.len();
    let version = ctx.defs.publish(channel, content, notes).await?;
    info!(
        channel = %version.channel,
        version = version.version,
        bytes,
        deltas = version.deltas.len(),
        "published definitions"
    );
    // The version is signed and served already: a store failure here must
    // not make the admin publish it again. `reconcile` records it later.
    match ctx.store.insert_defs_version(&version).await {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(error) => {
            warn!(channel = %version.channel, version = version.version, %error, "could not record a published version; it will be reconciled")
        }
    }
    Ok(version)
}

/// Inserts into the store every version the repository published that the
/// store lacks. Returns every version the store now holds, so a caller
/// needs no second query.
pub async fn reconcile(ctx: &Ctx) -> Result<Vec<DefsVersion>, ServiceError> {
    let history = ctx.defs.history().await?;
    let mut all = ctx.store.list_defs_versions(None).await?;
    let recorded: BTreeSet<(String, u64)> =
        all.iter().map(|v| (v.channel.clone(), v.version)).collect();
    let mut inserted = 0;
    for v in history {
        if recorded.contains(&(v.channel.clone(), v.version)) {
            continue;
        }
        match ctx.store.insert_defs_version(&v).await {
            // Another server (or a concurrent publish) recorded it meanwhile.
            Ok(()) | Err(StoreError::Conflict(_)) => {
                inserted += 1;
                all.push(v);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if inserted > 0 {
        info!(
            inserted,
            "recorded published definitions versions missing from the store"
        );
    }
    Ok(all)
}

/// Re-signs expiring metadata now and every [`REFRESH_EVERY`] until `stop`.
/// Failures are logged, never fatal: the next round tries again.
pub async fn refresh_loop(ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match ctx.defs.refresh().await {
            Ok(true) => info!("re-signed the definitions metadata"),
            Ok(false) => debug!("definitions metadata is fresh"),
            Err(error) => warn!(%error, "could not re-sign the definitions metadata"),
        }
    }
}

/// Writes the offline bundle of `channel` to `out`; returns its size.
pub async fn export(ctx: &Ctx, channel: &str, out: &Path) -> Result<u64, ServiceError> {
    repo::validate_channel(channel)?;
    let published = ctx.defs.history().await?;
    if !published.iter().any(|v| v.channel == channel) {
        return Err(ServiceError::NotFound {
            what: "definitions channel",
            id: channel.to_owned(),
        });
    }
    Ok(ctx.defs.export(channel, out).await?)
}

/// Published versions grouped by channel, newest first within each.
#[derive(Debug, Default)]
pub struct Published(BTreeMap<String, Vec<DefsVersion>>);

impl Published {
    pub fn new(versions: Vec<DefsVersion>) -> Self {
        let mut by_channel: BTreeMap<String, Vec<DefsVersion>> = BTreeMap::new();
        for v in versions {
            by_channel.entry(v.channel.clone()).or_default().push(v);
        }
        for list in by_channel.values_mut() {
            list.sort_by_key(|v| std::cmp::Reverse(v.version));
        }
        Published(by_channel)
    }

    pub async fn load(ctx: &Ctx) -> Result<Self, ServiceError> {
        Ok(Published::new(ctx.store.list_defs_versions(None).await?))
    }

    /// Each channel's versions with its publish interval, computed once.
    pub fn channels(&self) -> HashMap<&str, policy::Channel<'_>> {
        self.0
            .iter()
            .map(|(name, list)| (name.as_str(), policy::Channel::new(list.iter().collect())))
            .collect()
    }
}

/// One agent's view of each channel its policy subscribes to, in policy
/// order, and whether the agent is in policy.
pub fn agent_views(
    ctx: &Ctx,
    channels: &HashMap<&str, policy::Channel<'_>>,
    defs: &DefsPolicy,
    agent: &AgentRecord,
) -> (Vec<AgentChannelView>, Option<bool>) {
    let empty = policy::Channel::new(Vec::new());
    let now = ctx.now();
    let grace = time::Duration::seconds(i64::from(ctx.settings.defs_grace_secs));
    let mut seen = BTreeSet::new();
    let views: Vec<AgentChannelView> = defs
        .channels
        .iter()
        .filter(|c| seen.insert(c.as_str()))
        .map(|name| {
            let channel = channels.get(name.as_str()).unwrap_or(&empty);
            let state = agent.defs.iter().find(|s| &s.channel == name);
            policy::channel_view(name, channel, state, agent.status, now, grace)
        })
        .collect();
    let in_policy = policy::agent_in_policy(agent.status, &views);
    (views, in_policy)
}

/// The policies of `agents`, by name, through the policy cache.
pub async fn policies_of(
    ctx: &Ctx,
    agents: &[AgentRecord],
) -> Result<HashMap<String, DefsPolicy>, ServiceError> {
    let mut out = HashMap::new();
    for a in agents {
        if !out.contains_key(&a.policy) {
            let p = policies::resolve(ctx, &a.policy).await?;
            out.insert(a.policy.clone(), p.defs);
        }
    }
    Ok(out)
}

/// `GET /v1/admin/defs/summary`: every channel published or subscribed to
/// (or only `channel`), with agent counts.
pub async fn summary(
    ctx: &Ctx,
    channel: Option<&str>,
) -> Result<Vec<ChannelSummary>, ServiceError> {
    if let Some(c) = channel {
        repo::validate_channel(c)?;
    }
    // Versions the repository has but the store missed are shown too.
    let published = match reconcile(ctx).await {
        Ok(all) => Published::new(all),
        Err(error) => {
            warn!(%error, "could not reconcile definitions versions before a summary");
            Published::load(ctx).await?
        }
    };
    let channels = published.channels();
    let agents = ctx.store.list_agents(None, MAX_LIST).await?;
    let policies = policies_of(ctx, &agents).await?;
    let mut names: BTreeSet<&str> = published.0.keys().map(String::as_str).collect();
    for p in policies.values() {
        names.extend(p.channels.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for name in names {
        if channel.is_some_and(|c| c != name) {
            continue;
        }
        // Agents per installed version, in one pass over the agents.
        let mut on_version: HashMap<u64, u64> = HashMap::new();
        for a in &agents {
            if let Some(v) = a
                .defs
                .iter()
                .find(|s| s.channel == name)
                .and_then(|s| s.version)
            {
                *on_version.entry(v).or_default() += 1;
            }
        }
        let mut versions = published.0.get(name).cloned().unwrap_or_default();
        for v in &mut versions {
            v.agents = on_version.get(&v.version).copied().unwrap_or(0);
        }
        let mut summary = ChannelSummary {
            channel: name.to_owned(),
            versions,
            agents_subscribed: 0,
            agents_in_policy: 0,
            agents_download_problem: 0,
        };
        let empty = policy::Channel::new(Vec::new());
        let published_channel = channels.get(name).unwrap_or(&empty);
        let grace = time::Duration::seconds(i64::from(ctx.settings.defs_grace_secs));
        for a in &agents {
            let subscribed = policies
                .get(&a.policy)
                .is_some_and(|p| p.channels.iter().any(|c| c == name));
            if !subscribed {
                continue;
            }
            summary.agents_subscribed += 1;
            let state = a.defs.iter().find(|s| s.channel == name);
            let view =
                policy::channel_view(name, published_channel, state, a.status, ctx.now(), grace);
            if view.in_policy && a.status == AgentStatus::Active {
                summary.agents_in_policy += 1;
            }
            if view.download_path_problem {
                summary.agents_download_problem += 1;
            }
        }
        out.push(summary);
    }
    Ok(out)
}

impl From<RepoError> for ServiceError {
    fn from(e: RepoError) -> Self {
        ServiceError::Defs(e)
    }
}
