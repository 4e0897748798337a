//! `tether agent run`: the check-in loop.
//!
//! The agent checks in at its policy's interval with ± jitter. On failure it
//! backs off exponentially with full jitter (see [`crate::backoff`]), never
//! sooner than the server's Retry-After, and resets on success. A rejected
//! credential is recorded and retried at the cap, since an admin may fix it.
//! On SIGTERM/SIGINT it tells the server it is stopping (bounded by
//! [`SHUTDOWN_NOTICE_TIMEOUT`]) and returns.
//!
//! Time and randomness are injected ([`Sleeper`], the clock, the jitter
//! source) so tests can drive the loop against a real HTTPS server and assert
//! every delay it chose.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_client::{ApiClient, ClientError};
use tether_wire::{
    ActionKind, ActionResult, CheckinRequest, CheckinResponse, Clock, ErrorCode, HostFacts,
    ShutdownNotice,
};

use crate::backoff;
use crate::logs::{LogHandle, MAX_DEBUG};
use crate::state::{StateStore, subsystem};

/// The shutdown notice may take at most this long.
pub const SHUTDOWN_NOTICE_TIMEOUT: Duration = Duration::from_secs(3);

/// The interval used before any policy is known.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// A boxed future, for the object-safe [`Sleeper`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Waits for a duration. Production uses tokio's timer; tests record the
/// requested delays and return at once.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, d: Duration) -> BoxFuture<()>;
}

/// Sleeps on tokio's timer (so `tokio::time::pause` applies).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Carries out actions that take more than a state change (the doctor).
pub trait ActionHandler: Send + Sync {
    /// Runs the doctor; with `upload`, builds and uploads the bundle through
    /// `client`. Never fails: what went wrong is in the result.
    fn doctor(&self, client: ApiClient, upload: bool) -> BoxFuture<ActionResult>;
}

/// Everything the loop needs, injected.
pub struct RunContext {
    pub client: ApiClient,
    pub store: StateStore,
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
    /// Samples in `[0, 1)` for jitter.
    pub jitter: Box<dyn FnMut() -> f64 + Send>,
    /// Switches debug logging; `None` when logging is not reloadable.
    pub logs: Option<Arc<LogHandle>>,
    pub facts: Arc<dyn Fn() -> HostFacts + Send + Sync>,
    /// The proxy in use, redacted, reported at check-in.
    pub proxy: Option<String>,
    /// Runs doctor actions; `None` answers them as not supported.
    pub actions: Option<Arc<dyn ActionHandler>>,
    /// The same doctor runner, for doctor tasks received by the task poll.
    pub actions_doctor: Option<crate::actions::DoctorActions>,
    /// The definitions worker: it receives each policy and `UpdateDefs`
    /// action, and runs updates in its own task so they never delay a
    /// check-in. `None` answers `UpdateDefs` as not supported.
    pub defs: Option<crate::defs::DefsHandle>,
    /// The task worker's long-task limit: each check-in reply's policy sets
    /// it. `None` when no task worker runs.
    pub task_limit: Option<crate::tasks::TaskLimit>,
    /// The upgrade worker: it receives each check-in's offer. `None`
    /// ignores offers.
    pub upgrades: Option<crate::upgrade::offer::OfferHandle>,
}

/// What one check-in led to, and the delay chosen after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CheckedIn { delay: Duration },
    Failed { code: ErrorCode, delay: Duration },
}

/// What the loop did, for the caller and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub steps: Vec<Step>,
    /// Whether the server acknowledged the shutdown notice.
    pub shutdown_acknowledged: bool,
}

impl RunContext {
    fn interval_and_jitter(&self) -> (Duration, u8) {
        match self.store.load().ok().flatten().and_then(|s| s.policy) {
            Some(p) => (
                Duration::from_secs(u64::from(p.checkin_interval_secs)).max(backoff::MIN_INTERVAL),
                p.jitter_percent,
            ),
            None => (DEFAULT_INTERVAL, 10),
        }
    }

    /// Applies the debug window from the state file to the log filter, and
    /// returns how long debug mode still lasts.
    fn apply_debug(&self) -> Option<Duration> {
        let now = self.clock.now();
        let until = self.store.load().ok().flatten().and_then(|s| s.debug_until);
        let remaining = until
            .and_then(|u| Duration::try_from(u - now).ok())
            .filter(|d| !d.is_zero());
        if let Some(logs) = &self.logs {
            logs.set_debug(remaining.is_some());
        }
        remaining
    }

    /// One check-in outside the loop, recorded in the state file like the
    /// loop's (the capture runs one inside its window). The server
    /// delivers each action once, so the actions it carries are run here.
    pub async fn check_in_once(&self) -> Result<CheckinResponse, ClientError> {
        self.apply_debug();
        let result = self.checkin().await;
        match &result {
            Ok(resp) => {
                self.on_success(resp);
                self.run_actions(resp).await;
            }
            Err(error) => self.on_failure(error),
        }
        result
    }

