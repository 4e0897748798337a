//! A remote target's host, reached over SSH (russh): connect with the
//! pinned host key, authenticate with a key or a password read from its
//! secret reference, optionally through `sudo -n`, and run the deploy's
//! file steps there as small POSIX `sh` scripts.
//!
//! Every remote command is `[sudo -n --] /bin/sh -c SCRIPT tether ARGS…`
//! with each piece single-quoted, so a path or an argument is never
//! parsed by the remote login shell. Bytes that must be written (the new
//! key among them) travel only as the command's stdin inside the SSH
//! channel; no secret is ever on a command line or in a step's record.
//!
//! The remote steps keep the local guarantees:
//! - a file is replaced by a temporary beside it (`mktemp`), written,
//!   given its mode and owner, fsynced (`sync FILE`), renamed over the
//!   target (`mv`) and the directory fsynced: never a truncated file;
//! - backups live beside the primary file, in `DIR/.tether-deploy/<id>/`
//!   (0700), so a restore is a rename on one file system;
//! - the reload runs as `flock -w … DIR/.tether-deploy/reload.lock
//!   timeout -k 2 SECS CMD…`: it cannot outlive its timeout even when the
//!   agent is killed, and a restore first waits for the lock, so a reload
//!   orphaned by a kill never reads a half-restored set.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client;
use russh::keys::ssh_key::HashAlg;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tether_wire::ErrorCode;
use tokio::time::Instant;

use crate::redact::redact;
use crate::spec::SshSpec;

/// At most this many bytes of a remote command's stdout are kept (a
/// certificate file or a keystore read back).
pub const MAX_STDOUT: usize = 1 << 20;
/// At most this many bytes of its stderr.
const MAX_STDERR: usize = 16 * 1024;
/// The bound on a file step (stat, backup, write, restore).
pub const FILE_STEP: Duration = Duration::from_secs(60);

/// A remote step that failed: its code and a message without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

fn err(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError {
        code,
        message: message.into().chars().take(1000).collect(),
    }
}

/// What a remote command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None`: it ended by a signal, or the channel closed without a status.
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The exit status and the redacted output, for a step's record.
    pub fn describe(&self) -> String {
        redact(&format!(
            "exit {}\n{}{}",
            self.status
                .map_or_else(|| "by a signal".to_owned(), |c| c.to_string()),
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        ))
    }
}

/// Accepts the server only when its host key's SHA256 fingerprint is the
/// pinned one; remembers what it saw for the refusal's message.
struct Pinned {
    expected: String,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fp = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().fingerprint(HashAlg::Sha256),
        }
        .to_string();
        let ok = fp == self.expected;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        Ok(ok)
    }
}

/// An authenticated SSH session to a remote target's host.
pub struct Session {
    handle: client::Handle<Pinned>,
    sudo: bool,
    /// `user@host:port`.
    pub who: String,
    /// The host key fingerprint that was accepted.
    pub host_key: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("who", &self.who)
            .field("sudo", &self.sudo)
            .finish_non_exhaustive()
    }
}

enum Credential {
    Key(Box<russh::keys::PrivateKey>),
    Password(crate::spec::Secret),
}

fn credential(spec: &SshSpec) -> Result<Credential, RemoteError> {
    let unavailable = |what: &str, e: String| {
        err(
            ErrorCode::DeploySshCredentialUnavailable,
            format!("the SSH {what}: {e}"),
        )
    };
    if let Some(p) = &spec.password {
        return p
            .resolve()
            .map(Credential::Password)
            .map_err(|e| unavailable("password", e));
    }
    let Some(key_ref) = &spec.key else {
        return Err(unavailable("key", "the spec names no key".to_owned()));
    };
    let key_text = read_key(key_ref).map_err(|e| unavailable("key", e))?;
    let passphrase = spec
        .passphrase
        .as_ref()
        .map(|p| p.resolve())
        .transpose()
        .map_err(|e| unavailable("key's passphrase", e))?;
    russh::keys::decode_secret_key(&key_text, passphrase.as_ref().map(|p| p.expose()))
        .map(|k| Credential::Key(Box::new(k)))
        .map_err(|e| {
            unavailable(
                "key",
                format!(
                    "{}: cannot decode it ({}); an OpenSSH or PKCS#8 private key{} is expected",
                    key_ref.0,
                    // The decoder's words name a format, never key bytes.
                    e.to_string().chars().take(120).collect::<String>(),
                    if passphrase.is_some() {
                        " with this passphrase"
                    } else {
                        ", or ssh.passphrase for an encrypted one"
                    }
                ),
            )
        })
}

