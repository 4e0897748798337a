//! A real squid on 127.0.0.1 demanding Basic auth (`basic_ncsa_auth` over
//! an htpasswd file hashed by `openssl passwd -apr1`), allowing CONNECT to
//! one port only. Foreground (`-N`), with its own config, logs, pid file
//! and service name (its shared memory is named after it, so the name holds
//! this process's id) in a scratch directory.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening_within};

pub struct Squid {
    pub port: u16,
    pub dir: Scratch,
    _child: Child,
}

impl Squid {
    pub async fn start(connect_port: u16, user: &str, password: &str) -> Squid {
        use std::os::unix::fs::PermissionsExt;
        let bin = program("squid");
        let helper = [
            "/usr/lib/squid/basic_ncsa_auth",
            "/usr/lib64/squid/basic_ncsa_auth",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("basic_ncsa_auth is missing: run scripts/install-test-deps.sh (squid)");
        let dir = Scratch::new("squid");
        // squid drops root for its own user, which must write its logs here.
        dir.open_to_all();
        let hash = std::process::Command::new(program("openssl"))
            .args(["passwd", "-apr1", password])
            .output()
            .expect("openssl passwd runs");
        assert!(hash.status.success(), "openssl passwd -apr1 failed");
        let hash = String::from_utf8(hash.stdout).expect("an apr1 hash is ASCII");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).expect("htpasswd");
        std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let d = dir.path().display();
        let port = free_port();
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log {d}/access.log\n\
             cache_store_log none\n\
             coredump_dir {d}\n\
             cache deny all\n\
             netdb_filename none\n\
             shutdown_lifetime 0 seconds\n\
             auth_param basic program {} {}\n\
             auth_param basic realm tether-lab\n\
             acl authed proxy_auth REQUIRED\n\
             acl lab_ports port {connect_port}\n\
             acl CONNECT method CONNECT\n\
             http_access deny CONNECT !lab_ports\n\
             http_access allow authed\n\
             http_access deny all\n",
            helper.display(),
            htpasswd.display()
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config).expect("squid.conf");
        let service = format!("tlab{}{port}", std::process::id());
        let mut child = spawn_logged(
            Command::new(&bin)
                .args(["-N", "-n", &service, "-f"])
                .arg(&conf),
            dir.path(),
            "squid",
        );
        let out = dir.path().join("squid.out");
        let cache_log = dir.path().join("cache.log");
        wait_listening_within(
            &mut child,
            ([127, 0, 0, 1], port).into(),
            "squid",
            &[&out, &cache_log],
            Duration::from_secs(20),
        )
        .await;
        Squid {
            port,
            dir,
            _child: child,
        }
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Its access log so far (one line per request, with the status).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}
