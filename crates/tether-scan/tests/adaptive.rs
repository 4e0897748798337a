//! The adaptive connect timeout (`tether_scan::rtt`) with an injected
//! dialer (invariant 5) and tokio's paused clock: silent ports stop costing
//! the whole configured timeout once other endpoints have answered, and a
//! host slower than its neighbours is still waited for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::json;
use tether_scan::{DiscoverSpec, EndpointResult, Outcome, Progress, Roots, Scanner, Summary};
use tether_transport::{BoxFuture, BoxedIo, Dial, StaticResolver};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// 10.0.0.1–8 refuse at once; 10.0.0.9 refuses after 600 ms (a slow host);
/// 10.0.0.10 never answers (dropped).
#[derive(Debug)]
struct Lab;

impl Dial for Lab {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<BoxedIo>> {
        Box::pin(async move {
            let IpAddr::V4(v4) = addr.ip() else {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            };
            match v4.octets()[3] {
                9 => tokio::time::sleep(Duration::from_millis(600)).await,
                10 => std::future::pending::<()>().await,
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
            Err(std::io::ErrorKind::ConnectionRefused.into())
        })
    }
}

async fn scan(spec: serde_json::Value) -> (Vec<EndpointResult>, Summary, Duration) {
    let plan = DiscoverSpec::from_json(&spec)
        .expect("spec parses")
        .plan()
        .expect("spec is valid");
    let scanner = Scanner {
        dialer: Arc::new(Lab),
        resolver: Arc::new(StaticResolver::new()),
        roots: Arc::new(Roots::only(&[])),
        ..Scanner::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let started = Instant::now();
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(r) = rx.recv().await {
            all.push(r);
        }
        all
    });
    let summary = scanner
        .run(
            &plan,
            tx,
            Arc::new(Progress::default()),
            Arc::new(AtomicBool::new(false)),
        )
        .await;
    let elapsed = started.elapsed();
    (collect.await.expect("collects"), summary, elapsed)
}

fn at(results: &[EndpointResult], last: u8) -> &Outcome {
    &results
        .iter()
        .find(|r| r.endpoint.ip == IpAddr::from([10, 0, 0, last]))
        .expect("scanned")
        .outcome
}

#[tokio::test(start_paused = true)]
async fn silent_ports_wait_for_the_round_trips_not_the_timeout_and_slow_hosts_still_answer() {
    let (results, summary, elapsed) = scan(json!({
        "targets": ["10.0.0.1-10"], "ports": [443], "concurrency": 64,
        "connect_timeout_ms": 5000, "handshake_timeout_ms": 1000
    }))
    .await;
    assert_eq!(summary.total, 10);
    // The slow host: its 600 ms is past the adaptive 250 ms, but the second
    // handshake (1 s) waits for it.
    assert_eq!(at(&results, 9), &Outcome::Refused, "{results:#?}");
    assert_eq!(summary.outcomes["refused"], 9);
    // The dropped host: 250 ms, then a second handshake of 1 s.
    match at(&results, 10) {
        Outcome::Filtered { detail } => assert_eq!(
            detail,
            "no answer to the TCP handshake within 250 ms (the limit the scan's round trips give), nor to a second one within 1000 ms"
        ),
        other => panic!("expected filtered, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_millis(1_400),
        "the scan took {elapsed:?}, not the 5 s connect timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fixed_timeout_or_no_answers_waits_the_whole_timeout() {
    let (results, _, elapsed) = scan(json!({
        "targets": ["10.0.0.1-10"], "ports": [443],
        "connect_timeout_ms": 5000, "fixed_connect_timeout": true
    }))
    .await;
    match at(&results, 10) {
        Outcome::Filtered { detail } => {
            assert_eq!(detail, "no answer to the TCP handshake within 5000 ms");
        }
        other => panic!("expected filtered, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
    // Nothing answered: nothing to adapt to, the configured timeout holds.
    let (results, _, elapsed) = scan(json!({
        "targets": ["10.0.0.10"], "ports": [443, 8443], "connect_timeout_ms": 2000
    }))
    .await;
    for r in &results {
        assert_eq!(
            r.outcome,
            Outcome::Filtered {
                detail: "no answer to the TCP handshake within 2000 ms".into()
            }
        );
    }
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
}
