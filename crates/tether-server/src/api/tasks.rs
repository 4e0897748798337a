//! Task queue routes: the admin's (create, list, show, cancel, retry,
//! schedules, sites) and the agent's (poll, heartbeat, results).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tether_store::TaskFilter;
use tether_wire::{
    AgentSiteUpdate, ErrorCode, Heartbeat, HeartbeatReply, NewTask, RejectTask, ResultAck,
    ResultChunk, ScheduleInfo, Site, SiteUpdate, TaskDetail, TaskInfo, TaskPoll, TaskPollReply,
};

use super::ApiFailure;
use super::admin::uuid;
use super::error::ApiResult;
use super::extract::{Bearer, json};
use crate::service::{Ctx, auth, tasks};

async fn admin(ctx: &Ctx, bearer: &Bearer) -> ApiResult<()> {
    auth::admin(ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(ctx, e))
}

fn service<T>(ctx: &Ctx, r: Result<T, crate::service::ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

/// `POST /v1/admin/tasks`: a task (201), or a schedule when it has one.
pub async fn create(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let body: NewTask<Value> = json(&ctx, request).await?;
    Ok(match service(&ctx, tasks::create(&ctx, body).await)? {
        tasks::Created::Task(t) => (StatusCode::CREATED, Json(t)).into_response(),
        tasks::Created::Schedule(s) => (StatusCode::CREATED, Json(s)).into_response(),
    })
}

fn filter(ctx: &Ctx, query: Option<&str>) -> ApiResult<(TaskFilter, Option<u32>)> {
    let mut filter = TaskFilter::default();
    let mut limit = None;
    let bad = |key: &str, value: &str, expected: &str| {
        ApiFailure::new(
            ctx,
            ErrorCode::InvalidField,
            format!(
                "field {key}: got {:?}; expected {expected}",
                value.chars().take(40).collect::<String>()
            ),
        )
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "state" => filter.state = Some(value.parse().map_err(|e: String| bad(key, value, &e))?),
            "kind" => filter.kind = Some(value.parse().map_err(|e: String| bad(key, value, &e))?),
            "agent" => {
                filter.agent =
                    Some(uuid::Uuid::parse_str(value).map_err(|_| bad(key, value, "an agent id"))?)
            }
            "limit" => limit = Some(value.parse().map_err(|_| bad(key, value, "a number"))?),
            _ => return Err(bad("query", key, "state, kind, agent or limit")),
        }
    }
    Ok((filter, limit))
}

pub async fn list(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<TaskInfo<Value>>>> {
    admin(&ctx, &bearer).await?;
    let (filter, limit) = filter(&ctx, query.as_deref())?;
    Ok(Json(service(
        &ctx,
        tasks::list(&ctx, &filter, limit).await,
    )?))
}

pub async fn show(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TaskDetail<Value>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, tasks::show(&ctx, id).await)?))
}

pub async fn cancel(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TaskInfo<Value>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, tasks::cancel(&ctx, id).await)?))
}

pub async fn retry(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TaskInfo<Value>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    Ok(Json(service(&ctx, tasks::retry(&ctx, id).await)?))
}

/// `POST /v1/admin/tasks/{id}/approve`: releases a held deploy, recording
/// the calling credential's name and the time.
pub async fn approve(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TaskInfo<Value>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let by = super::pki::admin_name(&ctx, &bearer).await;
    Ok(Json(service(&ctx, tasks::approve(&ctx, id, &by).await)?))
}

/// `POST /v1/admin/tasks/{id}/reject` with [`RejectTask`]: ends a held
/// deploy cancelled, with the reason.
pub async fn reject(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<TaskInfo<Value>>> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let body: RejectTask = json(&ctx, request).await?;
    let by = super::pki::admin_name(&ctx, &bearer).await;
    Ok(Json(service(
        &ctx,
        tasks::reject(&ctx, id, &by, &body.reason).await,
    )?))
}

pub async fn schedules(
    State(ctx): State<Ctx>,
    bearer: Bearer,
) -> ApiResult<Json<Vec<ScheduleInfo<Value>>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, tasks::schedules(&ctx).await)?))
}

pub async fn delete_schedule(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    service(&ctx, tasks::delete_schedule(&ctx, id).await)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn put_site(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<Site>> {
    admin(&ctx, &bearer).await?;
    let name = path
        .map_err(|e| {
            ApiFailure::new(
                &ctx,
                ErrorCode::SiteInvalid,
                format!("unreadable site: {e}"),
            )
        })?
        .0;
    let body: SiteUpdate = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        tasks::set_site(&ctx, &name, &body.tz).await,
    )?))
}

pub async fn sites(State(ctx): State<Ctx>, bearer: Bearer) -> ApiResult<Json<Vec<Site>>> {
    admin(&ctx, &bearer).await?;
    Ok(Json(service(&ctx, tasks::sites(&ctx).await)?))
}

pub async fn put_agent_site(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<StatusCode> {
    admin(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let body: AgentSiteUpdate = json(&ctx, request).await?;
    service(
        &ctx,
        tasks::set_agent_site(&ctx, id, body.site.as_deref()).await,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

async fn agent(ctx: &Ctx, bearer: &Bearer) -> ApiResult<tether_store::AgentRecord> {
    let agent = auth::agent(ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(ctx, e))?;
    // Only approved agents get work, as only they are served at check-in.
    if agent.requires_approval && agent.approved_at.is_none() {
        return Err(ApiFailure::from_service(
            ctx,
            crate::service::ServiceError::PendingApproval {
                agent_id: agent.id,
                enrolled_at: agent.enrolled_at,
            },
        ));
    }
    Ok(agent)
}

/// `POST /v1/agent/tasks/{id}/issue`: the certificate of a deploy task
/// leased to this agent: 200 with it, or, for an ACME issuer, 202 with the
/// http-01 challenges to serve before asking again with the order.
pub async fn issue(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let agent = agent(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let body: tether_wire::IssueRequest = json(&ctx, request).await?;
    let reply = service(
        &ctx,
        crate::service::issuance::issue(&ctx, &agent, id, body).await,
    )?;
    Ok(match reply {
        crate::service::acme::IssueReply::Issued(cert) => Json(cert).into_response(),
        crate::service::acme::IssueReply::Pending(pending) => {
            (axum::http::StatusCode::ACCEPTED, Json(pending)).into_response()
        }
    })
}

/// `POST /v1/agent/tasks/poll`: held until work arrives or the wait ends.
pub async fn poll(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    request: Request,
) -> ApiResult<Json<TaskPollReply<Value>>> {
    let agent = agent(&ctx, &bearer).await?;
    let body: TaskPoll = json(&ctx, request).await?;
    Ok(Json(service(&ctx, tasks::poll(&ctx, &agent, body).await)?))
}

pub async fn heartbeat(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<HeartbeatReply>> {
    let agent = agent(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let body: Heartbeat = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        tasks::heartbeat(&ctx, &agent, id, body).await,
    )?))
}

pub async fn result(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult<Json<ResultAck>> {
    let agent = agent(&ctx, &bearer).await?;
    let id = uuid(&ctx, path)?;
    let body: ResultChunk<Value> = json(&ctx, request).await?;
    Ok(Json(service(
        &ctx,
        tasks::result(&ctx, &agent, id, body).await,
    )?))
}
