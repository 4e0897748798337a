//! The client against a real HTTPS server on loopback (the lab's
//! canned server, `tether_testlab::canned`), covering every reply class.

use std::time::Duration;

use tether_client::{ApiClient, ClientError};
use tether_testlab::canned::{CannedReply, TestServer};
use tether_transport::Transport;
use tether_wire::{
    AgentKind, AgentStatus, ApiError, EnrollRequest, EnrollResponse, ErrorCode, Health, HostFacts,
    Policy, ShutdownNotice, StoreHealth,
};
use time::macros::datetime;
use uuid::Uuid;

fn client(server: &TestServer) -> ApiClient {
    let transport = Transport::new(server.transport_config()).expect("transport builds");
    ApiClient::new(transport, server.url())
}

fn api_error(code: ErrorCode) -> ApiError {
    ApiError::new(
        code,
        format!("specific problem for {code}"),
        datetime!(2026-05-17 12:00 UTC),
    )
}

fn health() -> Health {
    Health {
        service: "tether".into(),
        status: "ok".into(),
        version: "0.1.0".into(),
        store: StoreHealth {
            backend: "sqlite".into(),
            ok: true,
            error: None,
        },
        server_time: datetime!(2026-05-17 12:00 UTC),
        jobs: vec!["status-sweeper".into()],
    }
}

fn policy() -> Policy {
    Policy {
        defs: Default::default(),
        name: "default".into(),
        revision: 1,
        checkin_interval_secs: 30,
        jitter_percent: 10,
        targets: Vec::new(),
        max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
    }
}

#[tokio::test]
async fn health_decodes_and_a_foreign_service_is_not_tether() {
    let server = TestServer::scripted(vec![
        CannedReply::json(200, &health()),
        CannedReply::json(
            200,
            &Health {
                service: "other".into(),
                ..health()
            },
        ),
    ])
    .await;
    let c = client(&server);
    assert_eq!(c.health().await.expect("healthy"), health());
    let err = c.health().await.expect_err("foreign");
    assert_eq!(err.code(), ErrorCode::HttpNotTether);
    let reqs = server.requests();
    assert_eq!(reqs[0].method, http::Method::GET);
    assert_eq!(reqs[0].path, "/health");
    assert!(
        reqs[0].headers.get("authorization").is_none(),
        "health is unauthenticated"
    );
}

#[tokio::test]
async fn enroll_posts_json_and_returns_the_presented_chain() {
    let reply = EnrollResponse {
        defs_root: None,
        agent_id: Uuid::from_u128(1),
        credential: "agent-cred".into(),
        status: AgentStatus::Pending,
        kind: AgentKind::Connector,
        group: "g".into(),
        policy: policy(),
        server_time: datetime!(2026-05-17 12:00 UTC),
    };
    let server = TestServer::scripted(vec![CannedReply::json(200, &reply)]).await;
    let req = EnrollRequest {
        token: "tok".into(),
        name: "n".into(),
        kind: Some(AgentKind::Connector),
        agent_version: "0.1.0".into(),
        facts: HostFacts {
            hostname: "h".into(),
            ..Default::default()
        },
        previous_credential: None,
    };
    let (got, tls) = client(&server)
        .enroll_with_tls(&req)
        .await
        .expect("enrolls");
    assert_eq!(got, reply);
    let tls = tls.expect("TLS facts");
    assert!(
        tls.peer_chain_der.contains(&server.pki.ca_der),
        "the CA is in the chain"
    );
    let r = &server.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/enroll"));
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let sent: EnrollRequest = serde_json::from_slice(&r.body).expect("body is the request");
    assert_eq!(sent, req);
}

#[tokio::test]
async fn admin_calls_carry_the_bearer_and_build_paths() {
    let id = Uuid::from_u128(9);
    let server = TestServer::start(|r| match r.path.as_str() {
        "/v1/admin/agents?status=active" => CannedReply::json(200, &Vec::<()>::new()),
        p if p.starts_with("/v1/admin/agents/") => CannedReply::no_content(),
        "/v1/admin/policies/a%20b" => CannedReply::json(200, &policy()),
        _ => CannedReply::json(404, &api_error(ErrorCode::NotFound)),
    })
    .await;
    let c = client(&server).with_bearer("admin-secret");
    assert!(
        c.list_agents(Some(AgentStatus::Active))
            .await
            .expect("lists")
            .is_empty()
    );
    c.remove_agent(id).await.expect("204 is success");
    let update = tether_wire::PolicyUpdate {
        defs: Default::default(),
        checkin_interval_secs: 30,
        jitter_percent: 10,
        targets: Vec::new(),
        max_concurrent_tasks: None,
        if_revision: None,
    };
    assert_eq!(c.put_policy("a b", &update).await.expect("puts"), policy());
    let err = c.list_tokens().await.expect_err("404");
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.status(), Some(404));
    let reqs = server.requests();
    assert_eq!(reqs[1].method, http::Method::DELETE);
    assert_eq!(reqs[1].path, format!("/v1/admin/agents/{id}"));
    assert_eq!(reqs[2].method, http::Method::PUT);
    for r in &reqs {
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer admin-secret")
        );
    }
    assert!(
        !format!("{c:?}").contains("admin-secret"),
        "Debug redacts the bearer"
    );
}

