//! `auth`: the agent's credential is accepted. It asks the server's
//! read-only probe (`GET /v1/agent/probe`), which records nothing: unlike a
//! check-in it neither hands out (and so loses) queued actions nor replaces
//! what the server knows of the agent's last errors and definitions. A
//! server too old to have the probe is reported as such (a warning naming
//! TETHER-E2205); the doctor never falls back to a check-in. Before
//! enrollment, it reports "not enrolled" and what the server last said
//! about the token, if known.

use std::sync::Arc;

use bytes::Bytes;
use tether_wire::{AgentProbe, ApiError, ErrorCode};

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::{CheckResult, rfc3339};

/// The probe's path on the control plane.
pub const PROBE_PATH: &str = "/v1/agent/probe";

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let mut r = CheckResult::pass("auth", "Credential").with("enrolled", ctx.input.enrolled);
    let credential = match (&ctx.input.credential, ctx.input.enrolled) {
        (Some(c), true) => c.clone(),
        (_, true) => {
            let r = r.fail(
                ErrorCode::NotEnrolled,
                "The agent is marked enrolled but has no credential.",
            );
            return TaskOutput::gated_by_failures(vec![r]);
        }
        (_, false) => return TaskOutput::gated_by_failures(vec![not_enrolled(&ctx, r)]),
    };
    if let Some(id) = ctx.input.agent_id {
        r.set("agent_id", id.to_string());
    }
    r.set(
        "side_effect",
        "none: a read-only probe (GET /v1/agent/probe) that records nothing",
    );
    let sent = async {
        let url = ctx
            .input
            .server
            .join(PROBE_PATH)
            .map_err(|e| e.to_string())?;
        let req = http::Request::get(PROBE_PATH)
            .header(http::header::AUTHORIZATION, format!("Bearer {credential}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| e.to_string())?;
        let transport = ctx.transport().map_err(|e| e.to_string())?;
        transport.request(&url, req).await.map_err(|e| {
            let code = e.code();
            format!("{code}|{e}")
        })
    };
    let resp = match sent.await {
        Ok(resp) => resp,
        Err(msg) => {
            let (code, text) = match msg.split_once('|') {
                Some((c, t)) => (
                    ErrorCode::parse(c).unwrap_or(ErrorCode::HttpProtocol),
                    t.to_owned(),
                ),
                None => (ErrorCode::Internal, msg),
            };
            return TaskOutput::gated_by_failures(vec![
                r.fail(code, format!("The credential probe failed: {text}.")),
            ]);
        }
    };
    r.set("status", resp.status);
    if (200..300).contains(&resp.status) {
        match serde_json::from_slice::<AgentProbe>(&resp.body) {
            Ok(reply) => {
                r.set("agent_status", reply.status.as_str());
                r.set("server_time", rfc3339(reply.server_time));
                if let Some(v) = &reply.current_agent_version {
                    r.set("current_agent_version", v.as_str());
                }
                ctx.found().current_agent_version = reply.current_agent_version;
                TaskOutput::gated_by_failures(vec![r])
            }
            Err(e) => TaskOutput::gated_by_failures(vec![r.fail(
                ErrorCode::HttpProtocol,
                format!("The probe reply does not match the API schema: {e}."),
            )]),
        }
    } else {
        let problem;
        let code;
        match serde_json::from_slice::<ApiError>(&resp.body) {
            // An older server answers its own 404 for a route it lacks.
            Ok(err) if err.code == ErrorCode::NotFound => {
                r.set("error_code", err.code.as_str());
                let r = r.warn(
                    ErrorCode::CredentialProbeUnsupported,
                    "The server is older than this agent and has no read-only credential probe, so the credential was not tested; no check-in was sent in its place.",
                );
                return TaskOutput::gated_by_failures(vec![r]);
            }
            Ok(err) => {
                code = err.code;
                problem = match err.code {
                    ErrorCode::AgentCredentialRejected => {
                        "The server rejected this agent's credential: the agent was removed or re-registered elsewhere.".to_owned()
                    }
                    _ => format!("The probe was refused ({}): {}", resp.status, err.message),
                };
                r.set("error_code", err.code.as_str());
            }
            Err(_) => {
                code = ErrorCode::HttpUnexpectedStatus;
                problem = format!(
                    "The probe was answered with HTTP {} and a body that is not a Tether error.",
                    resp.status
                );
            }
        }
        let r = if code == ErrorCode::AgentPendingApproval {
            r.warn(code, problem)
        } else {
            r.fail(code, problem)
        };
        TaskOutput::gated_by_failures(vec![r])
    }
}

fn not_enrolled(ctx: &Ctx, r: CheckResult) -> CheckResult {
    let r = r.with("token_given", ctx.input.token.is_some());
    match (&ctx.input.token, &ctx.input.last_token_error) {
        (Some(_), Some(err)) => {
            let mut r = r
                .with("last_token_error", err.code.as_str())
                .with("server_time", rfc3339(err.server_time));
            if let Some(nb) = err.not_before {
                r.set("token_not_before", rfc3339(nb));
            }
            if let Some(exp) = err.expires_at {
                r.set("token_expires_at", rfc3339(exp));
            }
            // Tie the window to this host's clock, measured by the http
            // check this one runs after.
            let skew = ctx.found().server_time.map(|(server, local)| local - server);
            match super::clock::window_phrase(err, skew) {
                Some((text, code)) => r.fail(
                    code,
                    format!("The server refuses the token until its window is right. {text}"),
                ),
                None => r.fail(err.code, format!("The server last refused the token: {}", err.message)),
            }
        }
        (Some(_), None) => r
            .with("note", "not enrolled yet; the token's window is known only once the server has answered an enrollment")
            ,
        // A pre-install check: not being enrolled yet is what is expected,
        // so it is information, and the verdict is about the path.
        (None, _) => r.info(ErrorCode::NotEnrolled, "This host is not enrolled and no token was given."),
    }
}
