//! The task queue end to end: real server and agent processes, the admin
//! CLI, and real work (doctor runs whose SSH probe waits for a banner on a
//! port the test holds open and silent, so a run lasts as long as the test
//! needs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_wire::{ErrorCode, Outcome, ResultChunk, TaskDetail, TaskOutcome, TaskState};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;
use uuid::Uuid;

use crate::lab::{Agent, Backend, Server, text};

/// An SSH port (22, so the doctor probes it for a banner) on a loopback
/// address of this process's own, which accepts connections and never says
/// a word: the probe waits for its whole timeout. Counts the connections
/// closed by the other side (a stopped probe).
struct Hold {
    addr: std::net::SocketAddr,
    /// Connections accepted, and of those, closed by the other side.
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Hold {
    async fn start() -> Hold {
        let pid = std::process::id();
        let mut found = None;
        for n in 0..64u32 {
            let salt = pid
                .wrapping_mul(2_654_435_761)
                .wrapping_add(n.wrapping_mul(40_503));
            let ip = std::net::Ipv4Addr::new(
                127,
                100 + (salt % 100) as u8,
                (salt >> 8) as u8,
                2 + (salt >> 16) as u8 % 250,
            );
            if let Ok(l) = TcpListener::bind((ip, 22)).await {
                found = Some(l);
                break;
            }
        }
        let listener = found.expect("a loopback address with port 22 free (tests run as root)");
        let addr = listener.local_addr().expect("addr");
        let closed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&closed);
        let seen = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            // Bounded by the test's lifetime: aborted on drop.
            while let Ok((mut sock, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Hold {
            addr,
            accepted,
            closed,
            task,
        }
    }

    /// Connections still open (a probe waiting for an answer).
    fn open(&self) -> usize {
        self.accepted.load(Ordering::SeqCst) - self.closed.load(Ordering::SeqCst)
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A doctor run that lasts `secs` (its target probe waits that long).
fn slow_doctor(hold: &Hold, secs: u64) -> String {
    serde_json::json!({
        "upload": false,
        "targets": [hold.target()],
        "target_timeout_secs": secs,
        "deadline_secs": secs + 5,
    })
    .to_string()
}

async fn create(server: &Server, args: &[&str]) -> Uuid {
    let mut all = vec!["tasks", "create", "--json"];
    all.extend_from_slice(args);
    let out: Value = serde_json::from_str(&server.admin_ok(&all).await).expect("JSON");
    out["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}

async fn show(server: &Server, id: Uuid) -> TaskDetail<Value> {
    serde_json::from_str(
        &server
            .admin_ok(&["tasks", "show", &id.to_string(), "--json"])
            .await,
    )
    .expect("tasks show --json")
}

/// Waits (bounded) until `pred` holds for the task.
async fn wait_for(
    server: &Server,
    id: Uuid,
    within: Duration,
    what: &str,
    pred: impl Fn(&TaskDetail<Value>) -> bool,
) -> TaskDetail<Value> {
    let deadline = Instant::now() + within;
    loop {
        let d = show(server, id).await;
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "task {id}: not {what} after {within:?}: {:#?}\nserver log:\n{}",
            d.task,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn enrolled(server: &Server, token: &str) -> (Agent, Uuid) {
    let mut a = Agent::new();
    let id = a.enroll_ok(server, token, &[]).await;
    a.run(&[]);
    server
        .wait_status(
            id,
            tether_wire::AgentStatus::Active,
            Duration::from_secs(20),
        )
        .await;
    (a, id)
}

/// An agent client speaking as the agent whose state dir is given.
fn agent_client(server: &Server, agent: &Agent) -> tether_client::ApiClient {
    let fp = tether_transport::parse_fingerprint(&server.endpoint.ca_fingerprint).expect("fp");
    let mut cfg = tether_transport::TransportConfig::default();
    cfg.trust.pinned_ca_sha256 = Some(fp);
    cfg.trust.ca_pem = Some(std::fs::read(&server.endpoint.ca_pem_path).expect("CA"));
    let transport = tether_transport::Transport::new(cfg).expect("transport");
    tether_client::ApiClient::new(transport, server.endpoint.url.parse().expect("url"))
        .with_bearer(agent.credential())
}

/// An agent killed mid-task: its lease expires with a reason naming it, and
/// the other eligible agent finishes the task. The killed agent, back as a
/// zombie, has its stale-epoch result refused with its own code.
async fn killed_agent_lease_expires_and_another_finishes(backend: Backend) {
    // No start-up grace: this test wants the lease to expire on time.
    let server = Server::start_with(backend, &[("TETHER_TASK_LEASE_GRACE_SECS", "0")]).await;
    let hold = Hold::start().await;
    let token = server.token(&["--group", "lab", "--max-uses", "2"]).await;
    let (mut a, a_id) = enrolled(&server, &token.token).await;
    let (mut b, b_id) = enrolled(&server, &token.token).await;
    let spec = slow_doctor(&hold, 6);
    let id = create(
        &server,
        &[
            "--kind",
            "doctor",
            "--group",
            "lab",
            "--agent-kind",
            "discovery",
            "--lease",
            "10s",
            "--max-attempts",
            "3",
            "--spec",
            &spec,
        ],
    )
    .await;
    // Mid-task: the holder confirmed the lease (its first heartbeat, sent
    // when the work starts) and works.
    let leased = wait_for(
        &server,
        id,
        Duration::from_secs(10),
        "leased and started",
        |d| d.task.state == TaskState::Leased && d.task.heartbeat_at.is_some(),
    )
    .await;
    let first = leased.task.leased_to.expect("a holder");
    let (victim, victim_name_id, survivor) = if first == a_id {
        (&mut a, a_id, b_id)
    } else {
        (&mut b, b_id, a_id)
    };
    victim.kill().await;
    let done = wait_for(&server, id, Duration::from_secs(60), "succeeded", |d| {
        d.task.state == TaskState::Succeeded
    })
    .await;
    assert_eq!(
        done.task.leased_to,
        Some(survivor),
        "the other agent finished it"
    );
    // Two attempts: the killed agent's and the survivor's. The epoch may
    // be higher: a poll the killed agent left held on the server can take a
    // lease it never confirms, which expires without costing an attempt.
    assert!(
        done.task.attempt == 2 && done.task.epoch >= 2,
        "{:#?}\n{}",
        done.task,
        server.log()
    );
    assert_eq!(done.results.len(), 1, "one verdict, stored once");
    let log = server.log();
    assert!(
        log.contains("lease expired: agent") && log.contains("silent since"),
        "the expiry names the silent agent: {log}"
    );
    // The zombie comes back with its old epoch: refused, with its own code.
    let zombie = if victim_name_id == a_id { &a } else { &b };
    let err = agent_client(&server, zombie)
        .task_result(
            id,
            &ResultChunk {
                epoch: 1,
                chunk: 0,
                items: Some(serde_json::json!({"forged": true})),
                outcome: Some(TaskOutcome {
                    outcome: Outcome::Ok,
                    message: "zombie".into(),
                }),
            },
        )
        .await
        .expect_err("a stale epoch is refused");
    assert_eq!(err.code(), ErrorCode::TaskStaleEpoch, "{err}");
    assert_eq!(err.status(), Some(409));
    let after = show(&server, id).await;
    assert_eq!(after.results, done.results, "nothing was overwritten");
    assert_eq!(after.task.outcome, done.task.outcome);
    // `agents show` lists the agent's tasks.
    let shown = server
        .admin_ok(&["agents", "show", &survivor.to_string()])
        .await;
    assert!(shown.contains(&id.to_string()), "{shown}");
}

/// The server down for 60 s while an agent works: the agent finishes,
/// keeps its result on disk, delivers it after the server is back, and the
/// server stores it exactly once, without re-leasing the task.
async fn server_down_60s_results_stored_once(backend: Backend) {
    let mut server = Server::start_restartable(backend, &[]).await;
    let hold = Hold::start().await;
    let token = server.token(&["--group", "lab"]).await;
    let (agent, agent_id) = enrolled(&server, &token.token).await;
    let spec = slow_doctor(&hold, 15);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            create(
                &server,
                &[
                    "--kind",
                    "doctor",
                    "--agent",
                    &agent_id.to_string(),
                    "--lease",
                    "20s",
                    "--spec",
                    &spec,
                ],
            )
            .await,
        );
    }
    for id in &ids {
        wait_for(&server, *id, Duration::from_secs(10), "leased", |d| {
            d.task.state == TaskState::Leased
        })
        .await;
    }
    server.kill().await;
    let down_at = Instant::now();
    // The work ends (15 s) while the server is down: the results wait on disk.
    let spool = agent.state.path().join("tasks").join("spool");
    let deadline = Instant::now() + Duration::from_secs(40);
    while std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) < ids.len() {
        assert!(
            Instant::now() < deadline,
            "no spooled results: {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down_at.elapsed())).await;
    server.restart().await;
    for id in &ids {
        let d = wait_for(&server, *id, Duration::from_secs(90), "succeeded", |d| {
            d.task.state == TaskState::Succeeded
        })
        .await;
        assert_eq!(
            d.task.epoch, 1,
            "the lease survived the outage: no second attempt"
        );
        // Two chunks: the verdict, and the end of the attempt; each once.
        assert_eq!(d.task.result_chunks, 2, "stored once: {:?}", d.task);
        assert_eq!(d.results.len(), 1, "one verdict");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(Instant::now() < deadline, "the spool was not emptied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One stuck task beside 100 quick ones: the quick ones all finish while the
/// stuck one still runs.
async fn stuck_task_does_not_delay_quick_ones(backend: Backend) {
    let server = Server::start(backend).await;
    let hold = Hold::start().await;
    let token = server.token(&["--group", "lab"]).await;
    let (_agent, agent_id) = enrolled(&server, &token.token).await;
    let agent = agent_id.to_string();
    let stuck = create(
        &server,
        &[
            "--kind",
            "doctor",
            "--agent",
            &agent,
            "--spec",
            &slow_doctor(&hold, 300),
        ],
    )
    .await;
    wait_for(&server, stuck, Duration::from_secs(10), "leased", |d| {
        d.task.state == TaskState::Leased
    })
    .await;
    let quick_spec = r#"{"upload":false,"deadline_secs":5}"#;
    let mut quick = Vec::new();
    for _ in 0..100 {
        quick.push(
            create(
                &server,
                &["--kind", "doctor", "--agent", &agent, "--spec", quick_spec],
            )
            .await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list: Vec<tether_wire::TaskInfo<Value>> = serde_json::from_str(
            &server
                .admin_ok(&[
                    "tasks", "list", "--agent", &agent, "--limit", "200", "--json",
                ])
                .await,
        )
        .expect("JSON");
        let done = list
            .iter()
            .filter(|t| quick.contains(&t.id) && t.state == TaskState::Succeeded)
            .count();
        if done == quick.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done}/100 quick tasks finished: {}",
            crate::lab::text(&server.admin(&["tasks", "list", "--agent", &agent]).await)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = show(&server, stuck).await;
    assert_eq!(s.task.state, TaskState::Leased, "the stuck one still runs");
    assert!(
        s.task
            .waiting
            .as_deref()
            .is_some_and(|w| w.starts_with("leased to")),
        "{:?}",
        s.task.waiting
    );
}

/// Cancel reaches the agent at its next heartbeat and the agent stops the
/// work: the probe's connection is closed long before its 300 s timeout.
async fn cancel_stops_the_agents_work(backend: Backend) {
    let server = Server::start(backend).await;
    let hold = Hold::start().await;
    let token = server.token(&["--group", "lab"]).await;
    let (agent, agent_id) = enrolled(&server, &token.token).await;
    let id = create(
        &server,
        &[
            "--kind",
            "doctor",
            "--agent",
            &agent_id.to_string(),
            "--lease",
            "10s",
            "--spec",
            &slow_doctor(&hold, 300),
        ],
    )
    .await;
    wait_for(&server, id, Duration::from_secs(10), "leased", |d| {
        d.task.state == TaskState::Leased
    })
    .await;
    // Let the probe connect to the held port first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(hold.open() > 0, "the probe is waiting on the held port");
    let cancel = server.admin_ok(&["tasks", "cancel", &id.to_string()]).await;
    assert!(
        cancel.contains("leased"),
        "still running until the heartbeat: {cancel}"
    );
    let cancelled_at = Instant::now();
    let d = wait_for(&server, id, Duration::from_secs(20), "cancelled", |d| {
        d.task.state == TaskState::Cancelled
    })
    .await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(15));
    assert_eq!(
        d.task.outcome.as_ref().map(|o| o.outcome.clone()),
        Some(Outcome::Cancelled),
        "the agent reported that it stopped: {:?}",
        d.task
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while hold.open() > 0 {
        assert!(
            Instant::now() < deadline,
            "the probe's connection is still open: the work did not stop. {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing to cancel twice; a cancelled task can be retried.
    let again = server.admin(&["tasks", "cancel", &id.to_string()]).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("TETHER-E7004"), "{}", text(&again));
    let retried = server.admin_ok(&["tasks", "retry", &id.to_string()]).await;
    assert!(retried.contains("again"), "{retried}");
}

/// A discover task run by a real agent against a real `openssl s_server`
/// and a refused port: the endpoint results arrive as result chunks, then
/// the summary, and the task succeeds with the counts in its message.
async fn discover_task_streams_endpoint_results(backend: Backend) {
    let server = Server::start(backend).await;
    let dir = tether_testlab::Scratch::new("e2e-discover");
    let root = tether_testlab::pki::Ca::root("E2E Discover Root");
    let leaf = root.issue(&["127.0.0.1"]);
    let (cert, key) = leaf.write_chain(dir.path(), "server", &[]);
    let port = tether_testlab::free_port();
    let mut s_server = tether_testlab::spawn_logged(
        tokio::process::Command::new(tether_testlab::program("openssl"))
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-quiet"),
        dir.path(),
        "s_server",
    );
    let log = dir.path().join("s_server.out");
    tether_testlab::wait_listening(&mut s_server, port, "openssl s_server", &[&log]).await;
    let refused = tether_testlab::free_port();
    let token = server.token(&["--group", "lab"]).await;
    let (_agent, _id) = enrolled(&server, &token.token).await;
    let spec = serde_json::json!({"targets": ["127.0.0.1"], "ports": [port, refused],
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 3000})
    .to_string();
    let id = create(
        &server,
        &[
            "--kind",
            "discover",
            "--group",
            "lab",
            "--agent-kind",
            "discovery",
            "--spec",
            &spec,
        ],
    )
    .await;
    let d = wait_for(&server, id, Duration::from_secs(30), "succeeded", |d| {
        d.task.state == TaskState::Succeeded
    })
    .await;
    let endpoints: Vec<&Value> = d
        .results
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    assert_eq!(endpoints.len(), 2, "{:#?}", d.results);
    let tls = endpoints
        .iter()
        .find(|e| e["port"] == port)
        .expect("the TLS port");
    assert_eq!(tls["outcome"], "tls_accepted");
    assert_eq!(
        tls["chain"]["certs"][0]["fingerprint"],
        tether_scan::facts::fingerprint(&leaf.der)
    );
    let closed = endpoints
        .iter()
        .find(|e| e["port"] == refused)
        .expect("the refused port");
    assert_eq!(closed["outcome"], "refused");
    let summary = &d.results.last().expect("a summary chunk")["summary"];
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["outcomes"]["tls_accepted"], 1);
    assert_eq!(summary["outcomes"]["refused"], 1);
    // The inventory holds the certificate, where it was seen and by whom.
    let fp = tether_scan::facts::fingerprint(&leaf.der);
    let listed: Vec<tether_wire::CertInfo> =
        serde_json::from_str(&server.admin_ok(&["certs", "list", "--json"]).await)
            .expect("certs list --json");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].fingerprint, fp);
    assert_eq!(listed[0].locations, 1);
    assert!(
        listed[0].verdicts.contains(&"incomplete_chain".to_owned()),
        "{listed:?}"
    );
    let table = server
        .admin_ok(&[
            "certs",
            "list",
            "--verdict",
            "incomplete_chain",
            "--expiring",
            "60d",
        ])
        .await;
    assert!(table.contains(&fp), "{table}");
    let shown = server.admin_ok(&["certs", "show", &fp]).await;
    assert!(
        shown.contains(&format!("127.0.0.1:{port}")) && shown.contains("current"),
        "{shown}"
    );
    let none = server
        .admin_ok(&["certs", "list", "--expiring", "0d", "--json"])
        .await;
    assert_eq!(
        none.trim(),
        "[]",
        "a fresh certificate does not expire today"
    );
}

/// A running discover task shows its progress in `tasks show`, and cancel
/// stops the scan: the probe held on a silent port is closed.
async fn discover_progress_then_cancel_stops_the_scan(backend: Backend) {
    let server = Server::start(backend).await;
    let hold = Hold::start().await;
    let token = server.token(&["--group", "lab"]).await;
    let (agent, agent_id) = enrolled(&server, &token.token).await;
    // Port 22 of the held address answers nothing; the other port of the
    // same address refuses at once.
    let refused = tether_testlab::free_port();
    let spec = serde_json::json!({"targets": [hold.addr.ip().to_string()], "ports": [22, refused],
        "connect_timeout_ms": 2000, "handshake_timeout_ms": 60000})
    .to_string();
    let id = create(
        &server,
        &[
            "--kind",
            "discover",
            "--agent",
            &agent_id.to_string(),
            "--lease",
            "10s",
            "--spec",
            &spec,
        ],
    )
    .await;
    let d = wait_for(
        &server,
        id,
        Duration::from_secs(20),
        "leased with progress",
        |d| {
            d.task.state == TaskState::Leased
                && d.task.progress.as_ref().is_some_and(|p| p.done >= 1)
        },
    )
    .await;
    let p = d.task.progress.expect("progress");
    assert_eq!((p.done, p.total), (1, Some(2)), "{p:?}");
    assert!(hold.open() > 0, "the probe waits on the held port");
    let shown = text(&server.admin(&["tasks", "show", &id.to_string()]).await);
    assert!(shown.contains("1 endpoints scanned"), "{shown}");
    server.admin_ok(&["tasks", "cancel", &id.to_string()]).await;
    wait_for(&server, id, Duration::from_secs(20), "cancelled", |d| {
        d.task.state == TaskState::Cancelled
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while hold.open() > 0 {
        assert!(
            Instant::now() < deadline,
            "the scan's connection is still open: the work did not stop. {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::both_backends!(
    killed_agent_lease_expires_and_another_finishes,
    discover_task_streams_endpoint_results,
    discover_progress_then_cancel_stops_the_scan
);

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_down_60s_results_stored_once() {
        super::server_down_60s_results_stored_once(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stuck_task_does_not_delay_quick_ones() {
        super::stuck_task_does_not_delay_quick_ones(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_the_agents_work() {
        super::cancel_stops_the_agents_work(Backend::Sqlite).await
    }
}

mod postgres_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_down_60s_results_stored_once() {
        super::server_down_60s_results_stored_once(Backend::Postgres).await
    }
}
