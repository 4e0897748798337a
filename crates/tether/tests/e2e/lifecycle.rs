//! The agent lifecycle over real processes: enroll → check in → status.

use std::time::Duration;

use tether_wire::{AgentFlag, AgentStatus, ErrorCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::both_backends;
use crate::lab::{Agent, Backend, Server, text};

both_backends!(
    enroll_checkin_active_then_clean_stop,
    every_token_refusal_is_distinct,
    approval_flow,
    inactive_on_silence_then_active_on_return,
    reregistration_revokes_the_old_credential,
    removed_agent_is_refused,
);

async fn enroll_checkin_active_then_clean_stop(backend: Backend) {
    let server = Server::start(backend).await;
    server.set_interval(5).await;
    let token = server.token(&["--group", "lab", "--max-uses", "1"]).await;
    let mut agent = Agent::new();
    let id = agent
        .enroll_ok(&server, &token.token, &["--name", "e2e-agent"])
        .await;

    let pending = server.agents().await;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status,
        AgentStatus::Pending,
        "enrolled, no check-in yet"
    );
    assert_eq!(pending[0].group, "lab");

    // The credential is the agent's own, distinct from the token, and 0600.
    let cred = agent.credential();
    assert_ne!(cred, token.token);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent.state.path().join("credential"))
            .expect("credential")
            .permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "credential file must not be readable by others: {mode:o}"
    );

    agent.run(&[]);
    let active = server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;
    assert_eq!(active.name, "e2e-agent");
    assert!(active.last_seen.is_some());
    assert_eq!(active.external_ip.as_deref(), Some("127.0.0.1"));
    let detail = server.agent(id).await;
    assert!(
        !detail.facts.hostname.is_empty(),
        "check-in reports the hostname"
    );
    assert_eq!(detail.summary.version, tether_wire::VERSION);

    // Posture on the endpoint reads as connected.
    let posture = tokio::process::Command::new(crate::lab::agent_bin())
        .args(["posture", "--state-dir"])
        .arg(agent.state.path())
        .output()
        .await
        .expect("posture runs");
    assert!(posture.status.success(), "{}", text(&posture));
    let p: serde_json::Value = serde_json::from_slice(&posture.stdout).expect("posture is JSON");
    assert_eq!(p["agent_id"], id.to_string());
    assert_eq!(p["connected"], true, "{p}");

    let status = agent.terminate().await;
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}; {}",
        agent.stderr()
    );
    server
        .wait_status(id, AgentStatus::Stopped, Duration::from_secs(5))
        .await;
    let detail = server.agent(id).await;
    let to: Vec<AgentStatus> = detail.transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        to,
        vec![
            AgentStatus::Stopped,
            AgentStatus::Active,
            AgentStatus::Pending
        ],
        "newest first"
    );
    assert!(detail.transitions.iter().all(|t| !t.reason.is_empty()));
}

