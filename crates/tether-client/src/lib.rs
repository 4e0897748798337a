//! The control plane's API client, shared by the agent and the admin CLI.
//!
//! Every call opens a fresh connection through the one transport path
//! (agents call about every 30 s, so keeping connections alive buys little
//! and costs memory). Replies are classified strictly: a Tether error body
//! becomes [`ClientError::Api`], anything that does not look like a Tether
//! server (a captive portal, a proxy's block page) becomes
//! [`ClientError::NotTether`] with a short sanitized snippet, never a
//! confusing JSON error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_transport::{TlsInfo, Transport, TransportError};
use tether_wire::{
    ActionInfo, ActionKind, ActionResult, AgentDetail, AgentStatus, AgentSummary, ApiError,
    BundleInfo, ChannelSummary, CheckinRequest, CheckinResponse, Clock, CreateTokenRequest,
    CreatedToken, DefsVersion, EnrollRequest, EnrollResponse, ErrorCode, Health, Policy,
    PolicyUpdate, ShutdownNotice, SystemClock, TokenInfo,
};
use uuid::Uuid;

/// The longest snippet of a non-Tether reply that is kept.
pub const SNIPPET_MAX_CHARS: usize = 160;

/// A client of one control plane.
#[derive(Clone)]
pub struct ApiClient {
    transport: Transport,
    /// The transport for bulk transfers (definitions publish and export),
    /// whose body cap and HTTP timeout are sized for whole definitions files;
    /// `None`: the ordinary transport and its cap.
    bulk: Option<Transport>,
    base: url::Url,
    bearer: Option<SharedBearer>,
    clock: Arc<dyn Clock>,
}

/// A bearer secret shared by clients, which can be replaced while they run:
/// an agent whose credential was rotated in place (by `tether-agent capture
/// --tls-keylog`, maybe in another process) switches every client to the
/// new one at once. Clones share the secret.
#[derive(Clone)]
pub struct SharedBearer(Arc<std::sync::RwLock<String>>);

impl SharedBearer {
    pub fn new(secret: impl Into<String>) -> Self {
        SharedBearer(Arc::new(std::sync::RwLock::new(secret.into())))
    }

    /// The secret now.
    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the secret; returns whether it changed.
    pub fn replace(&self, secret: &str) -> bool {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        if *current == secret {
            return false;
        }
        *current = secret.to_owned();
        true
    }
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request never got an HTTP answer (DNS, TCP, proxy, TLS, timeout).
    #[error("{code}: {err}. Action: {action}", code = .0.code(), err = .0, action = .0.code().action())]
    Transport(#[from] TransportError),
    /// The server answered with a Tether error body.
    #[error("{error} (HTTP {status})")]
    Api {
        status: u16,
        error: ApiError,
        retry_after: Option<Duration>,
    },
    /// Something that is not a Tether server answered (captive portal, proxy
    /// block page, HTML…).
    #[error(
        "{}: {} Got HTTP {status} with content type {} and body {snippet:?}. Action: {}",
        ErrorCode::HttpNotTether,
        ErrorCode::HttpNotTether.problem(),
        content_type.as_deref().unwrap_or("(none)"),
        ErrorCode::HttpNotTether.action()
    )]
    NotTether {
        status: u16,
        content_type: Option<String>,
        snippet: String,
    },
    /// A Tether-looking 2xx whose body does not decode.
    #[error(
        "{}: the server's reply does not match the API schema: {detail}",
        ErrorCode::HttpProtocol
    )]
    Decode { detail: String },
}

