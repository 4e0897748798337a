//! The control plane's own outages, admin credentials, hostile agent text
//! and the doctor's read-only probe, over real processes: the real server,
//! real `tether-agent` processes and the real admin CLI.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_wire::{
    ActionInfo, ActionState, AdminTokenInfo, AgentDetail, AgentStatus, CreatedAdminToken,
    ErrorCode, OutageKind,
};
use time::OffsetDateTime;
use tokio::process::Command;
use tokio::time::Instant;

use crate::both_backends;
use crate::lab::{Agent, Backend, Server, agent_bin, text};

both_backends!(
    agents_that_resume_after_a_restart_never_turn_inactive,
    hostile_agent_text_is_escaped_and_the_doctor_changes_nothing,
    admin_credentials_are_managed_from_the_cli,
);

/// Check-ins every 5 s without jitter and 10 s of grace: an agent is
/// Inactive after 2 × 5 + 10 = 20 s of silence.
const THRESHOLD: Duration = Duration::from_secs(20);
const ENV: &[(&str, &str)] = &[("TETHER_INACTIVE_GRACE_SECS", "10")];
const FLEET: usize = 6;

/// Enrolls `n` agents and runs them until each is Active.
async fn fleet(server: &Server, n: usize) -> Vec<Agent> {
    server.set_interval(5).await;
    let token = server.token(&[]).await;
    let mut agents = Vec::new();
    for i in 0..n {
        let mut agent = Agent::new();
        agent
            .enroll_ok(server, &token.token, &["--name", &format!("fleet-{i}")])
            .await;
        agent.run(&[]);
        agents.push(agent);
    }
    for agent in &agents {
        server
            .wait_status(agent.id(), AgentStatus::Active, Duration::from_secs(30))
            .await;
    }
    agents
}

