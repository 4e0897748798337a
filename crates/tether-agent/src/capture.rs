//! `tether-agent capture`: the escalation capture (issue #13).
//!
//! For a bounded window it turns debug logging on, records the agent's own
//! traffic with tcpdump (a BPF filter naming the control plane, the proxy,
//! the update servers and the resolvers), runs one check-in and one
//! definitions update through the agent's real code paths, then stops
//! tcpdump and builds the escalation bundle with the pcap in it.
//!
//! Capturing needs CAP_NET_RAW; docs/capture.md says how the service gets
//! it for the window only.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tether_client::ApiClient;
use tether_wire::ErrorCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

use crate::bundle::{Attachment, Bundle, CollectOptions};
use crate::config::ConfigLayer;
use crate::error::Failure;
use crate::run::{RunContext, TokioSleeper};
use crate::state::StateStore;
use crate::world::World;

/// The shortest capture window.
pub const MIN_WINDOW: Duration = Duration::from_secs(2);
/// The longest capture window.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// How long tcpdump may take to say it is listening.
pub const START_WAIT: Duration = Duration::from_secs(10);
/// How long tcpdump may take to exit after SIGINT before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(5);
/// The name of the pcap inside the bundle.
pub const PCAP_NAME: &str = "capture/agent.pcap";
/// The most pcap bytes put into a bundle: the control plane takes uploads
/// of at most 16 MiB, and encrypted packets hardly compress.
pub const MAX_PCAP_BYTES: u64 = 12 * 1024 * 1024;

/// What `capture` is asked to do.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    /// The window; `None`: the policy's definitions interval.
    pub window: Option<Duration>,
    /// The doctor's deadline inside the bundle.
    pub deadline: Duration,
    pub log_lines: usize,
    /// Also log the TLS keys of the capture's own sessions into the bundle.
    pub tls_keylog: bool,
}

/// The name of the TLS key log inside the bundle.
pub const KEY_LOG_NAME: &str = "capture/tls-keys.log";

/// The manifest's warning on the key log.
pub const KEY_LOG_WARNING: &str = "TLS key log (NSS format) of the agent's own sessions during the capture: with it, Wireshark (tls.keylog_file) decrypts those sessions in the pcap, including the agent's credential in their Authorization headers. Share this bundle only with support. Uploaded by the capture, the agent's credential is rotated right after the upload; a capture kept on disk needs `tether-agent rotate-credential` once it is shared.";

/// A finished capture.
#[derive(Debug)]
pub struct Captured {
    pub bundle: Bundle,
    pub window: Duration,
    pub filter: String,
    /// What happened inside the window, one line each (also in the bundle).
    pub notes: Vec<String>,
}

/// The window: the one asked for (refused outside
/// [`MIN_WINDOW`]..=[`MAX_WINDOW`]), else the policy's definitions interval
/// held to those bounds.
pub fn window(requested: Option<Duration>, defs_interval_secs: u32) -> Result<Duration, Failure> {
    match requested {
        Some(d) if d < MIN_WINDOW || d > MAX_WINDOW => Err(Failure::new(
            ErrorCode::CaptureInvalid,
            format!("--for {} is outside 2s..1h", humantime::format_duration(d)),
        )),
        Some(d) => Ok(d),
        None => {
            Ok(Duration::from_secs(u64::from(defs_interval_secs)).clamp(MIN_WINDOW, MAX_WINDOW))
        }
    }
}

/// `host A or host B …`, one clause per address, in a stable order.
pub fn bpf_filter(addrs: &BTreeSet<IpAddr>) -> String {
    addrs
        .iter()
        .map(|a| format!("host {a}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The `nameserver` addresses of a resolv.conf.
pub fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                // A scoped IPv6 resolver (fe80::1%eth0) keeps its address.
                .and_then(|w| w.split('%').next())
                .and_then(|w| w.parse().ok())
        })
        .collect()
}

/// The first executable `name` in the colon-separated `path`.
pub fn find_tool(name: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A running tcpdump writing a pcap.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    /// What tcpdump printed on stderr after it started (its packet counts).
    stderr: tokio::task::JoinHandle<String>,
}

