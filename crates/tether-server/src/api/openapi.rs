//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 document.
//!
//! The document is built from one table, [`OPERATIONS`]: method, path,
//! authentication, request body and reply per status. Schemas come from the
//! wire types themselves (`tether-wire`'s `openapi` feature derives
//! `utoipa::ToSchema`), so a changed body changes the document. Every error
//! status of the catalog is answered with [`ApiError`]. A test compares the
//! table with what the router registered ([`super::registered`]), and the
//! e2e test `openapi` runs schemathesis against a live server, so neither
//! the paths nor the bodies can drift from the document.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tether_wire::*;
use utoipa::ToSchema;

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credential (health, the document, enrollment whose token is in the
    /// body, the definitions tree and the CA's CRL and OCSP responder).
    Public,
    /// `Authorization: Bearer <agent credential>`.
    Agent,
    /// `Authorization: Bearer <admin token>`.
    Admin,
}

/// The component schemas collected while the document is written.
type Schemas = BTreeMap<String, Value>;

/// A schema: writes what it needs into the components and returns the
/// schema (usually a `$ref`) to put in place.
type SchemaFn = fn(&mut Schemas) -> Value;

/// A request or reply body.
#[derive(Clone, Copy)]
pub enum Content {
    /// `application/json` with this schema.
    Json(SchemaFn),
    /// Opaque bytes of this media type.
    Bytes(&'static str),
}

/// One documented reply of an operation.
pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    pub content: Option<Content>,
}

/// One operation of the API.
pub struct Operation {
    pub method: Method,
    /// The path as the router spells it (`{id}`, `{*path}`).
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub body: Option<Content>,
    pub replies: &'static [Reply],
}

/// A schema for `T`, registered in the components.
fn of<T: ToSchema>(schemas: &mut Schemas) -> Value {
    let name = T::name().into_owned();
    if !schemas.contains_key(&name) {
        schemas.insert(name.clone(), to_json(T::schema()));
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        for (n, s) in nested {
            schemas.entry(n).or_insert_with(|| to_json(s));
        }
    }
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON array of `T`.
fn list<T: ToSchema>(schemas: &mut Schemas) -> Value {
    json!({ "type": "array", "items": of::<T>(schemas) })
}

fn to_json<S: serde::Serialize>(s: S) -> Value {
    // utoipa's schema types serialize to JSON maps and never fail.
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// A task's spec and results are JSON whose shape depends on the task's
/// kind; the server stores them as given.
pub struct AnyJson;

impl utoipa::PartialSchema for AnyJson {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Schema::Object(utoipa::openapi::schema::Object::new()).into()
    }
}

impl ToSchema for AnyJson {
    fn name() -> std::borrow::Cow<'static, str> {
        "AnyJson".into()
    }
}

/// The body of `POST /v1/admin/certs/{fingerprint}/revoke`, which the server
/// reads itself (`api::pki`).
fn revoke_body(_: &mut Schemas) -> Value {
    json!({
        "type": "object",
        "required": ["reason"],
        "properties": { "reason": { "type": "string" } }
    })
}

/// `POST /v1/admin/tasks` answers with a task or, for a scheduled one, its
/// schedule.
fn task_or_schedule(schemas: &mut Schemas) -> Value {
    json!({ "oneOf": [of::<TaskInfo<AnyJson>>(schemas), of::<ScheduleInfo<AnyJson>>(schemas)] })
}

/// The document itself is a JSON object.
fn any_object(_: &mut Schemas) -> Value {
    json!({ "type": "object" })
}

const fn ok(content: Content) -> Reply {
    Reply {
        status: 200,
        description: "OK",
        content: Some(content),
    }
}

const fn created(content: Content) -> Reply {
    Reply {
        status: 201,
        description: "Created",
        content: Some(content),
    }
}

const NO_CONTENT: Reply = Reply {
    status: 204,
    description: "Done; no body",
    content: None,
};

use Auth::{Admin, Agent, Public};
use Content::{Bytes, Json};

