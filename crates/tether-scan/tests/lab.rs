//! The scanner against real servers on loopback and in a network namespace
//! of the test's own: openssl s_server (modern, TLS 1.0 only, client
//! certificate required, 10,000 SANs, a 40-certificate chain), nginx,
//! socat, and small hostile listeners (garbage, closed mid-handshake,
//! slowloris). Every endpoint must end in its one expected outcome.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde_json::json;
use tether_scan::{
    DiscoverSpec, EndpointResult, Outcome, Progress, Roots, Scanner, Summary, Verdict,
};
use tether_testlab::netns::Netns;
use tether_testlab::nginx::{Nginx, Site};
use tether_testlab::pki::{Ca, Leaf};
use tether_testlab::{Scratch, free_port, program, spawn_logged, wait_listening};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

async fn scan(
    spec: serde_json::Value,
    roots: &[CertificateDer<'static>],
) -> (Vec<EndpointResult>, Summary) {
    scan_with(spec, roots, Scanner::default().resolver).await
}

/// [`scan`] with the scanner's resolver given (invariant 5).
async fn scan_with(
    spec: serde_json::Value,
    roots: &[CertificateDer<'static>],
    resolver: Arc<dyn tether_transport::Resolve>,
) -> (Vec<EndpointResult>, Summary) {
    let plan = DiscoverSpec::from_json(&spec)
        .expect("spec parses")
        .plan()
        .expect("spec is valid");
    let scanner = Scanner {
        roots: Arc::new(Roots::only(roots)),
        resolver,
        ..Scanner::default()
    };
    let (tx, mut rx) = mpsc::channel(16);
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
    let results = collect.await.expect("collector");
    assert_eq!(
        summary.total,
        results.len() as u64,
        "one result per endpoint"
    );
    assert_eq!(
        summary.outcomes.values().sum::<u64>(),
        summary.total,
        "every outcome counted"
    );
    (results, summary)
}

fn one(port: u16) -> serde_json::Value {
    json!({"targets": ["127.0.0.1"], "ports": [port], "connect_timeout_ms": 1000, "handshake_timeout_ms": 3000})
}

struct SServer {
    port: u16,
    _child: Child,
    _dir: Scratch,
}

/// `openssl s_server` on 127.0.0.1 with the leaf, its chain and `extra`
/// arguments.
async fn s_server(leaf: &Leaf, cas: &[&Ca], extra: &[&str], setup: impl FnOnce(&Path)) -> SServer {
    let dir = Scratch::new("scan-s_server");
    let (cert, key) = leaf.write_chain(dir.path(), "server", &[]);
    let chain = dir.path().join("chain.pem");
    let pem: Vec<u8> = cas.iter().flat_map(|c| c.pem()).collect();
    std::fs::write(&chain, pem).expect("chain");
    setup(dir.path());
    let port = free_port();
    let mut cmd = Command::new(program("openssl"));
    cmd.current_dir(dir.path())
        .arg("s_server")
        .arg("-accept")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-quiet");
    if !cas.is_empty() {
        cmd.arg("-cert_chain").arg(&chain);
    }
    cmd.args(extra);
    let mut child = spawn_logged(&mut cmd, dir.path(), "s_server");
    let log = dir.path().join("s_server.out");
    wait_listening(&mut child, port, "openssl s_server", &[&log]).await;
    SServer {
        port,
        _child: child,
        _dir: dir,
    }
}

fn only_result(results: &[EndpointResult]) -> &Outcome {
    assert_eq!(results.len(), 1, "{results:#?}");
    &results[0].outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_server_with_its_intermediate_is_accepted_without_verdicts() {
    let root = Ca::root("Scan Lab Root");
    let inter = root.intermediate("Scan Lab Intermediate");
    let leaf = inter.issue(&["localhost", "127.0.0.1"]);
    let server = s_server(&leaf, &[&inter], &[], |_| {}).await;
    let (results, summary) = scan(one(server.port), &[root.der()]).await;
    match only_result(&results) {
        Outcome::TlsAccepted {
            protocol, chain, ..
        } => {
            assert_eq!(protocol, "TLSv1.3");
            assert_eq!(chain.certs.len(), 2);
            assert!(
                chain.trusted && chain.verdicts.is_empty(),
                "{:?}",
                chain.verdicts
            );
            let leaf_facts = &chain.certs[0];
            assert_eq!(leaf_facts.sans, vec!["localhost", "127.0.0.1"]);
            assert_eq!(leaf_facts.serial, hex(&leaf.serial));
            assert!(leaf_facts.issuer.contains("Scan Lab Intermediate"));
        }
        other => panic!("expected tls_accepted, got {other:?}"),
    }
    assert_eq!(summary.outcomes["tls_accepted"], 1);
    assert_eq!(summary.chains, 1);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls10_only_server_is_legacy_only_with_its_chain() {
    let root = Ca::root("Legacy Root");
    let leaf = root.issue(&["legacy.test"]);
    let server = s_server(
        &leaf,
        &[&root],
        &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
        |_| {},
    )
    .await;
    let (results, summary) = scan(one(server.port), &[root.der()]).await;
    match only_result(&results) {
        Outcome::LegacyOnly {
            protocol,
            why,
            chain,
            ..
        } => {
            assert_eq!(protocol, "TLSv1.0");
            assert!(why.contains("TLSv1.0"), "{why}");
            assert_eq!(chain.certs.len(), 2);
            assert!(chain.certs[0].sans.contains(&"legacy.test".to_owned()));
            // No SNI was sent to 127.0.0.1, and the leaf does not name it.
            assert_eq!(chain.verdicts, vec![Verdict::NameMismatch]);
        }
        other => panic!("expected legacy_only, got {other:?}"),
    }
    assert_eq!(summary.outcomes["legacy_only"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_a_client_certificate_still_yields_its_chain() {
    let root = Ca::root("Client Auth Root");
    let leaf = root.issue(&["127.0.0.1"]);
    let root_pem = root.pem();
    for version in ["-tls1_3", "-tls1_2"] {
        let server = s_server(
            &leaf,
            &[],
            &["-Verify", "1", "-CAfile", "clients.pem", version],
            |dir| std::fs::write(dir.join("clients.pem"), &root_pem).expect("CA file"),
        )
        .await;
        let (results, _) = scan(one(server.port), &[root.der()]).await;
        match only_result(&results) {
            Outcome::ClientCertRequired { chain } => {
                // s_server completes the chain from its -CAfile.
                assert!(!chain.certs.is_empty(), "{version}");
                assert_eq!(
                    chain.certs[0].fingerprint,
                    tether_scan::facts::fingerprint(&leaf.der),
                    "{version}"
                );
                assert!(chain.verdicts.is_empty(), "{version}: {:?}", chain.verdicts);
            }
            other => panic!("{version}: expected client_cert_required, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_without_its_intermediate_has_an_incomplete_chain() {
    let root = Ca::root("Nginx Root");
    let inter = root.intermediate("Nginx Intermediate");
    let leaf = inter.issue(&["127.0.0.1"]);
    let dir = Scratch::new("scan-nginx");
    let (cert, key) = leaf.write_chain(dir.path(), "leaf-only", &[]);
    let nginx = Nginx::start(&Site {
        tls: Some((cert, key)),
        server: "return 200 'ok';".to_owned(),
        ..Site::default()
    })
    .await;
    let (results, _) = scan(one(nginx.port), &[root.der()]).await;
    match only_result(&results) {
        Outcome::TlsAccepted { chain, .. } => {
            assert_eq!(chain.certs.len(), 1);
            assert_eq!(chain.verdicts, vec![Verdict::IncompleteChain]);
            assert!(!chain.trusted);
        }
        other => panic!("expected tls_accepted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sans_are_read_and_counted() {
    let root = Ca::root("Big Root");
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("host-{i:05}.big.test"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = root.issue(&refs);
    assert!(
        leaf.der.len() > 200_000,
        "the leaf is {} bytes",
        leaf.der.len()
    );
    let server = s_server(&leaf, &[], &[], |_| {}).await;
    let spec = json!({"targets": ["127.0.0.1"], "ports": [server.port], "sni_names": {"127.0.0.1": ["host-00042.big.test"]},
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 5000});
    let (results, _) = scan(spec, &[root.der()]).await;
    let outcome = only_result(&results);
    let chain = outcome
        .chain()
        .unwrap_or_else(|| panic!("a chain is recorded: {outcome:?}"));
    let facts = &chain.certs[0];
    assert_eq!(facts.sans_total, 10_000);
    assert_eq!(facts.sans.len(), tether_scan::facts::MAX_SANS_RECORDED);
    assert_eq!(
        facts.fingerprint,
        tether_scan::facts::fingerprint(&leaf.der)
    );
    // webpki will not build a path for such a leaf: trust is unknown, and
    // said so.
    assert_eq!(chain.verdicts, vec![Verdict::Unverifiable]);
    // rustls refuses a Certificate message over 64 KiB: the reason says so.
    match outcome {
        Outcome::TlsFailed { reason, .. } => assert!(
            reason.contains("large") || reason.contains("oversized"),
            "{reason}"
        ),
        other => panic!("expected tls_failed with the chain, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_chain_is_recorded_up_to_the_bound() {
    let root = Ca::root("Deep Root");
    let mut cas = vec![root.intermediate("Deep 1")];
    for i in 2..=40 {
        let next = cas.last().expect("one").intermediate(&format!("Deep {i}"));
        cas.push(next);
    }
    let leaf = cas.last().expect("one").issue(&["127.0.0.1"]);
    let chain_cas: Vec<&Ca> = cas.iter().rev().collect();
    let server = s_server(&leaf, &chain_cas, &[], |_| {}).await;
    let (results, _) = scan(one(server.port), &[root.der()]).await;
    let outcome = only_result(&results);
    let chain = outcome
        .chain()
        .unwrap_or_else(|| panic!("a chain is recorded: {outcome:?}"));
    assert_eq!(
        chain.certs.len(),
        tether_scan::legacy::MAX_CHAIN_CERTS,
        "{outcome:?}"
    );
    assert_eq!(chain.presented, 41);
}

/// A listener that runs `serve` on every connection.
async fn listener<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_listeners_each_get_a_reason() {
    let garbage = listener(|mut s| async move {
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        let mut junk = vec![0x16, 0x03, 0x03, 0x00, 0x40];
        junk.extend((0..64u8).map(|i| i.wrapping_mul(97)));
        let _ = s.write_all(&junk).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let cut = listener(|mut s| async move {
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        // The start of a ServerHello record, then gone.
        let _ = s
            .write_all(&[0x16, 0x03, 0x03, 0x00, 0x50, 0x02, 0x00])
            .await;
    })
    .await;
    let slowloris = listener(|mut s| async move {
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        for b in [0x16u8, 0x03, 0x03, 0x00, 0x50, 0x02, 0x00, 0x00, 0x4c] {
            if s.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    })
    .await;
    let banner = listener(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
    })
    .await;
    let refused = free_port();
    let spec = json!({"targets": ["127.0.0.1"], "ports": [garbage, cut, slowloris, banner, refused],
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 2000});
    let (results, summary) = scan(spec, &[]).await;
    let by_port = |p: u16| {
        &results
            .iter()
            .find(|r| r.endpoint.port == p)
            .expect("port scanned")
            .outcome
    };
    assert!(
        matches!(by_port(garbage), Outcome::TlsFailed { reason, .. } if !reason.is_empty()),
        "{:?}",
        by_port(garbage)
    );
    assert!(
        matches!(by_port(cut), Outcome::TlsFailed { reason, .. } if reason.contains("closed") || reason.contains("eof") || reason.contains("end")),
        "{:?}",
        by_port(cut)
    );
    assert!(
        matches!(by_port(slowloris), Outcome::TlsFailed { reason, .. } if reason.contains("within 2000 ms")),
        "{:?}",
        by_port(slowloris)
    );
    assert!(
        matches!(by_port(banner), Outcome::NotTls { detail } if detail.contains("SSH-2.0")),
        "{:?}",
        by_port(banner)
    );
    assert_eq!(by_port(refused), &Outcome::Refused);
    assert_eq!(summary.outcomes["tls_failed"], 3);
    assert_eq!(summary.outcomes["not_tls"], 1);
    assert_eq!(summary.outcomes["refused"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_refused_and_plain_ports_in_a_namespace() {
    let mut ns = Netns::new();
    let (dropped, rejected, plain) = (4431u16, 4432u16, 4433u16);
    ns.firewall(&["-p", "tcp", "--dport", &dropped.to_string(), "-j", "DROP"]);
    ns.firewall(&[
        "-p",
        "tcp",
        "--dport",
        &rejected.to_string(),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]);
    ns.listen(plain);
    let spec = json!({"targets": [ns.ns_ip.to_string(), ns.unreachable_ip.to_string()], "ports": [dropped, rejected, plain],
        "connect_timeout_ms": 500, "handshake_timeout_ms": 1500});
    let (results, summary) = scan(spec, &[]).await;
    let at = |ip: std::net::Ipv4Addr, p: u16| {
        &results
            .iter()
            .find(|r| r.endpoint.ip == std::net::IpAddr::V4(ip) && r.endpoint.port == p)
            .expect("scanned")
            .outcome
    };
    assert!(
        matches!(at(ns.ns_ip, dropped), Outcome::Filtered { .. }),
        "{:?}",
        at(ns.ns_ip, dropped)
    );
    assert_eq!(at(ns.ns_ip, rejected), &Outcome::Refused);
    assert!(
        matches!(at(ns.ns_ip, plain), Outcome::NotTls { detail } if detail.contains("lab-listener")),
        "{:?}",
        at(ns.ns_ip, plain)
    );
    for p in [dropped, rejected, plain] {
        assert!(
            // Unreachable (ICMP) or silent, depending on how fast the
            // kernel gives up: filtered either way.
            matches!(at(ns.unreachable_ip, p), Outcome::Filtered { .. }),
            "{:?}",
            at(ns.unreachable_ip, p)
        );
    }
    assert_eq!(summary.total, 6);
    assert_eq!(summary.outcomes["filtered"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_scan_still_accounts_for_every_endpoint() {
    let plan = DiscoverSpec::from_json(
        &json!({"targets": ["127.0.0.0/28"], "ports": [free_port()], "concurrency": 1}),
    )
    .expect("spec")
    .plan()
    .expect("valid");
    let (tx, mut rx) = mpsc::channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let collect = tokio::spawn(async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
            if n == 3 {
                stopper.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        n
    });
    let summary = Scanner::default()
        .run(&plan, tx, Arc::new(Progress::default()), stop)
        .await;
    assert_eq!(collect.await.expect("collector"), 16);
    assert_eq!(summary.total, 16);
    assert!(summary.outcomes["not_scanned"] >= 1, "{summary:?}");
    assert_eq!(
        summary.outcomes["refused"] + summary.outcomes["not_scanned"],
        16,
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_to_one_host_are_paced() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let started = tokio::time::Instant::now();
    let (_, summary) = scan(
        json!({"targets": ["127.0.0.1"], "ports": ports, "rate_per_host": 2, "concurrency": 64}),
        &[],
    )
    .await;
    let paced = started.elapsed();
    assert_eq!(summary.outcomes["refused"], 6);
    // Six connections at two per second: the sixth starts 2.5 s in.
    assert!(paced >= Duration::from_millis(2_400), "{paced:?}");
    // Spread over six hosts, the same ports go at once.
    let started = tokio::time::Instant::now();
    let (_, summary) = scan(
        json!({"targets": ["127.0.0.1-6"], "ports": [ports[0]], "rate_per_host": 2}),
        &[],
    )
    .await;
    assert_eq!(summary.outcomes["refused"], 6);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_imap_and_pop3_upgrade_with_starttls() {
    let root = Ca::root("Mail Root");
    let leaf = root.issue(&["mail.test"]);
    let dir = Scratch::new("scan-dovecot");
    let (cert, key) = leaf.write_chain(dir.path(), "mail", &[&root]);
    dir.open_to_all();
    let dovecot = tether_testlab::dovecot::Dovecot::start(&cert, &key).await;
    let spec = json!({"targets": ["127.0.0.1"], "ports": [dovecot.imap_port, dovecot.pop3_port],
        "sni_names": {"127.0.0.1": ["mail.test"]},
        "starttls": {dovecot.imap_port.to_string(): "imap", dovecot.pop3_port.to_string(): "pop3"},
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 5000});
    let (results, summary) = scan(spec, &[root.der()]).await;
    for r in &results {
        match &r.outcome {
            Outcome::TlsAccepted { chain, .. } => {
                assert!(chain.trusted && chain.verdicts.is_empty(), "{r:?}");
                assert_eq!(chain.certs[0].sans, vec!["mail.test"]);
            }
            other => panic!(
                "{:?} on {}: {other:?}",
                r.endpoint.starttls, r.endpoint.port
            ),
        }
    }
    assert_eq!(summary.outcomes["tls_accepted"], 2);
    // The same ports without STARTTLS speak clear text first: not TLS.
    let spec = json!({"targets": ["127.0.0.1"], "ports": [dovecot.imap_port], "connect_timeout_ms": 1000, "handshake_timeout_ms": 3000});
    let (results, _) = scan(spec, &[root.der()]).await;
    assert!(
        matches!(only_result(&results), Outcome::NotTls { detail } if detail.contains("* OK")),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_smtp_upgrades_with_starttls_and_shows_its_chain() {
    let root = Ca::root("Mail Root");
    let inter = root.intermediate("Mail Intermediate");
    let leaf = inter.issue(&["mail.test"]);
    let dir = Scratch::new("scan-postfix");
    let (cert, key) = leaf.write_chain(dir.path(), "mail", &[&inter]);
    dir.open_to_all();
    let postfix = tether_testlab::postfix::Postfix::start(&cert, &key).await;
    // Not port 25 or 587: say which protocol.
    let spec = json!({"targets": ["127.0.0.1"], "ports": [postfix.port],
        "sni_names": {"127.0.0.1": ["mail.test"]},
        "starttls": {postfix.port.to_string(): "smtp"},
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 5000});
    let (results, summary) = scan(spec, &[root.der()]).await;
    match only_result(&results) {
        Outcome::TlsAccepted { chain, .. } => {
            assert!(chain.trusted && chain.verdicts.is_empty(), "{chain:?}");
            assert_eq!(chain.certs.len(), 2, "leaf and intermediate");
            assert_eq!(chain.certs[0].sans, vec!["mail.test"]);
            assert!(
                chain.certs[1].subject.contains("Mail Intermediate"),
                "{}",
                chain.certs[1].subject
            );
        }
        other => panic!("expected tls_accepted over SMTP STARTTLS, got {other:?}"),
    }
    assert_eq!(summary.outcomes["tls_accepted"], 1);
    assert!(results[0].observed_at.is_some(), "the probe's time is kept");
    // The same port without STARTTLS: a clear-text SMTP greeting, not TLS.
    let spec = json!({"targets": ["127.0.0.1"], "ports": [postfix.port],
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 3000});
    let (results, _) = scan(spec, &[root.der()]).await;
    assert!(
        matches!(only_result(&results), Outcome::NotTls { detail } if detail.contains("220")),
        "{results:?}"
    );
}

/// Reverse DNS needs an address that is not loopback: hickory answers every
/// PTR query under 127.in-addr.arpa with `localhost` itself (RFC 6761), so
/// the server runs in a namespace of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_dns_sni_comes_from_a_real_dns_servers_ptr_records() {
    let root = Ca::root("PTR Root");
    let named = root.issue(&["web-a.test"]);
    let fallback = root.issue(&["fallback.test"]);
    let dir = Scratch::new("scan-ptr");
    let (named_cert, named_key) = named.write_chain(dir.path(), "named", &[]);
    let (fallback_cert, fallback_key) = fallback.write_chain(dir.path(), "fallback", &[]);
    let ns = Netns::new();
    let ip = ns.ns_ip;
    let port = 4443u16;
    // It presents web-a.test's certificate only to a client that sends that
    // name, else its default: the certificate says which SNI arrived.
    let mut server = spawn_logged(
        Command::new(program("ip"))
            .args(["netns", "exec", &ns.name])
            .arg(program("openssl"))
            .arg("s_server")
            .arg("-accept")
            .arg(format!("{ip}:{port}"))
            .arg("-cert")
            .arg(&fallback_cert)
            .arg("-key")
            .arg(&fallback_key)
            .args(["-servername", "web-a.test", "-cert2"])
            .arg(&named_cert)
            .arg("-key2")
            .arg(&named_key)
            .arg("-quiet"),
        dir.path(),
        "s_server",
    );
    let log = dir.path().join("s_server.out");
    tether_testlab::wait_listening_within(
        &mut server,
        std::net::SocketAddr::from((ip, port)),
        "openssl s_server in the namespace",
        &[&log],
        Duration::from_secs(10),
    )
    .await;
    let spec = json!({"targets": [ip.to_string()], "ports": [port], "sni": "reverse_dns",
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 5000});
    // The scanner's resolver asks a real DNS server (not the system's).
    let resolver_of = |dns: &tether_testlab::dnsmasq::Dnsmasq| {
        Arc::new(tether_transport::SystemResolver::with_name_servers(
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], dns.port))],
            Duration::from_secs(2),
        ))
    };

    // A PTR record for the address: its name is the SNI.
    let dns = tether_testlab::dnsmasq::Dnsmasq::start_with_ptr(&[(ip.into(), "web-a.test")]).await;
    let (results, _) = scan_with(spec.clone(), &[root.der()], resolver_of(&dns)).await;
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0].endpoint.sni.as_deref(), Some("web-a.test"));
    match &results[0].outcome {
        Outcome::TlsAccepted { chain, .. } => {
            assert_eq!(
                chain.certs[0].sans,
                vec!["web-a.test"],
                "the server saw the name"
            );
            assert!(chain.trusted && chain.verdicts.is_empty(), "{chain:?}");
        }
        other => panic!("expected tls_accepted, got {other:?}"),
    }
    drop(dns);

    // No PTR record: no SNI, and the server's default certificate.
    let dns = tether_testlab::dnsmasq::Dnsmasq::start_with_ptr(&[]).await;
    let (results, _) = scan_with(spec, &[root.der()], resolver_of(&dns)).await;
    assert_eq!(results[0].endpoint.sni, None, "{results:#?}");
    match &results[0].outcome {
        Outcome::TlsAccepted { chain, .. } => {
            assert_eq!(chain.certs[0].sans, vec!["fallback.test"]);
        }
        other => panic!("expected tls_accepted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slapd_upgrades_with_the_ldap_starttls_operation() {
    let root = Ca::root("Directory Root");
    let leaf = root.issue(&["ldap.test", "127.0.0.1"]);
    let dir = Scratch::new("scan-slapd");
    let (cert, key) = leaf.write_chain(dir.path(), "ldap", &[&root]);
    let slapd = tether_testlab::slapd::Slapd::start(&cert, &key).await;
    // No `starttls` entry: the port is not 389, so say which protocol.
    let spec = json!({"targets": ["127.0.0.1"], "ports": [slapd.port],
        "starttls": {slapd.port.to_string(): "ldap"},
        "connect_timeout_ms": 1000, "handshake_timeout_ms": 5000});
    let (results, _) = scan(spec, &[root.der()]).await;
    match only_result(&results) {
        Outcome::TlsAccepted { chain, .. } => {
            assert!(chain.trusted && chain.verdicts.is_empty(), "{chain:?}");
            assert_eq!(chain.certs.len(), 2);
        }
        other => panic!("expected tls_accepted over LDAP StartTLS, got {other:?}"),
    }
}
