//! `http`: `GET /health` over the agent's full path; tells the Tether
//! server's answer from an intermediary's: a balancer whose backend is
//! down, a gateway that rate-limits or demands a client certificate, a
//! captive portal or a proxy's block page.
//!
//! On an update server's path the same check asks for the definitions
//! tree's `metadata/timestamp.json` instead (an update server has no
//! `/health`), and wants TUF timestamp metadata back.

mod answer;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tether_wire::ErrorCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::{Ctx, Route, snippet, timings_json};
use crate::engine::TaskOutput;
use crate::report::CheckResult;

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    if let Route::UpdateServer(_) = ctx.route {
        return metadata(ctx).await;
    }
    let r = CheckResult::pass("http", "HTTP /health");
    let (mut r, resp, received, _) = match get(&ctx, r, "/health", "health URL", "/health").await {
        Ok(got) => got,
        Err(out) => return out,
    };
    r.set("status", resp.status);
    r.set("timings", timings_json(&resp.timings));
    let content_type = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.set("content_type", content_type.as_str());
    let date = resp
        .headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    if let Some(d) = date {
        r.set("date_header", crate::report::rfc3339(d));
    }
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let tether = body
        .as_ref()
        .and_then(|b| b.get("service"))
        .and_then(Value::as_str)
        == Some("tether");
    // A degraded control plane answers 503 with its own health body: that is
    // the server answering, and the warning below says what is wrong.
    let degraded = tether
        && body
            .as_ref()
            .and_then(|b| b.get("status"))
            .and_then(Value::as_str)
            == Some("degraded");
    if !tether || (!(200..300).contains(&resp.status) && !degraded) {
        let location = resp
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| snippet(l.as_bytes(), 200));
        let title = html_title(&resp.body);
        if let Some(l) = &location {
            r.set("location", l.as_str());
        }
        if let Some(t) = &title {
            r.set("html_title", t.as_str());
        }
        r.set("body_snippet", snippet(&resp.body, 160));
        let what = match (&location, &title) {
            (Some(l), _) => format!("a redirect ({}) to {l}", resp.status),
            (None, Some(t)) => format!("an HTML page ({}) titled \"{t}\"", resp.status),
            _ => format!(
                "HTTP {} with content type {}",
                resp.status,
                if content_type.is_empty() {
                    "(none)"
                } else {
                    &content_type
                }
            ),
        };
        if let Some(fault) = tether_error(body.as_ref(), resp.status) {
            return TaskOutput::gated_by_failures(vec![fault.apply(r)]);
        }
        let answer = answer::classify(resp.status, &resp.headers, &resp.body, received);
        let fault = intermediary(&answer, "GET /health", &what, resp.status);
        r.set("answered_by", answer_name(&answer));
        return TaskOutput::gated_by_failures(vec![fault.apply(r)]);
    }
    let body = body.unwrap_or(Value::Null);
    let server_time = body
        .get("server_time")
        .and_then(Value::as_str)
        .and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
    {
        let mut found = ctx.found();
        found.server_version = body
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(t) = server_time.or(date) {
            found.server_time = Some((t, received));
        }
    }
    for key in ["version", "status", "server_time"] {
        if let Some(v) = body.get(key) {
            r.set(
                &format!("server_{key}").replace("server_server_", "server_"),
                v.clone(),
            );
        }
    }
    if body.get("status").and_then(Value::as_str) == Some("degraded") {
        let detail = body
            .pointer("/store/error")
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        r = r.warn(ErrorCode::StoreUnavailable, format!("The server answers but reports itself degraded: its store is unavailable ({detail})."));
    }
    TaskOutput::gated_by_failures(vec![r])
}

