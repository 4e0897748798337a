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

use super::{Ctx, ServiceError, agents, policies};

pub mod policy;

/// The repository's newest signed root, in memory. Enrollment hands it to
/// every agent and is open to anyone, so it must not take the repository's
/// lock (held through a whole publish) or read its state from disk. It is
/// reloaded after every publish and every refresh round, which is also when
/// a running server starts signing with keys rotated by `tether defs
/// rotate-key`.
#[derive(Debug)]
pub struct PinnedRoot(std::sync::RwLock<std::sync::Arc<str>>);

impl PinnedRoot {
    pub async fn load(repo: &repo::Repo) -> Result<PinnedRoot, RepoError> {
        Ok(PinnedRoot(std::sync::RwLock::new(
            repo.root_json().await?.into(),
        )))
    }

    /// The root as last loaded.
    pub fn get(&self) -> std::sync::Arc<str> {
        // Only ever replaced whole; a panic elsewhere cannot leave it torn.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the repository's newest root again.
    pub async fn reload(&self, repo: &repo::Repo) -> Result<(), RepoError> {
        let root: std::sync::Arc<str> = repo.root_json().await?.into();
        let mut current = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != root {
            info!("the definitions root changed; enrollments now pin the new one");
            *current = root;
        }
        Ok(())
    }
}

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
    if let Err(error) = ctx.defs_root.reload(&ctx.defs).await {
        warn!(%error, "could not reload the definitions root after a publish");
    }
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
        if !ctx.singletons.holds(crate::singleton::Job::DefsRefresh) {
            continue;
        }
        match ctx.defs.refresh().await {
            Ok(true) => info!("re-signed the definitions metadata"),
            Ok(false) => debug!("definitions metadata is fresh"),
            Err(error) => warn!(%error, "could not re-sign the definitions metadata"),
        }
        if let Err(error) = ctx.defs_root.reload(&ctx.defs).await {
            warn!(%error, "could not reload the definitions root");
        }
    }
}

/// How often a server looks whether the repository changed under it.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Notices changes made to the repository by another process: another
/// server sharing `defs_dir` publishing, re-signing or joining, or `tether
/// defs rotate-key`. Each [`WATCH_EVERY`] it compares the repository's
/// [`repo::Repo::change_token`] (one `stat`); on a change it reloads the
/// pinned root and records in the store any version it lacks. Everything
/// else is read from the directory at each request (`/defs/` streams the
/// files, publishes re-read the state under the directory's lock), so
/// nothing served is older than the shared directory.
pub async fn watch_loop(ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut seen = ctx.defs.change_token();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let now = ctx.defs.change_token();
        if now == seen {
            continue;
        }
        debug!("the definitions repository changed on disk");
        if let Err(error) = ctx.defs_root.reload(&ctx.defs).await {
            warn!(%error, "could not reload the definitions root");
            continue;
        }
        if let Err(error) = reconcile(&ctx).await {
            warn!(%error, "could not record the definitions versions published elsewhere");
            continue;
        }
        seen = now;
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
    let subject = subject(agent, defs);
    let views: Vec<AgentChannelView> = defs
        .channels
        .iter()
        .filter(|c| seen.insert(c.as_str()))
        .map(|name| {
            let channel = channels.get(name.as_str()).unwrap_or(&empty);
            let state = agent.defs.iter().find(|s| &s.channel == name);
            policy::channel_view(name, channel, state, subject, now, grace)
        })
        .collect();
    let in_policy = policy::agent_in_policy(agent.status, &views);
    (views, in_policy)
}

/// The agent as the in-policy computation sees it.
fn subject(agent: &AgentRecord, defs: &DefsPolicy) -> policy::Subject {
    policy::Subject {
        status: agent.status,
        enrolled_at: agent.enrolled_at,
        defs_interval: time::Duration::seconds(i64::from(defs.interval_secs)),
    }
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
    let empty = policy::Channel::new(Vec::new());
    let grace = time::Duration::seconds(i64::from(ctx.settings.defs_grace_secs));
    // One pass over every agent, a page at a time, counting per channel.
    let mut counts: BTreeMap<String, Counts> = published
        .0
        .keys()
        .map(|name| (name.clone(), Counts::default()))
        .collect();
    let mut pages = agents::Pages::new(tether_store::AgentFilter::default());
    while let Some(page) = pages.next(ctx).await? {
        let policies = policies_of(ctx, &page).await?;
        for a in &page {
            for s in &a.defs {
                if let Some(v) = s.version {
                    *counts
                        .entry(s.channel.clone())
                        .or_default()
                        .on_version
                        .entry(v)
                        .or_default() += 1;
                }
            }
            let Some(p) = policies.get(&a.policy) else {
                continue;
            };
            let mut seen = BTreeSet::new();
            let subject = subject(a, p);
            for name in p.channels.iter().filter(|c| seen.insert(c.as_str())) {
                let c = counts.entry(name.clone()).or_default();
                c.subscribed += 1;
                let state = a.defs.iter().find(|s| &s.channel == name);
                let published_channel = channels.get(name.as_str()).unwrap_or(&empty);
                let view =
                    policy::channel_view(name, published_channel, state, subject, ctx.now(), grace);
                if view.in_policy && a.status == AgentStatus::Active {
                    c.in_policy += 1;
                }
                if view.download_path_problem {
                    c.download_problem += 1;
                }
                if view.never_installed {
                    c.never_installed += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (name, c) in counts {
        if channel.is_some_and(|want| want != name) {
            continue;
        }
        // A channel only reported by agents, neither published nor
        // subscribed to by any policy, is not shown.
        if !published.0.contains_key(&name) && c.subscribed == 0 {
            continue;
        }
        let mut versions = published.0.get(&name).cloned().unwrap_or_default();
        for v in &mut versions {
            v.agents = c.on_version.get(&v.version).copied().unwrap_or(0);
        }
        out.push(ChannelSummary {
            channel: name,
            versions,
            agents_subscribed: c.subscribed,
            agents_in_policy: c.in_policy,
            agents_download_problem: c.download_problem,
            agents_never_installed: c.never_installed,
        });
    }
    Ok(out)
}

/// What [`summary`] counts per channel.
#[derive(Debug, Default)]
struct Counts {
    on_version: HashMap<u64, u64>,
    subscribed: u64,
    in_policy: u64,
    download_problem: u64,
    never_installed: u64,
}

impl From<RepoError> for ServiceError {
    fn from(e: RepoError) -> Self {
        ServiceError::Defs(e)
    }
}
