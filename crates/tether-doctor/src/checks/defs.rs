//! The definitions path: the agent's updater's way to each update server,
//! and the agent's own definitions state.
//!
//! ```text
//! config → defs.N.dns → defs.N.tcp → [defs.N.proxy] → defs.N.tls → defs.N.http → defs.N.tuf
//!                                                          └→ defs.N.revocation
//! defs.reference (the control plane's /defs/, when no server is it)
//! defs.state after every defs.N.tuf (any outcome)
//! ```
//!
//! Each update server gets a [`Ctx`] of its own (its URL and the updater's
//! transport), and the control plane's dns, tcp, proxy, tls, revocation and
//! http checks run on it unchanged: one implementation of each phase. The
//! TUF check is `tether_defs::client::probe_server`, the updater's own
//! verification from the pinned root, into a scratch datastore.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tether_defs::client::{ServerProbe, UpdateError};
use tether_wire::ErrorCode;

use super::{Ctx, Route, dns, http, proxy, revocation, task, tcp, tls};
use crate::engine::{Task, TaskOutput};
use crate::report::{CheckResult, rfc3339};

/// The prefix of every definitions check id.
pub const DEFS_PREFIX: &str = "defs.";

/// The id of a check on the `n`-th update server's path (1-based, in the
/// policy's fallback order): `defs_check_id(2, "tls")` is `defs.2.tls`.
pub fn defs_check_id(n: usize, check: &str) -> String {
    format!("{DEFS_PREFIX}{n}.{check}")
}

/// The reference probe's id: the control plane's own `/defs/`.
const REFERENCE: &str = "defs.reference";
/// The agent's own definitions state.
const STATE: &str = "defs.state";

/// What the definitions checks hand to each other.
#[derive(Debug, Default)]
pub(crate) struct DefsFound {
    /// The update servers' URLs, in fallback order (for the verdict).
    pub(crate) servers: Vec<String>,
    /// The control plane's `/defs/` metadata, when it could be read.
    pub(crate) reference: Option<ServerProbe>,
    /// Each update server's metadata, by its 1-based index.
    pub(crate) probes: BTreeMap<usize, ServerProbe>,
    /// The index of the update server that is the control plane, if any.
    pub(crate) reference_index: Option<usize>,
}

