//! Definitions end to end: the real server publishing into its TUF
//! repository, real `tether-agent update --now` and `run` processes, and the
//! real programs between them: squid demanding Basic auth, nginx serving a
//! `tether defs mirror` tree over HTTPS, socat terminating TLS around a relay
//! in this test that cuts, corrupts, pads, throttles or refuses downloads,
//! a tmpfs that runs out of space, and libfaketime moving the agent's clock.
//!
//! Every fault ends with the installed version intact and the fault's
//! catalog code in `tether-agent defs status --json`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_defs::client::Installed;
use tether_wire::{AgentStatus, ChannelSummary, DefsVersion, ErrorCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::both_backends;
use crate::lab::{
    Agent, Backend, Scratch, Server, agent_bin, free_port, tether_bin, text, wait_listening,
};

both_backends!(
    happy_path_full_then_delta_over_the_control_plane,
    admin_update_now_reaches_a_running_agent_and_user_updates_can_be_forbidden,
);

const CHANNEL: &str = "main";

// ---------------------------------------------------------------------------
// Content: deterministic, so a failure reproduces.

/// SplitMix64: a tiny seeded generator, so the tests need no RNG crate and
/// every run with the same seed produces the same files and kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A signature-file-like text: one rule per line, about 90 bytes each.
fn rule_lines(count: usize, seed: u64) -> Vec<String> {
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
fn change_lines(lines: &[String], per_mille: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut out = lines.to_vec();
    let changes = (lines.len() * per_mille / 1000).max(1);
    for _ in 0..changes {
        let i = rng.below(out.len() as u64) as usize;
        out[i] = format!("sig-{i:07} changed {:016x}\n", rng.next());
    }
    out
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines.concat().into_bytes()
}

/// Incompressible bytes: the download is as large as the content.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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
struct DefsLab {
    server: Server,
    files: Scratch,
}

impl DefsLab {
    async fn start(backend: Backend) -> DefsLab {
        DefsLab {
            server: Server::start(backend).await,
            files: Scratch::new("defs-files"),
        }
    }

    fn port(&self) -> u16 {
        url::Url::parse(&self.server.endpoint.url)
            .expect("endpoint URL")
            .port()
            .expect("endpoint port")
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.server.dir.path().join("pki").join(file)
    }

    /// The default policy: check in every 5 s, subscribed to [`CHANNEL`].
    async fn policy(&self, extra: &[&str]) {
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
        self.server.admin_ok(&args).await;
    }

    /// Publishes `content` as the channel's next version.
    async fn publish(&self, content: &[u8]) -> DefsVersion {
        let file = self
            .files
            .path()
            .join(format!("defs-{}.dat", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, content).expect("definitions file written");
        let out = self
            .server
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

    async fn enroll(&self) -> (Agent, uuid::Uuid) {
        self.enroll_in(Agent::new()).await
    }

    async fn enroll_in(&self, agent: Agent) -> (Agent, uuid::Uuid) {
        let token = self.server.token(&[]).await;
        let id = agent.enroll_ok(&self.server, &token.token, &[]).await;
        (agent, id)
    }

    async fn summary(&self) -> Vec<ChannelSummary> {
        serde_json::from_str(&self.server.admin_ok(&["defs", "summary", "--json"]).await)
            .expect("defs summary --json")
    }
}

/// `tether-agent update --now` in its own process, with `env` added.
async fn update_now(state_dir: &Path, env: &[(&str, &str)]) -> Output {
    update_command(state_dir, env)
        .output()
        .await
        .expect("tether-agent update runs")
}

fn update_command(state_dir: &Path, env: &[(&str, &str)]) -> Command {
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
async fn update_expect(state_dir: &Path, env: &[(&str, &str)], code: i32) -> String {
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
async fn defs_status(state_dir: &Path) -> serde_json::Value {
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
async fn channel_status(state_dir: &Path) -> serde_json::Value {
    let status = defs_status(state_dir).await;
    status["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["channel"] == CHANNEL))
        .cloned()
        .unwrap_or_else(|| panic!("defs status lists no channel {CHANNEL}: {status}"))
}

/// The code of the channel's last error in `defs status`, if any.
async fn last_error_code(state_dir: &Path) -> Option<String> {
    channel_status(state_dir).await["last_error"]["code"]
        .as_str()
        .map(str::to_owned)
}

fn sha256_file(path: &Path) -> String {
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
fn assert_installed_intact(state_dir: &Path, allowed: &[&DefsVersion]) -> u64 {
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
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
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

fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
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

// ---------------------------------------------------------------------------
// Programs: socat (TLS around the relay), squid, nginx, libfaketime.

fn program(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run scripts/install-test-deps.sh (this test never skips)"
            )
        })
}

/// A socat process, killed with the test.
struct Socat {
    _child: Child,
    port: u16,
}

impl Socat {
    async fn start(listen: String, connect: String, port: u16) -> Socat {
        let mut child = Command::new(program("socat"))
            .arg(listen)
            .arg(connect)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("socat starts");
        wait_listening(&mut child, port, "socat", None).await;
        Socat {
            _child: child,
            port,
        }
    }
}

/// The relay's place in the path: the agent speaks TLS to socat, which
/// hands plain HTTP to the relay, which talks to a second socat that
/// speaks TLS (verifying the control plane's CA) to the real server.
/// The front presents the server's own certificate, issued by the CA the
/// agent pinned at enrollment, which the agent trusts for update servers.
struct RelayPath {
    relay: Relay,
    _front: Socat,
    _back: Socat,
}

impl RelayPath {
    async fn start(lab: &DefsLab) -> RelayPath {
        let back_port = free_port();
        let back = Socat::start(
            format!("TCP-LISTEN:{back_port},bind=127.0.0.1,reuseaddr,fork"),
            format!(
                "OPENSSL:127.0.0.1:{},cafile={}",
                lab.port(),
                lab.pki("ca.pem").display()
            ),
            back_port,
        )
        .await;
        let relay = Relay::start(back.port).await;
        let front_port = free_port();
        let front = Socat::start(
            format!(
                "OPENSSL-LISTEN:{front_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                lab.pki("server.pem").display(),
                lab.pki("server.key").display()
            ),
            format!("TCP:127.0.0.1:{}", relay.port),
            front_port,
        )
        .await;
        RelayPath {
            relay,
            _front: front,
            _back: back,
        }
    }

    /// The update URL agents use.
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/defs/", self._front.port)
    }
}

/// A real squid on 127.0.0.1 demanding Basic auth (`basic_ncsa_auth`, an
/// htpasswd hashed by `openssl passwd -apr1`), allowing CONNECT to one port.
struct Squid {
    _child: Child,
    port: u16,
    dir: Scratch,
}

impl Squid {
    async fn start(connect_port: u16, user: &str, password: &str) -> Squid {
        use std::os::unix::fs::PermissionsExt;
        let bin = program("squid");
        let helper = [
            "/usr/lib/squid/basic_ncsa_auth",
            "/usr/lib64/squid/basic_ncsa_auth",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("basic_ncsa_auth is missing: run scripts/install-test-deps.sh (squid)");
        let dir = Scratch::new("squid");
        // squid drops root for its own user, which must write its logs here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let hash = std::process::Command::new(program("openssl"))
            .args(["passwd", "-apr1", password])
            .output()
            .expect("openssl passwd runs");
        assert!(hash.status.success(), "openssl passwd -apr1 failed");
        let hash = String::from_utf8(hash.stdout).expect("ASCII hash");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).expect("htpasswd");
        std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let d = dir.path().display();
        let port = free_port();
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log {d}/access.log\n\
             cache_store_log none\n\
             coredump_dir {d}\n\
             cache deny all\n\
             netdb_filename none\n\
             shutdown_lifetime 0 seconds\n\
             auth_param basic program {} {}\n\
             auth_param basic realm tether-lab\n\
             acl authed proxy_auth REQUIRED\n\
             acl lab_ports port {connect_port}\n\
             acl CONNECT method CONNECT\n\
             http_access deny CONNECT !lab_ports\n\
             http_access allow authed\n\
             http_access deny all\n",
            helper.display(),
            htpasswd.display()
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config).expect("squid.conf");
        // The service name names squid's shared memory: one per instance.
        let service = format!("tdefs{}{port}", std::process::id());
        let mut child = Command::new(&bin)
            .args(["-N", "-n", &service, "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("squid starts");
        wait_listening(
            &mut child,
            port,
            "squid",
            Some(&dir.path().join("cache.log")),
        )
        .await;
        Squid {
            _child: child,
            port,
            dir,
        }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// nginx serving `root` over HTTPS on loopback, in the foreground as one
/// process with its own config, prefix and pid file (never the system
/// service).
struct Nginx {
    _child: Child,
    port: u16,
    _dir: Scratch,
}

impl Nginx {
    async fn start(root: &Path, cert: &Path, key: &Path) -> Nginx {
        let bin = program("nginx");
        let dir = Scratch::new("nginx");
        let d = dir.path().display();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                   access_log {d}/access.log;\n\
                   client_body_temp_path {d}/client_body;\n\
                   proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n\
                   uwsgi_temp_path {d}/uwsgi;\n\
                   scgi_temp_path {d}/scgi;\n\
                   types {{ application/json json; }}\n\
                   default_type application/octet-stream;\n\
                   server {{\n\
                     listen 127.0.0.1:{port} ssl;\n\
                     ssl_certificate {cert};\n\
                     ssl_certificate_key {key};\n\
                     root {root};\n\
                   }}\n\
                 }}\n",
                cert = cert.display(),
                key = key.display(),
                root = root.display(),
            ),
        )
        .expect("nginx.conf");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-g")
            // One process, no workers: killing it (kill_on_drop) stops
            // nginx entirely, where a master's workers would outlive it.
            .arg(format!(
                "daemon off; master_process off; pid {d}/nginx.pid;"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        wait_listening(
            &mut child,
            port,
            "nginx",
            Some(&dir.path().join("error.log")),
        )
        .await;
        Nginx {
            _child: child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }
}

/// libfaketime (the `faketime` package), preloaded to move the agent's
/// wall clock; the monotonic clock stays real so timeouts behave.
fn faketime_env(offset: &str) -> Vec<(&'static str, String)> {
    let lib = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime").join("libfaketime.so.1"))
        .chain(std::iter::once(PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )))
        .find(|p| p.is_file())
        .expect("libfaketime is not installed: run scripts/install-test-deps.sh (faketime)");
    vec![
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// The relay: plain HTTP/1.1 between two socats, one request per connection
// (the agent's transport opens a connection per request).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Close the connection after this many bytes of a target's body.
    CutAfter(u64),
    /// Flip one bit of the first byte of a target's body.
    FlipByte,
    /// Announce and send this many bytes more than a target holds.
    AppendExtra(u64),
    /// Answer every request 503 with `Retry-After: 120`, upstream untouched.
    Unavailable,
    /// Send targets' bodies at this many bytes per second.
    Throttle(u64),
}

#[derive(Debug, Default)]
struct Seen {
    /// Every request head, in order.
    requests: Vec<String>,
    /// Body bytes of targets (not metadata) passed to the agent.
    target_body_bytes: u64,
}

struct Relay {
    port: u16,
    shared: Arc<Mutex<(Mode, Seen)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let port = listener.local_addr().expect("relay addr").port();
        let shared = Arc::new(Mutex::new((Mode::Pass, Seen::default())));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    // A connection the agent gave up on (killed, timed out)
                    // ends here; the test judges the agent, not the relay.
                    let _ = relay_one(client, upstream, s).await;
                });
            }
        });
        Relay { port, shared, task }
    }

    fn set(&self, mode: Mode) {
        self.shared.lock().expect("relay lock").0 = mode;
    }

    fn requests(&self) -> Vec<String> {
        self.shared.lock().expect("relay lock").1.requests.clone()
    }

    fn target_body_bytes(&self) -> u64 {
        self.shared.lock().expect("relay lock").1.target_body_bytes
    }
}

const MAX_HEAD: usize = 64 * 1024;

/// Reads an HTTP head; returns it and whatever body bytes came with it.
async fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with `Connection: close`, so the upstream ends the body with
/// the connection and the relay handles exactly one exchange.
fn closing_head(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn with_content_length_plus(head: &str, extra: u64) -> String {
    head.split("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("content-length") => {
                let n: u64 = v.trim().parse().unwrap_or(0);
                format!("{k}: {}", n + extra)
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn relay_one(
    mut client: TcpStream,
    upstream: u16,
    shared: Arc<Mutex<(Mode, Seen)>>,
) -> std::io::Result<()> {
    let (head, _) = read_head(&mut client).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let mode = {
        let mut g = shared.lock().expect("relay lock");
        g.1.requests.push(head.clone());
        g.0
    };
    if mode == Mode::Unavailable {
        client
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return client.shutdown().await;
    }
    let is_target = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|p| p.contains("/targets/"));
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(closing_head(&head).as_bytes()).await?;
    let (resp_head, mut pending) = read_head(&mut up).await?;
    let mut resp_head = String::from_utf8_lossy(&resp_head).into_owned();
    let ok = resp_head.starts_with("HTTP/1.1 200") || resp_head.starts_with("HTTP/1.1 206");
    let act = is_target && ok;
    if let (true, Mode::AppendExtra(n)) = (act, mode) {
        resp_head = with_content_length_plus(&resp_head, n);
    }
    client.write_all(resp_head.as_bytes()).await?;
    let mut sent: u64 = 0;
    let paced_from = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut chunk = if pending.is_empty() {
            let n = up.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(&mut pending)
        };
        if act {
            match mode {
                Mode::CutAfter(limit) => {
                    let room = limit.saturating_sub(sent);
                    if chunk.len() as u64 >= room {
                        chunk.truncate(room as usize);
                        client.write_all(&chunk).await?;
                        shared.lock().expect("relay lock").1.target_body_bytes += room;
                        // Dropping both sockets cuts the response mid-body.
                        return Ok(());
                    }
                }
                Mode::FlipByte if sent == 0 => chunk[0] ^= 0x01,
                Mode::Throttle(rate) => {
                    // Paced against the start of the body, so the rate
                    // holds whatever the chunk sizes are.
                    let due = paced_from
                        + Duration::from_secs_f64((sent + chunk.len() as u64) as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                _ => {}
            }
            shared.lock().expect("relay lock").1.target_body_bytes += chunk.len() as u64;
        }
        client.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    if let (true, Mode::AppendExtra(n)) = (act, mode) {
        client.write_all(&vec![b'x'; n as usize]).await?;
    }
    client.shutdown().await
}

// ---------------------------------------------------------------------------
// 1. Happy path over the control plane.

async fn happy_path_full_then_delta_over_the_control_plane(backend: Backend) {
    let lab = DefsLab::start(backend).await;
    lab.policy(&[]).await;
    let lines = rule_lines(36_000, 1);
    let v1 = lab.publish(&joined(&lines)).await;
    assert_eq!(v1.version, 1);
    assert!(v1.length > 3_000_000, "a few MB: {}", v1.length);

    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(st["version"], 1, "{st}");
    assert_eq!(st["method"], "full", "{st}");
    assert_installed_intact(&state, &[&v1]);

    // 0.5 % of the lines change: the agent takes the signed delta.
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 2))).await;
    let delta = v2
        .deltas
        .iter()
        .find(|d| d.from_version == 1)
        .unwrap_or_else(|| panic!("v2 has a delta from v1: {v2:?}"));
    let t = update_expect(&state, &[], 0).await;
    let bytes: u64 = t
        .split("(from version 1, delta, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the update names a delta and its bytes: {t}"));
    assert_eq!(bytes, delta.size, "the signed delta is what was fetched");
    assert!(
        bytes * 20 < v2.full_size,
        "a delta of {bytes} bytes is much smaller than the full {}",
        v2.full_size
    );
    let st = channel_status(&state).await;
    assert_eq!(
        (st["version"].as_u64(), st["method"].as_str()),
        (Some(2), Some("delta")),
        "{st}"
    );
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    let inst = tether_defs::client::read_installed(&state, CHANNEL).expect("installed");
    assert_eq!(
        inst.previous.as_ref().map(|p| p.version),
        Some(1),
        "the previous version is kept"
    );
    // Up to date: nothing more to fetch.
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 2"), "{t}");

    // After a check-in the control plane shows it.
    agent.run(&[]);
    let detail = eventually(
        Duration::from_secs(30),
        "agents show lists v2 in policy",
        || async {
            let d = lab.server.agent(id).await;
            let c = d.defs.iter().find(|c| c.channel == CHANNEL)?;
            (c.version == Some(2) && d.in_policy == Some(true) && c.server.is_some()).then_some(d)
        },
    )
    .await;
    let view = &detail.defs[0];
    assert_eq!(view.versions_behind, 0);
    assert_eq!(view.newest_version, Some(2));
    assert!(view.last_error.is_none(), "{view:?}");
    let shown = lab
        .server
        .admin_ok(&["agents", "show", &id.to_string()])
        .await;
    for want in [
        "Definitions main".to_owned(),
        "v2, current".to_owned(),
        format!(
            "update server {}/defs/, direct",
            lab.server.endpoint.url.trim_end_matches('/')
        ),
    ] {
        assert!(
            shown.contains(&want),
            "{want:?} missing from agents show:\n{shown}"
        );
    }
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("In policy") && l.contains("yes")),
        "{shown}"
    );
    let summary = lab.summary().await;
    let ch = summary
        .iter()
        .find(|c| c.channel == CHANNEL)
        .expect("summary lists the channel");
    let on = |v: u64| {
        ch.versions
            .iter()
            .find(|x| x.version == v)
            .map(|x| x.agents)
    };
    assert_eq!((on(2), on(1)), (Some(1), Some(0)), "{ch:?}");
    assert_eq!(
        (ch.agents_subscribed, ch.agents_in_policy),
        (1, 1),
        "{ch:?}"
    );
    let table = lab.server.admin_ok(&["defs", "summary"]).await;
    assert!(table.contains("subscribed 1, in policy 1"), "{table}");
    agent.terminate().await;
}

