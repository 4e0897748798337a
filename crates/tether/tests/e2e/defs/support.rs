//! The definitions e2e tests' lab around the server: deterministic content,
//! a server with a scratch dir for what it publishes, the agent commands
//! the tests run, and the checks on what an agent installed. The programs
//! in the path (squid, nginx, socat, the fault relay, libfaketime, tmpfs)
//! come from `tether-testlab`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tether_defs::client::Installed;
use tether_testlab::relay::TlsRelay;
use tether_wire::{ChannelSummary, DefsVersion};
use tokio::process::Command;
use tokio::time::Instant;

use crate::lab::{Agent, Backend, Scratch, Server, agent_bin, text};

pub const CHANNEL: &str = "main";

// ---------------------------------------------------------------------------
// Content: deterministic, so a failure reproduces.

/// SplitMix64: a tiny seeded generator, so the tests need no RNG crate and
/// every run with the same seed produces the same files and kill points.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A signature-file-like text: one rule per line, about 90 bytes each.
pub fn rule_lines(count: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            format!(
                "sig-{i:07} {:016x} {:016x} rule body text for definition number {i}\n",
                rng.next(),
                rng.next()
            )
        })
        .collect()
}

/// Changes `per_mille` of the lines (0.5 % is 5).
pub fn change_lines(lines: &[String], per_mille: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut out = lines.to_vec();
    let changes = (lines.len() * per_mille / 1000).max(1);
    for _ in 0..changes {
        let i = rng.below(out.len() as u64) as usize;
        out[i] = format!("sig-{i:07} changed {:016x}\n", rng.next());
    }
    out
}

pub fn joined(lines: &[String]) -> Vec<u8> {
    lines.concat().into_bytes()
}

/// Incompressible bytes: the download is as large as the content.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------
// The lab around the server.

/// A server with a scratch dir for the files it publishes.
pub struct DefsLab {
    pub server: Server,
    pub files: Scratch,
}

impl DefsLab {
    pub async fn start(backend: Backend) -> DefsLab {
        DefsLab {
            server: Server::start(backend).await,
            files: Scratch::new("defs-files"),
        }
    }

    pub fn port(&self) -> u16 {
        url::Url::parse(&self.server.endpoint.url)
            .expect("endpoint URL")
            .port()
            .expect("endpoint port")
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.server.dir.path().join("pki").join(file)
    }

    /// The fault relay in front of this server: the agent speaks TLS to it
    /// (the server's own certificate, which the agent trusts for update
    /// servers), and it speaks TLS (verifying the server's CA) onwards.
    pub async fn relay(&self) -> TlsRelay {
        TlsRelay::start(
            self.port(),
            &self.pki("ca.pem"),
            &self.pki("server.pem"),
            &self.pki("server.key"),
        )
        .await
    }

    /// The default policy: check in every 5 s, subscribed to [`CHANNEL`].
    pub async fn policy(&self, extra: &[&str]) {
        subscribe(&self.server, extra).await;
    }

    /// Publishes `content` as the channel's next version.
    pub async fn publish(&self, content: &[u8]) -> DefsVersion {
        publish_to(&self.server, self.files.path(), content).await
    }

    pub async fn enroll(&self) -> (Agent, uuid::Uuid) {
        self.enroll_in(Agent::new()).await
    }

    pub async fn enroll_in(&self, agent: Agent) -> (Agent, uuid::Uuid) {
        let token = self.server.token(&[]).await;
        let id = agent.enroll_ok(&self.server, &token.token, &[]).await;
        (agent, id)
    }

    pub async fn summary(&self) -> Vec<ChannelSummary> {
        serde_json::from_str(&self.server.admin_ok(&["defs", "summary", "--json"]).await)
            .expect("defs summary --json")
    }
}

