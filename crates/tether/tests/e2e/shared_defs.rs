//! One definitions repository shared by every server (issue #12): two real
//! servers on one PostgreSQL with one `defs_dir`, one TLS CA, and real
//! `tether-agent` processes. A publish through either is served by the
//! other at once, with identical bytes; the re-signing job runs on one
//! server; a root rotation made on the shared directory reaches the other
//! server's enrollments within seconds; and a server that had its own
//! repository (and agents that pinned its root) joins the shared one with
//! `tether defs join`, its agents walking the chain and updating on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::defs::support::{CHANNEL, eventually, publish_to, subscribe, update_expect};
use crate::lab::{Agent, Backend, Scratch, Server, tether_bin, text};

/// The environment that gives a second server the first one's TLS
/// identity (the chain ends at the first one's CA, which agents pin), so
/// either server presents a certificate every agent trusts.
fn same_tls(first: &Server, files: &Path) -> [(String, String); 2] {
    let pki = first.dir.path().join("pki");
    let chain = files.join("chain.pem");
    let mut pem = std::fs::read(pki.join("server.pem")).expect("server.pem");
    pem.extend(std::fs::read(pki.join("ca.pem")).expect("ca.pem"));
    std::fs::write(&chain, pem).expect("chain written");
    [
        ("TETHER_TLS_CERT".into(), chain.display().to_string()),
        (
            "TETHER_TLS_KEY".into(),
            pki.join("server.key").display().to_string(),
        ),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn get(server: &Server, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", "--cacert"])
        .arg(&server.endpoint.ca_pem_path)
        .arg(format!("{}{path}", server.endpoint.url))
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success(), "GET {path}: {}", text(&out));
    out.stdout
}

async fn jobs(server: &Server) -> Vec<String> {
    server.health().await.map(|h| h.jobs).unwrap_or_default()
}

fn installed(agent: &Agent) -> (u64, String) {
    let i = tether_defs::client::read_installed(agent.state.path(), CHANNEL).expect("installed");
    (i.version, i.sha256)
}

fn pinned_root_version(agent: &Agent) -> u64 {
    let root: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.state.path().join("defs").join("root.json")).expect("root.json"),
    )
    .expect("JSON");
    root["signed"]["version"].as_u64().expect("a version")
}

async fn enroll(agent: &Agent, server: &Server) {
    let token = server.token(&[]).await;
    agent.enroll_ok(server, &token.token, &[]).await;
}

/// Publish through A, update through B, and the other way round; the
/// bytes both serve are the same; `defs-refresh` runs on one server; a
/// rotation on the shared directory reaches B's enrollments within seconds.
#[tokio::test]
async fn a_publish_through_one_server_is_served_by_the_other() {
    let files = Scratch::new("shared-defs");
    let shared = files.path().join("defs");
    let defs_env = ("TETHER_DEFS_DIR".to_owned(), shared.display().to_string());
    let a = Server::start_with(
        Backend::Postgres,
        &env_refs(std::slice::from_ref(&defs_env)),
    )
    .await;
    let mut env_b = same_tls(&a, files.path()).to_vec();
    env_b.push(defs_env);
    let b = Server::start_sharing_database_with(&a, &env_refs(&env_b)).await;
    assert_eq!(a.endpoint.ca_fingerprint, b.endpoint.ca_fingerprint);

    // Enrolled through A, updating from B.
    let b_defs = format!("{}/defs/", b.endpoint.url);
    subscribe(&a, &["--update-url", &b_defs]).await;
    let one = Agent::new();
    enroll(&one, &a).await;
    let v1 = publish_to(&a, files.path(), b"rule one\n").await;
    let started = Instant::now();
    let t = update_expect(one.state.path(), &[], 0).await;
    eprintln!(
        "published through A, installed through B in {:?}",
        started.elapsed()
    );
    assert!(t.contains("main: installed version 1"), "{t}");
    assert_eq!(installed(&one), (1, v1.sha256.clone()));

    // Identical bytes from both servers (the metadata, the root, an object).
    for path in [
        "/defs/metadata/timestamp.json",
        "/defs/metadata/1.root.json",
        "/defs/metadata/2.snapshot.json",
    ] {
        assert_eq!(get(&a, path).await, get(&b, path).await, "{path}");
    }

    // Enrolled through B, updating from A; both agents pinned one root.
    let a_defs = format!("{}/defs/", a.endpoint.url);
    subscribe(&b, &["--update-url", &a_defs]).await;
    let two = Agent::new();
    enroll(&two, &b).await;
    assert_eq!(
        std::fs::read(two.state.path().join("defs/root.json")).expect("root"),
        std::fs::read(one.state.path().join("defs/root.json")).expect("root")
    );
    let v2 = publish_to(&b, files.path(), b"rule one\nrule two\n").await;
    assert_eq!(v2.version, 2, "B numbers after A's publish");
    for agent in [&one, &two] {
        let t = update_expect(agent.state.path(), &[], 0).await;
        assert!(t.contains("main: installed version 2"), "{t}");
        assert_eq!(installed(agent), (2, v2.sha256.clone()));
    }
    // The store is shared: either server's summary lists both versions.
    for server in [&a, &b] {
        let s = server.admin_ok(&["defs", "summary", "--json"]).await;
        let s: Vec<tether_wire::ChannelSummary> = serde_json::from_str(&s).expect("summary");
        let main = s.iter().find(|c| c.channel == CHANNEL).expect("main");
        let mut versions: Vec<u64> = main.versions.iter().map(|v| v.version).collect();
        versions.sort_unstable();
        assert_eq!(versions, [1, 2]);
    }

    // One repository, one re-signing job, on one server.
    let (on_a, on_b) = (jobs(&a).await, jobs(&b).await);
    let refreshing = [&on_a, &on_b]
        .iter()
        .filter(|j| j.iter().any(|j| j == "defs-refresh"))
        .count();
    assert_eq!(refreshing, 1, "A: {on_a:?}, B: {on_b:?}");

    // A rotation made on the shared directory (here, next to A): B hands the
    // new root to enrollments within seconds, without a restart.
    let out = Command::new(tether_bin())
        .args(["defs", "rotate-key", "--role", "timestamp", "--defs-dir"])
        .arg(&shared)
        .arg("--root-key")
        .arg(shared.join("keys/root.pem"))
        .output()
        .await
        .expect("rotate-key runs");
    assert!(out.status.success(), "{}", text(&out));
    let rotated = Instant::now();
    let took = eventually(
        Duration::from_secs(10),
        "B's enrollments pin root 2",
        || async {
            let agent = Agent::new();
            enroll(&agent, &b).await;
            (pinned_root_version(&agent) == 2).then_some(rotated.elapsed())
        },
    )
    .await;
    eprintln!("root rotated on the shared directory; B pins it after {took:?}");
    let v3 = publish_to(&a, files.path(), b"rule three\n").await;
    let t = update_expect(two.state.path(), &[], 0).await;
    assert!(t.contains("main: installed version 3"), "{t}");
    assert_eq!(installed(&two), (3, v3.sha256));
}