impl ClientError {
    /// The stable error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Transport(e) => e.code(),
            ClientError::Api { error, .. } => error.code,
            ClientError::NotTether { .. } => ErrorCode::HttpNotTether,
            ClientError::Decode { .. } => ErrorCode::HttpProtocol,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may succeed later without anyone changing
    /// anything (network blips, overload), as opposed to needing a fix.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Transport(e) => e.is_retriable(),
            ClientError::Api { status, error, .. } => {
                matches!(
                    error.code,
                    ErrorCode::RateLimited | ErrorCode::StoreUnavailable | ErrorCode::Internal
                ) || matches!(status, 429 | 502 | 503 | 504)
            }
            // A portal or an overloaded proxy may go away by itself.
            ClientError::NotTether { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ClientError::Decode { .. } => false,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::NotTether { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// The answer to a call, before decoding, with the TLS facts of its
/// connection (enrollment saves the presented CA from them).
struct Exchange {
    response: tether_transport::Response,
    tls: Option<TlsInfo>,
}

impl ApiClient {
    pub fn new(transport: Transport, base: url::Url) -> Self {
        ApiClient {
            transport,
            bulk: None,
            base,
            bearer: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Authenticates every call with `Authorization: Bearer <secret>`.
    pub fn with_bearer(mut self, secret: impl Into<String>) -> Self {
        self.bearer = Some(SharedBearer::new(secret));
        self
    }

    /// Authenticates every call with the shared secret as it is at the time
    /// of the call.
    pub fn with_shared_bearer(mut self, bearer: SharedBearer) -> Self {
        self.bearer = Some(bearer);
        self
    }

    /// The secret this client authenticates with, to share or replace.
    pub fn shared_bearer(&self) -> Option<&SharedBearer> {
        self.bearer.as_ref()
    }

    /// The clock used to read HTTP-date Retry-After values.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `transport` for bulk transfers: `publish_defs` and
    /// `export_defs`. The ordinary transport's body cap is sized for JSON
    /// replies (and bundles), so an export larger than it fails with
    /// `BodyTooLarge` unless a transport with a larger cap (and a longer
    /// HTTP timeout) is given here. The cap stays explicit on purpose: the
    /// whole body is held in memory.
    pub fn with_bulk_transport(mut self, transport: Transport) -> Self {
        self.bulk = Some(transport);
        self
    }

    /// The transport bulk transfers use.
    pub fn bulk_transport(&self) -> &Transport {
        self.bulk.as_ref().unwrap_or(&self.transport)
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        let h: Health = self.json(http::Method::GET, "/health", None::<&()>).await?;
        if h.service != "tether" {
            return Err(ClientError::NotTether {
                status: 200,
                content_type: Some("application/json".into()),
                snippet: sanitize_snippet(format!("service={:?}", h.service).as_bytes()),
            });
        }
        Ok(h)
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        Ok(self.enroll_with_tls(req).await?.0)
    }

    /// Enrolls and also returns the TLS facts of the connection, including
    /// the chain the server presented.
    pub async fn enroll_with_tls(
        &self,
        req: &EnrollRequest,
    ) -> Result<(EnrollResponse, Option<TlsInfo>), ClientError> {
        let ex = self
            .exchange(http::Method::POST, "/v1/enroll", Some(req))
            .await?;
        let tls = ex.tls.clone();
        Ok((self.decode(ex)?, tls))
    }

    pub async fn checkin(&self, req: &CheckinRequest) -> Result<CheckinResponse, ClientError> {
        self.json(http::Method::POST, "/v1/agent/checkin", Some(req))
            .await
    }

    pub async fn shutdown(&self, notice: &ShutdownNotice) -> Result<(), ClientError> {
        self.empty(http::Method::POST, "/v1/agent/shutdown", Some(notice))
            .await
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreatedToken, ClientError> {
        self.json(http::Method::POST, "/v1/admin/tokens", Some(req))
            .await
    }

    /// Every token, following the server's pages.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.all_pages("/v1/admin/tokens").await
    }

    /// The read-only credential probe (it records nothing).
    pub async fn probe(&self) -> Result<tether_wire::AgentProbe, ClientError> {
        self.json(http::Method::GET, "/v1/agent/probe", None::<&()>)
            .await
    }

    /// `POST /v1/agent/credential/rotate`: the agent's next credential.
    pub async fn rotate_credential(&self) -> Result<tether_wire::RotatedCredential, ClientError> {
        self.json(
            http::Method::POST,
            "/v1/agent/credential/rotate",
            None::<&()>,
        )
        .await
    }

    pub async fn create_admin_token(
        &self,
        req: &tether_wire::CreateAdminTokenRequest,
    ) -> Result<tether_wire::CreatedAdminToken, ClientError> {
        self.json(http::Method::POST, "/v1/admin/admin-tokens", Some(req))
            .await
    }

    /// Every admin credential, revoked ones included, following the pages.
    pub async fn list_admin_tokens(&self) -> Result<Vec<tether_wire::AdminTokenInfo>, ClientError> {
        self.all_pages("/v1/admin/admin-tokens").await
    }

    pub async fn revoke_admin_token(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::AdminTokenInfo, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/admin-tokens/{id}/revoke"),
            None::<&()>,
        )
        .await
    }

    pub async fn rotate_admin_token(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::CreatedAdminToken, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/admin-tokens/{id}/rotate"),
            None::<&()>,
        )
        .await
    }

    /// One page of the admin audit log, newest first, and the next page's
    /// cursor if more follow. `actor` and `since` are passed as given (the
    /// server reads `since` as RFC 3339 or a duration back from its clock).
    pub async fn audit_page(
        &self,
        actor: Option<&str>,
        since: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<tether_wire::AuditEntry>, Option<String>), ClientError> {
        let mut path = format!("/v1/admin/audit?limit={limit}");
        for (key, value) in [("actor", actor), ("since", since), ("after", after)] {
            if let Some(value) = value {
                path.push_str(&format!("&{key}={}", percent_encode_segment(value)));
            }
        }
        let ex = self.exchange(http::Method::GET, &path, None::<&()>).await?;
        let next = ex
            .response
            .headers
            .get(tether_wire::NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((self.decode(ex)?, next))
    }

    /// GETs `path` and every following page the server points to with its
    /// `tether-next-cursor` header, so a list is never cut short.
    pub async fn all_pages<R: DeserializeOwned>(&self, path: &str) -> Result<Vec<R>, ClientError> {
        /// A server that never stops handing out cursors is refused
        /// rather than followed forever: 10,000 pages of up to 1,000 rows.
        const MAX_PAGES: usize = 10_000;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page_path = match &after {
                None => path.to_owned(),
                Some(cursor) => format!(
                    "{path}{}after={}",
                    if path.contains('?') { '&' } else { '?' },
                    percent_encode_segment(cursor)
                ),
            };
            let ex = self
                .exchange(http::Method::GET, &page_path, None::<&()>)
                .await?;
            let next = ex
                .response
                .headers
                .get(tether_wire::NEXT_CURSOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let rows: Vec<R> = self.decode(ex)?;
            let empty = rows.is_empty();
            out.extend(rows);
            match next {
                Some(n) if !empty && after.as_deref() != Some(n.as_str()) => after = Some(n),
                _ => return Ok(out),
            }
        }
        Err(ClientError::Decode {
            detail: format!("{path}: the server handed out more than {MAX_PAGES} pages"),
        })
    }

    pub async fn revoke_token(&self, id: Uuid) -> Result<TokenInfo, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/tokens/{id}/revoke"),
            None::<&()>,
        )
        .await
    }

    /// Every agent (with `status`, if given), following the server's pages.
    pub async fn list_agents(
        &self,
        status: Option<AgentStatus>,
    ) -> Result<Vec<AgentSummary>, ClientError> {
        let path = match status {
            Some(s) => format!("/v1/admin/agents?status={s}"),
            None => "/v1/admin/agents".to_owned(),
        };
        self.all_pages(&path).await
    }

    pub async fn agent(&self, id: Uuid) -> Result<AgentDetail, ClientError> {
        self.json(
            http::Method::GET,
            &format!("/v1/admin/agents/{id}"),
            None::<&()>,
        )
        .await
    }

    pub async fn approve_agent(&self, id: Uuid) -> Result<AgentSummary, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/agents/{id}/approve"),
            None::<&()>,
        )
        .await
    }