/// Watches the fleet for `window` after `back` (when the control plane came
/// back) and returns, per agent, when it first checked in again (by the
/// server's record of its last check-in).
async fn resumed_after(
    server: &Server,
    agents: &[Agent],
    back: OffsetDateTime,
    window: Duration,
) -> BTreeMap<uuid::Uuid, OffsetDateTime> {
    let mut resumed = BTreeMap::new();
    let until = Instant::now() + window;
    while Instant::now() < until {
        for a in server.agents().await {
            if let Some(seen) = a.last_seen
                && seen >= back
                && agents.iter().any(|x| x.id() == a.id)
            {
                resumed.entry(a.id).or_insert(seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    resumed
}

/// The outage's assertions: nobody was declared Inactive within a
/// threshold of the control plane's return, an agent that resumed within it
/// has no Inactive transition at all, and the history names the outage.
async fn assert_no_false_inactive(
    server: &Server,
    agents: &[Agent],
    down_at: OffsetDateTime,
    back: OffsetDateTime,
    resumed: &BTreeMap<uuid::Uuid, OffsetDateTime>,
    kind: OutageKind,
) {
    let threshold = time::Duration::try_from(THRESHOLD).expect("fits");
    let in_time: Vec<_> = resumed
        .iter()
        .filter(|(_, at)| **at <= back + threshold)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        !in_time.is_empty(),
        "no agent resumed within a threshold of the return ({resumed:?}); agent logs:\n{}",
        agents
            .iter()
            .map(Agent::stderr)
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    for agent in agents {
        let d: AgentDetail = server.agent(agent.id()).await;
        let inactive: Vec<_> = d
            .transitions
            .iter()
            .filter(|t| t.to == AgentStatus::Inactive && t.at >= down_at)
            .collect();
        for t in &inactive {
            assert!(
                t.at >= back + threshold - time::Duration::SECOND,
                "agent {} was declared Inactive {} after the control plane came back, within its threshold: {t:?}\nserver log:\n{}",
                agent.id(),
                t.at - back,
                server.log()
            );
        }
        if in_time.contains(&agent.id()) {
            assert!(
                inactive.is_empty(),
                "agent {} resumed within a threshold yet has an Inactive transition: {inactive:?}",
                agent.id()
            );
        }
        let outage = d
            .outages
            .iter()
            .find(|o| o.kind == kind && o.ended_at >= back - time::Duration::seconds(2))
            .unwrap_or_else(|| {
                panic!(
                    "the {kind:?} outage is in the history: {:?}\nserver log:\n{}",
                    d.outages,
                    server.log()
                )
            });
        assert!(
            outage.started_at <= down_at + time::Duration::seconds(10),
            "{outage:?}"
        );
    }
}

async fn agents_that_resume_after_a_restart_never_turn_inactive(backend: Backend) {
    let mut server = Server::start_restartable(backend, ENV).await;
    let agents = fleet(&server, FLEET).await;
    // Down for longer than the threshold.
    let down_at = OffsetDateTime::now_utc();
    server.stop().await;
    tokio::time::sleep(THRESHOLD + Duration::from_secs(5)).await;
    server.restart().await;
    let back = OffsetDateTime::now_utc();
    let resumed = resumed_after(&server, &agents, back, THRESHOLD + Duration::from_secs(6)).await;
    assert_no_false_inactive(
        &server,
        &agents,
        down_at,
        back,
        &resumed,
        OutageKind::Restart,
    )
    .await;
    let shown = server
        .admin_ok(&["agents", "show", &agents[0].id().to_string()])
        .await;
    assert!(
        shown.contains("control plane restarted"),
        "the history says why nothing changed:\n{shown}"
    );
}

/// A held SQLite write lock: check-ins get 503 for longer than the
/// threshold, then the store recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_resume_after_a_store_outage_never_turn_inactive() {
    use sqlx::Connection as _;
    let server = Server::start_with(Backend::Sqlite, ENV).await;
    let agents = fleet(&server, FLEET).await;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server.dir.path().join("tether.db"))
        .busy_timeout(Duration::from_secs(30));
    let mut lock = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("opens the server's database");
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("takes the write lock");
    let down_at = OffsetDateTime::now_utc();
    tokio::time::sleep(THRESHOLD + Duration::from_secs(5)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("releases the lock");
    let back = OffsetDateTime::now_utc();
    lock.close().await.expect("closes");
    let resumed = resumed_after(&server, &agents, back, THRESHOLD + Duration::from_secs(6)).await;
    assert_no_false_inactive(&server, &agents, down_at, back, &resumed, OutageKind::Store).await;
    assert!(
        server.log().contains("the store is failing"),
        "the server saw its store fail:\n{}",
        server.log()
    );
}

/// An admin client for what the CLI does not show (queued actions).
fn api(server: &Server) -> tether_client::ApiClient {
    let config = tether_transport::TransportConfig {
        trust: tether_transport::TrustConfig {
            pinned_ca_sha256: Some(
                tether_transport::parse_fingerprint(&server.endpoint.ca_fingerprint)
                    .expect("fingerprint"),
            ),
            ca_pem: Some(std::fs::read(&server.endpoint.ca_pem_path).expect("CA PEM")),
            extra_ca_pem: None,
            system_roots: false,
        },
        ..tether_transport::TransportConfig::default()
    };
    let admin = std::fs::read_to_string(server.dir.path().join("admin.token"))
        .expect("admin token")
        .trim()
        .to_owned();
    tether_client::ApiClient::new(
        tether_transport::Transport::new(config).expect("transport"),
        url::Url::parse(&server.endpoint.url).expect("url"),
    )
    .with_bearer(admin)
}

/// No terminal control reaches the admin's screen, and no line is faked.
fn assert_escaped(out: &str, what: &str) {
    assert!(
        !out.chars()
            .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{what} printed a raw control character: {out:?}"
    );
}

async fn hostile_agent_text_is_escaped_and_the_doctor_changes_nothing(backend: Backend) {
    let server = Server::start(backend).await;
    let token = server.token(&[]).await;
    let mut agent = Agent::new();
    // A name that reorders text on screen.
    let id = agent
        .enroll_ok(&server, &token.token, &["--name", "invoice\u{202e}fdp.exe"])
        .await;
    // A compromised host writes what its agent reports: escape sequences
    // that retitle the terminal, clear it and fake a line.
    let state_path = agent.state.path().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state.json")).expect("JSON");
    let hostile = "proxy refused\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31m\nStatus             ACTIVE";
    state["last_errors"]["enroll"] = serde_json::json!({
        "code": ErrorCode::ProxyAuthFailed.as_str(),
        "message": hostile,
        "at": "2026-05-17T12:00:00Z",
    });
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("JSON")).expect("writes");
    agent.run(&[]);
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(30))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let d = server.agent(id).await;
        if d.last_errors
            .get("enroll")
            .is_some_and(|e| e.message == hostile)
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the hostile error never arrived: {:?}",
            d.last_errors
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    agent.kill().await;

    let shown = server.admin_ok(&["agents", "show", &id.to_string()]).await;
    assert_escaped(&shown, "agents show");
    assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"), "{shown}");
    assert!(shown.contains("\\nStatus"), "{shown}");
    assert!(shown.contains("invoice\\u{202e}fdp.exe"), "{shown}");
    let listed = server.admin_ok(&["agents", "list"]).await;
    assert_escaped(&listed, "agents list");

    // The killed agent's last task poll is still held by the server (HTTP/1
    // gives no sign that its client died), so it takes the first task queued;
    // that lease lapses at the pickup deadline without costing an attempt.
    // Let it take one, so that what follows sees only the doctor's effect.
    let absorbed: ActionInfo = serde_json::from_str(
        &server
            .admin_ok(&["agents", "doctor", &id.to_string(), "--no-upload", "--json"])
            .await,
    )
    .expect("action JSON");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let actions = api(&server).list_actions(id).await.expect("lists actions");
        if actions
            .iter()
            .any(|a| a.id == absorbed.id && a.state == ActionState::Delivered)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead agent's held poll took nothing: {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The doctor tests the credential without a check-in: the queued action
    // stays queued and the server's record of the agent is untouched.
    let queued: ActionInfo = serde_json::from_str(
        &server
            .admin_ok(&["agents", "doctor", &id.to_string(), "--no-upload", "--json"])
            .await,
    )
    .expect("action JSON");
    let out = Command::new(agent_bin())
        .args(["doctor", "--json", "--state-dir"])
        .arg(agent.state.path())
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("the doctor runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON: {e}: {}", text(&out)));
    let auth = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "auth"))
        .unwrap_or_else(|| panic!("an auth check: {report}"));
    assert_eq!(auth["status"], "pass", "{auth}");
    assert!(
        auth["evidence"]["side_effect"]
            .as_str()
            .is_some_and(|s| s.contains("read-only")),
        "{auth}"
    );
    let actions = api(&server).list_actions(id).await.expect("lists actions");
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.id != absorbed.id)
            .map(|a| (a.id, a.state))
            .collect::<Vec<_>>(),
        [(queued.id, ActionState::Queued)],
        "the doctor must not take the agent's queued action; server log:\n{}",
        server.log()
    );
    let after = server.agent(id).await;
    assert_eq!(after.last_errors, before.last_errors, "last errors kept");
    assert_eq!(after.defs, before.defs);
    assert_eq!(after.summary.last_seen, before.summary.last_seen);
}