macro_rules! op {
    ($method:ident $path:literal, $auth:expr, $summary:literal, $body:expr, [$($reply:expr),* $(,)?]) => {
        Operation {
            method: Method::$method,
            path: $path,
            summary: $summary,
            auth: $auth,
            body: $body,
            replies: &[$($reply),*],
        }
    };
}

/// Every operation the API serves. A test fails when this table and the
/// router disagree.
pub static OPERATIONS: &[Operation] = &[
    op!(GET "/health", Public, "The server's health", None, [
        ok(Json(of::<Health>)),
        Reply { status: 503, description: "The store is unavailable", content: Some(Json(of::<Health>)) },
    ]),
    op!(GET "/v1/openapi.json", Public, "This document", None, [ok(Json(any_object))]),
    op!(GET "/metrics", Admin, "Prometheus metrics (text exposition format 0.0.4)", None,
        [ok(Bytes("text/plain"))]),
    op!(POST "/v1/enroll", Public, "Enroll an agent with a token (the token in the body is the credential)",
        Some(Json(of::<EnrollRequest>)), [ok(Json(of::<EnrollResponse>))]),
    op!(POST "/v1/agent/checkin", Agent, "Check in", Some(Json(of::<CheckinRequest>)),
        [ok(Json(of::<CheckinResponse>))]),
    op!(POST "/v1/agent/shutdown", Agent, "Announce a clean shutdown", Some(Json(of::<ShutdownNotice>)),
        [NO_CONTENT]),
    op!(GET "/v1/agent/probe", Agent, "Read-only check of the agent's credential", None,
        [ok(Json(of::<AgentProbe>))]),
    op!(POST "/v1/agent/credential/rotate", Agent,
        "Rotate the agent's credential (the old one works until the new one is first presented)", None,
        [ok(Json(of::<RotatedCredential>))]),
    op!(POST "/v1/agent/bundles", Agent, "Upload a support bundle", Some(Bytes("application/gzip")),
        [created(Json(of::<BundleInfo>))]),
    op!(POST "/v1/agent/actions/{id}/result", Agent, "Report an action's result", Some(Json(of::<ActionResult>)),
        [ok(Json(of::<ActionInfo>))]),
    op!(POST "/v1/admin/tokens", Admin, "Create an enrollment token", Some(Json(of::<CreateTokenRequest>)),
        [ok(Json(of::<CreatedToken>))]),
    op!(GET "/v1/admin/tokens", Admin, "List enrollment tokens (paged)", None, [ok(Json(list::<TokenInfo>))]),
    op!(POST "/v1/admin/tokens/{id}/revoke", Admin, "Revoke an enrollment token", None,
        [ok(Json(of::<TokenInfo>))]),
    op!(POST "/v1/admin/admin-tokens", Admin, "Create an admin credential", Some(Json(of::<CreateAdminTokenRequest>)),
        [created(Json(of::<CreatedAdminToken>))]),
    op!(GET "/v1/admin/admin-tokens", Admin, "List admin credentials (paged)", None,
        [ok(Json(list::<AdminTokenInfo>))]),
    op!(POST "/v1/admin/admin-tokens/{id}/revoke", Admin, "Revoke an admin credential", None,
        [ok(Json(of::<AdminTokenInfo>))]),
    op!(POST "/v1/admin/admin-tokens/{id}/rotate", Admin, "Rotate an admin credential", None,
        [ok(Json(of::<CreatedAdminToken>))]),
    op!(GET "/v1/admin/agents", Admin, "List agents (paged)", None, [ok(Json(list::<AgentSummary>))]),
    op!(GET "/v1/fleet/diagnosis", Admin, "Fleet diagnosis: failing agents grouped, one verdict per incident", None, [ok(Json(of::<FleetDiagnosis>))]),
    op!(GET "/v1/admin/audit", Admin, "The admin audit log, newest first (paged)", None,
        [ok(Json(list::<AuditEntry>))]),
    op!(GET "/v1/admin/certs", Admin, "List discovered certificates (paged)", None, [ok(Json(list::<CertInfo>))]),
    op!(GET "/v1/admin/certs/{fingerprint}", Admin, "One certificate", None, [ok(Json(of::<CertDetail>))]),
    op!(GET "/v1/admin/certs/{fingerprint}/history", Admin, "A certificate's history", None,
        [ok(Json(of::<CertHistory>))]),
    op!(POST "/v1/admin/certs/{fingerprint}/renew", Admin, "Renew a certificate now", None,
        [ok(Json(of::<RenewalInfo>))]),
    op!(GET "/v1/admin/renewals", Admin, "List renewals", None, [ok(Json(list::<RenewalInfo>))]),
    op!(PUT "/v1/admin/renewal-policies", Admin, "Set a renewal policy", Some(Json(of::<RenewalPolicyUpdate>)),
        [ok(Json(of::<RenewalPolicy>))]),
    op!(GET "/v1/admin/agents/{id}", Admin, "One agent", None, [ok(Json(of::<AgentDetail>))]),
    op!(DELETE "/v1/admin/agents/{id}", Admin, "Remove an agent", None, [NO_CONTENT]),
    op!(POST "/v1/admin/agents/{id}/approve", Admin, "Approve a pending agent", None,
        [ok(Json(of::<AgentSummary>))]),
    op!(POST "/v1/admin/agents/{id}/actions", Admin, "Queue an action for an agent", Some(Json(of::<ActionKind>)),
        [created(Json(of::<ActionInfo>))]),
    op!(GET "/v1/admin/agents/{id}/actions", Admin, "An agent's actions", None, [ok(Json(list::<ActionInfo>))]),
    op!(GET "/v1/admin/agents/{id}/bundles", Admin, "An agent's bundles", None, [ok(Json(list::<BundleInfo>))]),
    op!(GET "/v1/admin/bundles/{id}", Admin, "Download a bundle", None, [ok(Bytes("application/gzip"))]),
    op!(GET "/v1/admin/releases", Admin, "List published agent releases", None, [ok(Json(list::<Release>))]),
    op!(GET "/v1/admin/rollouts", Admin, "List rollouts with their progress", None, [ok(Json(list::<Rollout>))]),
    op!(PUT "/v1/admin/rollouts/{group}", Admin, "Start or replace a group's rollout", Some(Json(of::<RolloutUpdate>)),
        [ok(Json(of::<Rollout>))]),
    op!(DELETE "/v1/admin/rollouts/{group}", Admin, "End a group's rollout", None, [NO_CONTENT]),
    op!(POST "/v1/admin/rollouts/{group}/pause", Admin, "Pause a group's rollout", Some(Json(of::<RolloutPause>)),
        [ok(Json(of::<Rollout>))]),
    op!(POST "/v1/admin/rollouts/{group}/resume", Admin, "Resume a group's rollout", None, [ok(Json(of::<Rollout>))]),
    op!(POST "/v1/admin/rollouts/{group}/promote", Admin, "Offer a canary rollout to the whole group", None,
        [ok(Json(of::<Rollout>))]),
    op!(GET "/v1/admin/policies", Admin, "List policies", None, [ok(Json(list::<Policy>))]),
    op!(PUT "/v1/admin/policies/{name}", Admin, "Create or change a policy", Some(Json(of::<PolicyUpdate>)),
        [ok(Json(of::<Policy>))]),
    op!(POST "/v1/admin/groups/{group}/actions", Admin, "Queue an action for every agent of a group",
        Some(Json(of::<ActionKind>)), [ok(Json(list::<ActionInfo>))]),
    op!(POST "/v1/admin/tasks", Admin, "Create a task or a schedule", Some(Json(of::<NewTask<AnyJson>>)),
        [created(Json(task_or_schedule))]),
    op!(GET "/v1/admin/tasks", Admin, "List tasks", None, [ok(Json(list::<TaskInfo<AnyJson>>))]),
    op!(GET "/v1/admin/tasks/{id}", Admin, "One task with its results", None,
        [ok(Json(of::<TaskDetail<AnyJson>>))]),
    op!(POST "/v1/admin/tasks/{id}/cancel", Admin, "Cancel a task", None, [ok(Json(of::<TaskInfo<AnyJson>>))]),
    op!(POST "/v1/admin/tasks/{id}/retry", Admin, "Retry a task", None, [ok(Json(of::<TaskInfo<AnyJson>>))]),
    op!(POST "/v1/admin/tasks/{id}/approve", Admin, "Approve a task", None, [ok(Json(of::<TaskInfo<AnyJson>>))]),
    op!(POST "/v1/admin/tasks/{id}/reject", Admin, "Reject a task", Some(Json(of::<RejectTask>)),
        [ok(Json(of::<TaskInfo<AnyJson>>))]),
    op!(GET "/v1/admin/schedules", Admin, "List schedules", None, [ok(Json(list::<ScheduleInfo<AnyJson>>))]),
    op!(DELETE "/v1/admin/schedules/{id}", Admin, "Delete a schedule", None, [NO_CONTENT]),
    op!(GET "/v1/admin/sites", Admin, "List sites", None, [ok(Json(list::<Site>))]),
    op!(PUT "/v1/admin/sites/{name}", Admin, "Create or change a site", Some(Json(of::<SiteUpdate>)),
        [ok(Json(of::<Site>))]),
    op!(PUT "/v1/admin/agents/{id}/site", Admin, "Put an agent in a site", Some(Json(of::<AgentSiteUpdate>)),
        [NO_CONTENT]),
    op!(POST "/v1/agent/tasks/poll", Agent, "Long-poll for tasks", Some(Json(of::<TaskPoll>)),
        [ok(Json(of::<TaskPollReply<AnyJson>>))]),
    op!(POST "/v1/agent/tasks/{id}/heartbeat", Agent, "A running task's heartbeat", Some(Json(of::<Heartbeat>)),
        [ok(Json(of::<HeartbeatReply>))]),
    op!(POST "/v1/agent/tasks/{id}/results", Agent, "A chunk of a task's results",
        Some(Json(of::<ResultChunk<AnyJson>>)), [ok(Json(of::<ResultAck>))]),
    op!(POST "/v1/agent/tasks/{id}/issue", Agent, "Ask for a task's certificate", Some(Json(of::<IssueRequest>)), [
        ok(Json(of::<IssueResponse>)),
        Reply { status: 202, description: "The CA has not issued yet; ask again", content: Some(Json(of::<IssuePending>)) },
    ]),
    op!(POST "/v1/admin/certs/{fingerprint}/revoke", Admin, "Revoke a certificate of the built-in CA",
        Some(Json(revoke_body)), [ok(Json(of::<RevokeResponse>))]),
    op!(GET "/v1/admin/acme-issuers", Admin, "List ACME issuers", None, [ok(Json(of::<AcmeIssuerList>))]),
    op!(POST "/v1/admin/acme-issuers", Admin, "Add an ACME issuer", Some(Json(of::<AcmeIssuerAdd>)),
        [created(Json(of::<AcmeIssuerInfo>))]),
    op!(DELETE "/v1/admin/acme-issuers/{name}", Admin, "Remove an ACME issuer", None, [NO_CONTENT]),
    op!(GET "/pki/ca.crl", Public, "The built-in CA's CRL (DER)", None, [ok(Bytes("application/pkix-crl"))]),
    op!(POST "/pki/ocsp", Public, "The OCSP responder (RFC 6960); refusals are OCSP responses too",
        Some(Bytes("application/ocsp-request")), [ok(Bytes("application/ocsp-response"))]),
    op!(GET "/pki/ocsp/{*request}", Public, "The OCSP responder, request in the path (base64)", None,
        [ok(Bytes("application/ocsp-response"))]),
    op!(GET "/defs/{*path}", Public, "A file of the signed definitions tree (Range, If-Range, ETag)", None, [
        ok(Bytes("application/octet-stream")),
        Reply { status: 206, description: "The requested range", content: Some(Bytes("application/octet-stream")) },
        Reply { status: 304, description: "Not modified", content: None },
    ]),
    op!(GET "/v1/admin/defs/summary", Admin, "The definitions channels", None,
        [ok(Json(list::<ChannelSummary>))]),
    op!(POST "/v1/admin/defs/{channel}/versions", Admin, "Publish a definitions version",
        Some(Bytes("application/octet-stream")), [created(Json(of::<DefsVersion>))]),
    op!(GET "/v1/admin/defs/{channel}/export", Admin, "The offline bundle of the definitions", None,
        [ok(Bytes("application/x-tar"))]),
];

