//! The proxy phase against the in-test CONNECT proxy.

use std::sync::Arc;
use std::time::Duration;

use tether_transport::{
    Phase, ProxyConfig, ProxySetting, StaticResolver, Transport, TransportConfig, TransportError,
};
use tether_wire::ErrorCode;

use crate::pki::Ca;
use crate::server::TestServer;
use crate::{config_trusting, get, url};
use tether_testlab::connect_proxy::{ProxyMode as Mode, TestProxy};

fn basic() -> Mode {
    Mode::Basic {
        user: "alice".into(),
        pass: "s3cret".into(),
    }
}

/// A transport that goes through `proxy_url` and cannot resolve any name
/// itself, which proves the target's name is resolved by the proxy.
fn via(ca: &Ca, proxy_url: &str) -> Transport {
    let config = TransportConfig {
        proxy: ProxySetting::Explicit(ProxyConfig::parse(proxy_url).expect("valid proxy URL")),
        ..config_trusting(ca)
    };
    Transport::new(config)
        .expect("valid")
        .with_resolver(Arc::new(StaticResolver::new()))
}

struct Setup {
    ca: Ca,
    server: tether_testlab::https::HttpsServer,
}

async fn setup() -> Setup {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    Setup { ca, server }
}

impl Setup {
    fn target(&self) -> url::Url {
        url(&format!("https://localhost:{}/hello", self.server.port()))
    }
}