impl Tcpdump {
    /// Starts tcpdump on every interface and returns once it listens.
    pub async fn start(exe: &Path, out: &Path, filter: &str) -> Result<Tcpdump, Failure> {
        let mut cmd = Command::new(exe);
        // -U writes each packet at once, so a killed tcpdump still leaves a
        // readable file; -s 0 keeps whole packets for TLS decryption.
        cmd.args(["-i", "any", "-n", "-U", "-s", "0", "-w"])
            .arg(out);
        if nix::unistd::geteuid().is_root() {
            // Debian's tcpdump drops to the tcpdump user before opening the
            // file, which could not write into the agent's private dir.
            cmd.args(["-Z", "root"]);
        }
        cmd.arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Failure::new(
                ErrorCode::CaptureToolMissing,
                format!("cannot start {}: {e}", exe.display()),
            )
        })?;
        let Some(stderr) = child.stderr.take() else {
            return Err(Failure::new(
                ErrorCode::CaptureFailed,
                "tcpdump has no stderr",
            ));
        };
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        let listening = tokio::time::timeout(START_WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on") {
                    return true;
                }
                said.push_str(&line);
                said.push('\n');
            }
            false
        })
        .await;
        if listening != Ok(true) {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(STOP_WAIT, child.wait()).await;
            let said = said.trim();
            let code = if said.contains("ermission") || said.contains("not permitted") {
                ErrorCode::CapturePermission
            } else {
                ErrorCode::CaptureFailed
            };
            let why = if listening.is_err() {
                format!(
                    "tcpdump did not start listening within {}s",
                    START_WAIT.as_secs()
                )
            } else {
                "tcpdump exited before listening".to_owned()
            };
            return Err(Failure::new(code, format!("{why}: {said}")));
        }
        let stderr = tokio::spawn(async move {
            let mut rest = String::new();
            // Bounded: tcpdump prints a few lines at exit.
            while let Ok(Some(line)) = lines.next_line().await {
                if rest.len() < 4096 {
                    rest.push_str(&line);
                    rest.push('\n');
                }
            }
            rest
        });
        Ok(Tcpdump { child, stderr })
    }

    /// Stops tcpdump with SIGINT (it flushes and prints its counts), kills
    /// it if it has not exited after [`STOP_WAIT`], and returns what it
    /// printed.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let mut note = String::new();
        if tokio::time::timeout(STOP_WAIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(STOP_WAIT, self.child.wait()).await;
            note.push_str("tcpdump did not exit after SIGINT and was killed\n");
        }
        match tokio::time::timeout(STOP_WAIT, &mut self.stderr).await {
            Ok(Ok(text)) => note.push_str(&text),
            _ => self.stderr.abort(),
        }
        note
    }
}

