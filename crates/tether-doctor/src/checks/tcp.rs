//! `tcp:ADDR`: every resolved address of the first hop (the server, or the
//! proxy when one is used), tried at once; refused, timeout (silently
//! dropped: a firewall) and unreachable are told apart.

use std::net::SocketAddr;
use std::sync::Arc;

use tether_transport::{ConnectErrorKind, TransportError};
use tether_wire::ErrorCode;
use tokio::task::JoinSet;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let (_, port) = ctx.first_hop();
    let addrs: Vec<SocketAddr> = ctx
        .found()
        .addrs
        .iter()
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    let transport = match ctx.transport() {
        Ok(t) => t,
        Err(e) => {
            let r = CheckResult::pass("tcp", "TCP").fail(e.code(), format!("{e}."));
            return TaskOutput::gated_by_failures(vec![r]);
        }
    };
    let mut set = JoinSet::new();
    for (i, addr) in addrs.iter().copied().enumerate() {
        let t = transport.clone();
        set.spawn(async move { (i, t.tcp_connect(addr).await) });
    }
    let mut outcomes: Vec<Option<Result<_, TransportError>>> = addrs.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, outcome)) = joined {
            outcomes[i] = Some(outcome);
        }
    }
    let any_connected = outcomes.iter().any(|o| matches!(o, Some(Ok(_))));
    let proxy = ctx.proxy.as_ref().map(|p| p.redacted());
    let mut results = Vec::new();
    let mut first_failure: Option<(u8, String)> = None;
    for (addr, outcome) in addrs.iter().zip(outcomes) {
        let id = format!("tcp:{addr}");
        let mut r = CheckResult::pass(id.clone(), format!("TCP {addr}"))
            .with("address", addr.to_string())
            .with("family", if addr.is_ipv4() { "ipv4" } else { "ipv6" });
        if let Some(p) = &proxy {
            r.set("proxy", p.as_str());
        }
        match outcome {
            Some(Ok((io, took))) => {
                r.set("connected", true);
                r = r.took(took);
                let mut found = ctx.found();
                if found.tcp.is_none() {
                    found.tcp = Some(io);
                    r.set("used", true);
                }
            }
            Some(Err(TransportError::Connect { kind, elapsed, .. })) => {
                r.set("connected", false);
                r.set("error", kind.to_string());
                let (code, how) = classify(&kind);
                let target = match &proxy {
                    Some(p) => format!("the proxy {p} at {addr}"),
                    None => addr.to_string(),
                };
                let problem = format!("TCP to {target} {how} (after {} ms).", elapsed.as_millis());
                let code = if proxy.is_some() {
                    ErrorCode::ProxyUnreachable
                } else {
                    code
                };
                // Another address works: the agent falls back to it.
                r = if any_connected {
                    r.warn(code, problem)
                } else {
                    r.fail(code, problem)
                }
                .took(elapsed);
                let salience = match kind {
                    ConnectErrorKind::Refused => 3,
                    ConnectErrorKind::Timeout => 2,
                    ConnectErrorKind::Unreachable => 0,
                    _ => 1,
                };
                if first_failure.as_ref().is_none_or(|(s, _)| salience > *s) {
                    first_failure = Some((salience, id.clone()));
                }
            }
            Some(Err(other)) => {
                r = r.fail(other.code(), format!("{other}."));
                first_failure.get_or_insert((0, id.clone()));
            }
            None => {
                r = r.fail(
                    ErrorCode::ConnectFailed,
                    format!("The attempt to {addr} did not complete."),
                );
                first_failure.get_or_insert((0, id.clone()));
            }
        }
        results.push(r);
    }
    if results.is_empty() {
        let r = CheckResult::pass("tcp", "TCP")
            .fail(ErrorCode::ConnectFailed, "No address to connect to.");
        return TaskOutput::gated_by_failures(vec![r]);
    }
    // The most telling failure blocks the checks downstream, as in the
    // transport's own report.
    let blocked_by = if any_connected {
        None
    } else {
        first_failure.map(|(_, id)| id)
    };
    TaskOutput {
        results,
        blocked_by,
    }
}

/// The catalog code and a phrase for a connect failure.
pub(crate) fn classify(kind: &ConnectErrorKind) -> (ErrorCode, String) {
    match kind {
        ConnectErrorKind::Refused => (
            ErrorCode::ConnectRefused,
            "was refused: nothing listens there".to_owned(),
        ),
        ConnectErrorKind::Timeout => (
            ErrorCode::ConnectTimeout,
            "timed out: packets are silently dropped, usually by a firewall".to_owned(),
        ),
        ConnectErrorKind::Unreachable => (
            ErrorCode::ConnectUnreachable,
            "failed: the network or host is unreachable".to_owned(),
        ),
        other => (ErrorCode::ConnectFailed, format!("failed: {other}")),
    }
}
