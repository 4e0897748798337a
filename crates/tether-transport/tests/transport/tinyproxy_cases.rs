//! The proxy phase against a real proxy: tinyproxy with Basic auth.
//!
//! tinyproxy must be installed (`scripts/install-test-deps.sh`); these tests
//! fail, never skip, when it is missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tether_transport::{
    Phase, ProxyConfig, ProxySetting, Transport, TransportConfig, TransportError,
};
use tether_wire::ErrorCode;

use crate::pki::Ca;
use crate::server::TestServer;
use crate::{config_trusting, get, url};

struct Tinyproxy {
    port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

fn tinyproxy_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("tinyproxy"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the tinyproxy binary is missing: run scripts/install-test-deps.sh")
        })
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port, demanding `user:pass` and
    /// allowing CONNECT to `connect_port` only.
    async fn start(connect_port: u16) -> Tinyproxy {
        let binary = tinyproxy_binary();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Timeout 30\n\
             MaxClients 20\n\
             Allow 127.0.0.1\n\
             BasicAuth user pass\n\
             ConnectPort {connect_port}\n\
             LogLevel Info\n\
             LogFile \"{log}\"\n\
             PidFile \"{pid}\"\n",
            log = dir.path().join("tinyproxy.log").display(),
            pid = dir.path().join("tinyproxy.pid").display(),
        );
        let config_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = tokio::process::Command::new(&binary)
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Tinyproxy {
                    port,
                    dir,
                    _child: child,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("tinyproxy.log")).unwrap_or_default();
                panic!("tinyproxy exited with {status}: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tinyproxy did not listen on 127.0.0.1:{port} within 5 s");
    }

    fn transport(&self, ca: &Ca, credentials: Option<(&str, &str)>) -> Transport {
        let url = match credentials {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        };
        let config = TransportConfig {
            proxy: ProxySetting::Explicit(ProxyConfig::parse(&url).expect("valid proxy URL")),
            ..config_trusting(ca)
        };
        Transport::new(config).expect("valid")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

async fn setup() -> (Ca, TestServer) {
    let ca = Ca::new("Tether Test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    (ca, server)
}

#[tokio::test]
async fn tinyproxy_demands_basic_auth_and_rejects_wrong_credentials() {
    let (ca, server) = setup().await;
    let proxy = Tinyproxy::start(server.port()).await;
    let target = url(&format!("https://127.0.0.1:{}/hello", server.port()));

    let err = proxy
        .transport(&ca, None)
        .request(&target, get("/"))
        .await
        .expect_err("407");
    assert_eq!(err.code(), ErrorCode::ProxyAuthRequired, "{err}");
    assert_eq!(err.phase(), Phase::ProxyAuth);
    assert!(
        matches!(&err, TransportError::ProxyAuth { offered_schemes, status: 407, .. } if offered_schemes == &["Basic"]),
        "{err:?}"
    );

    // tinyproxy 1.11 answers wrong credentials with 401, not 407.
    let err = proxy
        .transport(&ca, Some(("user", "wrong")))
        .request(&target, get("/"))
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), ErrorCode::ProxyAuthFailed, "{err}");
    assert!(
        matches!(&err, TransportError::ProxyAuth { offered_schemes, credentials_configured: true, .. } if offered_schemes == &["Basic"]),
        "{err:?}"
    );
}

#[tokio::test]
async fn tinyproxy_with_the_right_credentials_carries_https() {
    let (ca, server) = setup().await;
    let proxy = Tinyproxy::start(server.port()).await;
    let t = proxy.transport(&ca, Some(("user", "pass")));
    let mut conn = t
        .connect(&url(&format!("https://127.0.0.1:{}/", server.port())))
        .await
        .unwrap_or_else(|e| panic!("through tinyproxy: {e}\n{}", proxy.log()));
    assert_eq!(conn.via_proxy, Some(format!("127.0.0.1:{}", proxy.port)));
    for _ in 0..2 {
        let resp = conn
            .send(get("/hello"))
            .await
            .expect("request through tinyproxy");
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"hello from the test server");
    }
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port())),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn tinyproxy_refuses_ports_outside_connect_port() {
    let (ca, server) = setup().await;
    // Allow CONNECT to some other port only.
    let proxy = Tinyproxy::start(server.port().wrapping_add(1)).await;
    let err = proxy
        .transport(&ca, Some(("user", "pass")))
        .request(
            &url(&format!("https://127.0.0.1:{}/hello", server.port())),
            get("/"),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::ProxyConnectRefused, "{err}");
    assert!(
        matches!(&err, TransportError::ProxyRefused { status: 403, reason, .. } if reason == "Access violation"),
        "{err:?}"
    );
}
