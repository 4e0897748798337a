//! Issue and deploy end to end: the built-in CA created with its root
//! offline (`tether certs ca init --root-key-out`), the real server and a
//! real provisioning agent, `tether certs deploy` to a PEM set that a real
//! nginx serves and reloads; the agent's key never leaves its host, the
//! inventory records the new certificate at the location, `certs history`
//! tells the story; then a deploy whose reload reloads nothing rolls back
//! with its code and the first certificate is still served.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tether_testlab::nginx::{Nginx, Site};
use tether_wire::{CertHistory, TaskDetail, TaskState};
use tokio::time::Instant;
use uuid::Uuid;

use crate::lab::{Agent, Backend, Server, text};

pub(crate) async fn served(port: u16) -> Option<String> {
    let ep = tether_scan::Endpoint {
        ip: "127.0.0.1".parse().expect("ip"),
        port,
        sni: Some("web.test".into()),
        name: None,
        starttls: None,
        reverse_dns: false,
    };
    let o = tether_scan::probe_once(&ep, Duration::from_secs(2), Duration::from_secs(3)).await;
    o.chain()
        .and_then(|c| c.certs.first())
        .map(|c| c.fingerprint.clone())
}

/// Waits (at most 10 s) until the server on `port` presents the certificate
/// `fingerprint`: after a reload, nginx's old workers may still answer a
/// new connection or two while they wind down.
pub(crate) async fn assert_serves(port: u16, fingerprint: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = served(port).await;
        if got.as_deref() == Some(fingerprint) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port} serves {got:?}, not {fingerprint} (after 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn wait_task(server: &Server, id: &str, within: Duration) -> TaskDetail<Value> {
    let deadline = Instant::now() + within;
    loop {
        let d: TaskDetail<Value> =
            serde_json::from_str(&server.admin_ok(&["tasks", "show", id, "--json"]).await)
                .expect("tasks show --json");
        if matches!(
            d.task.state,
            TaskState::Succeeded | TaskState::Dead | TaskState::Cancelled
        ) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not finished after {within:?}: {:#?}\nserver log:\n{}",
            d.task,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A restartable server with the built-in CA: `certs ca init` (its root
/// key written to `root_key_out`, offline, when given), then a restart so
/// the server loads the CA.
pub(crate) async fn server_with_ca(
    backend: Backend,
    env: &[(&str, &str)],
    root_key_out: Option<&Path>,
) -> Server {
    let mut server = Server::start_restartable(backend, env).await;
    let mut args = vec!["certs", "ca", "init"];
    if let Some(key) = root_key_out {
        args.extend(["--root-key-out", key.to_str().expect("utf8")]);
    }
    let out = server.admin_ok(&args).await;
    if root_key_out.is_some() {
        assert!(out.contains("keep it offline"), "{out}");
    }
    server.stop().await;
    server.restart().await;
    server
}

/// `tether certs deploy` to `agent`: the names, the files of the set
/// (`("cert", path)` is `--cert path`), the reload and verify commands,
/// then each test's own flags.
pub(crate) fn deploy_args(
    agent: &str,
    names: &[&str],
    files: &[(&str, String)],
    reload: &str,
    verify: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "certs".into(),
        "deploy".into(),
        "--agent".into(),
        agent.into(),
    ];
    for name in names {
        args.extend(["--name".to_owned(), (*name).to_owned()]);
    }
    for (flag, path) in files {
        args.extend([format!("--{flag}"), path.clone()]);
    }
    args.extend([
        "--reload".to_owned(),
        reload.to_owned(),
        "--verify".to_owned(),
        verify.to_owned(),
    ]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Runs `certs deploy … --json` and returns the task's id.
pub(crate) async fn deploy_ok(server: &Server, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).chain(["--json"]).collect();
    let out: Value =
        serde_json::from_str(&server.admin_ok(&args).await).expect("certs deploy --json");
    out["id"].as_str().expect("task id").to_owned()
}

/// A provisioning agent enrolled with a fresh token, running and Active.
pub(crate) async fn provisioning_agent(server: &Server) -> (Agent, Uuid) {
    let token: tether_wire::CreatedToken = serde_json::from_str(
        &server
            .admin_ok(&["token", "create", "--kind", "provisioning", "--json"])
            .await,
    )
    .expect("token");
    let mut agent = Agent::new();
    let agent_id = agent
        .enroll_ok(server, &token.token, &["--kind", "provisioning"])
        .await;
    agent.run(&[]);
    server
        .wait_status(
            agent_id,
            tether_wire::AgentStatus::Active,
            Duration::from_secs(20),
        )
        .await;
    (agent, agent_id)
}

/// An old PEM set (cert, key, chain, fullchain) for `names` from a
/// throwaway CA, served by a real nginx (a master and a worker, as in
/// production), and `reload.sh`, which runs `before` then reloads it: a
/// deploy's reload command is split on spaces and run without a shell,
/// and nginx's takes `-g "…; …;"`.
pub(crate) struct PemSite {
    _dir: tether_testlab::Scratch,
    pub set: std::path::PathBuf,
    pub nginx: Nginx,
    pub script: std::path::PathBuf,
    /// The script's text as written (to put it back after a fault).
    pub reload_script: String,
    /// The old key, PEM.
    pub old_key: String,
}

impl PemSite {
    pub(crate) async fn start(tag: &str, names: &[&str], before: &str) -> PemSite {
        let dir = tether_testlab::Scratch::new(tag);
        let set = dir.path().join("ssl");
        std::fs::create_dir_all(&set).expect("mkdir");
        let old_ca = tether_testlab::pki::Ca::root("E2E Old Root");
        let leaf = old_ca.issue(names);
        let chain = String::from_utf8(old_ca.pem()).expect("utf8");
        std::fs::write(set.join("cert.pem"), leaf.pem()).expect("w");
        std::fs::write(set.join("key.pem"), leaf.key_pem()).expect("w");
        std::fs::write(set.join("chain.pem"), &chain).expect("w");
        std::fs::write(
            set.join("fullchain.pem"),
            format!("{}\n{}\n", leaf.pem().trim_end(), chain.trim_end()),
        )
        .expect("w");
        let nginx = Nginx::start(&Site {
            tls: Some((set.join("fullchain.pem"), set.join("key.pem"))),
            master_process: true,
            ..Site::default()
        })
        .await;
        let script = dir.path().join("reload.sh");
        let quoted: Vec<String> = nginx
            .reload_command()
            .iter()
            .map(|a| format!("'{a}'"))
            .collect();
        let reload_script = format!("{before}exec {}\n", quoted.join(" "));
        std::fs::write(&script, &reload_script).expect("script");
        PemSite {
            _dir: dir,
            set,
            nginx,
            script,
            reload_script,
            old_key: leaf.key_pem().to_owned(),
        }
    }

    /// The deploy's `--reload`.
    pub(crate) fn reload(&self) -> String {
        format!("/bin/sh {}", self.script.display())
    }

    /// A file of the set, as a command-line argument.
    pub(crate) fn path(&self, name: &str) -> String {
        self.set.join(name).display().to_string()
    }

    /// The deploy's `--verify`.
    pub(crate) fn verify(&self) -> String {
        format!("127.0.0.1:{}", self.nginx.port)
    }
}

pub(crate) fn fp_of_file(p: &Path) -> String {
    let text = std::fs::read_to_string(p).expect("cert file");
    let der = pem::parse(text).expect("pem").into_contents();
    tether_x509::fingerprint(&der)
}

async fn deploy_from_the_built_in_ca_to_a_real_nginx(backend: Backend) {
    let media = tether_testlab::Scratch::new("e2e-offline-media");
    let root_key = media.path().join("root.pem");
    // The admin CLI runs with the server's data dir (`--data-dir`).
    let server = server_with_ca(backend, &[], Some(&root_key)).await;
    assert!(root_key.exists());
    assert!(!server.dir.path().join("ca/root.key.sealed").exists());

    let (mut agent, agent_id) = provisioning_agent(&server).await;

    // The old set, served by nginx.
    let site = PemSite::start("e2e-deploy-site", &["web.test", "127.0.0.1"], "").await;
    let (set, nginx, reload) = (&site.set, &site.nginx, site.reload());
    let old_fp = fp_of_file(&set.join("cert.pem"));
    assert_serves(nginx.port, &old_fp).await;

    let p = |n: &str| set.join(n).display().to_string();
    let verify = format!("127.0.0.1:{}", nginx.port);
    let deploy = |reload: String, verify_timeout: &'static str| {
        let args = deploy_args(
            &agent_id.to_string(),
            &["web.test", "127.0.0.1"],
            &[
                ("cert", p("cert.pem")),
                ("key", p("key.pem")),
                ("chain", p("chain.pem")),
                ("fullchain", p("fullchain.pem")),
            ],
            &reload,
            &verify,
            &[
                "--key-mode",
                "0600",
                "--sni",
                "web.test",
                "--verify-timeout",
                verify_timeout,
                "--max-attempts",
                "1",
            ],
        );
        let server = &server;
        async move { deploy_ok(server, &args).await }
    };

    // 1. A deploy that works.
    let id = deploy(reload.clone(), "15").await;
    let d = wait_task(&server, &id, Duration::from_secs(60)).await;
    assert_eq!(
        d.task.state,
        TaskState::Succeeded,
        "{:#?}\n{}",
        d,
        agent.stderr()
    );
    let new_fp = fp_of_file(&set.join("cert.pem"));
    assert_ne!(new_fp, old_fp);
    assert_serves(nginx.port, &new_fp).await;
    // The key was made on this host: the server never had it.
    let key_text = std::fs::read_to_string(set.join("key.pem")).expect("key");
    assert!(
        !server
            .log()
            .contains(key_text.lines().nth(1).expect("key body"))
    );
    let report = &d.results[0]["report"];
    assert_eq!(report["state"], "deployed", "{report:#}");
    assert_eq!(report["new_fingerprint"], new_fp.as_str());
    assert!(!d.results[0].to_string().contains("PRIVATE KEY"));

    // The history: issued by the CA for the task's names, deployed with
    // each step, and seen at the location (the inventory).
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &new_fp, "--json"])
            .await,
    )
    .expect("history --json");
    let issued = h.issued.as_ref().expect("issued by the built-in CA");
    assert_eq!(issued.names, vec!["web.test", "127.0.0.1"]);
    assert_eq!(issued.agent_id, Some(agent_id));
    assert_eq!(issued.task_id, Some(id.parse::<Uuid>().expect("uuid")));
    assert_eq!(h.deployments.len(), 1, "{h:#?}");
    let steps: Vec<&str> = h.deployments[0]
        .report
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(steps, ["backup", "write", "reload", "verify"]);
    assert_eq!(h.seen_at.len(), 1, "{h:#?}");
    assert_eq!(h.seen_at[0].address, verify);
    let shown = server.admin_ok(&["certs", "history", &new_fp]).await;
    assert!(
        shown.contains("deployed to") && shown.contains("verify"),
        "{shown}"
    );
    let inventory = server.admin_ok(&["certs", "show", &new_fp]).await;
    assert!(inventory.contains(&verify), "{inventory}");

    // 2. A reload that reloads nothing: verification mismatch, rolled back,
    // the first deployed certificate still served, the code in the task.
    let id2 = deploy("true".to_owned(), "2").await;
    let d2 = wait_task(&server, &id2, Duration::from_secs(60)).await;
    assert_eq!(d2.task.state, TaskState::Dead, "{d2:#?}");
    let why = format!("{:?} {:?}", d2.task.outcome, d2.task.last_error);
    assert!(why.contains("TETHER-E8504"), "{why}");
    assert_serves(nginx.port, &new_fp).await;
    assert_eq!(fp_of_file(&set.join("cert.pem")), new_fp);
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &new_fp, "--json"])
            .await,
    )
    .expect("history --json");
    assert_eq!(h.deployments.len(), 2, "{h:#?}");
    assert_eq!(h.deployments[0].report.state, "rolled_back");
    assert_eq!(
        h.deployments[0]
            .report
            .failure
            .as_ref()
            .map(|f| f.code.as_str()),
        Some("TETHER-E8504")
    );

    // 3. A name the task does not allow never reaches the CA: refused at
    // creation with the spec's code.
    let bad = deploy_args(
        &agent_id.to_string(),
        &["bad name"],
        &[("cert", p("cert.pem")), ("key", p("key.pem"))],
        "true",
        &verify,
        &[],
    );
    let bad = server
        .admin(&bad.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(!bad.status.success());
    assert!(text(&bad).contains("TETHER-E8501"), "{}", text(&bad));
    agent.terminate().await;
}