/// One query parameter of an operation.
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// The query parameters of the operations that take any, keyed like
/// [`OPERATIONS`]. The handlers refuse any other parameter (400
/// TETHER-E1002), so the document lists every one they read; a test checks
/// each entry names an operation of the table.
pub static QUERY_PARAMS: &[(Method, &str, &[QueryParam])] = &[
    (Method::GET, "/v1/admin/tokens", PAGE),
    (
        Method::GET,
        "/v1/fleet/diagnosis",
        &[QueryParam {
            name: "limit",
            description: "The most agents to read, oldest enrollment first (1 to 100000, default 20000)",
            schema: diagnosis_limit,
        }],
    ),
    (Method::GET, "/v1/admin/admin-tokens", PAGE),
    (
        Method::GET,
        "/v1/admin/audit",
        &[
            QueryParam {
                name: "actor",
                description: "Only this actor's actions (an admin credential's name, or `unauthenticated`)",
                schema: text,
            },
            QueryParam {
                name: "since",
                description: "Only actions at or after this time: RFC 3339, or a duration back from the server's clock (`90s`, `30m`, `2h`, `7d`)",
                schema: text,
            },
            LIMIT,
            AFTER,
        ],
    ),
    (
        Method::GET,
        "/v1/admin/agents",
        &[
            QueryParam {
                name: "status",
                description: "Only agents with this status",
                schema: agent_status,
            },
            QueryParam {
                name: "group",
                description: "Only agents of this group",
                schema: text,
            },
            LIMIT,
            AFTER,
        ],
    ),
    (
        Method::GET,
        "/v1/admin/certs",
        &[
            QueryParam {
                name: "expiring",
                description: "Only certificates expiring within this many days (`30d` or `30`)",
                schema: expiring,
            },
            QueryParam {
                name: "verdict",
                description: "Only certificates with this finding",
                schema: verdict,
            },
            LIMIT,
            AFTER,
        ],
    ),
    (
        Method::GET,
        "/v1/admin/tasks",
        &[
            QueryParam {
                name: "state",
                description: "Only tasks in this state",
                schema: task_state,
            },
            QueryParam {
                name: "kind",
                description: "Only tasks of this kind",
                schema: task_kind,
            },
            QueryParam {
                name: "agent",
                description: "Only tasks targeting this agent",
                schema: uuid_text,
            },
            QueryParam {
                name: "limit",
                description: "At most this many tasks, newest first (default 100)",
                schema: task_limit,
            },
        ],
    ),
    (
        Method::POST,
        "/v1/admin/defs/{channel}/versions",
        &[QueryParam {
            name: "notes",
            description: "Release notes kept with the version",
            schema: text,
        }],
    ),
    (
        Method::GET,
        "/v1/admin/defs/summary",
        &[QueryParam {
            name: "channel",
            description: "Only this channel",
            schema: text,
        }],
    ),
];