#[tokio::test]
async fn without_credentials_the_proxy_demands_them() {
    let s = setup().await;
    let proxy = TestProxy::start(basic()).await;
    let err = via(&s.ca, &proxy.url())
        .request(&s.target(), get("/"))
        .await
        .expect_err("407");
    assert_eq!(err.code(), ErrorCode::ProxyAuthRequired, "{err}");
    assert_eq!(err.phase(), Phase::ProxyAuth);
    let TransportError::ProxyAuth {
        offered_schemes,
        credentials_configured,
        status,
        proxy: shown,
    } = err
    else {
        panic!("not a proxy auth error");
    };
    assert_eq!(offered_schemes, vec!["Basic"]);
    assert!(!credentials_configured);
    assert_eq!(status, 407);
    assert_eq!(shown, proxy.addr.to_string());
    let seen = proxy.requests();
    assert!(
        !seen[0].to_ascii_lowercase().contains("proxy-authorization"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_rejected_and_never_shown() {
    let s = setup().await;
    let proxy = TestProxy::start(basic()).await;
    let err = via(&s.ca, &proxy.url_with("alice", "wrong-pass"))
        .request(&s.target(), get("/"))
        .await
        .expect_err("407");
    assert_eq!(err.code(), ErrorCode::ProxyAuthFailed, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pass"));
}

#[tokio::test]
async fn right_credentials_open_a_tunnel_for_a_full_https_exchange() {
    let s = setup().await;
    let proxy = TestProxy::start(basic()).await;
    let t = via(&s.ca, &proxy.url_with("alice", "s3cret"));
    let mut conn = t
        .connect(&url(&format!("https://localhost:{}/", s.server.port())))
        .await
        .expect("tunnel and TLS");
    assert_eq!(
        conn.via_proxy.as_deref(),
        Some(proxy.addr.to_string().as_str())
    );
    assert_eq!(conn.peer, proxy.addr);
    assert!(conn.timings.proxy.is_some());
    assert!(conn.timings.tls.is_some());
    for _ in 0..2 {
        let resp = conn
            .send(get("/hello"))
            .await
            .expect("request through the tunnel");
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"hello from the test server");
    }
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    let port = s.server.port();
    assert!(
        seen[0].starts_with(&format!(
            "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
        )),
        "{seen:?}"
    );
    // base64("alice:s3cret")
    assert!(
        seen[0].contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_proxy_phase_alone_returns_the_reply() {
    let s = setup().await;
    let proxy = TestProxy::start(Mode::Open).await;
    let config = ProxyConfig::parse(&proxy.url()).expect("valid");
    let t = via(&s.ca, &proxy.url());
    let (io, _) = t.tcp_connect(proxy.addr).await.expect("tcp to proxy");
    let (io, reply, _) = t
        .proxy_tunnel(io, &config, "localhost", s.server.port())
        .await
        .expect("tunnel");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.reason, "Connection established");
    let (_tls, info, _) = t
        .tls_handshake(io, "localhost")
        .await
        .expect("TLS through the tunnel");
    assert_eq!(info.peer_chain_der.len(), 2);
}

#[tokio::test]
async fn a_blocking_proxy_is_a_refusal_with_its_reason() {
    let s = setup().await;
    let proxy = TestProxy::start(Mode::Block).await;
    let err = via(&s.ca, &proxy.url())
        .request(&s.target(), get("/"))
        .await
        .expect_err("403");
    assert_eq!(err.code(), ErrorCode::ProxyConnectRefused, "{err}");
    assert_eq!(err.phase(), Phase::ProxyConnect);
    assert!(
        matches!(&err, TransportError::ProxyRefused { status: 403, reason, .. } if reason == "Forbidden"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_non_http_reply_is_a_bad_reply() {
    let s = setup().await;
    let proxy = TestProxy::start(Mode::Garbage).await;
    let err = via(&s.ca, &proxy.url())
        .request(&s.target(), get("/"))
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), ErrorCode::ProxyBadReply, "{err}");
    assert!(err.to_string().contains("SSH-2.0"), "{err}");
}

#[tokio::test]
async fn a_silent_proxy_times_out() {
    let s = setup().await;
    let proxy = TestProxy::start(Mode::Silent).await;
    let config = TransportConfig {
        proxy: ProxySetting::Explicit(ProxyConfig::parse(&proxy.url()).expect("valid")),
        ..config_trusting(&s.ca)
    };
    let mut config = config;
    config.timeouts.proxy = Duration::from_millis(200);
    let t = Transport::new(config).expect("valid");
    let err = t.request(&s.target(), get("/")).await.expect_err("silent");
    assert_eq!(err.code(), ErrorCode::ProxyTimeout, "{err}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn a_closed_proxy_port_is_unreachable() {
    let s = setup().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let err = via(&s.ca, &format!("http://u:pw@{addr}"))
        .request(&s.target(), get("/"))
        .await
        .expect_err("closed");
    assert_eq!(err.code(), ErrorCode::ProxyUnreachable, "{err}");
    assert_eq!(err.phase(), Phase::ProxyConnect);
    let TransportError::ProxyUnreachable { proxy, source } = &err else {
        panic!("not ProxyUnreachable");
    };
    assert_eq!(proxy, &addr.to_string());
    assert_eq!(source.code(), ErrorCode::ConnectRefused);

    // An unresolvable proxy name is unreachable too, with the DNS cause.
    let err = via(&s.ca, "http://proxy.invalid:3128")
        .request(&s.target(), get("/"))
        .await
        .expect_err("no such proxy");
    let TransportError::ProxyUnreachable { source, .. } = &err else {
        panic!("not ProxyUnreachable: {err}");
    };
    assert_eq!(source.code(), ErrorCode::DnsNxDomain);
}

#[tokio::test]
async fn no_proxy_hosts_go_direct() {
    let s = setup().await;
    let mut proxy = ProxyConfig::parse("http://127.0.0.1:9").expect("valid");
    proxy.no_proxy = vec![".example".into(), "localhost".into()];
    let config = TransportConfig {
        proxy: ProxySetting::Explicit(proxy),
        ..config_trusting(&s.ca)
    };
    let t = Transport::new(config)
        .expect("valid")
        .with_resolver(crate::localhost_resolver());
    assert!(t.proxy_for("localhost").is_none());
    assert_eq!(
        t.proxy_for("server.test").map(|p| p.redacted()),
        Some("127.0.0.1:9".to_owned())
    );
    let conn = t
        .connect(&url(&format!("https://localhost:{}/", s.server.port())))
        .await
        .expect("direct");
    assert_eq!(conn.via_proxy, None);
}
