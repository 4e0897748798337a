//! Definitions end to end: the real server publishing into its TUF
//! repository, real `tether-agent update --now` and `run` processes, and the
//! real programs between them: squid demanding Basic auth, nginx serving a
//! `tether defs mirror` tree over HTTPS, socat terminating TLS around a relay
//! in this test that cuts, corrupts, pads, throttles or refuses downloads,
//! a tmpfs that runs out of space, and libfaketime moving the agent's clock.
//!
//! Every fault ends with the installed version intact and the fault's
//! catalog code in `tether-agent defs status --json`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tether_testlab::nginx::Nginx;
use tether_testlab::relay::Mode;
use tether_testlab::squid::Squid;
use tether_testlab::tmpfs::Tmpfs;
use tether_wire::{AgentStatus, ErrorCode};
use tokio::process::Command;
use tokio::time::Instant;

use crate::both_backends;
use crate::lab::{Backend, Scratch, Server, agent_bin, free_port, tether_bin, text};

pub(crate) mod support;

use support::*;

both_backends!(
    happy_path_full_then_delta_over_the_control_plane,
    admin_update_now_reaches_a_running_agent_and_user_updates_can_be_forbidden,
);

// ---------------------------------------------------------------------------
// 1. Happy path over the control plane.

async fn happy_path_full_then_delta_over_the_control_plane(backend: Backend) {
    let lab = DefsLab::start(backend).await;
    lab.policy(&[]).await;
    let lines = rule_lines(36_000, 1);
    let v1 = lab.publish(&joined(&lines)).await;
    assert_eq!(v1.version, 1);
    assert!(v1.length > 3_000_000, "a few MB: {}", v1.length);

    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(st["version"], 1, "{st}");
    assert_eq!(st["method"], "full", "{st}");
    assert_installed_intact(&state, &[&v1]);

    // 0.5 % of the lines change: the agent takes the signed delta.
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 2))).await;
    let delta = v2
        .deltas
        .iter()
        .find(|d| d.from_version == 1)
        .unwrap_or_else(|| panic!("v2 has a delta from v1: {v2:?}"));
    let t = update_expect(&state, &[], 0).await;
    let bytes: u64 = t
        .split("(from version 1, delta, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the update names a delta and its bytes: {t}"));
    assert_eq!(bytes, delta.size, "the signed delta is what was fetched");
    assert!(
        bytes * 20 < v2.full_size,
        "a delta of {bytes} bytes is much smaller than the full {}",
        v2.full_size
    );
    let st = channel_status(&state).await;
    assert_eq!(
        (st["version"].as_u64(), st["method"].as_str()),
        (Some(2), Some("delta")),
        "{st}"
    );
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    let inst = tether_defs::client::read_installed(&state, CHANNEL).expect("installed");
    assert_eq!(
        inst.previous.as_ref().map(|p| p.version),
        Some(1),
        "the previous version is kept"
    );
    // Up to date: nothing more to fetch.
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 2"), "{t}");

    // After a check-in the control plane shows it.
    agent.run(&[]);
    let detail = eventually(
        Duration::from_secs(30),
        "agents show lists v2 in policy",
        || async {
            let d = lab.server.agent(id).await;
            let c = d.defs.iter().find(|c| c.channel == CHANNEL)?;
            (c.version == Some(2) && d.in_policy == Some(true) && c.server.is_some()).then_some(d)
        },
    )
    .await;
    let view = &detail.defs[0];
    assert_eq!(view.versions_behind, 0);
    assert_eq!(view.newest_version, Some(2));
    assert!(view.last_error.is_none(), "{view:?}");
    let shown = lab
        .server
        .admin_ok(&["agents", "show", &id.to_string()])
        .await;
    for want in [
        "Definitions main".to_owned(),
        "v2, current".to_owned(),
        format!(
            "update server {}/defs/, direct",
            lab.server.endpoint.url.trim_end_matches('/')
        ),
    ] {
        assert!(
            shown.contains(&want),
            "{want:?} missing from agents show:\n{shown}"
        );
    }
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("In policy") && l.contains("yes")),
        "{shown}"
    );
    let summary = lab.summary().await;
    let ch = summary
        .iter()
        .find(|c| c.channel == CHANNEL)
        .expect("summary lists the channel");
    let on = |v: u64| {
        ch.versions
            .iter()
            .find(|x| x.version == v)
            .map(|x| x.agents)
    };
    assert_eq!((on(2), on(1)), (Some(1), Some(0)), "{ch:?}");
    assert_eq!(
        (ch.agents_subscribed, ch.agents_in_policy),
        (1, 1),
        "{ch:?}"
    );
    let table = lab.server.admin_ok(&["defs", "summary"]).await;
    assert!(table.contains("subscribed 1, in policy 1"), "{table}");
    agent.terminate().await;
}

