//! A real HAProxy on 127.0.0.1 in the foreground (`-db`), with its own
//! config in a scratch directory: a load balancer whose backend servers are
//! down answers 503 "No server is available to handle this request".

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
        let servers: String = balancer
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("  server s{i} {s}\n"))
            .collect();
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n\
                 \x20 maxconn 64\n\
                 defaults\n\
                 \x20 mode http\n\
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
