//! `tether agent bundle`: the escalation bundle, a tar.gz an admin can send
//! to support or the agent can upload to the control plane.
//!
//! It holds the doctor report (text and JSON), posture, state, the last
//! lines of each log, the effective config, network and system facts, a
//! connection timeline, `MANIFEST.json` (first, so the server reads it
//! cheaply) and `REDACTIONS.json`. Every file passes through
//! [`redact::Redactor`] before it is written; the credential file is never
//! read into the bundle (its value is only used to find copies of it).

pub mod redact;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tether_doctor::Report;
use tether_wire::{DoctorSummary, ErrorCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::error::Failure;
use crate::logs::{AGENT_LOG, ERROR_LOG, INSTALL_LOG};
use crate::state::AgentState;
use redact::{Kind, Redaction, Redactor};

/// Lines kept from the end of each log by default.
pub const DEFAULT_LOG_LINES: usize = 500;
/// A fact-gathering command may take at most this long.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes read from one log file (its tail).
pub const MAX_LOG_READ: u64 = 8 * 1024 * 1024;
/// The version of `MANIFEST.json`.
pub const MANIFEST_VERSION: u32 = 1;

/// Everything the bundle is made from, gathered by the caller.
#[derive(Debug, Clone)]
pub struct BundleInput {
    pub state_dir: PathBuf,
    /// The log directory (install.log, agent.log, error.log).
    pub log_dir: PathBuf,
    /// Where the service unit was installed.
    pub unit_dir: PathBuf,
    /// The doctor's report; `doctor_error` says why there is none.
    pub report: Option<Report>,
    pub doctor_error: Option<String>,
    /// `tether agent posture`, as JSON.
    pub posture: serde_json::Value,
    pub shell_proxy_env: BTreeMap<String, String>,
    pub service_proxy_env: Option<BTreeMap<String, String>>,
    /// Lines kept from the end of each log.
    pub log_lines: usize,
    /// Run `ip`, `uname`, `df`, `timedatectl`… (off in some tests).
    pub run_commands: bool,
    pub now: OffsetDateTime,
    /// Exact secrets to redact wherever they appear (credential, proxy
    /// passwords).
    pub known_secrets: Vec<(String, Kind)>,
    /// Binary files added as they are (a capture's pcap), each listed in
    /// the manifest with why it is not redacted.
    pub attachments: Vec<Attachment>,
}

/// A binary file added to the bundle without redaction: the redactor reads
/// text, so the manifest says what the file may hold instead.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Why it is not redacted and what it may reveal.
    pub warning: String,
}

/// An attachment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unredacted {
    pub name: String,
    pub warning: String,
}

/// One file of the bundle as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub agent_id: Option<Uuid>,
    pub agent_version: &'static str,
    pub log_lines: usize,
    /// The doctor's verdict, if it ran.
    pub verdict: Option<DoctorSummary>,
    /// Every file but this one, in archive order. `REDACTIONS.json` is
    /// listed by name only (it also records redactions in this file).
    pub files: Vec<ManifestFile>,
    /// How many redactions `REDACTIONS.json` lists.
    pub redactions: usize,
    /// Files added without redaction (a capture's pcap and key log), each
    /// with its warning. Absent from bundles that have none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unredacted: Vec<Unredacted>,
}

/// A built bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The tar.gz bytes.
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    pub redactions: Vec<Redaction>,
}

/// How to gather a bundle on this host.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub log_lines: usize,
    pub deadline: Duration,
    pub run_commands: bool,
}

/// Runs the doctor and gathers everything else from the state dir, then
/// builds the bundle. A doctor that cannot run is recorded in the bundle,
/// not fatal: the bundle matters most when things are broken.
pub async fn collect(
    opts: &CollectOptions,
    world: &crate::world::World,
) -> Result<(Bundle, Option<Report>), Failure> {
    collect_with(opts, world, Vec::new()).await
}