// ---------------------------------------------------------------------------
// 2. Through squid with Basic auth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_squid_wrong_credentials_are_named_then_right_ones_work() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let port = lab.port();
    // Check-ins go direct (no_proxy 127.0.0.1); definitions come from the
    // same server under the name `localhost`, which goes through squid.
    let update_url = format!("https://localhost:{port}/defs/");
    lab.policy(&["--update-url", &update_url]).await;
    let v1 = lab.publish(&joined(&rule_lines(5_000, 3))).await;
    let squid = Squid::start(port, "tether", "s3cret-pass").await;
    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let toml = state.join("agent.toml");
    let base = std::fs::read_to_string(&toml).expect("agent.toml");
    let with_proxy = |password: &str| {
        format!(
            "{base}proxy = \"http://tether:{password}@127.0.0.1:{}\"\nno_proxy = [\"127.0.0.1\"]\n",
            squid.port
        )
    };
    // No credentials at all: the proxy's 407 is named as such.
    std::fs::write(
        &toml,
        format!(
            "{base}proxy = \"http://127.0.0.1:{}\"\nno_proxy = [\"127.0.0.1\"]\n",
            squid.port
        ),
    )
    .expect("agent.toml written");
    let t = update_expect(&state, &[], 2).await;
    let required = ErrorCode::ProxyAuthRequired.as_str();
    assert!(t.contains(required), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(required));

    std::fs::write(&toml, with_proxy("wrong-pass")).expect("agent.toml written");

    let t = update_expect(&state, &[], 2).await;
    let code = ErrorCode::ProxyAuthFailed.as_str();
    assert!(t.contains(code), "{t}");
    assert!(
        !t.contains("wrong-pass"),
        "the proxy password is never printed: {t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(st["last_error"]["code"], code, "{st}");
    assert!(
        st["via_proxy"]
            .as_str()
            .is_some_and(|p| p.contains(&squid.port.to_string())),
        "{st}"
    );
    assert!(!st.to_string().contains("wrong-pass"), "{st}");
    assert!(tether_defs::client::read_installed(&state, CHANNEL).is_none());

    // The next check-in carries it to the control plane.
    agent.run(&[]);
    let detail = eventually(
        Duration::from_secs(30),
        "agents show names the proxy failure",
        || async {
            let d = lab.server.agent(id).await;
            let c = d.defs.iter().find(|c| c.channel == CHANNEL)?;
            (c.last_error.as_ref().map(|e| e.code) == Some(ErrorCode::ProxyAuthFailed)).then_some(d)
        },
    )
    .await;
    assert!(
        detail.defs[0].via_proxy.is_some(),
        "the proxy in the path is reported: {:?}",
        detail.defs[0]
    );
    let shown = lab
        .server
        .admin_ok(&["agents", "show", &id.to_string()])
        .await;
    assert!(
        shown.contains(code) && shown.contains("via proxy"),
        "{shown}"
    );
    assert!(!shown.contains("wrong-pass"), "{shown}");
    agent.terminate().await;

    // The right password: the download goes through the tunnel.
    std::fs::write(&toml, with_proxy("s3cret-pass")).expect("agent.toml written");
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    assert_installed_intact(&state, &[&v1]);
    let st = channel_status(&state).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["server"], update_url.as_str(), "{st}");
    let log = squid.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("CONNECT localhost:{port}")) && l.contains(" tether ")),
        "the download went through squid as user tether:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 3. A static mirror on nginx: fall-through, rollback, frozen.

