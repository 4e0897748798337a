//! PKCS#12 and Java keystore targets through the deploy transaction, read
//! by the real tools: `openssl pkcs12` and `keytool` open the deployed
//! keystore with the password from its secret reference and find the alias
//! and the new certificate; `openssl s_server`, restarted from the keystore
//! by the reload, serves it and the transaction verifies that on the wire.
//! Faults (a secret reference that does not resolve, a keystore under
//! another password, a reload that fails, a crash at every step boundary)
//! each end with the old keystore in place, whole and served.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_deploy::spec::{KeystoreTarget, ReloadSpec, SecretRef, Target, VerifySpec};
use tether_deploy::{DeploySpec, Deployer, Material};
use tether_testlab::keystore_server::KeystoreServer;
use tether_testlab::pki::Ca;

mod support;

use support::{code, fp_of, issued};

const NAMES: [&str; 2] = ["app.test", "127.0.0.1"];
const PASSWORD: &str = "correct horse battery staple";

/// Fields drop in order: the server (its pid file is in `_tmp`) first.
struct Lab {
    server: KeystoreServer,
    _tmp: tempfile::TempDir,
    state: PathBuf,
    keystore: PathBuf,
    pass_file: PathBuf,
    old_bytes: Vec<u8>,
    old_fp: String,
    new_fp: String,
    material: Material,
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the tool starts");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// "sha256:ab01…" as keytool prints it: "AB:01:…".
fn keytool_fp(fp: &str) -> String {
    let hex = fp.strip_prefix("sha256:").expect("sha256 fingerprint");
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).expect("hex").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

impl Lab {
    fn spec(&self, kind: &str, reload: Vec<String>, verify_secs: Option<u64>) -> DeploySpec {
        let k = KeystoreTarget {
            path: self.keystore.clone(),
            password: SecretRef(format!("file:{}", self.pass_file.display())),
            alias: Some("app".into()),
            store_type: match kind {
                "java" => Some("PKCS12".into()),
                "jks" => Some("JKS".into()),
                _ => None,
            },
            owner: None,
            group: None,
            mode: Some("0640".into()),
        };
        let spec = DeploySpec {
            names: NAMES.iter().map(|s| s.to_string()).collect(),
            days: Some(30),
            target: if kind == "java" || kind == "jks" {
                Target::JavaKeystore(k)
            } else {
                Target::Pkcs12(k)
            },
            reload: ReloadSpec {
                command: reload,
                timeout_secs: Some(10),
            },
            verify: verify_secs.map(|s| VerifySpec {
                address: "127.0.0.1".parse().expect("ip"),
                port: self.server.port,
                sni: Some("app.test".into()),
                timeout_secs: Some(s),
            }),
            issuer: None,
            challenge: None,
            ssh: None,
        };
        spec.check().expect("the lab's spec is valid");
        spec
    }

    /// The leaf fingerprint of the keystore on disk, as `openssl pkcs12`
    /// reads it with the password.
    fn fp_on_disk(&self) -> String {
        let (ok, out) = run(Command::new("openssl").args([
            "pkcs12",
            "-in",
            &self.keystore.display().to_string(),
            "-nokeys",
            "-clcerts",
            "-passin",
            &format!("file:{}", self.pass_file.display()),
        ]));
        assert!(ok, "openssl pkcs12 reads the keystore: {out}");
        let cert = pem::parse_many(out.as_bytes())
            .expect("pem")
            .into_iter()
            .find(|p| p.tag() == "CERTIFICATE")
            .expect("a certificate");
        tether_x509::fingerprint(cert.contents())
    }

