//! The deploy transaction against a real nginx, reloaded for real: the key
//! and CSR made here, the certificate signed by the built-in CA, the PEM set
//! written and verified on the wire; faults (a broken config, a reload that
//! reloads nothing, a crash at every step boundary and between file writes,
//! real kill -9 of a deploying process) each end with one whole set on disk
//! and that set served.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_deploy::spec::{PemTarget, ReloadSpec, Target, VerifySpec};
use tether_deploy::{DeploySpec, Deployer, Material, keygen};
use tether_testlab::nginx::{Nginx, Site};

mod support;

use support::{Files, OnDisk, code, fp_of, issued, old_set};

const NAMES: [&str; 2] = ["web.test", "127.0.0.1"];

struct Lab {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    set: PathBuf,
    nginx: Nginx,
    old: Files,
    new: Files,
    material: Material,
    old_fp: String,
    new_fp: String,
    script: PathBuf,
    reload_log: PathBuf,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.set.join(name)
    }

    fn write_set(&self, f: &Files) {
        std::fs::write(self.path("cert.pem"), &f.cert).expect("w");
        std::fs::write(self.path("key.pem"), &f.key).expect("w");
        std::fs::write(self.path("chain.pem"), &f.chain).expect("w");
        std::fs::write(self.path("fullchain.pem"), &f.full).expect("w");
    }

    fn on_disk(&self) -> OnDisk {
        let read =
            |n: &str| std::fs::read_to_string(self.path(n)).unwrap_or_else(|_| "<missing>".into());
        let now = Files {
            cert: read("cert.pem"),
            key: read("key.pem"),
            chain: read("chain.pem"),
            full: read("fullchain.pem"),
        };
        if now == self.old {
            OnDisk::Old
        } else if now == self.new {
            OnDisk::New
        } else {
            OnDisk::Mixed(format!(
                "cert {} key {} chain {} full {}",
                now.cert == self.new.cert,
                now.key == self.new.key,
                now.chain == self.new.chain,
                now.full == self.new.full
            ))
        }
    }

    fn spec(&self, reload: Vec<String>, verify_secs: u64) -> DeploySpec {
        DeploySpec {
            names: NAMES.iter().map(|s| s.to_string()).collect(),
            days: Some(30),
            target: Target::Pem(PemTarget {
                cert: self.path("cert.pem"),
                key: self.path("key.pem"),
                chain: Some(self.path("chain.pem")),
                fullchain: Some(self.path("fullchain.pem")),
                owner: None,
                group: None,
                mode: Some("0644".into()),
                key_mode: Some("0600".into()),
            }),
            reload: ReloadSpec {
                command: reload,
                timeout_secs: Some(10),
            },
            verify: Some(VerifySpec {
                address: "127.0.0.1".parse().expect("ip"),
                port: self.nginx.port,
                sni: Some("web.test".into()),
                timeout_secs: Some(verify_secs),
            }),
            issuer: None,
            challenge: None,
            ssh: None,
        }
    }

    /// The checking reload: refuses (and logs MIXED) unless the set on disk
    /// is whole, then reloads nginx for real.
    fn checked_reload(&self) -> Vec<String> {
        vec!["/bin/sh".into(), self.script.display().to_string()]
    }

    fn reload_log(&self) -> String {
        std::fs::read_to_string(&self.reload_log).unwrap_or_default()
    }

    async fn served(&self) -> Option<String> {
        let ep = tether_scan::Endpoint {
            ip: "127.0.0.1".parse().expect("ip"),
            port: self.nginx.port,
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

    /// Waits (bounded) until nginx serves `fp`.
    /// `fp` served on `runs` probes in a row, within the same bound as
    /// [`Self::wait_served`].
    async fn served_steadily(&self, fp: &str, runs: u32) -> bool {
        let mut in_a_row = 0;
        for _ in 0..50 {
            if self.served().await.as_deref() == Some(fp) {
                in_a_row += 1;
                if in_a_row == runs {
                    return true;
                }
            } else {
                in_a_row = 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn wait_served(&self, fp: &str) -> bool {
        for _ in 0..50 {
            if self.served().await.as_deref() == Some(fp) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Back to the old set, served. `nginx -s reload` only signals the
    /// master: the reload is waited for (its new worker starts) before the
    /// next case writes files, or a late reload would read them.
    async fn reset(&self) {
        self.write_set(&self.old);
        let workers = || {
            self.nginx
                .error_log()
                .matches("start worker process")
                .count()
        };
        let before = workers();
        let cmd = self.nginx.reload_command();
        let st = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .status()
            .expect("reload");
        assert!(st.success());
        for _ in 0..100 {
            if workers() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(workers() > before, "nginx did not reload within 5 s");
        // A worker of the reload before may still answer with the new
        // certificate for a moment: the next case starts only once the old
        // one is served steadily (seen once under a full suite's load).
        assert!(
            self.served_steadily(&self.old_fp, 5).await,
            "old served after reset"
        );
        let _ = std::fs::remove_file(&self.reload_log);
    }

    /// After a crash and a recovery: one whole set on disk, that set
    /// served, no journal left, and no reload ever saw a mixed set.
    async fn assert_whole_and_served(&self, case: &str) -> OnDisk {
        let disk = self.on_disk();
        let fp = match disk {
            OnDisk::Old => &self.old_fp,
            OnDisk::New => &self.new_fp,
            OnDisk::Mixed(ref m) => panic!("{case}: mixed set after recovery: {m}"),
        };
        assert!(
            self.wait_served(fp).await,
            "{case}: nginx does not serve the set on disk ({disk:?}): it serves {:?} (old {}, new {}); nginx log: {}",
            self.served().await,
            self.old_fp,
            self.new_fp,
            self.nginx
                .error_log()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let log = self.reload_log();
        assert!(
            !log.contains("MIXED"),
            "{case}: a reload saw a mixed set: {log}"
        );
        let left: Vec<_> = std::fs::read_dir(self.state.join("deploy"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{case}: journals left: {left:?}");
        disk
    }
}

async fn lab() -> Lab {
    let tmp = tempfile::tempdir().expect("tmp");
    let set = tmp.path().join("etc/ssl/web");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&set).expect("mkdir");
    // The old set: another CA's certificate, as if installed by hand.
    let old = old_set(&NAMES);
    let (material, new) = issued(tmp.path(), &NAMES);
    let full_path = set.join("fullchain.pem");
    let key_path = set.join("key.pem");
    let probe_lab = |nginx: Nginx, script: PathBuf, reload_log: PathBuf| Lab {
        _tmp: tmp,
        state: state.clone(),
        set: set.clone(),
        nginx,
        old: old.clone(),
        new: new.clone(),
        material,
        old_fp: fp_of(&old.cert),
        new_fp: fp_of(&new.cert),
        script,
        reload_log,
    };
    // Written before nginx starts: it reads the set at start.
    std::fs::write(set.join("cert.pem"), &old.cert).expect("w");
    std::fs::write(&key_path, &old.key).expect("w");
    std::fs::write(set.join("chain.pem"), &old.chain).expect("w");
    std::fs::write(&full_path, &old.full).expect("w");
    let nginx = Nginx::start(&Site {
        tls: Some((full_path, key_path)),
        master_process: true,
        ..Site::default()
    })
    .await;
    let reload_log = set.parent().expect("p").join("reloads.log");
    let script = set.parent().expect("p").join("reload.sh");
    let d = set.display();
    let cmd: Vec<String> = nginx
        .reload_command()
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    std::fs::write(
        &script,
        format!(
            "c=$(openssl x509 -in {d}/cert.pem -noout -pubkey)\n\
             k=$(openssl pkey -in {d}/key.pem -pubout)\n\
             if [ \"$c\" != \"$k\" ] || [ \"$(cat {d}/cert.pem {d}/chain.pem)\" != \"$(cat {d}/fullchain.pem)\" ]; then\n\
               echo MIXED >> {log}; exit 3\n\
             fi\n\
             echo whole >> {log}\n\
             exec {cmd}\n",
            log = reload_log.display(),
            cmd = cmd.join(" ")
        ),
    )
    .expect("script");
    let lab = probe_lab(nginx, script, reload_log);
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(
        lab.wait_served(&lab.old_fp).await,
        "nginx serves the old set"
    );
    lab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_reloads_nginx_and_verifies_the_new_certificate() {
    let lab = lab().await;
    let d = Deployer::new(&lab.state);
    let r = d
        .deploy(&lab.spec(lab.checked_reload(), 10), &lab.material)
        .await
        .expect("no crash hook");
    assert!(r.is_deployed(), "{r:#?}");
    assert_eq!(r.new_fingerprint, lab.new_fp);
    assert_eq!(r.old_fingerprint.as_deref(), Some(lab.old_fp.as_str()));
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["backup", "write", "reload", "verify"], "{r:#?}");
    assert!(r.steps.iter().all(|s| s.ok));
    assert_eq!(lab.assert_whole_and_served("deploy").await, OnDisk::New);
    // nginx's old workers may still take a new connection for a moment
    // after a graceful reload (seen once in CI: new, then old), so the
    // steady state is five probes in a row on the new certificate.
    assert!(
        lab.served_steadily(&lab.new_fp, 5).await,
        "nginx does not settle on the new certificate: {:?}",
        lab.served().await
    );
    let mode = |n: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(lab.path(n)).expect("m").permissions(),
        ) & 0o777
    };
    assert_eq!(mode("key.pem"), 0o600);
    assert_eq!(mode("cert.pem"), 0o644);
    assert_eq!(lab.reload_log().trim(), "whole");
    // The report that leaves the host holds no private key.
    let json = serde_json::to_string(&r).expect("json");
    assert!(!json.contains("PRIVATE KEY"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_on_a_broken_config_rolls_back_and_the_old_cert_is_served() {
    let lab = lab().await;
    let conf = lab.nginx.config_path();
    let good = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, format!("{good}\nthis is not nginx;\n")).expect("break");
    let r = Deployer::new(&lab.state)
        .deploy(&lab.spec(lab.nginx.reload_command(), 5), &lab.material)
        .await
        .expect("no crash");
    assert_eq!(r.state, "rolled_back", "{r:#?}");
    assert_eq!(code(&r), "TETHER-E8503", "{r:#?}");
    let reload = r
        .steps
        .iter()
        .find(|s| s.name == "reload")
        .expect("reload step");
    assert!(
        !reload.ok && reload.detail.contains("this"),
        "nginx's own words are kept: {reload:?}"
    );
    assert!(
        r.steps.iter().any(|s| s.name == "rollback.verify" && s.ok),
        "{r:#?}"
    );
    assert_eq!(
        lab.assert_whole_and_served("broken config").await,
        OnDisk::Old
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_reloads_nothing_is_a_verify_mismatch_and_rolls_back() {
    let lab = lab().await;
    let r = Deployer::new(&lab.state)
        .deploy(&lab.spec(vec!["true".into()], 2), &lab.material)
        .await
        .expect("no crash");
    assert_eq!(r.state, "rolled_back", "{r:#?}");
    assert_eq!(code(&r), "TETHER-E8504", "{r:#?}");
    let msg = &r.failure.as_ref().expect("failure").message;
    assert!(
        msg.contains(&lab.old_fp) && msg.contains(&lab.new_fp),
        "{msg}"
    );
    assert_eq!(lab.assert_whole_and_served("mismatch").await, OnDisk::Old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_hangs_is_killed_at_its_timeout_and_rolled_back() {
    let lab = lab().await;
    let mut spec = lab.spec(vec!["sleep".into(), "30".into()], 2);
    spec.reload.timeout_secs = Some(1);
    let t = tokio::time::Instant::now();
    let r = Deployer::new(&lab.state)
        .deploy(&spec, &lab.material)
        .await
        .expect("no crash");
    assert_eq!(code(&r), "TETHER-E8503", "{r:#?}");
    // Two reloads (deploy and rollback) of at most 1 s each, plus checks.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(lab.assert_whole_and_served("hang").await, OnDisk::Old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_key_writes_nothing() {
    let lab = lab().await;
    let other = keygen::generate(&["web.test".to_owned()]).expect("gen");
    let bad = Material {
        cert_pem: lab.material.cert_pem.clone(),
        chain_pem: lab.material.chain_pem.clone(),
        key_pem: other.key_pem().to_owned(),
    };
    let r = Deployer::new(&lab.state)
        .deploy(&lab.spec(lab.checked_reload(), 2), &bad)
        .await
        .expect("no crash");
    assert_eq!(code(&r), "TETHER-E8509", "{r:#?}");
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(lab.reload_log().is_empty(), "no reload ran");
}

/// The crash points a deploy passes, in order, for this reload command.
async fn points_of(lab: &Lab, reload: Vec<String>, verify_secs: u64) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let d = Deployer::new(&lab.state).with_crash_hook(Arc::new(move |p: &str| {
        s.lock().expect("lock").push(p.to_owned());
        false
    }));
    d.deploy(&lab.spec(reload, verify_secs), &lab.material)
        .await
        .expect("no crash");
    lab.reset().await;
    seen.lock().expect("lock").clone()
}

fn crash_at(point: String) -> tether_deploy::CrashHook {
    Arc::new(move |p: &str| p == point)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_boundary_and_between_file_writes_recovers_to_a_whole_served_set() {
    let lab = lab().await;
    let ok_points = points_of(&lab, lab.checked_reload(), 10).await;
    // A reload that reloads nothing: the path through verify mismatch and
    // the whole rollback.
    let noop = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("{} && true", "true"),
    ];
    let fail_points = points_of(&lab, noop.clone(), 1).await;
    assert!(ok_points.len() >= 15, "{ok_points:?}");
    assert!(
        fail_points.iter().any(|p| p == "restore.fullchain"),
        "{fail_points:?}"
    );
    let mut cases = 0;
    let mut outcomes = std::collections::BTreeMap::new();
    for (reload, verify, points) in [
        (lab.checked_reload(), 10, &ok_points),
        (noop.clone(), 1, &fail_points),
    ] {
        for point in points {
            let case = format!(
                "crash at {point} ({})",
                if verify == 10 { "deploy" } else { "rollback" }
            );
            let crashed = Deployer::new(&lab.state)
                .with_crash_hook(crash_at(point.clone()))
                .deploy(&lab.spec(reload.clone(), verify), &lab.material)
                .await;
            assert_eq!(
                crashed.as_ref().err().map(|c| c.0.as_str()),
                Some(point.as_str()),
                "{case}"
            );
            // The restarted agent: recovery uses the checked reload so a
            // mixed set would be caught.
            let recovered = Deployer::new(&lab.state).recover().await.expect("no crash");
            let disk = lab.assert_whole_and_served(&case).await;
            let expected = match point.as_str() {
                "journal.verified" | "finished" => OnDisk::New,
                _ => OnDisk::Old,
            };
            assert_eq!(disk, expected, "{case}: {recovered:#?}");
            if point != "finished" {
                assert_eq!(recovered.len(), 1, "{case}: {recovered:#?}");
            }
            *outcomes.entry(format!("{disk:?}")).or_insert(0) += 1;
            cases += 1;
            lab.reset().await;
        }
    }
    // Crashes during the recovery itself: a second kill while rolling back
    // still ends whole.
    for second in [
        "rollback.journal",
        "restore.cert",
        "restore.chain",
        "rollback.reload",
    ] {
        let case = format!("crash at install.key, then at {second} while recovering");
        let _ = Deployer::new(&lab.state)
            .with_crash_hook(crash_at("install.key".into()))
            .deploy(&lab.spec(lab.checked_reload(), 10), &lab.material)
            .await
            .expect_err("crashed");
        let again = Deployer::new(&lab.state)
            .with_crash_hook(crash_at(second.into()))
            .recover()
            .await;
        assert!(again.is_err(), "{case}");
        Deployer::new(&lab.state).recover().await.expect("recovers");
        assert_eq!(
            lab.assert_whole_and_served(&case).await,
            OnDisk::Old,
            "{case}"
        );
        cases += 1;
        lab.reset().await;
    }
    eprintln!("{cases} crash cases: {outcomes:?}");
    assert!(cases >= 30, "{cases}");
}

/// Runs one deploy in this process when the parent test asks for it, slowly
/// (a pause at every crash point) so a kill -9 lands inside it.
#[test]
#[ignore = "run by real_kill_9_of_a_deploying_process_recovers, not alone"]
fn child_deploy() {
    let Ok(cfg) = std::env::var("TETHER_DEPLOY_CHILD") else {
        return;
    };
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg).expect("cfg")).expect("json");
    let spec = DeploySpec::from_json(&v["spec"]).expect("spec");
    let material = Material {
        cert_pem: v["cert"].as_str().expect("cert").to_owned(),
        chain_pem: v["chain"].as_str().expect("chain").to_owned(),
        key_pem: v["key"].as_str().expect("key").to_owned(),
    };
    let state = PathBuf::from(v["state"].as_str().expect("state"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let d = Deployer::new(&state).with_crash_hook(Arc::new(|_p: &str| {
            std::thread::sleep(Duration::from_millis(40));
            false
        }));
        let _ = d.deploy(&spec, &material).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kill_9_of_a_deploying_process_recovers() {
    use rand::Rng;
    let lab = lab().await;
    let cfg = lab.state.parent().expect("p").join("child.json");
    let spec = lab.spec(lab.checked_reload(), 10);
    std::fs::write(
        &cfg,
        serde_json::json!({
            "spec": spec,
            "cert": lab.material.cert_pem,
            "chain": lab.material.chain_pem,
            "key": lab.material.key_pem,
            "state": lab.state,
        })
        .to_string(),
    )
    .expect("cfg");
    let exe = std::env::current_exe().expect("exe");
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..8 {
        let delay = rand::rng().random_range(0..900u64);
        let mut child = tokio::process::Command::new(&exe)
            .args(["--exact", "child_deploy", "--ignored", "--nocapture"])
            .env("TETHER_DEPLOY_CHILD", &cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("child");
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // SIGKILL: no destructor, no rollback, no journal update runs.
        let _ = child.start_kill();
        let _ = child.wait().await;
        let journal_left = std::fs::read_dir(lab.state.join("deploy"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0);
        Deployer::new(&lab.state).recover().await.expect("recover");
        let case = format!("kill -9 after {delay} ms (round {round})");
        let disk = lab.assert_whole_and_served(&case).await;
        *seen
            .entry(format!("{disk:?} journal_left={}", journal_left > 0))
            .or_insert(0) += 1;
        lab.reset().await;
    }
    eprintln!("kill -9 rounds: {seen:?}");
}