/// A real kill -9 of the agent while its deploy's reload runs: the
/// restarted agent waits for the orphaned reload, rolls the set back and
/// reloads; the old certificate is served again and the set is whole.
async fn agent_killed_during_the_reload_recovers_at_restart(backend: Backend) {
    let media = tether_testlab::Scratch::new("e2e-offline-media");
    let root_key = media.path().join("root.pem");
    let server = server_with_ca(backend, &[], Some(&root_key)).await;
    let (mut agent, agent_id) = provisioning_agent(&server).await;

    // A slow reload (2 s), then the real one: the agent is killed while it
    // runs, and it outlives the agent.
    let site = PemSite::start("e2e-deploy-kill", &["web.test"], "sleep 2\n").await;
    let (set, nginx) = (&site.set, &site.nginx);
    let old_fp = fp_of_file(&set.join("cert.pem"));
    let p = |n: &str| set.join(n).display().to_string();
    let verify = format!("127.0.0.1:{}", nginx.port);
    let args = deploy_args(
        &agent_id.to_string(),
        &["web.test"],
        &[
            ("cert", p("cert.pem")),
            ("key", p("key.pem")),
            ("fullchain", p("fullchain.pem")),
        ],
        &site.reload(),
        &verify,
        &["--max-attempts", "1"],
    );
    deploy_ok(&server, &args).await;
    // Wait (bounded) for the journal to say the files are replaced, then
    // kill the agent: the reload is running.
    let journals = agent.state.path().join("deploy");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = std::fs::read_dir(&journals)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .any(|e| {
                std::fs::read_to_string(e.path().join("journal.json"))
                    .is_ok_and(|j| j.contains("\"committed\""))
            });
        if committed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no committed journal: {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        fp_of_file(&set.join("cert.pem")),
        old_fp,
        "the new set is written"
    );
    agent.kill().await;
    agent.run(&[]);
    // The restarted agent recovers: no journal left, the old set on disk
    // and served.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = std::fs::read_dir(&journals)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|e| e.path().is_dir());
        if !left && served(nginx.port).await.as_deref() == Some(old_fp.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: journal left {left}, served {:?}: {}",
            served(nginx.port).await,
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fp_of_file(&set.join("cert.pem")), old_fp);
    assert_eq!(
        std::fs::read_to_string(set.join("key.pem")).expect("key"),
        site.old_key
    );
    assert!(
        agent
            .stderr()
            .contains("finished a deploy interrupted by a restart"),
        "{}",
        agent.stderr()
    );
    agent.terminate().await;
}