/// [`collect`], adding binary attachments (the capture's pcap) as they are.
pub async fn collect_with(
    opts: &CollectOptions,
    world: &crate::world::World,
    attachments: Vec<Attachment>,
) -> Result<(Bundle, Option<Report>), Failure> {
    let dir = &opts.state_dir;
    let env = |k: &str| world.var(k);
    let mut doctor_opts = crate::doctor::DoctorOptions::for_state_dir(dir);
    doctor_opts.deadline = opts.deadline;
    doctor_opts.unit_dir = opts.unit_dir.clone();
    let (report, doctor_error) = match crate::doctor::run(&doctor_opts, world).await {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let posture = crate::posture::posture(dir, world, &crate::config::ConfigLayer::default());
    let posture = serde_json::to_value(&posture).unwrap_or_default();
    let config = crate::config::load(dir, &env, &crate::config::ConfigLayer::default())
        .ok()
        .map(|e| e.config);
    let log_dir = config
        .as_ref()
        .and_then(|c| c.log_dir.clone())
        .unwrap_or_else(|| dir.join("logs"));
    let shell_proxy_env = crate::doctor::shell_proxy_env(world);
    let systemctl = crate::doctor::systemctl_if_booted(tether_doctor::World::system().systemctl);
    let service_proxy_env = crate::doctor::service_proxy_env(&opts.unit_dir, systemctl.as_deref());
    let mut known = Vec::new();
    // Read only to find copies of it; the credential file itself is never
    // put in the bundle.
    if let Ok(c) = crate::credential::load_ignoring_mode(dir) {
        known.push((c.expose().to_owned(), Kind::AgentCredential));
    }
    let proxies = config
        .as_ref()
        .and_then(|c| c.proxy.clone())
        .into_iter()
        .chain(shell_proxy_env.values().cloned())
        .chain(service_proxy_env.iter().flat_map(|e| e.values().cloned()));
    for p in proxies {
        if let Ok(parsed) = tether_transport::ProxyConfig::parse(&p)
            && let Some(pw) = parsed.password
        {
            known.push((pw, Kind::ProxyPassword));
        }
    }
    let input = BundleInput {
        state_dir: dir.clone(),
        log_dir,
        unit_dir: opts.unit_dir.clone(),
        report: report.clone(),
        doctor_error,
        posture,
        shell_proxy_env,
        service_proxy_env,
        log_lines: opts.log_lines,
        run_commands: opts.run_commands,
        now: world.clock.now(),
        known_secrets: known,
        attachments,
    };
    Ok((build(&input).await?, report))
}

/// Builds the bundle in memory.
pub async fn build(input: &BundleInput) -> Result<Bundle, Failure> {
    let redactor = Redactor::new(input.known_secrets.clone());
    let mut files: Vec<(String, String)> = Vec::new();
    let state_text = read_text(&input.state_dir.join(crate::state::STATE_FILE));
    let state: Option<AgentState> = state_text
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());

    match (&input.report, &input.doctor_error) {
        (Some(r), _) => {
            files.push(("doctor/report.txt".into(), r.to_text()));
            files.push((
                "doctor/report.json".into(),
                serde_json::to_string_pretty(&r.to_json()).unwrap_or_default() + "\n",
            ));
        }
        (None, e) => files.push((
            "doctor/error.txt".into(),
            format!(
                "The doctor could not run: {}\n",
                e.as_deref().unwrap_or("unknown reason")
            ),
        )),
    }
    files.push((
        "posture.json".into(),
        serde_json::to_string_pretty(&input.posture).unwrap_or_default() + "\n",
    ));
    files.push((
        "state.json".into(),
        state_text.unwrap_or_else(|| "(no state.json)\n".into()),
    ));
    files.push((
        "config/agent.toml".into(),
        read_text(&input.state_dir.join(crate::config::CONFIG_FILE))
            .unwrap_or_else(|| "(no agent.toml)\n".into()),
    ));
    files.push((
        "config/effective.txt".into(),
        effective_config(&input.posture),
    ));
    let unit = input.unit_dir.join(crate::service::UNIT_NAME);
    if let Some(text) = read_text(&unit) {
        files.push(("service/tether-agent.service".into(), text));
    }
    if let Some(text) = read_text(&input.state_dir.join(crate::service::SERVICE_ENV_FILE)) {
        files.push(("service/service.env".into(), text));
    }
    let mut log_tails = BTreeMap::new();
    for name in [INSTALL_LOG, AGENT_LOG, ERROR_LOG] {
        let tail = tail_lines(&input.log_dir.join(name), input.log_lines);
        files.push((
            format!("logs/{name}"),
            tail.clone().unwrap_or_else(|| format!("(no {name})\n")),
        ));
        log_tails.insert(name, tail.unwrap_or_default());
    }
    files.push(("network/proxy-env.txt".into(), proxy_env_text(input)));
    for (name, path) in [
        ("network/resolv.conf", "/etc/resolv.conf"),
        ("network/hosts", "/etc/hosts"),
        ("system/os-release", "/etc/os-release"),
    ] {
        files.push((
            name.into(),
            read_text(Path::new(path)).unwrap_or_else(|| format!("({path} is not readable)\n")),
        ));
    }
    if input.run_commands {
        for (name, commands) in [
            ("network/ip-addr.txt", vec![vec!["ip", "addr"]]),
            (
                "network/ip-route.txt",
                vec![vec!["ip", "route"], vec!["ip", "-6", "route"]],
            ),
            ("system/uname.txt", vec![vec!["uname", "-a"]]),
            ("system/df.txt", vec![vec!["df", "-P"]]),
            (
                "system/time-sync.txt",
                vec![vec!["timedatectl", "status"], vec!["chronyc", "tracking"]],
            ),
        ] {
            let mut text = String::new();
            for argv in commands {
                text.push_str(&run_command(&argv).await);
            }
            files.push((name.into(), text));
        }
    }
    files.push((
        "timeline.txt".into(),
        timeline(state.as_ref(), &log_tails, input.report.as_ref()),
    ));

    // Redact every file, then describe them.
    let mut redactions = Vec::new();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, text) in files {
        let (clean, found) = redactor.redact(&name, &text);
        redactions.extend(found);
        entries.push((name, clean.into_bytes()));
    }
    let mut unredacted = Vec::new();
    for a in &input.attachments {
        unredacted.push(Unredacted {
            name: a.name.clone(),
            warning: a.warning.clone(),
        });
        entries.push((a.name.clone(), a.bytes.clone()));
    }
    let verdict = input
        .report
        .as_ref()
        .map(|r| crate::doctor::summary(r, None));
    let mut listed: Vec<ManifestFile> = entries
        .iter()
        .map(|(name, bytes)| ManifestFile {
            name: name.clone(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        })
        .collect();
    listed.push(ManifestFile {
        name: "REDACTIONS.json".into(),
        bytes: 0,
        sha256: String::new(),
    });
    let manifest = Manifest {
        schema_version: MANIFEST_VERSION,
        created_at: input.now,
        agent_id: state.as_ref().map(|s| s.agent_id),
        agent_version: crate::version(),
        log_lines: input.log_lines,
        verdict,
        files: listed,
        redactions: redactions.len(),
        unredacted,
    };
    let manifest_text = serde_json::to_string_pretty(&manifest).map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("cannot render MANIFEST.json: {e}"),
        )
    })? + "\n";
    let (manifest_text, found) = redactor.redact("MANIFEST.json", &manifest_text);
    redactions.extend(found);
    let redactions_text = serde_json::to_string_pretty(&redactions).map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("cannot render REDACTIONS.json: {e}"),
        )
    })? + "\n";

    let mut archive: Vec<(String, Vec<u8>)> = vec![
        ("MANIFEST.json".into(), manifest_text.into_bytes()),
        ("REDACTIONS.json".into(), redactions_text.into_bytes()),
    ];
    archive.extend(entries);
    let bytes = tar_gz(&archive, input.now).map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("cannot write the bundle archive: {e}"),
        )
    })?;
    Ok(Bundle {
        bytes,
        manifest,
        redactions,
    })
}

