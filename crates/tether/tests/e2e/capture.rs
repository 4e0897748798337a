//! The escalation capture: `tether-agent capture` against a real server
//! through a real squid, read back with tshark.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use tether_testlab::squid::Squid;

use crate::lab::{Agent, Backend, Scratch, Server, agent_bin, text};

/// The HTTP status `GET /v1/agent/probe` answers with `credential`.
async fn probe_status(server: &Server, credential: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(&server.endpoint.ca_pem_path)
        .args(["-H", &format!("Authorization: Bearer {credential}")])
        .arg(format!("{}/v1/agent/probe", server.endpoint.url))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tshark on `pcap` with `args` and returns its stdout.
async fn tshark(pcap: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tshark runs (scripts/install-test-deps.sh installs it)");
    assert!(out.status.success(), "tshark failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_through_squid_yields_a_pcap_tshark_reads() {
    let server = Server::start(Backend::Sqlite).await;
    let server_port = url::Url::parse(&server.endpoint.url)
        .expect("url")
        .port()
        .expect("port");
    let squid = Squid::start(server_port, "tether", "s3cret-pass").await;
    let token = server.token(&[]).await;
    let agent = Agent::new();
    let proxy = format!("http://tether:s3cret-pass@127.0.0.1:{}", squid.port);
    agent
        .enroll_ok(&server, &token.token, &["--proxy", &proxy])
        .await;

    let before = agent.credential();
    let work = Scratch::new("capture");
    let bundle = work.path().join("capture.tar.gz");
    let out = Command::new(agent_bin())
        .args([
            "capture",
            "--for",
            "3s",
            "--tls-keylog",
            "--upload",
            "--state-dir",
        ])
        .arg(agent.state.path())
        .arg("--out")
        .arg(&bundle)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tether-agent capture runs");
    let said = text(&out);
    assert!(out.status.success(), "capture failed: {said}");
    assert!(said.contains("check-in: ok"), "{said}");
    assert!(said.contains("host 127.0.0.1"), "{said}");
    assert!(said.contains("uploaded as bundle"), "{said}");
    // The key log exposes the credential: it was rotated after the upload.
    // The old one works until the new one is first presented.
    assert!(said.contains("rotated this agent's credential"), "{said}");
    let after = agent.credential();
    assert_ne!(
        after, before,
        "the credential file holds the new credential"
    );
    assert_eq!(probe_status(&server, &before).await, "200");
    assert_eq!(probe_status(&server, &after).await, "200");
    assert_eq!(
        probe_status(&server, &before).await,
        "401",
        "the credential in the capture no longer works"
    );
    assert!(
        !said.contains("s3cret-pass"),
        "no proxy password is printed: {said}"
    );

    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).expect("mkdir");
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&bundle)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar runs");
    assert!(st.success());
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(unpacked.join("MANIFEST.json")).expect("MANIFEST.json"),
    )
    .expect("manifest is JSON");
    let listed = |name: &str| {
        manifest["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|e| e["name"] == name))
    };
    assert!(listed("capture/agent.pcap"), "{manifest}");
    assert!(listed("capture/capture.txt"), "{manifest}");
    assert!(listed("capture/tls-keys.log"), "{manifest}");
    assert!(
        manifest["unredacted"]
            .as_array()
            .is_some_and(|u| u.iter().any(|e| e["name"] == "capture/agent.pcap"
                && e["warning"]
                    .as_str()
                    .is_some_and(|w| w.contains("not redacted")))),
        "{manifest}"
    );

    // The agent's own connections to squid's port are in the pcap.
    let pcap = unpacked.join("capture/agent.pcap");
    let port = squid.port.to_string();
    let syns = tshark(
        &pcap,
        &[
            "-Y",
            &format!("tcp.dstport == {port} && tcp.flags.syn == 1 && tcp.flags.ack == 0"),
            "-T",
            "fields",
            "-e",
            "tcp.dstport",
        ],
    )
    .await;
    assert!(
        syns.lines().any(|l| l.trim() == port),
        "no connection to the proxy port {port} in the capture:\n{syns}"
    );
    // And its CONNECT to the server through squid.
    let connects = tshark(
        &pcap,
        &[
            "-Y",
            "http.request.method == \"CONNECT\"",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ],
    )
    .await;
    assert!(
        connects.contains(&format!(":{server_port}")),
        "no CONNECT to the server in the capture:\n{connects}"
    );

    // With the key log, tshark decrypts the agent's TLS sessions inside the
    // tunnel and shows the check-in's request path.
    let keys = unpacked.join("capture/tls-keys.log");
    let key_log = std::fs::read_to_string(&keys).expect("key log");
    assert!(
        key_log
            .lines()
            .any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")),
        "{key_log}"
    );
    let paths = tshark(
        &pcap,
        &[
            "-o",
            &format!("tls.keylog_file:{}", keys.display()),
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ],
    )
    .await;
    assert!(
        paths.lines().any(|l| l.trim() == "/v1/agent/checkin"),
        "the decrypted capture shows no check-in:\n{paths}"
    );
    let undecrypted = tshark(
        &pcap,
        &[
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ],
    )
    .await;
    assert!(
        !undecrypted.contains("/v1/agent/checkin"),
        "without the key log the check-in is not readable:\n{undecrypted}"
    );
}

