//! Remote targets over SSH, against real components: OpenSSH's sshd and an
//! nginx, both inside a network namespace of the test's own, and a lab
//! account that logs in with a key or a password and may be allowed
//! `sudo -n`. The agent (this process) reaches them through the veth, and
//! verifies by a TLS handshake to the namespace's address.
//!
//! One lab serves every case in turn (a namespace, sshd and nginx start
//! once): refusals that must change nothing remotely (an unknown host key,
//! a wrong key, sudo refused), deploys by key, by password and through
//! sudo, a reload that fails, and crashes at step boundaries recovered by
//! a new `Deployer` that reconnects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_deploy::spec::{PemTarget, ReloadSpec, SecretRef, SshSpec, Target, VerifySpec};
use tether_deploy::{DeploySpec, Deployer, Material, Report};
use tether_testlab::netns::Netns;
use tether_testlab::nginx::{Nginx, Site};
use tether_testlab::sshd::{KeyPair, LabUser, Sshd};

mod support;

use support::{Files, OnDisk, code, fp_of, issued, old_set};

const NAMES: [&str; 2] = ["web.test", "127.0.0.1"];

struct Lab {
    // Dropped in this order: nginx and sshd before the namespace and the
    // account they run in.
    nginx: Nginx,
    sshd: Sshd,
    user: LabUser,
    ns: Netns,
    /// A small file system for the full-disk case; mounted before sshd
    /// starts, since `ip netns exec` gives sshd a copy of the mounts of
    /// that moment.
    full_fs: tether_testlab::tmpfs::Tmpfs,
    base: tempfile::TempDir,
    state: PathBuf,
    set: PathBuf,
    old: Files,
    material: Material,
    new: Files,
    old_fp: String,
    new_fp: String,
    client: KeyPair,
    stranger: KeyPair,
    script: PathBuf,
    reload_log: PathBuf,
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.set.join(name)
    }

    fn ssh(&self) -> SshSpec {
        SshSpec {
            host: self.ns.ns_ip.to_string(),
            port: None,
            user: self.user.name.clone(),
            key: Some(SecretRef(format!("file:{}", self.client.private.display()))),
            passphrase: None,
            password: None,
            host_key: self.sshd.host_key.fingerprint.clone(),
            sudo: false,
            timeout_secs: Some(5),
        }
    }

    fn spec(&self, ssh: SshSpec, reload: Vec<String>, verify_secs: u64) -> DeploySpec {
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
                address: self.ns.ns_ip.into(),
                port: self.nginx.port,
                sni: Some("web.test".into()),
                timeout_secs: Some(verify_secs),
            }),
            issuer: None,
            challenge: None,
            ssh: Some(ssh),
        }
    }

    /// The checking reload: refuses (and logs MIXED) unless the set on
    /// disk is whole, then reloads nginx for real.
    fn checked_reload(&self) -> Vec<String> {
        vec!["/bin/sh".into(), self.script.display().to_string()]
    }

    fn reload_log(&self) -> String {
        std::fs::read_to_string(&self.reload_log).unwrap_or_default()
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

    /// What is in the set's directory besides the set: nothing, before
    /// the first deploy that got in.
    fn remote_leftovers(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.set)
            .expect("set dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !["cert.pem", "key.pem", "chain.pem", "fullchain.pem"].contains(&n.as_str())
            })
            .collect();
        if let Ok(d) = std::fs::read_dir(self.set.join(".tether-deploy")) {
            v.extend(
                d.filter_map(|e| e.ok())
                    .map(|e| format!(".tether-deploy/{}", e.file_name().to_string_lossy())),
            );
        }
        v.sort();
        v
    }

    async fn served(&self) -> Option<String> {
        let ep = tether_scan::Endpoint {
            ip: self.ns.ns_ip.into(),
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

    /// `fp` served on `runs` probes in a row (old workers may answer for a
    /// moment after a graceful reload), bounded.
    async fn served_steadily(&self, fp: &str, runs: u32) -> bool {
        let mut in_a_row = 0;
        for _ in 0..60 {
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

    fn write_set(&self, f: &Files) {
        for (n, text, mode) in [
            ("cert.pem", &f.cert, 0o644),
            ("key.pem", &f.key, 0o600),
            ("chain.pem", &f.chain, 0o644),
            ("fullchain.pem", &f.full, 0o644),
        ] {
            let _ = std::fs::remove_file(self.path(n));
            std::fs::write(self.path(n), text).expect("write");
            chmod(&self.path(n), mode);
        }
        self.user.chown(&self.set);
    }

    /// Back to the old set, served, waited for.
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
        assert!(
            self.served_steadily(&self.old_fp, 3).await,
            "old served after reset"
        );
        let _ = std::fs::remove_file(&self.reload_log);
    }

    /// After a deploy, a failure or a recovery: one whole set on disk,
    /// that set served, no journal left here, no backup left there, and
    /// no reload ever saw a mixed set.
    async fn assert_whole_and_served(&self, case: &str) -> OnDisk {
        let disk = self.on_disk();
        let fp = match disk {
            OnDisk::Old => &self.old_fp,
            OnDisk::New => &self.new_fp,
            OnDisk::Mixed(ref m) => panic!("{case}: mixed set: {m}"),
        };
        assert!(
            self.served_steadily(fp, 3).await,
            "{case}: nginx does not serve the set on disk ({disk:?}): it serves {:?}",
            self.served().await
        );
        let log = self.reload_log();
        assert!(
            !log.contains("MIXED"),
            "{case}: a reload saw a mixed set: {log}"
        );
        let journals: Vec<_> = std::fs::read_dir(self.state.join("deploy"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        assert!(journals.is_empty(), "{case}: journals left: {journals:?}");
        let left: Vec<String> = self
            .remote_leftovers()
            .into_iter()
            .filter(|n| n != ".tether-deploy" && n != ".tether-deploy/reload.lock")
            .collect();
        assert!(left.is_empty(), "{case}: left on the remote host: {left:?}");
        disk
    }
}

async fn lab() -> Lab {
    let base = tempfile::tempdir().expect("tmp");
    // The lab account walks into it (its set, the reload script).
    chmod(base.path(), 0o755);
    let set = base.path().join("set");
    let state = base.path().join("state");
    let agent = base.path().join("agent");
    let logs = base.path().join("logs");
    for d in [&set, &state, &agent, &logs] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    chmod(&agent, 0o700);
    let user = LabUser::new(base.path());
    user.chown(&logs);
    let client = KeyPair::generate(&agent.join("id_ed25519"), "");
    let stranger = KeyPair::generate(&agent.join("stranger"), "");
    std::fs::write(agent.join("password"), format!("{}\n", user.password)).expect("password");

    let old = old_set(&NAMES);
    let (material, new) = issued(base.path(), &NAMES);

    let full_fs = tether_testlab::tmpfs::Tmpfs::mount(&base.path().join("full"), "64k");
    let ns = Netns::new();
    let sshd = Sshd::start(&ns, &[&client.public]).await;
    // The old set, before nginx reads it.
    for (n, text) in [
        ("cert.pem", &old.cert),
        ("key.pem", &old.key),
        ("chain.pem", &old.chain),
        ("fullchain.pem", &old.full),
    ] {
        std::fs::write(set.join(n), text).expect("write");
    }
    chmod(&set.join("key.pem"), 0o600);
    user.chown(&set);
    // nginx runs as the lab account, so the account's reload can signal it.
    let nginx = Nginx::start(&Site {
        tls: Some((set.join("fullchain.pem"), set.join("key.pem"))),
        master_process: true,
        netns: Some((ns.name.clone(), ns.ns_ip)),
        run_as: Some((user.uid, user.gid)),
        ..Site::default()
    })
    .await;
    let reload_log = logs.join("reloads.log");
    let script = base.path().join("reload.sh");
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
    chmod(&script, 0o755);
    let lab = Lab {
        nginx,
        sshd,
        user,
        ns,
        full_fs,
        state,
        set,
        old_fp: fp_of(&old.cert),
        new_fp: fp_of(&new.cert),
        old,
        material,
        new,
        client,
        stranger,
        script,
        reload_log,
        base,
    };
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(
        lab.served_steadily(&lab.old_fp, 1).await,
        "nginx in the namespace serves the old set: {:?}",
        lab.served().await
    );
    lab
}

async fn deploy(lab: &Lab, spec: &DeploySpec) -> Report {
    Deployer::new(&lab.state)
        .deploy(spec, &lab.material)
        .await
        .expect("no crash hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_targets_over_ssh_deploy_refuse_and_roll_back() {
    let lab = lab().await;
    let _keep = lab.base.path();

    // An unknown host key: refused before authenticating or writing.
    let other_host = KeyPair::generate(&lab.state.join("other_host"), "");
    let mut ssh = lab.ssh();
    ssh.host_key = other_host.fingerprint.clone();
    let r = deploy(&lab, &lab.spec(ssh, lab.checked_reload(), 5)).await;
    assert_eq!(code(&r), "TETHER-E8521", "{r:#?}");
    let msg = &r.failure.as_ref().expect("failure").message;
    assert!(
        msg.contains(&lab.sshd.host_key.fingerprint) && msg.contains(&other_host.fingerprint),
        "{msg}"
    );
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(
        lab.remote_leftovers().is_empty(),
        "{:?}",
        lab.remote_leftovers()
    );
    assert!(!lab.sshd.log().contains("Accepted"), "{}", lab.sshd.log());

    // A key the host does not know: an authentication failure.
    let mut ssh = lab.ssh();
    ssh.key = Some(SecretRef(format!(
        "file:{}",
        lab.stranger.private.display()
    )));
    let r = deploy(&lab, &lab.spec(ssh, lab.checked_reload(), 5)).await;
    assert_eq!(code(&r), "TETHER-E8522", "{r:#?}");
    assert_eq!(r.state, "rolled_back");
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(
        lab.remote_leftovers().is_empty(),
        "{:?}",
        lab.remote_leftovers()
    );
    assert!(lab.reload_log().is_empty(), "no reload ran");
    assert_eq!(lab.served().await.as_deref(), Some(lab.old_fp.as_str()));

    // sudo asked for and refused (no sudoers rule): nothing changed.
    lab.user.allow_sudo(false);
    let mut ssh = lab.ssh();
    ssh.sudo = true;
    let r = deploy(&lab, &lab.spec(ssh, lab.checked_reload(), 5)).await;
    assert_eq!(code(&r), "TETHER-E8524", "{r:#?}");
    assert_eq!(lab.on_disk(), OnDisk::Old);
    assert!(
        lab.remote_leftovers().is_empty(),
        "{:?}",
        lab.remote_leftovers()
    );

    // A missing key file: the credential, before any connection.
    let mut ssh = lab.ssh();
    ssh.key = Some(SecretRef("file:/nonexistent/tether/key".into()));
    let r = deploy(&lab, &lab.spec(ssh, lab.checked_reload(), 5)).await;
    assert_eq!(code(&r), "TETHER-E8523", "{r:#?}");

    // Key authentication: deployed, verified on the namespace's address.
    let r = deploy(&lab, &lab.spec(lab.ssh(), lab.checked_reload(), 10)).await;
    assert!(r.is_deployed(), "{r:#?}");
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["connect", "backup", "write", "reload", "verify"],
        "{r:#?}"
    );
    assert_eq!(r.old_fingerprint.as_deref(), Some(lab.old_fp.as_str()));
    assert_eq!(lab.assert_whole_and_served("key auth").await, OnDisk::New);
    assert_eq!(lab.reload_log().trim(), "whole");
    let meta = std::fs::metadata(lab.path("key.pem")).expect("key");
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), lab.user.uid, "the file keeps its owner");
    }
    let json = serde_json::to_string(&r).expect("json");
    assert!(!json.contains("PRIVATE KEY"), "{json}");
    lab.reset().await;

    // Password authentication, the host key pinned as its public key line.
    let mut ssh = lab.ssh();
    ssh.key = None;
    ssh.password = Some(SecretRef(format!(
        "file:{}",
        lab.base.path().join("agent/password").display()
    )));
    ssh.host_key = lab.sshd.host_key.public.clone();
    let r = deploy(&lab, &lab.spec(ssh, lab.checked_reload(), 10)).await;
    assert!(r.is_deployed(), "{r:#?}");
    assert!(
        r.steps[0].detail.contains("password authentication"),
        "{:?}",
        r.steps[0]
    );
    assert_eq!(lab.assert_whole_and_served("password").await, OnDisk::New);
    lab.reset().await;

    // A reload that fails on a broken config: rolled back remotely, old
    // served, nginx's own words kept.
    let conf = lab.nginx.config_path();
    let good = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, format!("{good}\nthis is not nginx;\n")).expect("break");
    let r = deploy(&lab, &lab.spec(lab.ssh(), lab.nginx.reload_command(), 5)).await;
    std::fs::write(&conf, &good).expect("repair");
    assert_eq!(r.state, "rolled_back", "{r:#?}");
    assert_eq!(code(&r), "TETHER-E8503", "{r:#?}");
    let reload = r.steps.iter().find(|s| s.name == "reload").expect("reload");
    assert!(!reload.ok && reload.detail.contains("this"), "{reload:?}");
    assert!(
        r.steps.iter().any(|s| s.name == "rollback.verify" && s.ok),
        "{r:#?}"
    );
    assert_eq!(
        lab.assert_whole_and_served("broken config").await,
        OnDisk::Old
    );
    lab.reset().await;

    // sudo: the files given to root (which only root can do), the key
    // readable by nginx's group.
    lab.user.allow_sudo(true);
    let mut ssh = lab.ssh();
    ssh.sudo = true;
    let mut spec = lab.spec(ssh, lab.checked_reload(), 10);
    if let Target::Pem(p) = &mut spec.target {
        p.owner = Some("root".into());
        p.group = Some(lab.user.name.clone());
        p.key_mode = Some("0640".into());
    }
    let r = deploy(&lab, &spec).await;
    assert!(r.is_deployed(), "{r:#?}");
    assert!(r.steps[0].detail.contains("sudo -n"), "{:?}", r.steps[0]);
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(lab.path("key.pem")).expect("key");
        assert_eq!((meta.uid(), meta.gid()), (0, lab.user.gid));
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    }
    assert_eq!(lab.assert_whole_and_served("sudo").await, OnDisk::New);
    lab.user.allow_sudo(false);
    lab.reset().await;

    // A full disk on the remote host: E8525, the files there untouched,
    // no temporary or backup left, the old certificate still served.
    {
        let dir = lab.full_fs.path();
        for (n, text) in [("cert.pem", &lab.old.cert), ("key.pem", &lab.old.key)] {
            std::fs::write(dir.join(n), text).expect("write");
        }
        lab.user.chown(dir);
        // Fill what is left.
        let filler = vec![b'x'; 4096];
        let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
        while std::io::Write::write_all(&mut f, &filler).is_ok() {}
        drop(f);
        let mut spec = lab.spec(lab.ssh(), vec!["true".into()], 2);
        spec.target = Target::Pem(PemTarget {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            chain: None,
            fullchain: None,
            owner: None,
            group: None,
            mode: None,
            key_mode: None,
        });
        let r = deploy(&lab, &spec).await;
        assert_eq!(code(&r), "TETHER-E8525", "{r:#?}");
        assert_eq!(r.state, "rolled_back", "{r:#?}");
        assert!(
            r.failure
                .as_ref()
                .expect("failure")
                .message
                .contains("No space left"),
            "{r:#?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cert.pem")).ok(),
            Some(lab.old.cert.clone())
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("key.pem")).ok(),
            Some(lab.old.key.clone())
        );
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if let Ok(d) = std::fs::read_dir(dir.join(".tether-deploy")) {
            left.extend(
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        left.sort();
        assert_eq!(
            left,
            [".tether-deploy", "cert.pem", "filler", "key.pem"],
            "no temporary and no backup left"
        );
        assert_eq!(lab.served().await.as_deref(), Some(lab.old_fp.as_str()));
    }

    // Crashes at step boundaries: a new Deployer reconnects and finishes
    // or rolls back, remotely.
    let mut cases = 0;
    for (point, reload, verify, expected) in [
        ("backup.key", lab.checked_reload(), 10, OnDisk::Old),
        ("journal.committing", lab.checked_reload(), 10, OnDisk::Old),
        ("install.key", lab.checked_reload(), 10, OnDisk::Old),
        ("journal.committed", lab.checked_reload(), 10, OnDisk::Old),
        ("reload", lab.checked_reload(), 10, OnDisk::Old),
        ("journal.verified", lab.checked_reload(), 10, OnDisk::New),
        // The rollback path: a reload that reloads nothing.
        ("restore.cert", vec!["true".to_owned()], 1, OnDisk::Old),
        ("rollback.reload", vec!["true".to_owned()], 1, OnDisk::Old),
    ] {
        let crashed = Deployer::new(&lab.state)
            .with_crash_hook(Arc::new(move |p: &str| p == point))
            .deploy(&lab.spec(lab.ssh(), reload, verify), &lab.material)
            .await;
        assert_eq!(
            crashed.err().map(|c| c.0),
            Some(point.to_owned()),
            "{point}"
        );
        let recovered = Deployer::new(&lab.state).recover().await.expect("no crash");
        assert_eq!(recovered.len(), 1, "{point}: {recovered:#?}");
        assert!(recovered[0].recovered);
        let disk = lab
            .assert_whole_and_served(&format!("crash at {point}"))
            .await;
        assert_eq!(disk, expected, "{point}: {recovered:#?}");
        cases += 1;
        lab.reset().await;
    }
    assert_eq!(cases, 8);
}
