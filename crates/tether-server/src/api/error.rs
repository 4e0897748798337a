//! The error envelope: an [`ApiError`] body, the status its code names, and
//! `Retry-After` when waiting helps.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tether_wire::{ApiError, ErrorCode};
use tracing::{debug, warn};

use crate::service::{Ctx, ServiceError};

/// Seconds a client should wait after a store failure.
pub const STORE_RETRY_AFTER_SECS: u32 = 5;

/// A refusal, ready to send, and how many seconds the client should wait
/// before trying again (`Retry-After`), when waiting helps.
#[derive(Debug)]
pub struct ApiFailure(pub ApiError, pub Option<u32>);

impl ApiFailure {
    pub fn new(ctx: &Ctx, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiFailure(ApiError::new(code, message, ctx.now()), None)
    }

    /// A 429 TETHER-E3405 with `Retry-After`.
    pub fn throttled(ctx: &Ctx, throttled: crate::limits::Throttled, what: &str) -> Self {
        let secs = throttled.secs();
        ApiFailure(
            ApiError::new(
                ErrorCode::RateLimited,
                format!("{what}; retry in {secs} s"),
                ctx.now(),
            ),
            Some(secs),
        )
    }

    /// Converts a service error, logging what the client is not told.
    pub fn from_service(ctx: &Ctx, e: ServiceError) -> Self {
        match &e {
            ServiceError::Store(inner) => {
                crate::service::outage::observe(ctx, inner);
                warn!(code = %e.code(), error = %inner, "the store failed a request")
            }
            ServiceError::StoreTimeout { .. } => {
                ctx.outages.note_failure(ctx.now());
                warn!(code = %e.code(), error = %e, "the store did not answer a request in time")
            }
            ServiceError::Throttled { retry_after, .. } => {
                debug!(code = %e.code(), error = %e, "throttled a request");
                let secs = *retry_after;
                return ApiFailure(e.to_api_error(ctx.now()), Some(secs));
            }
            ServiceError::Defs(inner) if e.code() == ErrorCode::Internal => {
                warn!(code = %e.code(), error = %inner, "the definitions repository failed a request")
            }
            _ => debug!(code = %e.code(), error = %e, "refused a request"),
        }
        ApiFailure(e.to_api_error(ctx.now()), None)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let retry = self.1.or(match self.0.code {
            ErrorCode::StoreUnavailable | ErrorCode::Internal | ErrorCode::TaskPollersFull => {
                Some(STORE_RETRY_AFTER_SECS)
            }
            _ => None,
        });
        let code = self.0.code;
        let mut response = (status, Json(self.0)).into_response();
        // For the audit log, which records the outcome without reading the
        // body.
        response.extensions_mut().insert(code);
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A handler's result: a reply or a refusal.
pub type ApiResult<T> = Result<T, ApiFailure>;

pub async fn not_found(State(ctx): State<Ctx>, method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        &ctx,
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

pub async fn method_not_allowed(State(ctx): State<Ctx>, method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        &ctx,
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}
