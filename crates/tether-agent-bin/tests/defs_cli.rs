//! The definitions commands of the real `tether-agent` binary, run as
//! separate processes (as operators and the end-to-end tests run them):
//! exit codes, the policy's refusal of user updates, and `defs status`.

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether-agent"))
        .args(args)
        .env_remove("TETHER_AGENT_STATE_DIR")
        .output()
        .expect("tether-agent runs")
}

/// An enrolled-looking state dir whose cached policy subscribes to `sigs`.
/// No server is needed: every command here decides from local files.
fn state_dir(allow_user_update: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = serde_json::json!({
        "agent_id": "00000000-0000-0000-0000-000000000001",
        "enrolled_at": "2026-05-17T12:00:00Z",
        "installed_at": "2026-05-17T12:00:00Z",
        "server": "https://127.0.0.1:9/",
        "policy": {
            "name": "locked",
            "revision": 4,
            "checkin_interval_secs": 60,
            "jitter_percent": 10,
            "defs": {
                "channels": ["sigs"],
                "interval_secs": 21600,
                "allow_user_update": allow_user_update
            }
        }
    });
    std::fs::write(dir.path().join("state.json"), state.to_string()).expect("state.json");
    std::fs::write(
        dir.path().join("agent.toml"),
        "server = \"https://127.0.0.1:9/\"\nsystem_roots = true\n",
    )
    .expect("agent.toml");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn update_now_is_refused_with_e6009_and_exit_3_when_the_policy_forbids_it() {
    let dir = state_dir(false);
    let out = agent(&["update", "--now", "--state-dir", path(dir.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("TETHER-E6009"), "{stderr}");
    assert!(stderr.contains("allow_user_update = false"), "{stderr}");
    assert!(stderr.contains("\"locked\" (revision 4)"), "{stderr}");
    assert!(stderr.contains("queue a definitions update"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn update_without_now_or_with_bad_arguments_exits_3() {
    let dir = state_dir(true);
    for args in [
        vec!["update", "--state-dir", path(dir.path())],
        vec!["defs", "import", "--state-dir", path(dir.path())],
        vec!["defs", "frobnicate"],
    ] {
        let out = agent(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
    }
    let help = agent(&["update", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--channel"));
}

#[test]
fn update_of_a_channel_outside_the_policy_and_of_an_unenrolled_dir_exit_3() {
    let dir = state_dir(true);
    let out = agent(&[
        "update",
        "--now",
        "--channel",
        "other",
        "--state-dir",
        path(dir.path()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not in this agent's policy"), "{stderr}");

    let empty = tempfile::tempdir().expect("tempdir");
    let out = agent(&["update", "--now", "--state-dir", path(empty.path())]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TETHER-E1"));
}

#[test]
fn import_of_a_file_that_is_not_a_bundle_exits_2() {
    let dir = state_dir(true);
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").expect("writes");
    let out = agent(&[
        "defs",
        "import",
        "--state-dir",
        path(dir.path()),
        path(&junk),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TETHER-E6013"), "{stdout}");
}

#[test]
fn defs_status_prints_text_and_json() {
    let dir = state_dir(false);
    let out = agent(&["defs", "status", "--state-dir", path(dir.path()), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["allow_user_update"], false);
    assert_eq!(json["interval_secs"], 21600);
    assert_eq!(json["servers"][0], "https://127.0.0.1:9/defs/");
    assert_eq!(json["channels"][0]["channel"], "sigs");
    assert_eq!(json["channels"][0]["version"], serde_json::Value::Null);

    let out = agent(&["defs", "status", "--state-dir", path(dir.path())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(text.contains("sigs: nothing installed yet"), "{text}");
    assert!(text.contains("not allowed by the policy"), "{text}");
    assert!(text.contains("Cool-down: none."), "{text}");
}