// ---------------------------------------------------------------------------
// 2. Through squid with Basic auth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_squid_wrong_credentials_are_named_then_right_ones_work() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let port = lab.port();
    // Check-ins go direct (no_proxy 127.0.0.1); definitions come from the
    // same server under the name `localhost`, which goes through squid.
    let update_url = format!("https://localhost:{port}/defs/");
    lab.policy(&["--update-url", &update_url]).await;
    let v1 = lab.publish(&joined(&rule_lines(5_000, 3))).await;
    let squid = Squid::start(port, "tether", "s3cret-pass").await;
    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let toml = state.join("agent.toml");
    let base = std::fs::read_to_string(&toml).expect("agent.toml");
    let with_proxy = |password: &str| {
        format!(
            "{base}proxy = \"http://tether:{password}@127.0.0.1:{}\"\nno_proxy = [\"127.0.0.1\"]\n",
            squid.port
        )
    };
    // No credentials at all: the proxy's 407 is named as such.
    std::fs::write(
        &toml,
        format!(
            "{base}proxy = \"http://127.0.0.1:{}\"\nno_proxy = [\"127.0.0.1\"]\n",
            squid.port
        ),
    )
    .expect("agent.toml written");
    let t = update_expect(&state, &[], 2).await;
    let required = ErrorCode::ProxyAuthRequired.as_str();
    assert!(t.contains(required), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(required));

    std::fs::write(&toml, with_proxy("wrong-pass")).expect("agent.toml written");

    let t = update_expect(&state, &[], 2).await;
    let code = ErrorCode::ProxyAuthFailed.as_str();
    assert!(t.contains(code), "{t}");
    assert!(
        !t.contains("wrong-pass"),
        "the proxy password is never printed: {t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(st["last_error"]["code"], code, "{st}");
    assert!(
        st["via_proxy"]
            .as_str()
            .is_some_and(|p| p.contains(&squid.port.to_string())),
        "{st}"
    );
    assert!(!st.to_string().contains("wrong-pass"), "{st}");
    assert!(tether_defs::client::read_installed(&state, CHANNEL).is_none());

    // The next check-in carries it to the control plane.
    agent.run(&[]);
    let detail = eventually(
        Duration::from_secs(30),
        "agents show names the proxy failure",
        || async {
            let d = lab.server.agent(id).await;
            let c = d.defs.iter().find(|c| c.channel == CHANNEL)?;
            (c.last_error.as_ref().map(|e| e.code) == Some(ErrorCode::ProxyAuthFailed)).then_some(d)
        },
    )
    .await;
    assert!(
        detail.defs[0].via_proxy.is_some(),
        "the proxy in the path is reported: {:?}",
        detail.defs[0]
    );
    let shown = lab
        .server
        .admin_ok(&["agents", "show", &id.to_string()])
        .await;
    assert!(
        shown.contains(code) && shown.contains("via proxy"),
        "{shown}"
    );
    assert!(!shown.contains("wrong-pass"), "{shown}");
    agent.terminate().await;

    // The right password: the download goes through the tunnel.
    std::fs::write(&toml, with_proxy("s3cret-pass")).expect("agent.toml written");
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    assert_installed_intact(&state, &[&v1]);
    let st = channel_status(&state).await;
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["server"], update_url.as_str(), "{st}");
    let log = squid.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("CONNECT localhost:{port}")) && l.contains(" tether ")),
        "the download went through squid as user tether:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 3. A static mirror on nginx: fall-through, rollback, frozen.

