//! A real pebble (Let's Encrypt's ACME test server, Debian's `pebble`
//! 2.4) on 127.0.0.1, with its own configuration: its HTTPS API on a free
//! port with a certificate from the test PKI (so a client trusts it with
//! [`Pebble::ca_pem`]), `PEBBLE_VA_NOSLEEP=1` so validations start at
//! once, and a DNS server of the test's choosing (`-dnsserver`, a
//! [`crate::dnsmasq::Dnsmasq`]) through which its validator resolves the
//! names it is asked to validate. The http-01 validator connects to each
//! name on `http_port`, which the test picks (port 80 needs root and is
//! the machine's).

use std::path::PathBuf;

use tokio::process::{Child, Command};

use crate::pki::Ca;
use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

pub struct Pebble {
    /// The ACME API's port (HTTPS).
    pub port: u16,
    /// The port pebble's validator connects to for http-01.
    pub http_port: u16,
    ca: Ca,
    dir: Scratch,
    _child: Child,
}

impl Pebble {
    /// Starts pebble resolving through the DNS server at
    /// 127.0.0.1:`dns_port` and validating http-01 on `http_port`.
    pub async fn start(dns_port: u16, http_port: u16) -> Pebble {
        Pebble::start_rejecting_nonces(dns_port, http_port, None).await
    }

    /// As [`Pebble::start`], with pebble refusing `percent`% of good
    /// nonces with `badNonce` (`PEBBLE_WFE_NONCEREJECT`; pebble's own
    /// default, `None`, is 5%), to prove a client sends refused requests
    /// again as RFC 8555 §6.5 asks.
    pub async fn start_rejecting_nonces(
        dns_port: u16,
        http_port: u16,
        percent: Option<u8>,
    ) -> Pebble {
        let dir = Scratch::new("pebble");
        let ca = Ca::root("Tether test pebble API CA");
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        let cert = dir.path().join("api.pem");
        let key = dir.path().join("api.key");
        std::fs::write(&cert, leaf.pem()).expect("pebble cert");
        std::fs::write(&key, leaf.key_pem()).expect("pebble key");
        let config = dir.path().join("pebble.json");
        let port = free_port();
        let tls_port = free_port();
        std::fs::write(
            &config,
            serde_json::json!({
                "pebble": {
                    "listenAddress": format!("127.0.0.1:{port}"),
                    "managementListenAddress": format!("127.0.0.1:{}", free_port()),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false
                }
            })
            .to_string(),
        )
        .expect("pebble.json");
        let mut command = Command::new(program("pebble"));
        command
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1");
        if let Some(percent) = percent {
            command.env("PEBBLE_WFE_NONCEREJECT", percent.to_string());
        }
        let mut child = spawn_logged(&mut command, dir.path(), "pebble");
        wait_listening(
            &mut child,
            port,
            "pebble",
            &[&dir.path().join("pebble.out")],
        )
        .await;
        Pebble {
            port,
            http_port,
            ca,
            dir,
            _child: child,
        }
    }

    /// The directory URL clients start from.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA that signed pebble's API certificate (PEM), for the client's
    /// trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem()
    }

    /// The same, written to a file (`--ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("api-ca.pem");
        std::fs::write(&path, self.ca.pem()).expect("api-ca.pem");
        path
    }

    /// Pebble's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.out")).unwrap_or_default()
    }
}

impl Pebble {
    /// The CA of pebble's API certificate, to issue a certificate for a
    /// proxy in front of pebble that the same client trusts.
    pub fn api_ca(&self) -> &Ca {
        &self.ca
    }
}

/// A plain-HTTP http-01 responder on 127.0.0.1 for tests of the ACME
/// client alone: it answers `/.well-known/acme-challenge/TOKEN` with the
/// key authorization set for TOKEN, 404 otherwise, and counts the hits.
pub struct Http01Responder {
    pub port: u16,
    tokens: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Http01Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Http01Responder {
    pub async fn start() -> Http01Responder {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind responder");
        let port = listener.local_addr().expect("addr").port();
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            String,
        >::new()));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, counter) = (tokens.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (shared, counter) = (shared.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16384 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&got);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer =
                        path.strip_prefix("/.well-known/acme-challenge/")
                            .and_then(|token| {
                                shared
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get(token)
                                    .cloned()
                            });
                    let reply = match answer {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Http01Responder {
            port,
            tokens,
            hits,
            task,
        }
    }

    /// Serves `key_authorization` for `token` from now on.
    pub fn provision(&self, token: &str, key_authorization: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// How many requests it has answered.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
