//! Definitions in the agent: where updates come from, the transport they
//! use, the background worker that checks on the policy's schedule (and on
//! an admin's `UpdateDefs` action), and how outcomes reach the state file
//! and the check-in.
//!
//! The updater itself (TUF metadata, deltas, resumable downloads, atomic
//! installs) is `tether_defs::client`; this module only decides when it
//! runs, against which servers, and where its results are reported.
//!
//! - [`schedule`]: the pure timing maths (first-check offset, jitter, retries).
//! - [`status`]: `tether agent defs status`.
//! - [`command`]: `update --now`, `defs import` and `defs status`, run in
//!   the calling process.

pub mod command;
pub mod schedule;
pub mod status;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tether_client::ApiClient;
use tether_defs::client::{Applied, ChannelOutcome, Updater, UpdaterConfig};
use tether_transport::{Transport, TransportConfig, TrustConfig};
use tether_wire::{ActionResult, ChannelState, Clock, DefsPolicy, ErrorCode, Policy};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

use crate::config::AgentConfig;
use crate::error::Failure;
use crate::state::StateStore;

/// The prefix of a channel's key in the state's and check-in's `last_errors`.
pub const ERROR_PREFIX: &str = "defs:";

/// How many admin-triggered checks may wait while one runs. More than this
/// (a flood of actions) are answered as busy instead of queued without bound.
pub const MAX_QUEUED_TRIGGERS: usize = 16;

/// The `last_errors` key of a channel.
pub fn error_key(channel: &str) -> String {
    format!("{ERROR_PREFIX}{channel}")
}

