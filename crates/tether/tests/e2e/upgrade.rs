//! Agent upgrades on the host (issue #13): the `launch` supervisor, the
//! atomic switch under STATE_DIR/bin, the fallback to the previous version,
//! and a kill -9 during the swap, with two real builds of the agent that
//! differ only in their version.
//!
//! The second build is `tether-agent-next` beside `tether-agent`, built by
//! scripts/test.sh with `TETHER_AGENT_VERSION=99.0.0-next` (only the small
//! `tether-agent-bin` crate recompiles for it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tether_wire::{AgentStatus, UpgradeState};
use time::format_description::well_known::Rfc3339;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::lab::{Agent, Backend, Scratch, Server, agent_bin, sigterm, text};

const NEXT: &str = "99.0.0-next";

/// The second real build (scripts/test.sh makes it).
fn next_bin() -> PathBuf {
    let p = agent_bin().with_file_name("tether-agent-next");
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh builds it before the tests; by hand: \
         TETHER_AGENT_VERSION={NEXT} cargo build -p tether-agent-bin && \
         cp target/debug/tether-agent target/debug/tether-agent-next && cargo build -p tether-agent-bin",
        p.display()
    );
    p
}

async fn version_of(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .await
        .expect("--version runs");
    assert!(out.status.success(), "{}: {}", bin.display(), text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("tether-agent ")
        .expect("tether-agent VERSION")
        .to_owned()
}

/// Two real builds that differ in their version.
async fn builds() -> (PathBuf, String, PathBuf) {
    let (packaged, next) = (agent_bin(), next_bin());
    let packaged_version = version_of(&packaged).await;
    assert_eq!(version_of(&next).await, NEXT, "the second build's version");
    assert_ne!(packaged_version, NEXT, "the builds differ in their version");
    (packaged, packaged_version, next)
}

fn launch(agent: &Agent, packaged: &Path, within: &str) -> Child {
    let log = std::fs::File::create(agent.state.path().join("launch.stderr")).expect("log");
    Command::new(packaged)
        .arg("launch")
        .arg("--state-dir")
        .arg(agent.state.path())
        .args(["--check-in-within", within])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("TETHER_EXIT_WITH_PARENT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("tether-agent launch starts")
}

fn launch_log(agent: &Agent) -> String {
    std::fs::read_to_string(agent.state.path().join("launch.stderr")).unwrap_or_default()
}

async fn install(agent: &Agent, by: &Path, file: &Path, version: &str) -> std::process::Output {
    Command::new(by)
        .args(["upgrade", "install", "--state-dir"])
        .arg(agent.state.path())
        .arg("--file")
        .arg(file)
        .args(["--version", version])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("upgrade install runs")
}

async fn status(agent: &Agent, packaged: &Path) -> serde_json::Value {
    let out = Command::new(packaged)
        .args(["upgrade", "status", "--json", "--state-dir"])
        .arg(agent.state.path())
        .output()
        .await
        .expect("upgrade status runs");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// Waits (bounded) until the host's upgrade status satisfies `ok`.
async fn wait_status(
    agent: &Agent,
    packaged: &Path,
    within: Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(agent, packaged).await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {within:?}: {s:#}\nlaunch log:\n{}",
            launch_log(agent)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until the server lists the agent with `version`.
async fn wait_version(server: &Server, agent: &Agent, version: &str, within: Duration) {
    let id = agent.id();
    let deadline = Instant::now() + within;
    loop {
        let listed = server.agents().await;
        let a = listed.iter().find(|a| a.id == id).expect("listed");
        if a.version == version && a.status == AgentStatus::Active {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server lists version {} ({}), expected {version}; launch log:\n{}",
            a.version,
            a.status,
            launch_log(agent)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until the control plane shows the agent's last upgrade
/// in `state` for `version`; returns it.
async fn wait_server_upgrade(
    server: &Server,
    agent: &Agent,
    state: tether_wire::UpgradeState,
    version: &str,
) -> tether_wire::UpgradeReport {
    let id = agent.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = server.agents().await;
        let a = listed.iter().find(|a| a.id == id).expect("listed");
        if let Some(u) = &a.upgrade
            && u.state == state
            && u.version == version
        {
            return u.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the control plane shows {:?}, expected {state} of {version}; launch log:\n{}",
            a.upgrade,
            launch_log(agent)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

async fn enrolled(server: &Server) -> Agent {
    let agent = Agent::new();
    let token = server.token(&[]).await;
    agent.enroll_ok(server, &token.token, &[]).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_then_roll_back_a_version_that_fails_to_start_or_to_check_in() {
    let (packaged, packaged_version, next) = builds().await;
    let server = Server::start(Backend::Sqlite).await;
    let agent = enrolled(&server).await;
    let mut sup = launch(&agent, &packaged, "12s");
    wait_version(&server, &agent, &packaged_version, Duration::from_secs(20)).await;

    // Upgrade to the second real build: the supervisor restarts into it and
    // it checks in under its own version.
    let out = install(&agent, &packaged, &next, NEXT).await;
    assert!(out.status.success(), "{}", text(&out));
    wait_version(&server, &agent, NEXT, Duration::from_secs(30)).await;
    let s = wait_status(
        &agent,
        &packaged,
        Duration::from_secs(10),
        "upgraded",
        |s| s["last_upgrade"]["state"] == "upgraded",
    )
    .await;
    assert_eq!(s["current"], NEXT);
    assert_eq!(s["previous"], serde_json::Value::Null, "{s:#}");
    let installed = agent
        .state
        .path()
        .join("bin")
        .join(NEXT)
        .join("tether-agent");
    assert_eq!(Some(installed.to_str().expect("utf-8")), s["path"].as_str());

    // A binary that reports its version but fails to start: rolled back to
    // the second build, with the reason.
    let scripts = Scratch::new("upgrade-scripts");
    let broken = script(
        scripts.path(),
        "broken",
        "if [ \"$1\" = --version ]; then echo 'tether-agent 99.0.1-broken'; exit 0; fi\necho 'cannot start' >&2; exit 3",
    );
    let out = install(&agent, &packaged, &broken, "99.0.1-broken").await;
    assert!(out.status.success(), "{}", text(&out));
    let s = wait_status(
        &agent,
        &packaged,
        Duration::from_secs(20),
        "rolled back",
        |s| s["last_upgrade"]["state"] == "rolled_back",
    )
    .await;
    assert_eq!(s["current"], NEXT, "{s:#}");
    assert_eq!(s["last_upgrade"]["version"], "99.0.1-broken");
    let reason = s["last_upgrade"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exited") && reason.contains("before it checked in"),
        "{reason}"
    );
    // The control plane shows the rollback and why, in the list too.
    let shown =
        wait_server_upgrade(&server, &agent, UpgradeState::RolledBack, "99.0.1-broken").await;
    assert_eq!(shown.reason.as_deref(), Some(reason));
    assert_eq!(shown.from.as_deref(), Some(NEXT));
    let list = server.admin_ok(&["agents", "list"]).await;
    assert!(
        list.contains(
            "rolled back from 99.0.1-broken to 99.0.0-next: version 99.0.1-broken exited"
        ),
        "{list}"
    );
    assert!(
        list.contains(NEXT),
        "the list shows the version whole: {list}"
    );

    // One that starts but never checks in: rolled back after the bound.
    let silent = script(
        scripts.path(),
        "silent",
        "if [ \"$1\" = --version ]; then echo 'tether-agent 99.0.2-silent'; exit 0; fi\nexec sleep 3600",
    );
    let started = Instant::now();
    let out = install(&agent, &packaged, &silent, "99.0.2-silent").await;
    assert!(out.status.success(), "{}", text(&out));
    let s = wait_status(
        &agent,
        &packaged,
        Duration::from_secs(30),
        "rolled back",
        |s| {
            s["last_upgrade"]["version"] == "99.0.2-silent"
                && s["last_upgrade"]["state"] == "rolled_back"
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(12),
        "not before the bound"
    );
    let reason = s["last_upgrade"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("did not check in within 12s"), "{reason}");
    assert_eq!(s["current"], NEXT);
    // The second build runs again after the rollback and checks in.
    let rolled_back_at = s["last_upgrade"]["at"].as_str().expect("at").to_owned();
    let rolled_back_at = time::OffsetDateTime::parse(&rolled_back_at, &Rfc3339).expect("rfc3339");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(agent.state.path().join("state.json")).expect("state.json"),
        )
        .expect("json");
        let contact = state["last_successful_contact"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok());
        if state["contact_version"] == NEXT && contact.is_some_and(|t| t >= rolled_back_at) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no check-in after the rollback: {state:#}\n{}",
            launch_log(&agent)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_version(&server, &agent, NEXT, Duration::from_secs(15)).await;

    // A version that is not a plain version, or a file that does not report
    // the version it is installed as, is refused and nothing switches.
    let out = install(&agent, &packaged, &next, "../../etc").await;
    assert!(!out.status.success());
    assert!(text(&out).contains("TETHER-E8800"), "{}", text(&out));
    let out = install(&agent, &packaged, &next, "99.0.3").await;
    assert!(!out.status.success());
    assert!(text(&out).contains("TETHER-E8801"), "{}", text(&out));
    assert_eq!(status(&agent, &packaged).await["current"], NEXT);

    let st = sigterm(&mut sup, Duration::from_secs(20)).await;
    assert!(st.success(), "launch stops cleanly: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_swap_always_leaves_a_runnable_agent() {
    let (packaged, packaged_version, next) = builds().await;
    let server = Server::start(Backend::Sqlite).await;
    let agent = enrolled(&server).await;
    let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
    // Alternate between the two real builds, each install killed after a
    // growing delay: during the copy, its fsync, the check, the pointers.
    let delays = [0u64, 2, 5, 10, 20, 40, 80, 120, 200, 300, 450, 700, 1000];
    let mut killed_mid_swap = 0;
    for (i, delay) in delays.iter().enumerate() {
        let (file, version) = if i % 2 == 0 {
            (&next, NEXT)
        } else {
            (&packaged, packaged_version.as_str())
        };
        let mut child = Command::new(&packaged)
            .args(["upgrade", "install", "--state-dir"])
            .arg(agent.state.path())
            .arg("--file")
            .arg(file)
            .args(["--version", version])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("install starts");
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        child.start_kill().expect("SIGKILL");
        let st = child.wait().await.expect("wait");
        if st.code().is_none() {
            killed_mid_swap += 1;
        }
        let s = status(&agent, &packaged).await;
        let path = PathBuf::from(s["path"].as_str().expect("path"));
        let runs = version_of(&path).await;
        assert!(
            runs == NEXT || runs == packaged_version,
            "after a kill at {delay} ms the chosen binary reports {runs}: {s:#}"
        );
        let source = if runs == NEXT { &next } else { &packaged };
        assert_eq!(size(&path), size(source), "a whole binary: {s:#}");
        // An upgrade still pending is one whose switch completed; one cut
        // off before it was closed as rolled back.
        if s["last_upgrade"]["state"] == "upgrading" {
            assert_eq!(s["last_upgrade"]["version"], s["current"], "{s:#}");
            assert_eq!(s["trial"], true, "{s:#}");
        }
    }
    assert!(
        killed_mid_swap >= 3,
        "only {killed_mid_swap} kills landed mid-swap"
    );
    // Whatever the last kill left, the supervisor starts it and it checks in.
    let s = status(&agent, &packaged).await;
    let expected = version_of(Path::new(s["path"].as_str().expect("path"))).await;
    let mut sup = launch(&agent, &packaged, "20s");
    wait_version(&server, &agent, &expected, Duration::from_secs(30)).await;
    assert!(sigterm(&mut sup, Duration::from_secs(20)).await.success());
}

/// Waits (bounded) until `tether rollout list --json` shows the group's
/// rollout satisfying `ok`; returns it.
async fn wait_rollout(
    server: &Server,
    group: &str,
    what: &str,
    agent: &Agent,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed: serde_json::Value =
            serde_json::from_str(&server.admin_ok(&["rollout", "list", "--json"]).await)
                .expect("rollout list --json");
        let r = listed
            .as_array()
            .and_then(|a| a.iter().find(|r| r["group"] == group).cloned())
            .unwrap_or_default();
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached: {r:#}\nlaunch log:\n{}",
            launch_log(agent)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The whole path of issue #13's rollout: a release published as a signed
/// definitions channel, a group's target version, the supervised agent
/// fetching it through the updater and restarting into it; then a release
/// that fails to start rolls back on the host and pauses the rollout by
/// itself, and is never offered to that agent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_upgrades_a_supervised_agent_and_a_rollback_pauses_it() {
    let (packaged, packaged_version, next) = builds().await;
    let server = Server::start(Backend::Sqlite).await;
    let agent = enrolled(&server).await;
    let id = agent.id();
    let group = server
        .agents()
        .await
        .into_iter()
        .find(|a| a.id == id)
        .expect("listed")
        .group;

    // Refusals, each with its code, before anything is published.
    for (args, code) in [
        (vec!["--version", NEXT], "TETHER-E8805"),
        (vec!["--version", "1.0.0+Build"], "TETHER-E8806"),
        (vec!["--version", NEXT, "--canary", "0"], "TETHER-E8807"),
    ] {
        let mut all = vec!["rollout", "set", group.as_str()];
        all.extend(args);
        let out = server.admin(&all).await;
        assert!(!out.status.success(), "{all:?}");
        assert!(text(&out).contains(code), "{all:?}: {}", text(&out));
    }
    let out = server.admin(&["rollout", "resume", "no-such-group"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("not found"), "{}", text(&out));

    let published = server
        .admin_ok(&[
            "rollout",
            "publish",
            "--file",
            next.to_str().expect("utf-8"),
            "--version",
            NEXT,
        ])
        .await;
    let platform = tether_agent::upgrade::offer::platform();
    assert!(
        published.contains(&format!("agent-{platform}-{NEXT}")),
        "{published}"
    );
    let releases = server.admin_ok(&["rollout", "releases"]).await;
    assert!(
        releases.contains(NEXT) && releases.contains(&platform),
        "{releases}"
    );

    // Offers travel with check-ins: every 5 s here.
    server
        .admin_ok(&["policy", "set", "default", "--checkin-interval", "5s"])
        .await;
    let mut sup = launch(&agent, &packaged, "20s");
    wait_version(&server, &agent, &packaged_version, Duration::from_secs(20)).await;
    let set = server
        .admin_ok(&["rollout", "set", &group, "--version", NEXT])
        .await;
    assert!(
        set.contains(&format!("version {NEXT} (all), running")),
        "{set}"
    );
    // Fetched through the definitions updater, installed, restarted into.
    wait_version(&server, &agent, NEXT, Duration::from_secs(60)).await;
    wait_server_upgrade(&server, &agent, UpgradeState::Upgraded, NEXT).await;
    let r = wait_rollout(&server, &group, "progress", &agent, |r| {
        r["progress"]["on_target"] == 1
    })
    .await;
    assert_eq!(r["progress"]["agents"], 1, "{r:#}");
    let list = server.admin_ok(&["agents", "list"]).await;
    assert!(list.contains(&format!("upgraded to {NEXT}")), "{list}");
    assert!(!list.contains("behind"), "{list}");
    // The release channel's copy was removed after the install.
    let channel_dir = agent
        .state
        .path()
        .join("defs")
        .join(format!("agent-{platform}-{NEXT}"));
    assert!(!channel_dir.exists(), "{}", channel_dir.display());

    // A release that reports its version but cannot start.
    let scripts = Scratch::new("rollout-scripts");
    let bad = script(
        scripts.path(),
        "bad",
        "if [ \"$1\" = --version ]; then echo 'tether-agent 99.0.1-bad'; exit 0; fi\necho 'cannot start' >&2; exit 3",
    );
    server
        .admin_ok(&[
            "rollout",
            "publish",
            "--file",
            bad.to_str().expect("utf-8"),
            "--version",
            "99.0.1-bad",
        ])
        .await;
    server
        .admin_ok(&["rollout", "set", &group, "--version", "99.0.1-bad"])
        .await;
    let r = wait_rollout(&server, &group, "paused by the rollback", &agent, |r| {
        r["paused"] == true
    })
    .await;
    let reason = r["pause_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("version 99.0.1-bad rolled back") && reason.contains("exited"),
        "{reason}"
    );
    assert_eq!(r["progress"]["rolled_back"], 1, "{r:#}");
    wait_version(&server, &agent, NEXT, Duration::from_secs(30)).await;
    // A resume does not offer the version to the agent it rolled back on.
    server.admin_ok(&["rollout", "resume", &group]).await;
    let list = server.admin_ok(&["agents", "list"]).await;
    assert!(
        list.contains("behind 99.0.1-bad: it rolled back here"),
        "{list}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&agent, &packaged).await;
    assert_eq!(s["current"], NEXT, "{s:#}");
    let r = wait_rollout(&server, &group, "still running", &agent, |r| {
        r["paused"] == false
    })
    .await;
    assert_eq!(r["progress"]["on_target"], 0, "{r:#}");
    server.admin_ok(&["rollout", "clear", &group]).await;
    assert!(
        server
            .admin_ok(&["rollout", "list"])
            .await
            .contains("no rollouts")
    );

    let st = sigterm(&mut sup, Duration::from_secs(20)).await;
    assert!(st.success(), "launch stops cleanly: {st}");
}