const LIMIT: QueryParam = QueryParam {
    name: "limit",
    description: "Rows per page (default 500)",
    schema: page_limit,
};
const AFTER: QueryParam = QueryParam {
    name: "after",
    description: "The cursor from the previous page's `tether-next-cursor` header",
    schema: cursor,
};
const PAGE: &[QueryParam] = &[LIMIT, AFTER];

fn text() -> Value {
    json!({ "type": "string" })
}

fn uuid_text() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn page_limit() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": MAX_PAGE })
}

fn task_limit() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": crate::service::tasks::MAX_LIST })
}

fn cursor() -> Value {
    json!({ "type": "string", "pattern": "^-?[0-9]+\\.[0-9a-fA-F-]{36}$" })
}

/// A string enum of the wire spellings of `values`.
fn one_of<T: serde::Serialize>(values: &[T]) -> Value {
    let names: Vec<Value> = values.iter().map(to_json).collect();
    json!({ "type": "string", "enum": names })
}

fn agent_status() -> Value {
    one_of(&AgentStatus::ALL)
}

fn diagnosis_limit() -> Value {
    json!({
        "type": "integer",
        "minimum": 1,
        "maximum": crate::service::fleet::MAX_LIMIT,
    })
}

fn expiring() -> Value {
    json!({
        "type": "string",
        "pattern": "^[0-9]{1,5}d?$",
        "description": format!("0 to {} days", crate::service::certs::MAX_EXPIRING_DAYS),
    })
}

