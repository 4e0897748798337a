//! The admin audit log (issue #11, docs/audit.md): [`record`] is a
//! middleware on the router that writes one entry for every admin action
//! after the handler answered it, and [`list`] serves
//! `GET /v1/admin/audit`.
//!
//! An action is any request other than GET, HEAD or OPTIONS on a path under
//! `/v1/admin/` (every admin-authenticated mutating route lives there; the
//! CLI and any console reach the server only through them). An entry holds
//! who (the credential's name and id, read before the handler runs so a
//! rotation still names the credential that asked), what (method, route
//! template, concrete path, target), when (the injected clock), from where
//! (`PeerAddr`: the PROXY-protocol address when a trusted balancer sent
//! one) and the outcome (status, and the error code [`super::ApiFailure`]
//! leaves in the reply's extensions). It never reads the body, and never
//! keeps the `Authorization` header or the query. Failing to write an entry
//! is logged and counted (`tether_audit_record_failures`), never the
//! admin's error.

use std::time::Duration;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use tether_store::{AuditFilter, Cursor};
use tether_wire::{AUDIT_PATH_MAX, AuditEntry, ErrorCode, UNAUTHENTICATED};
use time::OffsetDateTime;
use tracing::warn;
use uuid::Uuid;

use super::error::ApiResult;
use super::extract::{Bearer, PeerAddr};
use super::{ApiFailure, paging};
use crate::secret;
use crate::service::{Ctx, auth};

/// Where admin routes live.
const ADMIN_PREFIX: &str = "/v1/admin/";
/// The longest target an entry keeps, in characters.
const TARGET_MAX: usize = 128;
/// The longest `actor` filter accepted, in characters.
const ACTOR_MAX: usize = 128;
/// How long writing an entry may hold the admin's reply.
const RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `method` on `path` is an admin action.
pub fn is_action(method: &Method, path: &str) -> bool {
    path.starts_with(ADMIN_PREFIX)
        && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: runs the request, then records it if it is an action.
pub async fn record(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    if !is_action(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let address = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_canonical().to_string());
    let bearer = bearer_of(&request);
    let actor = who(&ctx, bearer.as_deref()).await;

    let response = next.run(request).await;

    let code = response.extensions().get::<ErrorCode>().copied();
    // Whatever the lookup said, a credential the handler refused is not an
    // actor.
    let actor = match code {
        Some(ErrorCode::AdminCredentialRejected | ErrorCode::AdminCredentialRevoked) => None,
        _ => actor,
    };
    let entry = AuditEntry {
        id: Uuid::new_v4(),
        at: ctx.now(),
        actor: actor
            .as_ref()
            .map_or_else(|| UNAUTHENTICATED.to_owned(), |(name, _)| name.clone()),
        actor_id: actor.map(|(_, id)| id),
        method,
        target: route.as_deref().and_then(|r| target(r, &path)),
        route: route.unwrap_or_else(|| "unmatched".to_owned()),
        path: capped(&path, AUDIT_PATH_MAX),
        address,
        status: response.status().as_u16(),
        code: code.map(|c| c.as_str().to_owned()),
    };
    match tokio::time::timeout(RECORD_TIMEOUT, ctx.store.record_audit(&entry)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            ctx.metrics.audit_failed();
            warn!(%error, method = %entry.method, route = %entry.route, actor = %entry.actor, status = entry.status, "could not record an admin action in the audit log");
        }
        Err(_) => {
            ctx.metrics.audit_failed();
            warn!(method = %entry.method, route = %entry.route, actor = %entry.actor, status = entry.status, "recording an admin action in the audit log timed out");
        }
    }
    response
}