fn tar_gz(files: &[(String, Vec<u8>)], now: OffsetDateTime) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, name, &data[..])?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The last `n` lines of a file, reading at most [`MAX_LOG_READ`] bytes
/// from its end.
pub fn tail_lines(path: &Path, n: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(MAX_LOG_READ);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_LOG_READ).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    // A read that started mid-file begins with a partial line: drop it.
    let skip = usize::from(start > 0 && !lines.is_empty());
    let lines = &lines[skip..];
    let from = lines.len().saturating_sub(n);
    let mut out = lines[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Some(out)
}

fn effective_config(posture: &serde_json::Value) -> String {
    let mut out = String::from("# setting = value   (source)\n");
    if let Some(rows) = posture["config"].as_array() {
        for row in rows {
            let source = match &row["source"] {
                serde_json::Value::Object(o) => format!(
                    "{} {}",
                    o.get("kind").and_then(|v| v.as_str()).unwrap_or(""),
                    o.get("from").map(|v| v.to_string()).unwrap_or_default()
                ),
                other => other.to_string(),
            };
            out.push_str(&format!(
                "{} = {}   ({})\n",
                row["field"].as_str().unwrap_or("?"),
                row["value"].as_str().unwrap_or("?"),
                source.trim()
            ));
        }
    }
    out
}