async fn every_token_refusal_is_distinct(backend: Backend) {
    let server = Server::start(backend).await;
    let now = OffsetDateTime::now_utc();
    let fmt = |t: OffsetDateTime| t.format(&Rfc3339).expect("formats");

    let refused = |out: std::process::Output, code: ErrorCode| {
        let t = text(&out);
        assert!(
            !out.status.success(),
            "expected refusal {code}, got success: {t}"
        );
        assert!(t.contains(code.as_str()), "expected {code} in: {t}");
        t
    };

    // Unknown.
    let a = Agent::new();
    refused(
        a.enroll(
            &server,
            "tet_thisTokenWasNeverIssuedByThisServer000000",
            &[],
        )
        .await,
        ErrorCode::TokenUnknown,
    );

    // Not yet valid: the message says when it becomes valid.
    let later = server
        .token(&["--not-before", &fmt(now + time::Duration::hours(1))])
        .await;
    let t = refused(
        a.enroll(&server, &later.token, &[]).await,
        ErrorCode::TokenNotYetValid,
    );
    assert!(t.contains(&later.info.not_before.year().to_string()), "{t}");

    // Expired: its window ended an hour ago.
    let old = server
        .token(&[
            "--not-before",
            &fmt(now - time::Duration::hours(2)),
            "--valid-for",
            "1h",
        ])
        .await;
    refused(
        a.enroll(&server, &old.token, &[]).await,
        ErrorCode::TokenExpired,
    );

    // Revoked.
    let revoked = server.token(&[]).await;
    server
        .admin_ok(&["token", "revoke", &revoked.info.id.to_string()])
        .await;
    refused(
        a.enroll(&server, &revoked.token, &[]).await,
        ErrorCode::TokenRevoked,
    );

    // Kind not allowed: the token is for discovery agents.
    let kind = server.token(&[]).await;
    refused(
        a.enroll(&server, &kind.token, &["--kind", "provisioning"])
            .await,
        ErrorCode::TokenKindNotAllowed,
    );

    // Use limit reached.
    let once = server.token(&["--max-uses", "1"]).await;
    Agent::new().enroll_ok(&server, &once.token, &[]).await;
    refused(
        Agent::new().enroll(&server, &once.token, &[]).await,
        ErrorCode::TokenExhausted,
    );

    // Nothing refused created an agent; the token list shows the use.
    assert_eq!(server.agents().await.len(), 1);
    let list = server.admin_ok(&["token", "list", "--json"]).await;
    let tokens: Vec<tether_wire::TokenInfo> =
        serde_json::from_str(&list).expect("token list --json");
    let used = tokens
        .iter()
        .find(|t| t.id == once.info.id)
        .expect("listed");
    assert_eq!(used.uses, 1);
    assert!(!list.contains(&once.token), "secrets are never listed");
}

async fn approval_flow(backend: Backend) {
    let server = Server::start(backend).await;
    server.set_interval(5).await;
    let token = server.token(&["--require-approval"]).await;
    let mut agent = Agent::new();
    let id = agent.enroll_ok(&server, &token.token, &[]).await;
    agent.run(&[]);

    // It checks in but stays Pending until approved.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = server
        .agents()
        .await
        .into_iter()
        .find(|a| a.id == id)
        .expect("listed");
    assert_eq!(a.status, AgentStatus::Pending);

    server
        .admin_ok(&["agents", "approve", &id.to_string()])
        .await;
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(30))
        .await;
    agent.terminate().await;
}

async fn inactive_on_silence_then_active_on_return(backend: Backend) {
    // Threshold = 2 × interval × (1 + jitter) + grace = 2 × 5 + 1 = 11 s.
    let server = Server::start_with(
        backend,
        &[
            ("TETHER_INACTIVE_GRACE_SECS", "1"),
            ("TETHER_SWEEP_INTERVAL_MS", "200"),
        ],
    )
    .await;
    server.set_interval(5).await;
    let token = server.token(&[]).await;
    let mut agent = Agent::new();
    let id = agent.enroll_ok(&server, &token.token, &[]).await;
    agent.run(&[]);
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;

    // SIGKILL: no goodbye, just silence.
    agent.kill().await;
    server
        .wait_status(id, AgentStatus::Inactive, Duration::from_secs(25))
        .await;

    agent.run(&[]);
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;
    let detail = server.agent(id).await;
    let to: Vec<AgentStatus> = detail.transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        &to[..3],
        &[
            AgentStatus::Active,
            AgentStatus::Inactive,
            AgentStatus::Active
        ],
        "{:?}",
        detail.transitions
    );
    let inactive = &detail.transitions[1];
    assert!(
        inactive.reason.contains("11"),
        "the reason names the threshold: {}",
        inactive.reason
    );
    agent.terminate().await;
}