/// Server B had a repository of its own and an agent that pinned its root
/// and installed B's channel at a version above the shared one's. `tether
/// defs join` countersigns the shared root with B's root key and raises the
/// channel; B restarts on the shared `defs_dir`; the agent walks the root
/// chain to the shared root, installs the raised version, and keeps
/// updating from what A publishes.
#[tokio::test]
async fn an_agent_pinned_at_a_joining_servers_own_root_walks_to_the_shared_root() {
    let files = Scratch::new("shared-defs");
    let shared = files.path().join("defs");
    let defs_env = ("TETHER_DEFS_DIR".to_owned(), shared.display().to_string());
    let a = Server::start_with(
        Backend::Postgres,
        &env_refs(std::slice::from_ref(&defs_env)),
    )
    .await;
    let tls = same_tls(&a, files.path()).to_vec();
    let db = a.database_url.clone().expect("postgres");
    // B shares the database and the TLS identity, not yet the repository.
    let mut b = Server::start_restartable_at_database_url(db, &env_refs(&tls)).await;
    subscribe(&b, &[]).await;
    let shared_v1 = publish_to(&a, files.path(), b"shared rules\n").await;
    assert_eq!(shared_v1.version, 1);
    let agent = Agent::new();
    enroll(&agent, &b).await;
    for i in 1..=3 {
        publish_to(&b, files.path(), format!("B's rules {i}\n").as_bytes()).await;
    }
    let t = update_expect(agent.state.path(), &[], 0).await;
    assert!(t.contains("main: installed version 3"), "{t}");
    assert_eq!(pinned_root_version(&agent), 1);

    // The join, with B's root key passed explicitly (as from offline media).
    let own_root: PathBuf = b.dir.path().join("defs/keys/root.pem");
    let out = Command::new(tether_bin())
        .args(["defs", "join", "--shared"])
        .arg(&shared)
        .arg("--root-key")
        .arg(&own_root)
        .arg("--data-dir")
        .arg(b.dir.path())
        .output()
        .await
        .expect("defs join runs");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("countersigned shared root versions 2"),
        "{said}"
    );
    assert!(said.contains("published main v4"), "{said}");

    b.stop().await;
    let mut env_b = tls.clone();
    env_b.push(defs_env);
    b.restart_with_env(&env_refs(&env_b)).await;

    // Through B (the agent's server), now serving the shared repository.
    let t = update_expect(agent.state.path(), &[], 0).await;
    assert!(t.contains("main: installed version 4"), "{t}");
    assert_eq!(installed(&agent), (4, shared_v1.sha256.clone()));
    let v5 = publish_to(&a, files.path(), b"shared rules\nmore\n").await;
    assert_eq!(v5.version, 5);
    let t = update_expect(agent.state.path(), &[], 0).await;
    assert!(t.contains("main: installed version 5"), "{t}");
    assert_eq!(installed(&agent), (5, v5.sha256));
    // The agent still holds the root it pinned at enrollment: it walked
    // the chain rather than being re-pinned.
    assert_eq!(pinned_root_version(&agent), 1);

    // A join with a key that signs none of B's roots is refused with its
    // code, and changes nothing.
    let stranger = files.path().join("stranger.pem");
    let out = Command::new(tether_bin())
        .args(["defs", "keygen", "--out"])
        .arg(&stranger)
        .output()
        .await
        .expect("keygen runs");
    assert!(out.status.success(), "{}", text(&out));
    let before = std::fs::read(shared.join("state.json")).expect("state");
    let out = Command::new(tether_bin())
        .args(["defs", "join", "--shared"])
        .arg(&shared)
        .arg("--root-key")
        .arg(&stranger)
        .arg("--data-dir")
        .arg(b.dir.path())
        .output()
        .await
        .expect("defs join runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("TETHER-E6031"), "{}", text(&out));
    assert_eq!(
        std::fs::read(shared.join("state.json")).expect("state"),
        before
    );
}
