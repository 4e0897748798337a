//! A real Postfix on 127.0.0.1 with its own configuration directory, queue
//! and log (never the system instance): `smtpd` on a free port offering
//! STARTTLS with the given certificate. It accepts no mail for anyone.
//!
//! The instance is the Postfix master run in the foreground (`master -c
//! DIR -d`) with a minimal `master.cf` (smtpd and the services it talks to:
//! tlsmgr, anvil, proxymap, postlogd). `postfix -c DIR check` first creates
//! the queue directories with their owners. Killing the master ends the
//! whole instance: every Postfix daemon exits when its master's status pipe
//! closes.

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening_within};

/// Postfix's master re-reads its state at start; on a loaded two-core
/// machine it takes a few seconds to listen.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// `postfix check` walks the installation's file list.
const CHECK_WITHIN: Duration = Duration::from_secs(60);

pub struct Postfix {
    pub port: u16,
    _child: Child,
    _dir: Scratch,
}

impl Postfix {
    /// SMTP with STARTTLS using `cert` (a PEM chain) and `key`. Needs root
    /// (the master binds the port and runs its daemons as `postfix`).
    pub async fn start(cert: &Path, key: &Path) -> Postfix {
        let dir = Scratch::new("postfix");
        {
            use std::os::unix::fs::PermissionsExt;
            // The daemons run as `postfix`: they must reach the queue.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod 0755 on a directory this process made");
        }
        let d = dir.path().display();
        let port = free_port();
        std::fs::write(
            dir.path().join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 maillog_file_prefixes = {d}\n\
                 maillog_file = {d}/postfix.log\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 myhostname = mail.test\n\
                 smtpd_banner = $myhostname ESMTP\n\
                 mydestination =\n\
                 mynetworks = 127.0.0.0/8\n\
                 local_recipient_maps =\n\
                 alias_maps =\n\
                 alias_database =\n\
                 smtpd_relay_restrictions = reject\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {cert}\n\
                 smtpd_tls_key_file = {key}\n",
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("main.cf");
        // Columns: service type private unpriv chroot wakeup maxproc command.
        std::fs::write(
            dir.path().join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 tlsmgr unix - - n 1000? 1 tlsmgr\n\
                 anvil unix - - n - 1 anvil\n\
                 proxymap unix - - n - - proxymap\n\
                 postlog unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .expect("master.cf");
        for sub in ["queue", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("postfix directories");
        }
        let log = dir.path().join("postfix.log");
        run(
            Command::new(program("postfix"))
                .arg("-c")
                .arg(dir.path())
                .arg("check"),
            &log,
        )
        .await;
        run(
            Command::new(program("chown"))
                .arg("postfix")
                .arg(dir.path().join("data")),
            &log,
        )
        .await;
        let mut child = spawn_logged(
            Command::new(master())
                .arg("-c")
                .arg(dir.path())
                // In the foreground, so the test owns the process.
                .arg("-d"),
            dir.path(),
            "master",
        );
        let out = dir.path().join("master.out");
        wait_listening_within(
            &mut child,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            "postfix (smtpd)",
            &[&out, &log],
            READY_WITHIN,
        )
        .await;
        Postfix {
            port,
            _child: child,
            _dir: dir,
        }
    }
}

/// The master daemon: in Postfix's daemon directory, not on `PATH`.
fn master() -> std::path::PathBuf {
    let daemon_dir = std::process::Command::new(program("postconf"))
        .args(["-d", "-h", "daemon_directory"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "/usr/lib/postfix/sbin".to_owned());
    Path::new(&daemon_dir).join("master")
}

/// Runs a preparation step to its end (bounded), or panics with its output
/// and Postfix's log.
async fn run(cmd: &mut Command, log: &Path) {
    let what = format!("{cmd:?}");
    let out = tokio::time::timeout(CHECK_WITHIN, cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CHECK_WITHIN:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}