async fn reregistration_revokes_the_old_credential(backend: Backend) {
    let server = Server::start(backend).await;
    let first = server.token(&["--group", "old"]).await;
    let agent = Agent::new();
    let id = agent.enroll_ok(&server, &first.token, &[]).await;
    let old_credential = agent.credential();

    let second = server.token(&["--group", "new"]).await;
    let id2 = agent.enroll_ok(&server, &second.token, &[]).await;
    assert_eq!(
        id, id2,
        "re-registration keeps the agent's record and history"
    );
    assert_ne!(agent.credential(), old_credential);

    // The old credential stops working at once.
    let client = api_client(&server, &old_credential);
    let err = client
        .checkin(&checkin_body())
        .await
        .expect_err("old credential is refused");
    assert_eq!(err.code(), ErrorCode::AgentCredentialRejected, "{err}");

    let detail = server.agent(id).await;
    assert_eq!(
        detail.summary.group, "new",
        "scope comes from the new token"
    );
    assert!(
        detail
            .summary
            .flags
            .contains(&AgentFlag::CredentialRejected),
        "{:?}",
        detail.summary.flags
    );

    // The new one works.
    api_client(&server, &agent.credential())
        .checkin(&checkin_body())
        .await
        .expect("new credential works");
}

async fn removed_agent_is_refused(backend: Backend) {
    let server = Server::start(backend).await;
    let token = server.token(&[]).await;
    let agent = Agent::new();
    let id = agent.enroll_ok(&server, &token.token, &[]).await;
    server
        .admin_ok(&["agents", "remove", &id.to_string()])
        .await;
    assert!(server.agents().await.is_empty());
    let err = api_client(&server, &agent.credential())
        .checkin(&checkin_body())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::AgentCredentialRejected);
    // Removing again is a clear 404, not a crash.
    let out = server.admin(&["agents", "remove", &id.to_string()]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(ErrorCode::NotFound.as_str()),
        "{}",
        text(&out)
    );
}

pub fn api_client(server: &Server, bearer: &str) -> tether_client::ApiClient {
    let transport = tether_transport::Transport::new(tether_transport::TransportConfig {
        proxy: tether_transport::ProxySetting::Direct,
        trust: tether_transport::TrustConfig {
            pinned_ca_sha256: None,
            ca_pem: Some(std::fs::read(&server.endpoint.ca_pem_path).expect("CA file")),
            extra_ca_pem: None,
            system_roots: false,
        },
        ..Default::default()
    })
    .expect("transport builds");
    tether_client::ApiClient::new(
        transport,
        url::Url::parse(&server.endpoint.url).expect("url"),
    )
    .with_bearer(bearer)
}

pub fn checkin_body() -> tether_wire::CheckinRequest {
    tether_wire::CheckinRequest {
        defs: Vec::new(),
        agent_version: tether_wire::VERSION.into(),
        facts: tether_wire::HostFacts {
            hostname: "e2e".into(),
            os: "linux".into(),
            ..Default::default()
        },
        definitions: Default::default(),
        last_errors: Default::default(),
        proxy: None,
        upgrade: None,
    }
}

/// Re-enrolling against another server never sends it the old credential.
/// The two real servers share one PostgreSQL database (each with its own
/// data dir, URL and CA), so a credential sent to B would be found there and
/// B would re-register A's agent in place: the leak is visible.
#[tokio::test]
async fn reenrolling_on_another_server_never_sends_the_old_credential() {
    let a = Server::start(Backend::Postgres).await;
    let b = Server::start_sharing_database(&a).await;
    assert_ne!(a.endpoint.url, b.endpoint.url);
    assert_ne!(a.endpoint.ca_fingerprint, b.endpoint.ca_fingerprint);
    let agent = Agent::new();
    let on_a = agent
        .enroll_ok(&a, &a.token(&[]).await.token, &["--name", "moving"])
        .await;
    let credential_a = agent.credential();

    let out = agent.enroll(&b, &b.token(&[]).await.token, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Enrolled agent"),
        "a new identity, not a re-registration: {}",
        text(&out)
    );
    let on_b = agent.id();
    assert_ne!(on_b, on_a, "B did not take over A's agent");
    let kept = b.agent(on_a).await;
    assert!(
        kept.transitions
            .iter()
            .all(|t| !t.reason.contains("re-registered")),
        "{:?}",
        kept.transitions
    );
    assert_ne!(agent.credential(), credential_a);
    let install_log =
        std::fs::read_to_string(agent.state.path().join("logs/install.log")).unwrap_or_default();
    assert!(
        install_log.contains("belongs to another server"),
        "{install_log}"
    );
}
