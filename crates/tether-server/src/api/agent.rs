//! Routes agents call: enroll (the token is the auth), check-in, shutdown,
//! the read-only probe, bundle uploads and action results (the agent
//! credential is the auth). Authentication runs before the body is read, so
//! an unauthenticated caller learns nothing about the schema.
//!
//! Every step that waits on the store is bounded by `store_wait_secs`: a
//! stuck store is answered 503 with Retry-After, never a hung request.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use tether_store::AgentRecord;
use tether_wire::{
    ActionInfo, ActionResult, AgentProbe, BundleInfo, CheckinRequest, CheckinResponse,
    EnrollRequest, EnrollResponse, ErrorCode, ShutdownNotice,
};

use super::ApiFailure;
use super::body;
use super::error::ApiResult;
use super::extract::{BODY_READ_TIMEOUT, Bearer, Peer, PeerIp, json};
use crate::service::bundles::MAX_BUNDLE_BYTES;
use crate::service::{
    Ctx, ServiceError, actions, auth, bundles, checkin, enroll as enroll_service, within_store_wait,
};

/// The content types a bundle may be sent with.
const GZIP_TYPES: &[&str] = &["application/gzip", "application/x-gzip"];

fn failure(ctx: &Ctx) -> impl Fn(ServiceError) -> ApiFailure + '_ {
    move |e| ApiFailure::from_service(ctx, e)
}

/// The agent a credential belongs to, within the store wait.
async fn agent(ctx: &Ctx, bearer: &Bearer) -> ApiResult<AgentRecord> {
    within_store_wait(ctx, auth::agent(ctx, bearer.as_deref()))
        .await
        .map_err(failure(ctx))
}

pub async fn enroll(
    State(ctx): State<Ctx>,
    Peer(ip): Peer,
    PeerIp(peer): PeerIp,
    request: Request,
) -> ApiResult<Json<EnrollResponse>> {
    let result = match json::<EnrollRequest>(&ctx, request).await {
        Ok(body) => within_store_wait(&ctx, enroll_service::enroll(&ctx, body, ip))
            .await
            .map_err(failure(&ctx)),
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => Ok(Json(reply)),
        // A refusal of the request itself (a bad token, a bad body) counts
        // against the address; past its limit, the answer is 429. Failures
        // of the server (503) are not the client's doing.
        Err(refused) if refused.0.code.http_status() < 500 => {
            match ctx.limits.enroll_failed(peer) {
                Ok(()) => Err(refused),
                Err(t) => Err(ApiFailure::throttled(
                    &ctx,
                    t,
                    &format!(
                        "too many failed enrollments from this address (enroll_failures_per_minute is {}); the last one: {}",
                        ctx.limits.settings().enroll_failures_per_minute,
                        refused.0.code
                    ),
                )),
            }
        }
        Err(other) => Err(other),
    }
}

pub async fn checkin(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    Peer(ip): Peer,
    request: Request,
) -> ApiResult<Json<CheckinResponse>> {
    let agent = agent(&ctx, &bearer).await?;
    let body: CheckinRequest = json(&ctx, request).await?;
    let reply = within_store_wait(&ctx, checkin::checkin(&ctx, agent, body, ip))
        .await
        .map_err(failure(&ctx))?;
    Ok(Json(reply))
}

/// `GET /v1/agent/probe`: whether the credential is accepted, for the
/// doctor. It records nothing (not the facts, not the last errors) and hands
/// out no queued action, unlike a check-in.
pub async fn probe(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<AgentProbe>> {
    let agent = agent(&ctx, &bearer).await?;
    Ok(Json(checkin::probe(&ctx, &agent).map_err(failure(&ctx))?))
}

/// `POST /v1/agent/credential/rotate`: the agent's next credential (the
/// escalation capture asks for one after it shared a TLS key log).
pub async fn rotate_credential(
    State(ctx): State<Ctx>,
    bearer: Bearer,
) -> ApiResult<Json<tether_wire::RotatedCredential>> {
    let agent = agent(&ctx, &bearer).await?;
    within_store_wait(&ctx, auth::rotate_agent_credential(&ctx, &agent))
        .await
        .map(Json)
        .map_err(failure(&ctx))
}

pub async fn shutdown(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<StatusCode> {
    let agent = agent(&ctx, &bearer).await?;
    let body: ShutdownNotice = json(&ctx, request).await?;
    within_store_wait(&ctx, checkin::shutdown(&ctx, agent, &body.reason))
        .await
        .map_err(failure(&ctx))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/bundles`: the body is the tar.gz itself. Only an agent
/// that is served (approved where approval is required) may upload, within
/// the server's concurrent uploads and its own hourly quota; all of that is
/// checked before a byte of the body is read.
pub async fn upload_bundle(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<(StatusCode, Json<BundleInfo>)> {
    let agent = agent(&ctx, &bearer).await?;
    bundles::may_upload(&ctx, &agent).map_err(failure(&ctx))?;
    let _permit = ctx.limits.upload(agent.id).map_err(|t| {
        ApiFailure::throttled(
            &ctx,
            t,
            &format!(
                "the server takes {} bundle uploads at once and {} per agent per hour",
                ctx.limits.settings().bundle_uploads_concurrent,
                ctx.limits.settings().bundle_uploads_per_agent_per_hour
            ),
        )
    })?;
    let rules = body::Rules {
        types: body::Types::Required(GZIP_TYPES),
        limit: MAX_BUNDLE_BYTES as u64,
        timeout: BODY_READ_TIMEOUT,
        subject: "the bundle",
        limit_note: format!(" ({} MiB)", MAX_BUNDLE_BYTES / (1024 * 1024)),
        wrong_type: ErrorCode::BundleInvalid,
        unreadable: ErrorCode::BundleInvalid,
    };
    let (_, data) = body::read(&ctx, request, &rules).await?;
    let info = bundles::upload(&ctx, &agent, data.to_vec())
        .await
        .map_err(failure(&ctx))?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /v1/agent/actions/{id}/result`.
pub async fn complete_action(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<ActionInfo>> {
    let agent = agent(&ctx, &bearer).await?;
    let id = super::admin::uuid(&ctx, path)?;
    let body: ActionResult = json(&ctx, request).await?;
    let done = within_store_wait(&ctx, actions::complete(&ctx, &agent, id, body))
        .await
        .map_err(failure(&ctx))?;
    Ok(Json(done))
}
