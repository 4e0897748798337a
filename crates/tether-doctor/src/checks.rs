//! The checks and the plan that orders them:
//!
//! ```text
//! config → dns → tcp → [proxy] → tls → http → auth → host.version
//!                                   │       └─(any outcome)→ clock
//!                                   └→ revocation
//! host, target:*, logs: independent
//! ```
//!
//! The definitions path (`defs`) runs the same dns, tcp, proxy, tls,
//! revocation and http checks once per update server, on a [`Ctx`] of its
//! own (the server's URL and the updater's transport), with ids prefixed
//! `defs.N.`, then its TUF check; `defs.state` reads the agent's own
//! definitions state once every server was probed.

pub(crate) mod auth;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod defs;
pub(crate) mod dns;
pub(crate) mod host;
pub(crate) mod http;
pub(crate) mod logs;
pub(crate) mod offline;
pub(crate) mod proxy;
pub(crate) mod revocation;
pub(crate) mod targets;
pub(crate) mod tcp;
pub(crate) mod tls;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tether_transport::{BoxedIo, ProxyConfig, Transport, TransportError};
use tether_wire::ErrorCode;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::engine::{self, Task, TaskFuture, TaskOutput};
use crate::report::{Report, SCHEMA_VERSION, Verdict};
use crate::{DoctorInput, World};

/// What every check shares: the input, the world, the deadline, and what
/// earlier checks found.
pub(crate) struct Ctx {
    pub(crate) input: DoctorInput,
    pub(crate) world: World,
    pub(crate) deadline: Instant,
    /// The server's host (no brackets) and port.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The proxy the agent would use for the server, if any.
    pub(crate) proxy: Option<ProxyConfig>,
    /// Why a transport cannot be built from the input, if it cannot.
    pub(crate) transport_error: Option<String>,
    /// Which path this context checks.
    pub(crate) route: Route,
    /// The prefix of this path's check ids: empty for the control plane,
    /// `defs.N.` for the N-th update server.
    pub(crate) prefix: String,
    found: Mutex<Found>,
    /// What the definitions checks share across paths.
    pub(crate) defs: Arc<Mutex<defs::DefsFound>>,
}

/// The path a [`Ctx`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The agent's path to its control plane (check-ins).
    ControlPlane,
    /// The updater's path to an update server (1-based, in fallback order).
    UpdateServer(usize),
}

/// What earlier checks hand to later ones.
#[derive(Default)]
pub(crate) struct Found {
    /// The addresses of the first hop (the proxy's, or the server's).
    pub(crate) addrs: Vec<IpAddr>,
    /// An open TCP connection to the first hop.
    pub(crate) tcp: Option<BoxedIo>,
    /// An open tunnel through the proxy to the server.
    pub(crate) tunnel: Option<BoxedIo>,
    /// The chain the server presented, end-entity first.
    pub(crate) chain: Vec<Vec<u8>>,
    /// The server's time (from /health or the Date header) and the local
    /// time at which it was read.
    pub(crate) server_time: Option<(OffsetDateTime, OffsetDateTime)>,
    /// The server's version, from /health.
    pub(crate) server_version: Option<String>,
    /// The agent version the server considers current (from the check-in).
    pub(crate) current_agent_version: Option<String>,
}

