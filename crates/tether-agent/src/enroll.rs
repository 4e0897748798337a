//! `tether agent enroll`: trade an enrollment token for the agent's own
//! identity and credential.
//!
//! Trust is explicit: a pinned CA fingerprint, an operator CA file, or the
//! system roots. There is no trust-on-first-use. When pinning, the pinned CA
//! certificate is taken from the chain the server presented and saved to
//! `STATE_DIR/ca.pem`, which anchors every later connection.

use std::path::{Path, PathBuf};

use tether_client::ApiClient;
use tether_wire::{AgentKind, AgentStatus, EnrollRequest, EnrollResponse, ErrorCode};
use time::OffsetDateTime;
use url::Url;

use crate::config::{CONFIG_FILE, ConfigLayer};
use crate::credential::{self, CA_FILE, Credential};
use crate::error::Failure;
use crate::logs::INSTALL_TARGET;
use crate::state::{AgentState, StateStore, subsystem};
use crate::world::World;

/// The options of `enroll`.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub state_dir: PathBuf,
    pub server: Url,
    pub token: String,
    pub ca_fingerprint: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub extra_ca_file: Option<PathBuf>,
    pub name: Option<String>,
    pub kind: Option<AgentKind>,
    pub proxy: Option<String>,
}

/// What enrollment achieved.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: uuid::Uuid,
    pub status: AgentStatus,
    pub kind: AgentKind,
    pub group: String,
    pub name: String,
    /// The saved server CA, when pinning found it in the presented chain.
    pub ca_saved: Option<PathBuf>,
    /// True when this replaced an earlier identity (re-registration).
    pub reregistered: bool,
    /// The definitions root: pinned, refused (why), or not offered.
    pub defs_root: DefsRoot,
    pub checkin_interval_secs: u32,
}

impl Enrolled {
    /// The human summary printed by the command.
    pub fn summary(&self, state_dir: &Path) -> String {
        let mut out = format!(
            "{} agent {} ({}, kind {}, group {}).\nStatus: {}\n",
            if self.reregistered {
                "Re-registered"
            } else {
                "Enrolled"
            },
            self.agent_id,
            self.name,
            self.kind,
            self.group,
            self.status,
        );
        out.push_str(&match self.status {
            AgentStatus::Pending => format!(
                "Next: waits for approval by an admin (`tether agents approve {}`), or becomes Active at its first check-in if the token needs no approval.\n",
                self.agent_id
            ),
            _ => "Next: it checks in as soon as the agent runs.\n".to_owned(),
        });
        out.push_str(&format!(
            "Start it with `tether-agent run --state-dir {dir}` or install the service with `tether-agent install-service --state-dir {dir}`.\nIt will check in every {} s.\n",
            self.checkin_interval_secs,
            dir = state_dir.display()
        ));
        match &self.defs_root {
            DefsRoot::NotOffered => {}
            DefsRoot::Pinned => {
                out.push_str("The definitions root of trust was pinned.\n");
            }
            DefsRoot::Refused(why) => out.push_str(&format!(
                "Warning: the definitions root the server sent was refused ({why}); definitions updates will fail until the agent re-enrolls.\n"
            )),
        }
        if let Some(ca) = &self.ca_saved {
            out.push_str(&format!(
                "The pinned server CA was saved to {}.\n",
                ca.display()
            ));
        }
        out
    }
}

/// What enrollment did with the definitions root the server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefsRoot {
    /// The server serves no definitions.
    NotOffered,
    /// Pinned in `STATE_DIR/defs/` (replacing any earlier one).
    Pinned,
    /// The root was refused; updates fail with TETHER-E6014 until a
    /// re-enrollment pins a valid one. The message says why.
    Refused(String),
}

/// The trust anchor a config names for the control plane: two enrollments
/// with the same URL and anchor talk to the same server.
#[derive(Debug, PartialEq, Eq)]
struct Anchor {
    fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
}

impl Anchor {
    fn of(layer: &ConfigLayer) -> Anchor {
        Anchor {
            fingerprint: layer
                .ca_fingerprint
                .as_deref()
                .map(|f| f.trim().to_ascii_lowercase()),
            ca_file: layer.ca_file.clone(),
        }
    }
}

/// Builds the `agent.toml` layer for this enrollment: trust and server from
/// the options only, other settings kept from an earlier file.
fn file_layer(opts: &EnrollOptions, previous: Option<ConfigLayer>) -> ConfigLayer {
    let previous = previous.unwrap_or_default();
    let explicit_anchor = opts.ca_fingerprint.is_some() || opts.ca_file.is_some();
    ConfigLayer {
        server: Some(opts.server.clone()),
        name: opts.name.clone().or(previous.name),
        kind: opts.kind.or(previous.kind),
        ca_fingerprint: opts.ca_fingerprint.clone(),
        ca_file: opts.ca_file.clone(),
        extra_ca_file: opts.extra_ca_file.clone().or(previous.extra_ca_file),
        // Without a pin or a CA file, the public roots are the anchor.
        system_roots: (!explicit_anchor).then_some(true),
        proxy: opts.proxy.clone().or(previous.proxy),
        ..previous
    }
}