    async fn served(&self) -> Option<String> {
        let ep = tether_scan::Endpoint {
            ip: "127.0.0.1".parse().expect("ip"),
            port: self.server.port,
            sni: Some("app.test".into()),
            name: None,
            starttls: None,
            reverse_dns: false,
        };
        let o = tether_scan::probe_once(&ep, Duration::from_secs(2), Duration::from_secs(3)).await;
        o.chain()
            .and_then(|c| c.certs.first())
            .map(|c| c.fingerprint.clone())
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

    /// The old keystore back, served.
    async fn reset(&self) {
        tether_fs::write_atomic(&self.keystore, &self.old_bytes, 0o640).expect("reset");
        assert!(
            self.server.reload(),
            "s_server restarts: {}",
            self.server.log()
        );
        assert!(
            self.wait_served(&self.old_fp).await,
            "old served after reset"
        );
    }

    /// After a crash and a recovery: the keystore opens and is the old one
    /// or the new one, that one is served, and no journal is left.
    async fn assert_whole_and_served(&self, case: &str) -> String {
        let fp = self.fp_on_disk();
        assert!(
            fp == self.old_fp || fp == self.new_fp,
            "{case}: keystore holds {fp}"
        );
        assert!(
            self.wait_served(&fp).await,
            "{case}: s_server does not serve the keystore on disk ({fp}); it serves {:?}",
            self.served().await
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
        fp
    }
}

async fn lab() -> Lab {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("etc/app");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let state = tmp.path().join("state");
    let pass_file = dir.join("store.pass");
    std::fs::write(&pass_file, format!("{PASSWORD}\n")).expect("pass");
    // The old keystore: another CA's certificate, exported by OpenSSL 3
    // as an admin would have.
    let old_ca = Ca::root("Old Root");
    let leaf = old_ca.issue(&NAMES);
    std::fs::write(dir.join("old.pem"), leaf.pem()).expect("w");
    std::fs::write(dir.join("old.key"), leaf.key_pem()).expect("w");
    std::fs::write(dir.join("old-ca.pem"), old_ca.pem()).expect("w");
    let keystore = dir.join("keystore.p12");
    let d = |n: &str| dir.join(n).display().to_string();
    let (ok, out) = run(Command::new("openssl").args([
        "pkcs12",
        "-export",
        "-in",
        &d("old.pem"),
        "-inkey",
        &d("old.key"),
        "-certfile",
        &d("old-ca.pem"),
        "-name",
        "app",
        "-passout",
        &format!("file:{}", pass_file.display()),
        "-out",
        &keystore.display().to_string(),
    ]));
    assert!(ok, "openssl pkcs12 -export: {out}");
    let old_bytes = std::fs::read(&keystore).expect("read");
    // The new certificate: key and CSR here, signed by the built-in CA.
    let (material, _) = issued(tmp.path(), &NAMES);
    let server = KeystoreServer::new(tmp.path(), &keystore, &pass_file);
    let lab = Lab {
        old_fp: tether_x509::fingerprint(&pem::parse(leaf.pem()).expect("pem").into_contents()),
        new_fp: fp_of(&material.cert_pem),
        _tmp: tmp,
        state,
        keystore,
        pass_file,
        old_bytes,
        material,
        server,
    };
    assert_eq!(lab.fp_on_disk(), lab.old_fp);
    assert!(lab.server.reload(), "s_server starts: {}", lab.server.log());
    assert!(
        lab.wait_served(&lab.old_fp).await,
        "s_server serves the old keystore"
    );
    lab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs12_deploy_is_read_by_openssl_and_keytool_and_verified_on_the_wire() {
    let lab = lab().await;
    let r = Deployer::new(&lab.state)
        .deploy(
            &lab.spec("pkcs12", lab.server.reload_command(), Some(10)),
            &lab.material,
        )
        .await
        .expect("no crash hook");
    assert!(r.is_deployed(), "{r:#?}");
    assert_eq!(r.old_fingerprint.as_deref(), Some(lab.old_fp.as_str()));
    assert_eq!(r.new_fingerprint, lab.new_fp);
    assert_eq!(r.path, lab.keystore.display().to_string());
    assert!(lab.served().await.as_deref() == Some(lab.new_fp.as_str()));
    // Nothing the transaction reports holds the password.
    assert!(!format!("{r:?}").contains(PASSWORD));

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lab.keystore)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    // OpenSSL 3: the new leaf under the alias, modern encryption and MAC.
    assert_eq!(lab.fp_on_disk(), lab.new_fp);
    let pass = format!("file:{}", lab.pass_file.display());
    let ks = lab.keystore.display().to_string();
    let (ok, info) =
        run(Command::new("openssl")
            .args(["pkcs12", "-info", "-noout", "-in", &ks, "-passin", &pass]));
    assert!(ok, "{info}");
    assert!(info.contains("MAC: sha256"), "{info}");
    assert!(info.contains("PBES2, PBKDF2, AES-256-CBC"), "{info}");
    assert!(!info.contains("RC2") && !info.contains("3DES"), "{info}");
    // The alias is the key bag's friendly name (what keytool lists); the
    // key comes out re-encrypted, never in the clear.
    let (ok, keys) = run(Command::new("openssl").args([
        "pkcs12",
        "-nocerts",
        "-in",
        &ks,
        "-passin",
        &pass,
        "-passout",
        "pass:test-only",
    ]));
    assert!(ok && keys.contains("friendlyName: app"), "{keys}");
    assert!(keys.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{keys}");
    // The whole chain is in it: the leaf and the intermediate.
    let (ok, all) =
        run(Command::new("openssl").args(["pkcs12", "-nokeys", "-in", &ks, "-passin", &pass]));
    assert!(ok && all.matches("BEGIN CERTIFICATE").count() >= 2, "{all}");
    // The wrong password is refused by OpenSSL too.
    let (ok, _) = run(Command::new("openssl").args([
        "pkcs12",
        "-nokeys",
        "-in",
        &ks,
        "-passin",
        "pass:wrong",
    ]));
    assert!(!ok, "a wrong password opens the keystore");

    // keytool reads it as a PKCS12 keystore: the alias, a key entry, the
    // new certificate's fingerprint.
    let (ok, list) = run(Command::new("keytool").args([
        "-list",
        "-v",
        "-keystore",
        &ks,
        "-storetype",
        "PKCS12",
        "-storepass:file",
        &lab.pass_file.display().to_string(),
    ]));
    assert!(ok, "{list}");
    assert!(list.contains("Alias name: app"), "{list}");
    assert!(list.contains("Entry type: PrivateKeyEntry"), "{list}");
    assert!(
        list.contains(&format!("SHA256: {}", keytool_fp(&lab.new_fp))),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_keystore_of_type_pkcs12_without_an_endpoint_is_read_by_keytool() {
    let lab = lab().await;
    // No verify endpoint: the verify step says so, and the keystore is
    // checked by keytool here.
    let r = Deployer::new(&lab.state)
        .deploy(&lab.spec("java", vec!["true".into()], None), &lab.material)
        .await
        .expect("no crash hook");
    assert!(r.is_deployed(), "{r:#?}");
    assert_eq!(r.address, "");
    let v = r
        .steps
        .iter()
        .find(|s| s.name == "verify")
        .expect("verify step");
    assert!(v.ok && v.detail.contains("no endpoint"), "{v:?}");
    let list = keytool_list(&lab, "PKCS12");
    assert!(list.contains("Alias name: app"), "{list}");
    assert!(
        list.contains(&format!("SHA256: {}", keytool_fp(&lab.new_fp))),
        "{list}"
    );
    // An application still configured with keystore type JKS reads it
    // too: Java's JKS keystore loads PKCS12 files (keystore.type.compat,
    // on by default since Java 8u60).
    let (ok, out) = run(Command::new("keytool").args([
        "-list",
        "-keystore",
        &lab.keystore.display().to_string(),
        "-storetype",
        "JKS",
        "-storepass:file",
        &lab.pass_file.display().to_string(),
    ]));
    assert!(
        ok && out.contains("app,") && out.contains("PrivateKeyEntry"),
        "{out}"
    );
    assert!(out.contains(&keytool_fp(&lab.new_fp)), "{out}");
}

/// The lab's old keystore converted to JKS by keytool, as an admin whose
/// application wants JKS keeps it; the lab then deploys to that file.
fn to_jks_lab(lab: &mut Lab) -> Vec<u8> {
    let jks = lab.keystore.with_extension("jks");
    let pass = lab.pass_file.display().to_string();
    let (ok, out) = run(Command::new("keytool").args([
        "-importkeystore",
        "-noprompt",
        "-srckeystore",
        &lab.keystore.display().to_string(),
        "-srcstoretype",
        "PKCS12",
        "-srcstorepass:file",
        &pass,
        "-destkeystore",
        &jks.display().to_string(),
        "-deststoretype",
        "JKS",
        "-deststorepass:file",
        &pass,
        "-destkeypass:file",
        &pass,
    ]));
    assert!(ok, "keytool -importkeystore: {out}");
    lab.keystore = jks;
    let bytes = std::fs::read(&lab.keystore).expect("jks");
    assert!(bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]), "a JKS file");
    bytes
}

/// `keytool -list -v` of the lab's keystore as `store_type`.
fn keytool_list(lab: &Lab, store_type: &str) -> String {
    let (ok, list) = run(Command::new("keytool").args([
        "-list",
        "-v",
        "-keystore",
        &lab.keystore.display().to_string(),
        "-storetype",
        store_type,
        "-storepass:file",
        &lab.pass_file.display().to_string(),
    ]));
    assert!(ok, "{list}");
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jks_keystore_is_replaced_through_keytool_and_rolled_back_byte_for_byte() {
    let mut lab = lab().await;
    let old_jks = to_jks_lab(&mut lab);
    let d = Deployer::new(&lab.state);

    // A reload that fails: the old JKS file comes back byte for byte.
    let r = d
        .deploy(
            &lab.spec(
                "jks",
                vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
                None,
            ),
            &lab.material,
        )
        .await
        .expect("no crash");
    assert_eq!(code(&r), "TETHER-E8503", "{r:#?}");
    assert_eq!(r.old_fingerprint.as_deref(), Some(lab.old_fp.as_str()));
    assert_eq!(std::fs::read(&lab.keystore).expect("read"), old_jks);

    // A password that does not open it: refused, nothing written, and the
    // password is nowhere in the report.
    let other = lab.state.parent().expect("p").join("other.pass");
    std::fs::write(&other, "another password").expect("w");
    let mut wrong = lab.spec("jks", vec!["true".into()], None);
    if let Target::JavaKeystore(k) = &mut wrong.target {
        k.password = SecretRef(format!("file:{}", other.display()));
    }
    let r = d.deploy(&wrong, &lab.material).await.expect("no crash");
    assert_eq!(code(&r), "TETHER-E8511", "{r:#?}");
    assert!(!format!("{r:?}").contains("another password"));
    assert_eq!(std::fs::read(&lab.keystore).expect("read"), old_jks);

    // The deploy: still JKS, the alias holds the new certificate, keytool
    // reads it as JKS, and no temporary file of keytool's is left.
    let r = d
        .deploy(&lab.spec("jks", vec!["true".into()], None), &lab.material)
        .await
        .expect("no crash");
    assert!(r.is_deployed(), "{r:#?}");
    assert_eq!(r.old_fingerprint.as_deref(), Some(lab.old_fp.as_str()));
    let bytes = std::fs::read(&lab.keystore).expect("read");
    assert!(bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]), "still JKS");
    let list = keytool_list(&lab, "JKS");
    assert!(list.contains("Keystore type: JKS"), "{list}");
    assert!(list.contains("Alias name: app"), "{list}");
    assert!(list.contains("PrivateKeyEntry"), "{list}");
    assert!(
        list.contains(&format!("SHA256: {}", keytool_fp(&lab.new_fp))),
        "{list}"
    );
    let mode = std::fs::metadata(&lab.keystore)
        .expect("meta")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o640
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jks_deploy_without_keytool_writes_nothing_and_names_the_tool() {
    let mut lab = lab().await;
    let old_jks = to_jks_lab(&mut lab);
    let missing = lab.state.parent().expect("p").join("no-jre/bin/keytool");
    let r = Deployer::new(&lab.state)
        .with_keytool(&missing)
        .deploy(&lab.spec("jks", vec!["true".into()], None), &lab.material)
        .await
        .expect("no crash");
    assert_eq!(code(&r), "TETHER-E8540", "{r:#?}");
    assert!(
        format!("{r:?}").contains("no-jre/bin/keytool is not installed"),
        "{r:#?}"
    );
    assert_eq!(std::fs::read(&lab.keystore).expect("read"), old_jks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_does_not_resolve_or_opens_nothing_writes_nothing() {
    let lab = lab().await;
    let d = Deployer::new(&lab.state);
    let mut spec = lab.spec("pkcs12", lab.server.reload_command(), Some(5));
    let set = |spec: &mut DeploySpec, r: String| {
        if let Target::Pkcs12(k) = &mut spec.target {
            k.password = SecretRef(r);
        }
    };
    for (reference, want) in [
        (
            "env:TETHER_TEST_UNSET_STORE_PASS".to_owned(),
            "TETHER-E8510",
        ),
        (
            format!("file:{}", lab.state.join("no-such-file").display()),
            "TETHER-E8510",
        ),
    ] {
        set(&mut spec, reference.clone());
        let r = d.deploy(&spec, &lab.material).await.expect("no crash");
        assert_eq!(code(&r), want, "{reference}: {r:#?}");
        assert_eq!(r.state, "rolled_back");
        assert_eq!(std::fs::read(&lab.keystore).expect("read"), lab.old_bytes);
    }
    // A password that does not open the keystore in place: refusing beats
    // locking its application out.
    let other = lab.state.parent().expect("p").join("other.pass");
    std::fs::write(&other, "another password").expect("w");
    set(&mut spec, format!("file:{}", other.display()));
    let r = d.deploy(&spec, &lab.material).await.expect("no crash");
    assert_eq!(code(&r), "TETHER-E8511", "{r:#?}");
    assert!(!format!("{r:?}").contains("another password"));
    assert_eq!(std::fs::read(&lab.keystore).expect("read"), lab.old_bytes);
    assert!(lab.wait_served(&lab.old_fp).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_restores_the_old_keystore_byte_for_byte() {
    let lab = lab().await;
    let r = Deployer::new(&lab.state)
        .deploy(
            &lab.spec(
                "pkcs12",
                vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
                Some(5),
            ),
            &lab.material,
        )
        .await
        .expect("no crash");
    assert_eq!(code(&r), "TETHER-E8503", "{r:#?}");
    assert_eq!(r.state, "rolled_back", "{r:#?}");
    assert_eq!(std::fs::read(&lab.keystore).expect("read"), lab.old_bytes);
    assert!(lab.wait_served(&lab.old_fp).await);
}

/// The crash points a keystore deploy passes, in order.
async fn points_of(lab: &Lab, reload: Vec<String>, verify: Option<u64>) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let d = Deployer::new(&lab.state).with_crash_hook(Arc::new(move |p: &str| {
        s.lock().expect("lock").push(p.to_owned());
        false
    }));
    d.deploy(&lab.spec("pkcs12", reload, verify), &lab.material)
        .await
        .expect("no crash");
    lab.reset().await;
    seen.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_keystore_deploy_recovers_to_a_whole_served_keystore() {
    let lab = lab().await;
    let ok_points = points_of(&lab, lab.server.reload_command(), Some(10)).await;
    // A reload that restarts nothing: verify mismatch and the rollback.
    let noop = vec!["true".to_owned()];
    let fail_points = points_of(&lab, noop.clone(), Some(1)).await;
    assert!(
        ok_points.iter().any(|p| p == "install.keystore"),
        "{ok_points:?}"
    );
    assert!(
        fail_points.iter().any(|p| p == "restore.keystore"),
        "{fail_points:?}"
    );
    let mut cases = 0;
    for (reload, verify, points) in [
        (lab.server.reload_command(), 10, &ok_points),
        (noop, 1, &fail_points),
    ] {
        for point in points {
            let case = format!("crash at {point} (verify {verify} s)");
            let crashed = Deployer::new(&lab.state)
                .with_crash_hook(Arc::new({
                    let point = point.clone();
                    move |p: &str| p == point
                }))
                .deploy(
                    &lab.spec("pkcs12", reload.clone(), Some(verify)),
                    &lab.material,
                )
                .await;
            assert_eq!(
                crashed.as_ref().err().map(|c| c.0.as_str()),
                Some(point.as_str()),
                "{case}"
            );
            // The restarted agent; its rollback reload restarts s_server
            // from the restored keystore.
            Deployer::new(&lab.state).recover().await.expect("no crash");
            let fp = lab.assert_whole_and_served(&case).await;
            let expected = match point.as_str() {
                "journal.verified" | "finished" => &lab.new_fp,
                _ => &lab.old_fp,
            };
            assert_eq!(&fp, expected, "{case}");
            if fp == lab.old_fp {
                assert_eq!(
                    std::fs::read(&lab.keystore).expect("read"),
                    lab.old_bytes,
                    "{case}: the old keystore byte for byte"
                );
            }
            cases += 1;
            lab.reset().await;
        }
    }
    eprintln!("{cases} keystore crash cases");
    assert!(cases >= 15, "{cases}");
}
