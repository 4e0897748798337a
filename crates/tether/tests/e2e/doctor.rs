//! The doctor and the escalation bundle over real processes: `tether agent
//! doctor` / `tether doctor` against a running and a stopped server, and an
//! admin's queued "run doctor and upload" carried out by a running agent.

use std::io::Read;
use std::process::Output;
use std::time::Duration;

use tether_testlab::ntp::Ntp;
use tether_wire::{AgentStatus, BundleInfo};
use tokio::process::Command;
use tokio::time::Instant;

use crate::both_backends;
use crate::lab::{Agent, Backend, Server, tether_bin, text};

both_backends!(queued_doctor_uploads_a_redacted_bundle_with_its_verdict);

async fn tether(args: &[&str]) -> Output {
    Command::new(tether_bin())
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("tether runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_is_healthy_then_names_a_stopped_server() {
    let server = Server::start(Backend::Sqlite).await;
    let token = server.token(&[]).await;
    let agent = Agent::new();
    agent
        .enroll_ok(&server, &token.token, &["--name", "doc-agent"])
        .await;
    let state = agent
        .state
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    // An SNTP server answering with this host's time, so the clock check
    // has one that answers.
    let sntp = Ntp::start(time::Duration::ZERO).await;
    let ntp = sntp.addr.to_string();
    let units = crate::lab::Scratch::new("units");
    let units = units.path().to_str().expect("utf-8").to_owned();

    // Healthy: exit 0, one line per check and a verdict line.
    let started = Instant::now();
    let out = tether(&[
        "agent",
        "doctor",
        "--state-dir",
        &state,
        "--ntp-server",
        &ntp,
        "--unit-dir",
        &units,
    ])
    .await;
    let elapsed = started.elapsed();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "healthy path must exit 0:\n{t}");
    assert!(t.contains("Verdict: HEALTHY"), "{t}");
    for check in [
        "PASS  config",
        "PASS  tls",
        "PASS  http",
        "PASS  auth",
        "PASS  clock",
    ] {
        assert!(t.contains(check), "{check} missing:\n{t}");
    }
    assert!(
        !t.contains(&agent.credential()),
        "the credential is never printed"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "healthy loopback run took {elapsed:?}"
    );

    // The top-level alias, as JSON: the versioned schema.
    let out = tether(&[
        "doctor",
        "--state-dir",
        &state,
        "--ntp-server",
        &ntp,
        "--unit-dir",
        &units,
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(report["schema_version"], 2);
    assert_eq!(report["verdict"]["status"], "healthy");
    assert!(
        report["checks"].as_array().is_some_and(|c| c.len() > 5),
        "{report}"
    );

    // The doctor itself cannot run: exit 3 with the reason.
    let empty = crate::lab::Scratch::new("empty");
    let empty = empty.path().to_str().expect("utf-8").to_owned();
    let out = tether(&["doctor", "--state-dir", &empty]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("--server"), "{}", text(&out));
    let out = tether(&["doctor", "--state-dir", &state, "--target", "no-port-here"]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "a bad argument is exit 3: {}",
        text(&out)
    );
    let out = tether(&["agent", "doctor", "--state-dir", &state, "--deadline", "0s"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // Stop the server: exit 2, and the verdict names the refused port.
    let url = server.endpoint.url.clone();
    drop(server);
    let port = url
        .rsplit(':')
        .next()
        .expect("port")
        .trim_end_matches('/')
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = tether(&[
        "agent",
        "doctor",
        "--state-dir",
        &state,
        "--ntp-server",
        &ntp,
        "--unit-dir",
        &units,
    ])
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("Verdict: FAILED"), "{t}");
    assert!(t.contains("TETHER-E3101"), "ConnectRefused expected:\n{t}");
    let out = tether(&[
        "doctor",
        "--state-dir",
        &state,
        "--ntp-server",
        &ntp,
        "--unit-dir",
        &units,
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["verdict"]["code"], "TETHER-E3101", "{report}");
}

async fn queued_doctor_uploads_a_redacted_bundle_with_its_verdict(backend: Backend) {
    let server = Server::start(backend).await;
    server.set_interval(5).await;
    let token = server.token(&[]).await;
    let mut agent = Agent::new();
    let id = agent
        .enroll_ok(&server, &token.token, &["--name", "bundle-agent"])
        .await;
    agent.run(&[]);
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;

    let queued = server
        .admin_ok(&["agents", "doctor", &id.to_string()])
        .await;
    assert!(queued.contains("queued doctor run"), "{queued}");

    // The agent picks it up at its next check-in, runs the doctor (10 s
    // deadline at most) and uploads.
    let deadline = Instant::now() + Duration::from_secs(60);
    let bundle = loop {
        let out = server
            .admin_ok(&["agents", "bundles", &id.to_string(), "--json"])
            .await;
        let bundles: Vec<BundleInfo> = serde_json::from_str(&out).expect("bundles --json");
        if let Some(b) = bundles.into_iter().next() {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "no bundle after 60 s; agent log:\n{}\nserver log:\n{}",
            agent.stderr(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let verdict = bundle
        .verdict
        .clone()
        .expect("the bundle carries the doctor's verdict");
    assert!(["healthy", "warnings", "failed"].contains(&verdict.status.as_str()));
    let table = server
        .admin_ok(&["agents", "bundles", &id.to_string()])
        .await;
    assert!(
        table.contains(&bundle.id.to_string()) && table.contains(&verdict.status.to_uppercase()),
        "{table}"
    );

    // The action's result (verdict and bundle id) shows in `agents show`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let detail = server.agent(id).await;
        if let Some(d) = detail.last_doctor.filter(|d| d.bundle_id.is_some()) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no doctor result reported; agent log:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(last.bundle_id, Some(bundle.id));
    assert_eq!(last.status, verdict.status);
    let shown = server.admin_ok(&["agents", "show", &id.to_string()]).await;
    assert!(shown.contains("Last doctor"), "{shown}");
    assert!(shown.contains(&bundle.id.to_string()), "{shown}");

    // Download: a valid tar.gz with its manifests and no credential inside.
    let out_dir = crate::lab::Scratch::new("download");
    let file = out_dir.path().join("bundle.tar.gz");
    let file_arg = file.to_str().expect("utf-8").to_owned();
    server
        .admin_ok(&[
            "agents",
            "bundle-download",
            &bundle.id.to_string(),
            "--out",
            &file_arg,
        ])
        .await;
    let bytes = std::fs::read(&file).expect("downloaded");
    assert_eq!(bytes.len() as u64, bundle.size_bytes);
    let credential = agent.credential();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut names = Vec::new();
    for entry in archive.entries().expect("a tar inside") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("reads");
        assert!(
            !data
                .windows(credential.len())
                .any(|w| w == credential.as_bytes()),
            "the credential is in {name}"
        );
        names.push(name);
    }
    for expected in [
        "MANIFEST.json",
        "REDACTIONS.json",
        "doctor/report.json",
        "posture.json",
        "logs/agent.log",
        "timeline.txt",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }

    // The escalation report quotes that bundle: Markdown on stdout, and a
    // self-contained HTML page written to a file.
    let md = server
        .admin_ok(&["agents", "escalate", &id.to_string()])
        .await;
    let detail = server.agent(id).await;
    for expected in [
        "# Escalation report: bundle-agent".to_owned(),
        "## Status timeline".to_owned(),
        "| pending | active |".to_owned(),
        format!("| Bundle ID | {} |", bundle.id),
        format!("tether agents bundle-download {}", bundle.id),
        "The doctor checked the path to https://".to_owned(),
        "| tcp:127.0.0.1:".to_owned(),
        "connected=true".to_owned(),
        "every connection the doctor opened was accepted".to_owned(),
        verdict.status.clone(),
    ]
    .into_iter()
    .chain(detail.facts.internal_ips.iter().cloned())
    {
        assert!(md.contains(&expected), "{expected} missing:\n{md}");
    }
    let html_file = out_dir.path().join("report.html");
    let html_arg = html_file.to_str().expect("utf-8").to_owned();
    let wrote = server
        .admin_ok(&[
            "agents",
            "escalate",
            &id.to_string(),
            "--format",
            "html",
            "--out",
            &html_arg,
        ])
        .await;
    assert!(wrote.contains("wrote the escalation report"), "{wrote}");
    let html = std::fs::read_to_string(&html_file).expect("the page");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains(&bundle.id.to_string()), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "{html}"
    );
    agent.terminate().await;
}
