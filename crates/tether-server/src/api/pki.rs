//! The built-in CA's revocation routes.
//!
//! Public, unauthenticated, served on the HTTPS listener and on the
//! optional plain-HTTP one (`pki_http_listen`, [`router`]):
//! - `GET /pki/ca.crl`: the intermediate's DER CRL, `application/pkix-crl`;
//! - `POST /pki/ocsp` (body `application/ocsp-request`) and
//!   `GET /pki/ocsp/{base64 request}` (RFC 6960 appendix A.1): a DER
//!   `application/ocsp-response`, always with HTTP 200, also for a request
//!   that cannot be read (`malformedRequest`).
//!
//! Admin: `POST /v1/admin/certs/{fingerprint}/revoke` with
//! `{"reason": "keyCompromise"}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use tether_pki::revoke::{
    CRL_CONTENT_TYPE, CRL_PATH, MAX_OCSP_REQUEST, OCSP_PATH, OCSP_REQUEST_TYPE, OCSP_RESPONSE_TYPE,
};
use tether_wire::{ErrorCode, RevocationReason, RevokeResponse};

use super::error::ApiResult;
use super::extract::{Bearer, json};
use super::{ApiFailure, body};
use crate::service::{Ctx, ServiceError, auth, revocation};

/// The `/pki/…` routes (the CRL and the OCSP responder).
pub fn routes() -> super::Routes {
    super::Routes::default()
        .at(Method::GET, CRL_PATH, crl)
        .at(Method::POST, OCSP_PATH, ocsp_post)
        .at(Method::GET, &format!("{OCSP_PATH}/{{*request}}"), ocsp_get)
}

/// The plain-HTTP listener's router: the `/pki/…` routes and nothing else.
pub fn router(ctx: Ctx) -> Router {
    routes()
        .into_router()
        .fallback(super::error::not_found)
        .method_not_allowed_fallback(super::error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            super::guard::guard,
        ))
        .with_state(ctx)
}

fn service<T>(ctx: &Ctx, r: Result<T, ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

/// `GET /pki/ca.crl`.
pub async fn crl(State(ctx): State<Ctx>) -> ApiResult<Response> {
    let der = service(&ctx, revocation::crl(&ctx).await)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(CRL_CONTENT_TYPE),
            ),
            // Caches may keep it for a minute; revocations show within that.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            ),
        ],
        der,
    )
        .into_response())
}

fn ocsp_reply(der: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(OCSP_RESPONSE_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        der,
    )
        .into_response()
}

/// `POST /pki/ocsp`.
pub async fn ocsp_post(State(ctx): State<Ctx>, request: Request) -> Response {
    let rules = body::Rules {
        types: body::Types::IfGiven(&[OCSP_REQUEST_TYPE]),
        limit: MAX_OCSP_REQUEST as u64,
        timeout: std::time::Duration::from_secs(10),
        subject: "the OCSP request",
        limit_note: String::new(),
        wrong_type: ErrorCode::UnsupportedMediaType,
        unreadable: ErrorCode::MalformedJson,
    };
    match body::read(&ctx, request, &rules).await {
        Ok((_, bytes)) => ocsp_reply(revocation::ocsp(&ctx, &bytes).await),
        Err(refusal) => {
            tracing::debug!(error = %refusal.0.message, "refused an OCSP request body");
            ocsp_reply(revocation::malformed())
        }
    }
}

/// `GET /pki/ocsp/{base64}`: the DER request, base64 then URL-encoded.
pub async fn ocsp_get(
    State(ctx): State<Ctx>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(encoded)) = path else {
        return ocsp_reply(revocation::malformed());
    };
    // Base64 of the largest request accepted, plus room for %-escapes.
    if encoded.len() > MAX_OCSP_REQUEST * 2 {
        return ocsp_reply(revocation::malformed());
    }
    let text = percent_decode(&encoded);
    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(der) => ocsp_reply(revocation::ocsp(&ctx, &der).await),
        Err(_) => ocsp_reply(revocation::malformed()),
    }
}

/// Undoes %XX escapes (a base64 request's `+`, `/` and `=` may be escaped;
/// axum has already decoded the path once, which is harmless to repeat on
/// base64 text). Invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
struct RevokeBody {
    reason: String,
}

/// `POST /v1/admin/certs/{fingerprint}/revoke`.
pub async fn revoke(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<RevokeResponse>> {
    service(&ctx, auth::admin(&ctx, bearer.as_deref()).await)?;
    let raw = path
        .map_err(|e| ApiFailure::new(&ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    let body: RevokeBody = json(&ctx, request).await?;
    let reason = RevocationReason::parse(&body.reason).ok_or_else(|| {
        let shown: String = body.reason.chars().take(40).collect();
        ApiFailure::from_service(&ctx, ServiceError::RevokeReason(shown))
    })?;
    let by = admin_name(&ctx, &bearer).await;
    Ok(Json(service(
        &ctx,
        revocation::revoke(&ctx, &raw, reason, &by).await,
    )?))
}

/// `POST /v1/admin/acme-issuers`: registers an account with an ACME CA.
pub async fn acme_add(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<(StatusCode, Json<tether_wire::AcmeIssuerInfo>)> {
    service(&ctx, auth::admin(&ctx, bearer.as_deref()).await)?;
    let body: tether_wire::AcmeIssuerAdd = json(&ctx, request).await?;
    let added = service(&ctx, crate::service::acme::add(&ctx, body).await)?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// `GET /v1/admin/acme-issuers`.
pub async fn acme_list(
    State(ctx): State<Ctx>,
    bearer: Bearer,
) -> ApiResult<Json<tether_wire::AcmeIssuerList>> {
    service(&ctx, auth::admin(&ctx, bearer.as_deref()).await)?;
    let issuers = service(&ctx, crate::service::acme::list(&ctx).await)?;
    Ok(Json(tether_wire::AcmeIssuerList { issuers }))
}

/// `DELETE /v1/admin/acme-issuers/{name}`.
pub async fn acme_remove(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    service(&ctx, auth::admin(&ctx, bearer.as_deref()).await)?;
    let name = path
        .map_err(|e| ApiFailure::new(&ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    service(&ctx, crate::service::acme::remove(&ctx, &name).await)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The calling admin credential's name, for the record.
pub(super) async fn admin_name(ctx: &Ctx, bearer: &Bearer) -> String {
    let Some(token) = bearer.as_deref() else {
        return "admin".to_owned();
    };
    match ctx
        .store
        .admin_credential_by_hash(&crate::secret::hash(token))
        .await
    {
        Ok(Some(c)) => c.name,
        _ => "admin".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_undone_once() {
        assert_eq!(percent_decode("MEow%2BQ%3D%3D"), "MEow+Q==");
        assert_eq!(percent_decode("a%zz%2"), "a%zz%2");
        assert_eq!(percent_decode("plain/base64=="), "plain/base64==");
    }
}
