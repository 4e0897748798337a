//! The run loop and enrollment against a real HTTPS server on loopback that
//! returns canned replies. Sleeps are recorded (and advance a manual clock)
//! instead of waited, so every delay the loop chose can be asserted.

#[path = "support/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{AGENT, Harness, T0, api_error, client_for, ok_reply, policy, server};
use tether_agent::credential::{self, Credential};
use tether_agent::enroll::{EnrollOptions, enroll};
use tether_agent::run::Step;
use tether_agent::state::{StateStore, subsystem};
use tether_agent::{World, backoff};
use tether_client::ApiClient;
use tether_testlab::canned::{CannedReply, TestServer};
use tether_transport::Transport;
use tether_wire::{
    AgentKind, AgentStatus, CheckinRequest, EnrollRequest, EnrollResponse, ErrorCode, ManualClock,
};

fn checkins(server: &TestServer) -> Vec<CheckinRequest> {
    server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/agent/checkin")
        .map(|r| serde_json::from_slice(&r.body).expect("check-in body"))
        .collect()
}

#[tokio::test]
async fn backoff_honours_retry_after_resets_on_success_and_records_errors() {
    let server = server(vec![
        ok_reply(60, vec![]),
        api_error(503, ErrorCode::StoreUnavailable).with_header("Retry-After", "45"),
        CannedReply::raw(502, "text/html", "<h1>proxy says no</h1>"),
        CannedReply::raw(502, "text/html", "<h1>proxy says no</h1>"),
        ok_reply(60, vec![]),
    ])
    .await;
    let h = Harness::new(5, 60);
    let mut ctx = h.context(client_for(&server), 1.0, None);
    let summary = h.run(&mut ctx).await;

    assert_eq!(
        summary.steps,
        vec![
            Step::CheckedIn {
                delay: Duration::from_secs(60)
            },
            // Retry-After 45 s beats the first backoff step (≤ 1 s).
            Step::Failed {
                code: ErrorCode::StoreUnavailable,
                delay: Duration::from_secs(45)
            },
            // No Retry-After: exponential, attempt 1 then 2 (sample 1.0 = the ceiling).
            Step::Failed {
                code: ErrorCode::HttpNotTether,
                delay: Duration::from_secs(2)
            },
            Step::Failed {
                code: ErrorCode::HttpNotTether,
                delay: Duration::from_secs(4)
            },
            // Success resets the backoff and returns to the policy interval.
            Step::CheckedIn {
                delay: Duration::from_secs(60)
            },
        ]
    );
    assert_eq!(
        h.delays(),
        vec![60, 45, 2, 4, 60]
            .into_iter()
            .map(Duration::from_secs)
            .collect::<Vec<_>>()
    );
    assert!(
        summary.shutdown_acknowledged,
        "the shutdown notice was sent and acknowledged"
    );
    let reqs = server.requests();
    let last = reqs.last().expect("requests");
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/v1/agent/shutdown")
    );

    // Each check-in carries the last error recorded before it.
    let bodies = checkins(&server);
    assert_eq!(bodies.len(), 5);
    assert!(bodies[0].last_errors.is_empty() && bodies[1].last_errors.is_empty());
    assert_eq!(
        bodies[2].last_errors[subsystem::CHECKIN].code,
        ErrorCode::StoreUnavailable
    );
    assert_eq!(
        bodies[2].last_errors[subsystem::CHECKIN].at,
        T0 + time::Duration::seconds(60)
    );
    assert_eq!(
        bodies[4].last_errors[subsystem::CHECKIN].code,
        ErrorCode::HttpNotTether
    );
    assert_eq!(bodies[0].proxy.as_deref(), Some("proxy.corp:3128"));
    assert_eq!(bodies[0].facts.hostname, "test-host");
    for r in &reqs {
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer agent-cred")
        );
    }

    // The final success cleared the check-in error and stamped the contact.
    let state = h.store.load_required().expect("state");
    assert!(state.last_errors.is_empty(), "{:?}", state.last_errors);
    assert_eq!(
        state.last_successful_contact,
        Some(T0 + time::Duration::seconds(60 + 45 + 2 + 4))
    );
    assert_eq!(state.status, Some(AgentStatus::Active));
    assert_eq!(state.policy, Some(policy(60, 0)));
}

