//! A real mitmproxy (`mitmdump`) in regular proxy mode on 127.0.0.1,
//! intercepting TLS with its own CA (generated in its private confdir) and
//! not verifying the upstream (`--ssl-insecure`: the test server's CA is
//! not mitmproxy's business).

use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening_within};

pub struct Mitmproxy {
    pub port: u16,
    _dir: Scratch,
    _child: Child,
}

impl Mitmproxy {
    /// Waits at most 60 s for mitmproxy to listen (Python starts slowly on
    /// a loaded machine); fails loudly with its output otherwise.
    pub async fn start() -> Mitmproxy {
        let dir = Scratch::new("mitmproxy");
        let port = free_port();
        let mut child = spawn_logged(
            Command::new(program("mitmdump")).args([
                "--mode",
                "regular",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &port.to_string(),
                "--set",
                &format!("confdir={}", dir.path().display()),
                "--ssl-insecure",
                "--quiet",
            ]),
            dir.path(),
            "mitmdump",
        );
        let out = dir.path().join("mitmdump.out");
        wait_listening_within(
            &mut child,
            ([127, 0, 0, 1], port).into(),
            "mitmdump",
            &[&out],
            Duration::from_secs(60),
        )
        .await;
        Mitmproxy {
            port,
            _dir: dir,
            _child: child,
        }
    }
}
