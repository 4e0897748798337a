//! The doctor owns the definitions path (issue #8): enrolled agents whose
//! policy points `update_urls` at a broken update server get a verdict that
//! names it, from `tether-agent doctor` on the host and from the remote
//! `tether agents doctor ID` (the agent runs the same code as a task),
//! while their check-ins stay healthy.
//!
//! One server and one lab serve every scenario, run at once: a dead mirror,
//! squid with the wrong password, a mirror whose certificate comes from a
//! CA the agent does not trust, a mirror frozen under libfaketime (its
//! timestamp was signed two days ago by a server whose clock was two days
//! behind), a mirror one version behind the control plane, a mirror
//! whose certificate names an OCSP responder nobody answers at, and a
//! mirror whose timestamp was edited after it was signed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tether_testlab::nginx::Nginx;
use tether_testlab::ntp::Ntp;
use tether_testlab::pki::Ca;
use tether_testlab::squid::Squid;
use tether_wire::{AgentStatus, ErrorCode};
use tokio::process::Command;
use tokio::time::Instant;

use crate::defs::support::{CHANNEL, DefsLab, joined, rule_lines};
use crate::lab::{Agent, Backend, Scratch, Server, agent_bin, free_port};

/// One scenario: the update server the policy names, what the agent's
/// config adds, and the verdict both doctors must give.
struct Scenario {
    name: &'static str,
    update_url: String,
    /// Lines appended to agent.toml after enrollment.
    config: String,
    status: &'static str,
    code: ErrorCode,
    /// The verdict's check id.
    check: String,
}

/// `tether defs mirror --to DIR` on the server's data dir, with `env`.
async fn mirror(server: &Server, to: &Path, env: &[(&str, &str)]) {
    let out = server
        .admin_env(
            &["defs", "mirror", "--to", to.to_str().expect("utf-8 path")],
            env,
        )
        .await;
    assert!(
        out.status.success() && to.join("metadata").join("timestamp.json").is_file(),
        "defs mirror failed: {}",
        crate::lab::text(&out)
    );
}

