//! The proxy phase against a real proxy: tinyproxy with Basic auth.
//!
//! tinyproxy must be installed (`scripts/install-test-deps.sh`); these tests
//! fail, never skip, when it is missing.

use tether_transport::{
    Phase, ProxyConfig, ProxySetting, Transport, TransportConfig, TransportError,
};
use tether_wire::ErrorCode;

use tether_testlab::https::HttpsServer;
use tether_testlab::tinyproxy::Tinyproxy;

use crate::pki::Ca;
use crate::server::TestServer;
use crate::{config_trusting, get, url};

/// A transport through `proxy`, trusting `ca`, with or without credentials.
fn through(proxy: &Tinyproxy, ca: &Ca, credentials: Option<(&str, &str)>) -> Transport {
    let url = match credentials {
        Some((u, p)) => proxy.url_with(u, p),
        None => proxy.url(),
    };
    let config = TransportConfig {
        proxy: ProxySetting::Explicit(ProxyConfig::parse(&url).expect("valid proxy URL")),
        ..config_trusting(ca)
    };
    Transport::new(config).expect("valid")
}

async fn setup() -> (Ca, HttpsServer) {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    (ca, server)
}

#[tokio::test]
async fn tinyproxy_demands_basic_auth_and_rejects_wrong_credentials() {
    let (ca, server) = setup().await;
    let proxy = Tinyproxy::start(server.port()).await;
    let target = url(&format!("https://127.0.0.1:{}/hello", server.port()));

    let err = through(&proxy, &ca, None)
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
    let err = through(&proxy, &ca, Some(("user", "wrong")))
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
    let t = through(&proxy, &ca, Some(("user", "pass")));
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
    let err = through(&proxy, &ca, Some(("user", "pass")))
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
