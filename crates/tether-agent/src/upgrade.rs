//! Agent upgrades on the host (issue #13, docs/upgrades.md).
//!
//! Upgraded binaries live under the state directory, never beside the
//! packaged one, so the package manager and agent upgrades never fight:
//! - `bin/<version>/tether-agent`: an upgraded binary (tether-fs, mode 0755);
//! - `bin/current` and `bin/previous`: the chosen version and the one it
//!   replaced, one line each, written atomically. No `current` (or one
//!   naming a binary that is not there) means the packaged binary, which is
//!   always the last fallback;
//! - `bin/upgrade.json`: the last upgrade as an [`UpgradeReport`]
//!   (upgrading, upgraded, rolled back with the reason), which the agent
//!   reports at check-in.
//!
//! [`install`] writes and checks the binary, then the record (upgrading),
//! then `previous`, then `current`: a kill at any point leaves `current`
//! naming a whole binary, the old one or the new one. [`launch`] is the
//! supervisor the service starts: it runs the chosen version and, while
//! that version has not yet checked in (its state file's `contact_version`),
//! waits at most a bound; when the new version exits or the bound passes,
//! it switches back to the previous version by itself and records why.

pub mod offer;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use tether_wire::{Clock, ErrorCode, UpgradeReport, UpgradeState};
use time::OffsetDateTime;

use crate::error::Failure;
use crate::state::StateStore;

/// The directory of upgraded binaries inside the state directory.
pub const BIN_DIR: &str = "bin";
/// The executable's name inside `bin/<version>/`.
pub const EXE_NAME: &str = "tether-agent";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const RECORD: &str = "upgrade.json";
/// The exit code with which `run` asks `launch` to start the chosen version
/// again (after it switched `current`).
pub const EXIT_RESTART: u8 = 75;
/// How long a new version has to check in before `launch` rolls it back.
pub const DEFAULT_CHECK_IN_WITHIN: Duration = Duration::from_secs(180);
/// How long a stopped child gets between SIGTERM and SIGKILL (the agent
/// sends its shutdown notice within about 3 s).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `--version` of a new binary may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks that `version` is safe as a directory name and looks like a
/// version: 1 to 64 of `[0-9A-Za-z.+-]`, starting with a digit, no `..`.
pub fn check_version(version: &str) -> Result<(), Failure> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version.starts_with(|c: char| c.is_ascii_digit())
        && !version.contains("..")
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            ErrorCode::UpgradeVersionInvalid,
            format!("{version:?} is not a version this agent installs"),
        ))
    }
}

