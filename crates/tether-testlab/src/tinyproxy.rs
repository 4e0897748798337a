//! A real tinyproxy on 127.0.0.1 demanding Basic auth and allowing CONNECT
//! to one port only.

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

pub struct Tinyproxy {
    pub port: u16,
    dir: Scratch,
    _child: Child,
}

impl Tinyproxy {
    /// Demands `user:pass`; CONNECT only to `connect_port`.
    pub async fn start(connect_port: u16) -> Tinyproxy {
        Tinyproxy::start_with(connect_port, "user", "pass").await
    }

    /// Demands `user:password`; CONNECT only to `connect_port`.
    pub async fn start_with(connect_port: u16, user: &str, password: &str) -> Tinyproxy {
        let dir = Scratch::new("tinyproxy");
        // tinyproxy may drop root for `nobody`, which must write its log.
        dir.open_to_all();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n\
             BasicAuth {user} {password}\nConnectPort {connect_port}\nLogLevel Info\n\
             LogFile \"{}\"\nPidFile \"{}\"\n",
            log.display(),
            dir.path().join("tinyproxy.pid").display()
        );
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf, config).expect("the lab directory is writable");
        let mut child = spawn_logged(
            Command::new(program("tinyproxy"))
                .arg("-d")
                .arg("-c")
                .arg(&conf),
            dir.path(),
            "tinyproxy",
        );
        let out = dir.path().join("tinyproxy.out");
        wait_listening(&mut child, port, "tinyproxy", &[&out, &log]).await;
        Tinyproxy {
            port,
            dir,
            _child: child,
        }
    }

    /// `http://127.0.0.1:PORT`, without credentials.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Its log so far (requests, refusals).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}