/// `tether defs mirror --to DIR` on the server's data dir.
async fn mirror(lab: &DefsLab, to: &Path) {
    let out = lab
        .server
        .admin_ok(&["defs", "mirror", "--to", to.to_str().expect("utf-8 path")])
        .await;
    assert!(
        to.join("metadata").join("timestamp.json").is_file(),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_mirror_after_a_dead_server_then_rollback_and_freeze_are_refused() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let lines = rule_lines(8_000, 4);
    let v1 = lab.publish(&joined(&lines)).await;
    let www = Scratch::new("mirror");
    let live = www.path().join("live");
    mirror(&lab, &live).await;
    // A copy frozen at v1, served later as a stale mirror.
    let stale = www.path().join("stale");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&live)
        .arg(&stale)
        .status()
        .expect("cp runs");
    assert!(cp.success());

    let nginx = Nginx::start(&live, &lab.pki("server.pem"), &lab.pki("server.key")).await;
    let dead = format!("https://127.0.0.1:{}/defs/", free_port());
    lab.policy(&["--update-url", &dead, "--update-url", &nginx.url()])
        .await;
    let (agent, _id) = lab.enroll().await;
    let state = agent.state.path().to_owned();

    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    let st = channel_status(&state).await;
    assert_eq!(
        st["server"],
        nginx.url().as_str(),
        "served by the mirror: {st}"
    );
    assert_installed_intact(&state, &[&v1]);

    // Two more versions, mirrored: the agent follows the mirror.
    lab.publish(&joined(&change_lines(&lines, 5, 5))).await;
    let v3 = lab.publish(&joined(&change_lines(&lines, 5, 6))).await;
    mirror(&lab, &live).await;
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 3 (from version 1,"),
        "{t}"
    );

    // The old copy comes back: an older timestamp is a rollback, refused.
    let newer = www.path().join("newer");
    std::fs::rename(&live, &newer).expect("rename");
    std::fs::rename(&stale, &live).expect("rename");
    let t = update_expect(&state, &[], 2).await;
    let rollback = ErrorCode::DefsRollbackRefused.as_str();
    assert!(t.contains(rollback), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(rollback));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);

    // The current copy, never refreshed, seen two days later: its
    // timestamp (one day) has expired, so the mirror is frozen.
    std::fs::rename(&live, &stale).expect("rename");
    std::fs::rename(&newer, &live).expect("rename");
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 3"), "{t}");

    // A mirror whose metadata was edited: the signature no longer holds.
    let timestamp = live.join("metadata").join("timestamp.json");
    let genuine = std::fs::read(&timestamp).expect("timestamp.json");
    let mut edited: serde_json::Value = serde_json::from_slice(&genuine).expect("JSON");
    let version = edited["signed"]["version"].as_u64().expect("a version");
    edited["signed"]["version"] = (version + 1).into();
    std::fs::write(&timestamp, edited.to_string()).expect("edited");
    let t = update_expect(&state, &[], 2).await;
    let forged = ErrorCode::DefsSignatureInvalid.as_str();
    assert!(t.contains(forged), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(forged));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);
    std::fs::write(&timestamp, &genuine).expect("restored");
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: up to date at version 3"), "{t}");

    // Last: the trusted metadata store then remembers a time two days ahead.
    let env = faketime_env("+2d");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = update_expect(&state, &env, 2).await;
    let expired = ErrorCode::DefsMetadataExpired.as_str();
    assert!(t.contains(expired) && t.contains("timestamp"), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(expired));
    assert_eq!(assert_installed_intact(&state, &[&v3]), 3);
}