/// The files under `STATE_DIR/bin`.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(state_dir: &Path) -> Layout {
        Layout {
            dir: state_dir.join(BIN_DIR),
        }
    }

    /// Where the binary of `version` lives (checked with [`check_version`]
    /// before any use).
    pub fn binary(&self, version: &str) -> PathBuf {
        self.dir.join(version).join(EXE_NAME)
    }

    /// The version a pointer names, if it is valid and its binary exists.
    fn pointer(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let version = text.trim();
        if check_version(version).is_err() {
            tracing::warn!(pointer = name, "ignoring an invalid version in bin/{name}");
            return None;
        }
        if !is_executable(&self.binary(version)) {
            tracing::warn!(pointer = name, version, "bin/{name} names a missing binary");
            return None;
        }
        Some(version.to_owned())
    }

    /// The chosen upgraded version; `None`: the packaged binary.
    pub fn current(&self) -> Option<String> {
        self.pointer(CURRENT)
    }

    /// The version `current` replaced; `None`: the packaged binary.
    pub fn previous(&self) -> Option<String> {
        self.pointer(PREVIOUS)
    }

    /// The last upgrade's record, if any (an unreadable one reads as none).
    pub fn record(&self) -> Option<UpgradeReport> {
        let bytes = std::fs::read(self.dir.join(RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_pointer(&self, name: &str, version: Option<&str>) -> Result<(), Failure> {
        let path = self.dir.join(name);
        match version {
            Some(v) => tether_fs::write_atomic(&path, format!("{v}\n").as_bytes(), 0o644)
                .map_err(install_failed),
            None => match std::fs::remove_file(&path) {
                Ok(()) => tether_fs::sync_dir(&self.dir).map_err(install_failed),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(install_failed(format!("removing {}: {e}", path.display()))),
            },
        }
    }

    fn write_record(&self, record: &UpgradeReport) -> Result<(), Failure> {
        let bytes = serde_json::to_vec_pretty(record).map_err(install_failed)?;
        tether_fs::write_atomic(&self.dir.join(RECORD), &bytes, 0o644).map_err(install_failed)
    }
}

fn install_failed(e: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::UpgradeInstallFailed, e.to_string())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last upgrade's record, for the check-in.
pub fn report(state_dir: &Path) -> Option<UpgradeReport> {
    Layout::new(state_dir).record()
}

/// Runs `binary --version` and returns the version it prints
/// (`tether-agent X`).
pub async fn probe_version(binary: &Path) -> Result<String, String> {
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Err(_) => {
            return Err(format!(
                "`--version` did not answer within {PROBE_TIMEOUT:?}"
            ));
        }
        Ok(Err(e)) => return Err(format!("it does not start: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(format!("`--version` exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("tether-agent ")
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "`--version` printed {:?}, not `tether-agent VERSION`",
                text.trim()
            )
        })
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// `version` was already the chosen one; nothing changed.
    AlreadyCurrent,
    /// `current` now names `version`; `from` is what it replaced
    /// (`None`: the packaged binary).
    Switched { from: Option<String> },
}

/// Installs `source` (already verified by the caller: the definitions
/// updater's signed content, or a file an admin gave on this host) as
/// `version` and switches `current` to it. The new binary must run here and
/// report `version`, or nothing is switched (TETHER-E8801).
pub async fn install(
    state_dir: &Path,
    version: &str,
    source: &Path,
    now: OffsetDateTime,
) -> Result<Installed, Failure> {
    check_version(version)?;
    let layout = Layout::new(state_dir);
    let from = layout.current();
    if from.as_deref() == Some(version) {
        return Ok(Installed::AlreadyCurrent);
    }
    let target = layout.binary(version);
    let version_dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    let (src, dst) = (source.to_path_buf(), target.clone());
    tokio::task::spawn_blocking(move || {
        remove_stale_temporaries(&version_dir);
        tether_fs::copy_atomic(&src, &dst, 0o755)
    })
    .await
    .map_err(install_failed)?
    .map_err(install_failed)?;
    match probe_version(&target).await {
        Ok(said) if said == version => {}
        Ok(said) => {
            let _ = std::fs::remove_file(&target);
            return Err(Failure::new(
                ErrorCode::UpgradeBinaryRefused,
                format!("the binary reports version {said}, not {version}"),
            ));
        }
        Err(why) => {
            let _ = std::fs::remove_file(&target);
            return Err(Failure::new(
                ErrorCode::UpgradeBinaryRefused,
                format!("{}: {why}", source.display()),
            ));
        }
    }
    layout.write_record(&UpgradeReport {
        state: UpgradeState::Upgrading,
        version: version.to_owned(),
        from: from.clone(),
        reason: None,
        at: now,
    })?;
    layout.write_pointer(PREVIOUS, from.as_deref())?;
    layout.write_pointer(CURRENT, Some(version))?;
    Ok(Installed::Switched { from })
}

/// Temporaries a killed install left in a version's directory.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{EXE_NAME}.")) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Goes back from `version` to the previous version (or the packaged
/// binary) and records why.
pub fn roll_back(
    state_dir: &Path,
    version: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<(), Failure> {
    let layout = Layout::new(state_dir);
    let back_to = layout.previous().filter(|p| p != version);
    layout.write_pointer(CURRENT, back_to.as_deref())?;
    layout.write_record(&UpgradeReport {
        state: UpgradeState::RolledBack,
        version: version.to_owned(),
        from: back_to,
        reason: Some(reason.to_owned()),
        at: now,
    })
}

/// The binary `launch` starts next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub path: PathBuf,
    /// `None`: the packaged binary.
    pub version: Option<String>,
    /// The version is on trial: it has not checked in since it was
    /// switched to.
    pub trial: bool,
}

/// Which binary to start: `current` if it names a whole binary, else the
/// packaged one. A record still saying "upgrading" to a version that is
/// not current is an install that a kill cut off before its switch; it is
/// closed as rolled back so the control plane does not wait for it.
pub fn choose(state_dir: &Path, packaged: &Path, now: OffsetDateTime) -> Result<Chosen, Failure> {
    chosen(state_dir, packaged, Some(now))
}

/// What [`choose`] would start, without closing anything: for
/// `upgrade status`, which must not write while an install or `launch`
/// runs beside it.
pub fn peek(state_dir: &Path, packaged: &Path) -> Result<Chosen, Failure> {
    chosen(state_dir, packaged, None)
}

/// The record that closes an install cut off before its switch: one still
/// "upgrading" to a version that is not `current`. `None` otherwise.
fn interrupted(
    current: Option<&str>,
    record: Option<&UpgradeReport>,
    at: OffsetDateTime,
) -> Option<UpgradeReport> {
    let r = record?;
    (r.state == UpgradeState::Upgrading && current != Some(r.version.as_str())).then(|| {
        UpgradeReport {
            state: UpgradeState::RolledBack,
            version: r.version.clone(),
            from: current.map(str::to_owned),
            reason: Some(format!(
                "the switch to {} was interrupted before it completed",
                r.version
            )),
            at,
        }
    })
}

/// The last upgrade as `upgrade status` shows it: an install cut off
/// before its switch reads as rolled back (as `launch` will record it),
/// without writing anything. An install still running shows the same until
/// its switch.
pub fn last_upgrade(state_dir: &Path) -> Option<UpgradeReport> {
    let layout = Layout::new(state_dir);
    let record = layout.record();
    let at = record.as_ref().map(|r| r.at)?;
    interrupted(layout.current().as_deref(), record.as_ref(), at).or(record)
}

/// [`choose`], closing an interrupted install only when `close_at` is given.
fn chosen(
    state_dir: &Path,
    packaged: &Path,
    close_at: Option<OffsetDateTime>,
) -> Result<Chosen, Failure> {
    let layout = Layout::new(state_dir);
    let current = layout.current();
    let record = layout.record();
    if let Some(now) = close_at
        && let Some(closed) = interrupted(current.as_deref(), record.as_ref(), now)
    {
        layout.write_record(&closed)?;
    }
    match current {
        Some(v) => Ok(Chosen {
            path: layout.binary(&v),
            trial: record
                .as_ref()
                .is_some_and(|r| r.state == UpgradeState::Upgrading && r.version == v),
            version: Some(v),
        }),
        None if is_executable(packaged) => Ok(Chosen {
            path: packaged.to_path_buf(),
            version: None,
            trial: false,
        }),
        None => Err(Failure::new(
            ErrorCode::UpgradeNoBinary,
            format!("{} is not an executable file", packaged.display()),
        )),
    }
}

/// Whether `version` checked in successfully at or after `since`, per the
/// state file.
fn checked_in(state_dir: &Path, version: &str, since: OffsetDateTime) -> bool {
    StateStore::new(state_dir)
        .load()
        .ok()
        .flatten()
        .is_some_and(|s| {
            s.contact_version.as_deref() == Some(version)
                && s.last_successful_contact.is_some_and(|t| t >= since)
        })
}

/// What `launch` runs with.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub state_dir: PathBuf,
    /// The packaged binary: the last fallback.
    pub packaged: PathBuf,
    /// How long a new version has to check in.
    pub check_in_within: Duration,
    /// Extra arguments for `run` (after `--state-dir`).
    pub run_args: Vec<OsString>,
}

