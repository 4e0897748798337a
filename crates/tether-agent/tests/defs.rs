//! Definitions in the agent against a real signed repository
//! (`tether_defs_publish::repo::Repo`) served over HTTPS on loopback, next to the
//! canned check-in API: check-in reports, the `UpdateDefs` action through
//! the worker, the local commands and their refusals, and root pinning at
//! enrollment.

#[path = "support/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{AGENT, Harness, T0, api_error, client_for, policy};
use tether_agent::World;
use tether_agent::defs::command::Local;
use tether_agent::defs::status::DefsStatus;
use tether_agent::defs::{DefsWorker, UpdaterFactory, record_outcomes};
use tether_agent::enroll::{DefsRoot, EnrollOptions, enroll};
use tether_agent::state::subsystem;
use tether_defs::client::Applied;
use tether_defs_publish::repo::Repo;
use tether_testlab::canned::{CannedReply, RecordedRequest, TestServer};
use tether_transport::Transport;
use tether_wire::{
    Action, ActionInfo, ActionKind, ActionResult, ActionState, AgentKind, AgentStatus,
    CheckinRequest, CheckinResponse, DefsPolicy, EnrollResponse, ErrorCode, ManualClock, Policy,
};
use uuid::Uuid;

const SIGS_V1: &[u8] = b"rule alpha\nrule beta\n";

fn defs_policy(channels: &[&str], allow_user_update: bool) -> DefsPolicy {
    DefsPolicy {
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        update_urls: Vec::new(),
        interval_secs: 6 * 3600,
        allow_user_update,
    }
}

fn full_policy(defs: DefsPolicy) -> Policy {
    Policy {
        defs,
        ..policy(60, 0)
    }
}

/// Serves `repo`'s tree at `/defs/`, the check-in API (the first reply
/// carries `actions`), action results and the shutdown notice.
async fn control_plane(repo: &Repo, policy: Policy, actions: Vec<Action>) -> TestServer {
    let tree = repo.serve_dir();
    let first = Mutex::new(Some(actions));
    TestServer::start(move |r: &RecordedRequest| {
        let path = r.path.split('?').next().unwrap_or_default();
        if let Some(rel) = path.strip_prefix("/defs/") {
            return serve_file(&tree, rel);
        }
        if path == "/v1/agent/checkin" {
            let actions = first
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            return CannedReply::json(
                200,
                &CheckinResponse {
                    agent_id: AGENT,
                    status: AgentStatus::Active,
                    policy: policy.clone(),
                    actions,
                    server_time: T0,
                    current_agent_version: None,
                    upgrade: None,
                },
            );
        }
        if let Some(id) = path
            .strip_prefix("/v1/agent/actions/")
            .and_then(|p| p.strip_suffix("/result"))
        {
            let result: ActionResult = serde_json::from_slice(&r.body).expect("an action result");
            return CannedReply::json(
                200,
                &ActionInfo {
                    id: id.parse().expect("action id"),
                    agent_id: AGENT,
                    kind: ActionKind::UpdateDefs { channel: None },
                    state: ActionState::Completed,
                    created_at: T0,
                    delivered_at: Some(T0),
                    completed_at: Some(T0),
                    result: Some(result),
                },
            );
        }
        if path == "/v1/agent/shutdown" {
            return CannedReply::no_content();
        }
        api_error(404, ErrorCode::NotFound)
    })
    .await
}

fn serve_file(tree: &Path, rel: &str) -> CannedReply {
    if rel.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return CannedReply::raw(404, "text/plain", "no");
    }
    match std::fs::read(tree.join(rel)) {
        Ok(bytes) => CannedReply::raw(200, "application/octet-stream", bytes),
        Err(_) => CannedReply::raw(404, "text/plain", "not found"),
    }
}

struct Setup {
    _repo_dir: tempfile::TempDir,
    repo: Repo,
    h: Harness,
}