/// Enrolls (or re-registers) this agent and writes its files.
pub async fn enroll(opts: &EnrollOptions, world: &World) -> Result<Enrolled, Failure> {
    validate_flags(opts)?;
    let dir = &opts.state_dir;
    create_private_dir(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let previous_layer = match crate::config::read_file(&config_path) {
        Ok(layer) => Some(layer),
        Err(crate::config::ConfigError::NotEnrolled { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let previous_anchor = previous_layer.as_ref().map(Anchor::of);
    let layer = file_layer(opts, previous_layer);
    let env_layer = crate::config::env_layer(&|k| world.var(k))?;
    // The flags already sit in the file layer; the environment may still
    // override, as it will when the agent runs.
    let effective = crate::config::resolve(
        &[
            (layer.clone(), Some(config_path.clone())),
            (env_layer, None),
        ],
        &crate::facts::hostname,
    )?;
    let config = &effective.config;
    let transport = crate::connect::transport(config, None, &|k| world.var(k))?;
    let client = ApiClient::new(transport, config.server.clone()).with_clock(world.clock.clone());

    let store = StateStore::new(dir);
    // A corrupt old state must not block re-enrollment, which rewrites it.
    let previous_state = store.load().ok().flatten();
    // The old credential proves an identity to the server that issued it,
    // and to no one else: a server at another URL, or behind another trust
    // anchor, never sees it. Re-enrolling there creates a new identity.
    let same_server = previous_state.as_ref().is_some_and(|s| {
        Url::parse(&s.server).is_ok_and(|old| old == config.server)
            && previous_anchor.as_ref() == Some(&Anchor::of(&layer))
    });
    let previous_credential = match credential::load_ignoring_mode(dir) {
        Ok(c) if same_server => Some(c),
        Ok(_) if previous_state.is_some() => {
            tracing::info!(
                target: INSTALL_TARGET,
                previous_server = %previous_state.as_ref().map_or("", |s| s.server.as_str()),
                server = %config.server,
                "the previous credential belongs to another server and is not sent; this enrollment creates a new identity"
            );
            None
        }
        _ => None,
    };
    let now = world.clock.now();
    let installed_at = previous_state.as_ref().map_or(now, |s| s.installed_at);
    let request = EnrollRequest {
        token: opts.token.trim().to_owned(),
        name: config.name.clone(),
        kind: config.kind,
        agent_version: crate::version().to_owned(),
        facts: crate::facts::collect(Some(installed_at)),
        previous_credential: previous_credential.as_ref().map(|c| c.expose().to_owned()),
    };
    tracing::info!(
        target: INSTALL_TARGET,
        server = %config.server,
        name = %config.name,
        reregister = previous_credential.is_some(),
        "enrolling"
    );
    let (response, tls) = match client.enroll_with_tls(&request).await {
        Ok(r) => r,
        Err(e) => {
            let failure = Failure::from(e);
            tracing::error!(target: INSTALL_TARGET, code = %failure.code, error = %failure.message, "enrollment failed");
            if let Some(mut s) = previous_state {
                s.record_error(
                    subsystem::ENROLL,
                    failure.code,
                    failure.message.clone(),
                    now,
                );
                let _ = store.save(&s);
            }
            return Err(failure);
        }
    };
    let ca_saved = save_pinned_ca(
        dir,
        config,
        tls.as_ref().map(|t| t.peer_chain_der.as_slice()),
    )?;
    write_files(dir, &layer, &response, installed_at, now, &config.server)?;
    let defs_root = pin_defs_root(dir, response.defs_root.as_deref(), now);
    tracing::info!(
        target: INSTALL_TARGET,
        agent_id = %response.agent_id,
        status = %response.status,
        group = %response.group,
        "enrolled"
    );
    Ok(Enrolled {
        agent_id: response.agent_id,
        status: response.status,
        kind: response.kind,
        group: response.group,
        name: config.name.clone(),
        ca_saved,
        reregistered: previous_credential.is_some(),
        defs_root,
        checkin_interval_secs: response.policy.checkin_interval_secs,
    })
}

/// Pins the definitions root after the identity is saved. A root that does
/// not verify must not undo a good enrollment (the token is spent and the
/// credential issued), so it is recorded as the `definitions` error and
/// reported, and updates stay off until a re-enrollment.
fn pin_defs_root(dir: &Path, root: Option<&str>, now: OffsetDateTime) -> DefsRoot {
    let Some(root) = root else {
        return DefsRoot::NotOffered;
    };
    match tether_defs::client::pin_root(dir, root) {
        Ok(()) => {
            tracing::info!(target: INSTALL_TARGET, "pinned the definitions root");
            DefsRoot::Pinned
        }
        Err(error) => {
            tracing::error!(target: INSTALL_TARGET, code = %error.code(), error = %error, "the definitions root was refused");
            let _ = StateStore::new(dir).update(|s| {
                s.record_error(subsystem::DEFINITIONS, error.code(), error.to_string(), now)
            });
            DefsRoot::Refused(format!("{}: {error}", error.code()))
        }
    }
}

/// Checks the flags before anything is written, so errors name the flag.
fn validate_flags(opts: &EnrollOptions) -> Result<(), Failure> {
    if let Some(fp) = &opts.ca_fingerprint
        && let Err(e) = tether_transport::parse_fingerprint(fp)
    {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            format!("--ca-fingerprint {fp:?} is invalid: {e}"),
        ));
    }
    if let Some(p) = &opts.proxy
        && let Err(e) = tether_transport::ProxyConfig::parse(p)
    {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            format!("--proxy is invalid: {e}"),
        ));
    }
    if opts.server.scheme() != "https" {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            format!("--server {} must be an https:// URL", opts.server),
        ));
    }
    if opts.token.trim().is_empty() {
        return Err(Failure::new(ErrorCode::TokenUnknown, "--token is empty"));
    }
    Ok(())
}

