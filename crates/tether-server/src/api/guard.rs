//! The last line of defence: a handler that panics, or any response that
//! would be a bare 500, becomes a 503 `Internal` JSON error. Each request
//! runs in its own task so a panic is caught as a `JoinError` without
//! unwinding through the connection.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tether_wire::ErrorCode;
use tracing::{debug, error};

use super::ApiFailure;
use crate::service::Ctx;

pub async fn guard(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = tokio::time::Instant::now();
    let response = match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(join_error) => {
            error!(%method, %path, panicked = join_error.is_panic(), "a request handler failed");
            return internal(&ctx, "the request handler failed unexpectedly");
        }
    };
    if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
        error!(%method, %path, "a handler answered 500; replaced by a 503 Internal error");
        return internal(&ctx, "the server could not produce a reply");
    }
    debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

fn internal(ctx: &Ctx, message: &str) -> Response {
    ApiFailure::new(
        ctx,
        ErrorCode::Internal,
        format!("{message} at {}", crate::service::rfc(ctx.now())),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use hyper::service::Service as _;
    use hyper_util::service::TowerToHyperService;
    use tether_wire::{ApiError, ManualClock};

    use super::*;
    use crate::service::Settings;

    async fn ctx() -> Ctx {
        let store = tether_store_sql::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-05-17 12:00 UTC),
        ));
        let settings = Settings {
            current_agent_version: "1.0.0".into(),
            inactive_grace_secs: 10,
            max_body_bytes: 1024,
            defs_grace_secs: 3600,
            defs_max_publish_bytes: 1024,
        };
        // The directory may go when the test ends; nothing reads it after.
        let dir = tempfile::tempdir().expect("temp dir");
        let defs = tether_defs::repo::Repo::open(&dir.path().join("defs"), clock.clone())
            .await
            .expect("opens the definitions repository");
        Ctx {
            store,
            defs,
            clock,
            settings: Arc::new(settings),
            policies: Default::default(),
            tasks: Arc::new(crate::service::tasks::hub::TaskHub::new(
                10,
                50,
                time::OffsetDateTime::UNIX_EPOCH,
            )),
        }
    }

    async fn call(router: Router, path: &str) -> (StatusCode, ApiError) {
        let service = TowerToHyperService::new(router);
        let request = axum::http::Request::get(path)
            .body(Body::empty())
            .expect("request");
        let response = service.call(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&body).expect("an ApiError body"),
        )
    }

    async fn boom() -> &'static str {
        panic!("a deliberate handler bug")
    }

    #[tokio::test]
    async fn panics_and_bare_500s_become_503_internal_json() {
        let ctx = ctx().await;
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/500", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
            .with_state(ctx);
        for path in ["/boom", "/500"] {
            let (status, e) = call(router.clone(), path).await;
            assert_eq!(
                (status, e.code),
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal),
                "{path}"
            );
            assert!(e.message.contains("2026-05-17T12:00:00Z"), "{}", e.message);
        }
        let service = TowerToHyperService::new(router);
        let request = axum::http::Request::get("/ok")
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            service.call(request).await.expect("infallible").status(),
            StatusCode::OK
        );
    }
}