/// A repository with `sigs` v1 published, and an agent state dir that
/// pinned its root and caches `policy`.
async fn setup(policy: &Policy) -> Setup {
    let h = Harness::new(1, 60);
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::open(repo_dir.path(), Arc::new(h.clock.clone()))
        .await
        .expect("the repository opens");
    repo.publish("sigs", SIGS_V1.to_vec(), None)
        .await
        .expect("publishes");
    let root = repo.root_json().await.expect("root");
    tether_defs::client::pin_root(h.dir.path(), &root).expect("pins");
    h.store
        .update(|s| s.policy = Some(policy.clone()))
        .expect("policy cached");
    Setup {
        _repo_dir: repo_dir,
        repo,
        h,
    }
}

fn factory(h: &Harness, server: &TestServer) -> UpdaterFactory {
    UpdaterFactory {
        state_dir: h.dir.path().to_owned(),
        server: server.url(),
        transport: Arc::new(Transport::new(server.transport_config()).expect("transport")),
        clock: Arc::new(h.clock.clone()),
        apply_hook: None,
    }
}

fn checkins(server: &TestServer) -> Vec<CheckinRequest> {
    server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/agent/checkin")
        .map(|r| serde_json::from_slice(&r.body).expect("check-in body"))
        .collect()
}

#[tokio::test]
async fn checkin_carries_channel_states_versions_and_per_channel_errors() {
    let policy = full_policy(defs_policy(&["sigs", "ghost"], true));
    let s = setup(&policy).await;
    let server = control_plane(&s.repo, policy.clone(), Vec::new()).await;
    // A stale error of a channel no longer subscribed must not be reported.
    s.h.store
        .update(|st| st.record_error("defs:retired", ErrorCode::DefsServerError, "old", T0))
        .expect("saves");

    let outcomes = factory(&s.h, &server)
        .updater(&policy.defs)
        .update(&policy.defs.channels)
        .await;
    record_outcomes(&s.h.store, &outcomes, T0).expect("recorded");
    let by = |c: &str| {
        &outcomes
            .iter()
            .find(|o| o.channel == c)
            .expect("an outcome per channel")
            .result
    };
    assert!(
        matches!(
            by("sigs"),
            Ok(Applied::Installed {
                from: None,
                version: 1,
                ..
            })
        ),
        "{:?}",
        by("sigs")
    );
    let ghost = by("ghost").as_ref().expect_err("never published");
    assert_eq!(ghost.code(), ErrorCode::DefsChannelUnknown, "{ghost}");
    assert_eq!(
        std::fs::read(
            tether_defs::client::installed_path(s.h.dir.path(), "sigs").expect("a valid name")
        )
        .expect("installed content"),
        SIGS_V1
    );
    let state = s.h.store.load_required().expect("state");
    assert_eq!(
        state.last_errors["defs:ghost"].code,
        ErrorCode::DefsChannelUnknown
    );

    let mut ctx = s.h.context(client_for(&server), 0.5, None);
    s.h.run(&mut ctx).await;
    let body = checkins(&server).remove(0);
    let names: Vec<&str> = body.defs.iter().map(|c| c.channel.as_str()).collect();
    assert_eq!(names, ["sigs", "ghost"]);
    let sigs = &body.defs[0];
    assert_eq!(sigs.version, Some(1));
    assert_eq!(sigs.method, Some(tether_wire::UpdateMethod::Full));
    assert!(sigs.sha256.as_ref().is_some_and(|h| h.len() == 64));
    assert_eq!(sigs.last_error, None);
    assert!(
        sigs.server
            .as_deref()
            .is_some_and(|u| u.ends_with("/defs/"))
    );
    let ghost = &body.defs[1];
    assert_eq!(ghost.version, None);
    assert_eq!(ghost.consecutive_failures, 1);
    assert_eq!(
        ghost.last_error.as_ref().map(|e| e.code),
        Some(ErrorCode::DefsChannelUnknown)
    );
    assert_eq!(
        body.definitions,
        [("sigs".to_owned(), "1".to_owned())].into_iter().collect()
    );
    assert_eq!(
        body.last_errors["defs:ghost"].code,
        ErrorCode::DefsChannelUnknown
    );
    assert!(!body.last_errors.contains_key("defs:sigs"));
    assert!(!body.last_errors.contains_key("defs:retired"));

    // `defs status` reads the same from disk, with the catalog's action.
    let status = DefsStatus::read(
        s.h.dir.path(),
        &policy.defs,
        &server.url(),
        tether_wire::Clock::now(&s.h.clock),
    );
    let text = status.to_text();
    assert!(text.contains("sigs: version 1, updated"), "{text}");
    assert!(text.contains("ghost: nothing installed yet"), "{text}");
    assert!(text.contains("TETHER-E6010"), "{text}");
    assert!(
        text.contains(ErrorCode::DefsChannelUnknown.action()),
        "{text}"
    );
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json["channels"][0]["version"], 1);
    assert_eq!(
        json["channels"][1]["action"],
        ErrorCode::DefsChannelUnknown.action()
    );
    assert_eq!(json["allow_user_update"], true);
    assert_eq!(json["cooldown_secs"], serde_json::Value::Null);
}