// ---------------------------------------------------------------------------
// 4. Resume, corruption, oversize and cool-down through the relay.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_faults_resume_corrupt_oversize_and_cool_down() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    let path = RelayPath::start(&lab).await;
    let relay = &path.relay;
    lab.policy(&["--update-url", &path.url()]).await;
    let lines = rule_lines(20_000, 7);
    let v1 = lab.publish(&joined(&lines)).await;
    let (agent, _id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    let partial = state.join("defs").join("partial");

    // Cut after a fifth of the object, in every round of the first attempt.
    let cut = v1.full_size / 5;
    relay.set(Mode::CutAfter(cut));
    let t = update_expect(&state, &[], 2).await;
    let interrupted = ErrorCode::DefsDownloadInterrupted.as_str();
    assert!(t.contains(interrupted), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(interrupted));
    let parts: Vec<_> = files_under(&partial)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "part"))
        .collect();
    assert!(
        parts.len() == 1 && parts[0].1 > 0 && parts[0].1 < v1.full_size,
        "a partial download is kept: {parts:?}"
    );
    let kept = parts[0].1;
    let before = relay.requests().len();

    relay.set(Mode::Pass);
    let t = update_expect(&state, &[], 0).await;
    assert!(
        t.contains("main: installed version 1 (from nothing, full,"),
        "{t}"
    );
    assert_installed_intact(&state, &[&v1]);
    let resumed = relay.requests()[before..]
        .iter()
        .filter(|h| h.contains("/targets/"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        resumed.iter().any(|h| h
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={kept}-"))),
        "the second attempt resumed with Range from {kept}: {resumed:?}"
    );
    assert!(
        relay.target_body_bytes() < 2 * v1.full_size,
        "{} bytes fetched for an object of {}",
        relay.target_body_bytes(),
        v1.full_size
    );
    assert!(
        files_under(&partial)
            .iter()
            .all(|(p, _)| p.extension().is_none_or(|e| e != "part")),
        "nothing partial is left once installed"
    );

    // A flipped byte: the signed hash catches it (delta and full alike).
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 8))).await;
    relay.set(Mode::FlipByte);
    let t = update_expect(&state, &[], 2).await;
    let mismatch = ErrorCode::DefsHashMismatch.as_str();
    assert!(t.contains(mismatch), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(mismatch));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);

    // More bytes than signed: refused as soon as they arrive.
    relay.set(Mode::AppendExtra(4096));
    let t = update_expect(&state, &[], 2).await;
    let too_large = ErrorCode::DefsTooLarge.as_str();
    assert!(t.contains(too_large), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(too_large));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    assert!(
        files_under(&partial)
            .iter()
            .all(|(p, _)| p.extension().is_none_or(|e| e != "part")),
        "a refused download leaves no partial file"
    );

    // 503 with Retry-After: a persisted cool-down the next run respects.
    relay.set(Mode::Unavailable);
    let t = update_expect(&state, &[], 2).await;
    let cooling = ErrorCode::DefsCoolingDown.as_str();
    assert!(t.contains(cooling), "{t}");
    let status = defs_status(&state).await;
    let left = status["cooldown_secs"].as_u64().unwrap_or(0);
    assert!((100..=120).contains(&left), "cool-down of ~120 s: {status}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(cooling));
    let asked = relay.requests().len();
    relay.set(Mode::Pass);
    let t = update_expect(&state, &[], 2).await;
    assert!(t.contains(cooling), "{t}");
    assert_eq!(
        relay.requests().len(),
        asked,
        "inside the cool-down the update server is not contacted"
    );
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    assert!(v2.version == 2);
}