/// The update servers, in fallback order: the policy's `update_urls`, or the
/// control plane's own `/defs/` tree when the policy names none.
///
/// A URL that does not parse is skipped (and logged): the rest of the list
/// still works. Each base URL gets a trailing slash, so joining a relative
/// metadata path keeps the base's last segment.
pub fn update_servers(policy: &DefsPolicy, server: &Url) -> Vec<Url> {
    let mut out: Vec<Url> = policy
        .update_urls
        .iter()
        .filter_map(|raw| match Url::parse(raw.trim()) {
            Ok(url) => Some(with_trailing_slash(url)),
            Err(error) => {
                tracing::warn!(url = %raw, error = %error, "skipping an update server URL from the policy that does not parse");
                None
            }
        })
        .collect();
    if out.is_empty() {
        let base = with_trailing_slash(server.clone());
        match base.join("defs/") {
            Ok(url) => out.push(url),
            Err(error) => {
                tracing::warn!(server = %server, error = %error, "cannot derive the control plane's /defs/ URL")
            }
        }
    }
    out
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The trust anchors for update servers.
///
/// Check-ins pin the control plane's CA, and a pin makes the transport
/// ignore every other root. Update servers are often not the control plane:
/// a CDN or an nginx mirror carries a certificate from a public or internal
/// CA. So this trust has no pin and takes the union of the agent's anchors:
/// the control-plane CA (the saved `ca.pem` or the operator's CA file, so the
/// control plane's own `/defs/` still verifies), the extra CA (inspection
/// proxies rewrite mirror traffic too) and the system roots.
///
/// Widening TLS trust here is safe because TLS is not what protects the
/// definitions: every byte installed is checked against TUF metadata signed
/// by the root pinned at enrollment, with rollback and freeze protection. A
/// mirror or a middlebox can at worst withhold updates, which the control
/// plane sees as the agent falling out of policy. The check-in transport
/// keeps its pin unchanged.
pub fn trust(config: &AgentConfig, state_dir: &Path) -> Result<TrustConfig, Failure> {
    let mut trust = crate::connect::trust(config, Some(state_dir))?;
    trust.pinned_ca_sha256 = None;
    trust.system_roots = true;
    Ok(trust)
}

/// The settings of the transport for update servers: the check-in path's
/// proxy, NO_PROXY and timeouts with [`trust`]. The updater and the
/// doctor's definitions checks are both built from it, so the doctor's
/// verdicts hold for downloads.
pub fn transport_config(
    config: &AgentConfig,
    state_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TransportConfig, Failure> {
    let base = crate::connect::transport_config(config, Some(state_dir), env)?;
    Ok(TransportConfig {
        trust: trust(config, state_dir)?,
        ..base
    })
}

/// The transport for update servers ([`transport_config`]).
pub fn transport(
    config: &AgentConfig,
    state_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Transport, Failure> {
    Transport::new(transport_config(config, state_dir, env)?).map_err(Failure::from)
}

/// Builds updaters for a state dir, against the servers the policy names.
#[derive(Clone)]
pub struct UpdaterFactory {
    pub state_dir: std::path::PathBuf,
    /// The control plane, used when the policy names no update server.
    pub server: Url,
    pub transport: Arc<Transport>,
    pub clock: Arc<dyn Clock>,
    /// Tests only: see [`tether_defs::client::ApplyHook`].
    pub apply_hook: Option<tether_defs::client::ApplyHook>,
}

impl UpdaterFactory {
    /// An updater for this policy's servers.
    pub fn updater(&self, policy: &DefsPolicy) -> Updater {
        Updater::new(
            UpdaterConfig {
                state_dir: self.state_dir.clone(),
                servers: update_servers(policy, &self.server),
            },
            self.transport.clone(),
            self.clock.clone(),
        )
        .with_apply_hook(self.apply_hook.clone())
    }
}

impl std::fmt::Debug for UpdaterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterFactory")
            .field("state_dir", &self.state_dir)
            .field("server", &self.server.as_str())
            .finish_non_exhaustive()
    }
}

/// One line per channel, as `update --now`, `defs import` and the action
/// result print them.
pub fn outcome_line(outcome: &ChannelOutcome) -> String {
    // A refused name is outside input: escaped and cut, never printed raw.
    let shown = if tether_defs::layout::valid_channel(&outcome.channel) {
        outcome.channel.clone()
    } else {
        format!("{:?}", outcome.channel.chars().take(80).collect::<String>())
    };
    let outcome = &ChannelOutcome {
        channel: shown,
        result: match &outcome.result {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(tether_defs::client::UpdateError::Copied {
                code: e.code(),
                message: e.to_string(),
                transient: false,
                next_server: false,
            }),
        },
    };
    match &outcome.result {
        Ok(Applied::UpToDate { version }) => {
            format!("{}: up to date at version {version}", outcome.channel)
        }
        Ok(Applied::Installed {
            from,
            version,
            method,
            bytes,
        }) => {
            let from = from.map_or_else(|| "nothing".to_owned(), |v| format!("version {v}"));
            let method = method.as_str();
            format!(
                "{}: installed version {version} (from {from}, {method}, {bytes} bytes)",
                outcome.channel
            )
        }
        Err(error) => format!(
            "{}: FAILED {}: {error} Action: {}",
            outcome.channel,
            error.code(),
            error.action()
        ),
    }
}

/// Records each channel's outcome under `defs:<channel>` in the state
/// file's `last_errors`: a failure is set, a success clears it. A missing
/// state file (not enrolled) is left alone.
pub fn record_outcomes(
    store: &StateStore,
    outcomes: &[ChannelOutcome],
    now: time::OffsetDateTime,
) -> Result<(), crate::state::StateError> {
    if store.load()?.is_none() {
        return Ok(());
    }
    store.update(|s| {
        for o in outcomes {
            match &o.result {
                Ok(_) => {
                    s.last_errors.remove(&error_key(&o.channel));
                }
                Err(e) => s.record_error(&error_key(&o.channel), e.code(), e.to_string(), now),
            }
        }
    })
}

/// What a check-in reports about definitions, read from disk: the state of
/// each subscribed channel, the installed version per channel (the older
/// `definitions` map), and `last_errors` with the `defs:*` keys replaced by
/// the channels' own last errors.
pub fn checkin_fields(
    state_dir: &Path,
    policy: Option<&Policy>,
    last_errors: &mut std::collections::BTreeMap<String, tether_wire::LastError>,
) -> (
    Vec<ChannelState>,
    std::collections::BTreeMap<String, String>,
) {
    last_errors.retain(|k, _| !k.starts_with(ERROR_PREFIX));
    let channels = policy.map(|p| p.defs.channels.clone()).unwrap_or_default();
    if channels.is_empty() {
        return (Vec::new(), Default::default());
    }
    let states = tether_defs::client::channel_states(state_dir, &channels);
    let mut versions = std::collections::BTreeMap::new();
    for s in &states {
        if let Some(v) = s.version {
            versions.insert(s.channel.clone(), v.to_string());
        }
        if let Some(e) = &s.last_error {
            last_errors.insert(error_key(&s.channel), e.clone());
        }
    }
    (states, versions)
}

/// A request to check now, from an admin's `UpdateDefs` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub action_id: Uuid,
    /// One channel, or every subscribed one.
    pub channel: Option<String>,
}

