//! A real nginx on 127.0.0.1 (or an address the test names), in the foreground as one process with its
//! own config, prefix, logs and pid file (never the system service): a
//! static HTTPS mirror, a reverse proxy in front of a dead backend, a rate
//! limiter, a gateway demanding client certificates, or a plain web server
//! that a misconfigured proxy setting points at.

use std::path::{Path, PathBuf};

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged};

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
    /// A master and one worker, as nginx runs in production, instead of
    /// one process. A reload (`reload_command`) needs it: a single-process
    /// nginx reloads its config but then answers TLS ports in plain text.
    /// Dropping the `Nginx` stops the master with SIGTERM, which stops its
    /// worker too.
    pub master_process: bool,
    /// Inside a network namespace, on its address (`ip netns exec`),
    /// instead of on 127.0.0.1; the port is 8443 there.
    pub netns: Option<(String, std::net::Ipv4Addr)>,
    /// In the root namespace, on this address instead of 127.0.0.1 (the
    /// root end of a namespace's veth, `Netns::host_ip`, so programs in
    /// that namespace reach it).
    pub ip: Option<std::net::Ipv4Addr>,
    /// Run as this uid and gid (`setpriv`), with its directory given to
    /// them, so that account can reload it; default: as the test.
    pub run_as: Option<(u32, u32)>,
}

pub struct Nginx {
    pub port: u16,
    /// Where it listens.
    pub ip: std::net::IpAddr,
    master: bool,
    dir: Scratch,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A master's worker outlives a SIGKILL of the master: stop the
        // master gracefully (it stops the worker), bounded, then SIGKILL.
        if self.master
            && let Some(pid) = self.child.id()
        {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "kill -TERM {pid}; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 60 ]; do sleep 0.05; i=$((i+1)); done; kill -KILL {pid} 2>/dev/null; true"
                ))
                .status();
        }
    }
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
        let (ip, port): (std::net::IpAddr, u16) = match &site.netns {
            // A namespace of the test's own: every port is free there.
            Some((_, ip)) => ((*ip).into(), 8443),
            None => (
                site.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST).into(),
                free_port(),
            ),
        };
        let (listen, tls) = match &site.tls {
            Some((cert, key)) => (
                format!("listen {ip}:{port} ssl;"),
                format!(
                    "ssl_certificate {};\n ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => (format!("listen {ip}:{port};"), String::new()),
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
        let mut cmd = match &site.netns {
            Some((ns, _)) => {
                let mut c = Command::new(program("ip"));
                c.args(["netns", "exec", ns]);
                c
            }
            None => Command::new(program("nginx")),
        };
        if site.netns.is_some() && site.run_as.is_none() {
            cmd.arg(program("nginx"));
        }
        if let Some((uid, gid)) = site.run_as {
            if site.netns.is_none() {
                cmd = Command::new(program("setpriv"));
            } else {
                cmd.arg(program("setpriv"));
            }
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
            ])
            .arg(program("nginx"));
            let _ = std::process::Command::new(program("chown"))
                .args(["-R", &format!("{uid}:{gid}")])
                .arg(dir.path())
                .status();
        }
        let mut child = spawn_logged(
            cmd.arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-g")
                // By default one process, no workers: killing it
                // (kill_on_drop) stops nginx entirely, where a master's
                // workers would outlive it (`Drop` handles a master).
                .arg(globals(dir.path(), site.master_process)),
            dir.path(),
            "nginx",
        );
        let out = dir.path().join("nginx.out");
        let error_log = dir.path().join("error.log");
        crate::wait_listening_within(
            &mut child,
            std::net::SocketAddr::new(ip, port),
            "nginx",
            &[&out, &error_log],
            std::time::Duration::from_secs(10),
        )
        .await;
        Nginx {
            port,
            ip,
            master: site.master_process,
            dir,
            child,
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

    /// Its configuration file, which a test may break or change before a
    /// reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// The command that reloads this nginx for real (`nginx -s reload`
    /// with its own config, prefix and pid file): it re-reads the config
    /// and the certificate files, and fails when the config is broken.
    pub fn reload_command(&self) -> Vec<String> {
        vec![
            program("nginx").to_string_lossy().into_owned(),
            "-c".to_owned(),
            self.config_path().display().to_string(),
            "-p".to_owned(),
            self.dir.path().display().to_string(),
            "-e".to_owned(),
            self.dir.path().join("error.log").display().to_string(),
            "-g".to_owned(),
            globals(self.dir.path(), self.master),
            "-s".to_owned(),
            "reload".to_owned(),
        ]
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The directives given on the command line, the same at start and for a
/// signal (nginx finds the pid file through them).
fn globals(dir: &Path, master: bool) -> String {
    format!(
        "daemon off; master_process {}; pid {}/nginx.pid;",
        if master { "on" } else { "off" },
        dir.display()
    )
}
