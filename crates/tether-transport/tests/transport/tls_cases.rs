//! The TLS phase: trust by CA file, by pin, and every refusal the catalog
//! names, with the presented chain captured on failure.

use std::sync::Arc;
use std::time::Duration;

use tether_transport::{
    Phase, TlsErrorKind, Transport, TransportConfig, TransportError, TrustConfig, fingerprint,
};
use tether_wire::{ErrorCode, ManualClock};
use time::OffsetDateTime;

use crate::pki::Ca;
use crate::server::TestServer;
use crate::{config_trusting, get, transport, url};

fn pinned_only(ca: &Ca) -> TransportConfig {
    let pin = tether_transport::parse_fingerprint(&fingerprint(&ca.der())).expect("own format");
    TransportConfig {
        trust: TrustConfig {
            pinned_ca_sha256: Some(pin),
            ca_pem: None,
            extra_ca_pem: None,
            system_roots: false,
        },
        ..TransportConfig::default()
    }
}

/// Expects a TLS error, checks the code, the phase and the captured chain,
/// and returns the kind.
fn expect_tls(
    result: Result<impl std::fmt::Debug, TransportError>,
    code: ErrorCode,
    leaf: &[u8],
) -> TlsErrorKind {
    let err = result.expect_err("the handshake must fail");
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(err.phase(), Phase::Tls, "{err}");
    assert!(!err.is_retriable(), "{err}");
    let TransportError::Tls {
        kind,
        chain,
        server_name,
    } = err
    else {
        panic!("not a TLS error");
    };
    assert_eq!(server_name, "localhost");
    assert_eq!(
        chain.first().map(Vec::as_slice),
        Some(leaf),
        "the presented chain is captured"
    );
    kind
}

#[tokio::test]
async fn trusted_ca_file_gives_a_full_exchange_with_timings() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1", "::1"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));

    let resp = t
        .request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await
        .expect("request succeeds");
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"hello from the test server");
    assert!(resp.timings.dns.is_some());
    assert!(resp.timings.connect.is_some());
    assert!(resp.timings.tls.is_some());
    assert!(resp.timings.http.is_some());
    assert_eq!(resp.timings.proxy, None);
}

#[tokio::test]
async fn one_connection_carries_many_requests_with_default_headers() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));

    let mut conn = t
        .connect(&url(&format!("https://localhost:{}/", server.port())))
        .await
        .expect("connects");
    assert_eq!(conn.peer, server.addr);
    assert_eq!(conn.via_proxy, None);
    assert_eq!(conn.tls.protocol, "TLSv1.3");
    assert!(conn.tls.cipher.starts_with("TLS13_"), "{}", conn.tls.cipher);
    assert_eq!(conn.tls.server_name, "localhost");
    assert_eq!(
        conn.tls.peer_chain_der,
        vec![leaf.der.to_vec(), ca.der().to_vec()]
    );
    for i in 0..3 {
        // An absolute URI is reduced to origin form.
        let target = format!("https://localhost:{}/echo?n={i}", server.port());
        let resp = conn.send(get(&target)).await.expect("request succeeds");
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        assert_eq!(
            body,
            format!(
                "method=GET target=/echo?n={i} host=localhost:{} ua=tether-test/1.0",
                server.port()
            )
        );
        assert!(conn.is_open());
    }
    // A Host or User-Agent set by the caller is kept.
    let req = http::Request::get("/echo")
        .header("host", "override.example")
        .header("user-agent", "custom/2")
        .body(bytes::Bytes::new())
        .expect("valid request");
    let resp = conn.send(req).await.expect("request succeeds");
    assert!(
        String::from_utf8_lossy(&resp.body).ends_with("host=override.example ua=custom/2"),
        "{:?}",
        resp.body
    );
    assert_eq!(server.connections(), 1, "keep-alive reuses the connection");
}

#[tokio::test]
async fn ip_literal_urls_are_checked_against_ip_sans() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1", "::1"]);
    let v4 = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let v6 = TestServer::start_on("[::1]:0", leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));

    let resp = t
        .request(
            &url(&format!("https://127.0.0.1:{}/hello", v4.port())),
            get("/"),
        )
        .await
        .expect("IPv4 literal");
    assert_eq!(resp.status, 200);
    let mut conn = t
        .connect(&url(&format!("https://[::1]:{}/", v6.port())))
        .await
        .expect("IPv6 literal");
    assert_eq!(conn.tls.server_name, "::1");
    let resp = conn.send(get("/echo")).await.expect("request succeeds");
    assert!(
        String::from_utf8_lossy(&resp.body).contains(&format!("host=[::1]:{}", v6.port())),
        "{:?}",
        resp.body
    );
}