    async fn checkin(&self) -> Result<CheckinResponse, ClientError> {
        self.refresh_credential();
        let state = self.store.load().ok().flatten();
        let policy = state.as_ref().and_then(|s| s.policy.clone());
        let mut last_errors = state.map(|s| s.last_errors).unwrap_or_default();
        // Read from disk each time: an `update --now` in another process
        // changes the channels too.
        let (defs, definitions) =
            crate::defs::checkin_fields(self.store.dir(), policy.as_ref(), &mut last_errors);
        let request = CheckinRequest {
            defs,
            agent_version: crate::version().to_owned(),
            facts: (self.facts)(),
            definitions,
            last_errors,
            proxy: self.proxy.clone(),
            upgrade: crate::upgrade::report(self.store.dir()),
        };
        self.client.checkin(&request).await
    }

    /// Takes up a credential rotated by another process (`tether-agent
    /// capture --tls-keylog`): the file is read before each check-in, and
    /// every client sharing the bearer (the task poll too) switches to it.
    /// The server makes it the credential when it is first presented.
    fn refresh_credential(&self) {
        let Some(bearer) = self.client.shared_bearer() else {
            return;
        };
        match crate::credential::load(self.store.dir()) {
            Ok(c) => {
                if bearer.replace(c.expose()) {
                    tracing::info!(
                        "the credential file holds a new (rotated) credential; using it from this check-in on"
                    );
                }
            }
            Err(error) => {
                tracing::debug!(error = %error, "credential file not re-read; keeping the credential in use")
            }
        }
    }

    /// Records a successful check-in and applies its actions.
    fn on_success(&self, resp: &CheckinResponse) {
        let now = self.clock.now();
        let saved = self.store.update(|s| {
            if s.agent_id != resp.agent_id {
                tracing::warn!(expected = %s.agent_id, got = %resp.agent_id, "the server answered for another agent id; adopting it");
                s.agent_id = resp.agent_id;
            }
            s.last_successful_contact = Some(now);
            s.contact_version = Some(crate::version().to_owned());
            s.status = Some(resp.status);
            s.policy = Some(resp.policy.clone());
            s.last_errors.remove(subsystem::CHECKIN);
            s.last_errors.remove(subsystem::TRANSPORT);
            for action in &resp.actions {
                match &action.kind {
                    ActionKind::Doctor { upload } => {
                        tracing::info!(action_id = %action.id, upload, "doctor run requested by the server");
                    }
                    ActionKind::Debug { minutes } => {
                        let wanted = Duration::from_secs(u64::from(*minutes) * 60).min(MAX_DEBUG);
                        s.debug_until = Some(now + wanted);
                        tracing::info!(action_id = %action.id, minutes, "debug logging requested by the server");
                    }
                    ActionKind::UpdateDefs { channel } => {
                        tracing::info!(action_id = %action.id, channel = channel.as_deref().unwrap_or("all"), "definitions check requested by the server");
                    }
                    ActionKind::Capture { secs, tls_keylog } => {
                        tracing::info!(action_id = %action.id, secs = ?secs, tls_keylog, "escalation capture requested by the server");
                    }
                    other => {
                        tracing::info!(action_id = %action.id, action = ?other, "ignoring an action this agent does not know");
                    }
                }
            }
        });
        if let Err(error) = saved {
            tracing::error!(code = %error.code(), error = %error, "could not record the check-in in the state file");
        }
        if let Some(defs) = &self.defs {
            defs.policy(&resp.policy.defs);
        }
        if let Some(limit) = &self.task_limit {
            limit.set(resp.policy.max_concurrent_tasks);
        }
        if let Some(upgrades) = &self.upgrades {
            upgrades.offer(resp.upgrade.as_ref().map(|u| u.version.as_str()));
        }
        tracing::info!(status = %resp.status, policy_revision = resp.policy.revision, "checked in");
    }

    /// Runs the doctor actions of a check-in reply and reports each result.
    async fn run_actions(&self, resp: &CheckinResponse) {
        for action in &resp.actions {
            let upload = match &action.kind {
                ActionKind::Doctor { upload } => *upload,
                ActionKind::UpdateDefs { channel } => {
                    self.update_defs(action.id, channel.clone()).await;
                    continue;
                }
                ActionKind::Capture { secs, tls_keylog } => {
                    crate::capture::spawn_action(
                        self.client.clone(),
                        self.store.dir().to_path_buf(),
                        action.id,
                        *secs,
                        *tls_keylog,
                    );
                    continue;
                }
                _ => continue,
            };
            let result = match &self.actions {
                Some(h) => h.doctor(self.client.clone(), upload).await,
                None => ActionResult {
                    ok: false,
                    message: "this agent build cannot run the doctor".to_owned(),
                    doctor: None,
                },
            };
            tracing::info!(
                action_id = %action.id,
                ok = result.ok,
                verdict = result.doctor.as_ref().map_or("-", |d| d.status.as_str()),
                message = %result.message,
                "doctor action finished"
            );
            if let Err(error) = self.client.complete_action(action.id, &result).await {
                tracing::warn!(action_id = %action.id, code = %error.code(), error = %error, "could not report the action's result");
            }
        }
    }