/// `tether-agent doctor --json` on an agent's state dir.
async fn local_doctor(state: &Path, ntp: &str, units: &Path) -> Value {
    let out = Command::new(agent_bin())
        .args(["doctor", "--json", "--ntp-server", ntp, "--state-dir"])
        .arg(state)
        .arg("--unit-dir")
        .arg(units)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tether-agent doctor runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            crate::lab::text(&out)
        )
    })
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_update_server_is_named_by_both_doctors_while_check_ins_stay_healthy() {
    let started = Instant::now();
    // The control plane's clock two days behind: what it publishes and
    // signs now carries a timestamp that has expired by the real clock.
    let past = tether_testlab::faketime::env("-2d");
    let past: Vec<(&str, &str)> = past.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut lab = DefsLab {
        server: Server::start_with(Backend::Sqlite, &past).await,
        files: Scratch::new("defs-files"),
    };
    let lines = rule_lines(2_000, 8);
    lab.publish(&joined(&lines)).await;
    let www = Scratch::new("mirrors");
    let frozen = www.path().join("frozen");
    mirror(&lab.server, &frozen, &past).await;
    // Back to the real clock: the server re-signs its expired timestamp at
    // start; the frozen copy stays as it was.
    lab.server.stop().await;
    lab.server.restart_with_env(&[]).await;
    let behind = www.path().join("behind");
    mirror(&lab.server, &behind, &[]).await;
    let mut changed = lines.clone();
    changed[7] = "sig-0000007 changed for version two\n".to_owned();
    let v2 = lab.publish(&joined(&changed)).await;
    assert_eq!(v2.version, 2);
    let live = www.path().join("live");
    mirror(&lab.server, &live, &[]).await;

    // A copy whose timestamp was edited after signing.
    let forged = www.path().join("forged");
    mirror(&lab.server, &forged, &[]).await;
    let timestamp = forged.join("metadata").join("timestamp.json");
    let mut edited: Value =
        serde_json::from_slice(&std::fs::read(&timestamp).expect("timestamp.json")).expect("JSON");
    let version = edited["signed"]["version"].as_u64().expect("a version");
    edited["signed"]["version"] = (version + 1).into();
    std::fs::write(&timestamp, edited.to_string()).expect("edited");

    // The mirrors.
    let pki = |f: &str| lab.pki(f);
    let forged_nginx = Nginx::static_https(&forged, &pki("server.pem"), &pki("server.key")).await;
    let frozen_nginx = Nginx::static_https(&frozen, &pki("server.pem"), &pki("server.key")).await;
    let behind_nginx = Nginx::static_https(&behind, &pki("server.pem"), &pki("server.key")).await;
    let certs = Scratch::new("mirror-certs");
    let stranger = Ca::root("Stranger Root CA");
    let (cert, key) =
        stranger
            .issue(&["127.0.0.1"])
            .write_chain(certs.path(), "stranger", &[&stranger]);
    let untrusted_nginx = Nginx::static_https(&live, &cert, &key).await;
    let mirror_ca = Ca::root("Mirror Root CA");
    let (mirror_ca_pem, _) = mirror_ca.write(certs.path(), "mirror-ca");
    let dead_responder = format!("http://127.0.0.1:{}/ocsp", free_port());
    let (cert, key) = mirror_ca
        .issue_with_ocsp(&["127.0.0.1"], &dead_responder)
        .write_chain(certs.path(), "ocsp", &[&mirror_ca]);
    let ocsp_nginx = Nginx::static_https(&live, &cert, &key).await;
    // Squid in front of the control plane's own /defs/, under the name
    // `localhost`; check-ins go to 127.0.0.1 directly.
    let port = lab.port();
    let squid = Squid::start(port, "tether", "s3cret-pass").await;
    let dead_port = free_port();

    let scenarios = vec![
        Scenario {
            name: "dead",
            update_url: format!("https://127.0.0.1:{dead_port}/defs/"),
            config: String::new(),
            status: "failed",
            code: ErrorCode::ConnectRefused,
            check: format!("defs.1.tcp:127.0.0.1:{dead_port}"),
        },
        Scenario {
            name: "squid",
            update_url: format!("https://localhost:{port}/defs/"),
            config: format!(
                "proxy = \"http://tether:wrong-pass@127.0.0.1:{}\"\nno_proxy = [\"127.0.0.1\"]\n",
                squid.port
            ),
            status: "failed",
            code: ErrorCode::ProxyAuthFailed,
            check: "defs.1.proxy".to_owned(),
        },
        Scenario {
            name: "untrusted",
            update_url: untrusted_nginx.url(),
            config: String::new(),
            status: "failed",
            code: ErrorCode::TlsUnknownIssuer,
            check: "defs.1.tls".to_owned(),
        },
        Scenario {
            name: "frozen",
            update_url: frozen_nginx.url(),
            config: String::new(),
            status: "failed",
            code: ErrorCode::DefsMirrorFrozen,
            check: "defs.1.tuf".to_owned(),
        },
        Scenario {
            name: "behind",
            update_url: behind_nginx.url(),
            config: String::new(),
            status: "warnings",
            code: ErrorCode::DefsMirrorBehind,
            check: "defs.1.tuf".to_owned(),
        },
        Scenario {
            name: "ocsp",
            update_url: ocsp_nginx.url(),
            config: format!("extra_ca_file = \"{}\"\n", mirror_ca_pem.display()),
            status: "warnings",
            code: ErrorCode::RevocationUnreachable,
            check: "defs.1.revocation".to_owned(),
        },
        Scenario {
            name: "forged",
            update_url: forged_nginx.url(),
            config: String::new(),
            status: "failed",
            code: ErrorCode::DefsMirrorUnverified,
            check: "defs.1.tuf".to_owned(),
        },
    ];

    // One policy and one enrolled, running agent per scenario.
    let mut agents = Vec::new();
    for s in &scenarios {
        lab.server
            .admin_ok(&[
                "policy",
                "set",
                s.name,
                "--checkin-interval",
                "5s",
                "--jitter-percent",
                "0",
                "--channel",
                CHANNEL,
                "--update-url",
                &s.update_url,
            ])
            .await;
        let token = lab.server.token(&["--policy", s.name]).await;
        let mut agent = Agent::new();
        let id = agent.enroll_ok(&lab.server, &token.token, &[]).await;
        if !s.config.is_empty() {
            let toml = agent.state.path().join("agent.toml");
            let base = std::fs::read_to_string(&toml).expect("agent.toml");
            std::fs::write(&toml, format!("{base}{}", s.config)).expect("agent.toml written");
        }
        agent.run(&[]);
        agents.push((agent, id));
    }
    for (agent, id) in &agents {
        lab.server
            .wait_status(*id, AgentStatus::Active, Duration::from_secs(30))
            .await;
        // The policy (and so the update URL) has reached the state file.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(agent.state.path().join("state.json"))
            .unwrap_or_default()
            .contains("update_urls")
        {
            assert!(Instant::now() < deadline, "no policy in the state file");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The dead mirror's agent has tried once: its state says how it failed.
    let t = crate::defs::support::update_expect(agents[0].0.state.path(), &[], 2).await;
    assert!(t.contains(ErrorCode::ConnectRefused.as_str()), "{t}");

    // The local doctor, every agent at once.
    let sntp = Ntp::start(time::Duration::ZERO).await;
    let ntp = sntp.addr.to_string();
    let units = Scratch::new("units");
    let runs: Vec<_> = agents
        .iter()
        .map(|(a, _)| {
            let (state, ntp, units) = (
                a.state.path().to_owned(),
                ntp.clone(),
                units.path().to_owned(),
            );
            tokio::spawn(async move { local_doctor(&state, &ntp, &units).await })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.expect("the doctor's task"));
    }
    for (s, report) in scenarios.iter().zip(&reports) {
        let v = &report["verdict"];
        assert_eq!(report["schema_version"], 2);
        assert_eq!(v["status"], s.status, "{}: {report:#}", s.name);
        assert_eq!(v["code"], s.code.as_str(), "{}: {v:#}", s.name);
        assert_eq!(v["check"], s.check.as_str(), "{}: {v:#}", s.name);
        let root = v["root_cause"].as_str().unwrap_or_default();
        eprintln!(
            "{} (local, {} ms): {} {}",
            s.name, report["duration_ms"], v["code"], root
        );
        let shown_url = url::Url::parse(&s.update_url)
            .expect("update URL")
            .to_string();
        if s.status == "failed" {
            assert!(
                root.starts_with("Check-ins work, but definitions updates from")
                    && root.contains(&shown_url),
                "{}: the verdict names the update server: {root}",
                s.name
            );
        }
        // Check-ins stay healthy: the control plane's path passes.
        for id in ["tls", "http", "auth"] {
            assert_eq!(check(report, id)["status"], "pass", "{}: {id}", s.name);
        }
        assert!(
            !report.to_string().contains("wrong-pass"),
            "the proxy password is never printed"
        );
        // The agent's own state is reported with evidence.
        let state = check(report, "defs.state");
        let channel = &state["evidence"]["channels"][0];
        assert_eq!(channel["channel"], CHANNEL, "{state:#}");
        // The newest version: the mirror's when it answered, else the
        // control plane's.
        let newest = if matches!(s.name, "behind" | "frozen") {
            1
        } else {
            2
        };
        assert_eq!(channel["newest_version"], newest, "{}: {report:#}", s.name);
    }
    // The failed attempt, with its code, action and the server it tried.
    let state = check(&reports[0], "defs.state");
    assert_eq!(state["status"], "warn", "{state:#}");
    assert_eq!(
        state["code"],
        ErrorCode::ConnectRefused.as_str(),
        "{state:#}"
    );
    let channel = &state["evidence"]["channels"][0];
    assert_eq!(
        channel["last_error"]["code"],
        ErrorCode::ConnectRefused.as_str()
    );
    assert_eq!(
        channel["last_error"]["action"],
        ErrorCode::ConnectRefused.action()
    );
    assert!(
        channel["consecutive_failures"].as_u64() >= Some(1),
        "{channel:#}"
    );
    assert_eq!(channel["installed_version"], Value::Null);
    assert_eq!(channel["versions_behind"], 2);
    assert_eq!(channel["server"], scenarios[0].update_url.as_str());
    // Evidence of the TUF check: version and expiry of each mirror.
    let frozen_tuf = check(&reports[3], "defs.1.tuf");
    assert!(
        frozen_tuf["problem"]
            .as_str()
            .is_some_and(|p| p.contains("frozen") && p.contains("timestamp expired")),
        "{frozen_tuf:#}"
    );
    let behind_tuf = check(&reports[4], "defs.1.tuf");
    assert_eq!(behind_tuf["evidence"]["channels"][CHANNEL], 1);
    assert_eq!(behind_tuf["evidence"]["control_plane_channels"][CHANNEL], 2);
    assert!(
        behind_tuf["evidence"]["timestamp_expires"].is_string(),
        "{behind_tuf:#}"
    );
    // Each path with its own trust: the pin for check-ins, every anchor the
    // agent has for update servers (the updater's).
    assert_eq!(check(&reports[4], "tls")["evidence"]["trust"], "pinned CA");
    assert_eq!(
        check(&reports[4], "defs.1.tls")["evidence"]["trust"],
        "CA file and system roots"
    );
    assert_eq!(
        check(&reports[5], "defs.1.tls")["evidence"]["trust"],
        "CA file, extra CA file and system roots"
    );
    let ocsp = check(&reports[5], "defs.1.revocation");
    assert_eq!(ocsp["evidence"]["outcome"], "unreachable", "{ocsp:#}");

    // The remote doctor: queued from the admin CLI, run by each agent as a
    // task, its verdict reported back.
    for (_, id) in &agents {
        lab.server
            .admin_ok(&["agents", "doctor", &id.to_string(), "--no-upload"])
            .await;
    }
    for (s, (agent, id)) in scenarios.iter().zip(&agents) {
        let deadline = Instant::now() + Duration::from_secs(40);
        let last = loop {
            if let Some(d) = lab.server.agent(*id).await.last_doctor {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no remote doctor verdict; agent log:\n{}",
                s.name,
                agent.stderr()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        eprintln!("{} (remote): {:?} {}", s.name, last.code, last.root_cause);
        assert_eq!(last.status, s.status, "{}: {last:?}", s.name);
        assert_eq!(last.code, Some(s.code), "{}: {last:?}", s.name);
        assert_eq!(last.check.as_deref(), Some(s.check.as_str()), "{last:?}");
        // And check-ins never stopped.
        assert_eq!(
            lab.server.agent(*id).await.summary.status,
            AgentStatus::Active
        );
    }
    for (mut agent, _) in agents {
        agent.terminate().await;
    }
    eprintln!("the seven scenarios took {:?}", started.elapsed());
}