/// `tether defs mirror --to DIR` on the server's data dir.
async fn mirror(lab: &DefsLab, to: &Path) {
    let out = lab
        .server
        .admin_ok(&["defs", "mirror", "--to", to.to_str().expect("utf-8 path")])
        .await;
    assert!(
        to.join("metadata").join("timestamp.json").is_file(),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_mirror_after_a_dead_server_then_rollback_and_freeze_are_refused() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let lines = rule_lines(8_000, 4);
    let v1 = lab.publish(&joined(&lines)).await;
    let www = Scratch::new("mirror");
    let live = www.path().join("live");
    mirror(&lab, &live).await;
    // A copy frozen at v1, served later as a stale mirror.
    let stale = www.path().join("stale");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&live)
        .arg(&stale)
        .status()
        .expect("cp runs");
    assert!(cp.success());

    let nginx = Nginx::static_https(&live, &lab.pki("server.pem"), &lab.pki("server.key")).await;
    let dead = format!("https://127.0.0.1:{}/defs/", free_port());
    lab.policy(&["--update-url", &dead, "--update-url", &nginx.url()])
        .await;
    let (agent, _id) = lab.enroll().await;
    let state = agent.state.path().to_owned();

    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(
        st["server"],
        nginx.url().as_str(),
        "served by the mirror: {st}"
    );
    assert_installed_intact(&state, &[&v1]);

    // Two more versions, mirrored: the agent follows the mirror.
    lab.publish(&joined(&change_lines(&lines, 5, 5))).await;
    let v3 = lab.publish(&joined(&change_lines(&lines, 5, 6))).await;
    mirror(&lab, &live).await;
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 3 (from version 1,"),
        "{t}"
    );

    // The old copy comes back: an older timestamp is a rollback, refused.
    let newer = www.path().join("newer");
    std::fs::rename(&live, &newer).expect("rename");
    std::fs::rename(&stale, &live).expect("rename");
    let t = update_expect(&state, &[], 2).await;
    let rollback = ErrorCode::DefsRollbackRefused.as_str();
    assert!(t.contains(rollback), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(rollback));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);

    // The current copy, never refreshed, seen two days later: its
    // timestamp (one day) has expired, so the mirror is frozen.
    std::fs::rename(&live, &stale).expect("rename");
    std::fs::rename(&newer, &live).expect("rename");
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 3"), "{t}");

    // A mirror whose metadata was edited: the signature no longer holds.
    let timestamp = live.join("metadata").join("timestamp.json");
    let genuine = std::fs::read(&timestamp).expect("timestamp.json");
    let mut edited: serde_json::Value = serde_json::from_slice(&genuine).expect("JSON");
    let version = edited["signed"]["version"].as_u64().expect("a version");
    edited["signed"]["version"] = (version + 1).into();
    std::fs::write(&timestamp, edited.to_string()).expect("edited");
    let t = update_expect(&state, &[], 2).await;
    let forged = ErrorCode::DefsSignatureInvalid.as_str();
    assert!(t.contains(forged), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(forged));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);
    std::fs::write(&timestamp, &genuine).expect("restored");
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 3"), "{t}");

    // Last: the trusted metadata store then remembers a time two days ahead.
    let env = tether_testlab::faketime::env("+2d");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = update_expect(&state, &env, 2).await;
    let expired = ErrorCode::DefsMetadataExpired.as_str();
    assert!(t.contains(expired) && t.contains("timestamp"), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(expired));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);
}

