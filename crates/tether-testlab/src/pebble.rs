//! A real pebble (Let's Encrypt's ACME test server, Debian's `pebble`
//! 2.4) inside a network namespace of the test's own ([`Netns`]), with its
//! own configuration: its HTTPS API on the namespace's end of the veth
//! (`ns_ip`), with a certificate from the test PKI (so a client trusts it
//! with [`Pebble::ca_pem`]), which clients in the root namespace (the
//! server's ACME client, the tests) reach over the veth;
//! `PEBBLE_VA_NOSLEEP=1` so validations start at once; pebble's own
//! default of refusing 5% of good nonces (`badNonce`); and a DNS server of
//! the test's choosing (`-dnsserver`: a [`Dnsmasq::start_for`] that
//! namespace, listening on the root end of the veth) through which its
//! validator resolves the names it is asked to validate, to the root end
//! of the veth (`host_ip`). The http-01 validator connects to each name on
//! `http_port`, which the test picks (port 80 needs root and is the
//! machine's): whatever answers there must listen on `host_ip` or on
//! 0.0.0.0 in the root namespace. The namespace, and pebble in it, go
//! away when the handle is dropped, also when the test fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::process::{Child, Command};

use crate::dnsmasq::Dnsmasq;
use crate::netns::Netns;
use crate::pki::Ca;
use crate::{Scratch, program, spawn_logged, wait_listening_within};

/// Pebble's ports inside its namespace, where every port is free.
const API_PORT: u16 = 14000;
const MANAGEMENT_PORT: u16 = 15000;
const TLS_ALPN_PORT: u16 = 5001;

pub struct Pebble {
    /// The ACME API's port (HTTPS) on [`Pebble::ip`].
    pub port: u16,
    /// The port pebble's validator connects to for http-01.
    pub http_port: u16,
    ca: Ca,
    dir: Scratch,
    // Fields drop in order: pebble is killed before its namespace goes.
    _child: Child,
    ns: Netns,
}

impl Pebble {
    /// Starts pebble in `ns`, resolving through `dns` (started with
    /// [`Dnsmasq::start_for`] for `ns`) and validating http-01
    /// on `http_port` of the address `dns` gives, `ns.host_ip`.
    pub async fn start(ns: Netns, dns: &Dnsmasq, http_port: u16) -> Pebble {
        Pebble::start_rejecting_nonces(ns, dns, http_port, None).await
    }

    /// As [`Pebble::start`], with pebble refusing `percent`% of good
    /// nonces with `badNonce` (`PEBBLE_WFE_NONCEREJECT`; pebble's own
    /// default, `None`, is 5%), to prove a client sends refused requests
    /// again as RFC 8555 §6.5 asks.
    pub async fn start_rejecting_nonces(
        ns: Netns,
        dns: &Dnsmasq,
        http_port: u16,
        percent: Option<u8>,
    ) -> Pebble {
        assert!(
            dns.ips.contains(&ns.host_ip),
            "pebble in {} resolves through {}, which dnsmasq does not listen on ({:?}): start it \
             with Dnsmasq::start_for(&ns)",
            ns.name,
            ns.host_ip,
            dns.ips
        );
        let dir = Scratch::new("pebble");
        let ca = Ca::root("Tether test pebble API CA");
        let leaf = ca.issue(&["localhost", &ns.ns_ip.to_string()]);
        let cert = dir.path().join("api.pem");
        let key = dir.path().join("api.key");
        std::fs::write(&cert, leaf.pem()).expect("pebble cert");
        std::fs::write(&key, leaf.key_pem()).expect("pebble key");
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "pebble": {
                    "listenAddress": format!("{}:{API_PORT}", ns.ns_ip),
                    "managementListenAddress": format!("{}:{MANAGEMENT_PORT}", ns.ns_ip),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": http_port,
                    "tlsPort": TLS_ALPN_PORT,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false
                }
            })
            .to_string(),
        )
        .expect("pebble.json");
        let mut command = Command::new(program("ip"));
        command
            .args(["netns", "exec", &ns.name])
            .arg(program("pebble"))
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(format!("{}:{}", ns.host_ip, dns.port))
            .env("PEBBLE_VA_NOSLEEP", "1");
        if let Some(percent) = percent {
            command.env("PEBBLE_WFE_NONCEREJECT", percent.to_string());
        }
        let mut child = spawn_logged(&mut command, dir.path(), "pebble");
        // Reached from the root namespace over the veth, as clients do.
        wait_listening_within(
            &mut child,
            (ns.ns_ip, API_PORT).into(),
            "pebble",
            &[&dir.path().join("pebble.out")],
            std::time::Duration::from_secs(10),
        )
        .await;
        Pebble {
            port: API_PORT,
            http_port,
            ca,
            dir,
            _child: child,
            ns,
        }
    }

    /// The directory URL clients start from.
    pub fn directory_url(&self) -> String {
        format!("https://{}:{}/dir", self.ns.ns_ip, self.port)
    }

    /// Where pebble's API listens: the namespace's end of the veth.
    pub fn ip(&self) -> Ipv4Addr {
        self.ns.ns_ip
    }

    /// Where pebble's validator connects for http-01 (what its DNS
    /// answers): the root namespace's end of the veth.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.ns.host_ip
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

    /// The CA of pebble's API certificate, to issue a certificate for a
    /// proxy in front of pebble that the same client trusts.
    pub fn api_ca(&self) -> &Ca {
        &self.ca
    }
}

/// A plain-HTTP http-01 responder on an address of the test's choice
/// ([`Pebble::host_ip`]'s, so pebble's validator reaches it) for tests of
/// the ACME client alone: it answers `/.well-known/acme-challenge/TOKEN` with the
/// key authorization set for TOKEN, 404 otherwise, and records who asked.
pub struct Http01Responder {
    pub port: u16,
    tokens: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// The peer address of each request answered.
    peers: std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Http01Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Http01Responder {
    /// Listens on `ip`, on a port of the kernel's choice.
    pub async fn start(ip: Ipv4Addr) -> Http01Responder {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind responder");
        let port = listener.local_addr().expect("addr").port();
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            String,
        >::new()));
        let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shared, seen) = (tokens.clone(), peers.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = listener.accept().await else {
                    return;
                };
                let (shared, seen) = (shared.clone(), seen.clone());
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
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(peer.ip());
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
            peers,
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
        self.peers().len()
    }

    /// Where each request it answered came from.
    pub fn peers(&self) -> Vec<std::net::IpAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
