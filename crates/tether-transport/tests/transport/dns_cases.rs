//! The real hickory-based resolver against a small DNS server on loopback,
//! to check that each DNS answer is classified as the catalog expects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tether_transport::{DnsErrorKind, Resolve, SystemResolver, Transport, TransportConfig};
use tether_wire::ErrorCode;
use tokio::net::UdpSocket;

/// Answers by name: ok.test has an A record, nx.test does not exist,
/// fail.test fails, empty.test has no addresses, refused.test is refused,
/// and silent.test gets no answer at all.
async fn start_dns_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = query.queries().first().cloned() else {
                continue;
            };
            let name = q.name().to_ascii().to_ascii_lowercase();
            let mut reply = Message::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .add_query(q.clone());
            match name.as_str() {
                "ok.test." => {
                    reply.set_response_code(ResponseCode::NoError);
                    if q.query_type() == RecordType::A {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::A(A(Ipv4Addr::new(127, 0, 0, 7))),
                        ));
                    }
                }
                "nx.test." => {
                    reply.set_response_code(ResponseCode::NXDomain);
                }
                "fail.test." => {
                    reply.set_response_code(ResponseCode::ServFail);
                }
                "refused.test." => {
                    reply.set_response_code(ResponseCode::Refused);
                }
                "silent.test." => continue,
                _ => {
                    reply.set_response_code(ResponseCode::NoError);
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn hickory_answers_are_classified() {
    let (addr, server) = start_dns_server().await;
    let resolver = SystemResolver::with_name_servers(vec![addr], Duration::from_millis(300));

    assert_eq!(
        resolver.resolve("ok.test").await,
        Ok(vec![IpAddr::from([127, 0, 0, 7])])
    );
    for (host, kind) in [
        ("nx.test", DnsErrorKind::NxDomain),
        ("fail.test", DnsErrorKind::ServFail),
        ("empty.test", DnsErrorKind::NoAddress),
        ("silent.test", DnsErrorKind::Timeout),
    ] {
        let got = resolver.resolve(host).await.map_err(|e| e.kind);
        assert_eq!(got, Err(kind), "{host}");
    }
    let got = resolver.resolve("refused.test").await.map_err(|e| e.kind);
    assert!(
        matches!(got, Err(DnsErrorKind::Other(ref m)) if m.contains("Refused")),
        "{got:?}"
    );
    server.abort();
}

#[tokio::test]
async fn the_transport_reports_hickory_failures_with_catalog_codes() {
    let (addr, server) = start_dns_server().await;
    let resolver = SystemResolver::with_name_servers(vec![addr], Duration::from_millis(300));
    let config = TransportConfig {
        trust: tether_transport::TrustConfig {
            pinned_ca_sha256: Some([7; 32]),
            system_roots: false,
            ..Default::default()
        },
        ..TransportConfig::default()
    };
    let t = Transport::new(config)
        .expect("valid")
        .with_resolver(Arc::new(resolver));
    let err = t.resolve("nx.test").await.expect_err("nxdomain");
    assert_eq!(err.code(), ErrorCode::DnsNxDomain, "{err}");
    let err = t.resolve("fail.test").await.expect_err("servfail");
    assert_eq!(err.code(), ErrorCode::DnsServFail, "{err}");
    let (addrs, _) = t.resolve("ok.test").await.expect("resolves");
    assert_eq!(addrs, vec![IpAddr::from([127, 0, 0, 7])]);
    server.abort();
}

#[tokio::test]
async fn the_system_resolver_reads_etc_hosts() {
    // /etc/hosts maps localhost on every supported system.
    let resolver = SystemResolver::new();
    let addrs = resolver
        .resolve("localhost")
        .await
        .expect("localhost resolves");
    assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
}
