//! `tether scan run` as a user runs it: the real binary against a real
//! `openssl s_server` and a refused port on loopback, JSON and text.

use std::process::Command;

use tether_testlab::pki::Ca;
use tether_testlab::{Scratch, free_port, program, spawn_logged, wait_listening};

use crate::lab::tether_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_run_reports_every_endpoint_and_the_summary() {
    let dir = Scratch::new("e2e-scan");
    let root = Ca::root("E2E Scan Root");
    let leaf = root.issue(&["127.0.0.1"]);
    let (cert, key) = leaf.write_chain(dir.path(), "server", &[]);
    let (root_pem, _) = root.write(dir.path(), "root");
    let port = free_port();
    let mut server = spawn_logged(
        tokio::process::Command::new(program("openssl"))
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
    wait_listening(&mut server, port, "openssl s_server", &[&log]).await;
    let refused = free_port();
    let ports = format!("{port},{refused}");

    let out = Command::new(tether_bin())
        .args([
            "scan",
            "run",
            "--targets",
            "127.0.0.1",
            "--ports",
            &ports,
            "--json",
            "--ca-file",
        ])
        .arg(&root_pem)
        .output()
        .expect("tether runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    let tls = results
        .iter()
        .find(|r| r["port"] == port)
        .expect("the TLS port");
    assert_eq!(tls["outcome"], "tls_accepted");
    assert_eq!(tls["chain"]["verdicts"], serde_json::json!([]));
    assert_eq!(tls["chain"]["trusted"], true);
    assert_eq!(tls["chain"]["certs"].as_array().map(Vec::len), Some(1));
    let closed = results
        .iter()
        .find(|r| r["port"] == refused)
        .expect("the refused port");
    assert_eq!(closed["outcome"], "refused");
    assert_eq!(v["summary"]["total"], 2);
    assert_eq!(v["summary"]["outcomes"]["tls_accepted"], 1);
    assert_eq!(v["summary"]["outcomes"]["refused"], 1);

    let out = Command::new(tether_bin())
        .args(["scan", "run", "--targets", "127.0.0.1", "--ports", &ports])
        .output()
        .expect("tether runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // Without the lab root, the leaf's issuer is neither sent nor trusted.
    assert!(text.contains("[incomplete_chain]"), "{text}");
    assert!(
        text.contains("Scanned 2 endpoints: 1 chains recorded, 1 with problems."),
        "{text}"
    );
    assert!(
        !text.contains(&format!(":{refused}  refused")),
        "refused ports only with --all: {text}"
    );

    let out = Command::new(tether_bin())
        .args(["scan", "run", "--targets", "10.0.0.0/8", "--ports", "443"])
        .output()
        .expect("tether runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TETHER-E8102") && err.contains("at most 65536 addresses"),
        "{err}"
    );
}

/// `tether scan run` reads a mail server's chain through SMTP STARTTLS: a
/// real Postfix on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_run_reads_a_chain_through_smtp_starttls() {
    let dir = Scratch::new("e2e-scan-postfix");
    let root = Ca::root("E2E Mail Root");
    let inter = root.intermediate("E2E Mail Intermediate");
    let leaf = inter.issue(&["mail.test"]);
    let (cert, key) = leaf.write_chain(dir.path(), "mail", &[&inter]);
    let (root_pem, _) = root.write(dir.path(), "root");
    dir.open_to_all();
    let postfix = tether_testlab::postfix::Postfix::start(&cert, &key).await;
    let port = postfix.port.to_string();
    let out = Command::new(tether_bin())
        .args([
            "scan",
            "run",
            "--targets",
            "127.0.0.1",
            "--ports",
            &port,
            "--starttls",
            &format!("{port}=smtp"),
            "--sni-name",
            "127.0.0.1=mail.test",
            "--json",
            "--ca-file",
        ])
        .arg(&root_pem)
        .output()
        .expect("tether runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{v}");
    let r = &results[0];
    assert_eq!(r["outcome"], "tls_accepted", "{r}");
    assert_eq!(r["starttls"], "smtp", "{r}");
    assert_eq!(r["chain"]["trusted"], true, "{r}");
    assert_eq!(r["chain"]["verdicts"], serde_json::json!([]));
    let certs = r["chain"]["certs"].as_array().expect("certs");
    assert_eq!(certs.len(), 2, "leaf and intermediate: {r}");
    assert_eq!(certs[0]["sans"], serde_json::json!(["mail.test"]));
    assert!(r["observed_at"].is_string(), "{r}");
}