/// A private key file is several lines, which [`SecretRef::resolve`]
/// refuses for passwords: read it here, bounded, as the same references.
fn read_key(r: &crate::spec::SecretRef) -> Result<String, String> {
    const MAX_KEY: u64 = 64 * 1024;
    let text = if let Some(name) = r.0.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| format!("{}: the agent's environment has no {name}", r.0))?
    } else if let Some(path) = r.0.strip_prefix("file:") {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", r.0))?;
        let mut bytes = Vec::new();
        f.take(MAX_KEY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", r.0))?;
        if bytes.len() as u64 > MAX_KEY {
            return Err(format!("{}: over {MAX_KEY} bytes", r.0));
        }
        String::from_utf8(bytes).map_err(|_| format!("{}: the file is not UTF-8", r.0))?
    } else {
        return Err("not a secret reference (env:NAME or file:/PATH)".to_owned());
    };
    if text.trim().is_empty() {
        return Err(format!("{}: the key is empty", r.0));
    }
    Ok(text)
}

impl Session {
    /// Connects, checks the pinned host key, authenticates and, with
    /// `sudo`, checks that `sudo -n` is allowed. Nothing on the remote host
    /// is changed before this returns.
    pub async fn connect(spec: &SshSpec) -> Result<Session, RemoteError> {
        let who = spec.display();
        let expected = spec
            .pinned_fingerprint()
            .map_err(|e| err(ErrorCode::DeploySpecInvalid, e.to_string()))?;
        // Secrets first: a missing key fails before any connection.
        let cred = credential(spec)?;
        let limit = spec.timeout();
        let deadline = Instant::now() + limit;
        let unreachable =
            |detail: String| err(ErrorCode::DeploySshUnreachable, format!("{who}: {detail}"));
        let stream = tokio::time::timeout_at(
            deadline,
            tokio::net::TcpStream::connect((spec.host.as_str(), spec.port())),
        )
        .await
        .map_err(|_| unreachable(format!("no TCP connection within {} s", limit.as_secs())))?
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let config = Arc::new(client::Config {
            // A server silent this long mid-command is gone; reload
            // commands bound themselves remotely (`timeout`).
            inactivity_timeout: Some(Duration::from_secs(crate::spec::MAX_RELOAD_SECS + 60)),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            ..client::Config::default()
        });
        let seen = Arc::new(Mutex::new(None));
        let handler = Pinned {
            expected: expected.clone(),
            seen: seen.clone(),
        };
        let connected =
            tokio::time::timeout_at(deadline, client::connect_stream(config, stream, handler))
                .await
                .map_err(|_| {
                    unreachable(format!("no SSH handshake within {} s", limit.as_secs()))
                })?;
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                let presented = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(match presented {
                    Some(fp) if fp != expected => err(
                        ErrorCode::DeploySshHostKeyMismatch,
                        format!(
                            "{who} presented host key {fp}; the spec pins {expected}; refused before authenticating"
                        ),
                    ),
                    _ => unreachable(format!("the SSH handshake failed: {e}")),
                });
            }
        };
        let auth = match cred {
            Credential::Key(key) => {
                let hash = tokio::time::timeout_at(deadline, handle.best_supported_rsa_hash())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .flatten()
                    .flatten();
                let key = PrivateKeyWithHashAlg::new(Arc::new(*key), hash);
                tokio::time::timeout_at(
                    deadline,
                    handle.authenticate_publickey(spec.user.clone(), key),
                )
                .await
            }
            Credential::Password(p) => {
                tokio::time::timeout_at(
                    deadline,
                    handle.authenticate_password(spec.user.clone(), p.expose()),
                )
                .await
            }
        };
        let method = if spec.password.is_some() {
            "password"
        } else {
            "key"
        };
        match auth {
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer to authentication within {} s",
                    limit.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(unreachable(format!("authentication broke off: {e}"))),
            Ok(Ok(r)) if !r.success() => {
                let methods = match &r {
                    russh::client::AuthResult::Failure {
                        remaining_methods, ..
                    } => format!("{remaining_methods:?}"),
                    russh::client::AuthResult::Success => String::new(),
                };
                return Err(err(
                    ErrorCode::DeploySshAuthFailed,
                    format!(
                        "{who} refused {method} authentication (the server still offers {methods})"
                    ),
                ));
            }
            Ok(Ok(_)) => {}
        }
        let session = Session {
            handle,
            sudo: spec.sudo,
            who: who.clone(),
            host_key: expected,
        };
        if spec.sudo {
            let out = session
                .run_plain("sudo -n -- /bin/true", None, limit)
                .await?;
            if !out.success() {
                return Err(err(
                    ErrorCode::DeploySshSudoRefused,
                    format!(
                        "{who}: `sudo -n true` refused: {}",
                        redact(out.stderr.trim())
                    ),
                ));
            }
        }
        Ok(session)
    }

    /// Runs `script` under `/bin/sh` (through `sudo -n` when asked), with
    /// `args` as `$1…`, `stdin` as its input, bounded by `limit`.
    pub async fn run(
        &self,
        script: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, RemoteError> {
        let mut cmd = String::new();
        if self.sudo {
            cmd.push_str("sudo -n -- ");
        }
        cmd.push_str("/bin/sh -c ");
        cmd.push_str(&quote(script));
        cmd.push_str(" tether");
        for a in args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        self.run_plain(&cmd, stdin, limit).await
    }

    async fn run_plain(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, RemoteError> {
        let lost = |e: String| {
            err(
                ErrorCode::DeploySshUnreachable,
                format!("{}: the SSH connection failed: {e}", self.who),
            )
        };
        let work = async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| lost(e.to_string()))?;
            ch.exec(true, command.as_bytes())
                .await
                .map_err(|e| lost(e.to_string()))?;
            if let Some(bytes) = stdin {
                ch.data(bytes).await.map_err(|e| lost(e.to_string()))?;
            }
            ch.eof().await.map_err(|e| lost(e.to_string()))?;
            let mut out = Output {
                status: None,
                stdout: Vec::new(),
                stderr: String::new(),
            };
            let mut stderr = Vec::new();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        let room = MAX_STDOUT.saturating_sub(out.stdout.len());
                        out.stdout.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        let room = MAX_STDERR.saturating_sub(stderr.len());
                        stderr.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    _ => {}
                }
            }
            out.stderr = String::from_utf8_lossy(&stderr).into_owned();
            Ok(out)
        };
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(err(
                ErrorCode::DeployRemoteCommandFailed,
                format!(
                    "{}: a remote command did not finish within {} s",
                    self.who,
                    limit.as_secs()
                ),
            ))
        })
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// One argument, single-quoted for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote work directory of a target: `.tether-deploy` beside its
/// primary file.
pub fn work_dir(primary: &Path) -> PathBuf {
    primary
        .parent()
        .unwrap_or(Path::new("/"))
        .join(".tether-deploy")
}