fn verdict() -> Value {
    json!({ "type": "string", "enum": crate::service::certs::VERDICTS })
}

fn task_state() -> Value {
    one_of(&TaskState::ALL)
}

fn task_kind() -> Value {
    one_of(&TaskKind::ALL)
}

fn query_params(method: &Method, path: &str) -> &'static [QueryParam] {
    QUERY_PARAMS
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map_or(&[], |(_, _, q)| *q)
}

/// The OpenAPI spelling of a router path: `{*path}` becomes `{path}`.
pub fn openapi_path(router_path: &str) -> String {
    router_path.replace("{*", "{")
}

/// The path parameters of a router path, in order.
fn path_params(router_path: &str) -> Vec<String> {
    router_path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|p| p.trim_start_matches('*').to_string())
        .collect()
}

fn content(c: Content, schemas: &mut Schemas) -> Value {
    match c {
        Json(schema) => json!({ "application/json": { "schema": schema(schemas) } }),
        Bytes(media) => {
            let mut m = Map::new();
            m.insert(
                media.to_string(),
                json!({ "schema": { "type": "string", "format": "binary" } }),
            );
            Value::Object(m)
        }
    }
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(build);
    &DOC
}

fn build() -> Value {
    let mut schemas = Schemas::new();
    let error_ref = of::<ApiError>(&mut schemas);
    // Generic bodies refer to their parameter by name and leave defining it
    // to whoever instantiates them.
    of::<AnyJson>(&mut schemas);
    let error_statuses: BTreeSet<u16> = ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut o = Map::new();
        o.insert("summary".into(), json!(op.summary));
        o.insert(
            "operationId".into(),
            json!(format!("{} {}", op.method, op.path)),
        );
        o.insert(
            "tags".into(),
            json!([match op.auth {
                Public => "public",
                Agent => "agent",
                Admin => "admin",
            }]),
        );
        let params: Vec<Value> = path_params(op.path)
            .into_iter()
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .chain(query_params(&op.method, op.path).iter().map(|q| {
                json!({ "name": q.name, "in": "query", "required": false, "description": q.description, "schema": (q.schema)() })
            }))
            .collect();
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        o.insert(
            "security".into(),
            match op.auth {
                Public => json!([]),
                Agent => json!([{ "agentCredential": [] }]),
                Admin => json!([{ "adminToken": [] }]),
            },
        );
        if let Some(body) = op.body {
            o.insert(
                "requestBody".into(),
                json!({ "required": true, "content": content(body, &mut schemas) }),
            );
        }
        let mut replies = Map::new();
        for r in op.replies {
            let mut reply = Map::new();
            reply.insert("description".into(), json!(r.description));
            if let Some(c) = r.content {
                reply.insert("content".into(), content(c, &mut schemas));
            }
            replies.insert(r.status.to_string(), Value::Object(reply));
        }
        for status in &error_statuses {
            replies.entry(status.to_string()).or_insert_with(|| {
                json!({
                    "description": "Refused: the body names a stable code of the catalog and what to do",
                    "content": { "application/json": { "schema": error_ref.clone() } }
                })
            });
        }
        o.insert("responses".into(), Value::Object(replies));
        let item = paths
            .entry(openapi_path(op.path))
            .or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            item.insert(op.method.as_str().to_lowercase(), Value::Object(o));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tether control plane API",
            "version": tether_wire::VERSION,
            "description": "Admin routes take an admin token, agent routes the agent's credential, both as `Authorization: Bearer`. Every refusal is an `ApiError` with a stable code (docs/errors.md)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "An admin token (`tether admin-tokens create`, or the one the server wrote at its first start)." },
                "agentCredential": { "type": "http", "scheme": "bearer", "description": "The credential an agent received at enrollment." }
            }
        }
    })
}

