//! A real dovecot on 127.0.0.1 in the foreground with its own config, base
//! directory and log (never the system service): IMAP and POP3 in clear
//! text with STARTTLS/STLS on, the given certificate, no mail.

use std::path::Path;

use tokio::process::{Child, Command};

use crate::{Scratch, free_port, program, spawn_logged, wait_listening};

pub struct Dovecot {
    pub imap_port: u16,
    pub pop3_port: u16,
    _child: Child,
    _dir: Scratch,
}

impl Dovecot {
    /// Serves IMAP and POP3 with STARTTLS using `cert` (a PEM chain) and
    /// `key`.
    pub async fn start(cert: &Path, key: &Path) -> Dovecot {
        let dir = Scratch::new("dovecot");
        dir.open_to_all();
        let d = dir.path().display();
        let (imap_port, pop3_port) = (free_port(), free_port());
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {d}/run\n\
                 state_dir = {d}/state\n\
                 log_path = {d}/dovecot.log\n\
                 protocols = imap pop3\n\
                 listen = 127.0.0.1\n\
                 ssl = yes\n\
                 ssl_cert = <{cert}\n\
                 ssl_key = <{key}\n\
                 ssl_min_protocol = TLSv1.2\n\
                 disable_plaintext_auth = yes\n\
                 auth_mechanisms = plain\n\
                 passdb {{\n  driver = static\n  args = password=unused\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}}\n\
                 mail_location = maildir:~/Maildir\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3_port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
                 service stats {{\n  unix_listener stats-reader {{\n    mode = 0666\n  }}\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n",
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("dovecot.conf");
        let mut child = spawn_logged(
            Command::new(program("dovecot"))
                .arg("-F")
                .arg("-c")
                .arg(&conf),
            dir.path(),
            "dovecot",
        );
        let out = dir.path().join("dovecot.out");
        let log = dir.path().join("dovecot.log");
        wait_listening(&mut child, imap_port, "dovecot (IMAP)", &[&out, &log]).await;
        wait_listening(&mut child, pop3_port, "dovecot (POP3)", &[&out, &log]).await;
        Dovecot {
            imap_port,
            pop3_port,
            _child: child,
            _dir: dir,
        }
    }
}
