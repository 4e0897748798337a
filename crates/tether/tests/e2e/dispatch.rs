//! `tether agent X` and `tether-agent X` are one command: the same
//! arguments give the same exit code from both binaries, usage errors
//! included.

use crate::lab::{agent_bin, tether_bin};

fn code(bin: &std::path::Path, args: &[&str]) -> Option<i32> {
    std::process::Command::new(bin)
        .args(args)
        .env_remove("TETHER_AGENT_STATE_DIR")
        .output()
        .expect("runs")
        .status
        .code()
}

#[test]
fn both_binaries_exit_alike_for_every_agent_command_line() {
    let cases: &[(&[&str], Option<i32>)] = &[
        // `doctor`, `update` and `defs` promise 3 when they cannot run.
        (&["update", "--bogus"], Some(3)),
        (&["update", "--now", "--state-dir"], Some(3)),
        (&["defs", "status", "--bogus"], Some(3)),
        (&["defs", "frobnicate"], Some(3)),
        (&["defs"], Some(3)),
        (&["doctor", "--bogus"], Some(3)),
        (&["doctor", "--deadline", "soon"], Some(3)),
        // Everything else keeps clap's usage code.
        (&["run", "--bogus"], Some(2)),
        (&["enroll"], Some(2)),
        (&["posture", "--nope"], Some(2)),
        (&["frobnicate"], Some(2)),
        (&[], Some(2)),
        // Help is not an error.
        (&["update", "--help"], Some(0)),
        (&["run", "--help"], Some(0)),
    ];
    for (args, expected) in cases {
        let endpoint = code(&agent_bin(), args);
        let mut via_tether = vec!["agent"];
        via_tether.extend_from_slice(args);
        let tether = code(&tether_bin(), &via_tether);
        assert_eq!(
            endpoint,
            tether,
            "`tether-agent {0}` and `tether agent {0}` differ",
            args.join(" ")
        );
        assert_eq!(endpoint, *expected, "`tether-agent {}`", args.join(" "));
    }
    // `tether doctor` is `tether agent doctor`.
    assert_eq!(code(&tether_bin(), &["doctor", "--bogus"]), Some(3));
}