fn bearer_of(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The calling credential's name and id, if it is a working admin
/// credential.
async fn who(ctx: &Ctx, bearer: Option<&str>) -> Option<(String, Uuid)> {
    let token = bearer?;
    if !secret::well_formed(token, secret::ADMIN_PREFIX) {
        return None;
    }
    match ctx
        .store
        .admin_credential_by_hash(&secret::hash(token))
        .await
    {
        Ok(Some(c)) if c.revoked_at.is_none() => Some((c.name, c.id)),
        _ => None,
    }
}

/// `text` cut to `max` characters, ending with `…` when cut.
fn capped(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The concrete value of the route's first parameter.
fn target(route: &str, path: &str) -> Option<String> {
    let mut segments = path.split('/');
    for template in route.split('/') {
        let segment = segments.next()?;
        if template.starts_with("{*") {
            // A catch-all takes the rest of the path.
            let rest: Vec<&str> = std::iter::once(segment).chain(segments).collect();
            return Some(capped(&rest.join("/"), TARGET_MAX));
        }
        if template.starts_with('{') {
            return Some(capped(segment, TARGET_MAX));
        }
    }
    None
}

/// `GET /v1/admin/audit?limit=N&after=CURSOR&actor=NAME&since=WHEN`: newest
/// first, paged.
pub async fn list(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    auth::admin(&ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    let pairs = super::defs::query(&ctx, raw.as_deref(), &["limit", "after", "actor", "since"])?;
    let get = |k: &str| super::defs::param(&pairs, k);
    let (limit, before) = paging::page(&ctx, get("limit"), get("after"))?;
    let actor = get("actor").map(|a| actor(&ctx, a)).transpose()?;
    let since = get("since").map(|s| since(&ctx, s)).transpose()?;
    let filter = AuditFilter { actor, since };
    let rows = ctx
        .store
        .list_audit(&filter, before.as_ref(), limit)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e.into()))?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|e| Cursor { at: e.at, id: e.id });
    Ok(paging::reply(rows, next))
}

fn actor(ctx: &Ctx, text: &str) -> ApiResult<String> {
    if text.is_empty() || text.chars().count() > ACTOR_MAX || text.chars().any(char::is_control) {
        let shown: String = text.chars().take(40).collect();
        return Err(ApiFailure::new(
            ctx,
            ErrorCode::InvalidField,
            format!(
                "query actor={shown:?}: expected an admin credential's name (1 to {ACTOR_MAX} printable characters) or {UNAUTHENTICATED}"
            ),
        ));
    }
    Ok(text.to_owned())
}

/// `since`: an RFC 3339 time, or a duration back from the server's clock.
fn since(ctx: &Ctx, text: &str) -> ApiResult<OffsetDateTime> {
    let now = ctx.now();
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    ago(text)
        .and_then(|d| now.checked_sub(d))
        .ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            ApiFailure::new(
                ctx,
                ErrorCode::InvalidField,
                format!(
                    "query since={shown:?}: expected an RFC 3339 time (2026-12-08T03:00:00Z) or a duration back from now (90s, 30m, 2h, 7d; at most 36500d)"
                ),
            )
        })
}

/// `90s`, `30m`, `2h`, `7d`, at most 100 years.
fn ago(text: &str) -> Option<time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs <= 36_500 * 86_400).then(|| time::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_non_reads_under_admin() {
        assert!(is_action(&Method::POST, "/v1/admin/tokens"));
        assert!(is_action(&Method::DELETE, "/v1/admin/agents/x"));
        assert!(is_action(&Method::PUT, "/v1/admin/policies/p"));
        assert!(!is_action(&Method::GET, "/v1/admin/agents"));
        assert!(!is_action(&Method::HEAD, "/v1/admin/agents"));
        assert!(!is_action(&Method::POST, "/v1/agent/checkin"));
        assert!(!is_action(&Method::POST, "/v1/enroll"));
    }

    #[test]
    fn the_target_is_the_first_parameter() {
        assert_eq!(
            target(
                "/v1/admin/agents/{id}/approve",
                "/v1/admin/agents/abc/approve"
            )
            .as_deref(),
            Some("abc")
        );
        assert_eq!(target("/v1/admin/tokens", "/v1/admin/tokens"), None);
        assert_eq!(
            target("/defs/{*path}", "/defs/a/b/c").as_deref(),
            Some("a/b/c")
        );
        let long = format!("/v1/admin/agents/{}/approve", "x".repeat(1000));
        let t = target("/v1/admin/agents/{id}/approve", &long).expect("a target");
        assert_eq!(t.chars().count(), TARGET_MAX);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn paths_are_capped() {
        assert_eq!(capped("/v1/admin/x", 256), "/v1/admin/x");
        let c = capped(&"é".repeat(300), AUDIT_PATH_MAX);
        assert_eq!(c.chars().count(), AUDIT_PATH_MAX);
    }

    #[test]
    fn durations_back_from_now() {
        assert_eq!(ago("90s"), Some(time::Duration::seconds(90)));
        assert_eq!(ago("2h"), Some(time::Duration::hours(2)));
        assert_eq!(ago("7d"), Some(time::Duration::days(7)));
        for bad in [
            "",
            "h",
            "2",
            "2w",
            "-2h",
            "2h3m",
            "99999999999999999d",
            "36501d",
            "２h",
        ] {
            assert_eq!(ago(bad), None, "{bad:?}");
        }
    }
}
