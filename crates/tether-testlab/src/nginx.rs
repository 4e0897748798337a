//! A real nginx on 127.0.0.1, in the foreground as one process with its
//! own config, prefix, logs and pid file (never the system service): a
//! static HTTPS mirror, a reverse proxy in front of a dead backend, a rate
//! limiter, a gateway demanding client certificates, or a plain web server
//! that a misconfigured proxy setting points at.

use std::path::{Path, PathBuf};

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

/// What one nginx serves.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Certificate chain (PEM, leaf first) and key for `listen … ssl`;
    /// plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Directives at `http {}` level (e.g. `limit_req_zone`).
    pub http: String,
    /// Directives inside the one `server {}` (its `listen` is added).
    pub server: String,
}

pub struct Nginx {
    pub port: u16,
    dir: Scratch,
    _child: Child,
}

impl Nginx {
    /// Serves the files under `root` over HTTPS.
    pub async fn static_https(root: &Path, cert: &Path, key: &Path) -> Nginx {
        Nginx::start(&Site {
            tls: Some((cert.to_owned(), key.to_owned())),
            server: format!("root {};", root.display()),
            ..Site::default()
        })
        .await
    }

    pub async fn start(site: &Site) -> Nginx {
        let dir = Scratch::new("nginx");
        let d = dir.path().display();
        let port = free_port();
        let (listen, tls) = match &site.tls {
            Some((cert, key)) => (
                format!("listen 127.0.0.1:{port} ssl;"),
                format!(
                    "ssl_certificate {};\n ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => (format!("listen 127.0.0.1:{port};"), String::new()),
        };
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                   access_log {d}/access.log;\n\
                   client_body_temp_path {d}/client_body;\n\
                   proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n\
                   uwsgi_temp_path {d}/uwsgi;\n\
                   scgi_temp_path {d}/scgi;\n\
                   types {{ application/json json; text/html html; }}\n\
                   default_type application/octet-stream;\n\
                   {http}\n\
                   server {{\n\
                     {listen}\n\
                     {tls}\n\
                     {server}\n\
                   }}\n\
                 }}\n",
                http = site.http,
                server = site.server,
            ),
        )
        .expect("nginx.conf");
        let mut child = spawn_logged(
            Command::new(program("nginx"))
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-g")
                // One process, no workers: killing it (kill_on_drop) stops
                // nginx entirely, where a master's workers would outlive it.
                .arg(format!(
                    "daemon off; master_process off; pid {d}/nginx.pid;"
                )),
            dir.path(),
            "nginx",
        );
        let out = dir.path().join("nginx.out");
        let error_log = dir.path().join("error.log");
        wait_listening(&mut child, port, "nginx", &[&out, &error_log]).await;
        Nginx {
            port,
            dir,
            _child: child,
        }
    }

    /// `https://127.0.0.1:PORT/` (or `http://` for a plain site).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// Its access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}