#[tokio::test]
async fn update_defs_actions_run_in_the_worker_and_report_their_results() {
    let policy = full_policy(defs_policy(&["sigs"], true));
    let s = setup(&policy).await;
    let all = Uuid::from_u128(1);
    let unsubscribed = Uuid::from_u128(2);
    let server = control_plane(
        &s.repo,
        policy.clone(),
        vec![
            Action {
                id: all,
                kind: ActionKind::UpdateDefs { channel: None },
            },
            Action {
                id: unsubscribed,
                kind: ActionKind::UpdateDefs {
                    channel: Some("other".into()),
                },
            },
        ],
    )
    .await;
    let client = client_for(&server)
        .with_bearer("agent-cred")
        .with_clock(Arc::new(s.h.clock.clone()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let (worker, handle) = DefsWorker::new(
        factory(&s.h, &server),
        s.h.store.clone(),
        client,
        Box::new(|| 0.5),
        Some(policy.defs.clone()),
    );
    let task = tokio::spawn(worker.run(move |e| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }));
    let mut ctx = s.h.context(client_for(&server), 0.5, None);
    ctx.defs = Some(handle);
    s.h.run(&mut ctx).await;

    let results = wait_for_results(&server, 2).await;
    task.abort();
    let (ok, message) = &results[&all];
    assert!(*ok, "{message}");
    assert!(
        message.contains("sigs: installed version 1 (from nothing, full"),
        "{message}"
    );
    let (ok, message) = &results[&unsubscribed];
    assert!(!*ok);
    assert!(
        message.contains("\"other\" is not in this agent's policy"),
        "{message}"
    );
    let state = tether_defs::client::channel_states(s.h.dir.path(), &["sigs".to_owned()]);
    assert_eq!(state[0].version, Some(1));

    // Nothing installed at start: the first check was due within 10 min; the
    // admin's check then moved it to the interval (sample 0.5, no jitter).
    let events = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    use tether_agent::defs::WorkerEvent::*;
    assert_eq!(
        events[0],
        Scheduled {
            delay: Duration::from_secs(300),
            reason: "first check"
        }
    );
    assert!(events.contains(&Checked {
        channels: 1,
        failed: 0
    }));
    assert!(events.contains(&Scheduled {
        delay: Duration::from_secs(6 * 3600),
        reason: "after an admin's check"
    }));
}

#[tokio::test]
async fn hostile_channel_names_from_the_policy_and_actions_create_no_path() {
    let long = "x".repeat(300);
    let hostile = [
        "..",
        "../escape",
        "/tmp/tether-agent-hostile-abs",
        "a/../../escape",
        "nul\0byte",
        long.as_str(),
    ];
    let mut channels = vec!["sigs"];
    channels.extend(hostile);
    let policy = full_policy(defs_policy(&channels, true));
    let s = setup(&policy).await;
    let all = Uuid::from_u128(1);
    let by_action = Uuid::from_u128(2);
    let server = control_plane(
        &s.repo,
        policy.clone(),
        vec![
            Action {
                id: all,
                kind: ActionKind::UpdateDefs { channel: None },
            },
            Action {
                id: by_action,
                kind: ActionKind::UpdateDefs {
                    channel: Some("../../escape".into()),
                },
            },
        ],
    )
    .await;
    let client = client_for(&server)
        .with_bearer("agent-cred")
        .with_clock(Arc::new(s.h.clock.clone()));
    let (worker, handle) = DefsWorker::new(
        factory(&s.h, &server),
        s.h.store.clone(),
        client,
        Box::new(|| 0.5),
        Some(policy.defs.clone()),
    );
    let task = tokio::spawn(worker.run(|_| {}));
    let mut ctx = s.h.context(client_for(&server), 0.5, None);
    ctx.defs = Some(handle);
    s.h.run(&mut ctx).await;
    let results = wait_for_results(&server, 2).await;
    task.abort();

    let (ok, message) = &results[&all];
    assert!(!*ok, "{message}");
    assert!(message.contains("sigs: installed version 1"), "{message}");
    // The result is cut at 1,500 characters; the first refusals show.
    assert!(message.matches("TETHER-E6017").count() >= 3, "{message}");
    assert!(!message.contains('\0'), "names are escaped: {message:?}");
    let (ok, message) = &results[&by_action];
    assert!(!*ok);
    assert!(message.contains("TETHER-E6017"), "{message}");

    // Nothing outside the state dir, nothing named after a hostile channel.
    let parent = s.h.dir.path().parent().expect("parent");
    assert!(!parent.join("escape").exists());
    assert!(!Path::new("/tmp/tether-agent-hostile-abs").exists());
    let defs_dir = s.h.dir.path().join("defs");
    let mut names: Vec<String> = std::fs::read_dir(&defs_dir)
        .expect("defs dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["partial", "root.json", "sigs", "tuf", "update.lock"],
        "{names:?}"
    );

    // A later check-in reports the valid channel only.
    let mut ctx = s.h.context(client_for(&server), 0.5, None);
    s.h.run(&mut ctx).await;
    let body = checkins(&server).pop().expect("a check-in");
    let reported: Vec<&str> = body.defs.iter().map(|c| c.channel.as_str()).collect();
    assert_eq!(reported, ["sigs"]);
    assert!(
        body.last_errors
            .keys()
            .all(|k| !k.starts_with("defs:") || k == "defs:sigs"),
        "{:?}",
        body.last_errors.keys()
    );
}

/// The agent runs one current-thread runtime. A delta apply held at a
/// barrier (as a 100 MB apply would hold it for seconds) must not hold up
/// the check-in: the updater's hashing, apply and writes run off that thread.
#[tokio::test(flavor = "current_thread")]
async fn a_check_in_completes_while_a_delta_apply_is_held_at_a_barrier() {
    use std::sync::atomic::{AtomicU8, Ordering};
    const WAITING: u8 = 0;
    const RELEASED: u8 = 1;
    const TIMED_OUT: u8 = 2;

    let policy = full_policy(defs_policy(&["sigs"], true));
    let s = setup(&policy).await;
    // Enough records that a delta is smaller than the full object.
    let rules = |n: usize, extra: &str| {
        let mut body: String = (0..n)
            .map(|i| format!("rule {i} {}\n", "x".repeat(40)))
            .collect();
        body.push_str(extra);
        body.into_bytes()
    };
    s.repo
        .publish("sigs", rules(2000, ""), None)
        .await
        .expect("v2");
    let server = control_plane(&s.repo, policy.clone(), Vec::new()).await;
    // v2 installed, then v3 published: the next update is a delta.
    let first = factory(&s.h, &server)
        .updater(&policy.defs)
        .update(&policy.defs.channels)
        .await;
    assert!(first[0].result.is_ok(), "{:?}", first[0].result);
    s.repo
        .publish("sigs", rules(2000, "rule gamma\n"), None)
        .await
        .expect("v3");

    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let hook_state = Arc::new(AtomicU8::new(WAITING));
    let seen = hook_state.clone();
    let mut f = factory(&s.h, &server);
    f.apply_hook = Some(Arc::new(move || {
        let _ = entered_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(());
        // Were this on the runtime thread, nothing else could run until the
        // wait times out.
        let got = release_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv_timeout(Duration::from_secs(20));
        seen.store(
            if got.is_ok() { RELEASED } else { TIMED_OUT },
            Ordering::SeqCst,
        );
    }));
    let client = client_for(&server)
        .with_bearer("agent-cred")
        .with_clock(Arc::new(s.h.clock.clone()));
    let (worker, handle) = DefsWorker::new(
        f,
        s.h.store.clone(),
        client,
        Box::new(|| 0.5),
        Some(policy.defs.clone()),
    );
    let task = tokio::spawn(worker.run(|_| {}));
    let action = Uuid::from_u128(7);
    assert!(handle.trigger(tether_agent::defs::Trigger {
        action_id: action,
        channel: None,
    }));
    // Wait (bounded) until the apply is held at the barrier.
    let mut held = false;
    for _ in 0..600 {
        if entered_rx.try_recv().is_ok() {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held, "the delta apply never started");

    let before = checkins(&server).len();
    let mut ctx = s.h.context(client_for(&server), 0.5, None);
    ctx.defs = Some(handle);
    s.h.run(&mut ctx).await;
    assert_eq!(
        checkins(&server).len(),
        before + 1,
        "the check-in completed"
    );
    assert_eq!(
        hook_state.load(Ordering::SeqCst),
        WAITING,
        "the check-in completed while the apply was still held"
    );

    release_tx.send(()).expect("the hook still waits");
    let results = wait_for_results(&server, 1).await;
    task.abort();
    let (ok, message) = &results[&action];
    assert!(*ok, "{message}");
    assert!(
        message.contains("installed version 3 (from version 2, delta"),
        "{message}"
    );
    assert_eq!(hook_state.load(Ordering::SeqCst), RELEASED);
}

/// Waits (bounded) until `n` action results arrived; returns them by id.
async fn wait_for_results(
    server: &TestServer,
    n: usize,
) -> std::collections::BTreeMap<Uuid, (bool, String)> {
    for _ in 0..600 {
        let got: std::collections::BTreeMap<Uuid, (bool, String)> = server
            .requests()
            .iter()
            .filter_map(|r| {
                let id = r
                    .path
                    .strip_prefix("/v1/agent/actions/")?
                    .strip_suffix("/result")?;
                let result: ActionResult = serde_json::from_slice(&r.body).ok()?;
                Some((id.parse().ok()?, (result.ok, result.message)))
            })
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker did not report {n} action results within 30 s");
}

fn write_config(dir: &Path, server: &url::Url) {
    std::fs::write(
        dir.join("agent.toml"),
        format!("server = \"{server}\"\nsystem_roots = true\n"),
    )
    .expect("agent.toml");
}

#[tokio::test]
async fn user_update_is_refused_when_the_policy_forbids_it() {
    let policy = full_policy(defs_policy(&["sigs"], false));
    let s = setup(&policy).await;
    let server = control_plane(&s.repo, policy.clone(), Vec::new()).await;
    write_config(s.h.dir.path(), &server.url());
    let world = World::fixed(Arc::new(s.h.clock.clone()), &[]);
    let local = Local::load(s.h.dir.path(), &world).expect("loads");
    let err = local.update_now(&[]).await.expect_err("refused");
    assert_eq!(err.code, ErrorCode::DefsUserUpdateForbidden);
    let text = err.to_string();
    assert!(text.contains("TETHER-E6009"), "{text}");
    assert!(text.contains("allow_user_update = false"), "{text}");
    assert!(text.contains("queue a definitions update"), "{text}");
    assert!(
        server.requests().is_empty(),
        "a refused update contacts nobody"
    );
    assert_eq!(
        tether_defs::client::channel_states(s.h.dir.path(), &["sigs".to_owned()])[0].version,
        None
    );
}

#[tokio::test]
async fn local_update_and_import_check_their_inputs() {
    let policy = full_policy(defs_policy(&["sigs"], true));
    let s = setup(&policy).await;
    let server = control_plane(&s.repo, policy.clone(), Vec::new()).await;
    let dir = s.h.dir.path();
    write_config(dir, &server.url());
    let world = World::fixed(Arc::new(s.h.clock.clone()), &[]);
    let mut local = Local::load(dir, &world).expect("loads");
    // The test server's CA is not a system root; trust it like an operator CA.
    local.factory.transport =
        Arc::new(Transport::new(server.transport_config()).expect("transport"));

    let err = local
        .update_now(&["other".to_owned()])
        .await
        .expect_err("not subscribed");
    assert_eq!(err.code, ErrorCode::ConfigInvalid);
    assert!(err.message.contains("subscribed: sigs"), "{err}");

    let missing = local
        .import(&dir.join("nope.tar"), &[])
        .await
        .expect_err("no such file");
    assert_eq!(missing.code, ErrorCode::DefsBundleInvalid);
    let junk = dir.join("junk.tar");
    std::fs::write(&junk, b"this is not a tar file").expect("writes");
    let inner = local
        .import(&junk, &[])
        .await
        .expect("runs")
        .expect_err("not a bundle");
    assert_eq!(inner.code(), ErrorCode::DefsBundleInvalid, "{inner}");

    // A real bundle imports like an online update and is recorded.
    let bundle = dir.join("sigs.tar");
    s.repo.export("sigs", &bundle).await.expect("exports");
    let outcomes = local
        .import(&bundle, &["sigs".to_owned()])
        .await
        .expect("runs")
        .expect("imports");
    assert!(
        matches!(
            outcomes[0].result,
            Ok(Applied::Installed {
                version: 1,
                method: tether_wire::UpdateMethod::Bundle,
                ..
            })
        ),
        "{:?}",
        outcomes[0].result
    );
    // Online, the channel is now current.
    let outcomes = local.update_now(&[]).await.expect("runs");
    assert!(
        matches!(outcomes[0].result, Ok(Applied::UpToDate { version: 1 })),
        "{:?}",
        outcomes[0].result
    );
    assert_eq!(
        tether_agent::defs::outcome_line(&outcomes[0]),
        "sigs: up to date at version 1"
    );

    let unenrolled = tempfile::tempdir().expect("tempdir");
    let err = Local::load(unenrolled.path(), &world).expect_err("not enrolled");
    assert_eq!(err.code, ErrorCode::NotEnrolled);
}

fn enroll_reply(root: Option<String>) -> EnrollResponse {
    EnrollResponse {
        defs_root: root,
        agent_id: AGENT,
        credential: "cred".into(),
        status: AgentStatus::Active,
        kind: AgentKind::Connector,
        group: "lab".into(),
        policy: policy(30, 10),
        server_time: T0,
    }
}

async fn enroll_with(root: Option<String>) -> (PathBuf, tempfile::TempDir, DefsRoot) {
    let server = TestServer::scripted(vec![CannedReply::json(200, &enroll_reply(root))]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::fixed(Arc::new(ManualClock::new(T0)), &[]);
    let opts = EnrollOptions {
        state_dir: dir.path().to_owned(),
        server: server.url(),
        token: "tet_token".into(),
        ca_fingerprint: Some(server.pki.ca_fingerprint()),
        ca_file: None,
        extra_ca_file: None,
        name: Some("edge".into()),
        kind: None,
        proxy: None,
    };
    let enrolled = enroll(&opts, &world).await.expect("enrolls");
    let summary = enrolled.summary(dir.path());
    match &enrolled.defs_root {
        DefsRoot::Pinned => assert!(summary.contains("root of trust was pinned"), "{summary}"),
        DefsRoot::Refused(_) => assert!(summary.contains("was refused"), "{summary}"),
        DefsRoot::NotOffered => {}
    }
    (dir.path().join("defs/root.json"), dir, enrolled.defs_root)
}

#[tokio::test]
async fn enrollment_pins_a_valid_root_and_survives_a_bad_one() {
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::open(repo_dir.path(), Arc::new(ManualClock::new(T0)))
        .await
        .expect("opens");
    let root = repo.root_json().await.expect("root");

    let (pinned, _d1, outcome) = enroll_with(Some(root.clone())).await;
    assert_eq!(outcome, DefsRoot::Pinned);
    assert_eq!(std::fs::read_to_string(pinned).expect("pinned"), root);

    let (pinned, _d2, outcome) = enroll_with(None).await;
    assert_eq!(outcome, DefsRoot::NotOffered);
    assert!(!pinned.exists());

    // A hostile or broken root: the identity is kept, the error recorded.
    let (pinned, d3, outcome) = enroll_with(Some("{\"signed\": 42}".into())).await;
    let DefsRoot::Refused(why) = outcome else {
        panic!("a bad root must be refused, got {outcome:?}")
    };
    assert!(why.contains("TETHER-E6014"), "{why}");
    assert!(!pinned.exists());
    let state = tether_agent::state::StateStore::new(d3.path())
        .load_required()
        .expect("enrolled anyway");
    assert_eq!(state.agent_id, AGENT);
    assert_eq!(
        state.last_errors[subsystem::DEFINITIONS].code,
        ErrorCode::DefsNotTrusted
    );
    assert!(d3.path().join("credential").exists());
}

/// The worker on its own schedule (real time, a 2 s interval): the first
/// check at the random offset, a retry sooner than the interval after a
/// failure, the interval after success, and a policy change that drops a
/// channel without restarting the schedule.
#[tokio::test]
async fn the_worker_checks_on_its_schedule_and_retries_failures_sooner() {
    let mut defs = defs_policy(&["sigs", "ghost"], true);
    defs.interval_secs = 2;
    let policy = full_policy(defs.clone());
    let s = setup(&policy).await;
    let server = control_plane(&s.repo, policy.clone(), Vec::new()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (worker, handle) = DefsWorker::new(
        factory(&s.h, &server),
        s.h.store.clone(),
        client_for(&server),
        Box::new(|| 0.5),
        Some(defs.clone()),
    );
    let task = tokio::spawn(worker.run(move |e| {
        let _ = tx.send(e);
    }));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the worker moves on")
            .expect("the worker runs")
    };
    use tether_agent::defs::WorkerEvent::*;
    assert_eq!(
        next().await,
        Scheduled {
            delay: Duration::from_secs(1),
            reason: "first check"
        }
    );
    assert_eq!(
        next().await,
        Checked {
            channels: 2,
            failed: 1
        }
    );
    // Retry 1: equal jitter in [ceiling/2, ceiling], ceiling = min(60 s, 2 s).
    assert_eq!(
        next().await,
        Scheduled {
            delay: Duration::from_millis(1500),
            reason: "retry after a failure"
        }
    );
    assert_eq!(
        s.h.store.load_required().expect("state").last_errors["defs:ghost"].code,
        ErrorCode::DefsChannelUnknown
    );
    // The admin drops the broken channel: same interval, nothing added, so
    // the pending retry stands and succeeds.
    defs.channels = vec!["sigs".into()];
    handle.policy(&defs);
    assert_eq!(
        next().await,
        Checked {
            channels: 1,
            failed: 0
        }
    );
    assert_eq!(
        next().await,
        Scheduled {
            delay: Duration::from_secs(2),
            reason: "interval"
        }
    );
    task.abort();
    let checks = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("timestamp.json"))
        .count();
    assert_eq!(checks, 2, "one metadata check per scheduled run");
}