#[tokio::test]
async fn api_errors_carry_code_status_and_retry_after() {
    let server = TestServer::scripted(vec![
        CannedReply::json(401, &api_error(ErrorCode::AgentCredentialRejected)),
        CannedReply::json(503, &api_error(ErrorCode::StoreUnavailable))
            .with_header("retry-after", "7"),
        CannedReply::json(429, &api_error(ErrorCode::RateLimited))
            .with_header("Retry-After", "Sun, 17 May 2026 12:01:30 GMT"),
    ])
    .await;
    let clock = tether_wire::ManualClock::new(datetime!(2026-05-17 12:00 UTC));
    let c = client(&server)
        .with_bearer("cred")
        .with_clock(std::sync::Arc::new(clock));
    let notice = ShutdownNotice {
        reason: "test".into(),
    };

    let err = c.shutdown(&notice).await.expect_err("401");
    assert_eq!(err.code(), ErrorCode::AgentCredentialRejected);
    assert!(!err.is_retriable());
    assert_eq!(err.retry_after(), None);
    assert!(
        err.to_string().contains("TETHER-E2201") && err.to_string().contains("HTTP 401"),
        "{err}"
    );

    let err = c.shutdown(&notice).await.expect_err("503");
    assert_eq!(err.code(), ErrorCode::StoreUnavailable);
    assert!(err.is_retriable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let err = c.shutdown(&notice).await.expect_err("429");
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(90)),
        "HTTP-date read against the injected clock"
    );
}

#[tokio::test]
async fn portals_and_block_pages_are_not_tether() {
    let page = "<html>\n<head><title>Welcome to Hotel WiFi</title></head>\n\x07<body>Please log in</body></html>";
    let server = TestServer::scripted(vec![
        CannedReply::raw(200, "text/html; charset=utf-8", page),
        CannedReply::raw(502, "text/html", "<h1>Bad gateway</h1>"),
        CannedReply::raw(403, "application/json", "{\"blocked\":true}"),
    ])
    .await;
    let c = client(&server);
    let err = c.list_policies().await.expect_err("portal");
    match &err {
        ClientError::NotTether {
            status,
            content_type,
            snippet,
        } => {
            assert_eq!(*status, 200);
            assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
            assert!(
                snippet.starts_with("<html> <head><title>Welcome"),
                "{snippet}"
            );
            assert!(
                !snippet.contains('\n') && !snippet.contains('\x07'),
                "{snippet:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.code(), ErrorCode::HttpNotTether);
    assert!(err.to_string().contains("TETHER-E3404"), "{err}");

    let err = c.list_policies().await.expect_err("block page");
    assert_eq!(err.code(), ErrorCode::HttpNotTether);
    assert!(err.is_retriable(), "a 502 from a middlebox may pass");

    let err = c.list_policies().await.expect_err("json but not ours");
    assert!(
        matches!(err, ClientError::NotTether { status: 403, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_2xx_that_does_not_decode_is_a_decode_error() {
    let server = TestServer::scripted(vec![CannedReply::raw(
        200,
        "application/json",
        "{\"unexpected\":1}",
    )])
    .await;
    let err = client(&server)
        .list_policies()
        .await
        .expect_err("wrong shape");
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::HttpProtocol);
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn nothing_listening_is_a_transport_error_with_its_code() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let server = TestServer::scripted(vec![CannedReply::no_content()]).await;
    let transport = Transport::new(server.transport_config()).expect("transport builds");
    let c = ApiClient::new(
        transport,
        url::Url::parse(&format!("https://127.0.0.1:{port}")).expect("url"),
    );
    let err = c.list_policies().await.expect_err("refused");
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ConnectRefused);
    assert!(err.is_retriable());
    assert!(err.to_string().starts_with("TETHER-E3101"), "{err}");
}

#[tokio::test]
async fn an_untrusted_server_fails_tls_with_unknown_issuer() {
    let server = TestServer::scripted(vec![CannedReply::no_content()]).await;
    let mut cfg = server.transport_config();
    cfg.trust.ca_pem = Some(
        tether_testlab::canned::TestPki::generate()
            .ca_pem
            .into_bytes(),
    );
    let c = ApiClient::new(Transport::new(cfg).expect("builds"), server.url());
    let err = c.list_policies().await.expect_err("untrusted");
    assert_eq!(err.code(), ErrorCode::TlsUnknownIssuer, "{err}");
    assert!(
        server.requests().is_empty(),
        "no request reaches an untrusted server"
    );
}
