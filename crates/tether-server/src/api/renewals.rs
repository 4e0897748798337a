//! Renewal routes (admin): force a renewal, list renewals, set a policy.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use tether_wire::{ErrorCode, RenewalInfo, RenewalPolicy, RenewalPolicyUpdate};

use super::ApiFailure;
use super::error::ApiResult;
use super::extract::{Bearer, json};
use crate::service::{Ctx, auth, renewal};

async fn admin(ctx: &Ctx, bearer: &Bearer) -> ApiResult<()> {
    auth::admin(ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(ctx, e))
}

fn service<T>(ctx: &Ctx, r: Result<T, crate::service::ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

/// `POST /v1/admin/certs/{fingerprint}/renew`: renew now.
pub async fn renew(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<RenewalInfo>> {
    admin(&ctx, &bearer).await?;
    let raw = path
        .map_err(|e| ApiFailure::new(&ctx, ErrorCode::InvalidId, format!("unreadable path: {e}")))?
        .0;
    Ok(Json(service(&ctx, renewal::force(&ctx, &raw).await)?))
}

/// `GET /v1/admin/renewals`: newest first.
pub async fn list(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<Vec<RenewalInfo>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, renewal::list(&ctx).await)?))
}

/// `PUT /v1/admin/renewal-policies`.
pub async fn set_policy(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<Json<RenewalPolicy>> {
    admin(&ctx, &bearer).await?;
    let body: RenewalPolicyUpdate = json(&ctx, request).await?;
    service(
        &ctx,
        renewal::set_policy(&ctx, &body.scope, &body.policy).await,
    )?;
    Ok(Json(body.policy))
}