/// `GET metadata/timestamp.json` from an update server, over the updater's
/// path: TUF timestamp metadata is the answer wanted; anything else is
/// named as the health check names it (an intermediary, a portal), or as
/// an incomplete tree.
async fn metadata(ctx: Arc<Ctx>) -> TaskOutput {
    let file = "metadata/timestamp.json";
    let r = CheckResult::pass("http", format!("HTTP {file}"));
    let (mut r, resp, received, shown) =
        match get(&ctx, r, file, "update server's metadata URL", "").await {
            Ok(got) => got,
            Err(out) => return out,
        };
    r.set("status", resp.status);
    r.set("timings", timings_json(&resp.timings));
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let is_timestamp = body
        .as_ref()
        .and_then(|b| b.pointer("/signed/_type"))
        .and_then(Value::as_str)
        == Some("timestamp");
    if resp.status == 200 && is_timestamp {
        return TaskOutput::gated_by_failures(vec![r]);
    }
    if let Some(t) = html_title(&resp.body) {
        r.set("html_title", t.as_str());
    }
    r.set("body_snippet", snippet(&resp.body, 160));
    if let Some(fault) = tether_error(body.as_ref(), resp.status) {
        return TaskOutput::gated_by_failures(vec![fault.apply(r)]);
    }
    if matches!(resp.status, 404 | 410) {
        let r = r.fail(
            ErrorCode::DefsServerError,
            format!(
                "The update server answered GET {shown} with {}: the URL is not a definitions tree, or the mirror is incomplete.",
                resp.status
            ),
        );
        return TaskOutput::gated_by_failures(vec![r]);
    }
    let what = match html_title(&resp.body) {
        Some(t) => format!("an HTML page ({}) titled \"{t}\"", resp.status),
        None => format!("HTTP {} that is not TUF timestamp metadata", resp.status),
    };
    let answer = answer::classify(resp.status, &resp.headers, &resp.body, received);
    r.set("answered_by", answer_name(&answer));
    let fault = match answer {
        answer::Answer::NotTether if resp.status != 200 => Fault {
            code: ErrorCode::DefsServerError,
            problem: format!("The update server answered GET {shown} with {what}."),
            action: None,
        },
        other => intermediary(&other, &format!("GET {shown}"), &what, resp.status),
    };
    TaskOutput::gated_by_failures(vec![fault.apply(r)])
}

/// A failure with its code, problem and, when the catalog's is not
/// specific enough, an action.
struct Fault {
    code: ErrorCode,
    problem: String,
    action: Option<String>,
}

impl Fault {
    fn apply(self, r: CheckResult) -> CheckResult {
        let r = r.fail(self.code, self.problem);
        match self.action {
            Some(a) => r.with_action(a),
            None => r,
        }
    }
}

/// The Tether server's own error body (`{"code":"TETHER-E…"}`): the server
/// answered, and said what is wrong.
fn tether_error(body: Option<&Value>, status: u16) -> Option<Fault> {
    let body = body?;
    let code = ErrorCode::parse(body.get("code")?.as_str()?)?;
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|m| snippet(m.as_bytes(), 200))
        .unwrap_or_default();
    Some(Fault {
        code,
        problem: format!(
            "The Tether server answered GET /health with {status} {}: {message}.",
            code.as_str()
        ),
        action: None,
    })
}

/// The fault an intermediary's answer stands for.
fn intermediary(answer: &answer::Answer, request: &str, what: &str, status: u16) -> Fault {
    use answer::Answer;
    let who = |by: &Option<String>, default: &str| match by {
        Some(b) => format!("{default} ({b})"),
        None => default.to_owned(),
    };
    match answer {
        Answer::BackendDown { by } => Fault {
            code: ErrorCode::HttpBackendDown,
            problem: format!(
                "{request} was answered {status} by {} in front of the server, not by the server: the Tether server behind it is down or out of its reach ({what}).",
                who(by, "a load balancer or reverse proxy")
            ),
            action: None,
        },
        Answer::RateLimited { by, retry_after } => {
            let wait = match retry_after {
                Some(d) => format!("{} seconds", d.as_secs()),
                None => "a while (it gave no Retry-After)".to_owned(),
            };
            Fault {
                code: ErrorCode::HttpGatewayRateLimited,
                problem: format!(
                    "{request} was answered 429 by {}, not by the server: it asks this client to slow down for {wait}.",
                    who(by, "a gateway in front of the server")
                ),
                action: Some(format!(
                    "Slow down: wait {wait} before trying again; if agents keep meeting this limit, ask the gateway's admin to raise it for the agents' path."
                )),
            }
        }
        Answer::ClientCertRequired { by } => Fault {
            code: ErrorCode::HttpClientCertRequired,
            problem: format!(
                "{request} was refused by {}: a client certificate is required, and agents do not present one ({what}).",
                who(by, "a gateway in front of the server")
            ),
            action: None,
        },
        Answer::NotTether => Fault {
            code: ErrorCode::HttpNotTether,
            problem: format!(
                "{request} was answered by something other than a Tether server: {what}; a captive portal or a proxy's block page is in the path."
            ),
            action: None,
        },
    }
}