fn proxy_env_text(input: &BundleInput) -> String {
    let mut out = String::from("# The proxy variables of the shell that built this bundle\n");
    for (k, v) in &input.shell_proxy_env {
        out.push_str(&format!("shell {k}={v}\n"));
    }
    match &input.service_proxy_env {
        Some(env) => {
            out.push_str("# The proxy variables of the installed tether-agent service\n");
            for (k, v) in env {
                out.push_str(&format!("service {k}={v}\n"));
            }
        }
        None => out.push_str("# No installed tether-agent service was found\n"),
    }
    out
}

async fn run_command(argv: &[&str]) -> String {
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return String::new();
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(out)) => format!(
            "$ {shown}\n{}{}{}\n",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            if out.status.success() {
                String::new()
            } else {
                format!("(exit status {})", out.status)
            }
        ),
        Ok(Err(e)) => format!("$ {shown}\n(not available: {e})\n\n"),
        Err(_) => format!(
            "$ {shown}\n(did not finish within {} s)\n\n",
            COMMAND_TIMEOUT.as_secs()
        ),
    }
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The connection timeline: the state's milestones and last errors in time
/// order, then the log lines that tell the story of the connection.
pub fn timeline(
    state: Option<&AgentState>,
    logs: &BTreeMap<&str, String>,
    report: Option<&Report>,
) -> String {
    let mut events: Vec<(OffsetDateTime, String)> = Vec::new();
    if let Some(s) = state {
        events.push((s.installed_at, "installed".into()));
        events.push((
            s.enrolled_at,
            format!("enrolled as {} with {}", s.agent_id, s.server),
        ));
        if let Some(t) = s.last_successful_contact {
            events.push((t, "last successful contact with the server".into()));
        }
        for (subsystem, e) in &s.last_errors {
            events.push((
                e.at,
                format!("last {subsystem} error {}: {}", e.code, e.message),
            ));
        }
        if let Some(t) = s.debug_until {
            events.push((t, "debug logging ends".into()));
        }
    }
    if let Some(r) = report {
        events.push((
            r.started_at,
            format!(
                "doctor verdict {}: {}{}",
                r.verdict.status.as_str(),
                r.verdict.code.map(|c| format!("{c} ")).unwrap_or_default(),
                r.verdict.root_cause
            ),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    let mut out = String::from("# From state.json and the doctor, oldest first\n");
    for (t, what) in &events {
        out.push_str(&format!("{}  {what}\n", rfc(*t)));
    }
    out.push_str("\n# From agent.log: starts, stops, check-ins, warnings and errors\n");
    let wanted = [
        " WARN ",
        " ERROR ",
        "checked in",
        "check-in failed",
        "agent starting",
        "agent stopped",
        "stopping",
        "enrolled",
    ];
    let agent_log = logs.get(AGENT_LOG).map(String::as_str).unwrap_or("");
    for line in agent_log
        .lines()
        .filter(|l| wanted.iter().any(|w| l.contains(w)))
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.log");
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).expect("writes");
        let tail = tail_lines(&p, 3).expect("reads");
        assert_eq!(tail, "line 998\nline 999\nline 1000\n");
        assert_eq!(tail_lines(&dir.path().join("missing"), 3), None);
    }
}