// ---------------------------------------------------------------------------
// 4. Resume, corruption, oversize and cool-down through the relay.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_faults_resume_corrupt_oversize_and_cool_down() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let path = lab.relay().await;
    let relay = &path.relay;
    lab.policy(&["--update-url", &path.url("/defs/")]).await;
    let lines = rule_lines(20_000, 7);
    let v1 = lab.publish(&joined(&lines)).await;
    let (agent, _id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let partial = state.join("defs").join("partial");

    // Cut after a fifth of the object, in every round of the first attempt.
    let cut = v1.full_size / 5;
    relay.set(Mode::CutAfter(cut));
    let t = update_expect(&state, &[], 2).await;
    let interrupted = ErrorCode::DefsDownloadInterrupted.as_str();
    assert!(t.contains(interrupted), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(interrupted));
    let parts: Vec<_> = files_under(&partial)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "part"))
        .collect();
    assert!(
        parts.len() == 1 && parts[0].1 > 0 && parts[0].1 < v1.full_size,
        "a partial download is kept: {parts:?}"
    );
    let kept = parts[0].1;
    let before = relay.requests().len();

    relay.set(Mode::Pass);
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    assert_installed_intact(&state, &[&v1]);
    let resumed = relay.requests()[before..]
        .iter()
        .filter(|h| h.contains("/targets/"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        resumed.iter().any(|h| h
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={kept}-"))),
        "the second attempt resumed with Range from {kept}: {resumed:?}"
    );
    assert!(
        relay.target_body_bytes() < 2 * v1.full_size,
        "{} bytes fetched for an object of {}",
        relay.target_body_bytes(),
        v1.full_size
    );
    assert!(
        files_under(&partial)
            .iter()
            .all(|(p, _)| p.extension().is_none_or(|e| e != "part")),
        "nothing partial is left once installed"
    );

    // A flipped byte: the signed hash catches it (delta and full alike).
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 8))).await;
    relay.set(Mode::FlipByte);
    let t = update_expect(&state, &[], 2).await;
    let mismatch = ErrorCode::DefsHashMismatch.as_str();
    assert!(t.contains(mismatch), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(mismatch));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);

    // More bytes than signed: refused as soon as they arrive.
    relay.set(Mode::AppendExtra(4096));
    let t = update_expect(&state, &[], 2).await;
    let too_large = ErrorCode::DefsTooLarge.as_str();
    assert!(t.contains(too_large), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(too_large));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    assert!(
        files_under(&partial)
            .iter()
            .all(|(p, _)| p.extension().is_none_or(|e| e != "part")),
        "a refused download leaves no partial file"
    );

    // 503 with Retry-After: a persisted cool-down the next run respects.
    relay.set(Mode::Unavailable);
    let t = update_expect(&state, &[], 2).await;
    let cooling = ErrorCode::DefsCoolingDown.as_str();
    assert!(t.contains(cooling), "{t}");
    let status = defs_status(&state).await;
    let left = status["cooldown_secs"].as_u64().unwrap_or(0);
    assert!((100..=120).contains(&left), "cool-down of ~120 s: {status}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(cooling));
    let asked = relay.requests().len();
    relay.set(Mode::Pass);
    let t = update_expect(&state, &[], 2).await;
    assert!(t.contains(cooling), "{t}");
    assert_eq!(
        relay.requests().len(),
        asked,
        "inside the cool-down the update server is not contacted"
    );
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    assert!(v2.version == 2);
}