impl Ctx {
    /// A context for the path to `input.server` with `input.transport`.
    fn new(
        input: DoctorInput,
        world: World,
        deadline: Instant,
        route: Route,
        defs: Arc<Mutex<defs::DefsFound>>,
    ) -> Ctx {
        let host = match input.server.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => String::new(),
        };
        let port = input.server.port_or_known_default().unwrap_or(443);
        let (proxy, transport_error) = match Transport::new(input.transport.clone()) {
            Ok(t) => (t.proxy_for(&host).cloned(), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let prefix = match route {
            Route::ControlPlane => String::new(),
            Route::UpdateServer(n) => format!("{}{n}.", defs::DEFS_PREFIX),
        };
        Ctx {
            input,
            world,
            deadline,
            host,
            port,
            proxy,
            transport_error,
            route,
            prefix,
            found: Mutex::new(Found::default()),
            defs,
        }
    }

    /// This path's id for a check: `tls`, or `defs.2.tls`.
    pub(crate) fn id(&self, check: &str) -> String {
        format!("{}{check}", self.prefix)
    }

    /// What earlier checks found.
    pub(crate) fn found(&self) -> MutexGuard<'_, Found> {
        self.found.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time left before the global deadline, less a margin for the
    /// scheduler to collect results.
    pub(crate) fn remaining(&self) -> Duration {
        let margin = self.input.deadline / 20;
        self.deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(margin)
            .max(Duration::from_millis(1))
    }

    /// A limit for one step: the configured one, cut to the time left.
    pub(crate) fn limit(&self, configured: Duration) -> Duration {
        configured.min(self.remaining())
    }

    /// A transport built like the agent's, with every phase limit cut to
    /// the time left, on the injected world.
    pub(crate) fn transport(&self) -> Result<Transport, TransportError> {
        let mut config = self.input.transport.clone();
        let t = &mut config.timeouts;
        t.dns = self.limit(t.dns);
        t.connect = self.limit(t.connect);
        t.proxy = self.limit(t.proxy);
        t.tls = self.limit(t.tls);
        t.http = self.limit(t.http);
        Ok(Transport::new(config)?
            .with_resolver(self.world.resolver.clone())
            .with_dialer(self.world.dialer.clone())
            .with_clock(self.world.clock.clone()))
    }

    /// The first hop's host and port: the proxy's, or the server's.
    pub(crate) fn first_hop(&self) -> (String, u16) {
        match &self.proxy {
            Some(p) => {
                let host = match p.url.host() {
                    Some(url::Host::Ipv6(ip)) => ip.to_string(),
                    Some(h) => h.to_string(),
                    None => String::new(),
                };
                (host, p.url.port_or_known_default().unwrap_or(80))
            }
            None => (self.host.clone(), self.port),
        }
    }
}

/// The server's URL with any user info removed, for reports.
fn redacted_server(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Builds a task from an async check over the shared context.
fn task<F, Fut>(ctx: &Arc<Ctx>, id: &str, title: &str, timeout_code: ErrorCode, check: F) -> Task
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = TaskOutput> + Send + 'static,
{
    let prefix = ctx.prefix.clone();
    let title = match ctx.route {
        Route::ControlPlane => title.to_owned(),
        Route::UpdateServer(n) => format!("Update server {n}: {title}"),
    };
    let ctx = ctx.clone();
    Task::new(ctx.id(id), title, timeout_code, move || -> TaskFuture {
        Box::pin(async move {
            let out = check(ctx).await;
            if prefix.is_empty() {
                return out;
            }
            // The checks name themselves and each other without the path;
            // on an update server's path every id gets its prefix.
            let results = out
                .results
                .into_iter()
                .map(|mut r| {
                    r.id = format!("{prefix}{}", r.id);
                    if let crate::report::Status::Skipped { blocked_by } = &mut r.status {
                        *blocked_by = format!("{prefix}{blocked_by}");
                    }
                    r
                })
                .collect();
            TaskOutput {
                results,
                blocked_by: out.blocked_by.map(|b| format!("{prefix}{b}")),
            }
        })
    })
}

pub(crate) async fn run(input: DoctorInput, world: World) -> Report {
    let started_at = world.clock.now();
    let started = Instant::now();
    let deadline = started + input.deadline;
    let server = redacted_server(&input.server);
    let shared = Arc::new(Mutex::new(defs::DefsFound::default()));
    let ctx = Arc::new(Ctx::new(
        input,
        world,
        deadline,
        Route::ControlPlane,
        shared.clone(),
    ));
    let mut tasks = plan(&ctx);
    tasks.extend(defs::plan(&ctx, &shared));
    if ctx.input.offline_bundle.is_some() {
        tasks.push(task(
            &ctx,
            "offline",
            "Offline bundle",
            ErrorCode::OfflineBundleAltered,
            offline::check,
        ));
    }
    let results = engine::run(tasks, deadline).await;
    let update_servers = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .servers
        .clone();
    let verdict = Verdict::from_checks_with_defs(&results, &server, &update_servers);
    Report {
        schema_version: SCHEMA_VERSION,
        server,
        started_at,
        duration: started.elapsed(),
        deadline: ctx.input.deadline,
        checks: results,
        verdict,
    }
}

/// The checks of one run, with their dependencies.
fn plan(ctx: &Arc<Ctx>) -> Vec<Task> {
    let mut tasks = vec![
        task(
            ctx,
            "config",
            "Configuration",
            ErrorCode::ConfigInvalid,
            config::check,
        ),
        task(ctx, "dns", "DNS", ErrorCode::DnsTimeout, dns::check).after("config"),
        task(ctx, "tcp", "TCP", ErrorCode::ConnectTimeout, tcp::check).after("dns"),
    ];
    let tls_after = if ctx.proxy.is_some() {
        tasks.push(
            task(
                ctx,
                "proxy",
                "Proxy CONNECT",
                ErrorCode::ProxyTimeout,
                proxy::check,
            )
            .after("tcp"),
        );
        "proxy"
    } else {
        "tcp"
    };
    tasks.extend([
        task(ctx, "tls", "TLS", ErrorCode::TlsHandshakeFailed, tls::check).after(tls_after),
        task(
            ctx,
            "http",
            "HTTP /health",
            ErrorCode::HttpTimeout,
            http::check,
        )
        .after("tls"),
        task(
            ctx,
            "auth",
            "Credential",
            ErrorCode::HttpTimeout,
            auth::check,
        )
        .after("http"),
        task(
            ctx,
            "clock",
            "Clock",
            ErrorCode::NtpUnreachable,
            clock::check,
        )
        .after_any_outcome_of("http"),
        task(
            ctx,
            "revocation",
            "Revocation",
            ErrorCode::RevocationUnreachable,
            revocation::check,
        )
        .after("tls"),
        task(ctx, "host", "Host", ErrorCode::DiskNearlyFull, host::check),
        task(
            ctx,
            "host.version",
            "Agent version",
            ErrorCode::AgentVersionOutdated,
            host::version,
        )
        .after_any_outcome_of("http")
        .after_any_outcome_of("auth"),
    ]);
    for (host, port) in ctx.input.targets.clone() {
        let id = targets::id(&host, port);
        tasks.push(task(
            ctx,
            &id,
            &format!("Target {host}:{port}"),
            ErrorCode::ConnectTimeout,
            move |ctx| targets::check(ctx, host, port),
        ));
    }
    tasks.push(task(
        ctx,
        "logs",
        "Agent logs",
        ErrorCode::Internal,
        logs::check,
    ));
    tasks
}

/// A summary of a phase's timings, for evidence.
pub(crate) fn timings_json(t: &tether_transport::PhaseTimings) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| Value::from(crate::report::ms(d)));
    serde_json::json!({
        "dns_ms": ms(t.dns),
        "connect_ms": ms(t.connect),
        "proxy_ms": ms(t.proxy),
        "tls_ms": ms(t.tls),
        "http_ms": ms(t.http),
    })
}

/// Shortens outside text for evidence: at most `max` characters, control
/// characters replaced.
pub(crate) fn snippet(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != ' ' { ' ' } else { c })
        .collect();
    let squeezed = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if squeezed.chars().count() > max {
        let cut: String = squeezed.chars().take(max).collect();
        format!("{cut}…")
    } else {
        squeezed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_bounded_and_single_line() {
        assert_eq!(
            snippet(b"<html>\r\n  <title>Log in</title>", 100),
            "<html> <title>Log in</title>"
        );
        assert_eq!(snippet(b"abcdef", 3), "abc…");
        assert_eq!(snippet(b"\xff\x00ok", 10), "\u{fffd} ok");
    }

    #[test]
    fn server_urls_lose_their_user_info() {
        let u = url::Url::parse("https://u:secret@s.example:8443/x").expect("literal");
        assert_eq!(redacted_server(&u), "https://s.example:8443/x");
    }
}