    pub async fn remove_agent(&self, id: Uuid) -> Result<(), ClientError> {
        self.empty(
            http::Method::DELETE,
            &format!("/v1/admin/agents/{id}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/releases`.
    pub async fn releases(&self) -> Result<Vec<tether_wire::Release>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/releases", None::<&()>)
            .await
    }

    /// `GET /v1/admin/rollouts`.
    pub async fn rollouts(&self) -> Result<Vec<tether_wire::Rollout>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/rollouts", None::<&()>)
            .await
    }

    /// `PUT /v1/admin/rollouts/{group}`.
    pub async fn put_rollout(
        &self,
        group: &str,
        update: &tether_wire::RolloutUpdate,
    ) -> Result<tether_wire::Rollout, ClientError> {
        let group = percent_encode_segment(group);
        self.json(
            http::Method::PUT,
            &format!("/v1/admin/rollouts/{group}"),
            Some(update),
        )
        .await
    }

    /// `POST /v1/admin/rollouts/{group}/pause`.
    pub async fn pause_rollout(
        &self,
        group: &str,
        reason: Option<&str>,
    ) -> Result<tether_wire::Rollout, ClientError> {
        let group = percent_encode_segment(group);
        let body = tether_wire::RolloutPause {
            reason: reason.map(str::to_owned),
        };
        self.json(
            http::Method::POST,
            &format!("/v1/admin/rollouts/{group}/pause"),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/admin/rollouts/{group}/{resume|promote}`.
    pub async fn rollout_step(
        &self,
        group: &str,
        step: &str,
    ) -> Result<tether_wire::Rollout, ClientError> {
        let group = percent_encode_segment(group);
        let step = percent_encode_segment(step);
        self.json(
            http::Method::POST,
            &format!("/v1/admin/rollouts/{group}/{step}"),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /v1/admin/rollouts/{group}`.
    pub async fn delete_rollout(&self, group: &str) -> Result<(), ClientError> {
        let group = percent_encode_segment(group);
        self.empty(
            http::Method::DELETE,
            &format!("/v1/admin/rollouts/{group}"),
            None::<&()>,
        )
        .await
    }

    pub async fn list_policies(&self) -> Result<Vec<Policy>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/policies", None::<&()>)
            .await
    }

    pub async fn put_policy(
        &self,
        name: &str,
        update: &PolicyUpdate,
    ) -> Result<Policy, ClientError> {
        let name = percent_encode_segment(name);
        self.json(
            http::Method::PUT,
            &format!("/v1/admin/policies/{name}"),
            Some(update),
        )
        .await
    }

    /// `POST /v1/agent/bundles`: uploads an escalation bundle (tar.gz bytes).
    pub async fn upload_bundle(&self, data: Vec<u8>) -> Result<BundleInfo, ClientError> {
        let url = self.url("/v1/agent/bundles")?;
        let mut request = self.build_request(http::Method::POST, &url, None::<&()>)?;
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/gzip"),
        );
        *request.body_mut() = Bytes::from(data);
        let ex = self.send_request(&url, request).await?;
        self.decode(ex)
    }

    /// `POST /v1/agent/actions/{id}/result`.
    pub async fn complete_action(
        &self,
        id: Uuid,
        result: &ActionResult,
    ) -> Result<ActionInfo, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/agent/actions/{id}/result"),
            Some(result),
        )
        .await
    }

    /// `POST /v1/admin/agents/{id}/actions`.
    pub async fn queue_action(
        &self,
        agent: Uuid,
        kind: &ActionKind,
    ) -> Result<ActionInfo, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/agents/{agent}/actions"),
            Some(kind),
        )
        .await
    }

    pub async fn list_actions(&self, agent: Uuid) -> Result<Vec<ActionInfo>, ClientError> {
        self.json(
            http::Method::GET,
            &format!("/v1/admin/agents/{agent}/actions"),
            None::<&()>,
        )
        .await
    }

    pub async fn list_bundles(&self, agent: Uuid) -> Result<Vec<BundleInfo>, ClientError> {
        self.json(
            http::Method::GET,
            &format!("/v1/admin/agents/{agent}/bundles"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/bundles/{id}`: the gzip bytes. Anything but a gzip
    /// reply is not our server's answer.
    pub async fn download_bundle(&self, id: Uuid) -> Result<Vec<u8>, ClientError> {
        let ex = self
            .exchange(
                http::Method::GET,
                &format!("/v1/admin/bundles/{id}"),
                None::<&()>,
            )
            .await?;
        self.classify(&ex.response)?;
        let gzip = content_type(&ex.response).is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/gzip")
        });
        if !gzip {
            return Err(not_tether(&ex.response));
        }
        Ok(ex.response.body.to_vec())
    }

    /// `POST /v1/admin/defs/{channel}/versions?notes=…`: publishes `content`
    /// as the channel's next version (sent as `application/octet-stream`
    /// over the bulk transport).
    pub async fn publish_defs(
        &self,
        channel: &str,
        content: Bytes,
        notes: Option<&str>,
    ) -> Result<DefsVersion, ClientError> {
        let mut path = format!(
            "/v1/admin/defs/{}/versions",
            percent_encode_segment(channel)
        );
        if let Some(notes) = notes {
            path.push_str("?notes=");
            path.push_str(&percent_encode_segment(notes));
        }
        let url = self.url(&path)?;
        let mut request = self.build_request(http::Method::POST, &url, None::<&()>)?;
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        *request.body_mut() = content;
        let ex = self.send_on(self.bulk_transport(), &url, request).await?;
        self.decode(ex)
    }

    /// `GET /v1/admin/defs/summary[?channel=]`: every channel, or one.
    pub async fn defs_summary(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<ChannelSummary>, ClientError> {
        let path = match channel {
            Some(c) => format!(
                "/v1/admin/defs/summary?channel={}",
                percent_encode_segment(c)
            ),
            None => "/v1/admin/defs/summary".to_owned(),
        };
        self.json(http::Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/admin/defs/{channel}/export`: the offline bundle (tar) for
    /// `tether agent defs import`, over the bulk transport. Only a tar or
    /// octet-stream reply is our server's answer.
    pub async fn export_defs(&self, channel: &str) -> Result<Bytes, ClientError> {
        let url = self.url(&format!(
            "/v1/admin/defs/{}/export",
            percent_encode_segment(channel)
        ))?;
        let request = self.build_request(http::Method::GET, &url, None::<&()>)?;
        let ex = self.send_on(self.bulk_transport(), &url, request).await?;
        self.classify(&ex.response)?;
        let binary = content_type(&ex.response).is_some_and(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            ["application/x-tar", "application/octet-stream"]
                .iter()
                .any(|t| essence.eq_ignore_ascii_case(t))
        });
        if !binary {
            return Err(not_tether(&ex.response));
        }
        Ok(ex.response.body)
    }

    /// `POST /v1/admin/groups/{group}/actions`: queues `kind` for every agent
    /// of the group; one action per agent.
    pub async fn queue_group_action(
        &self,
        group: &str,
        kind: &ActionKind,
    ) -> Result<Vec<ActionInfo>, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/groups/{}/actions", percent_encode_segment(group)),
            Some(kind),
        )
        .await
    }

    /// `POST /v1/admin/tasks`: the reply is a `TaskInfo`, or a
    /// `ScheduleInfo` when the request has a schedule.
    pub async fn create_task(
        &self,
        task: &tether_wire::NewTask<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        self.json(http::Method::POST, "/v1/admin/tasks", Some(task))
            .await
    }

    /// `GET /v1/admin/tasks?…`; `query` is the URL query (without `?`).
    /// The discovery inventory, every page; `query` holds the filters
    /// (`expiring=30d`, `verdict=expired`), already encoded.
    pub async fn list_certs(&self, query: &str) -> Result<Vec<tether_wire::CertInfo>, ClientError> {
        let path = if query.is_empty() {
            "/v1/admin/certs".to_owned()
        } else {
            format!("/v1/admin/certs?{query}")
        };
        self.all_pages(&path).await
    }

    /// One certificate of the inventory, its chain and where it was seen.
    pub async fn cert(&self, fingerprint: &str) -> Result<tether_wire::CertDetail, ClientError> {
        self.json(
            http::Method::GET,
            &format!("/v1/admin/certs/{}", percent_encode_segment(fingerprint)),
            None::<&()>,
        )
        .await
    }

    pub async fn list_tasks(
        &self,
        query: &str,
    ) -> Result<Vec<tether_wire::TaskInfo<serde_json::Value>>, ClientError> {
        let path = if query.is_empty() {
            "/v1/admin/tasks".to_owned()
        } else {
            format!("/v1/admin/tasks?{query}")
        };
        self.json(http::Method::GET, &path, None::<&()>).await
    }

    pub async fn task(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::TaskDetail<serde_json::Value>, ClientError> {
        self.json(
            http::Method::GET,
            &format!("/v1/admin/tasks/{id}"),
            None::<&()>,
        )
        .await
    }

    pub async fn cancel_task(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::TaskInfo<serde_json::Value>, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/tasks/{id}/cancel"),
            None::<&()>,
        )
        .await
    }

    /// Releases a deploy held for an admin's approval.
    pub async fn approve_task(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::TaskInfo<serde_json::Value>, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/tasks/{id}/approve"),
            None::<&()>,
        )
        .await
    }

    /// Ends a deploy held for an admin's approval, cancelled with `reason`.
    pub async fn reject_task(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<tether_wire::TaskInfo<serde_json::Value>, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/tasks/{id}/reject"),
            Some(&tether_wire::RejectTask {
                reason: reason.to_owned(),
            }),
        )
        .await
    }

    pub async fn retry_task(
        &self,
        id: Uuid,
    ) -> Result<tether_wire::TaskInfo<serde_json::Value>, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/admin/tasks/{id}/retry"),
            None::<&()>,
        )
        .await
    }

    pub async fn schedules(
        &self,
    ) -> Result<Vec<tether_wire::ScheduleInfo<serde_json::Value>>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/schedules", None::<&()>)
            .await
    }

    pub async fn delete_schedule(&self, id: Uuid) -> Result<(), ClientError> {
        self.empty(
            http::Method::DELETE,
            &format!("/v1/admin/schedules/{id}"),
            None::<&()>,
        )
        .await
    }

    pub async fn put_site(&self, name: &str, tz: &str) -> Result<tether_wire::Site, ClientError> {
        self.json(
            http::Method::PUT,
            &format!("/v1/admin/sites/{}", percent_encode_segment(name)),
            Some(&tether_wire::SiteUpdate { tz: tz.to_owned() }),
        )
        .await
    }

    /// `GET /v1/fleet/diagnosis`, reading at most `limit` agents (the
    /// server's default when `None`).
    pub async fn fleet_diagnosis(
        &self,
        limit: Option<u32>,
    ) -> Result<tether_wire::FleetDiagnosis, ClientError> {
        let path = match limit {
            Some(n) => format!("/v1/fleet/diagnosis?limit={n}"),
            None => "/v1/fleet/diagnosis".to_owned(),
        };
        self.json(http::Method::GET, &path, None::<&()>).await
    }

    pub async fn sites(&self) -> Result<Vec<tether_wire::Site>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/sites", None::<&()>)
            .await
    }

    pub async fn set_agent_site(&self, agent: Uuid, site: Option<&str>) -> Result<(), ClientError> {
        self.empty(
            http::Method::PUT,
            &format!("/v1/admin/agents/{agent}/site"),
            Some(&tether_wire::AgentSiteUpdate {
                site: site.map(str::to_owned),
            }),
        )
        .await
    }

    /// `POST /v1/agent/tasks/poll`: held by the server up to `wait_secs`;
    /// the transport's HTTP timeout must be longer.
    pub async fn poll_tasks(
        &self,
        poll: &tether_wire::TaskPoll,
    ) -> Result<tether_wire::TaskPollReply<serde_json::Value>, ClientError> {
        self.json(http::Method::POST, "/v1/agent/tasks/poll", Some(poll))
            .await
    }

    pub async fn task_heartbeat(
        &self,
        id: Uuid,
        hb: &tether_wire::Heartbeat,
    ) -> Result<tether_wire::HeartbeatReply, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/agent/tasks/{id}/heartbeat"),
            Some(hb),
        )
        .await
    }

    pub async fn task_result(
        &self,
        id: Uuid,
        chunk: &tether_wire::ResultChunk<serde_json::Value>,
    ) -> Result<tether_wire::ResultAck, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/agent/tasks/{id}/results"),
            Some(chunk),
        )
        .await
    }

    /// `POST /v1/agent/tasks/{id}/issue`: the built-in CA signs the CSR of
    /// a deploy task leased to this agent.
    pub async fn issue_cert(
        &self,
        id: Uuid,
        req: &tether_wire::IssueRequest,
    ) -> Result<tether_wire::IssueResponse, ClientError> {
        self.json(
            http::Method::POST,
            &format!("/v1/agent/tasks/{id}/issue"),
            Some(req),
        )
        .await
    }

    /// `POST /v1/agent/tasks/{id}/issue` for a deploy whose issuer may be
    /// an ACME CA: the certificate (200), or the challenges to serve
    /// before asking again with the order (202).
    pub async fn issue_cert_reply(
        &self,
        id: Uuid,
        req: &tether_wire::IssueRequest,
    ) -> Result<IssueReply, ClientError> {
        let ex = self
            .exchange(
                http::Method::POST,
                &format!("/v1/agent/tasks/{id}/issue"),
                Some(req),
            )
            .await?;
        if ex.response.status == 202 {
            self.decode(ex).map(IssueReply::Pending)
        } else {
            self.decode(ex).map(IssueReply::Issued)
        }
    }

    /// `GET /v1/admin/acme-issuers`.
    pub async fn acme_issuers(&self) -> Result<tether_wire::AcmeIssuerList, ClientError> {
        self.json(http::Method::GET, "/v1/admin/acme-issuers", None::<&()>)
            .await
    }

    /// `POST /v1/admin/acme-issuers`: registers an account with the CA.
    pub async fn add_acme_issuer(
        &self,
        req: &tether_wire::AcmeIssuerAdd,
    ) -> Result<tether_wire::AcmeIssuerInfo, ClientError> {
        self.json(http::Method::POST, "/v1/admin/acme-issuers", Some(req))
            .await
    }

    /// `DELETE /v1/admin/acme-issuers/{name}`.
    pub async fn remove_acme_issuer(&self, name: &str) -> Result<(), ClientError> {
        self.empty(
            http::Method::DELETE,
            &format!("/v1/admin/acme-issuers/{}", percent_encode_segment(name)),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/certs/{fingerprint}/history`.
    /// `POST /v1/admin/certs/{fingerprint}/renew`.
    pub async fn renew_cert(
        &self,
        fingerprint: &str,
    ) -> Result<tether_wire::RenewalInfo, ClientError> {
        self.json(
            http::Method::POST,
            &format!(
                "/v1/admin/certs/{}/renew",
                percent_encode_segment(fingerprint)
            ),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/renewals`.
    pub async fn renewals(&self) -> Result<Vec<tether_wire::RenewalInfo>, ClientError> {
        self.json(http::Method::GET, "/v1/admin/renewals", None::<&()>)
            .await
    }

    /// `PUT /v1/admin/renewal-policies`.
    pub async fn set_renewal_policy(
        &self,
        update: &tether_wire::RenewalPolicyUpdate,
    ) -> Result<tether_wire::RenewalPolicy, ClientError> {
        self.json(
            http::Method::PUT,
            "/v1/admin/renewal-policies",
            Some(update),
        )
        .await
    }

    pub async fn cert_history(
        &self,
        fingerprint: &str,
    ) -> Result<tether_wire::CertHistory, ClientError> {
        self.json(
            http::Method::GET,
            &format!(
                "/v1/admin/certs/{}/history",
                percent_encode_segment(fingerprint)
            ),
            None::<&()>,
        )
        .await
    }

    /// Revokes a certificate the built-in CA issued (idempotent).
    pub async fn revoke_cert(
        &self,
        fingerprint: &str,
        reason: tether_wire::RevocationReason,
    ) -> Result<tether_wire::RevokeResponse, ClientError> {
        self.json(
            http::Method::POST,
            &format!(
                "/v1/admin/certs/{}/revoke",
                percent_encode_segment(fingerprint)
            ),
            Some(&tether_wire::RevokeRequest { reason }),
        )
        .await
    }

    /// A JSON call whose 2xx reply has a JSON body.
    pub async fn json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let ex = self.exchange(method, path, body).await?;
        self.decode(ex)
    }

    /// A JSON call whose 2xx reply has no body worth reading (204).
    pub async fn empty<B: Serialize + ?Sized>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        let ex = self.exchange(method, path, body).await?;
        self.classify(&ex.response).map(|_| ())
    }

    fn build_request<B: Serialize + ?Sized>(
        &self,
        method: http::Method,
        url: &url::Url,
        body: Option<&B>,
    ) -> Result<http::Request<Bytes>, ClientError> {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::ACCEPT, "application/json");
        if let Some(bearer) = &self.bearer {
            let secret = bearer.get();
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        let bytes = match body {
            Some(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                    detail: e.to_string(),
                })?)
            }
            None => Bytes::new(),
        };
        // The secret is never part of the error: `http` only reports which
        // part of the request was invalid.
        builder.body(bytes).map_err(|e| ClientError::Decode {
            detail: format!("cannot build the request: {e}"),
        })
    }

    async fn exchange<B: Serialize + ?Sized>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Exchange, ClientError> {
        let url = self.url(path)?;
        let request = self.build_request(method, &url, body)?;
        self.send_request(&url, request).await
    }

    async fn send_request(
        &self,
        url: &url::Url,
        request: http::Request<Bytes>,
    ) -> Result<Exchange, ClientError> {
        self.send_on(&self.transport, url, request).await
    }

    async fn send_on(
        &self,
        transport: &Transport,
        url: &url::Url,
        request: http::Request<Bytes>,
    ) -> Result<Exchange, ClientError> {
        let mut conn = transport.connect(url).await?;
        let tls = Some(conn.tls.clone());
        let response = conn.send(request).await?;
        Ok(Exchange { response, tls })
    }

    fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        // Keep a base path prefix (a server behind a reverse proxy at /tether).
        let base = self.base.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}{path}")).map_err(|e| ClientError::Decode {
            detail: format!("cannot build the URL for {path}: {e}"),
        })
    }

    fn decode<R: DeserializeOwned>(&self, ex: Exchange) -> Result<R, ClientError> {
        let response = &ex.response;
        self.classify(response)?;
        if !is_json(response) {
            return Err(not_tether(response));
        }
        serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode {
            detail: e.to_string(),
        })
    }

    /// Ok for a 2xx; the right error otherwise.
    fn classify(&self, response: &tether_transport::Response) -> Result<(), ClientError> {
        if (200..300).contains(&response.status) {
            return Ok(());
        }
        if is_json(response)
            && let Ok(error) = serde_json::from_slice::<ApiError>(&response.body)
        {
            return Err(ClientError::Api {
                status: response.status,
                error,
                retry_after: response.retry_after(self.clock.now()),
            });
        }
        Err(not_tether(response))
    }
}