fn lock(shared: &Mutex<DefsFound>) -> std::sync::MutexGuard<'_, DefsFound> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The definitions path's tasks: none when the agent subscribes to nothing.
pub(crate) fn plan(cp: &Arc<Ctx>, shared: &Arc<Mutex<DefsFound>>) -> Vec<Task> {
    let Some(defs) = cp.input.defs.clone() else {
        return Vec::new();
    };
    if defs.channels.is_empty() || defs.servers.is_empty() {
        return Vec::new();
    }
    lock(shared).servers = defs.servers.iter().map(super::redacted_server).collect();
    let path_ctx = |server: &url::Url, route: Route| {
        let mut input = cp.input.clone();
        input.server = server.clone();
        input.transport = defs.transport.clone();
        Arc::new(Ctx::new(
            input,
            cp.world.clone(),
            cp.deadline,
            route,
            shared.clone(),
        ))
    };
    let mut tasks = Vec::new();
    let reference_index = defs
        .servers
        .iter()
        .position(|s| *s == defs.control_plane)
        .map(|i| i + 1);
    lock(shared).reference_index = reference_index;
    if reference_index.is_none() {
        let ctx = path_ctx(&defs.control_plane, Route::ControlPlane);
        tasks.push(task(
            &ctx,
            REFERENCE,
            "Definitions on the control plane",
            ErrorCode::HttpTimeout,
            reference,
        ));
    }
    let mut tufs = Vec::new();
    for (i, server) in defs.servers.iter().enumerate() {
        let ctx = path_ctx(server, Route::UpdateServer(i + 1));
        let id = |c: &str| ctx.id(c);
        tasks.push(task(&ctx, "dns", "DNS", ErrorCode::DnsTimeout, dns::check).after("config"));
        tasks.push(
            task(&ctx, "tcp", "TCP", ErrorCode::ConnectTimeout, tcp::check).after(&id("dns")),
        );
        let tls_after = if ctx.proxy.is_some() {
            tasks.push(
                task(
                    &ctx,
                    "proxy",
                    "Proxy CONNECT",
                    ErrorCode::ProxyTimeout,
                    proxy::check,
                )
                .after(&id("tcp")),
            );
            id("proxy")
        } else {
            id("tcp")
        };
        tasks.extend([
            task(
                &ctx,
                "tls",
                "TLS",
                ErrorCode::TlsHandshakeFailed,
                tls::check,
            )
            .after(&tls_after),
            task(
                &ctx,
                "revocation",
                "Revocation",
                ErrorCode::RevocationUnreachable,
                revocation::check,
            )
            .after(&id("tls")),
            task(
                &ctx,
                "http",
                "HTTP metadata",
                ErrorCode::HttpTimeout,
                http::check,
            )
            .after(&id("tls")),
        ]);
        let mut tuf = task(
            &ctx,
            "tuf",
            "TUF timestamp",
            ErrorCode::HttpTimeout,
            move |ctx| tuf(ctx, i + 1),
        )
        .after(&id("http"));
        match reference_index {
            // The control plane's probe is the reference for the others.
            Some(k) if k != i + 1 => {
                tuf = tuf.after_any_outcome_of(&defs_check_id(k, "tuf"));
            }
            Some(_) => {}
            None => tuf = tuf.after_any_outcome_of(REFERENCE),
        }
        tufs.push(id("tuf"));
        tasks.push(tuf);
    }
    let mut state = task(
        cp,
        STATE,
        "Definitions state",
        ErrorCode::Internal,
        state_check,
    );
    for t in &tufs {
        state = state.after_any_outcome_of(t);
    }
    if reference_index.is_none() {
        state = state.after_any_outcome_of(REFERENCE);
    }
    tasks.push(state);
    tasks
}

/// Probes a server's metadata through this path's transport, within the
/// time left.
async fn probe(ctx: &Ctx) -> Result<ServerProbe, UpdateError> {
    let Some(defs) = &ctx.input.defs else {
        return Err(UpdateError::NoServer);
    };
    let transport = ctx.transport().map_err(|e| UpdateError::Copied {
        code: e.code(),
        message: e.to_string(),
        transient: false,
        next_server: false,
    })?;
    let limit = ctx.remaining();
    match tokio::time::timeout(
        limit,
        tether_defs::client::probe_server(
            &defs.state_dir,
            &ctx.input.server,
            Arc::new(transport),
            ctx.world.clock.clone(),
        ),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(UpdateError::Copied {
            code: ErrorCode::HttpTimeout,
            message: format!(
                "the metadata did not arrive within {} ms",
                limit.as_millis()
            ),
            transient: true,
            next_server: true,
        }),
    }
}

fn probe_json(p: &ServerProbe) -> Value {
    json!({
        "root_version": p.root_version,
        "timestamp_version": p.timestamp_version,
        "timestamp_expires": rfc3339(p.timestamp_expires),
        "snapshot_version": p.snapshot_version,
        "channels": p.channels,
    })
}

/// `defs.reference`: the control plane's own `/defs/` metadata, the newest
/// there is, to tell a mirror that is behind. Information only: the agent
/// does not download from it when the policy names other servers.
async fn reference(ctx: Arc<Ctx>) -> TaskOutput {
    let url = super::redacted_server(&ctx.input.server);
    let mut r = CheckResult::pass("defs.reference", "Definitions on the control plane")
        .with("url", url.as_str());
    match probe(&ctx).await {
        Ok(p) => {
            for (k, v) in probe_json(&p).as_object().into_iter().flatten() {
                r.set(k, v.clone());
            }
            lock(&ctx.defs).reference = Some(p);
        }
        Err(e) => {
            r.set("error", e.to_string());
            r = r.info(
                e.code(),
                format!(
                    "The control plane's definitions at {url} could not be read ({e}), so no mirror can be compared with its newest version."
                ),
            );
        }
    }
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}

