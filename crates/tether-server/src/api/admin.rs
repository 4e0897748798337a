//! Admin routes: tokens, agents, policies. Every handler checks the admin
//! credential first.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tether_store::AgentFilter;
use tether_wire::{
    ActionInfo, ActionKind, AdminTokenInfo, AgentDetail, AgentStatus, AgentSummary, BundleInfo,
    CertDetail, CertInfo, CreateAdminTokenRequest, CreateTokenRequest, CreatedAdminToken,
    CreatedToken, ErrorCode, Policy, PolicyUpdate, TokenInfo,
};
use uuid::Uuid;

use super::error::ApiResult;
use super::extract::{Bearer, json};
use super::{ApiFailure, paging};
use crate::service::{Ctx, actions, admin_tokens, agents, auth, bundles, certs, policies, tokens};

async fn admin(ctx: &Ctx, bearer: &Bearer) -> ApiResult<()> {
    auth::admin(ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(ctx, e))
}

fn service<T>(ctx: &Ctx, r: Result<T, crate::service::ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

/// Parses a UUID path segment: 400 `InvalidId` naming what was sent.
pub fn uuid(ctx: &Ctx, path: Result<Path<String>, PathRejection>) -> ApiResult<Uuid> {
    let raw = path
        .map_err(|e| ApiFailure::new(ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    Uuid::parse_str(&raw).map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        ApiFailure::new(
            ctx,
            ErrorCode::InvalidId,
            format!("{shown:?} is not a UUID; expected e.g. 7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e"),
        )
    })
}

pub async fn create_token(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<Json<CreatedToken>> {
    admin(&ctx, &bearer).await?;
    let body: CreateTokenRequest = json(&ctx, request).await?;
    Ok(Json(service(&ctx, tokens::create(&ctx, body).await)?))
}

/// `GET /v1/admin/tokens?limit=N&after=CURSOR`, paged.
pub async fn list_tokens(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let (limit, after) = page_only(&ctx, raw.as_deref())?;
    let (rows, next): (Vec<TokenInfo>, _) = service(&ctx, tokens::list(&ctx, after, limit).await)?;
    Ok(paging::reply(rows, next))
}

/// Reads a query of `limit` and `after` only.
fn page_only(ctx: &Ctx, raw: Option<&str>) -> ApiResult<(u32, Option<tether_store::Cursor>)> {
    let pairs = super::defs::query(ctx, raw, &["limit", "after"])?;
    let get = |k: &str| super::defs::param(&pairs, k);
    paging::page(ctx, get("limit"), get("after"))
}

/// `POST /v1/admin/admin-tokens`.
pub async fn create_admin_token(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<(StatusCode, Json<CreatedAdminToken>)> {
    admin(&ctx, &bearer).await?;
    let body: CreateAdminTokenRequest = json(&ctx, request).await?;
    let created = service(&ctx, admin_tokens::create(&ctx, body).await)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/admin/admin-tokens?limit=N&after=CURSOR`, paged.
pub async fn list_admin_tokens(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let (limit, after) = page_only(&ctx, raw.as_deref())?;
    let (rows, next): (Vec<AdminTokenInfo>, _) =
        service(&ctx, admin_tokens::list(&ctx, after, limit).await)?;
    Ok(paging::reply(rows, next))
}

/// `POST /v1/admin/admin-tokens/{id}/revoke`.
pub async fn revoke_admin_token(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AdminTokenInfo>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, admin_tokens::revoke(&ctx, id).await)?))
}

/// `POST /v1/admin/admin-tokens/{id}/rotate`.
pub async fn rotate_admin_token(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<CreatedAdminToken>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, admin_tokens::rotate(&ctx, id).await)?))
}

pub async fn revoke_token(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TokenInfo>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, tokens::revoke(&ctx, id).await)?))
}

/// `GET /metrics`: Prometheus's text exposition format, for an admin token.
pub async fn metrics(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let text = service(&ctx, ctx.metrics.render(&ctx).await)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// `GET /v1/admin/agents?status=S&group=G&limit=N&after=CURSOR`, paged:
/// any other parameter is refused rather than ignored.
pub async fn list_agents(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let pairs = super::defs::query(
        &ctx,
        query.as_deref(),
        &["status", "group", "limit", "after"],
    )?;
    let get = |k: &str| super::defs::param(&pairs, k);
    let status = get("status")
        .map(|v| {
            v.parse::<AgentStatus>().map_err(|_| {
                let shown: String = v.chars().take(40).collect();
                ApiFailure::new(
                    &ctx,
                    ErrorCode::InvalidField,
                    format!(
                        "query status={shown:?}: expected pending, active, inactive or stopped"
                    ),
                )
            })
        })
        .transpose()?;
    let (limit, after) = paging::page(&ctx, get("limit"), get("after"))?;
    let filter = AgentFilter {
        status,
        group: get("group").map(str::to_owned),
    };
    let (rows, next): (Vec<AgentSummary>, _) =
        service(&ctx, agents::list(&ctx, &filter, after, limit).await)?;
    Ok(paging::reply(rows, next))
}

pub async fn agent_detail(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentDetail>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, agents::detail(&ctx, id).await)?))
}

/// `GET /v1/admin/certs`: the inventory, oldest first, paged.
pub async fn list_certs(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let pairs = super::defs::query(
        &ctx,
        query.as_deref(),
        &["expiring", "verdict", "limit", "after"],
    )?;
    let get = |k: &str| super::defs::param(&pairs, k);
    let filter = service(&ctx, certs::filter(&ctx, get("expiring"), get("verdict")))?;
    let (limit, after) = paging::page(&ctx, get("limit"), get("after"))?;
    let (rows, next): (Vec<CertInfo>, _) =
        service(&ctx, certs::list(&ctx, &filter, after, limit).await)?;
    Ok(paging::reply(rows, next))
}

/// `GET /v1/admin/certs/{fingerprint}`.
pub async fn cert_detail(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<CertDetail>> {
    admin(&ctx, &bearer).await?;
    let raw = path
        .map_err(|e| ApiFailure::new(&ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    Ok(Json(service(&ctx, certs::show(&ctx, &raw).await)?))
}

/// `GET /v1/admin/certs/{fingerprint}/history`: issuance, deploys and
/// locations of one certificate.
pub async fn cert_history(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<tether_wire::CertHistory>> {
    admin(&ctx, &bearer).await?;
    let raw = path
        .map_err(|e| ApiFailure::new(&ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    Ok(Json(service(
        &ctx,
        crate::service::issuance::history(&ctx, &raw).await,
    )?))
}

pub async fn approve_agent(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentSummary>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, agents::approve(&ctx, id).await)?))
}

pub async fn remove_agent(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    service(&ctx, agents::remove(&ctx, id).await)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/agents/{id}/actions` with an [`ActionKind`] body, e.g.
/// `{"type":"doctor"}`.
pub async fn queue_action(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<(StatusCode, Json<ActionInfo>)> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let kind: ActionKind = json(&ctx, request).await?;
    let action = service(&ctx, actions::queue(&ctx, id, kind).await)?;
    Ok((StatusCode::CREATED, Json(action)))
}

/// `POST /v1/admin/groups/{group}/actions` with an [`ActionKind`] body:
/// queues it for every agent of the group.
pub async fn queue_group_action(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<Vec<ActionInfo>>> {
    admin(&ctx, &bearer).await?;
    let group = path
        .map_err(|e| {
            ApiFailure::new(
                &ctx,
                ErrorCode::InvalidField,
                format!("unreadable group: {e}"),
            )
        })?
        .0;
    let kind: ActionKind = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        actions::queue_group(&ctx, &group, kind).await,
    )?))
}

pub async fn list_actions(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<ActionInfo>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, actions::list(&ctx, id).await)?))
}

