//! Admin routes for agent releases and rollouts (issue #13,
//! docs/upgrades.md). Publishing a release is a definitions publish on its
//! release channel (`tether rollout publish` computes the channel).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use tether_store::RolloutChange;
use tether_wire::{ErrorCode, Release, Rollout, RolloutPause, RolloutUpdate};

use super::ApiFailure;
use super::error::ApiResult;
use super::extract::{Bearer, json};
use crate::service::{Ctx, ServiceError, auth, rollouts};

fn service<T>(ctx: &Ctx, r: Result<T, ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

async fn admin(ctx: &Ctx, bearer: &Bearer) -> ApiResult<()> {
    service(ctx, auth::admin(ctx, bearer.as_deref()).await)
}

fn group(ctx: &Ctx, path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    Ok(path
        .map_err(|e| {
            ApiFailure::new(
                ctx,
                ErrorCode::InvalidField,
                format!("unreadable group: {e}"),
            )
        })?
        .0)
}

pub async fn releases(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<Vec<Release>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, rollouts::releases(&ctx).await)?))
}

pub async fn list(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<Vec<Rollout>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, rollouts::list(&ctx).await)?))
}

pub async fn put(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<Rollout>> {
    admin(&ctx, &bearer).await?;
    let group = group(&ctx, path)?;
    let body: RolloutUpdate = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        rollouts::set(&ctx, &group, &body).await,
    )?))
}

pub async fn pause(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<Rollout>> {
    admin(&ctx, &bearer).await?;
    let body: RolloutPause = json(&ctx, request).await?;
    let change = RolloutChange::Pause {
        reason: body.reason.unwrap_or_default(),
    };
    step(ctx, bearer, path, change).await
}

async fn step(
    ctx: Ctx,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    change: RolloutChange,
) -> ApiResult<Json<Rollout>> {
    admin(&ctx, &bearer).await?;
    let group = group(&ctx, path)?;
    Ok(Json(service(
        &ctx,
        rollouts::change(&ctx, &group, change).await,
    )?))
}

pub async fn resume(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Rollout>> {
    step(ctx, bearer, path, RolloutChange::Resume).await
}

pub async fn promote(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Rollout>> {
    step(ctx, bearer, path, RolloutChange::Promote).await
}

pub async fn delete(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    admin(&ctx, &bearer).await?;
    let group = group(&ctx, path)?;
    service(&ctx, rollouts::delete(&ctx, &group).await)?;
    Ok(StatusCode::NO_CONTENT)
}