// ---------------------------------------------------------------------------
// 5. kill -9 at random points of an update.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_breaks_the_installed_version() {
    let started = Instant::now();
    let seed = std::env::var("TETHER_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    println!("kill -9 test seed: {seed} (rerun with TETHER_E2E_SEED={seed})");
    let mut rng = Rng(seed);

    let lab = DefsLab::start(Backend::Sqlite).await;
    let path = RelayPath::start(&lab).await;
    lab.policy(&["--update-url", &path.url()]).await;
    let v1 = lab.publish(&joined(&rule_lines(2_000, 9))).await;
    let (agent, _id) = lab.enroll().await;
    update_expect(agent.state.path(), &[], 0).await;
    // The template: v1 installed, nothing partial. Each chain of kills
    // starts from a copy of it, so every kill lands inside an update.
    let template = agent.state.path().to_owned();
    let v2 = lab.publish(&random_bytes(3 << 20, seed)).await;
    path.relay.set(Mode::Throttle(8 << 20));
    let work = Scratch::new("kill9");
    let fresh = |n: u32| {
        let dir = work.path().join(format!("state-{n}"));
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&dir)
            .status()
            .expect("cp runs");
        assert!(st.success(), "copying the template state");
        dir
    };

    // One unkilled run sets the window the kill points are drawn from.
    let probe = fresh(0);
    let t0 = Instant::now();
    update_expect(&probe, &[], 0).await;
    let window = t0.elapsed().as_millis() as u64 + 50;
    println!("an unkilled update takes {window} ms");
    assert_eq!(assert_installed_intact(&probe, &[&v2]), 2);

    let (mut chains, mut completed, mut mid_download) = (1u32, 0u32, 0u32);
    let mut state = fresh(chains);
    for kill in 0..50 {
        let delay = rng.below(window);
        let mut child = update_command(&state, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("update --now starts");
        let finished = tokio::select! {
            st = child.wait() => Some(st.expect("wait")),
            () = tokio::time::sleep(Duration::from_millis(delay)) => None,
        };
        if finished.is_none() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("wait");
        }
        let version = assert_installed_intact(&state, &[&v1, &v2]);
        let part = files_under(&state.join("defs").join("partial"))
            .iter()
            .any(|(p, n)| *n > 0 && p.extension().is_some_and(|e| e == "part"));
        mid_download += u32::from(part);
        if version == 2 {
            completed += 1;
            chains += 1;
            state = fresh(chains);
        }
        assert!(
            started.elapsed() < Duration::from_secs(55),
            "kill point {kill} at {delay} ms: the test overran its budget"
        );
    }
    println!(
        "50 kill points: {completed} updates completed in between, {mid_download} left a partial download"
    );
    let t = update_expect(&state, &[], 0).await;
    assert!(t.contains("main: installed version 2"), "{t}");
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 6. Disk full.

