//! The doctor's definitions path against real HTTPS update servers serving
//! a real signed repository (`tether-defs-publish`), and hostile ones: a
//! captive portal, a tree that is not there, a forged timestamp; and the
//! agent's own definitions files, hostile ones included.

// Shared with tests/doctor.rs, which uses all of it; this file only part.
#[path = "doctor/lab.rs"]
#[allow(dead_code, unused_imports)]
mod lab;
#[path = "doctor/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lab::{Lab, Ntp};
use server::{GOOD_CREDENTIAL, Mode, Server};
use tether_defs_publish::repo::Repo;
use tether_doctor::{DefsInput, DoctorInput, ErrorCode, Report, Status, VerdictStatus};
use tether_testlab::https::{HttpsServer, Request, reply};
use tether_testlab::pki::Ca;
use tether_transport::TrustConfig;
use tether_wire::SystemClock;

/// What a mirror answers.
#[derive(Clone, Copy)]
enum Mirror {
    /// The repository's files, as nginx would serve them.
    Files,
    /// A captive portal's page for every path, with 200.
    Portal,
    /// 404 for every path: not a definitions tree.
    Missing,
    /// The files, but `timestamp.json` edited after it was signed.
    Forged,
}

async fn mirror(ca: &Ca, root: PathBuf, mode: Mirror) -> HttpsServer {
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    HttpsServer::start(leaf.chain(&[ca]), leaf.key(), move |req: Request| {
        let root = root.clone();
        async move { serve(&root, req.uri().path(), mode) }
    })
    .await
}

fn serve(root: &Path, path: &str, mode: Mirror) -> tether_testlab::https::Reply {
    match mode {
        Mirror::Portal => {
            return reply(
                200,
                "text/html",
                "<html><title>Guest Wi-Fi: please log in</title></html>",
            );
        }
        Mirror::Missing => return reply(404, "text/html", "<h1>Not Found</h1>"),
        _ => {}
    }
    let rel = path.trim_start_matches('/');
    if rel.contains("..") {
        return reply(400, "text/plain", "no");
    }
    if matches!(mode, Mirror::Forged) && rel == "metadata/timestamp.json" {
        let genuine = std::fs::read(root.join(rel)).expect("timestamp.json");
        let mut v: serde_json::Value = serde_json::from_slice(&genuine).expect("JSON");
        let version = v["signed"]["version"].as_u64().expect("version");
        v["signed"]["version"] = (version + 1).into();
        return reply(200, "application/json", v.to_string());
    }
    match std::fs::read(root.join(rel)) {
        Ok(bytes) => reply(200, "application/octet-stream", bytes),
        Err(_) => reply(404, "text/plain", "not found"),
    }
}

/// A repository with `main` v1 published, and a state dir that pinned its
/// root, as enrollment does.
async fn repository() -> (tempfile::TempDir, Repo, tempfile::TempDir) {
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::open(repo_dir.path(), Arc::new(SystemClock))
        .await
        .expect("repository");
    repo.publish("main", b"rule one\nrule two\n".to_vec(), None)
        .await
        .expect("publish");
    let state = tempfile::tempdir().expect("tempdir");
    tether_defs::client::pin_root(state.path(), &repo.root_json().await.expect("root"))
        .expect("pinned");
    (repo_dir, repo, state)
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("literal URL")
}

/// An enrolled agent's input: the control plane on `cp`, the update
/// servers `mirrors`, both trusting `ca` (and no system roots, so the lab
/// is all there is).
fn input(cp: u16, mirrors: &[u16], ca: &Ca, state: &Path, ntp: &Ntp) -> DoctorInput {
    let mut i = DoctorInput::new(url(&format!("https://localhost:{cp}/")));
    let trust = TrustConfig {
        ca_pem: Some(ca.pem()),
        system_roots: false,
        ..TrustConfig::default()
    };
    i.transport.trust = trust;
    i.enrolled = true;
    i.credential = Some(GOOD_CREDENTIAL.to_owned());
    i.agent_version = "9.9.9".into();
    i.deadline = Duration::from_secs(5);
    i.state_dir = Some(state.to_owned());
    i.log_dir = Some(state.to_owned());
    i.ntp_servers = vec![ntp.addr.to_string()];
    i.defs = Some(DefsInput {
        servers: mirrors
            .iter()
            .map(|p| url(&format!("https://127.0.0.1:{p}/")))
            .collect(),
        control_plane: url(&format!("https://localhost:{cp}/defs/")),
        transport: i.transport.clone(),
        channels: vec!["main".to_owned()],
        state_dir: state.to_owned(),
    });
    i
}