/// Saves the pinned CA from the presented chain. Without a pin, any stale
/// `ca.pem` from an earlier enrollment is removed so it cannot widen trust.
fn save_pinned_ca(
    dir: &Path,
    config: &crate::config::AgentConfig,
    chain: Option<&[Vec<u8>]>,
) -> Result<Option<PathBuf>, Failure> {
    let Some(pin) = config.ca_fingerprint.as_deref() else {
        let stale = dir.join(CA_FILE);
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| {
                Failure::new(
                    ErrorCode::StateDirUnwritable,
                    format!("cannot remove {}: {e}", stale.display()),
                )
            })?;
        }
        return Ok(None);
    };
    let want = tether_transport::parse_fingerprint(pin).map_err(Failure::from)?;
    let found = chain.unwrap_or_default().iter().find(|der| {
        tether_transport::parse_fingerprint(&tether_transport::fingerprint(der)).ok() == Some(want)
    });
    match found {
        Some(der) => Ok(Some(credential::save_ca(
            dir,
            &credential::der_to_pem(&[der]),
        )?)),
        None => {
            // The transport accepted the pin, so the server proved it; it just
            // did not send the CA itself. The pin keeps anchoring later runs.
            tracing::warn!(target: INSTALL_TARGET, "the pinned CA was not in the presented chain; relying on the pin");
            Ok(None)
        }
    }
}

fn write_files(
    dir: &Path,
    layer: &ConfigLayer,
    response: &EnrollResponse,
    installed_at: OffsetDateTime,
    now: OffsetDateTime,
    server: &Url,
) -> Result<(), Failure> {
    credential::save(dir, &Credential::new(response.credential.clone()))?;
    crate::state::write_atomic(
        &dir.join(CONFIG_FILE),
        crate::config::render_file(layer).as_bytes(),
        0o600,
    )?;
    let state = AgentState {
        agent_id: response.agent_id,
        enrolled_at: now,
        installed_at,
        server: server.to_string(),
        last_successful_contact: None,
        status: Some(response.status),
        policy: Some(response.policy.clone()),
        last_errors: Default::default(),
        debug_until: None,
        contact_version: None,
        later: Default::default(),
    };
    StateStore::new(dir).save(&state)?;
    Ok(())
}

/// Creates the state directory with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        Failure::new(
            ErrorCode::StateDirUnwritable,
            format!("cannot create the state directory {}: {e}", dir.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> EnrollOptions {
        EnrollOptions {
            state_dir: PathBuf::from("/s"),
            server: Url::parse("https://new.example").expect("url"),
            token: "t".into(),
            ca_fingerprint: None,
            ca_file: None,
            extra_ca_file: None,
            name: None,
            kind: None,
            proxy: None,
        }
    }

    #[test]
    fn file_layer_replaces_trust_and_keeps_local_settings() {
        let previous = ConfigLayer {
            server: Some(Url::parse("https://old.example").expect("url")),
            name: Some("kept".into()),
            ca_fingerprint: Some("sha256:00".into()),
            log_keep: Some(3),
            proxy: Some("http://p:1".into()),
            ..Default::default()
        };
        let layer = file_layer(&opts(), Some(previous));
        assert_eq!(
            layer.server.as_ref().map(Url::as_str),
            Some("https://new.example/")
        );
        assert_eq!(layer.name.as_deref(), Some("kept"));
        assert_eq!(
            layer.ca_fingerprint, None,
            "old pin must not survive a new trust choice"
        );
        assert_eq!(
            layer.system_roots,
            Some(true),
            "no pin and no CA file: system roots, said explicitly"
        );
        assert_eq!(layer.log_keep, Some(3));
        assert_eq!(layer.proxy.as_deref(), Some("http://p:1"));

        let mut pinned = opts();
        pinned.ca_fingerprint = Some("sha256:ab".into());
        let layer = file_layer(&pinned, None);
        assert_eq!(layer.system_roots, None);
    }
}