/// A small tmpfs, unmounted when dropped (mounting needs root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = std::process::Command::new(program("mount"))
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mounting a tmpfs failed (the e2e lab runs as root)"
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_the_old_version_and_gives_the_space_back() {
    let lab = DefsLab::start(Backend::Sqlite).await;
    lab.policy(&[]).await;
    let v1 = lab.publish(&joined(&rule_lines(1_000, 10))).await;
    // The agent's state dir is the tmpfs. Declared after its parent, so it
    // is unmounted before the parent is removed.
    let root = Scratch::new("agent-tmpfs");
    let state = root.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "2m");
    let token = lab.server.token(&[]).await;
    let out = Command::new(agent_bin())
        .args([
            "enroll",
            "--server",
            &lab.server.endpoint.url,
            "--token",
            &token.token,
        ])
        .args(["--ca-fingerprint", &lab.server.endpoint.ca_fingerprint])
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("enroll runs");
    assert!(out.status.success(), "enroll: {}", text(&out));
    update_expect(&state, &[], 0).await;
    assert_installed_intact(&state, &[&v1]);
    let used_before: u64 = files_under(&state).iter().map(|(_, n)| n).sum();

    // 3 MiB that does not compress, on a 2 MiB file system.
    lab.publish(&random_bytes(3 << 20, 11)).await;
    let t = update_expect(&state, &[], 2).await;
    let full = ErrorCode::DefsDiskFull.as_str();
    assert!(t.contains(full), "{t}");
    assert_eq!(last_error_code(&state).await.as_deref(), Some(full));
    assert_eq!(assert_installed_intact(&state, &[&v1]), 1);
    let leftovers: Vec<_> = files_under(&state.join("defs").join("partial"))
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        leftovers.is_empty(),
        "no partial download is left: {leftovers:?}"
    );
    let used_after: u64 = files_under(&state).iter().map(|(_, n)| n).sum();
    assert!(
        used_after < used_before + 256 * 1024,
        "the space is given back: {used_before} bytes before, {used_after} after"
    );
}