/// `defs.N.tuf`: the server's timestamp, verified from the agent's pinned
/// root; its version and expiry; frozen, behind and unverifiable told
/// apart.
async fn tuf(ctx: Arc<Ctx>, n: usize) -> TaskOutput {
    let url = super::redacted_server(&ctx.input.server);
    let mut r = CheckResult::pass("tuf", "TUF timestamp").with("url", url.as_str());
    let now = ctx.world.clock.now();
    r.set("clock", rfc3339(now));
    let p = match probe(&ctx).await {
        Ok(p) => p,
        Err(e) => {
            r.set("error", e.to_string());
            let code = match e.code() {
                ErrorCode::DefsSignatureInvalid => ErrorCode::DefsMirrorUnverified,
                ErrorCode::DefsRollbackRefused => ErrorCode::DefsMirrorBehind,
                other => other,
            };
            let problem = match code {
                ErrorCode::DefsMirrorUnverified => format!(
                    "The metadata of {url} does not verify against this agent's pinned root chain: {e}"
                ),
                _ => format!("Reading the signed metadata of {url} failed: {e}"),
            };
            return TaskOutput::gated_by_failures(vec![r.fail(code, problem)]);
        }
    };
    for (k, v) in probe_json(&p).as_object().into_iter().flatten() {
        r.set(k, v.clone());
    }
    let trusted = ctx
        .input
        .defs
        .as_ref()
        .and_then(|d| tether_defs::client::trusted_versions(&d.state_dir));
    if let Some((ts, snap)) = trusted {
        r.set("agent_trusted_timestamp_version", ts);
        r.set("agent_trusted_snapshot_version", snap);
    }
    let reference = {
        let mut found = lock(&ctx.defs);
        found.probes.insert(n, p.clone());
        let from_servers = found.reference_index.and_then(|k| found.probes.get(&k));
        found.reference.clone().or_else(|| from_servers.cloned())
    };
    let is_reference = ctx
        .input
        .defs
        .as_ref()
        .is_some_and(|d| d.control_plane == ctx.input.server);
    if let Some(refp) = reference.as_ref().filter(|_| !is_reference) {
        r.set("control_plane_snapshot_version", refp.snapshot_version);
        r.set("control_plane_timestamp_version", refp.timestamp_version);
        r.set("control_plane_channels", json!(refp.channels));
    }
    if let Some((role, expires)) = p.expired {
        let r = r.fail(
            ErrorCode::DefsMirrorFrozen,
            format!(
                "The update server {url} is frozen: its signed {role} expired at {} and this host's clock reads {} (timestamp version {}); the agent refuses its metadata.",
                rfc3339(expires),
                rfc3339(now),
                p.timestamp_version
            ),
        );
        return TaskOutput::gated_by_failures(vec![r]);
    }
    if let Some((ts, snap)) = trusted
        && (p.timestamp_version < ts || p.snapshot_version < snap)
    {
        let r = r.fail(
            ErrorCode::DefsMirrorBehind,
            format!(
                "The update server {url} offers timestamp version {} and snapshot version {}, older than the {ts} and {snap} this agent already trusts: the updater refuses it as a rollback.",
                p.timestamp_version, p.snapshot_version
            ),
        );
        return TaskOutput::gated_by_failures(vec![r]);
    }
    if let Some(refp) = reference.as_ref().filter(|_| !is_reference)
        && p.snapshot_version < refp.snapshot_version
    {
        let behind: Vec<String> = refp
            .channels
            .iter()
            .filter_map(|(ch, newest)| {
                let here = p.channels.get(ch).copied();
                (here < Some(*newest)).then(|| match here {
                    Some(v) => format!("{ch} v{v} (the control plane has v{newest})"),
                    None => format!("no {ch} (the control plane has v{newest})"),
                })
            })
            .collect();
        let detail = if behind.is_empty() {
            String::new()
        } else {
            format!(": it offers {}", behind.join(", "))
        };
        let r = r.warn(
            ErrorCode::DefsMirrorBehind,
            format!(
                "The update server {url} is behind the control plane: snapshot version {} against {}{detail}.",
                p.snapshot_version, refp.snapshot_version
            ),
        );
        return TaskOutput::gated_by_failures(vec![r]);
    }
    TaskOutput::gated_by_failures(vec![r])
}

