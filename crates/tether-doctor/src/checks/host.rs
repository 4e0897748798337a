//! `host.disk`, `host.perms`, `host.service` and `host.version`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tether_wire::ErrorCode;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

/// Below this much free space the agent cannot stage a definitions update
/// next to the installed copy, nor keep its logs: a failure.
const FAIL_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Below this much, a warning. The thresholds are absolute on purpose: what
/// the agent needs is bytes, and "4 % free" of a 250 GiB disk is 10 GiB.
const WARN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

/// 0 = fine, 1 = warn, 2 = fail.
fn disk_level(free: u64) -> u8 {
    if free < FAIL_FREE_BYTES {
        2
    } else if free < WARN_FREE_BYTES {
        1
    } else {
        0
    }
}

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let dirs: Vec<(&str, PathBuf)> = [
        ("state_dir", &ctx.input.state_dir),
        ("log_dir", &ctx.input.log_dir),
    ]
    .into_iter()
    .filter_map(|(k, d)| d.clone().map(|d| (k, d)))
    .collect();
    let disk = disk(&dirs);
    let perms = perms(&dirs);
    let service = service(&ctx).await;
    TaskOutput {
        results: vec![disk, perms, service],
        blocked_by: None,
    }
}

fn disk(dirs: &[(&str, PathBuf)]) -> CheckResult {
    let mut r = CheckResult::pass("host.disk", "Disk space");
    if dirs.is_empty() {
        return r.with("note", "no state or log directory given");
    }
    let mut worst: Option<(u8, String)> = None;
    let mut seen = Vec::new();
    for (key, dir) in dirs {
        let probe = existing_ancestor(dir);
        match nix::sys::statvfs::statvfs(&probe) {
            // The field types of statvfs differ between platforms.
            #[allow(clippy::unnecessary_cast)]
            Ok(st) => {
                let frsize = st.fragment_size() as u64;
                let free = st.blocks_available() as u64 * frsize;
                let total = st.blocks() as u64 * frsize;
                let pct = if total == 0 {
                    100.0
                } else {
                    free as f64 * 100.0 / total as f64
                };
                seen.push(json!({
                    "dir": key, "path": dir.display().to_string(),
                    "free_bytes": free, "total_bytes": total, "free_percent": (pct * 10.0).round() / 10.0,
                }));
                let level = disk_level(free);
                if level > 0 && worst.as_ref().is_none_or(|(l, _)| level > *l) {
                    worst = Some((
                        level,
                        format!(
                            "The file system holding the {} {} has {} free of {} ({:.1} %).",
                            key.replace('_', " "),
                            dir.display(),
                            bytes(free),
                            bytes(total),
                            pct
                        ),
                    ));
                }
            }
            Err(e) => seen.push(
                json!({ "dir": key, "path": dir.display().to_string(), "error": e.to_string() }),
            ),
        }
    }
    r.set("filesystems", seen);
    match worst {
        Some((2, p)) => r.fail(ErrorCode::DiskNearlyFull, p),
        Some((_, p)) => r.warn(ErrorCode::DiskNearlyFull, p),
        None => r,
    }
}

fn perms(dirs: &[(&str, PathBuf)]) -> CheckResult {
    let euid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(euid)
        .ok()
        .flatten()
        .map(|u| u.name);
    let mut r = CheckResult::pass("host.perms", "Permissions")
        .with("euid", euid.as_raw())
        .with("user", user.clone().unwrap_or_default())
        .with("root", euid.is_root());
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for (key, dir) in dirs {
        let writable = if dir.exists() {
            writable(dir)
        } else {
            Err("does not exist".to_owned())
        };
        checked.push(
            json!({ "dir": key, "path": dir.display().to_string(), "writable": writable.is_ok(),
            "error": writable.as_ref().err() }),
        );
        if let Err(e) = writable {
            problems.push(format!(
                "the {} {} is not writable by {} ({e})",
                key.replace('_', " "),
                dir.display(),
                user.clone().unwrap_or_else(|| format!("uid {euid}"))
            ));
        }
    }
    r.set("dirs", checked);
    if problems.is_empty() {
        r
    } else {
        let mut p = problems.join("; ");
        if let Some(first) = p.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        r.fail(ErrorCode::StateDirUnwritable, format!("{p}."))
    }
}

/// Creates and removes a probe file: the only honest test of writability
/// (permission bits do not tell about read-only mounts, ACLs or quotas).
fn writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".tether-doctor-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| e.to_string())
}

fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

async fn service(ctx: &Ctx) -> CheckResult {
    let name = ctx.world.service_name.clone();
    let r = CheckResult::pass("host.service", "Service").with("unit", name.as_str());
    let Some(systemctl) = ctx.world.systemctl.clone().filter(|p| p.exists()) else {
        return CheckResult::skipped("host.service", "Service", "systemd (systemctl not found)")
            .with("unit", name.as_str());
    };
    let limit = ctx.limit(std::time::Duration::from_secs(3));
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(&systemctl)
            .args(["is-active", &name])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(o)) => {
            let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let r = r.with("state", state.as_str());
            if state == "active" {
                r
            } else if !ctx.input.enrolled {
                r.with(
                    "note",
                    "not enrolled: the service is not expected to run yet",
                )
            } else {
                r.fail(
                    ErrorCode::ServiceNotRunning,
                    format!("The {name} service is {state}, not active."),
                )
            }
        }
        Ok(Err(e)) => CheckResult::skipped(
            "host.service",
            "Service",
            format!("systemd ({} failed: {e})", systemctl.display()),
        ),
        Err(_) => CheckResult::skipped(
            "host.service",
            "Service",
            "systemd (systemctl did not answer in time)",
        ),
    }
}

/// `host.version`: this agent's version against the server's current one.
pub(crate) async fn version(ctx: Arc<Ctx>) -> TaskOutput {
    let (current, server) = {
        let f = ctx.found();
        (f.current_agent_version.clone(), f.server_version.clone())
    };
    let mine = ctx.input.agent_version.clone();
    let mut r =
        CheckResult::pass("host.version", "Agent version").with("agent_version", mine.as_str());
    if let Some(s) = &server {
        r.set("server_version", s.as_str());
    }
    match &current {
        Some(c) => {
            r.set("current_agent_version", c.as_str());
            if older(&mine, c) {
                r = r.warn(
                    ErrorCode::AgentVersionOutdated,
                    format!("This agent is {mine}; the server's current agent version is {c}."),
                );
            }
        }
        None => r.set(
            "current_agent_version",
            "unknown (the server names it at check-in)",
        ),
    }
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}

/// Whether dotted version `a` is older than `b` (numeric parts; anything
/// after `-` or `+` ignored; unparsable versions are never "older").
pub(crate) fn older(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?
            .split('.')
            .map(|p| p.parse().ok())
            .collect()
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x < y,
        _ => false,
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n as f64 >= 1024.0 * MIB {
        format!("{:.1} GiB", n as f64 / (1024.0 * MIB))
    } else if n as f64 >= MIB {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{} KiB", n / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(older("0.9.0", "0.10.0"));
        assert!(older("1.2", "1.2.1"));
        assert!(!older("1.2.1", "1.2.1"));
        assert!(!older("v2.0.0-rc1", "1.9.9"));
        assert!(!older("garbage", "1.0.0"));
    }

    #[test]
    fn a_writable_dir_passes_and_a_missing_one_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = perms(&[("state_dir", dir.path().to_path_buf())]);
        assert_eq!(r.status, crate::Status::Pass, "{r:?}");
        let r = perms(&[("state_dir", dir.path().join("missing"))]);
        assert_eq!(r.code, Some(ErrorCode::StateDirUnwritable));
        assert!(
            r.problem
                .as_deref()
                .unwrap_or("")
                .starts_with("The state dir"),
            "{r:?}"
        );
    }

    #[test]
    fn disk_levels_are_absolute_not_a_percentage() {
        const GIB: u64 = 1024 * 1024 * 1024;
        // 11.7 GiB free of a 252 GiB disk (4.6 %) is plenty for an agent.
        assert_eq!(disk_level(11 * GIB), 0);
        assert_eq!(disk_level(GIB), 0);
        assert_eq!(disk_level(GIB - 1), 1);
        assert_eq!(disk_level(64 * 1024 * 1024), 1);
        assert_eq!(disk_level(64 * 1024 * 1024 - 1), 2);
        assert_eq!(disk_level(0), 2);
    }

    #[test]
    fn disk_space_of_a_real_directory_is_measured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = disk(&[("state_dir", dir.path().join("not-yet-created"))]);
        let fs = &r.evidence["filesystems"][0];
        assert!(fs["total_bytes"].as_u64().unwrap_or(0) > 0, "{r:?}");
    }
}
