//! `target:HOST:PORT`: a target this host must reach (directly, not through
//! the proxy): TCP with the same refused / timeout / unreachable split as
//! `tcp`, then a protocol probe for well-known ports.

mod probe;

use std::net::SocketAddr;
use std::sync::Arc;

use tether_transport::{TlsErrorKind, TransportError};
use tether_wire::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;
use probe::Probe;

/// The stable id of a target check.
pub(crate) fn id(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("target:[{host}]:{port}")
    } else {
        format!("target:{host}:{port}")
    }
}

pub(crate) async fn check(ctx: Arc<Ctx>, host: String, port: u16) -> TaskOutput {
    let probe = Probe::for_port(port);
    let mut r = CheckResult::pass(id(&host, port), format!("Target {host}:{port}"))
        .with("host", host.as_str())
        .with("port", port)
        .with("probe", probe.as_str());
    let transport = match ctx.transport() {
        Ok(t) => t,
        Err(e) => {
            return TaskOutput {
                results: vec![r.fail(e.code(), format!("{e}."))],
                blocked_by: None,
            };
        }
    };
    let addrs = match transport.resolve(&host).await {
        Ok((a, _)) => a,
        Err(e) => {
            let r = r.fail(
                e.code(),
                format!("The target {host} cannot be resolved: {e}."),
            );
            return TaskOutput {
                results: vec![r],
                blocked_by: None,
            };
        }
    };
    r.set(
        "addresses",
        addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let mut io = None;
    let mut failures = Vec::new();
    for ip in &addrs {
        let addr = SocketAddr::new(*ip, port);
        match transport.tcp_connect(addr).await {
            Ok((conn, took)) => {
                r.set("connected", addr.to_string());
                r.set("connect_ms", crate::report::ms(took));
                io = Some(conn);
                break;
            }
            Err(TransportError::Connect { kind, .. }) => failures.push((addr, kind)),
            Err(e) => {
                return TaskOutput {
                    results: vec![r.fail(e.code(), format!("{e}."))],
                    blocked_by: None,
                };
            }
        }
    }
    let Some(mut io) = io else {
        let (addr, kind) = failures
            .iter()
            .max_by_key(|(_, k)| match k {
                tether_transport::ConnectErrorKind::Refused => 3,
                tether_transport::ConnectErrorKind::Timeout => 2,
                tether_transport::ConnectErrorKind::Unreachable => 0,
                _ => 1,
            })
            .cloned()
            .unwrap_or_else(|| {
                (
                    SocketAddr::from(([0, 0, 0, 0], port)),
                    tether_transport::ConnectErrorKind::Other("no address".into()),
                )
            });
        let (code, how) = super::tcp::classify(&kind);
        r.set("error", kind.to_string());
        let r = r.fail(
            code,
            format!("TCP to the target {host}:{port} ({addr}) {how}."),
        );
        return TaskOutput {
            results: vec![r],
            blocked_by: None,
        };
    };

    let limit = ctx.limit(ctx.input.target_timeout);
    let mismatch = |r: CheckResult, what: String| {
        r.fail(
            ErrorCode::TargetProtocolMismatch,
            format!("The target {host}:{port} accepts TCP but {what}."),
        )
    };
    let r = match probe {
        Probe::None => r,
        Probe::Ssh => match read_some(&mut io, limit).await {
            Ok(b) if probe::is_ssh_banner(&b) => r.with("banner", super::snippet(&b, 80)),
            Ok(b) => {
                let r = r.with("banner", super::snippet(&b, 80));
                mismatch(r, "sends no SSH banner".into())
            }
            Err(e) => mismatch(r, format!("sends no SSH banner ({e})")),
        },
        Probe::Http => {
            let sent = io
                .write_all(&probe::http_request(&host))
                .await
                .map_err(|e| e.to_string());
            match (sent, read_some(&mut io, limit).await) {
                (Ok(()), Ok(b)) => match probe::http_status(&b) {
                    Some(status) => r.with("http_status", status),
                    None => mismatch(
                        r.with("reply", super::snippet(&b, 80)),
                        "does not answer HTTP".into(),
                    ),
                },
                (_, Err(e)) | (Err(e), _) => mismatch(r, format!("does not answer HTTP ({e})")),
            }
        }
        Probe::Ldap => {
            let sent = io
                .write_all(probe::LDAP_ROOT_DSE)
                .await
                .map_err(|e| e.to_string());
            match (sent, read_some(&mut io, limit).await) {
                (Ok(()), Ok(b)) => match probe::ldap_reply(&b) {
                    Some(op) => r.with("ldap_op", op),
                    None => mismatch(
                        r.with("reply", super::snippet(&b, 80)),
                        "does not answer LDAP".into(),
                    ),
                },
                (_, Err(e)) | (Err(e), _) => mismatch(r, format!("does not answer LDAP ({e})")),
            }
        }
        Probe::Tls => match transport.tls_handshake(io, &host).await {
            Ok((_, info, _)) => r
                .with("tls", info.protocol.as_str())
                .with("chain", super::tls::chain_json(&info.peer_chain_der)),
            // A certificate came back, so the port speaks TLS; whether this
            // host trusts it is the target's business, not the agent's.
            Err(TransportError::Tls { kind, chain, .. }) if !chain.is_empty() => r
                .with("tls", "handshake reached certificate verification")
                .with("verification", kind.to_string())
                .with("chain", super::tls::chain_json(&chain)),
            Err(TransportError::Tls {
                kind: TlsErrorKind::Timeout { .. },
                ..
            }) => mismatch(r, "does not answer a TLS handshake in time".into()),
            Err(e) => mismatch(r, format!("does not speak TLS ({e})")),
        },
    };
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}

/// Reads what the peer sends first (up to 4 KiB), within `limit`.
async fn read_some(
    io: &mut tether_transport::BoxedIo,
    limit: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(limit, io.read(&mut buf)).await {
        Err(_) => Err(format!("nothing within {} ms", limit.as_millis())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(0)) => Err("the connection was closed".to_owned()),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
    }
}