fn answer_name(answer: &answer::Answer) -> &'static str {
    match answer {
        answer::Answer::BackendDown { .. } => "balancer_backend_down",
        answer::Answer::RateLimited { .. } => "gateway_rate_limit",
        answer::Answer::ClientCertRequired { .. } => "gateway_client_certificate",
        answer::Answer::NotTether => "not_tether",
    }
}

/// Parses an HTTP `Date` header (IMF-fixdate, which RFC 2822 covers).
pub(crate) fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let normalized = s.trim().replace(" GMT", " +0000");
    OffsetDateTime::parse(&normalized, &Rfc2822).ok()
}

/// The `<title>` of an HTML body, if any.
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = lower[start..].find('>')? + start + 1;
    let close = lower[open_end..].find("</title>")? + open_end;
    let t = snippet(text[open_end..close].as_bytes(), 120);
    (!t.is_empty()).then_some(t)
}

/// `GET path` on the checked server over its full path. It records `url`,
/// `status` and `timings`; a URL that cannot be made or a transport failure
/// ends the check with its own code. `shown` is how the problem names the
/// request (`/health`), empty for the redacted URL itself, which is
/// returned with the answer.
async fn get(
    ctx: &Ctx,
    mut r: CheckResult,
    path: &str,
    url_name: &str,
    shown: &str,
) -> Result<
    (
        CheckResult,
        tether_transport::Response,
        OffsetDateTime,
        String,
    ),
    TaskOutput,
> {
    let url = match ctx.input.server.join(path) {
        Ok(u) => u,
        Err(e) => {
            let r = r.fail(
                ErrorCode::ConfigInvalid,
                format!("The {url_name} cannot be built: {e}."),
            );
            return Err(TaskOutput::gated_by_failures(vec![r]));
        }
    };
    let redacted = super::redacted_server(&url);
    let shown = if shown.is_empty() {
        redacted.as_str()
    } else {
        shown
    };
    r.set("url", redacted.as_str());
    let transport = match ctx.transport() {
        Ok(t) => t,
        Err(e) => {
            return Err(TaskOutput::gated_by_failures(vec![
                r.fail(e.code(), format!("{e}.")),
            ]));
        }
    };
    let req = match http::Request::get("/").body(Bytes::new()) {
        Ok(req) => req,
        Err(e) => {
            return Err(TaskOutput::gated_by_failures(vec![
                r.fail(ErrorCode::Internal, format!("{e}.")),
            ]));
        }
    };
    let resp = match transport.request(&url, req).await {
        Ok(resp) => resp,
        Err(e) => {
            r.set("error", e.to_string());
            let problem = format!("GET {shown} failed in phase {}: {e}.", e.phase());
            return Err(TaskOutput::gated_by_failures(vec![
                r.fail(e.code(), problem),
            ]));
        }
    };
    let received = ctx.world.clock.now();
    Ok((r, resp, received, redacted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let d = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("IMF-fixdate");
        assert_eq!(d, time::macros::datetime!(1994-11-06 08:49:37 UTC));
        assert!(parse_http_date("yesterday").is_none());
        assert!(parse_http_date("").is_none());
    }

    #[test]
    fn html_titles_are_found_case_insensitively() {
        assert_eq!(
            html_title(b"<HTML><Title>Guest Wi-Fi\n login</TITLE>").as_deref(),
            Some("Guest Wi-Fi login")
        );
        assert_eq!(html_title(b"{\"service\":\"x\"}"), None);
        assert_eq!(html_title(b"<title>"), None);
        assert_eq!(
            html_title("<title>é</title>".as_bytes()).as_deref(),
            Some("é")
        );
    }
}