enum Ended {
    Exited(ExitStatus),
    Stop,
    TrialExpired,
    Switched,
}

/// The supervisor: starts the chosen version with `run`, rolls a new
/// version back when it exits or has not checked in within the bound,
/// starts the chosen version again when `run` exits with [`EXIT_RESTART`]
/// or `current` changes, and forwards SIGTERM/SIGINT. Returns the exit
/// code of a version that stopped on its own (so the service manager's
/// restart policy applies).
pub async fn launch(opts: &LaunchOptions, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = |kind| {
        signal(kind).map_err(|e| {
            Failure::new(
                ErrorCode::Internal,
                format!("cannot listen for signals: {e}"),
            )
        })
    };
    let mut term = signals(SignalKind::terminate())?;
    let mut int = signals(SignalKind::interrupt())?;
    let layout = Layout::new(&opts.state_dir);
    let mut last_start: Option<tokio::time::Instant> = None;
    loop {
        // A version that exits at once must not make this a busy loop.
        if let Some(at) = last_start {
            tokio::time::sleep_until(at + Duration::from_secs(1)).await;
        }
        last_start = Some(tokio::time::Instant::now());
        let chosen = choose(&opts.state_dir, &opts.packaged, clock.now())?;
        let shown = chosen.version.as_deref().unwrap_or("packaged").to_owned();
        let started = clock.now();
        let spawned = tokio::process::Command::new(&chosen.path)
            .arg("run")
            .arg("--state-dir")
            .arg(&opts.state_dir)
            .args(&opts.run_args)
            .env("TETHER_EXIT_WITH_PARENT", std::process::id().to_string())
            .env(offer::SUPERVISED_ENV, "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => match &chosen.version {
                Some(v) => {
                    let reason = format!("version {v} could not be started: {e}");
                    tracing::error!(code = %ErrorCode::UpgradeRolledBack, "{reason}; rolling back");
                    roll_back(&opts.state_dir, v, &reason, clock.now())?;
                    continue;
                }
                None => {
                    return Err(Failure::new(
                        ErrorCode::UpgradeNoBinary,
                        format!("{} could not be started: {e}", chosen.path.display()),
                    ));
                }
            },
        };
        tracing::info!(version = %shown, trial = chosen.trial, path = %chosen.path.display(), "launch started the agent");
        let mut trial = chosen.trial;
        let deadline = tokio::time::Instant::now() + opts.check_in_within;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let ended = loop {
            tokio::select! {
                status = child.wait() => break match status {
                    Ok(status) => Ended::Exited(status),
                    Err(e) => return Err(Failure::new(ErrorCode::Internal, format!("waiting for the agent: {e}"))),
                },
                _ = term.recv() => break Ended::Stop,
                _ = int.recv() => break Ended::Stop,
                _ = tick.tick() => {
                    if let (true, Some(v)) = (trial, &chosen.version) {
                        if checked_in(&opts.state_dir, v, started) {
                            layout.write_record(&UpgradeReport {
                                state: UpgradeState::Upgraded,
                                version: v.clone(),
                                from: layout.previous(),
                                reason: None,
                                at: clock.now(),
                            })?;
                            tracing::info!(version = %v, "the new version checked in: upgraded");
                            trial = false;
                        } else if tokio::time::Instant::now() >= deadline {
                            break Ended::TrialExpired;
                        }
                    } else if layout.current() != chosen.version {
                        break Ended::Switched;
                    }
                }
            }
        };
        match ended {
            Ended::Exited(status) => match (&chosen.version, trial) {
                (Some(v), true) => {
                    let reason = format!("version {v} exited ({status}) before it checked in");
                    tracing::error!(code = %ErrorCode::UpgradeRolledBack, "{reason}; rolling back");
                    roll_back(&opts.state_dir, v, &reason, clock.now())?;
                }
                _ if status.code() == Some(i32::from(EXIT_RESTART)) => {
                    tracing::info!(version = %shown, "the agent asked to be restarted into the chosen version");
                }
                _ => {
                    tracing::info!(version = %shown, %status, "the agent stopped");
                    return Ok(status
                        .code()
                        .and_then(|c| u8::try_from(c).ok())
                        .map_or(ExitCode::FAILURE, ExitCode::from));
                }
            },
            Ended::Stop => {
                stop(&mut child).await;
                return Ok(ExitCode::SUCCESS);
            }
            Ended::TrialExpired => {
                stop(&mut child).await;
                if let Some(v) = &chosen.version {
                    let reason = format!(
                        "version {v} did not check in within {}",
                        humantime::format_duration(opts.check_in_within)
                    );
                    tracing::error!(code = %ErrorCode::UpgradeRolledBack, "{reason}; rolling back");
                    roll_back(&opts.state_dir, v, &reason, clock.now())?;
                }
            }
            Ended::Switched => {
                tracing::info!(from = %shown, "the chosen version changed; restarting the agent");
                stop(&mut child).await;
            }
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn fake_binary(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, b"#!/bin/sh\nexit 0\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn versions_that_are_not_plain_are_refused() {
        for ok in ["1.2.3", "0.1.0-rc.1", "9.9.9+build.7"] {
            check_version(ok).expect(ok);
        }
        for bad in [
            "",
            "../x",
            "1/2",
            "1..2",
            "v1.2",
            ".1",
            "1 2",
            "1\n",
            &"1".repeat(65),
        ] {
            let e = check_version(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::UpgradeVersionInvalid, "{bad:?}");
        }
    }

    #[test]
    fn without_a_pointer_the_packaged_binary_is_chosen_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packaged = dir.path().join("packaged");
        let e = choose(dir.path(), &packaged, now()).expect_err("nothing to run");
        assert_eq!(e.code, ErrorCode::UpgradeNoBinary);
        fake_binary(&packaged);
        let chosen = choose(dir.path(), &packaged, now()).expect("packaged");
        assert_eq!(chosen.path, packaged);
        assert_eq!(chosen.version, None);
        assert!(!chosen.trial);
    }

    #[test]
    fn hostile_or_dangling_pointers_fall_back_to_the_packaged_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packaged = dir.path().join("packaged");
        fake_binary(&packaged);
        let bin = dir.path().join(BIN_DIR);
        std::fs::create_dir_all(&bin).expect("mkdir");
        for text in ["../../etc\n", "9.9.9\n", "", "\u{0}\u{1}garbage"] {
            std::fs::write(bin.join(CURRENT), text).expect("pointer");
            let chosen = choose(dir.path(), &packaged, now()).expect("packaged");
            assert_eq!(chosen.path, packaged, "{text:?}");
        }
        // A torn record is ignored too.
        std::fs::write(bin.join(RECORD), b"{\"state\":").expect("record");
        assert_eq!(report(dir.path()), None);
    }

    #[test]
    fn a_switched_version_is_on_trial_until_recorded_and_rolls_back_to_the_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packaged = dir.path().join("packaged");
        fake_binary(&packaged);
        let layout = Layout::new(dir.path());
        for v in ["1.0.0", "2.0.0"] {
            fake_binary(&layout.binary(v));
        }
        layout
            .write_pointer(PREVIOUS, Some("1.0.0"))
            .expect("previous");
        layout
            .write_pointer(CURRENT, Some("2.0.0"))
            .expect("current");
        layout
            .write_record(&UpgradeReport {
                state: UpgradeState::Upgrading,
                version: "2.0.0".into(),
                from: Some("1.0.0".into()),
                reason: None,
                at: now(),
            })
            .expect("record");
        let chosen = choose(dir.path(), &packaged, now()).expect("chosen");
        assert_eq!(chosen.version.as_deref(), Some("2.0.0"));
        assert!(chosen.trial);
        roll_back(dir.path(), "2.0.0", "it crashed", now()).expect("rollback");
        let chosen = choose(dir.path(), &packaged, now()).expect("chosen");
        assert_eq!(chosen.version.as_deref(), Some("1.0.0"));
        assert!(!chosen.trial);
        let r = report(dir.path()).expect("record");
        assert_eq!(r.state, UpgradeState::RolledBack);
        assert_eq!(r.reason.as_deref(), Some("it crashed"));
        assert_eq!(r.from.as_deref(), Some("1.0.0"));
    }

    #[test]
    fn an_install_cut_off_before_its_switch_is_closed_as_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packaged = dir.path().join("packaged");
        fake_binary(&packaged);
        let layout = Layout::new(dir.path());
        fake_binary(&layout.binary("2.0.0"));
        layout
            .write_record(&UpgradeReport {
                state: UpgradeState::Upgrading,
                version: "2.0.0".into(),
                from: None,
                reason: None,
                at: now(),
            })
            .expect("record");
        // `upgrade status` shows it closed, but writes nothing.
        let shown = last_upgrade(dir.path()).expect("shown");
        assert_eq!(shown.state, UpgradeState::RolledBack);
        assert_eq!(peek(dir.path(), &packaged).expect("peek").path, packaged);
        assert_eq!(
            report(dir.path()).expect("record").state,
            UpgradeState::Upgrading,
            "peeking wrote nothing"
        );
        let chosen = choose(dir.path(), &packaged, now()).expect("chosen");
        assert_eq!(chosen.path, packaged);
        let r = report(dir.path()).expect("record");
        assert_eq!(r.state, UpgradeState::RolledBack);
        assert!(
            r.reason
                .as_deref()
                .unwrap_or_default()
                .contains("interrupted"),
            "{r:?}"
        );
    }
}
