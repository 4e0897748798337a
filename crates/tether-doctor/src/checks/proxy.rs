//! `proxy`: the CONNECT exchange with the proxy over the connection the tcp
//! check opened: the reply code, on 407 the schemes offered and whether the
//! configured credentials were accepted, a non-HTTP reply, a refusal.

use std::sync::Arc;

use serde_json::json;
use tether_transport::{Answerer, TransportError};
use tether_wire::ErrorCode;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let Some(proxy) = ctx.proxy.clone() else {
        return TaskOutput::gated_by_failures(vec![]);
    };
    let name = proxy.redacted();
    let target = format!("{}:{}", ctx.host, ctx.port);
    let mut r = CheckResult::pass("proxy", "Proxy CONNECT")
        .with("proxy", name.as_str())
        .with("target", target.as_str())
        .with("credentials_configured", proxy.username.is_some());
    let io = ctx.found().tcp.take();
    let (Some(io), Ok(transport)) = (io, ctx.transport()) else {
        let r = r.fail(
            ErrorCode::ProxyUnreachable,
            format!("No connection to the proxy {name} is open."),
        );
        return TaskOutput::gated_by_failures(vec![r]);
    };
    match transport
        .proxy_tunnel(io, &proxy, &ctx.host, ctx.port)
        .await
    {
        Ok((tunnel, reply, took)) => {
            r.set("status", reply.status);
            r.set("reason", reply.reason.as_str());
            if proxy.username.is_some() {
                r.set("credentials_accepted", true);
            }
            r.set("headers", headers_json(&reply.headers));
            ctx.found().tunnel = Some(tunnel);
            TaskOutput::gated_by_failures(vec![r.took(took)])
        }
        Err(e) => {
            r.set("error", e.to_string());
            let code = e.code();
            let problem = match &e {
                TransportError::ProxyAuth {
                    status,
                    offered_schemes,
                    credentials_configured,
                    ..
                } => {
                    r.set("status", *status);
                    r.set("auth_schemes", offered_schemes.clone());
                    r.set("credentials_accepted", false);
                    let offers = if offered_schemes.is_empty() {
                        "offers no scheme".to_owned()
                    } else {
                        format!("offers {}", offered_schemes.join(", "))
                    };
                    let basic = offered_schemes
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case("basic"));
                    if *credentials_configured {
                        if !basic {
                            r = r.with_action(format!(
                                "The proxy does not offer Basic authentication ({offers}); ask the proxy admin to allow Basic for this host, or to exempt {target}."
                            ));
                        }
                        format!(
                            "The proxy {name} rejected the configured credentials ({status}, {offers})."
                        )
                    } else {
                        format!(
                            "The proxy {name} demands authentication ({status}, {offers}) and no credentials are configured."
                        )
                    }
                }
                TransportError::ProxyRefused {
                    status,
                    reason,
                    refusal,
                    ..
                } if matches!(refusal.answered_by, Answerer::NotAProxy { .. }) => {
                    let evidence = match &refusal.answered_by {
                        Answerer::NotAProxy { evidence } => evidence.as_str(),
                        _ => "",
                    };
                    r.set("status", *status);
                    r.set("reason", reason.as_str());
                    r.set("answered_by", "not_a_proxy");
                    r.set("answer_evidence", evidence);
                    r.set("headers", headers_json(&refusal.headers));
                    r.set("body_snippet", super::snippet(&refusal.body, 160));
                    r = r.with_action(format!(
                        "The proxy setting {name} names something that is not an HTTP proxy: fix its host and port in the agent config or HTTPS_PROXY, or remove it if this network needs no proxy."
                    ));
                    format!(
                        "The proxy setting points at {name}, which is not an HTTP proxy: it answered CONNECT with {status} {reason} ({evidence})."
                    )
                }
                TransportError::ProxyRefused {
                    status,
                    reason,
                    refusal,
                    ..
                } => {
                    r.set("status", *status);
                    r.set("reason", reason.as_str());
                    r.set("answered_by", "proxy");
                    if let Answerer::Proxy { evidence } = &refusal.answered_by {
                        r.set("answer_evidence", evidence.as_str());
                    }
                    r.set("headers", headers_json(&refusal.headers));
                    let hint = if *status == 403 {
                        " (a policy block: the proxy answered with a block page instead of a tunnel)"
                    } else {
                        ""
                    };
                    format!(
                        "The proxy {name} refused CONNECT to {target}: {status} {reason}{hint}."
                    )
                }
                TransportError::ProxyBadReply { detail, .. } => {
                    format!(
                        "The proxy {name} answered CONNECT with something that is not HTTP: {detail}."
                    )
                }
                TransportError::ProxyTimeout { elapsed, .. } => {
                    format!(
                        "The proxy {name} accepted the connection but did not answer CONNECT within {} ms.",
                        elapsed.as_millis()
                    )
                }
                other => format!("{other}."),
            };
            TaskOutput::gated_by_failures(vec![r.fail(code, problem)])
        }
    }
}

fn headers_json(headers: &[(String, String)]) -> serde_json::Value {
    // Only headers that identify the proxy; never anything auth-related.
    let keep: Vec<_> = headers
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.to_ascii_lowercase().as_str(),
                "server" | "via" | "x-squid-error" | "proxy-agent" | "content-type"
            )
        })
        .map(|(k, v)| json!({ "name": k, "value": super::snippet(v.as_bytes(), 120) }))
        .collect();
    json!(keep)
}
