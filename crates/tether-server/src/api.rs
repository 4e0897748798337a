//! The HTTP API: routes, extractors and the error envelope. Handlers parse
//! and authenticate, then call [`crate::service`]. Every error body, from a
//! handler, a rejected extractor, an unknown route, a wrong method or a
//! panic, is a [`tether_wire::ApiError`].

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::service::Ctx;

pub mod admin;
pub mod agent;
pub mod body;
pub mod defs;
pub mod error;
pub mod extract;
pub mod guard;
pub mod health;
pub mod paging;
pub mod pki;
pub mod renewals;
pub mod tasks;

pub use error::ApiFailure;

/// The API's router, with its state applied.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/enroll", post(agent::enroll))
        .route("/v1/agent/checkin", post(agent::checkin))
        .route("/v1/agent/shutdown", post(agent::shutdown))
        .route("/v1/agent/probe", get(agent::probe))
        .route("/v1/agent/bundles", post(agent::upload_bundle))
        .route(
            "/v1/agent/actions/{id}/result",
            post(agent::complete_action),
        )
        .route(
            "/v1/admin/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/v1/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route(
            "/v1/admin/admin-tokens",
            post(admin::create_admin_token).get(admin::list_admin_tokens),
        )
        .route(
            "/v1/admin/admin-tokens/{id}/revoke",
            post(admin::revoke_admin_token),
        )
        .route(
            "/v1/admin/admin-tokens/{id}/rotate",
            post(admin::rotate_admin_token),
        )
        .route("/v1/admin/agents", get(admin::list_agents))
        .route("/v1/admin/certs", get(admin::list_certs))
        .route("/v1/admin/certs/{fingerprint}", get(admin::cert_detail))
        .route(
            "/v1/admin/certs/{fingerprint}/history",
            get(admin::cert_history),
        )
        .route("/v1/admin/certs/{fingerprint}/renew", post(renewals::renew))
        .route("/v1/admin/renewals", get(renewals::list))
        .route("/v1/admin/renewal-policies", put(renewals::set_policy))
        .route(
            "/v1/admin/agents/{id}",
            get(admin::agent_detail).delete(admin::remove_agent),
        )
        .route("/v1/admin/agents/{id}/approve", post(admin::approve_agent))
        .route(
            "/v1/admin/agents/{id}/actions",
            post(admin::queue_action).get(admin::list_actions),
        )
        .route("/v1/admin/agents/{id}/bundles", get(admin::list_bundles))
        .route("/v1/admin/bundles/{id}", get(admin::download_bundle))
        .route("/v1/admin/policies", get(admin::list_policies))
        .route("/v1/admin/policies/{name}", put(admin::put_policy))
        .route(
            "/v1/admin/groups/{group}/actions",
            post(admin::queue_group_action),
        )
        .route("/v1/admin/tasks", post(tasks::create).get(tasks::list))
        .route("/v1/admin/tasks/{id}", get(tasks::show))
        .route("/v1/admin/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/admin/tasks/{id}/retry", post(tasks::retry))
        .route("/v1/admin/tasks/{id}/approve", post(tasks::approve))
        .route("/v1/admin/tasks/{id}/reject", post(tasks::reject))
        .route("/v1/admin/schedules", get(tasks::schedules))
        .route("/v1/admin/schedules/{id}", delete(tasks::delete_schedule))
        .route("/v1/admin/sites", get(tasks::sites))
        .route("/v1/admin/sites/{name}", put(tasks::put_site))
        .route("/v1/admin/agents/{id}/site", put(tasks::put_agent_site))
        .route("/v1/agent/tasks/poll", post(tasks::poll))
        .route("/v1/agent/tasks/{id}/heartbeat", post(tasks::heartbeat))
        .route("/v1/agent/tasks/{id}/results", post(tasks::result))
        .route("/v1/agent/tasks/{id}/issue", post(tasks::issue))
        .route("/v1/admin/certs/{fingerprint}/revoke", post(pki::revoke))
        .route(
            "/v1/admin/acme-issuers",
            get(pki::acme_list).post(pki::acme_add),
        )
        .route("/v1/admin/acme-issuers/{name}", delete(pki::acme_remove))
        .merge(pki::routes())
        .route("/defs/{*path}", get(defs::serve))
        .route("/v1/admin/defs/summary", get(defs::summary))
        .route("/v1/admin/defs/{channel}/versions", post(defs::publish))
        .route("/v1/admin/defs/{channel}/export", get(defs::export))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            guard::guard,
        ))
        .with_state(ctx)
}