/// The run loop's side of the worker: it passes on each policy it receives
/// and each `UpdateDefs` action. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DefsHandle {
    policy: watch::Sender<Option<DefsPolicy>>,
    triggers: mpsc::Sender<Trigger>,
}

impl DefsHandle {
    /// Passes on the policy's definitions settings; the worker reschedules
    /// only when they changed.
    pub fn policy(&self, policy: &DefsPolicy) {
        self.policy.send_if_modified(|current| {
            if current.as_ref() == Some(policy) {
                false
            } else {
                *current = Some(policy.clone());
                true
            }
        });
    }

    /// Queues a check; `false` when the queue is full or the worker stopped
    /// (the caller answers the action itself then).
    pub fn trigger(&self, trigger: Trigger) -> bool {
        self.triggers.try_send(trigger).is_ok()
    }
}

/// The background task that runs definitions updates, one at a time, so
/// they never hold up a check-in.
pub struct DefsWorker {
    pub factory: UpdaterFactory,
    pub store: StateStore,
    /// Reports action results.
    pub client: ApiClient,
    /// Samples in `[0, 1)` for the first-check offset, jitter and retries.
    pub jitter: Box<dyn FnMut() -> f64 + Send + Sync>,
    policy: watch::Receiver<Option<DefsPolicy>>,
    triggers: mpsc::Receiver<Trigger>,
}

/// What the worker did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A check is scheduled after this delay.
    Scheduled {
        delay: Duration,
        reason: &'static str,
    },
    /// A check ran; `failed` channels failed.
    Checked { channels: usize, failed: usize },
}

impl DefsWorker {
    /// A worker and its handle. `initial` is the policy cached in the state
    /// file, so the first check is scheduled before any check-in.
    pub fn new(
        factory: UpdaterFactory,
        store: StateStore,
        client: ApiClient,
        jitter: Box<dyn FnMut() -> f64 + Send + Sync>,
        initial: Option<DefsPolicy>,
    ) -> (DefsWorker, DefsHandle) {
        let (policy_tx, policy_rx) = watch::channel(initial);
        let (trigger_tx, trigger_rx) = mpsc::channel(MAX_QUEUED_TRIGGERS);
        (
            DefsWorker {
                factory,
                store,
                client,
                jitter,
                policy: policy_rx,
                triggers: trigger_rx,
            },
            DefsHandle {
                policy: policy_tx,
                triggers: trigger_tx,
            },
        )
    }

    fn now(&self) -> time::OffsetDateTime {
        self.factory.clock.now()
    }

    fn cooldown(&self) -> Option<Duration> {
        tether_defs::client::cooldown_remaining(&self.factory.state_dir, self.now())
    }

    /// Whether any of the channels has a version installed.
    fn installed(&self, policy: &DefsPolicy) -> bool {
        tether_defs::client::channel_states(&self.factory.state_dir, &policy.channels)
            .iter()
            .any(|s| s.version.is_some())
    }

    /// The first check for this policy: `None` when it subscribes to nothing.
    fn first(&mut self, policy: &DefsPolicy) -> Option<(Duration, &'static str)> {
        if policy.channels.is_empty() {
            return None;
        }
        let installed = self.installed(policy);
        let delay = schedule::first_delay(
            schedule::interval(policy.interval_secs),
            installed,
            (self.jitter)(),
        );
        Some((
            schedule::not_before_cooldown(delay, self.cooldown()),
            "first check",
        ))
    }