// ---------------------------------------------------------------------------
// 7. The admin's "update now", and a policy that forbids local updates.

async fn admin_update_now_reaches_a_running_agent_and_user_updates_can_be_forbidden(
    backend: Backend,
) {
    let lab = DefsLab::start(backend).await;
    lab.policy(&[]).await;
    let lines = rule_lines(3_000, 12);
    let v1 = lab.publish(&joined(&lines)).await;
    let (mut agent, id) = lab.enroll().await;
    let state = agent.state.path().to_owned();
    update_expect(&state, &[], 0).await;
    let v2 = lab.publish(&joined(&change_lines(&lines, 5, 13))).await;

    // With v1 installed and a 6 h interval the agent's own schedule is far
    // off: only the admin's action brings v2 now.
    agent.run(&[]);
    lab.server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;
    let queued = lab
        .server
        .admin_ok(&["agents", "update-now", &id.to_string()])
        .await;
    assert!(queued.contains("queued definitions update"), "{queued}");
    eventually(
        Duration::from_secs(30),
        "the running agent installs v2",
        || async {
            tether_defs::client::read_installed(&state, CHANNEL)
                .is_some_and(|i| i.version == 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    eventually(
        Duration::from_secs(30),
        "agents show reports v2",
        || async {
            let d = lab.server.agent(id).await;
            d.defs
                .iter()
                .any(|c| c.channel == CHANNEL && c.version == Some(2))
                .then_some(())
        },
    )
    .await;
    let logs = format!(
        "{}{}",
        agent.stderr(),
        std::fs::read_to_string(state.join("logs").join("agent.log")).unwrap_or_default()
    );
    assert!(
        logs.contains("definitions check requested by the server"),
        "the action ran it:\n{logs}"
    );

    // The policy forbids local updates: it reaches the agent at check-in.
    lab.policy(&["--allow-user-update", "false"]).await;
    eventually(
        Duration::from_secs(30),
        "the new policy reaches the agent",
        || async {
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(state.join("state.json")).ok()?).ok()?;
            (s["policy"]["defs"]["allow_user_update"] == false).then_some(())
        },
    )
    .await;
    agent.terminate().await;
    let t = update_expect(&state, &[], 3).await;
    assert!(
        t.contains(ErrorCode::DefsUserUpdateForbidden.as_str()),
        "{t}"
    );
    assert_eq!(assert_installed_intact(&state, &[&v2]), 2);
    assert!(v1.version == 1);
}

/// The root key ceremony (docs/defs-keys.md): a server whose root key is
/// on its disk warns at start with TETHER-E6018; one whose repository was
/// created by `tether defs init` with an offline root key does not, and
/// holds only the online roles' keys.
#[tokio::test]
async fn the_server_warns_while_the_root_key_is_online_and_not_after_the_ceremony() {
    let online = Server::start(Backend::Sqlite).await;
    assert!(
        online.log().contains("TETHER-E6018"),
        "no warning: {}",
        online.log()
    );

    let media = Scratch::new("offline-media");
    let root = media.path().join("root.pem");
    let out = Command::new(tether_bin())
        .args(["defs", "keygen", "--out"])
        .arg(&root)
        .output()
        .await
        .expect("keygen runs");
    assert!(out.status.success(), "{}", text(&out));
    let data = Scratch::new("server");
    let out = Command::new(tether_bin())
        .args(["defs", "init", "--root-key"])
        .arg(&root)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .await
        .expect("init runs");
    assert!(out.status.success(), "{}", text(&out));
    let mut keys: Vec<String> = std::fs::read_dir(data.path().join("defs/keys"))
        .expect("keys/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["snapshot.pem", "targets.pem", "timestamp.pem"]);
    let offline = Server::start_in(data).await;
    assert!(!offline.log().contains("TETHER-E6018"), "{}", offline.log());
    // It serves definitions all the same: publishing needs no root key.
    let file = media.path().join("rules.txt");
    std::fs::write(&file, "rule one\n").expect("writes");
    let file = file.to_str().expect("utf-8 path");
    offline
        .admin_ok(&["defs", "publish", "--channel", "main", "--file", file])
        .await;
}