/// `server`'s default policy: check in every 5 s, subscribed to
/// [`CHANNEL`], plus `extra` flags.
pub async fn subscribe(server: &Server, extra: &[&str]) {
    let mut args = vec![
        "policy",
        "set",
        "default",
        "--checkin-interval",
        "5s",
        "--jitter-percent",
        "0",
        "--channel",
        CHANNEL,
    ];
    args.extend_from_slice(extra);
    server.admin_ok(&args).await;
}

/// Publishes `content` (written to a file under `files` first) as
/// [`CHANNEL`]'s next version on `server`.
pub async fn publish_to(server: &Server, files: &Path, content: &[u8]) -> DefsVersion {
    let file = files.join(format!("defs-{}.dat", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, content).expect("definitions file written");
    let out = server
        .admin_ok(&[
            "defs",
            "publish",
            "--channel",
            CHANNEL,
            "--file",
            file.to_str().expect("utf-8 temp path"),
            "--json",
        ])
        .await;
    let _ = std::fs::remove_file(&file);
    serde_json::from_str(&out).expect("defs publish --json prints a DefsVersion")
}

/// `tether-agent update --now` in its own process, with `env` added.
pub async fn update_now(state_dir: &Path, env: &[(&str, &str)]) -> Output {
    update_command(state_dir, env)
        .output()
        .await
        .expect("tether-agent update runs")
}

pub fn update_command(state_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["update", "--now", "--state-dir"])
        .arg(state_dir)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `update --now` and asserts its exit code; returns its output text.
pub async fn update_expect(state_dir: &Path, env: &[(&str, &str)], code: i32) -> String {
    let out = update_now(state_dir, env).await;
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "update --now exit code; output:\n{t}"
    );
    t
}

/// `tether-agent defs status --json`.
pub async fn defs_status(state_dir: &Path) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args(["defs", "status", "--json", "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tether-agent defs status runs");
    assert!(out.status.success(), "defs status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("defs status --json prints JSON")
}

/// The status of [`CHANNEL`].
pub async fn channel_status(state_dir: &Path) -> serde_json::Value {
    let status = defs_status(state_dir).await;
    status["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["channel"] == CHANNEL))
        .cloned()
        .unwrap_or_else(|| panic!("defs status lists no channel {CHANNEL}: {status}"))
}

/// The code of the channel's last error in `defs status`, if any.
pub async fn last_error_code(state_dir: &Path) -> Option<String> {
    channel_status(state_dir).await["last_error"]["code"]
        .as_str()
        .map(str::to_owned)
}

pub fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs (coreutils)");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_owned()
}

/// Asserts that what is installed is complete and one of `allowed`:
/// `installed.json` names an existing file whose SHA-256 matches, and the
/// `current` link consumers read resolves to one of the allowed versions.
/// Returns the installed version.
pub fn assert_installed_intact(state_dir: &Path, allowed: &[&DefsVersion]) -> u64 {
    let dir = state_dir.join("defs").join(CHANNEL);
    let inst: Installed = tether_defs::client::read_installed(state_dir, CHANNEL)
        .unwrap_or_else(|| panic!("{}/installed.json is missing or broken", dir.display()));
    let want = allowed
        .iter()
        .find(|v| v.version == inst.version)
        .unwrap_or_else(|| {
            panic!(
                "installed v{} is not one of {:?}",
                inst.version,
                allowed.iter().map(|v| v.version).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        inst.sha256, want.sha256,
        "installed.json names v{}'s hash",
        inst.version
    );
    let file = dir.join(&inst.file);
    assert!(file.is_file(), "{} is missing", file.display());
    assert_eq!(
        sha256_file(&file),
        want.sha256,
        "{} does not hold v{}",
        file.display(),
        inst.version
    );
    let current = dir.join("current");
    let current_sha = sha256_file(&current);
    assert!(
        allowed.iter().any(|v| v.sha256 == current_sha),
        "{} resolves to content of no allowed version",
        current.display()
    );
    inst.version
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push((e.path(), meta.len()));
        }
    }
    out
}