/// Runs the capture and builds the bundle.
pub async fn capture(opts: &CaptureOptions, world: &World) -> Result<Captured, Failure> {
    let dir = &opts.state_dir;
    let env = |k: &str| world.var(k);
    let config = crate::config::load(dir, &env, &ConfigLayer::default())?.config;
    let store = StateStore::new(dir);
    let state = store.load_required()?;
    let defs_policy = state
        .policy
        .as_ref()
        .map(|p| p.defs.clone())
        .unwrap_or_default();
    let window = window(opts.window, defs_policy.interval_secs)?;
    let Some(tcpdump) = find_tool("tcpdump", world.var("PATH").as_deref()) else {
        return Err(Failure::new(
            ErrorCode::CaptureToolMissing,
            "tcpdump is not on PATH",
        ));
    };
    let key_log = opts
        .tls_keylog
        .then(|| Arc::new(tether_transport::KeyLogSink::new()));
    let mut transport = crate::connect::transport(&config, Some(dir), &env)?;
    if let Some(sink) = &key_log {
        transport = transport.with_key_log(sink.clone());
    }
    let credential = crate::credential::load(dir)?;

    // The hosts the agent talks to, resolved the way the agent resolves.
    let mut notes = Vec::new();
    let mut hosts: Vec<(&str, Url)> = vec![("control plane", config.server.clone())];
    if let Some(p) = crate::connect::proxy(&config, &env)? {
        hosts.push(("proxy", p.url.clone()));
    }
    for u in crate::defs::update_servers(&defs_policy, &config.server) {
        hosts.push(("update server", u));
    }
    let mut addrs = BTreeSet::new();
    for (role, url) in &hosts {
        let Some(host) = url.host_str() else { continue };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                addrs.insert(ip);
            }
            Err(_) => match transport.resolve(host).await {
                Ok((ips, _)) => addrs.extend(ips),
                Err(e) => notes.push(format!("{role} {host} did not resolve: {e}")),
            },
        }
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    addrs.extend(resolvers(&resolv));
    if addrs.is_empty() {
        return Err(Failure::new(ErrorCode::CaptureNoAddress, notes.join("; ")));
    }
    let filter = bpf_filter(&addrs);

    // Debug logging for the window: the running agent switches at its next
    // check-in, and this process logs at debug from now.
    let now = world.clock.now();
    let until = now + window;
    store.update(|s| {
        if s.debug_until.is_none_or(|u| u < until) {
            s.debug_until = Some(until);
        }
    })?;
    let log_dir = config.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
    let logs = crate::logs::init(&crate::logs::LogOptions {
        dir: Some(log_dir),
        max_bytes: config.log_max_bytes,
        keep: config.log_keep,
        debug: true,
        stderr: None,
    })
    .ok()
    .map(Arc::new);

    let work = dir.join(format!("capture-{}", crate::doctor::stamp(now)));
    create_private_dir(&work)?;
    let pcap = work.join("agent.pcap");
    let result = inside_window(
        &tcpdump,
        &pcap,
        &filter,
        window,
        &config,
        &store,
        &credential,
        transport,
        key_log.clone(),
        logs,
        world,
    )
    .await;
    let pcap_bytes = read_bounded(&pcap);
    let _ = std::fs::remove_dir_all(&work);
    let mut window_notes = result?;
    notes.append(&mut window_notes);
    let mut pcap_bytes = pcap_bytes?;
    if pcap_bytes.len() as u64 >= MAX_PCAP_BYTES {
        notes.push(format!(
            "the pcap was cut at {MAX_PCAP_BYTES} bytes (the rest is not in the bundle); capture a shorter window"
        ));
    }
    // A cut (the size bound, or a tcpdump killed while writing) must not
    // leave half a packet at the end: readers refuse such a file.
    let whole = whole_records(&pcap_bytes);
    if whole < pcap_bytes.len() {
        notes.push(format!(
            "the pcap's last {} bytes (a packet cut short) were dropped",
            pcap_bytes.len() - whole
        ));
        pcap_bytes.truncate(whole);
    }
    tracing::info!(window_secs = window.as_secs(), bytes = pcap_bytes.len(), filter = %filter, "capture finished");

    let mut summary = format!(
        "window: {}\nfilter: {filter}\n",
        humantime::format_duration(window)
    );
    for n in &notes {
        summary.push_str(n);
        summary.push('\n');
    }
    let mut attachments = vec![
        Attachment {
            name: "capture/capture.txt".into(),
            bytes: summary.into_bytes(),
            warning: "What the capture did: its window, its filter, the check-in's and the definitions update's outcomes and tcpdump's counts.".into(),
        },
        Attachment {
            name: PCAP_NAME.into(),
            bytes: pcap_bytes,
            warning: "A packet capture (pcap) of the agent's traffic with its control plane, proxy, update servers and resolvers. It is not redacted: it shows addresses, ports, DNS names and proxy CONNECT requests in clear, including a proxy's Basic credentials when the proxy demands them; TLS payloads stay encrypted.".into(),
        },
    ];
    if let Some(sink) = &key_log {
        let mut text = sink.contents();
        if sink.dropped() > 0 {
            text.push_str(&format!(
                "# {} more secrets did not fit in {} bytes\n",
                sink.dropped(),
                tether_transport::MAX_KEY_LOG_BYTES
            ));
        }
        attachments.push(Attachment {
            name: KEY_LOG_NAME.into(),
            bytes: text.into_bytes(),
            warning: KEY_LOG_WARNING.into(),
        });
    }
    let collect = CollectOptions {
        state_dir: dir.clone(),
        unit_dir: opts.unit_dir.clone(),
        log_lines: opts.log_lines,
        deadline: opts.deadline,
        run_commands: true,
    };
    let (bundle, _) = crate::bundle::collect_with(&collect, world, attachments).await?;
    Ok(Captured {
        bundle,
        window,
        filter,
        notes,
    })
}