/// `GET /v1/openapi.json`: no authentication; the document only changes
/// with the server's version, so caches may keep it.
pub async fn serve() -> Response {
    let mut response = axum::Json(document()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router and the table name the same operations.
    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let served: BTreeSet<(String, String)> = super::super::registered()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p))
            .collect();
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|o| (o.method.to_string(), o.path.to_string()))
            .collect();
        assert_eq!(
            OPERATIONS.len(),
            documented.len(),
            "an operation is in the table twice"
        );
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "routes not in the OpenAPI table: {undocumented:?}; documented but not routed: {unserved:?}"
        );
    }

    /// Every `$ref` in the document resolves to a component schema.
    #[test]
    fn every_query_parameter_belongs_to_a_documented_operation() {
        for (method, path, params) in QUERY_PARAMS {
            assert!(
                OPERATIONS
                    .iter()
                    .any(|op| op.method == *method && op.path == *path),
                "{method} {path} has query parameters but is not in OPERATIONS"
            );
            let doc = &document()["paths"][openapi_path(path)][method.as_str().to_lowercase()];
            let listed: Vec<&str> = doc["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let want: Vec<&str> = params.iter().map(|q| q.name).collect();
            assert_eq!(listed, want, "{method} {path}");
        }
        // The enums are the wire spellings the handlers parse.
        let status =
            &document()["paths"]["/v1/admin/agents"]["get"]["parameters"][0]["schema"]["enum"];
        assert_eq!(status, &json!(["pending", "active", "inactive", "stopped"]));
        let kind =
            &document()["paths"]["/v1/admin/tasks"]["get"]["parameters"][1]["schema"]["enum"];
        for k in kind.as_array().expect("enum") {
            let k = k.as_str().expect("string");
            assert!(k.parse::<TaskKind>().is_ok(), "{k}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas is an object");
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(refs.len() > 50, "only {} references", refs.len());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
            assert!(schemas.contains_key(name), "{r} is not defined");
        }
        assert!(schemas.contains_key("ApiError"));
        let codes = &schemas["ErrorCode"]["enum"];
        assert_eq!(
            codes.as_array().map(Vec::len),
            Some(ErrorCode::ALL.len()),
            "the error code schema lists the catalog"
        );
    }

    /// The document round-trips through its own text.
    #[test]
    fn the_document_parses() {
        let text = serde_json::to_string(document()).expect("serializes");
        let back: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(&back, document());
        let paths = back["paths"].as_object().expect("paths");
        for op in OPERATIONS {
            let item = &paths[&openapi_path(op.path)];
            let o = &item[op.method.as_str().to_lowercase()];
            assert!(o.is_object(), "{} {} missing", op.method, op.path);
            for p in path_params(op.path) {
                assert!(
                    openapi_path(op.path).contains(&format!("{{{p}}}")),
                    "{p} is not in {}",
                    op.path
                );
            }
        }
    }

    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