fn check<'a>(r: &'a Report, id: &str) -> &'a tether_doctor::CheckResult {
    r.check(id)
        .unwrap_or_else(|| panic!("no check {id} in\n{}", r.to_text()))
}

#[tokio::test]
async fn hostile_update_servers_are_named_and_a_good_one_passes() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let cp = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Tether).await;
    let ntp = Ntp::start(time::Duration::ZERO).await;
    let (_repo_dir, repo, state) = repository().await;
    let tree = repo.serve_dir();

    // A good mirror: every definitions check passes, with the versions.
    let good = mirror(&ca, tree.clone(), Mirror::Files).await;
    let r = tether_doctor::run(
        input(cp.port(), &[good.port()], &ca, state.path(), &ntp),
        lab.world(),
    )
    .await;
    for id in [
        "defs.1.dns.system",
        "defs.1.tls",
        "defs.1.http",
        "defs.1.tuf",
    ] {
        assert_eq!(check(&r, id).status, Status::Pass, "{id}:\n{}", r.to_text());
    }
    let tuf = check(&r, "defs.1.tuf");
    assert_eq!(tuf.evidence["channels"]["main"], 1);
    assert!(tuf.evidence["timestamp_expires"].is_string());
    assert!(tuf.evidence["timestamp_version"].as_u64() >= Some(1));
    // The fake control plane serves no /defs/: that is information only.
    assert_eq!(check(&r, "defs.reference").status, Status::Info);
    let state_check = check(&r, "defs.state");
    assert_eq!(state_check.status, Status::Pass, "{}", r.to_text());
    assert_eq!(
        state_check.evidence["channels"][0]["versions_behind"], 1,
        "nothing installed, v1 signed"
    );
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
    // The doctor never touched the agent's trusted metadata.
    assert!(!state.path().join("defs").join("tuf").exists());

    // A portal, a missing tree, a forged timestamp: each named on its own
    // server, the first in fallback order as the verdict.
    let portal = mirror(&ca, tree.clone(), Mirror::Portal).await;
    let missing = mirror(&ca, tree.clone(), Mirror::Missing).await;
    let forged = mirror(&ca, tree.clone(), Mirror::Forged).await;
    let r = tether_doctor::run(
        input(
            cp.port(),
            &[portal.port(), missing.port(), forged.port(), good.port()],
            &ca,
            state.path(),
            &ntp,
        ),
        lab.world(),
    )
    .await;
    let http = check(&r, "defs.1.http");
    assert_eq!(http.status, Status::Fail, "{}", r.to_text());
    assert_eq!(http.code, Some(ErrorCode::HttpNotTether));
    assert_eq!(
        http.evidence["html_title"],
        "Guest Wi-Fi: please log in",
        "{}",
        r.to_text()
    );
    assert_eq!(
        check(&r, "defs.1.tuf").status,
        Status::Skipped {
            blocked_by: "defs.1.http".into()
        }
    );
    assert_eq!(
        check(&r, "defs.2.http").code,
        Some(ErrorCode::DefsServerError)
    );
    let tuf = check(&r, "defs.3.tuf");
    assert_eq!(
        tuf.code,
        Some(ErrorCode::DefsMirrorUnverified),
        "{}",
        r.to_text()
    );
    assert_eq!(check(&r, "defs.4.tuf").status, Status::Pass);
    assert_eq!(r.verdict.check.as_deref(), Some("defs.1.http"));
    assert!(
        r.verdict.root_cause.starts_with(&format!(
            "Check-ins work, but definitions updates from https://127.0.0.1:{}/ fail:",
            portal.port()
        )),
        "{}",
        r.verdict.root_cause
    );
    // The control plane's path is untouched by it.
    for id in ["tls", "http", "auth"] {
        assert_eq!(check(&r, id).status, Status::Pass, "{id}");
    }
}

