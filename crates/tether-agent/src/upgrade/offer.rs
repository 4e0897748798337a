//! Taking the version a rollout offers (docs/upgrades.md).
//!
//! The check-in reply may carry an [`UpgradeOffer`](tether_wire::UpgradeOffer).
//! The [`OfferWorker`] fetches that version's release channel
//! (`tether_wire::release_channel` for this platform) with the definitions
//! updater, the same verification from the pinned root, resumable downloads
//! and update servers as definitions, then [`install`](super::install)s the
//! verified binary and asks the run loop to exit with
//! [`EXIT_RESTART`](super::EXIT_RESTART), so `launch` starts the new version
//! on trial. It runs in its own task, so a download never delays a
//! check-in. A failure is kept under `upgrade` in the state's last errors
//! (reported at check-in) and retried with backoff; a version that rolled
//! back on this host is never taken again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_wire::{ErrorCode, UpgradeState};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::defs::UpdaterFactory;
use crate::error::Failure;
use crate::state::StateStore;

/// The `last_errors` key of upgrade failures.
pub const SUBSYSTEM: &str = "upgrade";
/// The environment variable `launch` sets for its child: the agent runs
/// supervised, so it may switch versions and exit to be restarted.
pub const SUPERVISED_ENV: &str = "TETHER_AGENT_SUPERVISED";
/// The first retry after a failed fetch or install; doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// This build's platform, as release channels name it (`linux-x86_64`).
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The run loop's side: passes on each check-in's offer.
#[derive(Debug, Clone)]
pub struct OfferHandle {
    offers: watch::Sender<Option<String>>,
}

impl OfferHandle {
    /// The offer of the last check-in (`None`: nothing offered).
    pub fn offer(&self, version: Option<&str>) {
        self.offers.send_if_modified(|current| {
            if current.as_deref() == version {
                false
            } else {
                *current = version.map(str::to_owned);
                true
            }
        });
    }
}

/// Fetches and installs offered versions, one at a time.
pub struct OfferWorker {
    pub factory: UpdaterFactory,
    pub store: StateStore,
    /// Whether `launch` supervises this process.
    pub supervised: bool,
    /// Notified once a new version is switched to: the run loop stops and
    /// the process exits with `EXIT_RESTART`.
    pub restart: Arc<Notify>,
    offers: watch::Receiver<Option<String>>,
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Switched,
    Failed(Failure),
}

impl OfferWorker {
    pub fn new(
        factory: UpdaterFactory,
        store: StateStore,
        supervised: bool,
        restart: Arc<Notify>,
    ) -> (OfferWorker, OfferHandle) {
        let (tx, rx) = watch::channel(None);
        (
            OfferWorker {
                factory,
                store,
                supervised,
                restart,
                offers: rx,
            },
            OfferHandle { offers: tx },
        )
    }

    fn state_dir(&self) -> PathBuf {
        self.factory.state_dir.clone()
    }

    /// Whether `version` is worth taking here.
    fn wanted(&self, version: &str) -> bool {
        if version == crate::version() {
            return false;
        }
        let rolled_back = super::report(&self.state_dir())
            .is_some_and(|r| r.state == UpgradeState::RolledBack && r.version == version);
        if rolled_back {
            tracing::info!(
                version,
                "not taking the offered version: it rolled back on this host"
            );
        }
        !rolled_back
    }

    fn record(&self, failure: Option<&Failure>) {
        let now = self.factory.clock.now();
        let saved = self.store.update(|s| match failure {
            Some(f) => s.record_error(SUBSYSTEM, f.code, f.message.clone(), now),
            None => {
                s.last_errors.remove(SUBSYSTEM);
            }
        });
        if let Err(e) = saved {
            tracing::error!(code = %e.code(), error = %e, "could not record the upgrade outcome in the state file");
        }
    }

    /// Runs until the handle is dropped or a new version is switched to.
    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut retry_at: Option<(String, Instant)> = None;
        loop {
            let offer = self.offers.borrow_and_update().clone();
            if let Some(version) = offer.filter(|v| self.wanted(v)) {
                if !self.supervised {
                    let f = Failure::new(
                        ErrorCode::UpgradeNotSupervised,
                        format!(
                            "version {version} is offered; this agent runs without `tether-agent launch`"
                        ),
                    );
                    tracing::warn!(code = %f.code, version, "{}", f.message);
                    self.record(Some(&f));
                } else {
                    let wait = retry_at
                        .as_ref()
                        .filter(|(v, _)| *v == version)
                        .map(|(_, at)| *at);
                    if let Some(at) = wait.filter(|at| *at > Instant::now()) {
                        tokio::select! {
                            changed = self.offers.changed() => {
                                if changed.is_err() { return; }
                                continue;
                            }
                            () = tokio::time::sleep_until(at) => {}
                        }
                    }
                    match self.attempt(&version).await {
                        Attempt::Switched => {
                            self.record(None);
                            self.restart.notify_one();
                            return;
                        }
                        Attempt::Failed(f) => {
                            failures = failures.saturating_add(1);
                            let delay = FIRST_RETRY
                                .saturating_mul(1u32 << failures.saturating_sub(1).min(6))
                                .min(MAX_RETRY);
                            tracing::warn!(code = %f.code, version, retry_s = delay.as_secs(), error = %f.message, "could not take the offered version");
                            self.record(Some(&f));
                            retry_at = Some((version, Instant::now() + delay));
                            continue;
                        }
                    }
                }
            }
            if self.offers.changed().await.is_err() {
                return;
            }
        }
    }

    /// Fetches `version`'s release channel and switches to it.
    async fn attempt(&self, version: &str) -> Attempt {
        let platform = platform();
        let Some(channel) = tether_wire::release_channel(&platform, version) else {
            return Attempt::Failed(Failure::new(
                ErrorCode::RolloutVersionInvalid,
                format!("no release channel can carry version {version:?} for {platform}"),
            ));
        };
        let defs = self
            .store
            .load()
            .ok()
            .flatten()
            .and_then(|s| s.policy)
            .map(|p| p.defs)
            .unwrap_or_default();
        tracing::info!(version, channel = %channel, "fetching the offered version");
        let outcomes = self
            .factory
            .updater(&defs)
            .update(std::slice::from_ref(&channel))
            .await;
        if let Some(Err(e)) = outcomes.first().map(|o| &o.result) {
            return Attempt::Failed(Failure::new(
                ErrorCode::UpgradeFetchFailed,
                format!("{channel}: {}: {e}", e.code()),
            ));
        }
        let dir = self.state_dir();
        let Some(binary) = tether_defs::client::installed_path(&dir, &channel) else {
            return Attempt::Failed(Failure::new(
                ErrorCode::UpgradeFetchFailed,
                format!("{channel}: nothing installed after the update"),
            ));
        };
        let installed = super::install(&dir, version, &binary, self.factory.clock.now()).await;
        // The binary now lives under bin/; the channel's copy is not needed.
        if let Some(channel_dir) = binary.parent() {
            let _ = std::fs::remove_dir_all(channel_dir);
        }
        match installed {
            Ok(how) => {
                tracing::info!(version, how = ?how, "switched to the offered version; restarting into it");
                Attempt::Switched
            }
            Err(f) => Attempt::Failed(f),
        }
    }
}