/// Starts tcpdump, runs one check-in and one definitions update, waits out
/// the window and stops tcpdump; returns what happened, one line each.
#[allow(clippy::too_many_arguments)]
async fn inside_window(
    tcpdump: &Path,
    pcap: &Path,
    filter: &str,
    window: Duration,
    config: &crate::config::AgentConfig,
    store: &StateStore,
    credential: &crate::credential::Credential,
    transport: tether_transport::Transport,
    key_log: Option<Arc<tether_transport::KeyLogSink>>,
    logs: Option<Arc<crate::logs::LogHandle>>,
    world: &World,
) -> Result<Vec<String>, Failure> {
    let started = tokio::time::Instant::now();
    let capture = Tcpdump::start(tcpdump, pcap, filter).await?;
    let mut notes = Vec::new();
    let client = ApiClient::new(transport, config.server.clone())
        .with_bearer(credential.expose())
        .with_clock(world.clock.clone());
    let doctor_actions = crate::actions::DoctorActions {
        state_dir: store.dir().to_owned(),
        unit_dir: PathBuf::from("/etc/systemd/system"),
        deadline: tether_doctor::DoctorInput::DEFAULT_DEADLINE,
        world: world.clone(),
    };
    let installed_at = store.load().ok().flatten().map(|s| s.installed_at);
    let ctx = RunContext {
        client,
        store: store.clone(),
        clock: world.clock.clone(),
        sleeper: Arc::new(TokioSleeper),
        jitter: Box::new(|| 0.5),
        logs,
        facts: Arc::new(move || crate::facts::collect(installed_at)),
        proxy: crate::connect::proxy_in_use(config, &|k| world.var(k)),
        actions: Some(Arc::new(doctor_actions.clone())),
        actions_doctor: Some(doctor_actions),
        defs: None,
        task_limit: None,
        upgrades: None,
    };
    // Both are bounded by the window: what has not finished by its end is
    // cut off and said so.
    let work = async {
        match ctx.check_in_once().await {
            Ok(resp) => notes.push(format!("check-in: ok, status {}", resp.status)),
            Err(e) => notes.push(format!("check-in: failed {}: {e}", e.code())),
        }
        match crate::defs::command::Local::load(store.dir(), world) {
            Ok(mut local) => {
                if let Some(sink) = &key_log {
                    let t = local.factory.transport.as_ref().clone();
                    local.factory.transport = Arc::new(t.with_key_log(sink.clone()));
                }
                match local.update_now(&[]).await {
                    Ok(outcomes) if outcomes.is_empty() => {
                        notes.push("definitions update: no channel subscribed".into())
                    }
                    Ok(outcomes) => {
                        for o in &outcomes {
                            notes.push(format!(
                                "definitions update: {}",
                                crate::defs::outcome_line(o)
                            ));
                        }
                    }
                    Err(f) => notes.push(format!("definitions update: not run: {f}")),
                }
            }
            Err(f) => notes.push(format!("definitions update: not run: {f}")),
        }
    };
    if tokio::time::timeout(window, work).await.is_err() {
        notes.push(
            "the check-in or the definitions update was still running at the end of the window"
                .into(),
        );
    }
    tokio::time::sleep_until(started + window).await;
    let said = capture.stop().await;
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        notes.push(format!("tcpdump: {line}"));
    }
    Ok(notes)
}

fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Failure::new(
                ErrorCode::CaptureInvalid,
                format!("cannot create {}: {e}", dir.display()),
            )
        })
}

/// The length of the longest prefix of a classic pcap file (tcpdump's
/// `-w` format, either byte order, micro- or nanosecond stamps) that ends
/// with a whole packet record. Anything else is returned whole.
pub fn whole_records(pcap: &[u8]) -> usize {
    const GLOBAL: usize = 24;
    const RECORD: usize = 16;
    let Some(magic) = pcap.get(..4) else {
        return pcap.len();
    };
    let read_u32: fn([u8; 4]) -> u32 = match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        _ => return pcap.len(),
    };
    if pcap.len() < GLOBAL {
        return pcap.len();
    }
    let mut at = GLOBAL;
    loop {
        let Some(header) = pcap.get(at..at + RECORD) else {
            return at;
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[8..12]);
        let Ok(len) = usize::try_from(read_u32(len)) else {
            return at;
        };
        match at.checked_add(RECORD).and_then(|x| x.checked_add(len)) {
            Some(end) if end <= pcap.len() => at = end,
            _ => return at,
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        Failure::new(
            ErrorCode::CaptureFailed,
            format!("tcpdump wrote no capture at {}: {e}", path.display()),
        )
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PCAP_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Failure::new(
                ErrorCode::CaptureFailed,
                format!("cannot read the capture {}: {e}", path.display()),
            )
        })?;
    Ok(bytes)
}

/// Whether a capture action runs in this process now: one at a time.
static ACTION_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a capture action may run beyond its window (the tools' start
/// and stop, the doctor in the bundle, the upload).
pub const ACTION_MARGIN: Duration = Duration::from_secs(300);

/// Runs a capture action from the control plane (`ActionKind::Capture`) in
/// its own process, `tether-agent capture --upload --json`, so tcpdump, the
/// debug window and the capture's own check-in never hold up this agent's
/// check-ins; reports the outcome as the action's result when it ends. A
/// second capture while one runs is answered at once as refused.
pub fn spawn_action(
    client: ApiClient,
    state_dir: PathBuf,
    action_id: uuid::Uuid,
    secs: Option<u32>,
    tls_keylog: bool,
) {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let result = if ACTION_RUNNING.swap(true, Ordering::SeqCst) {
            failed(
                "another capture is running on this agent; queue this one again when it has ended",
            )
        } else {
            let result = run_action(&state_dir, secs, tls_keylog).await;
            ACTION_RUNNING.store(false, Ordering::SeqCst);
            result
        };
        tracing::info!(action_id = %action_id, ok = result.ok, message = %result.message, "capture action finished");
        if let Err(error) = client.complete_action(action_id, &result).await {
            tracing::warn!(action_id = %action_id, code = %error.code(), error = %error, "could not report the capture's result");
        }
    });
}

fn failed(message: impl Into<String>) -> tether_wire::ActionResult {
    tether_wire::ActionResult {
        ok: false,
        message: message.into(),
        doctor: None,
    }
}