    /// Runs until the handle is dropped. `on_event` sees every decision.
    pub async fn run(mut self, mut on_event: impl FnMut(WorkerEvent) + Send) {
        let jitter_percent = |store: &StateStore| {
            store
                .load()
                .ok()
                .flatten()
                .and_then(|s| s.policy)
                .map_or(10, |p| p.jitter_percent)
        };
        let mut policy = self.policy.borrow_and_update().clone();
        let mut failures: u32 = 0;
        let mut due: Option<Instant> = None;
        let schedule = |delay_reason: Option<(Duration, &'static str)>,
                        due: &mut Option<Instant>,
                        on_event: &mut (dyn FnMut(WorkerEvent) + Send)| {
            *due = delay_reason.map(|(delay, reason)| {
                on_event(WorkerEvent::Scheduled { delay, reason });
                tracing::debug!(
                    delay_s = delay.as_secs(),
                    reason,
                    "next definitions check scheduled"
                );
                Instant::now() + delay
            });
        };
        let first = policy.clone().and_then(|p| self.first(&p));
        schedule(first, &mut due, &mut on_event);
        loop {
            let at = due;
            let sleep = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.policy.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = self.policy.borrow_and_update().clone();
                    if new == policy {
                        continue;
                    }
                    let was_subscribed = policy.as_ref().is_some_and(|p| !p.channels.is_empty());
                    let interval_changed = policy.as_ref().map(|p| p.interval_secs)
                        != new.as_ref().map(|p| p.interval_secs);
                    let added = new.as_ref().is_some_and(|n| {
                        n.channels.iter().any(|c| {
                            !policy.as_ref().is_some_and(|p| p.channels.contains(c))
                        })
                    });
                    policy = new;
                    // A new subscription or interval starts over with a first
                    // check; a change of servers alone keeps the schedule.
                    if !was_subscribed || interval_changed || added || due.is_none() {
                        let first = policy.clone().and_then(|p| self.first(&p));
                        schedule(first, &mut due, &mut on_event);
                    }
                }
                trigger = self.triggers.recv() => {
                    let Some(trigger) = trigger else { break };
                    let result = self.triggered(policy.as_ref(), &trigger, &mut on_event).await;
                    if let Err(error) = self.client.complete_action(trigger.action_id, &result).await {
                        tracing::warn!(action_id = %trigger.action_id, code = %error.code(), error = %error, "could not report the definitions action's result");
                    }
                    // A check that just ran successfully counts as the
                    // scheduled one too; after a cool-down, wait for it.
                    if let Some(p) = &policy && !p.channels.is_empty() && result.ok {
                        failures = 0;
                        let delay = schedule::next_delay(schedule::interval(p.interval_secs), jitter_percent(&self.store), (self.jitter)());
                        schedule(Some((schedule::not_before_cooldown(delay, self.cooldown()), "after an admin's check")), &mut due, &mut on_event);
                    } else if let Some(cd) = self.cooldown() && due.is_some() {
                        let at = Instant::now() + cd;
                        due = due.map(|d| d.max(at));
                    }
                }
                () = sleep => {
                    let Some(p) = policy.clone().filter(|p| !p.channels.is_empty()) else {
                        due = None;
                        continue;
                    };
                    if let Some(cd) = self.cooldown() {
                        schedule(Some((cd, "update server cool-down")), &mut due, &mut on_event);
                        continue;
                    }
                    let outcomes = self.check(&p, &p.channels).await;
                    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
                    on_event(WorkerEvent::Checked { channels: outcomes.len(), failed });
                    let interval = schedule::interval(p.interval_secs);
                    let (delay, reason) = if failed == 0 {
                        failures = 0;
                        (schedule::next_delay(interval, jitter_percent(&self.store), (self.jitter)()), "interval")
                    } else {
                        failures = failures.saturating_add(1);
                        (schedule::retry_delay(failures, interval, (self.jitter)()), "retry after a failure")
                    };
                    schedule(Some((schedule::not_before_cooldown(delay, self.cooldown()), reason)), &mut due, &mut on_event);
                }
            }
        }
    }

    /// Runs one update of `channels` and records the outcomes.
    async fn check(&self, policy: &DefsPolicy, channels: &[String]) -> Vec<ChannelOutcome> {
        let outcomes = self.factory.updater(policy).update(channels).await;
        for o in &outcomes {
            match &o.result {
                Ok(_) => {
                    tracing::info!(channel = %o.channel, outcome = %outcome_line(o), "definitions checked")
                }
                Err(e) => {
                    // Debug form: a refused name may hold control characters.
                    tracing::warn!(channel = ?o.channel, code = %e.code(), error = %e, "definitions update failed")
                }
            }
        }
        if let Err(error) = record_outcomes(&self.store, &outcomes, self.now()) {
            tracing::error!(code = %error.code(), error = %error, "could not record the definitions outcome in the state file");
        }
        outcomes
    }

    /// Runs an admin-triggered check and builds the action's result.
    async fn triggered(
        &self,
        policy: Option<&DefsPolicy>,
        trigger: &Trigger,
        on_event: &mut (dyn FnMut(WorkerEvent) + Send),
    ) -> ActionResult {
        let fail = |message: String| ActionResult {
            ok: false,
            message,
            doctor: None,
        };
        let Some(policy) = policy.filter(|p| !p.channels.is_empty()) else {
            return fail("this agent's policy subscribes to no definitions channel".to_owned());
        };
        let channels = match &trigger.channel {
            // The action's channel is outside input: refused before it is
            // compared, logged or used (the updater checks again).
            Some(c) if !tether_defs::layout::valid_channel(c) => {
                let e = tether_defs::client::UpdateError::channel_invalid(c);
                return fail(format!("{}: {e}", e.code()));
            }
            None => policy.channels.clone(),
            Some(c) if policy.channels.contains(c) => vec![c.clone()],
            Some(c) => {
                return fail(format!(
                    "channel {c:?} is not in this agent's policy (subscribed: {})",
                    policy.channels.join(", ")
                ));
            }
        };
        if let Some(cd) = self.cooldown() {
            return fail(format!(
                "{}: the update server asked this agent to wait {} s more; the check runs after it",
                ErrorCode::DefsCoolingDown,
                cd.as_secs()
            ));
        }
        tracing::info!(action_id = %trigger.action_id, channels = ?channels, "definitions check requested by the server");
        let outcomes = self.check(policy, &channels).await;
        let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
        on_event(WorkerEvent::Checked {
            channels: outcomes.len(),
            failed,
        });
        let message = outcomes
            .iter()
            .map(outcome_line)
            .collect::<Vec<_>>()
            .join("; ");
        ActionResult {
            ok: failed == 0,
            message: message.chars().take(1500).collect(),
            doctor: None,
        }
    }
}