#[tokio::test]
async fn a_pinned_ca_fingerprint_alone_is_enough() {
    let ca = Ca::root("Pinned CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(pinned_only(&ca));
    let resp = t
        .request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await
        .expect("pinned CA anchors the chain");
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn a_pinned_ca_saved_in_ca_pem_anchors_a_chain_without_it() {
    let ca = Ca::root("Pinned CA");
    let leaf = ca.issue(&["localhost"]);
    // The server sends only its leaf.
    let server = TestServer::start(leaf.chain(&[]), leaf.key()).await;
    let mut config = pinned_only(&ca);
    config.trust.ca_pem = Some(ca.pem());
    let t = transport(config);
    let resp = t
        .request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await
        .expect("the saved CA has the pinned fingerprint");
    assert_eq!(resp.status, 200);

    // Without the saved copy, the pinned CA is nowhere in the chain.
    let t = transport(pinned_only(&ca));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::ServerCaPinMismatch,
        &leaf.der,
    );
    assert!(matches!(kind, TlsErrorKind::PinMismatch { .. }), "{kind:?}");
}

#[tokio::test]
async fn a_different_ca_is_a_pin_mismatch_listing_what_was_presented() {
    let ca = Ca::root("Real CA");
    let other = Ca::root("Pinned but absent CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    // The pin wins over a ca_pem that would otherwise trust the server.
    let mut config = pinned_only(&other);
    config.trust.ca_pem = Some(ca.pem());
    let t = transport(config);
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::ServerCaPinMismatch,
        &leaf.der,
    );
    assert_eq!(
        kind,
        TlsErrorKind::PinMismatch {
            expected: fingerprint(&other.der()),
            presented: vec![fingerprint(&leaf.der), fingerprint(&ca.der())],
        }
    );
}

#[tokio::test]
async fn a_presented_pinned_ca_that_does_not_sign_the_leaf_is_a_mismatch() {
    let pinned = Ca::root("Pinned CA");
    let interceptor = Ca::root("Interception CA");
    let leaf = interceptor.issue(&["localhost"]);
    // The server appends the pinned CA to a chain it did not sign.
    let server = TestServer::start(leaf.chain(&[&interceptor, &pinned]), leaf.key()).await;
    let t = transport(pinned_only(&pinned));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::ServerCaPinMismatch,
        &leaf.der,
    );
    assert!(matches!(kind, TlsErrorKind::PinMismatch { .. }), "{kind:?}");
}

#[tokio::test]
async fn an_expired_certificate_reports_its_end_date() {
    let ca = Ca::root("Tether Test CA");
    let now = OffsetDateTime::now_utc();
    let leaf = ca.issue_between(
        &["localhost"],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::TlsCertExpired,
        &leaf.der,
    );
    let TlsErrorKind::Expired {
        not_after,
        now: checked_at,
    } = kind
    else {
        panic!("expected Expired, got {kind:?}");
    };
    assert_eq!(not_after, leaf.not_after);
    assert!(checked_at > not_after);

    // The pinned path reports expiry the same way.
    let t = transport(pinned_only(&ca));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::TlsCertExpired,
        &leaf.der,
    );
    assert!(matches!(kind, TlsErrorKind::Expired { .. }), "{kind:?}");
}

#[tokio::test]
async fn validity_is_checked_against_the_injected_clock() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let target = url(&format!("https://localhost:{}/hello", server.port()));

    let past = time::macros::datetime!(2001-01-01 00:00 UTC);
    let t = transport(config_trusting(&ca)).with_clock(Arc::new(ManualClock::new(past)));
    let kind = expect_tls(
        t.request(&target, get("/")).await,
        ErrorCode::TlsCertNotYetValid,
        &leaf.der,
    );
    assert_eq!(
        kind,
        TlsErrorKind::NotYetValid {
            not_before: leaf.not_before,
            now: past,
        }
    );

    let future = leaf.not_after + time::Duration::days(1);
    let future = future.replace_nanosecond(0).expect("valid");
    let t = transport(config_trusting(&ca)).with_clock(Arc::new(ManualClock::new(future)));
    let kind = expect_tls(
        t.request(&target, get("/")).await,
        ErrorCode::TlsCertExpired,
        &leaf.der,
    );
    assert_eq!(
        kind,
        TlsErrorKind::Expired {
            not_after: leaf.not_after,
            now: future,
        }
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_is_a_hostname_mismatch() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["other.example", "192.0.2.9"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::TlsHostnameMismatch,
        &leaf.der,
    );
    let TlsErrorKind::HostnameMismatch {
        expected,
        presented,
    } = kind
    else {
        panic!("expected HostnameMismatch, got {kind:?}");
    };
    assert_eq!(expected, "localhost");
    assert!(
        presented.iter().any(|n| n.contains("other.example")),
        "{presented:?}"
    );
}