// ---------------------------------------------------------------------------
// 5. kill -9 at random points of an update.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_breaks_the_installed_version() {
    let started = Instant::now();
    let seed = std::env::var("TETHER_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    println!("kill -9 test seed: {seed} (rerun with TETHER_E2E_SEED={seed})");
    let mut rng = Rng(seed);

    let lab = DefsLab::start(Backend::Sqlite).await;
    let path = lab.relay().await;
    lab.policy(&["--update-url", &path.url("/defs/")]).await;
    let v1 = lab.publish(&joined(&rule_lines(2_000, 9))).await;
    let (agent, _id) = lab.enroll().await;
    update_expect(agent.state.path(), &[], 0).await;
    // The template: v1 installed, nothing partial. Each chain of kills
    // starts from a copy of it, so every kill lands inside an update.
    let template = agent.state.path().to_owned();
    let v2 = lab.publish(&random_bytes(3 << 20, seed)).await;
    path.relay.set(Mode::Throttle(8 << 20));
    let work = Scratch::new("kill9");
    let fresh = |n: u32| {
        let dir = work.path().join(format!("state-{n}"));
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&dir)
            .status()
            .expect("cp runs");
        assert!(st.success(), "copying the template state");
        dir
    };

    // One unkilled run sets the window the kill points are drawn from.
    let probe = fresh(0);
    let t0 = Instant::now();
    update_expect(&probe, &[], 0).await;
    let window = t0.elapsed().as_millis() as u64 + 50;
    println!("an unkilled update takes {window} ms");
    assert_eq!(assert_installed_intact(&probe, &[&v2]), 2);

    let (mut chains, mut completed, mut mid_download) = (1u32, 0u32, 0u32);
    let mut state = fresh(chains);
    for kill in 0..50 {
        let delay = rng.below(window);
        let mut child = update_command(&state, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("update --now starts");
        let finished = tokio::select! {
            st = child.wait() => Some(st.expect("wait")),
            () = tokio::time::sleep(Duration::from_millis(delay)) => None,
        };
        if finished.is_none() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("wait");
        }
        let version = assert_installed_intact(&state, &[&v1, &v2]);
        let part = files_under(&state.join("defs").join("partial"))
            .iter()
            .any(|(p, n)| *n > 0 && p.extension().is_some_and(|e| e == "part"));
        mid_download += u32::from(part);
        if version == 2 {
            completed += 1;
            chains += 1;
            state = fresh(chains);
        }
        assert!(
            started.elapsed() < Duration::from_secs(55),
            "kill point {kill} at {delay} ms: the test overran its budget"
        );
    }
    println!(
        "50 kill points: {completed} updates completed in between, {mid_download} left a partial download"
    );
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: installed version 2"), "{t}");
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 6. Disk full.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_the_old_version_and_gives_the_space_back() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    lab.policy(&[]).await;
    let v1 = lab.publish(&joined(&rule_lines(1_000, 10))).await;
    // The agent's state dir is the tmpfs. Declared after its parent, so it
    // is unmounted before the parent is removed.
    let root = Scratch::new("agent-tmpfs");
    let state = root.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "2m");
    let token = lab.server.token(&[]).await;
    let out = Command::new(agent_bin())
        .args([
            "enroll",
            "--server",
            &lab.server.endpoint.url,
            "--token",
            &token.token,
        ])
        .args(["--ca-fingerprint", &lab.server.endpoint.ca_fingerprint])
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("enroll runs");
    assert!(out.status.success(), "enroll: {}", text(&out));
    update_expect(&state, &[], 0).await;
    assert_installed_intact(&state, &[&v1]);
    let used_before: u64 = files_under(&state).iter().map(|(_, n)| n).sum();

    // 3 MiB that does not compress, on a 2 MiB file system.
    lab.publish(&random_bytes(3 << 20, 11)).await;
    let t = update_expect(&state, &[], 2).await;
    let full = ErrorCode::DefsDiskFull.as_str();
    assert!(t.contains(full), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(full));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    let leftovers: Vec<_> = files_under(&state.join("defs").join("partial"))
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        leftovers.is_empty(),
        "no partial download is left: {leftovers:?}"
    );
    let used_after: u64 = files_under(&state).iter().map(|(_, n)| n).sum();
    assert!(
        used_after < used_before + 256 * 1024,
        "the space is given back: {used_before} bytes before, {used_after} after"
    );
}

