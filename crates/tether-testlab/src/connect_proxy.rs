//! A tiny CONNECT proxy on loopback with selectable misbehaviour, for
//! the cases real proxies cannot be made to show on demand (garbage
//! replies, silence). Real proxies are in [`crate::tinyproxy`] and
//! [`crate::squid`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum ProxyMode {
    /// Demands `Proxy-Authorization: Basic` with these credentials.
    Basic { user: String, pass: String },
    /// Tunnels without authentication.
    Open,
    /// Answers every CONNECT with 403, like a filtering proxy.
    Block,
    /// Answers with something that is not HTTP.
    Garbage,
    /// Reads the request and never answers.
    Silent,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    /// The request heads received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    pub async fn start(mode: ProxyMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let mode = mode.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, mode, log).await;
                });
            }
        });
        TestProxy { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    mode: ProxyMode,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || conn.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    log.lock().expect("not poisoned").push(head.clone());
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("")
        .to_owned();
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    match mode {
        ProxyMode::Block => {
            conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 17\r\n\r\n<h1>blocked</h1>\n")
                .await?;
            return Ok(());
        }
        ProxyMode::Garbage => {
            conn.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n\r\n")
                .await?;
            return Ok(());
        }
        ProxyMode::Silent => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
        ProxyMode::Basic { user, pass } => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            if authorization.as_deref() != Some(expected.as_str()) {
                conn.write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"test proxy\"\r\n\
                      Content-Length: 0\r\n\r\n",
                )
                .await?;
                return Ok(());
            }
        }
        ProxyMode::Open => {}
    }
    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
        conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}