    /// Hands an `UpdateDefs` action to the definitions worker, which reports
    /// its result when the update finished; answers it at once when there is
    /// no worker or its queue is full.
    async fn update_defs(&self, id: uuid::Uuid, channel: Option<String>) {
        let queued = self.defs.as_ref().is_some_and(|d| {
            d.trigger(crate::defs::Trigger {
                action_id: id,
                channel,
            })
        });
        if queued {
            return;
        }
        let result = crate::defs::unsupported(if self.defs.is_some() {
            "too many definitions checks are already queued; try again later"
        } else {
            "this agent process does not run definitions updates"
        });
        if let Err(error) = self.client.complete_action(id, &result).await {
            tracing::warn!(action_id = %id, code = %error.code(), error = %error, "could not report the action's result");
        }
    }

    /// Records a failed check-in in the subsystem it belongs to.
    fn on_failure(&self, error: &ClientError) {
        let sub = match error {
            ClientError::Transport(_) => subsystem::TRANSPORT,
            _ => subsystem::CHECKIN,
        };
        let code = error.code();
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .update(|s| s.record_error(sub, code, error.to_string(), now))
        {
            tracing::error!(code = %e.code(), error = %e, "could not record the error in the state file");
        }
        match code {
            ErrorCode::AgentCredentialRejected => {
                tracing::error!(code = %code, error = %error, action = code.action(), "the server rejected this agent's credential");
            }
            ErrorCode::AgentPendingApproval => {
                tracing::info!(code = %code, "waiting for an admin's approval")
            }
            _ => tracing::warn!(code = %code, error = %error, subsystem = sub, "check-in failed"),
        }
    }
}

/// Runs check-ins until `shutdown` completes, then sends the shutdown
/// notice. Returns what it did.
pub async fn run_loop(ctx: &mut RunContext, shutdown: impl Future<Output = ()>) -> RunSummary {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut summary = RunSummary::default();
    let mut attempt: u32 = 0;
    'outer: loop {
        ctx.apply_debug();
        let result = tokio::select! {
            biased;
            () = &mut shutdown => break 'outer,
            r = ctx.checkin() => r,
        };
        let step = match result {
            Ok(resp) => {
                ctx.on_success(&resp);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'outer,
                    () = ctx.run_actions(&resp) => {}
                }
                attempt = 0;
                let interval = Duration::from_secs(u64::from(resp.policy.checkin_interval_secs));
                let delay = backoff::jittered_interval(
                    interval,
                    resp.policy.jitter_percent,
                    (ctx.jitter)(),
                );
                Step::CheckedIn { delay }
            }
            Err(error) => {
                ctx.on_failure(&error);
                let (interval, jitter) = ctx.interval_and_jitter();
                let cap = backoff::cap_for(interval);
                let code = error.code();
                let delay = match code {
                    // An admin must act; keep asking at the cap, not faster.
                    ErrorCode::AgentCredentialRejected => {
                        cap.max(error.retry_after().unwrap_or_default())
                    }
                    // Not a failure of the path: ask again at the normal pace.
                    ErrorCode::AgentPendingApproval => {
                        backoff::jittered_interval(interval, jitter, (ctx.jitter)())
                            .max(error.retry_after().unwrap_or_default())
                    }
                    _ => {
                        let d =
                            backoff::retry_delay(attempt, cap, error.retry_after(), (ctx.jitter)());
                        attempt = attempt.saturating_add(1);
                        d
                    }
                };
                Step::Failed { code, delay }
            }
        };
        let delay = match &step {
            Step::CheckedIn { delay } | Step::Failed { delay, .. } => *delay,
        };
        // A debug action from this check-in takes effect before the wait.
        ctx.apply_debug();
        tracing::debug!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "next check-in scheduled"
        );
        summary.steps.push(step);
        // Sleep, waking early when debug mode ends so it is switched off on time.
        let mut left = delay;
        while !left.is_zero() {
            let slice = match ctx.apply_debug() {
                Some(debug_left) if debug_left < left => debug_left,
                _ => left,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break 'outer,
                () = ctx.sleeper.sleep(slice) => {}
            }
            left = left.saturating_sub(slice);
        }
    }
    tracing::info!("stopping: sending the shutdown notice");
    let notice = ShutdownNotice {
        reason: "the agent received a stop signal".to_owned(),
    };
    match tokio::time::timeout(SHUTDOWN_NOTICE_TIMEOUT, ctx.client.shutdown(&notice)).await {
        Ok(Ok(())) => summary.shutdown_acknowledged = true,
        Ok(Err(error)) => {
            tracing::warn!(code = %error.code(), error = %error, "the shutdown notice failed")
        }
        Err(_) => tracing::warn!(
            timeout_s = SHUTDOWN_NOTICE_TIMEOUT.as_secs(),
            "the shutdown notice timed out"
        ),
    }
    summary
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
