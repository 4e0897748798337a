//! A real OpenSSH server (Debian's `openssh-server`) inside a network
//! namespace of the test's own: its own config, host key, pid file and
//! authorized keys, in the foreground (`sshd -D -e`), never the service.
//!
//! It serves one local account made for the lab ([`LabUser`]: named
//! after this process's id, with a random password, removed on drop), so
//! key, password and `sudo -n` logins are all real. A sudoers drop-in for
//! that account is written or removed on demand.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::netns::Netns;
use crate::process::read_logs;
use crate::{Scratch, program, spawn_logged, wait_listening_within};

/// A local account for the lab, with a password; deleted on drop, with its
/// sudoers drop-in.
pub struct LabUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub password: String,
    sudoers: PathBuf,
}

fn must(cmd: &mut StdCommand, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LabUser {
    /// `tlab-ssh-PID`, with a random password and `/bin/sh`.
    pub fn new(home: &Path) -> LabUser {
        use base64::Engine;
        let name = format!("tlab-ssh-{}", std::process::id());
        // A leftover of an earlier run of this pid goes first.
        let _ = StdCommand::new(program("userdel"))
            .args(["-f", &name])
            .stderr(Stdio::null())
            .status();
        must(
            StdCommand::new(program("useradd")).args([
                "-M",
                "-U",
                "-s",
                "/bin/sh",
                "-d",
                &home.display().to_string(),
                &name,
            ]),
            "useradd",
        );
        let mut random = [0u8; 18];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut random))
                .expect("/dev/urandom");
        }
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let mut chpasswd = StdCommand::new(program("chpasswd"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        {
            use std::io::Write;
            let mut stdin = chpasswd.stdin.take().expect("stdin");
            writeln!(stdin, "{name}:{password}").expect("chpasswd input");
        }
        assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd");
        let id = |flag: &str| -> u32 {
            must(StdCommand::new(program("id")).args([flag, &name]), "id")
                .trim()
                .parse()
                .expect("a number")
        };
        LabUser {
            uid: id("-u"),
            gid: id("-g"),
            sudoers: PathBuf::from(format!("/etc/sudoers.d/tlab-ssh-{}", std::process::id())),
            name,
            password,
        }
    }

    /// Lets the account run anything through `sudo -n` (true), or nothing.
    pub fn allow_sudo(&self, allow: bool) {
        use std::os::unix::fs::PermissionsExt;
        if allow {
            std::fs::write(
                &self.sudoers,
                format!("{} ALL=(root) NOPASSWD: ALL\n", self.name),
            )
            .expect("sudoers drop-in");
            std::fs::set_permissions(&self.sudoers, std::fs::Permissions::from_mode(0o440))
                .expect("chmod 0440");
        } else {
            let _ = std::fs::remove_file(&self.sudoers);
        }
    }

    /// Gives a path (recursively) to the account.
    pub fn chown(&self, path: &Path) {
        must(
            StdCommand::new(program("chown")).args([
                "-R",
                &format!("{}:{}", self.uid, self.gid),
                &path.display().to_string(),
            ]),
            "chown",
        );
    }
}

impl Drop for LabUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = StdCommand::new(program("userdel"))
            .args(["-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An OpenSSH key pair made by `ssh-keygen` (ed25519).
pub struct KeyPair {
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

impl KeyPair {
    /// A new key at `path` (and `path.pub`), encrypted with `passphrase`
    /// when one is given.
    pub fn generate(path: &Path, passphrase: &str) -> KeyPair {
        must(
            StdCommand::new(program("ssh-keygen")).args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                passphrase,
                "-C",
                "tether-lab",
                "-f",
                &path.display().to_string(),
            ]),
            "ssh-keygen",
        );
        let pub_path = PathBuf::from(format!("{}.pub", path.display()));
        let public = std::fs::read_to_string(&pub_path)
            .expect("public key")
            .trim()
            .to_owned();
        let listed = must(
            StdCommand::new(program("ssh-keygen")).args(["-lf", &pub_path.display().to_string()]),
            "ssh-keygen -lf",
        );
        let fingerprint = listed
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen -lf prints BITS FINGERPRINT …")
            .to_owned();
        KeyPair {
            private: path.to_owned(),
            public,
            fingerprint,
        }
    }
}

pub struct Sshd {
    pub addr: SocketAddr,
    pub host_key: KeyPair,
    dir: Scratch,
    _child: Child,
}

impl Sshd {
    /// Starts sshd on `ns.ns_ip:22` inside `ns`, accepting the public keys
    /// in `authorized` (for every account) and passwords.
    pub async fn start(ns: &Netns, authorized: &[&str]) -> Sshd {
        let dir = Scratch::new("sshd");
        let d = dir.path();
        let host_key = KeyPair::generate(&d.join("host_ed25519"), "");
        std::fs::write(d.join("authorized_keys"), authorized.join("\n") + "\n")
            .expect("authorized_keys");
        let ip: Ipv4Addr = ns.ns_ip;
        let conf = d.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {ip}:22\n\
                 HostKey {hk}\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 PermitRootLogin no\n\
                 MaxAuthTries 3\n\
                 LogLevel VERBOSE\n",
                hk = host_key.private.display(),
                d = d.display()
            ),
        )
        .expect("sshd_config");
        // The privilege separation directory the package's service makes.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let sshd = program("sshd");
        let mut child = spawn_logged(
            Command::new(program("ip"))
                .args(["netns", "exec", &ns.name])
                .arg(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&conf),
            d,
            "sshd",
        );
        let addr = SocketAddr::from((ip, 22));
        let log = d.join("sshd.out");
        wait_listening_within(&mut child, addr, "sshd", &[&log], Duration::from_secs(10)).await;
        Sshd {
            addr,
            host_key,
            dir,
            _child: child,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        read_logs(&[&self.dir.path().join("sshd.out")])
    }
}
