//! `dns.system` and `dns.ns:IP`: the first hop's name through the agent's
//! resolver, through each name server of resolv.conf asked directly, and in
//! /etc/hosts; NXDOMAIN, SERVFAIL, timeout, no address and disagreement are
//! told apart.

mod files;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tether_transport::{DnsErrorKind, Resolve, SystemResolver, TransportError};
use tether_wire::ErrorCode;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Ctx;

/// One direct query's answer and how long it took.
type Answer = (Result<Vec<IpAddr>, DnsErrorKind>, std::time::Duration);
use crate::engine::TaskOutput;
use crate::report::CheckResult;

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let (host, _) = ctx.first_hop();
    let via_proxy = ctx.proxy.as_ref().map(|p| p.redacted());
    let what = match &via_proxy {
        Some(p) => format!("the proxy {p}"),
        None => "the server".to_owned(),
    };
    let started = Instant::now();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        ctx.found().addrs = vec![ip];
        let r = CheckResult::pass("dns.system", "DNS (system resolver)")
            .with("host", host.as_str())
            .with("ip_literal", true)
            .with("addresses", vec![ip.to_string()]);
        return TaskOutput::gated_by_failures(vec![r]);
    }

    let resolv_conf = std::fs::read_to_string(&ctx.world.resolv_conf).unwrap_or_default();
    let hosts_text = std::fs::read_to_string(&ctx.world.hosts_file).unwrap_or_default();
    let servers = files::name_servers(&resolv_conf);
    let hosts = files::hosts_entries(&hosts_text, &host);

    // Every name server is asked at once, alongside the system resolver.
    let mut direct = JoinSet::new();
    for (i, ns) in servers.iter().enumerate() {
        let limit = ctx.limit(ctx.input.transport.timeouts.dns);
        let resolver = SystemResolver::with_name_servers(
            vec![SocketAddr::new(*ns, ctx.world.dns_port)],
            limit,
        );
        let host = host.clone();
        direct.spawn(async move {
            let started = Instant::now();
            // hickory may retry over TCP after a UDP timeout: hold it to
            // the limit.
            let answer = match tokio::time::timeout(limit, resolver.resolve(&host)).await {
                Ok(a) => a.map_err(|e| e.kind),
                Err(_) => Err(DnsErrorKind::Timeout),
            };
            (i, answer, started.elapsed())
        });
    }
    let system = match ctx.transport() {
        Ok(t) => t.resolve(&host).await.map(|(a, _)| a),
        Err(e) => Err(e),
    };
    let system_took = started.elapsed();
    let mut answers: Vec<Option<Answer>> = vec![None; servers.len()];
    while let Some(joined) = direct.join_next().await {
        if let Ok((i, answer, took)) = joined {
            answers[i] = Some((answer, took));
        }
    }

    let mut sys = CheckResult::pass("dns.system", "DNS (system resolver)")
        .with("host", host.as_str())
        .with("resolv_conf", ctx.world.resolv_conf.display().to_string())
        .with(
            "name_servers",
            servers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .with(
            "hosts_file_entries",
            hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .took(system_took);
    let system_ok = system.is_ok();
    match &system {
        Ok(addrs) => {
            sys.set(
                "addresses",
                addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            );
            ctx.found().addrs = addrs.clone();
            let dns_sets: Vec<BTreeSet<IpAddr>> = answers
                .iter()
                .flatten()
                .filter_map(|(a, _)| a.as_ref().ok())
                .map(|a| a.iter().copied().collect())
                .collect();
            let system_set: BTreeSet<IpAddr> = addrs.iter().copied().collect();
            if !hosts.is_empty()
                && dns_sets
                    .iter()
                    .any(|s| s.is_disjoint(&hosts.iter().copied().collect()))
            {
                sys = sys.warn(
                    ErrorCode::DnsDisagreement,
                    format!(
                        "/etc/hosts pins {host} to {} while DNS answers {}: the agent uses /etc/hosts.",
                        join(&hosts),
                        join(&dns_sets[0].iter().copied().collect::<Vec<_>>())
                    ),
                );
            } else if hosts.is_empty() && dns_sets.iter().any(|s| *s != system_set) {
                sys = sys.warn(
                    ErrorCode::DnsDisagreement,
                    format!(
                        "The name servers of resolv.conf disagree about {host}: the system resolver answers {}, a direct query answers {}.",
                        join(addrs),
                        join(&dns_sets.iter().find(|s| **s != system_set).map(|s| s.iter().copied().collect::<Vec<_>>()).unwrap_or_default())
                    ),
                );
            }
        }
        Err(e) => {
            let code = e.code();
            let problem = match e {
                TransportError::Dns { kind, .. } => {
                    format!("Resolving {what}'s name {host} failed: {kind}.")
                }
                other => format!("Resolving {what}'s name {host} failed: {other}."),
            };
            sys.set("error", e.to_string());
            sys = if via_proxy.is_some() {
                sys.fail(ErrorCode::ProxyUnreachable, problem)
            } else {
                sys.fail(code, problem)
            };
        }
    }

    let mut results = vec![sys];
    for (ns, answer) in servers.iter().zip(answers) {
        let id = format!("dns.ns:{ns}");
        let mut r = CheckResult::pass(id, format!("DNS (name server {ns})"))
            .with(
                "server",
                SocketAddr::new(*ns, ctx.world.dns_port).to_string(),
            )
            .with("host", host.as_str());
        match answer {
            None => {
                r = r.warn(
                    ErrorCode::DnsFailed,
                    format!("The query to {ns} did not complete."),
                );
            }
            Some((Ok(addrs), took)) => {
                r.set(
                    "addresses",
                    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                );
                r = r.took(took);
            }
            Some((Err(kind), took)) => {
                r.set("error", kind.to_string());
                let code = dns_code(&kind);
                let problem = format!("The name server {ns} answers {host} with: {kind}.");
                // When the agent's own resolver succeeds, one broken server
                // is only a warning.
                r = if system_ok {
                    r.warn(code, problem)
                } else {
                    r.fail(code, problem)
                }
                .took(took);
            }
        }
        results.push(r);
    }
    let blocked_by = (!system_ok).then(|| "dns.system".to_owned());
    TaskOutput {
        results,
        blocked_by,
    }
}

fn dns_code(kind: &DnsErrorKind) -> ErrorCode {
    match kind {
        DnsErrorKind::NxDomain => ErrorCode::DnsNxDomain,
        DnsErrorKind::ServFail => ErrorCode::DnsServFail,
        DnsErrorKind::Timeout => ErrorCode::DnsTimeout,
        DnsErrorKind::NoAddress => ErrorCode::DnsNoAddress,
        _ => ErrorCode::DnsFailed,
    }
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
