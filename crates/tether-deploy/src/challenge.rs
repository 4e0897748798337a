//! The agent's answer to an ACME http-01 challenge (RFC 8555 §8.3), on the
//! target host: the key authorization served at
//! `/.well-known/acme-challenge/TOKEN` for as long as the CA validates,
//! then removed.
//!
//! Two ways, as an operator chooses per target:
//! - [`Solver::Webroot`]: a file under the web server's document root,
//!   written with `tether_fs::write_atomic` (0644, so the web server can
//!   read it) and removed afterwards, with any directory it created;
//! - [`Solver::Listen`]: the agent's own small HTTP listener, when port 80
//!   (configurable, for tests) is free.
//!
//! Tokens come from outside (the CA, through the control plane) and are
//! checked before they touch a path: base64url only (TETHER-E8430).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_wire::{ErrorCode, Http01Challenge};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The well-known directory (RFC 8555 §8.3).
pub const CHALLENGE_DIR: &str = ".well-known/acme-challenge";

/// How the agent serves challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Solver {
    /// Files under this web server's document root.
    Webroot(PathBuf),
    /// The agent's own listener on this address (port 80 in production).
    Listen(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    #[error("the http-01 token {0:?} is not base64url; nothing was written")]
    BadToken(String),
    #[error("cannot write the challenge under the webroot {path}: {error}")]
    Webroot {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot listen for the challenge on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl ChallengeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChallengeError::BadToken(_) => ErrorCode::AcmeChallengeTokenInvalid,
            ChallengeError::Webroot { .. } | ChallengeError::Listen { .. } => {
                ErrorCode::AcmeChallengeProvisionFailed
            }
        }
    }
}

/// Challenges being served. [`Provisioned::remove`] takes them down;
/// dropping it does too (best effort), so a failed issuance leaves no
/// file behind.
#[derive(Debug)]
pub struct Provisioned {
    files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The address the listener is bound to, when it is one.
    pub local_addr: Option<SocketAddr>,
}

impl Provisioned {
    /// Removes the files (and the directories it created, deepest first)
    /// or stops the listener.
    pub fn remove(mut self) {
        self.take_down();
    }

    fn take_down(&mut self) {
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(&f);
        }
        for d in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
        if let Some(task) = self.listener.take() {
            task.abort();
        }
    }
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        self.take_down();
    }
}

/// True for a token RFC 8555 allows: base64url characters only, 1 to
/// 256 of them (CAs send 43).
pub fn token_is_valid(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Serves every challenge in `challenges` the way `solver` says.
pub async fn provision(
    solver: &Solver,
    challenges: &[Http01Challenge],
) -> Result<Provisioned, ChallengeError> {
    if let Some(bad) = challenges.iter().find(|c| !token_is_valid(&c.token)) {
        return Err(ChallengeError::BadToken(bad.token.clone()));
    }
    match solver {
        Solver::Webroot(root) => write_webroot(root, challenges),
        Solver::Listen(addr) => listen(*addr, challenges).await,
    }
}

fn write_webroot(
    root: &Path,
    challenges: &[Http01Challenge],
) -> Result<Provisioned, ChallengeError> {
    let mut done = Provisioned {
        files: Vec::new(),
        created_dirs: Vec::new(),
        listener: None,
        local_addr: None,
    };
    let fail = |path: &Path, error| ChallengeError::Webroot {
        path: path.to_owned(),
        error,
    };
    if !root.is_dir() {
        return Err(fail(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let mut dir = root.to_owned();
    for part in CHALLENGE_DIR.split('/') {
        dir.push(part);
        if !dir.is_dir() {
            std::fs::create_dir(&dir).map_err(|e| fail(&dir, e))?;
            // The web server (another user) must traverse it.
            set_mode(&dir, 0o755).map_err(|e| fail(&dir, e))?;
            done.created_dirs.push(dir.clone());
        }
    }
    for c in challenges {
        let path = dir.join(&c.token);
        tether_fs::write_atomic(&path, c.key_authorization.as_bytes(), tether_fs::PUBLIC)
            .map_err(|e| fail(&path, e.source))?;
        done.files.push(path);
    }
    Ok(done)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The bound on reading a validator's request head.
const READ_WITHIN: Duration = Duration::from_secs(5);
const HEAD_LIMIT: usize = 8192;

async fn listen(
    addr: SocketAddr,
    challenges: &[Http01Challenge],
) -> Result<Provisioned, ChallengeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| ChallengeError::Listen { addr, error })?;
    let local_addr = listener.local_addr().ok();
    let answers: Arc<HashMap<String, String>> = Arc::new(
        challenges
            .iter()
            .map(|c| (c.path(), c.key_authorization.clone()))
            .collect(),
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_WITHIN, answer(stream, &answers)).await;
            });
        }
    });
    Ok(Provisioned {
        files: Vec::new(),
        created_dirs: Vec::new(),
        listener: Some(task),
        local_addr,
    })
}

