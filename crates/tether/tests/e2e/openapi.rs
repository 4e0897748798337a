//! The OpenAPI document (`/v1/openapi.json`) against the live server:
//! schemathesis (from PyPI, in /opt/tether-venv, installed by
//! scripts/install-test-deps.sh) loads the document from the real server
//! and sends generated requests to every admin route with the admin token
//! and to every agent route with a real agent's credential. Every reply
//! must be no server error and match the document's status codes, content
//! types and schemas.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::lab::{Agent, Backend};

/// Where scripts/install-test-deps.sh puts schemathesis.
const SCHEMATHESIS: &str = "/opt/tether-venv/bin/schemathesis";

/// Long polls answer within a second here, so a generated `wait_secs` does
/// not hold a request for the production 50 s.
const ENV: &[(&str, &str)] = &[("TETHER_TASK_POLL_MAX_WAIT_SECS", "1")];

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_live_server() {
    assert!(
        Path::new(SCHEMATHESIS).exists(),
        "{SCHEMATHESIS} is missing: run scripts/install-test-deps.sh"
    );
    // With a built-in CA, so the CRL and the OCSP responder answer for real
    // (without one they answer 503 TETHER-E8442, which this test would
    // count as a server error).
    let server = crate::deploy::server_with_ca(Backend::Sqlite, ENV, None).await;

    // Served without credentials, and cacheable.
    let doc_url = format!("{}/v1/openapi.json", server.endpoint.url);
    let ca = server.endpoint.ca_pem_path.display().to_string();
    let fetched = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert", &ca, &doc_url])
        .output()
        .await
        .expect("curl runs");
    let head = String::from_utf8_lossy(&fetched.stdout).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("cache-control: public"),
        "GET /v1/openapi.json without credentials: {head:.400}"
    );
    let admin = std::fs::read_to_string(server.dir.path().join("admin.token"))
        .expect("the server wrote its admin token")
        .trim()
        .to_owned();

    let token = server.token(&[]).await;
    let agent = Agent::new();
    agent.enroll_ok(&server, &token.token, &[]).await;
    let credential = agent.credential();

    // The agent's routes first: the admin pass may remove the agent.
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    // schemathesis keeps a cache in its working directory: a scratch one.
    let work = tether_testlab::Scratch::new("e2e-openapi");
    let passes = [
        ("agent", Some(credential.as_str()), None),
        ("public", None, None),
        // Revoking or rotating an admin credential would lock the rest of
        // the run out with the bootstrap token (schemathesis reuses ids the
        // server returned), so those two operations are left out here; the
        // hardening e2e tests cover them.
        (
            "admin",
            Some(admin.as_str()),
            Some(r"^/v1/admin/admin-tokens/\{id\}/(revoke|rotate)$"),
        ),
    ];
    for (tag, secret, exclude) in passes {
        let mut args: Vec<String> = [
            "run",
            &doc_url,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--include-tag",
            tag,
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--tls-verify",
            &ca,
            "--no-color",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(secret) = secret {
            args.extend(["-H".to_owned(), format!("Authorization: Bearer {secret}")]);
        }
        if let Some(regex) = exclude {
            args.extend(["--exclude-path-regex".to_owned(), regex.to_owned()]);
        }
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new(SCHEMATHESIS)
                .args(&args)
                .current_dir(work.path())
                .env("PYTHONPATH", &hooks)
                .env("SCHEMATHESIS_HOOKS", "openapi_hooks")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("schemathesis finishes within 120 s")
        .expect("schemathesis runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "schemathesis found the {tag} routes and the document disagreeing ({:?}):\n{stdout}\n{stderr}\nserver log:\n{}",
            started.elapsed(),
            server.log()
        );
        eprintln!(
            "{tag}: schemathesis passed in {:?}\n{stdout}",
            started.elapsed()
        );
    }
}
