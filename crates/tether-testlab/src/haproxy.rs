//! A real HAProxy on 127.0.0.1 in the foreground (`-db`), with its own
//! config in a scratch directory: a load balancer whose backend servers are
//! down answers 503 "No server is available to handle this request". In
//! TCP mode it passes TLS through and can send the PROXY protocol from a
//! source address of the test's choosing, so the backend tells the
//! balancer's address from the client's on loopback.

use std::path::PathBuf;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

/// What one HAProxy serves.
#[derive(Debug, Clone, Default)]
pub struct Balancer {
    /// One PEM holding the certificate chain and the key, for `bind … ssl
    /// crt`; plain HTTP without.
    pub tls: Option<PathBuf>,
    /// The backend servers, `host:port`. Ports nothing listens on make a
    /// balancer whose backend is down.
    pub servers: Vec<String>,
    /// TCP mode (TLS passes through) instead of HTTP.
    pub tcp: bool,
    /// `send-proxy` (v1) or `send-proxy-v2` on every server line.
    pub send_proxy: Option<&'static str>,
    /// The address HAProxy connects to the servers from (`source`), for
    /// example `127.0.0.3`.
    pub source: Option<String>,
}

pub struct Haproxy {
    pub port: u16,
    _dir: Scratch,
    _child: Child,
}

impl Haproxy {
    pub async fn start(balancer: &Balancer) -> Haproxy {
        let dir = Scratch::new("haproxy");
        let port = free_port();
        let ssl = match &balancer.tls {
            Some(pem) => format!(" ssl crt {}", pem.display()),
            None => String::new(),
        };
        let mut options = String::new();
        if let Some(proxy) = balancer.send_proxy {
            options.push_str(&format!(" {proxy}"));
        }
        if let Some(source) = &balancer.source {
            options.push_str(&format!(" source {source}"));
        }
        let servers: String = balancer
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("  server s{i} {s}{options}\n"))
            .collect();
        let mode = if balancer.tcp { "tcp" } else { "http" };
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n\
                 \x20 maxconn 64\n\
                 defaults\n\
                 \x20 mode {mode}\n\
                 \x20 timeout connect 1s\n\
                 \x20 timeout client 10s\n\
                 \x20 timeout server 10s\n\
                 \x20 retries 0\n\
                 frontend lab\n\
                 \x20 bind 127.0.0.1:{port}{ssl}\n\
                 \x20 default_backend app\n\
                 backend app\n\
                 {servers}"
            ),
        )
        .expect("haproxy.cfg");
        let mut child = spawn_logged(
            Command::new(program("haproxy"))
                .arg("-db")
                .arg("-f")
                .arg(&conf),
            dir.path(),
            "haproxy",
        );
        let out = dir.path().join("haproxy.out");
        wait_listening(&mut child, port, "haproxy", &[&out]).await;
        Haproxy {
            port,
            _dir: dir,
            _child: child,
        }
    }
}
