//! `tether quickstart` and its agent child: stopping the quickstart by
//! SIGTERM (a `timeout`, `kill`, a service manager) or killing it by SIGKILL
//! must not leave the agent running as an orphan. Real processes.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::lab::{Scratch, tether_bin};

/// Whether `pid` runs (a zombie nobody reaped yet counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The child of `parent` that runs `tether agent run`, once it exists.
async fn agent_child(parent: u32, quickstart: &mut Child, log: &std::path::Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if ppid == Some(parent) && cmdline.contains("agent run") {
                return pid;
            }
        }
        if let Ok(Some(status)) = quickstart.try_wait() {
            panic!(
                "quickstart exited with {status} before starting its agent: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "quickstart started no agent within 90 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    !alive(pid)
}

fn start(data: &Scratch) -> (Child, std::path::PathBuf) {
    let log = data.path().join("quickstart.log");
    let child = Command::new(tether_bin())
        .args([
            "quickstart",
            "--listen",
            "127.0.0.1:0",
            "--checkin-interval",
            "5",
        ])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("tether quickstart starts");
    (child, log)
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success());
}

/// SIGTERM while the tour is still setting up (waiting for the first
/// check-in): the agent stops with it.
#[tokio::test]
async fn sigterm_to_quickstart_stops_its_agent() {
    let data = Scratch::new("quickstart-term");
    let (mut qs, log) = start(&data);
    let pid = qs.id().expect("pid");
    let agent = agent_child(pid, &mut qs, &log).await;
    signal(pid, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), qs.wait())
        .await
        .expect("quickstart stops within 20 s of SIGTERM")
        .expect("waits");
    let stopped = gone_within(agent, Duration::from_secs(10)).await;
    if !stopped {
        signal(agent, "-KILL");
    }
    assert!(
        stopped,
        "the agent {agent} outlived the quickstart ({status}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// SIGKILL cannot be caught: the agent asked the kernel for SIGTERM when
/// its parent dies, and stops.
#[tokio::test]
async fn sigkill_of_quickstart_stops_its_agent() {
    let data = Scratch::new("quickstart-kill");
    let (mut qs, log) = start(&data);
    let pid = qs.id().expect("pid");
    let agent = agent_child(pid, &mut qs, &log).await;
    // Give the agent time to install its parent-death signal (it does so
    // before anything else) so the test shows the kernel's doing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(agent), "the agent runs");
    qs.kill().await.expect("SIGKILL");
    let stopped = gone_within(agent, Duration::from_secs(10)).await;
    if !stopped {
        signal(agent, "-KILL");
    }
    assert!(
        stopped,
        "the agent {agent} outlived a SIGKILLed quickstart: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