/// What `stat` says of one remote path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stat {
    Missing,
    /// Exists and is not a regular file (a directory, a symlink…).
    NotFile,
    File {
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Each path's state, and the remote user's uid and gid (after sudo).
const STAT: &str = r#"id -u; id -g
for p do
  if [ -L "$p" ]; then echo notfile
  elif [ -f "$p" ]; then stat -c '%a %u %g' -- "$p" || exit 20
  elif [ -e "$p" ]; then echo notfile
  else echo missing
  fi
done"#;

/// `$1`: user name or number, `$2`: group name or number.
const ACCOUNT: &str = r#"u=; g=
if [ -n "$1" ]; then u=$(id -u -- "$1") || { echo "no user named $1 on this host" >&2; exit 21; }; fi
if [ -n "$2" ]; then
  case $2 in (*[!0-9]*) g=$(getent group -- "$2" | cut -d: -f3) ;; (*) g=$2 ;; esac
  [ -n "$g" ] || { echo "no group named $2 on this host" >&2; exit 21; }
fi
echo "$u $g""#;

/// `$1`: path; `$2`: mode (octal); `$3`: `uid:gid` or empty; `$4`: a file
/// to copy from, or empty for stdin. Temporary beside the target, fsync,
/// rename, fsync the directory; the temporary never outlives a failure.
const WRITE: &str = r#"umask 077
p=$1; d=$(dirname -- "$p"); b=$(basename -- "$p")
t=$(mktemp -- "$d/.$b.tether.XXXXXX") || exit 30
trap 'rm -f -- "$t"' EXIT
if [ -n "$4" ]; then cat -- "$4" > "$t" || exit 31; else cat > "$t" || exit 31; fi
chmod -- "$2" "$t" || exit 32
if [ -n "$3" ]; then chown -- "$3" "$t" || exit 33; fi
sync -- "$t" || exit 34
mv -f -- "$t" "$p" || exit 35
trap - EXIT
sync -- "$d" || exit 36"#;

/// `$1`: work dir; `$2`: backup dir; then `role path` pairs.
const BACKUP: &str = r#"umask 077
mkdir -p -- "$1" && chmod 700 -- "$1" || exit 40
rm -rf -- "$2" && mkdir -- "$2" || exit 40
b=$2; shift 2
while [ $# -ge 2 ]; do
  cp -p -- "$2" "$b/$1" || exit 41
  sync -- "$b/$1" || exit 41
  shift 2
done
sync -- "$b" || exit 41"#;

/// `$1`: path. Removes a file the deploy created.
const REMOVE: &str = r#"rm -f -- "$1" || exit 50
sync -- "$(dirname -- "$1")""#;

/// `$1`: a directory to remove with everything in it.
const CLEANUP: &str = r#"rm -rf -- "$1"; sync -- "$(dirname -- "$1")" 2>/dev/null; true"#;

/// `$1`: work dir; `$2`: seconds to wait. Waits until no reload holds the
/// lock (one orphaned by a kill of the agent ends within its timeout).
const WAIT_RELOADS: &str = r#"umask 077
mkdir -p -- "$1" || exit 60
exec flock -w "$2" "$1/reload.lock" true"#;

/// `$1`: work dir; `$2`: lock wait; `$3`: reload timeout; then the
/// command, run without a shell, killed remotely at its timeout.
const RELOAD: &str = r#"umask 077
mkdir -p -- "$1" || exit 60
l=$1/reload.lock; w=$2; s=$3; shift 3
exec flock -w "$w" "$l" timeout -k 2 "$s" "$@""#;

/// `$1`: path. Its bytes, when it is a regular file.
const READ: &str = r#"[ -f "$1" ] || exit 70
exec cat -- "$1""#;

impl Session {
    fn failed(&self, code: ErrorCode, what: &str, out: &Output) -> RemoteError {
        err(
            code,
            format!(
                "{}: {what} failed (exit {}): {}",
                self.who,
                out.status
                    .map_or_else(|| "by a signal".to_owned(), |c| c.to_string()),
                redact(out.stderr.trim()).trim()
            ),
        )
    }

    /// The state of each path, and the remote (effective) uid and gid.
    pub async fn stat(&self, paths: &[&Path]) -> Result<(Vec<Stat>, u32, u32), RemoteError> {
        let args: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(STAT, &args, None, FILE_STEP).await?;
        if !out.success() {
            return Err(self.failed(ErrorCode::DeployRemoteCommandFailed, "stat", &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let bad = || {
            err(
                ErrorCode::DeployRemoteCommandFailed,
                format!(
                    "{}: unexpected answer to stat: {:?}",
                    self.who,
                    text.chars().take(200).collect::<String>()
                ),
            )
        };
        let uid = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(bad)?;
        let gid = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(bad)?;
        let mut stats = Vec::new();
        for _ in paths {
            let line = lines.next().ok_or_else(bad)?.trim();
            stats.push(match line {
                "missing" => Stat::Missing,
                "notfile" => Stat::NotFile,
                l => {
                    let mut it = l.split(' ');
                    let mode = it
                        .next()
                        .and_then(|m| u32::from_str_radix(m, 8).ok())
                        .ok_or_else(bad)?;
                    let uid = it.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
                    let gid = it.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
                    Stat::File {
                        mode: mode & 0o7777,
                        uid,
                        gid,
                    }
                }
            });
        }
        Ok((stats, uid, gid))
    }

    /// The remote uid and gid of an owner and a group (names or numbers).
    pub async fn accounts(
        &self,
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<(Option<u32>, Option<u32>), RemoteError> {
        if user.is_none() && group.is_none() {
            return Ok((None, None));
        }
        let out = self
            .run(
                ACCOUNT,
                &[user.unwrap_or(""), group.unwrap_or("")],
                None,
                FILE_STEP,
            )
            .await?;
        if !out.success() {
            return Err(self.failed(
                ErrorCode::DeployRemoteCommandFailed,
                "the owner's lookup",
                &out,
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.trim_end_matches('\n').split(' ');
        let mut next = || it.next().and_then(|v| v.trim().parse::<u32>().ok());
        let u = next();
        let g = next();
        if (user.is_some() && u.is_none()) || (group.is_some() && g.is_none()) {
            return Err(err(
                ErrorCode::DeployRemoteCommandFailed,
                format!(
                    "{}: unexpected answer to the owner's lookup: {text:?}",
                    self.who
                ),
            ));
        }
        Ok((u, g))
    }

    /// A remote regular file's bytes (at most [`MAX_STDOUT`]).
    pub async fn read(&self, path: &Path) -> Result<Vec<u8>, RemoteError> {
        let p = path.display().to_string();
        let out = self.run(READ, &[&p], None, FILE_STEP).await?;
        if !out.success() {
            return Err(self.failed(
                ErrorCode::DeployRemoteCommandFailed,
                &format!("reading {p}"),
                &out,
            ));
        }
        Ok(out.stdout)
    }

    /// Copies each `(role, path)` into `backup` (made afresh, inside the
    /// 0700 work dir), fsynced.
    pub async fn backup(
        &self,
        work: &Path,
        backup: &Path,
        files: &[(&str, &Path)],
    ) -> Result<(), RemoteError> {
        let mut args = vec![work.display().to_string(), backup.display().to_string()];
        for (role, path) in files {
            args.push((*role).to_owned());
            args.push(path.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(BACKUP, &args, None, FILE_STEP).await?;
        if !out.success() {
            return Err(self.failed(ErrorCode::DeployRemoteWriteFailed, "the backup", &out));
        }
        Ok(())
    }

    /// Replaces `path` with `bytes` (sent as stdin) or with the file
    /// `from` on the remote host: temporary, mode, owner, fsync, rename,
    /// fsync the directory.
    pub async fn write(
        &self,
        path: &Path,
        bytes: Option<&[u8]>,
        from: Option<&Path>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), RemoteError> {
        let p = path.display().to_string();
        let m = format!("{mode:o}");
        let o = owner.map(|(u, g)| format!("{u}:{g}")).unwrap_or_default();
        let f = from.map(|f| f.display().to_string()).unwrap_or_default();
        let out = self
            .run(
                WRITE,
                &[&p, &m, &o, &f],
                Some(bytes.unwrap_or_default()),
                FILE_STEP,
            )
            .await?;
        if !out.success() {
            let code = match out.status {
                // chown: an owner the host refuses is not a write failure.
                Some(33) => ErrorCode::DeployRemoteCommandFailed,
                _ => ErrorCode::DeployRemoteWriteFailed,
            };
            return Err(self.failed(code, &format!("writing {p}"), &out));
        }
        Ok(())
    }

    pub async fn remove(&self, path: &Path) -> Result<(), RemoteError> {
        let p = path.display().to_string();
        let out = self.run(REMOVE, &[&p], None, FILE_STEP).await?;
        if !out.success() {
            return Err(self.failed(
                ErrorCode::DeployRemoteWriteFailed,
                &format!("removing {p}"),
                &out,
            ));
        }
        Ok(())
    }

    /// Removes a transaction's backups; best effort.
    pub async fn cleanup(&self, dir: &Path) {
        let d = dir.display().to_string();
        let _ = self.run(CLEANUP, &[&d], None, FILE_STEP).await;
    }

    /// Waits (at most `limit`) until no reload holds the work dir's lock.
    pub async fn wait_reloads(&self, work: &Path, limit: Duration) -> Result<(), RemoteError> {
        let w = work.display().to_string();
        let secs = limit.as_secs().max(1).to_string();
        let out = self
            .run(
                WAIT_RELOADS,
                &[&w, &secs],
                None,
                limit + Duration::from_secs(10),
            )
            .await?;
        if !out.success() {
            return Err(self.failed(
                ErrorCode::DeployRemoteCommandFailed,
                "waiting for an earlier reload",
                &out,
            ));
        }
        Ok(())
    }

    /// Runs the reload command under the work dir's lock and a remote
    /// `timeout`. `Err`: the connection failed; a command that failed is
    /// an `Output` that is not a success.
    pub async fn reload(
        &self,
        work: &Path,
        command: &[String],
        limit: Duration,
    ) -> Result<Output, RemoteError> {
        let w = work.display().to_string();
        let wait = (limit.as_secs() + 5).to_string();
        let secs = limit.as_secs().max(1).to_string();
        let mut args = vec![w.as_str(), wait.as_str(), secs.as_str()];
        args.extend(command.iter().map(String::as_str));
        // Lock wait, the reload's own bound, its kill grace, and slack.
        self.run(RELOAD, &args, None, limit * 2 + Duration::from_secs(15))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_every_shell_metacharacter() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(id);`x`"), "'$(id);`x`'");
    }

    #[test]
    fn the_work_dir_sits_beside_the_primary_file() {
        assert_eq!(
            work_dir(Path::new("/etc/ssl/web/cert.pem")),
            PathBuf::from("/etc/ssl/web/.tether-deploy")
        );
    }
}