/// `defs.state`: each subscribed channel as the agent's own files say it
/// is: installed version, versions behind the newest signed one, the last
/// error with its code and action, a cool-down, a partial download.
async fn state_check(ctx: Arc<Ctx>) -> TaskOutput {
    let mut r = CheckResult::pass(STATE, "Definitions state");
    let Some(defs) = ctx.input.defs.clone() else {
        return TaskOutput::gated_by_failures(vec![r]);
    };
    let now = ctx.world.clock.now();
    let (newest, target_channels, source) = {
        let found = lock(&ctx.defs);
        // The first server that answered is the one the updater uses.
        match found.probes.iter().next() {
            Some((n, p)) => (
                p.channels.clone(),
                p.target_channels.clone(),
                found.servers.get(n.saturating_sub(1)).cloned(),
            ),
            None => match &found.reference {
                Some(p) => (
                    p.channels.clone(),
                    p.target_channels.clone(),
                    Some("the control plane".to_owned()),
                ),
                None => Default::default(),
            },
        }
    };
    let partials = tether_defs::client::partial_downloads(&defs.state_dir);
    let cooldown = tether_defs::client::cooldown_remaining(&defs.state_dir, now);
    if let Some(cd) = cooldown {
        let until = now + cd;
        r.set("cooldown_until", rfc3339(until));
    }
    if let Some(s) = &source {
        r.set("newest_from", s.as_str());
    }
    let mut channels = Vec::new();
    let mut worst: Option<(String, tether_wire::LastError, u32)> = None;
    for st in tether_defs::client::channel_states(&defs.state_dir, &defs.channels) {
        let newest_v = newest.get(&st.channel).copied();
        let behind = match (st.version, newest_v) {
            (Some(have), Some(n)) => Some(n.saturating_sub(have)),
            (None, Some(n)) => Some(n),
            _ => None,
        };
        let partial: Vec<Value> = partials
            .iter()
            .filter(|(sha, _)| target_channels.get(sha) == Some(&st.channel))
            .map(|(sha, bytes)| json!({ "sha256": sha, "bytes": bytes }))
            .collect();
        channels.push(json!({
            "channel": st.channel,
            "installed_version": st.version,
            "installed_at": st.updated_at.map(rfc3339),
            "newest_version": newest_v,
            "versions_behind": behind,
            "last_attempt_at": st.last_attempt_at.map(rfc3339),
            "consecutive_failures": st.consecutive_failures,
            "server": st.server,
            "via_proxy": st.via_proxy,
            "last_error": st.last_error.as_ref().map(|e| json!({
                "code": e.code.as_str(),
                "message": crate::checks::snippet(e.message.as_bytes(), 300),
                "action": e.code.action(),
                "at": rfc3339(e.at),
            })),
            "partial_downloads": partial,
        }));
        if let Some(e) = &st.last_error
            && worst.is_none()
        {
            worst = Some((st.channel.clone(), e.clone(), st.consecutive_failures));
        }
    }
    // Partial files no signed target claims (another channel's, or stale).
    let unclaimed: Vec<Value> = partials
        .iter()
        .filter(|(sha, _)| !target_channels.contains_key(sha))
        .map(|(sha, bytes)| json!({ "sha256": sha, "bytes": bytes }))
        .collect();
    if !unclaimed.is_empty() {
        r.set("partial_downloads_unattributed", unclaimed);
    }
    r.set("channels", channels);
    if let Some((channel, e, failures)) = worst {
        let times = if failures > 1 {
            format!(" ({failures} times in a row)")
        } else {
            String::new()
        };
        let wait = match cooldown {
            Some(cd) => format!(
                "; the update server asked it to wait until {}",
                rfc3339(now + cd)
            ),
            None => String::new(),
        };
        let message = crate::checks::snippet(e.message.as_bytes(), 300);
        r = r.warn(
            e.code,
            format!(
                "The agent's last update of {channel} failed at {}{times}: {} {message}{wait}.",
                rfc3339(e.at),
                e.code.as_str()
            ),
        );
    }
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}