pub async fn list_bundles(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<BundleInfo>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, bundles::list(&ctx, id).await)?))
}

/// `GET /v1/admin/bundles/{id}`: the gzip bytes, as uploaded.
pub async fn download_bundle(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let (info, data) = service(&ctx, bundles::download(&ctx, id).await)?;
    let mut response = data.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    // Both values are made of a UUID and hex digits only.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"tether-bundle-{}.tar.gz\"",
        info.id
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        headers.insert("x-tether-sha256", v);
    }
    Ok(response)
}

pub async fn list_policies(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<Vec<Policy>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, policies::list(&ctx).await)?))
}

pub async fn put_policy(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<Policy>> {
    admin(&ctx, &bearer).await?;
    let name = path
        .map_err(|e| {
            ApiFailure::new(
                &ctx,
                ErrorCode::InvalidField,
                format!("unreadable policy name: {e}"),
            )
        })?
        .0;
    let body: PolicyUpdate = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        policies::upsert(&ctx, &name, body).await,
    )?))
}

/// `GET /v1/fleet/diagnosis?limit=N`: failing agents grouped, one verdict
/// per incident, and hints. `limit` bounds the agents read (default
/// 20,000, at most 100,000); any other parameter is refused.
pub async fn fleet_diagnosis(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<tether_wire::FleetDiagnosis>> {
    use crate::service::fleet;
    admin(&ctx, &bearer).await?;
    let pairs = super::defs::query(&ctx, query.as_deref(), &["limit"])?;
    let limit = match super::defs::param(&pairs, "limit") {
        None => fleet::DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=fleet::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                ApiFailure::new(
                    &ctx,
                    ErrorCode::InvalidField,
                    format!(
                        "query limit={shown:?}: expected a number of agents from 1 to {}",
                        fleet::MAX_LIMIT
                    ),
                )
            })?,
    };
    Ok(Json(service(&ctx, fleet::diagnosis(&ctx, limit).await)?))
}