/// `tether certs deploy --kind pkcs12`: the agent writes a PKCS#12 with
/// the password from a secret reference on its host, the reload restarts
/// an `openssl s_server` from it, the deploy is verified on the wire, and
/// keytool finds the alias and the served certificate. The password is in
/// no task, result or log; hostile flags are refused at creation, and a
/// reference that does not resolve on the agent's host fails with its
/// code and writes nothing.
async fn deploy_to_a_pkcs12_keystore_from_the_cli(backend: Backend) {
    let server = server_with_ca(backend, &[], None).await;
    let (mut agent, agent_id) = provisioning_agent(&server).await;

    let site = tether_testlab::Scratch::new("e2e-deploy-p12");
    let password = "e2e keystore pass phrase";
    let pass_file = site.path().join("store.pass");
    std::fs::write(&pass_file, format!("{password}\n")).expect("w");
    let ks = site.path().join("app.p12");
    let s_server =
        tether_testlab::keystore_server::KeystoreServer::new(site.path(), &ks, &pass_file);
    let agent_id = agent_id.to_string();
    let ks_text = ks.display().to_string();
    let pass_ref = format!("file:{}", pass_file.display());
    let reload = s_server.reload_command().join(" ");
    let verify = format!("127.0.0.1:{}", s_server.port);
    let deploy = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "certs",
            "deploy",
            "--agent",
            &agent_id,
            "--name",
            "app.test",
            "--name",
            "127.0.0.1",
            "--kind",
            "pkcs12",
            "--path",
            &ks_text,
            "--alias",
            "app",
            "--reload",
            &reload,
            "--max-attempts",
            "1",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let args = deploy(&[
        "--password-ref",
        &pass_ref,
        "--verify",
        &verify,
        "--sni",
        "app.test",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out: Value = serde_json::from_str(&server.admin_ok(&args).await).expect("deploy --json");
    let id = out["id"].as_str().expect("task id").to_owned();
    let d = wait_task(&server, &id, Duration::from_secs(60)).await;
    assert_eq!(
        d.task.state,
        TaskState::Succeeded,
        "{d:#?}\n{}",
        agent.stderr()
    );
    let report = &d.results[0]["report"];
    assert_eq!(report["state"], "deployed", "{report:#}");
    assert_eq!(report["path"], ks_text.as_str());
    let new_fp = report["new_fingerprint"].as_str().expect("fp").to_owned();
    assert_eq!(
        served(s_server.port).await.as_deref(),
        Some(new_fp.as_str())
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(steps, ["backup", "write", "reload", "verify"]);
    let list = std::process::Command::new("keytool")
        .args([
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-keystore",
            &ks_text,
            "-storepass:file",
        ])
        .arg(&pass_file)
        .output()
        .expect("keytool");
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("Alias name: app"), "{list}");
    let hex = new_fp.strip_prefix("sha256:").expect("sha256");
    let colons: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect();
    assert!(
        list.contains(&format!("SHA256: {}", colons.join(":"))),
        "{list}"
    );
    for text in [
        serde_json::to_string(&d).expect("json"),
        server.log(),
        agent.stderr(),
    ] {
        assert!(!text.contains(password), "the password leaked");
    }

    // Refused at creation, before any task exists (TETHER-E8501).
    for (extra, want) in [
        (vec!["--password-ref", "hunter2-pasted"], "target.password"),
        (
            vec!["--password-ref", &pass_ref, "--cert", "/etc/c.pem"],
            "--cert",
        ),
        (
            vec!["--password-ref", &pass_ref, "--store-type", "JKS"],
            "--store-type",
        ),
        (
            vec!["--password-ref", &pass_ref, "--alias", "a b"],
            "target.alias",
        ),
        (
            vec!["--password-ref", &pass_ref, "--mode", "0644"],
            "target.mode",
        ),
    ] {
        let mut args = deploy(&extra);
        // A second --alias replaces the first for the alias case.
        if extra.contains(&"--alias") {
            let at = args.iter().position(|a| a == "--alias").expect("alias");
            args.drain(at..at + 2);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let bad = server.admin(&args).await;
        assert!(!bad.status.success(), "{extra:?}");
        let t = text(&bad);
        assert!(
            t.contains("TETHER-E8501") && t.contains(want),
            "{extra:?}: {t}"
        );
        assert!(!t.contains("hunter2"), "{t}");
    }
    // A Java keystore type that is neither PKCS12 nor JKS.
    let jceks: Vec<String> = deploy(&["--password-ref", &pass_ref])
        .into_iter()
        .map(|a| {
            if a == "pkcs12" {
                "java-keystore".to_owned()
            } else {
                a
            }
        })
        .chain(["--store-type".to_owned(), "JCEKS".to_owned()])
        .collect();
    let jceks: Vec<&str> = jceks.iter().map(String::as_str).collect();
    let bad = server.admin(&jceks).await;
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("TETHER-E8501") && text(&bad).contains("\"PKCS12\" or \"JKS\""),
        "{}",
        text(&bad)
    );

    // A reference the agent's host cannot resolve: the task fails with
    // its code, the keystore is untouched and still served.
    let before = std::fs::read(&ks).expect("ks");
    let args = deploy(&["--password-ref", "env:TETHER_E2E_UNSET_STORE_PASS"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out: Value = serde_json::from_str(&server.admin_ok(&args).await).expect("deploy --json");
    let d = wait_task(
        &server,
        out["id"].as_str().expect("id"),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(d.task.state, TaskState::Dead, "{d:#?}");
    let why = format!("{:?} {:?}", d.task.outcome, d.task.last_error);
    assert!(why.contains("TETHER-E8510"), "{why}");
    assert_eq!(std::fs::read(&ks).expect("ks"), before);
    agent.terminate().await;
    drop(s_server);
}

crate::both_backends!(
    deploy_from_the_built_in_ca_to_a_real_nginx,
    agent_killed_during_the_reload_recovers_at_restart,
    deploy_to_a_pkcs12_keystore_from_the_cli
);