async fn run_action(
    state_dir: &Path,
    secs: Option<u32>,
    tls_keylog: bool,
) -> tether_wire::ActionResult {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("cannot locate this agent's executable: {e}")),
    };
    let mut cmd = Command::new(&exe);
    // The `tether` binary carries the agent commands under `tether agent`.
    let endpoint_binary = exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("tether-agent"));
    if !endpoint_binary {
        cmd.arg("agent");
    }
    let out = state_dir.join("capture-last.tar.gz");
    cmd.arg("capture")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--out")
        .arg(&out)
        .args(["--upload", "--json"]);
    if let Some(secs) = secs {
        cmd.args(["--for", &format!("{secs}s")]);
    }
    if tls_keylog {
        cmd.arg("--tls-keylog");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let bound =
        Duration::from_secs(u64::from(secs.unwrap_or(3600))).min(MAX_WINDOW) + ACTION_MARGIN;
    let output = match tokio::time::timeout(bound, cmd.output()).await {
        Err(_) => {
            return failed(format!(
                "the capture did not end within {}",
                humantime::format_duration(bound)
            ));
        }
        Ok(Err(e)) => return failed(format!("could not start {}: {e}", exe.display())),
        Ok(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The command's own error line carries the code and the action.
        let why = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .or_else(|| stderr.lines().last())
            .unwrap_or("no error message")
            .chars()
            .take(1000)
            .collect::<String>();
        return failed(format!("the capture failed ({}): {why}", output.status));
    }
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<crate::cli::CaptureReport>(l).ok())
    {
        Some(r) => tether_wire::ActionResult {
            ok: true,
            message: format!(
                "captured {} s (filter `{}`){}; uploaded as bundle {}{}",
                r.window_secs,
                r.filter,
                if r.notes.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", r.notes.join("; "))
                },
                r.bundle_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                if r.rotated {
                    "; the agent's credential was rotated (the capture holds the TLS key log)"
                } else {
                    ""
                }
            ),
            doctor: None,
        },
        None => failed("the capture ended without its report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian microsecond pcap with packets of these lengths.
    fn pcap(lengths: &[u32], big_endian: bool) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&u32b(0xa1b2_c3d4));
        out.extend_from_slice(&[0; 20]);
        for (i, len) in lengths.iter().enumerate() {
            out.extend_from_slice(&u32b(u32::try_from(i).expect("small")));
            out.extend_from_slice(&u32b(0));
            out.extend_from_slice(&u32b(*len));
            out.extend_from_slice(&u32b(*len));
            out.extend(std::iter::repeat_n(0xab, *len as usize));
        }
        out
    }

    #[test]
    fn a_pcap_cut_short_keeps_only_whole_packets() {
        for big in [false, true] {
            let whole = pcap(&[60, 1500, 74], big);
            assert_eq!(whole_records(&whole), whole.len(), "nothing to trim");
            let two = pcap(&[60, 1500], big).len();
            // Cut anywhere inside the third record: its header or its data.
            for cut in [two + 1, two + 15, two + 16, whole.len() - 1] {
                assert_eq!(whole_records(&whole[..cut]), two, "cut at {cut}");
            }
            // Only the global header, or part of it.
            assert_eq!(whole_records(&whole[..24]), 24);
            assert_eq!(whole_records(&whole[..10]), 10);
        }
        // A record claiming more than the file holds, and not a pcap at all.
        let mut lying = pcap(&[60], false);
        lying[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(whole_records(&lying), 24);
        assert_eq!(whole_records(b"not a pcap file at all"), 22);
        assert_eq!(whole_records(b""), 0);
    }

    #[test]
    fn window_defaults_to_the_definitions_interval_within_bounds() {
        assert_eq!(window(None, 600).expect("ok"), Duration::from_secs(600));
        assert_eq!(window(None, 86_400).expect("ok"), MAX_WINDOW);
        assert_eq!(window(None, 0).expect("ok"), MIN_WINDOW);
        assert_eq!(
            window(Some(Duration::from_secs(5)), 600).expect("ok"),
            Duration::from_secs(5)
        );
        for bad in [Duration::from_secs(1), Duration::from_secs(3601)] {
            assert_eq!(
                window(Some(bad), 600).expect_err("refused").code,
                ErrorCode::CaptureInvalid
            );
        }
    }

    #[test]
    fn filter_names_every_address() {
        let addrs: BTreeSet<IpAddr> = ["127.0.0.1", "::1", "10.0.0.53"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        assert_eq!(
            bpf_filter(&addrs),
            "host 10.0.0.53 or host 127.0.0.1 or host ::1"
        );
    }

    #[test]
    fn resolvers_are_read_from_resolv_conf() {
        let conf = "# c\nsearch corp\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n";
        assert_eq!(
            resolvers(conf),
            vec![
                "10.0.0.53".parse::<IpAddr>().expect("ip"),
                "fe80::1".parse().expect("ip")
            ]
        );
    }

    #[test]
    fn a_missing_tool_is_none() {
        assert_eq!(find_tool("tcpdump", Some("/nonexistent")), None);
    }
}