#[tokio::test]
async fn the_agents_own_definitions_files_are_reported_and_hostile_ones_are_data() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let cp = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Tether).await;
    let ntp = Ntp::start(time::Duration::ZERO).await;
    let (_repo_dir, repo, state) = repository().await;
    let good = mirror(&ca, repo.serve_dir(), Mirror::Files).await;
    let defs = state.path().join("defs");
    // The last attempt failed, with a message carrying terminal escapes.
    std::fs::create_dir_all(defs.join("main")).expect("mkdir");
    let now = time::OffsetDateTime::now_utc();
    let at = now
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    std::fs::write(
        defs.join("main").join("state.json"),
        serde_json::json!({
            "channel": "main",
            "last_attempt_at": at,
            "consecutive_failures": 3,
            "server": "https://mirror.corp/defs/",
            "last_error": {
                "code": "TETHER-E6006",
                "message": "cut off \u{1b}[31mafter 1000 of 5000 bytes",
                "at": at,
            },
        })
        .to_string(),
    )
    .expect("state.json");
    // A download in progress for the signed full object, and a stray one.
    let full = std::fs::read_dir(repo.serve_dir().join("targets"))
        .expect("targets")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".main.v1.full.zst"))
        .expect("the full object");
    let sha = full.split('.').next().expect("sha256 prefix").to_owned();
    std::fs::create_dir_all(defs.join("partial")).expect("mkdir");
    std::fs::write(
        defs.join("partial").join(format!("{sha}.part")),
        [0u8; 1234],
    )
    .expect("part");
    std::fs::write(
        defs.join("partial")
            .join(format!("{}.part", "ab".repeat(32))),
        [0u8; 7],
    )
    .expect("part");
    // The server asked for a pause of ten minutes.
    std::fs::write(
        defs.join("cooldown.json"),
        serde_json::json!({ "https://mirror.corp/defs/": now.unix_timestamp() + 600 }).to_string(),
    )
    .expect("cooldown.json");

    let r = tether_doctor::run(
        input(cp.port(), &[good.port()], &ca, state.path(), &ntp),
        lab.world(),
    )
    .await;
    let st = check(&r, "defs.state");
    assert_eq!(st.status, Status::Warn, "{}", r.to_text());
    assert_eq!(st.code, Some(ErrorCode::DefsDownloadInterrupted));
    let problem = st.problem.clone().unwrap_or_default();
    assert!(
        problem.contains("failed at") && problem.contains("3 times in a row"),
        "{problem}"
    );
    assert!(
        !problem.contains('\u{1b}'),
        "escapes are not passed on: {problem:?}"
    );
    assert!(problem.contains("wait until"), "{problem}");
    let ch = &st.evidence["channels"][0];
    assert_eq!(ch["last_error"]["code"], "TETHER-E6006");
    assert_eq!(
        ch["last_error"]["action"],
        ErrorCode::DefsDownloadInterrupted.action()
    );
    assert_eq!(ch["consecutive_failures"], 3);
    assert_eq!(ch["partial_downloads"][0]["bytes"], 1234);
    assert_eq!(ch["partial_downloads"][0]["sha256"], sha.as_str());
    assert_eq!(ch["versions_behind"], 1);
    assert_eq!(st.evidence["partial_downloads_unattributed"][0]["bytes"], 7);
    assert!(st.evidence["cooldown_until"].is_string());
    // The mirror itself is fine now: the verdict is the agent's last error,
    // a warning, named as definitions.
    assert_eq!(r.verdict.status, VerdictStatus::Warnings, "{}", r.to_text());
    assert_eq!(r.verdict.check.as_deref(), Some("defs.state"));

    // A state file that is not JSON is no state, never a crash.
    std::fs::write(defs.join("main").join("state.json"), b"\x00\xffnot json").expect("write");
    std::fs::write(defs.join("cooldown.json"), b"{").expect("write");
    let r = tether_doctor::run(
        input(cp.port(), &[good.port()], &ca, state.path(), &ntp),
        lab.world(),
    )
    .await;
    let st = check(&r, "defs.state");
    assert_eq!(st.status, Status::Pass, "{}", r.to_text());
    assert_eq!(
        st.evidence["channels"][0]["last_error"],
        serde_json::Value::Null
    );
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
}
