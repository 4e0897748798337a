//! DNS and TCP phases through the full path, with injected resolvers and
//! dialers, and real refused ports.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tether_transport::{
    BoxFuture, BoxedIo, ConnectErrorKind, Dial, DnsErrorKind, Phase, Resolve, StaticResolver,
    TcpDialer, Transport, TransportError,
};
use tether_wire::ErrorCode;

use crate::pki::Ca;
use crate::server::TestServer;
use crate::{config_trusting, get, transport, url};

/// A port on 127.0.0.1 where nothing listens: bound, then released.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

#[tokio::test]
async fn dns_failures_map_to_their_codes() {
    let ca = Ca::root("Tether Test CA");
    let resolver = StaticResolver::new()
        .with("servfail.test", Err(DnsErrorKind::ServFail))
        .with("slow.test", Err(DnsErrorKind::Timeout))
        .with("empty.test", Ok(vec![]))
        .with(
            "weird.test",
            Err(DnsErrorKind::Other("resolver on fire".into())),
        );
    let t = Transport::new(config_trusting(&ca))
        .expect("valid")
        .with_resolver(Arc::new(resolver));
    for (host, code) in [
        ("missing.test", ErrorCode::DnsNxDomain),
        ("servfail.test", ErrorCode::DnsServFail),
        ("slow.test", ErrorCode::DnsTimeout),
        ("empty.test", ErrorCode::DnsNoAddress),
        ("weird.test", ErrorCode::DnsFailed),
    ] {
        let err = t
            .request(&url(&format!("https://{host}/")), get("/"))
            .await
            .expect_err(host);
        assert_eq!(err.code(), code, "{host}: {err}");
        assert_eq!(err.phase(), Phase::Dns);
        assert!(err.to_string().contains(host), "{err}");
    }
}

/// A resolver that never answers.
#[derive(Debug)]
struct HangingResolver;

impl Resolve for HangingResolver {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, tether_transport::DnsError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_resolver_that_never_answers_times_out() {
    let ca = Ca::root("Tether Test CA");
    let t = Transport::new(config_trusting(&ca))
        .expect("valid")
        .with_resolver(Arc::new(HangingResolver));
    let started = tokio::time::Instant::now();
    let err = t.resolve("server.test").await.expect_err("times out");
    assert_eq!(err.code(), ErrorCode::DnsTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // IP literals need no resolver at all.
    let (addrs, _) = t.resolve("[::1]").await.expect("literal");
    assert_eq!(addrs, vec!["::1".parse::<IpAddr>().expect("literal")]);
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let ca = Ca::root("Tether Test CA");
    let port = closed_port().await;
    let t = transport(config_trusting(&ca));
    let err = t
        .request(&url(&format!("https://localhost:{port}/")), get("/"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::ConnectRefused, "{err}");
    assert_eq!(err.phase(), Phase::Connect);
    assert!(err.is_retriable());
    let TransportError::Connect { addr, attempts, .. } = err else {
        panic!("not a connect error");
    };
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(attempts.len(), 1);

    // The single-address phase reports the same.
    let Err(err) = t
        .tcp_connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
    else {
        panic!("a closed port must refuse");
    };
    assert_eq!(err.code(), ErrorCode::ConnectRefused);
}

/// Fails some addresses the way a host without a route would, and dials the
/// rest for real.
#[derive(Debug)]
struct NoRouteTo(Vec<IpAddr>);

impl Dial for NoRouteTo {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxedIo>> {
        if self.0.contains(&addr.ip()) {
            Box::pin(async { Err(io::Error::from(io::ErrorKind::NetworkUnreachable)) })
        } else {
            TcpDialer.dial(addr)
        }
    }
}

#[tokio::test]
async fn each_address_is_tried_in_order_until_one_connects() {
    let ca = Ca::root("Tether Test CA");
    let leaf = ca.issue(&["server.test"]);
    let server = TestServer::start(leaf.chain(&[&ca]), leaf.key()).await;
    let unroutable: IpAddr = "192.0.2.1".parse().expect("literal");
    let lo: IpAddr = "127.0.0.1".parse().expect("literal");
    let resolver = StaticResolver::new().with("server.test", Ok(vec![unroutable, lo]));
    let t = Transport::new(config_trusting(&ca))
        .expect("valid")
        .with_resolver(Arc::new(resolver))
        .with_dialer(Arc::new(NoRouteTo(vec![unroutable])));
    let conn = t
        .connect(&url(&format!("https://server.test:{}/", server.port())))
        .await
        .expect("second address connects");
    assert_eq!(conn.peer, SocketAddr::new(lo, server.port()));
}

#[tokio::test]
async fn when_every_address_fails_the_most_telling_failure_is_reported() {
    let ca = Ca::root("Tether Test CA");
    let port = closed_port().await;
    let unroutable: IpAddr = "192.0.2.1".parse().expect("literal");
    let lo: IpAddr = "127.0.0.1".parse().expect("literal");
    let resolver = StaticResolver::new().with("server.test", Ok(vec![lo, unroutable]));
    let t = Transport::new(config_trusting(&ca))
        .expect("valid")
        .with_resolver(Arc::new(resolver))
        .with_dialer(Arc::new(NoRouteTo(vec![unroutable])));
    let err = t
        .connect(&url(&format!("https://server.test:{port}/")))
        .await
        .expect_err("all fail");
    let TransportError::Connect {
        addr,
        kind,
        attempts,
        ..
    } = &err
    else {
        panic!("not a connect error: {err}");
    };
    // The refusal is reported although the unreachable address came last.
    assert_eq!(*kind, ConnectErrorKind::Refused);
    assert_eq!(addr.ip(), lo);
    let kinds: Vec<&ConnectErrorKind> = attempts.iter().map(|a| &a.kind).collect();
    assert_eq!(
        kinds,
        [&ConnectErrorKind::Refused, &ConnectErrorKind::Unreachable]
    );
    assert!(err.to_string().contains("also tried 192.0.2.1"), "{err}");

    // Unreachable alone maps to its own code.
    let resolver = StaticResolver::new().with("server.test", Ok(vec![unroutable]));
    let t = t.with_resolver(Arc::new(resolver));
    let err = t
        .connect(&url("https://server.test/"))
        .await
        .expect_err("unreachable");
    assert_eq!(err.code(), ErrorCode::ConnectUnreachable, "{err}");
}

/// A dialer whose connections never complete, like a firewall that drops
/// SYN packets.
#[derive(Debug)]
struct Blackhole;

impl Dial for Blackhole {
    fn dial(&self, _addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxedIo>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_silently_dropped_syn_times_out_within_the_connect_limit() {
    let ca = Ca::root("Tether Test CA");
    let mut config = config_trusting(&ca);
    config.timeouts.connect = Duration::from_secs(3);
    let t = Transport::new(config)
        .expect("valid")
        .with_resolver(crate::localhost_resolver())
        .with_dialer(Arc::new(Blackhole));
    let started = tokio::time::Instant::now();
    let err = t
        .connect(&url("https://localhost:8443/"))
        .await
        .expect_err("times out");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(err.code(), ErrorCode::ConnectTimeout, "{err}");
    let TransportError::Connect { kind, elapsed, .. } = err else {
        panic!("not a connect error");
    };
    assert_eq!(kind, ConnectErrorKind::Timeout);
    assert_eq!(elapsed, Duration::from_secs(3));
}
