//! Programs, ports, scratch directories and readiness waits: what every
//! lab component needs before it can serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The default bound on a readiness wait. Programs that start slowly on a
/// loaded two-core machine (Python's mitmproxy) pass their own.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Where a program installed by `scripts/install-test-deps.sh` lives: the
/// first match on `PATH`, then in the usual binary directories (`sbin` is
/// not always on a test's `PATH`; pip puts programs in `/usr/local/bin`).
///
/// # Panics
/// When the program is missing, naming the install script: lab tests fail,
/// they never skip.
pub fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run scripts/install-test-deps.sh (lab tests never skip)"
            )
        })
}

/// A loopback TCP port nothing listens on right now. Another process may
/// take it before the caller binds it; components that start a program on
/// it retry with a fresh port when the program cannot bind.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 works");
    l.local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// A directory under the system temp dir, named after `tag` so a leftover
/// is recognisable, removed with everything in it when dropped.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tether-{tag}-"))
            .tempdir()
            .expect("the temp dir is writable");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Opens the directory to every user: programs that drop root for
    /// their own user (squid) must write their logs here.
    pub fn open_to_all(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod 0777 on a directory this process made");
    }
}

/// Starts `cmd` with stdin closed and stdout and stderr appended to
/// `dir/<name>.out`, killed when the returned child is dropped.
pub fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> Child {
    let out = std::fs::File::create(dir.join(format!("{name}.out")))
        .expect("the lab directory is writable");
    let err = out.try_clone().expect("a file handle can be cloned");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Waits (at most 10 s) until `child` accepts TCP connections on
/// 127.0.0.1:`port`. If it exits first, or the time runs out, the panic
/// shows the given log files.
pub async fn wait_listening(child: &mut Child, port: u16, what: &str, logs: &[&Path]) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening_within(child, addr, what, logs, READY_WITHIN).await;
}

/// [`wait_listening`] on any address, with its own bound.
pub async fn wait_listening_within(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    logs: &[&Path],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {addr}:\n{}",
                read_logs(logs)
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} did not listen on {addr} within {within:?}:\n{}",
                read_logs(logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The contents of each log, headed by its path (missing ones say so).
pub(crate) fn read_logs(logs: &[&Path]) -> String {
    logs.iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
            format!("--- {}\n{text}", p.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("still free");
    }

    #[test]
    fn scratch_dirs_go_away() {
        let s = Scratch::new("selftest");
        let p = s.path().to_path_buf();
        std::fs::write(p.join("f"), b"x").expect("write");
        assert!(
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tether-selftest-"))
        );
        drop(s);
        assert!(!p.exists());
    }

    #[tokio::test]
    async fn a_program_that_dies_is_reported_with_its_log() {
        let dir = Scratch::new("selftest");
        let mut child = spawn_logged(
            Command::new(program("sh")).args(["-c", "echo no such luck >&2; exit 3"]),
            dir.path(),
            "sh",
        );
        let log = dir.path().join("sh.out");
        let port = free_port();
        let res = tokio::spawn(async move {
            wait_listening(&mut child, port, "sh", &[&log]).await;
        })
        .await;
        let panic = res.expect_err("wait_listening panics");
        let msg = panic
            .into_panic()
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default();
        assert!(msg.contains("exited with exit status: 3"), "{msg}");
        assert!(msg.contains("no such luck"), "{msg}");
    }
}
