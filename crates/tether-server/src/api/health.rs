//! `GET /health`, without authentication.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::service::{Ctx, health};

pub async fn health(State(ctx): State<Ctx>) -> Response {
    let report = health::check(&ctx).await;
    let status = if report.store.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