async fn admin_credentials_are_managed_from_the_cli(backend: Backend) {
    let server = Server::start(backend).await;
    let ci: CreatedAdminToken = serde_json::from_str(
        &server
            .admin_ok(&["admin-tokens", "create", "--name", "ci", "--json"])
            .await,
    )
    .expect("created JSON");
    let as_ci = [("TETHER_ADMIN_TOKEN", ci.token.as_str())];
    let out = server.admin_env(&["token", "list"], &as_ci).await;
    assert!(out.status.success(), "{}", text(&out));
    let listed: Vec<AdminTokenInfo> =
        serde_json::from_str(&server.admin_ok(&["admin-tokens", "list", "--json"]).await)
            .expect("list JSON");
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["bootstrap", "ci"]
    );

    // Rotating the bootstrap credential into the server's admin.token: the
    // CLI keeps working with the file, the old secret does not.
    let admin_token = server.dir.path().join("admin.token");
    let old = std::fs::read_to_string(&admin_token).expect("reads");
    server
        .admin_ok(&[
            "admin-tokens",
            "rotate",
            "bootstrap",
            "--out",
            admin_token.to_str().expect("utf-8"),
        ])
        .await;
    let new = std::fs::read_to_string(&admin_token).expect("reads");
    assert_ne!(new, old);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&admin_token).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    server.admin_ok(&["agents", "list"]).await;
    let out = server
        .admin_env(&["agents", "list"], &[("TETHER_ADMIN_TOKEN", old.trim())])
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(ErrorCode::AdminCredentialRevoked.as_str()),
        "{}",
        text(&out)
    );

    // Revoked by name: it stops at once.
    let out = server.admin_ok(&["admin-tokens", "revoke", "ci"]).await;
    assert!(out.contains("revoked"), "{out}");
    let out = server.admin_env(&["token", "list"], &as_ci).await;
    assert!(
        text(&out).contains(ErrorCode::AdminCredentialRevoked.as_str()),
        "{}",
        text(&out)
    );
    let table = server.admin_ok(&["admin-tokens", "list"]).await;
    assert!(
        table.contains("revoked") && table.contains("active"),
        "{table}"
    );
}