#[tokio::test]
async fn rejected_credential_is_recorded_and_retried_at_the_cap() {
    let server = server(vec![api_error(401, ErrorCode::AgentCredentialRejected)]).await;
    let h = Harness::new(3, 30);
    let mut ctx = h.context(client_for(&server), 0.0, None);
    let summary = h.run(&mut ctx).await;
    let failed = Step::Failed {
        code: ErrorCode::AgentCredentialRejected,
        delay: backoff::CAP,
    };
    assert_eq!(summary.steps, vec![failed.clone(), failed.clone(), failed]);
    let state = h.store.load_required().expect("state");
    let err = &state.last_errors[subsystem::CHECKIN];
    assert_eq!(err.code, ErrorCode::AgentCredentialRejected);
    assert!(err.message.contains("TETHER-E2201"), "{}", err.message);
    assert_eq!(state.last_successful_contact, None);
}

#[tokio::test]
async fn pending_approval_keeps_the_normal_pace() {
    let server = server(vec![api_error(403, ErrorCode::AgentPendingApproval)]).await;
    let h = Harness::new(2, 20);
    let mut ctx = h.context(client_for(&server), 0.5, None);
    let summary = h.run(&mut ctx).await;
    let step = Step::Failed {
        code: ErrorCode::AgentPendingApproval,
        delay: Duration::from_secs(20),
    };
    assert_eq!(summary.steps, vec![step.clone(), step]);
}

#[tokio::test]
async fn absurd_retry_after_is_bounded() {
    let server = server(vec![
        api_error(429, ErrorCode::RateLimited).with_header("Retry-After", "9999999"),
    ])
    .await;
    let h = Harness::new(1, 30);
    let mut ctx = h.context(client_for(&server), 0.5, None);
    let summary = h.run(&mut ctx).await;
    assert_eq!(
        summary.steps,
        vec![Step::Failed {
            code: ErrorCode::RateLimited,
            delay: backoff::MAX_RETRY_AFTER
        }]
    );
}

#[tokio::test]
async fn transport_failures_are_recorded_under_transport_and_back_off() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let any = server(vec![]).await;
    let transport = Transport::new(any.transport_config()).expect("builds");
    let client = ApiClient::new(
        transport,
        url::Url::parse(&format!("https://127.0.0.1:{port}")).expect("url"),
    );
    let h = Harness::new(4, 30);
    let mut ctx = h.context(client, 1.0, None);
    let summary = h.run(&mut ctx).await;
    let delays: Vec<Duration> = summary
        .steps
        .iter()
        .map(|s| match s {
            Step::Failed {
                code: ErrorCode::ConnectRefused,
                delay,
            } => *delay,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        delays,
        vec![1, 2, 4, 8]
            .into_iter()
            .map(Duration::from_secs)
            .collect::<Vec<_>>()
    );
    assert!(
        !summary.shutdown_acknowledged,
        "nobody listens for the notice"
    );
    let state = h.store.load_required().expect("state");
    assert_eq!(
        state.last_errors[subsystem::TRANSPORT].code,
        ErrorCode::ConnectRefused
    );
    assert!(!state.last_errors.contains_key(subsystem::CHECKIN));
}

fn enroll_response(credential: &str) -> EnrollResponse {
    EnrollResponse {
        defs_root: None,
        agent_id: AGENT,
        credential: credential.into(),
        status: AgentStatus::Pending,
        kind: AgentKind::Connector,
        group: "lab".into(),
        policy: policy(30, 10),
        server_time: T0,
    }
}

fn enroll_opts(dir: &std::path::Path, server: &TestServer, fingerprint: String) -> EnrollOptions {
    EnrollOptions {
        state_dir: dir.to_owned(),
        server: server.url(),
        token: "tet_token".into(),
        ca_fingerprint: Some(fingerprint),
        ca_file: None,
        extra_ca_file: None,
        name: Some("edge-7".into()),
        kind: Some(AgentKind::Connector),
        proxy: None,
    }
}

