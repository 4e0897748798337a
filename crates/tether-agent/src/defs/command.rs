//! The local definitions commands (`update --now`, `defs import`, `defs
//! status`): they run the updater in the calling process, against the
//! agent's state dir, config and cached policy, not through the running
//! agent. Cross-process safety (a daemon updating at the same moment, a
//! process killed mid-download) is the updater's: it owns `STATE_DIR/defs/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tether_defs::client::{ChannelOutcome, UpdateError};
use tether_wire::{ErrorCode, Policy};
use url::Url;

use super::UpdaterFactory;
use super::status::DefsStatus;
use crate::config::ConfigLayer;
use crate::error::Failure;
use crate::state::StateStore;
use crate::world::World;

/// An enrolled agent's definitions setup, loaded from its state dir.
#[derive(Debug)]
pub struct Local {
    pub state_dir: PathBuf,
    pub policy: Policy,
    pub factory: UpdaterFactory,
    store: StateStore,
    world: World,
}

impl Local {
    /// Loads the config, the cached policy and the update transport.
    pub fn load(state_dir: &Path, world: &World) -> Result<Local, Failure> {
        let store = StateStore::new(state_dir);
        let policy = cached_policy(&store)?;
        let env = |k: &str| world.var(k);
        let config = crate::config::load(state_dir, &env, &ConfigLayer::default())?.config;
        let transport = super::transport(&config, state_dir, &env)?;
        Ok(Local {
            state_dir: state_dir.to_owned(),
            policy,
            factory: UpdaterFactory {
                state_dir: state_dir.to_owned(),
                server: config.server,
                transport: Arc::new(transport),
                clock: world.clock.clone(),
                apply_hook: None,
            },
            store,
            world: world.clone(),
        })
    }

    /// `update --now`: refused with TETHER-E6009 when the policy does not
    /// allow user updates; otherwise updates `channels` (every subscribed
    /// one when empty) and records the outcomes in the state file.
    pub async fn update_now(&self, channels: &[String]) -> Result<Vec<ChannelOutcome>, Failure> {
        let defs = &self.policy.defs;
        if !defs.allow_user_update {
            return Err(refusal(&self.policy));
        }
        let channels = self.select(channels)?;
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        tracing::info!(channels = ?channels, "definitions update requested by a local user");
        let outcomes = self.factory.updater(defs).update(&channels).await;
        self.record(&outcomes);
        Ok(outcomes)
    }

    /// `defs import`: verifies and installs the bundle. The outer error is a
    /// failure to run; the inner one is the bundle's own (invalid, wrong
    /// repository…).
    pub async fn import(
        &self,
        bundle: &Path,
        channels: &[String],
    ) -> Result<Result<Vec<ChannelOutcome>, UpdateError>, Failure> {
        if !bundle.is_file() {
            return Err(Failure::new(
                ErrorCode::DefsBundleInvalid,
                format!("{} is not a readable file", bundle.display()),
            ));
        }
        let only = (!channels.is_empty()).then_some(channels);
        tracing::info!(bundle = %bundle.display(), channels = ?only, "importing a definitions bundle");
        let result = self
            .factory
            .updater(&self.policy.defs)
            .import_bundle(bundle, only)
            .await;
        if let Ok(outcomes) = &result {
            self.record(outcomes);
        }
        Ok(result)
    }

    /// The channels to update: the subscribed ones, or the requested ones
    /// when each is subscribed.
    fn select(&self, wanted: &[String]) -> Result<Vec<String>, Failure> {
        let subscribed = &self.policy.defs.channels;
        if wanted.is_empty() {
            return Ok(subscribed.clone());
        }
        if let Some(c) = wanted.iter().find(|c| !subscribed.contains(c)) {
            return Err(Failure::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "channel {c:?} is not in this agent's policy {:?} (subscribed: {})",
                    self.policy.name,
                    if subscribed.is_empty() {
                        "none".to_owned()
                    } else {
                        subscribed.join(", ")
                    }
                ),
            ));
        }
        let mut out = wanted.to_vec();
        out.dedup();
        Ok(out)
    }

    fn record(&self, outcomes: &[ChannelOutcome]) {
        if let Err(error) = super::record_outcomes(&self.store, outcomes, self.world.clock.now()) {
            tracing::warn!(code = %error.code(), error = %error, "could not record the definitions outcome in the state file");
        }
    }
}

/// TETHER-E6009, naming the policy's switch and the way to get an update.
pub fn refusal(policy: &Policy) -> Failure {
    Failure {
        code: ErrorCode::DefsUserUpdateForbidden,
        message: format!(
            "the policy {:?} (revision {}) sets allow_user_update = false, so a local user may not force a definitions update. The agent still updates on the policy's schedule.",
            policy.name, policy.revision
        ),
        action: "Ask the platform admin to queue a definitions update for this agent from the control plane (an update_defs action), or to set allow_user_update = true in the policy.".to_owned(),
    }
}

/// `defs status`, read from disk.
pub fn status(state_dir: &Path, world: &World) -> Result<DefsStatus, Failure> {
    let store = StateStore::new(state_dir);
    let state = store.load_required()?;
    let server = Url::parse(&state.server).map_err(|e| {
        Failure::new(
            ErrorCode::StateCorrupt,
            format!(
                "the server {:?} in {} is not a URL: {e}",
                state.server,
                store.path().display()
            ),
        )
    })?;
    let policy = state.policy.map(|p| p.defs).unwrap_or_default();
    Ok(DefsStatus::read(
        state_dir,
        &policy,
        &server,
        world.clock.now(),
    ))
}

fn cached_policy(store: &StateStore) -> Result<Policy, Failure> {
    store.load_required()?.policy.ok_or_else(|| {
        Failure::new(
            ErrorCode::NotEnrolled,
            format!(
                "{} holds no policy yet; it arrives at enrollment and with every check-in",
                store.path().display()
            ),
        )
    })
}
