//! libfaketime (the `faketime` package), preloaded to move a process's wall
//! clock; the monotonic clock stays real so timeouts behave.

use std::path::PathBuf;

/// The environment that makes a child process see its wall clock moved by
/// `offset` (libfaketime's syntax, e.g. `+40d`).
pub fn env(offset: &str) -> Vec<(&'static str, String)> {
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