/// Answers an `UpdateDefs` action the agent cannot carry out.
pub fn unsupported(reason: &str) -> ActionResult {
    ActionResult {
        ok: false,
        message: reason.to_owned(),
        doctor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn update_servers_are_the_policy_list_else_the_control_plane() {
        let cp = url("https://cp.corp:8443");
        let none = DefsPolicy::default();
        assert_eq!(
            update_servers(&none, &cp),
            vec![url("https://cp.corp:8443/defs/")]
        );
        let under_path = url("https://cp.corp/tether");
        assert_eq!(
            update_servers(&none, &under_path),
            vec![url("https://cp.corp/tether/defs/")]
        );
        let mirrors = DefsPolicy {
            update_urls: vec![
                "https://cdn.example/defs".into(),
                "not a url".into(),
                " https://m2.corp/tree/?x=1#f ".into(),
            ],
            ..DefsPolicy::default()
        };
        assert_eq!(
            update_servers(&mirrors, &cp),
            vec![
                url("https://cdn.example/defs/"),
                url("https://m2.corp/tree/")
            ]
        );
        let broken = DefsPolicy {
            update_urls: vec!["::".into()],
            ..DefsPolicy::default()
        };
        assert_eq!(
            update_servers(&broken, &cp),
            vec![url("https://cp.corp:8443/defs/")],
            "nothing usable: the control plane"
        );
    }

    #[test]
    fn defs_trust_drops_the_pin_and_adds_system_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(crate::credential::CA_FILE), b"PEM").expect("writes");
        let layer = crate::config::parse_file(
            Path::new("agent.toml"),
            "server = \"https://s\"\nca_fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n",
        )
        .expect("parses");
        let config = crate::config::resolve(&[(layer, None)], &|| "h".into())
            .expect("resolves")
            .config;
        let checkin = crate::connect::trust(&config, Some(dir.path())).expect("trust");
        assert!(checkin.pinned_ca_sha256.is_some() && !checkin.system_roots);
        let defs = trust(&config, dir.path()).expect("trust");
        assert_eq!(defs.pinned_ca_sha256, None);
        assert!(defs.system_roots);
        assert_eq!(
            defs.ca_pem,
            Some(b"PEM".to_vec()),
            "the control plane still verifies"
        );
    }

    #[test]
    fn error_keys_are_prefixed() {
        assert_eq!(error_key("sigs"), "defs:sigs");
    }
}
