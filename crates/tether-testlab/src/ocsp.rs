//! A real `openssl ocsp` responder for a test CA, signing with the CA's own
//! key, answering from an index that lists one serial as valid and one as
//! revoked (anything else is "unknown" to it).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::pki::Ca;
use crate::{Scratch, program};

pub struct OpensslOcsp {
    _dir: Scratch,
    _child: Child,
}

impl OpensslOcsp {
    pub async fn start(port: u16, ca: &Ca, good: &[u8], revoked: &[u8]) -> OpensslOcsp {
        let dir = Scratch::new("ocsp");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        let index = format!(
            "V\t351231235959Z\t\t{}\tunknown\t/CN=localhost\n\
             R\t351231235959Z\t250101000000Z,keyCompromise\t{}\tunknown\t/CN=localhost\n",
            hex(good),
            hex(revoked)
        );
        std::fs::write(dir.path().join("index.txt"), index).expect("write");
        std::fs::write(dir.path().join("index.txt.attr"), "unique_subject = no\n").expect("write");
        ca.write(dir.path(), "ca");
        let mut child = Command::new(program("openssl"))
            .current_dir(dir.path())
            .args([
                "ocsp",
                "-index",
                "index.txt",
                "-CA",
                "ca.pem",
                "-rsigner",
                "ca.pem",
                "-rkey",
                "ca.key",
                "-ignore_err",
                "-port",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start openssl ocsp: {e}"));
        // openssl 3.0's responder wedges on a connection closed without a
        // request, so readiness is read from its log, not probed by a
        // connect: it says "waiting for OCSP client connections" once bound.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.contains("waiting for OCSP client connections");
                seen.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let status = child.try_wait().ok().flatten();
            panic!(
                "openssl ocsp did not come up on {port} within 5 s (exit: {status:?}): {}",
                seen.join(" | ")
            );
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        OpensslOcsp {
            _dir: dir,
            _child: child,
        }
    }
}
