//! `openssl s_server` serving the certificate and key of a PKCS#12
//! keystore, restarted by a reload script: what a Java service reading its
//! keystore at restart does, at the cost of one openssl process.
//!
//! The script (`/bin/sh SCRIPT`) stops the previous server (pid file),
//! starts a new one from the keystore with the password file, and fails if
//! it does not stay up (a keystore it cannot open). The server gets
//! `/dev/null` as stdin and a log file as output, so it holds neither the
//! deployer's reload lock nor its output pipes. Dropping the value stops
//! the last server.

use std::path::{Path, PathBuf};

use crate::process::free_port;

pub struct KeystoreServer {
    pub port: u16,
    pub script: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
}

impl KeystoreServer {
    /// Writes the script under `dir` for `keystore` opened with the
    /// password in `pass_file`. Starts nothing: run [`Self::reload`] (or let
    /// the deploy's reload run the script).
    pub fn new(dir: &Path, keystore: &Path, pass_file: &Path) -> KeystoreServer {
        let port = free_port();
        let script = dir.join("keystore-reload.sh");
        let pid_file = dir.join("s_server.pid");
        let log = dir.join("s_server.log");
        let pid = pid_file.display();
        std::fs::write(
            &script,
            format!(
                "if [ -f {pid} ]; then\n\
                   p=$(cat {pid}); kill \"$p\" 2>/dev/null\n\
                   for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 \"$p\" 2>/dev/null || break; sleep 0.05; done\n\
                 fi\n\
                 openssl s_server -accept 127.0.0.1:{port} -cert {ks} -pass file:{pass} -www -quiet </dev/null >>{log} 2>&1 &\n\
                 echo $! > {pid}\n\
                 sleep 0.3\n\
                 kill -0 $! 2>/dev/null || {{ echo 's_server did not start'; tail -5 {log}; exit 1; }}\n",
                ks = keystore.display(),
                pass = pass_file.display(),
                log = log.display(),
            ),
        )
        .expect("the reload script can be written");
        KeystoreServer {
            port,
            script,
            pid_file,
            log,
        }
    }

    pub fn reload_command(&self) -> Vec<String> {
        vec!["/bin/sh".into(), self.script.display().to_string()]
    }

    /// Runs the script; true when a server is up.
    pub fn reload(&self) -> bool {
        std::process::Command::new("/bin/sh")
            .arg(&self.script)
            .stdin(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KeystoreServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                let _ = std::process::Command::new("kill").arg(pid).status();
            }
        }
    }
}
