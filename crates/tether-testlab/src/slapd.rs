//! A real OpenLDAP slapd on 127.0.0.1 in the foreground with its own
//! `slapd.conf` (no database: enough for the StartTLS extended operation),
//! never the system service.

use std::path::Path;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

pub struct Slapd {
    pub port: u16,
    _child: Child,
    _dir: Scratch,
}

impl Slapd {
    /// Plain LDAP with StartTLS using `cert` (a PEM chain) and `key`.
    pub async fn start(cert: &Path, key: &Path) -> Slapd {
        let dir = Scratch::new("slapd");
        let d = dir.path().display();
        let port = free_port();
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 pidfile {d}/slapd.pid\n\
                 argsfile {d}/slapd.args\n\
                 TLSCertificateFile {cert}\n\
                 TLSCertificateKeyFile {key}\n",
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("slapd.conf");
        let mut child = spawn_logged(
            Command::new(program("slapd"))
                .arg("-f")
                .arg(&conf)
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                // -d keeps it in the foreground (debug level 0: errors only).
                .arg("-d")
                .arg("0"),
            dir.path(),
            "slapd",
        );
        let out = dir.path().join("slapd.out");
        wait_listening(&mut child, port, "slapd", &[&out]).await;
        Slapd {
            port,
            _child: child,
            _dir: dir,
        }
    }
}
