//! An HTTP/1.1 relay that cuts, corrupts, pads, throttles or refuses what
//! passes through it, one request per connection (the agent's transport
//! opens a connection per request), and [`TlsRelay`]: the relay between two
//! socats, so a TLS client talks to it and it talks TLS to the real server.
//!
//! Faults touch only the bodies of targets (paths with `/targets/`), so
//! metadata still flows and the fault lands where a test aims it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::free_port;
use crate::socat::Socat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Close the connection after this many bytes of a target's body.
    CutAfter(u64),
    /// Flip one bit of the first byte of a target's body.
    FlipByte,
    /// Announce and send this many bytes more than a target holds.
    AppendExtra(u64),
    /// Answer every request 503 with `Retry-After: 120`, upstream untouched.
    Unavailable,
    /// Send targets' bodies at this many bytes per second.
    Throttle(u64),
}

#[derive(Debug, Default)]
pub struct Seen {
    /// Every request head, in order.
    pub requests: Vec<String>,
    /// Body bytes of targets (not metadata) passed to the agent.
    pub target_body_bytes: u64,
}

pub struct Relay {
    pub port: u16,
    shared: Arc<Mutex<(Mode, Seen)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Relays to 127.0.0.1:`upstream`, passing everything until told otherwise.
    pub async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let port = listener.local_addr().expect("relay addr").port();
        let shared = Arc::new(Mutex::new((Mode::Pass, Seen::default())));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    // A connection the agent gave up on (killed, timed out)
                    // ends here; the test judges the agent, not the relay.
                    let _ = relay_one(client, upstream, s).await;
                });
            }
        });
        Relay { port, shared, task }
    }

    /// Changes what happens to the next exchanges.
    pub fn set(&self, mode: Mode) {
        self.shared.lock().expect("relay lock").0 = mode;
    }

    /// Every request head so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().expect("relay lock").1.requests.clone()
    }

    /// Body bytes of targets passed to the client so far.
    pub fn target_body_bytes(&self) -> u64 {
        self.shared.lock().expect("relay lock").1.target_body_bytes
    }
}

const MAX_HEAD: usize = 64 * 1024;

/// Reads an HTTP head; returns it and whatever body bytes came with it.
async fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with `Connection: close`, so the upstream ends the body with
/// the connection and the relay handles exactly one exchange.
fn closing_head(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn with_content_length_plus(head: &str, extra: u64) -> String {
    head.split("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("content-length") => {
                let n: u64 = v.trim().parse().unwrap_or(0);
                format!("{k}: {}", n + extra)
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn relay_one(
    mut client: TcpStream,
    upstream: u16,
    shared: Arc<Mutex<(Mode, Seen)>>,
) -> std::io::Result<()> {
    let (head, _) = read_head(&mut client).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let mode = {
        let mut g = shared.lock().expect("relay lock");
        g.1.requests.push(head.clone());
        g.0
    };
    if mode == Mode::Unavailable {
        client
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return client.shutdown().await;
    }
    let is_target = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|p| p.contains("/targets/"));
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(closing_head(&head).as_bytes()).await?;
    let (resp_head, mut pending) = read_head(&mut up).await?;
    let mut resp_head = String::from_utf8_lossy(&resp_head).into_owned();
    let ok = resp_head.starts_with("HTTP/1.1 200") || resp_head.starts_with("HTTP/1.1 206");
    let act = is_target && ok;
    if let (true, Mode::AppendExtra(n)) = (act, mode) {
        resp_head = with_content_length_plus(&resp_head, n);
    }
    client.write_all(resp_head.as_bytes()).await?;
    let mut sent: u64 = 0;
    let paced_from = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut chunk = if pending.is_empty() {
            let n = up.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(&mut pending)
        };
        if act {
            match mode {
                Mode::CutAfter(limit) => {
                    let room = limit.saturating_sub(sent);
                    if chunk.len() as u64 >= room {
                        chunk.truncate(room as usize);
                        client.write_all(&chunk).await?;
                        shared.lock().expect("relay lock").1.target_body_bytes += room;
                        // Dropping both sockets cuts the response mid-body.
                        return Ok(());
                    }
                }
                Mode::FlipByte if sent == 0 => chunk[0] ^= 0x01,
                Mode::Throttle(rate) => {
                    // Paced against the start of the body, so the rate
                    // holds whatever the chunk sizes are.
                    let due = paced_from
                        + Duration::from_secs_f64((sent + chunk.len() as u64) as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                _ => {}
            }
            shared.lock().expect("relay lock").1.target_body_bytes += chunk.len() as u64;
        }
        client.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    if let (true, Mode::AppendExtra(n)) = (act, mode) {
        client.write_all(&vec![b'x'; n as usize]).await?;
    }
    client.shutdown().await
}

/// The relay's place in a TLS path: the client speaks TLS to a front socat,
/// which hands plain HTTP to the [`Relay`], which talks to a back socat that
/// speaks TLS (verifying `upstream_ca`) to the real server. The front
/// presents `front_cert`/`front_key`, so a client that trusts the server's
/// CA trusts the relay as well.
pub struct TlsRelay {
    pub relay: Relay,
    front: Socat,
    _back: Socat,
}

impl TlsRelay {
    pub async fn start(
        upstream_port: u16,
        upstream_ca: &Path,
        front_cert: &Path,
        front_key: &Path,
    ) -> TlsRelay {
        let back_port = free_port();
        let back = Socat::start(
            format!("TCP-LISTEN:{back_port},bind=127.0.0.1,reuseaddr,fork"),
            format!(
                "OPENSSL:127.0.0.1:{upstream_port},cafile={}",
                upstream_ca.display()
            ),
            back_port,
        )
        .await;
        let relay = Relay::start(back.port).await;
        let front_port = free_port();
        let front = Socat::start(
            format!(
                "OPENSSL-LISTEN:{front_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                front_cert.display(),
                front_key.display()
            ),
            format!("TCP:127.0.0.1:{}", relay.port),
            front_port,
        )
        .await;
        TlsRelay {
            relay,
            front,
            _back: back,
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.front.port
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.front.port)
    }
}
