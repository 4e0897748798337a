//! A socat process between two addresses (TLS around a relay, a listener
//! inside a namespace), killed with the test.

use tokio::process::{Child, Command};

use crate::{Scratch, program, spawn_logged, wait_listening};

pub struct Socat {
    pub port: u16,
    _dir: Scratch,
    _child: Child,
}

impl Socat {
    /// Runs `socat LISTEN CONNECT` and waits until 127.0.0.1:`port` (the
    /// port `listen` names) accepts.
    pub async fn start(listen: String, connect: String, port: u16) -> Socat {
        let dir = Scratch::new("socat");
        let mut child = spawn_logged(
            Command::new(program("socat")).arg(listen).arg(connect),
            dir.path(),
            "socat",
        );
        let out = dir.path().join("socat.out");
        wait_listening(&mut child, port, "socat", &[&out]).await;
        Socat {
            port,
            _dir: dir,
            _child: child,
        }
    }
}