/// One request: GET of a known challenge path → 200 with the key
/// authorization, anything else → 404. The head is bounded in size and
/// time; the body, if any, is ignored.
async fn answer(
    mut stream: tokio::net::TcpStream,
    answers: &HashMap<String, String>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_LIMIT {
            return Ok(());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let reply = match answers.get(target) {
        Some(body) if method == "GET" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(token: &str) -> Http01Challenge {
        Http01Challenge {
            name: "www.example".into(),
            token: token.into(),
            key_authorization: format!("{token}.thumbprint"),
        }
    }

    #[test]
    fn only_base64url_tokens_are_accepted() {
        assert!(token_is_valid(
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
        ));
        for bad in ["", "../../etc/passwd", "a/b", "a.b", "a b", "%2e%2e", "tök"] {
            assert!(!token_is_valid(bad), "{bad:?}");
        }
        assert!(!token_is_valid(&"a".repeat(257)));
    }

    #[tokio::test]
    async fn a_hostile_token_writes_nothing() {
        let root = tempfile::tempdir().expect("dir");
        let err = provision(
            &Solver::Webroot(root.path().to_owned()),
            &[challenge("good"), challenge("../escape")],
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), ErrorCode::AcmeChallengeTokenInvalid);
        assert!(!root.path().join(".well-known").exists());
        assert!(
            !root
                .path()
                .parent()
                .expect("parent")
                .join("escape")
                .exists()
        );
    }

    #[tokio::test]
    async fn webroot_files_are_written_readable_and_removed_with_their_dirs() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().expect("dir");
        let done = provision(
            &Solver::Webroot(root.path().to_owned()),
            &[challenge("tok1")],
        )
        .await
        .expect("provisioned");
        let file = root.path().join(".well-known/acme-challenge/tok1");
        assert_eq!(
            std::fs::read_to_string(&file).expect("file"),
            "tok1.thumbprint"
        );
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        done.remove();
        assert!(!file.exists());
        assert!(!root.path().join(".well-known").exists());

        // A directory the web server already had is kept.
        std::fs::create_dir_all(root.path().join(".well-known/acme-challenge")).expect("mk");
        let done = provision(
            &Solver::Webroot(root.path().to_owned()),
            &[challenge("tok2")],
        )
        .await
        .expect("provisioned");
        drop(done);
        assert!(root.path().join(".well-known/acme-challenge").is_dir());
        assert!(!root.path().join(".well-known/acme-challenge/tok2").exists());
    }

    #[tokio::test]
    async fn a_missing_webroot_or_a_taken_port_has_its_code() {
        let err = provision(
            &Solver::Webroot(PathBuf::from("/nonexistent/tether/webroot")),
            &[challenge("t")],
        )
        .await
        .expect_err("missing");
        assert_eq!(err.code(), ErrorCode::AcmeChallengeProvisionFailed);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = provision(&Solver::Listen(addr), &[challenge("t")])
            .await
            .expect_err("taken");
        assert_eq!(err.code(), ErrorCode::AcmeChallengeProvisionFailed);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn the_listener_answers_known_tokens_only_and_stops_when_removed() {
        let done = provision(
            &Solver::Listen("127.0.0.1:0".parse().expect("addr")),
            &[challenge("tok")],
        )
        .await
        .expect("listening");
        let addr = done.local_addr.expect("addr");
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("tok.thumbprint"), "{ok}");
        let miss = get("/.well-known/acme-challenge/other").await;
        assert!(miss.starts_with("HTTP/1.1 404"), "{miss}");
        done.remove();
        tokio::task::yield_now().await;
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the listener stopped");
    }
}