#[tokio::test]
async fn enroll_pins_the_ca_saves_it_and_reregisters_with_the_old_credential() {
    let creds = Mutex::new(vec!["cred-2".to_owned(), "cred-1".to_owned()]);
    let server = TestServer::start(move |r| match r.path.as_str() {
        "/v1/enroll" => {
            let c = creds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            CannedReply::json(200, &enroll_response(&c))
        }
        _ => api_error(404, ErrorCode::NotFound),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::fixed(Arc::new(ManualClock::new(T0)), &[]);
    let opts = enroll_opts(dir.path(), &server, server.pki.ca_fingerprint());

    let first = enroll(&opts, &world).await.expect("enrolls");
    assert_eq!(first.agent_id, AGENT);
    assert!(!first.reregistered);
    assert!(
        first
            .summary(dir.path())
            .contains("waits for approval by an admin")
    );
    assert_eq!(
        credential::load(dir.path()).expect("credential"),
        Credential::new("cred-1")
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca.pem saved");
    assert_eq!(
        ca.trim(),
        server.pki.ca_pem.trim(),
        "the pinned CA from the chain, as PEM"
    );
    let state = StateStore::new(dir.path()).load_required().expect("state");
    assert_eq!(state.agent_id, AGENT);
    assert_eq!(state.installed_at, T0);
    let config = tether_agent::config::load(dir.path(), &|_| None, &Default::default())
        .expect("agent.toml loads");
    assert_eq!(config.config.name, "edge-7");
    assert_eq!(
        config.config.ca_fingerprint,
        Some(server.pki.ca_fingerprint())
    );

    // Re-enrollment hands over the current credential and keeps installed_at.
    let later = World::fixed(
        Arc::new(ManualClock::new(T0 + time::Duration::days(1))),
        &[],
    );
    let second = enroll(&opts, &later).await.expect("re-enrolls");
    assert!(second.reregistered);
    let bodies: Vec<EnrollRequest> = server
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("enroll body"))
        .collect();
    assert_eq!(bodies[0].previous_credential, None);
    assert_eq!(bodies[1].previous_credential.as_deref(), Some("cred-1"));
    assert_eq!(bodies[1].name, "edge-7");
    assert_eq!(bodies[1].kind, Some(AgentKind::Connector));
    assert_eq!(
        credential::load(dir.path()).expect("credential").expose(),
        "cred-2"
    );
    let state = StateStore::new(dir.path()).load_required().expect("state");
    assert_eq!(state.installed_at, T0);
    assert_eq!(state.enrolled_at, T0 + time::Duration::days(1));

    // The saved CA (plus the pin) anchors the run-time transport.
    let trust = tether_agent::connect::trust(&config.config, Some(dir.path())).expect("trust");
    assert!(trust.ca_pem.is_some() && trust.pinned_ca_sha256.is_some());
}

#[tokio::test]
async fn enroll_refuses_a_wrong_pin_and_reports_token_errors() {
    let server = TestServer::scripted(vec![api_error(403, ErrorCode::TokenExpired)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::fixed(Arc::new(ManualClock::new(T0)), &[]);
    let other_ca = tether_testlab::canned::TestPki::generate().ca_fingerprint();
    let err = enroll(&enroll_opts(dir.path(), &server, other_ca), &world)
        .await
        .expect_err("wrong pin");
    assert_eq!(err.code, ErrorCode::ServerCaPinMismatch, "{err}");
    assert!(
        server.requests().is_empty(),
        "no token is sent to an unpinned server"
    );
    assert!(!dir.path().join("credential").exists() && !dir.path().join("state.json").exists());

    let err = enroll(
        &enroll_opts(dir.path(), &server, server.pki.ca_fingerprint()),
        &world,
    )
    .await
    .expect_err("expired token");
    assert_eq!(err.code, ErrorCode::TokenExpired);
    assert!(err.to_string().contains("TETHER-E2103"), "{err}");
    assert!(!dir.path().join("credential").exists());
}
