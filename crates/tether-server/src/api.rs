//! The HTTP API: routes, extractors and the error envelope. Handlers parse
//! and authenticate, then call [`crate::service`]. Every error body, from a
//! handler, a rejected extractor, an unknown route, a wrong method or a
//! panic, is a [`tether_wire::ApiError`].

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use http::Method;

use crate::service::Ctx;

pub mod admin;
pub mod agent;
pub mod audit;
pub mod body;
pub mod defs;
pub mod error;
pub mod extract;
pub mod guard;
pub mod health;
pub mod openapi;
pub mod paging;
pub mod pki;
pub mod renewals;
pub mod rollouts;
pub mod tasks;

pub use error::ApiFailure;

/// The API's router, with its state applied.
pub fn router(ctx: Ctx) -> Router {
    routes()
        .router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::metrics::track,
        ))
        .with_state(ctx)
}

/// Every `(method, path)` the API's router serves, as it registered them:
/// the OpenAPI document's table is checked against this list, so a route
/// cannot be added without being documented.
pub fn registered() -> Vec<(Method, String)> {
    routes().registered
}

/// The router before its state, and what it registered.
fn routes() -> Routes {
    Routes::default()
        .at(Method::GET, "/health", health::health)
        .at(Method::GET, openapi::PATH, openapi::serve)
        .at(Method::POST, "/v1/enroll", agent::enroll)
        .at(Method::POST, "/v1/agent/checkin", agent::checkin)
        .at(Method::POST, "/v1/agent/shutdown", agent::shutdown)
        .at(Method::GET, "/metrics", admin::metrics)
        .at(Method::GET, "/v1/agent/probe", agent::probe)
        .at(
            Method::POST,
            "/v1/agent/credential/rotate",
            agent::rotate_credential,
        )
        .at(Method::POST, "/v1/agent/bundles", agent::upload_bundle)
        .at(
            Method::POST,
            "/v1/agent/actions/{id}/result",
            agent::complete_action,
        )
        .at(Method::POST, "/v1/admin/tokens", admin::create_token)
        .at(Method::GET, "/v1/admin/tokens", admin::list_tokens)
        .at(
            Method::POST,
            "/v1/admin/tokens/{id}/revoke",
            admin::revoke_token,
        )
        .at(
            Method::POST,
            "/v1/admin/admin-tokens",
            admin::create_admin_token,
        )
        .at(
            Method::GET,
            "/v1/admin/admin-tokens",
            admin::list_admin_tokens,
        )
        .at(
            Method::POST,
            "/v1/admin/admin-tokens/{id}/revoke",
            admin::revoke_admin_token,
        )
        .at(
            Method::POST,
            "/v1/admin/admin-tokens/{id}/rotate",
            admin::rotate_admin_token,
        )
        .at(Method::GET, "/v1/admin/agents", admin::list_agents)
        .at(Method::GET, "/v1/fleet/diagnosis", admin::fleet_diagnosis)
        .at(Method::GET, "/v1/admin/audit", audit::list)
        .at(Method::GET, "/v1/admin/certs", admin::list_certs)
        .at(
            Method::GET,
            "/v1/admin/certs/{fingerprint}",
            admin::cert_detail,
        )
        .at(
            Method::GET,
            "/v1/admin/certs/{fingerprint}/history",
            admin::cert_history,
        )
        .at(
            Method::POST,
            "/v1/admin/certs/{fingerprint}/renew",
            renewals::renew,
        )
        .at(Method::GET, "/v1/admin/renewals", renewals::list)
        .at(
            Method::PUT,
            "/v1/admin/renewal-policies",
            renewals::set_policy,
        )
        .at(Method::GET, "/v1/admin/agents/{id}", admin::agent_detail)
        .at(Method::DELETE, "/v1/admin/agents/{id}", admin::remove_agent)
        .at(
            Method::POST,
            "/v1/admin/agents/{id}/approve",
            admin::approve_agent,
        )
        .at(
            Method::POST,
            "/v1/admin/agents/{id}/actions",
            admin::queue_action,
        )
        .at(
            Method::GET,
            "/v1/admin/agents/{id}/actions",
            admin::list_actions,
        )
        .at(
            Method::GET,
            "/v1/admin/agents/{id}/bundles",
            admin::list_bundles,
        )
        .at(
            Method::GET,
            "/v1/admin/bundles/{id}",
            admin::download_bundle,
        )
        .at(Method::GET, "/v1/admin/releases", rollouts::releases)
        .at(Method::GET, "/v1/admin/rollouts", rollouts::list)
        .at(Method::PUT, "/v1/admin/rollouts/{group}", rollouts::put)
        .at(
            Method::DELETE,
            "/v1/admin/rollouts/{group}",
            rollouts::delete,
        )
        .at(
            Method::POST,
            "/v1/admin/rollouts/{group}/pause",
            rollouts::pause,
        )
        .at(
            Method::POST,
            "/v1/admin/rollouts/{group}/resume",
            rollouts::resume,
        )
        .at(
            Method::POST,
            "/v1/admin/rollouts/{group}/promote",
            rollouts::promote,
        )
        .at(Method::GET, "/v1/admin/policies", admin::list_policies)
        .at(Method::PUT, "/v1/admin/policies/{name}", admin::put_policy)
        .at(
            Method::POST,
            "/v1/admin/groups/{group}/actions",
            admin::queue_group_action,
        )
        .at(Method::POST, "/v1/admin/tasks", tasks::create)
        .at(Method::GET, "/v1/admin/tasks", tasks::list)
        .at(Method::GET, "/v1/admin/tasks/{id}", tasks::show)
        .at(Method::POST, "/v1/admin/tasks/{id}/cancel", tasks::cancel)
        .at(Method::POST, "/v1/admin/tasks/{id}/retry", tasks::retry)
        .at(Method::POST, "/v1/admin/tasks/{id}/approve", tasks::approve)
        .at(Method::POST, "/v1/admin/tasks/{id}/reject", tasks::reject)
        .at(Method::GET, "/v1/admin/schedules", tasks::schedules)
        .at(
            Method::DELETE,
            "/v1/admin/schedules/{id}",
            tasks::delete_schedule,
        )
        .at(Method::GET, "/v1/admin/sites", tasks::sites)
        .at(Method::PUT, "/v1/admin/sites/{name}", tasks::put_site)
        .at(
            Method::PUT,
            "/v1/admin/agents/{id}/site",
            tasks::put_agent_site,
        )
        .at(Method::POST, "/v1/agent/tasks/poll", tasks::poll)
        .at(
            Method::POST,
            "/v1/agent/tasks/{id}/heartbeat",
            tasks::heartbeat,
        )
        .at(Method::POST, "/v1/agent/tasks/{id}/results", tasks::result)
        .at(Method::POST, "/v1/agent/tasks/{id}/issue", tasks::issue)
        .at(
            Method::POST,
            "/v1/admin/certs/{fingerprint}/revoke",
            pki::revoke,
        )
        .at(Method::GET, "/v1/admin/acme-issuers", pki::acme_list)
        .at(Method::POST, "/v1/admin/acme-issuers", pki::acme_add)
        .at(
            Method::DELETE,
            "/v1/admin/acme-issuers/{name}",
            pki::acme_remove,
        )
        .at(Method::GET, "/defs/{*path}", defs::serve)
        .at(Method::GET, "/v1/admin/defs/summary", defs::summary)
        .at(
            Method::POST,
            "/v1/admin/defs/{channel}/versions",
            defs::publish,
        )
        .at(Method::GET, "/v1/admin/defs/{channel}/export", defs::export)
        .merge(pki::routes())
}

/// A router that remembers each route it was given.
#[derive(Default)]
pub struct Routes {
    router: Router<Ctx>,
    registered: Vec<(Method, String)>,
}

impl Routes {
    /// Serves `handler` for `method` on `path`. Several methods on one path
    /// merge into one route (axum panics on a method given twice).
    pub fn at<H, T>(mut self, method: Method, path: &str, handler: H) -> Self
    where
        H: Handler<T, Ctx>,
        T: 'static,
    {
        // Only the fixed methods named in this file reach here, and every
        // one of them has a filter.
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.registered.push((method, path.to_string()));
        self
    }

    /// Adds another table's routes.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.registered.extend(other.registered);
        self
    }

    /// The router, without its state.
    pub fn into_router(self) -> Router<Ctx> {
        self.router
    }
}
