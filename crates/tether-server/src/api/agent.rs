//! Routes agents call: enroll (the token is the auth), check-in and shutdown
//! (the agent credential is the auth). Authentication runs before the body
//! is read, so an unauthenticated caller learns nothing about the schema.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use tether_wire::{
    ActionInfo, ActionResult, BundleInfo, CheckinRequest, CheckinResponse, EnrollRequest,
    EnrollResponse, ShutdownNotice,
};

use super::ApiFailure;
use super::error::ApiResult;
use super::extract::{Bearer, Peer, json};
use crate::service::{Ctx, actions, auth, bundles, checkin, enroll as enroll_service};

pub async fn enroll(
    State(ctx): State<Ctx>,
    Peer(ip): Peer,
    request: Request,
) -> ApiResult<Json<EnrollResponse>> {
    let body: EnrollRequest = json(&ctx, request).await?;
    let reply = enroll_service::enroll(&ctx, body, ip)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    Ok(Json(reply))
}

pub async fn checkin(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    Peer(ip): Peer,
    request: Request,
) -> ApiResult<Json<CheckinResponse>> {
    let agent = auth::agent(&ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    let body: CheckinRequest = json(&ctx, request).await?;
    let reply = checkin::checkin(&ctx, agent, body, ip)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    Ok(Json(reply))
}

pub async fn shutdown(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<StatusCode> {
    let agent = auth::agent(&ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    let body: ShutdownNotice = json(&ctx, request).await?;
    checkin::shutdown(&ctx, agent, &body.reason)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/bundles`: the body is the tar.gz itself.
pub async fn upload_bundle(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<(StatusCode, Json<BundleInfo>)> {
    let agent = auth::agent(&ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    let data = super::bundle_body::gzip_body(&ctx, request).await?;
    let info = bundles::upload(&ctx, &agent, data)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /v1/agent/actions/{id}/result`.
pub async fn complete_action(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<ActionInfo>> {
    let agent = auth::agent(&ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    let id = super::admin::uuid(&ctx, path)?;
    let body: ActionResult = json(&ctx, request).await?;
    let done = actions::complete(&ctx, &agent, id, body)
        .await
        .map_err(|e| ApiFailure::from_service(&ctx, e))?;
    Ok(Json(done))
}