/// The capture queued from the control plane (`tether agents capture ID
/// --tls-keylog --wait`): the running agent runs it in its own process,
/// uploads the bundle and reports it as the action's result; the running
/// agent takes up the rotated credential at its next check-in, after which
/// the credential in the capture is refused, and it stays Active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_queued_from_the_control_plane_uploads_and_rotates() {
    let server = Server::start(Backend::Sqlite).await;
    server.set_interval(5).await;
    let token = server.token(&[]).await;
    let mut agent = Agent::new();
    let id = agent.enroll_ok(&server, &token.token, &[]).await;
    agent.run(&[]);
    server
        .wait_status(
            id,
            tether_wire::AgentStatus::Active,
            Duration::from_secs(20),
        )
        .await;
    let before = agent.credential();

    let id_s = id.to_string();
    let out = server
        .admin(&[
            "agents",
            "capture",
            &id_s,
            "--for",
            "2s",
            "--tls-keylog",
            "--wait",
            "--json",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}\nagent:\n{}",
        text(&out),
        agent.stderr()
    );
    let action: tether_wire::ActionInfo =
        serde_json::from_slice(&out.stdout).expect("agents capture --json");
    let result = action.result.expect("--wait waits for the result");
    assert!(result.ok, "{result:?}\nagent:\n{}", agent.stderr());
    assert!(
        result.message.contains("uploaded as bundle") && result.message.contains("rotated"),
        "{}",
        result.message
    );
    let bundles: Vec<tether_wire::BundleInfo> = serde_json::from_str(
        &server
            .admin_ok(&["agents", "bundles", &id_s, "--json"])
            .await,
    )
    .expect("bundles --json");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert!(
        result.message.contains(&bundles[0].id.to_string()),
        "{}",
        result.message
    );

    // The running agent presents the new credential at its next check-in
    // (every 5 s here); from then on the old one is refused.
    let after = agent.credential();
    assert_ne!(after, before);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while probe_status(&server, &before).await != "401" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old credential still works 30 s after the rotation\nagent:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = server.agent(id).await.summary.last_seen;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = server.agent(id).await;
    assert_eq!(now.summary.status, tether_wire::AgentStatus::Active);
    assert!(
        now.summary.last_seen > seen,
        "the agent keeps checking in with its new credential\n{}",
        agent.stderr()
    );
    assert!(
        !now.summary
            .flags
            .iter()
            .any(|f| matches!(f, tether_wire::AgentFlag::CredentialRejected)),
        "the running agent is not flagged (it checked in with its new credential after the old one was refused): {:?}",
        now.summary.flags
    );
    agent.terminate().await;
}

/// Without CAP_NET_RAW (root with it dropped from the bounding set, as a
/// hardened service is) tcpdump cannot open the capture and the agent says
/// so with its code, leaving no capture directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_without_cap_net_raw_is_named() {
    let server = Server::start(Backend::Sqlite).await;
    let token = server.token(&[]).await;
    let agent = Agent::new();
    agent.enroll_ok(&server, &token.token, &[]).await;
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_raw,-net_admin", "--"])
        .arg(agent_bin())
        .args(["capture", "--for", "2s", "--state-dir"])
        .arg(agent.state.path())
        .arg("--out")
        .arg(agent.state.path().join("never.tar.gz"))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("setpriv runs");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(tether_wire::ErrorCode::CapturePermission.as_str()),
        "{said}"
    );
    assert!(!agent.state.path().join("never.tar.gz").exists());
    let left: Vec<_> = std::fs::read_dir(agent.state.path())
        .expect("state dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("capture-"))
        .collect();
    assert!(left.is_empty(), "capture dirs left behind: {left:?}");
}