/// What an issue call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueReply {
    /// The certificate.
    Issued(tether_wire::IssueResponse),
    /// An ACME order's challenges to serve (or, with the same order and no
    /// challenges, "still validating: keep serving and ask again").
    Pending(tether_wire::IssuePending),
}

fn content_type(response: &tether_transport::Response) -> Option<String> {
    response
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| sanitize_snippet(v.as_bytes()))
}

fn is_json(response: &tether_transport::Response) -> bool {
    content_type(response).is_some_and(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence == "application/json" || essence.ends_with("+json")
    })
}

fn not_tether(response: &tether_transport::Response) -> ClientError {
    ClientError::NotTether {
        status: response.status,
        content_type: content_type(response),
        snippet: sanitize_snippet(&response.body),
    }
}

/// The first [`SNIPPET_MAX_CHARS`] characters of a hostile body as one line
/// of printable text: control characters become spaces, runs of whitespace
/// collapse, and invalid UTF-8 is replaced.
pub fn sanitize_snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(SNIPPET_MAX_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut count = 0;
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        if count == SNIPPET_MAX_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_owned()
}

fn percent_encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short_single_line_and_printable() {
        assert_eq!(
            sanitize_snippet(b"<html>\r\n  <title>Login</title>\x1b[31m"),
            "<html> <title>Login</title> [31m"
        );
        let long = sanitize_snippet(&[b'a'; 10_000]);
        assert_eq!(long.chars().count(), SNIPPET_MAX_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(sanitize_snippet(&[0xff, 0xfe, b'x']), "\u{fffd}\u{fffd}x");
        assert_eq!(sanitize_snippet(b""), "");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(percent_encode_segment("default"), "default");
        assert_eq!(percent_encode_segment("a b/../c"), "a%20b%2F..%2Fc");
    }
}
