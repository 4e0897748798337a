//! `tether agent-bundle`: the offline install bundle, unpacked and
//! installed as an air-gapped host would, against a real server: its
//! `install.sh` checks every file, installs the binary, enrolls with the
//! bundle's scoped token, imports the signed definitions and deletes the
//! token. An altered binary stops the install before anything runs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::defs::support::{CHANNEL, DefsLab, channel_status};
use crate::lab::{Backend, Scratch, agent_bin, text};

fn unpack(file: &Path, into: &Path) {
    let bytes = std::fs::read(file).expect("bundle");
    tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]))
        .unpack(into)
        .expect("the bundle unpacks");
}

async fn install(dir: &Path, prefix: &Path, state: &Path, name: &str) -> std::process::Output {
    Command::new("sh")
        .arg(dir.join("install.sh"))
        .env("PREFIX", prefix)
        .env("TETHER_AGENT_STATE_DIR", state)
        .env("TETHER_AGENT_NAME", name)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("install.sh runs")
}

/// `tether-agent doctor --offline-bundle DIR --json` on a host where
/// nothing is enrolled yet.
async fn doctor_offline(dir: &Path, state: &Path) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args([
            "doctor",
            "--json",
            "--deadline",
            "5s",
            "--ntp-server",
            "127.0.0.1:9",
        ])
        .arg("--offline-bundle")
        .arg(dir)
        .arg("--state-dir")
        .arg(state)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the doctor runs");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&out)))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn an_air_gapped_host_installs_enrolls_and_imports_from_the_bundle() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    lab.policy(&[]).await;
    let published = lab.publish(b"offline rules v1\n").await;
    let work = Scratch::new("offline");
    let file = work.path().join("bundle.tar.gz");
    let agent = agent_bin();
    let out = lab
        .server
        .admin_ok(&[
            "agent-bundle",
            "--out",
            file.to_str().expect("utf-8"),
            "--kind",
            "connector",
            "--max-uses",
            "1",
            "--valid-for",
            "2d",
            "--channel",
            CHANNEL,
            "--agent-binary",
            agent.to_str().expect("utf-8"),
        ])
        .await;
    assert!(out.contains("mode 0600"), "{out}");
    assert_eq!(mode(&file), 0o600, "the bundle holds a token");

    // What is inside, and how it is described.
    let good = work.path().join("good");
    unpack(&file, &good);
    let dir = good.join("tether-agent-bundle");
    for (name, want) in [
        ("tether-agent", 0o755),
        ("install.sh", 0o755),
        ("token", 0o600),
        ("enroll.env", 0o644),
        ("SHA256SUMS", 0o644),
        ("MANIFEST.json", 0o644),
    ] {
        assert_eq!(mode(&dir.join(name)), want, "{name}");
    }
    assert_eq!(
        std::fs::read(dir.join("tether-agent")).expect("binary"),
        std::fs::read(&agent).expect("agent"),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["server"], lab.server.endpoint.url.clone() + "/");
    assert_eq!(
        manifest["ca_fingerprint"],
        lab.server.endpoint.ca_fingerprint
    );
    assert_eq!(manifest["token"]["max_uses"], 1);
    assert_eq!(manifest["token"]["kind"], "connector");
    assert_eq!(manifest["channels"][0], CHANNEL);
    let env = std::fs::read_to_string(dir.join("enroll.env")).expect("env");
    assert!(
        env.contains(&format!(
            "TETHER_CA_FINGERPRINT={}",
            lab.server.endpoint.ca_fingerprint
        )),
        "{env}"
    );

    // An altered binary: the install stops at the checksums, before
    // anything is installed or enrolled.
    let bad = work.path().join("bad");
    unpack(&file, &bad);
    let bad_dir = bad.join("tether-agent-bundle");
    let mut binary = std::fs::read(bad_dir.join("tether-agent")).expect("binary");
    let last = binary.len() - 1;
    binary[last] ^= 0xff;
    std::fs::write(bad_dir.join("tether-agent"), &binary).expect("altered");
    let prefix = work.path().join("prefix");
    let state = work.path().join("state");
    let out = install(&bad_dir, &prefix, &state, "offline-bad").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("missing or altered"), "{}", text(&out));
    assert!(!prefix.join("bin/tether-agent").exists());
    assert!(!state.join("credential").exists());

    // The doctor, before the install, from the bundle alone: the bundle's
    // server, pin and token stand in for flags; each offline check passes
    // on the good copy and the altered binary is named on the other.
    for (bundle_dir, files_status) in [(&dir, "pass"), (&bad_dir, "fail")] {
        let report = doctor_offline(bundle_dir, &work.path().join("no-state")).await;
        let check = |id: &str| -> serde_json::Value {
            report["checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["id"] == id))
                .cloned()
                .unwrap_or_else(|| panic!("no {id} check: {report}"))
        };
        assert_eq!(check("offline.files")["status"], files_status, "{report}");
        for id in ["offline.pin", "offline.token", "offline.defs", "tls"] {
            assert_eq!(check(id)["status"], "pass", "{id}: {report}");
        }
        if files_status == "fail" {
            assert_eq!(check("offline.files")["code"], "TETHER-E8740", "{report}");
        }
    }

    // The real install.
    let out = install(&dir, &prefix, &state, "offline-host").await;
    assert!(out.status.success(), "install.sh failed:\n{}", text(&out));
    let t = text(&out);
    assert!(t.contains("deleted the bundle's enrollment token"), "{t}");
    assert!(t.contains("systemd is not running here"), "{t}");
    assert!(
        !dir.join("token").exists(),
        "the token outlived the install"
    );
    assert_eq!(mode(&prefix.join("bin/tether-agent")), 0o755);
    assert!(state.join("credential").exists());
    let agents = lab.server.agents().await;
    let enrolled = agents
        .iter()
        .find(|a| a.name == "offline-host")
        .unwrap_or_else(|| panic!("no agent offline-host: {agents:?}"));
    assert_eq!(enrolled.kind.as_str(), "connector");
    let status = channel_status(&state).await;
    assert_eq!(
        status["version"], published.version,
        "the bundle's definitions are installed: {status}"
    );

    // The token was for one host, and that host used it.
    let tokens = lab.server.admin_ok(&["token", "list"]).await;
    assert!(tokens.contains("used-up"), "{tokens}");
}