#[tokio::test]
async fn an_untrusted_ca_is_an_unknown_issuer_naming_it() {
    let trusted = Ca::root("Trusted CA");
    let untrusted = Ca::root("Untrusted Interception CA");
    let leaf = untrusted.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&untrusted]), leaf.key()).await;
    let t = transport(config_trusting(&trusted));
    let kind = expect_tls(
        t.request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await,
        ErrorCode::TlsUnknownIssuer,
        &leaf.der,
    );
    let TlsErrorKind::UnknownIssuer { issuer } = kind else {
        panic!("expected UnknownIssuer, got {kind:?}");
    };
    assert!(issuer.contains("Untrusted Interception CA"), "{issuer}");

    // Adding the interception CA as an extra root makes it trusted.
    let mut config = config_trusting(&trusted);
    config.trust.extra_ca_pem = Some(untrusted.pem());
    let resp = transport(config)
        .request(
            &url(&format!("https://localhost:{}/hello", server.port())),
            get("/"),
        )
        .await
        .expect("extra CA trusted");
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn the_tls_phase_alone_reports_what_was_negotiated() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));
    let (io, _) = t.tcp_connect(server.addr).await.expect("tcp");
    let (_stream, info, elapsed) = t.tls_handshake(io, "localhost").await.expect("tls");
    assert_eq!(info.peer_chain_der.len(), 2);
    assert_eq!(info.protocol, "TLSv1.3");
    assert!(elapsed > Duration::ZERO);

    // A server that is not TLS at all fails the handshake, not verification.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain_addr = plain.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut s, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let (io, _) = t.tcp_connect(plain_addr).await.expect("tcp");
    let Err(err) = t.tls_handshake(io, "localhost").await else {
        panic!("a plain-text server must fail the handshake");
    };
    assert_eq!(err.code(), ErrorCode::TlsHandshakeFailed, "{err}");
    assert!(
        matches!(err, TransportError::Tls { kind: TlsErrorKind::Handshake(_), ref chain, .. } if chain.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let mut config = config_trusting(&ca);
    config.max_body_bytes = 100 * 1024;
    let t = transport(config);
    let base = format!("https://localhost:{}", server.port());
    for path in ["/big", "/chunked"] {
        let err = t
            .request(&url(&format!("{base}{path}")), get("/"))
            .await
            .expect_err("over the cap");
        assert!(
            matches!(err, TransportError::BodyTooLarge { limit: 102400 }),
            "{path}: {err}"
        );
        assert_eq!(err.code(), ErrorCode::HttpProtocol);
        assert_eq!(err.phase(), Phase::Http);
    }
    // The default 4 MiB cap lets 1 MiB and 2 MiB through.
    let t = transport(config_trusting(&ca));
    let resp = t
        .request(&url(&format!("{base}/chunked")), get("/"))
        .await
        .expect("under the cap");
    assert_eq!(resp.body.len(), 32 * 64 * 1024);
}

#[tokio::test]
async fn a_slow_server_hits_the_http_timeout() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let mut config = config_trusting(&ca);
    config.timeouts.http = Duration::from_millis(300);
    let t = transport(config);
    let started = tokio::time::Instant::now();
    let err = t
        .request(
            &url(&format!("https://localhost:{}/slow", server.port())),
            get("/"),
        )
        .await
        .expect_err("times out");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.code(), ErrorCode::HttpTimeout, "{err}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn retry_after_is_read_from_a_real_response() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["localhost"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let t = transport(config_trusting(&ca));
    let resp = t
        .request(
            &url(&format!("https://localhost:{}/retry", server.port())),
            get("/"),
        )
        .await
        .expect("a 429 is a response, not an error");
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.retry_after(OffsetDateTime::now_utc()),
        Some(Duration::from_secs(7))
    );
}

#[tokio::test]
async fn plain_http_urls_are_refused_before_any_traffic() {
    let t: Transport = transport(TransportConfig::default());
    let err = t
        .request(&url("http://localhost:1/"), get("/"))
        .await
        .expect_err("http is refused");
    assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    assert_eq!(err.phase(), Phase::Config);
}