// ---------------------------------------------------------------------------
// 7. The admin's "update now", and a policy that forbids local updates.

async fn admin_update_now_reaches_a_running_agent_and_user_updates_can_be_forbidden(
    backend: Backend,
) {
    let lab = DefsLab::start(backend).await;
    lab.policy(&[]).await;
    let lines = rule_lines(3_000, 12);
    let v1 = lab.publish(&joined(&lines)).await;
    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    update_expect(&state, &[], 0).await;
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 13))).await;

    // With v1 installed and a 6 h interval the agent's own schedule is far
    // off: only the admin's action brings v2 now.
    agent.run(&[]);
    lab.server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;
    let queued = lab
        .server
        .admin_ok(&["agents", "update-now", &id.to_string()])
        .await;
    assert!(queued.contains("queued definitions update"), "{queued}");
    eventually(
        Duration::from_secs(30),
        "the running agent installs v2",
        || async {
            tether_defs::client::read_installed(&state, CHANNEL)
                .is_some_and(|i| i.version == 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    eventually(
        Duration::from_secs(30),
        "agents show reports v2",
        || async {
            let d = lab.server.agent(id).await;
            d.defs
                .iter()
                .any(|c| c.channel == CHANNEL && c.version == Some(2))
                .then_some(())
        },
    )
    .await;
    let logs = format!(
        "{}{}",
        agent.stderr(),
        std::fs::read_to_string(state.join("logs").join("agent.log")).unwrap_or_default()
    );
    assert!(
        logs.contains("definitions check requested by the server"),
        "the action ran it:\n{logs}"
    );

    // The policy forbids local updates: it reaches the agent at check-in.
    lab.policy(&["--allow-user-update", "false"]).await;
    eventually(
        Duration::from_secs(30),
        "the new policy reaches the agent",
        || async {
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(state.join("state.json")).ok()?).ok()?;
            (s["policy"]["defs"]["allow_user_update"] == false).then_some(())
        },
    )
    .await;
    agent.terminate().await;
    let t = update_expect(&state, &[], 3).await;
    assert!(
        t.contains(ErrorCode::DefsUserUpdateForbidden.as_str()),
        "{t}"
    );
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    assert!(v1.version == 1);
}

/// The root key ceremony (docs/defs-keys.md): a server whose root key is
/// on its disk warns at start with TETHER-E6018; one whose repository was
/// created by `tether defs init` with an offline root key does not, and
/// holds only the online roles' keys.
#[tokio::test]
async fn the_server_warns_while_the_root_key_is_online_and_not_after_the_ceremony() {
    let online = Server::start(Backend::Sqlite).await;
    assert!(
        online.log().contains("TETHER-E6018"),
        "no warning: {}",
        online.log()
    );

    let media = Scratch::new("offline-media");
    let root = media.path().join("root.pem");
    let out = Command::new(tether_bin())
        .args(["defs", "keygen", "--out"])
        .arg(&root)
        .output()
        .await
        .expect("keygen runs");
    assert!(out.status.success(), "{}", text(&out));
    let data = Scratch::new("server");
    let out = Command::new(tether_bin())
        .args(["defs", "init", "--root-key"])
        .arg(&root)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .await
        .expect("init runs");
    assert!(out.status.success(), "{}", text(&out));
    let mut keys: Vec<String> = std::fs::read_dir(data.path().join("defs/keys"))
        .expect("keys/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["snapshot.pem", "targets.pem", "timestamp.pem"]);
    let offline = Server::start_in(data).await;
    assert!(!offline.log().contains("TETHER-E6018"), "{}", offline.log());
    // It serves definitions all the same: publishing needs no root key.
    let file = media.path().join("rules.txt");
    std::fs::write(&file, "rule one\n").expect("writes");
    let file = file.to_str().expect("utf-8 path");
    offline
        .admin_ok(&["defs", "publish", "--channel", "main", "--file", file])
        .await;
}
