//! The doctor against real faults: a Tether-like HTTPS server, dnsmasq,
//! tinyproxy, squid with Basic auth, mitmproxy intercepting TLS, an
//! `openssl ocsp` responder, network namespaces with iptables (refused,
//! dropped, unreachable), bad certificates, a captive portal, a skewed
//! clock, a CRL, a full tmpfs. Programs come from
//! `scripts/install-test-deps.sh`; a missing one fails the test.

#[path = "doctor/lab.rs"]
mod lab;
#[path = "doctor/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lab::{
    BlackholeDialer, Dnsmasq, Lab, Mitmproxy, Ntp, OpensslOcsp, PlainHttp, Squid, Tinyproxy,
};
use rustls_pki_types::pem::PemObject;
use server::{GOOD_CREDENTIAL, Mode, Server};
use tether_doctor::{DoctorInput, ErrorCode, Report, Status, VerdictStatus};
use tether_testlab::netns;
use tether_testlab::pki::Ca;
use tether_transport::{ProxyConfig, ProxySetting, SystemResolver, TcpDialer, TrustConfig};
use tether_wire::{ManualClock, SystemClock};

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("literal URL")
}

/// An input trusting `ca` only, enrolled with the good credential, with
/// this test's version equal to the server's current one.
fn input(port: u16, ca: &Ca) -> DoctorInput {
    let mut i = DoctorInput::new(url(&format!("https://localhost:{port}/")));
    i.transport.trust = TrustConfig {
        ca_pem: Some(ca.pem()),
        system_roots: false,
        ..TrustConfig::default()
    };
    i.enrolled = true;
    i.credential = Some(GOOD_CREDENTIAL.to_owned());
    i.agent_version = "9.9.9".into();
    i.deadline = Duration::from_secs(5);
    i
}

async fn healthy_server(ca: &Ca) -> tether_testlab::https::HttpsServer {
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    Server::start(leaf.chain(&[ca]), leaf.key(), Mode::Tether).await
}

fn status<'a>(r: &'a Report, id: &str) -> &'a Status {
    &r.check(id)
        .unwrap_or_else(|| panic!("no check {id} in\n{}", r.to_text()))
        .status
}

fn code(r: &Report, id: &str) -> Option<ErrorCode> {
    r.check(id)
        .unwrap_or_else(|| panic!("no check {id} in\n{}", r.to_text()))
        .code
}

fn assert_verdict(r: &Report, check: &str, code: ErrorCode) {
    assert_eq!(r.verdict.status, VerdictStatus::Failed, "{}", r.to_text());
    assert_eq!(r.verdict.check.as_deref(), Some(check), "{}", r.to_text());
    assert_eq!(r.verdict.code, Some(code), "{}", r.to_text());
    assert_eq!(r.exit_code(), 2);
}

#[tokio::test]
async fn a_healthy_path_passes_every_check_quickly() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let ntp = Ntp::start(time::Duration::ZERO).await;
    let state = tempfile::tempdir().expect("tempdir");
    let mut i = input(server.port(), &ca);
    i.state_dir = Some(state.path().to_path_buf());
    i.log_dir = Some(state.path().to_path_buf());
    i.ntp_servers = vec![ntp.addr.to_string()];
    let r = tether_doctor::run(i, lab.world()).await;
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
    assert_eq!(r.exit_code(), 0);
    for id in [
        "config",
        "dns.system",
        "tls",
        "http",
        "auth",
        "clock",
        "revocation",
        "host.disk",
        "host.perms",
        "host.version",
        "logs",
    ] {
        assert_eq!(status(&r, id), &Status::Pass, "{id}: {}", r.to_text());
    }
    assert_eq!(
        status(&r, &format!("tcp:127.0.0.1:{}", server.port())),
        &Status::Pass
    );
    assert!(matches!(status(&r, "host.service"), Status::Skipped { .. }));
    let tls = r.check("tls").expect("tls");
    assert_eq!(tls.evidence["chain"][1]["subject"], "CN=Tether Lab CA");
    assert!(
        tls.evidence["protocol"]
            .as_str()
            .unwrap_or("")
            .starts_with("TLSv1.")
    );
    assert!(
        r.check("clock").expect("clock").evidence["skew_vs_ntp_s"]
            .as_f64()
            .expect("ntp answered")
            .abs()
            < 1.0
    );
    assert!(
        r.duration < Duration::from_secs(1),
        "healthy run took {:?}",
        r.duration
    );
    let auth = r.check("auth").expect("auth");
    assert!(
        auth.evidence["side_effect"]
            .as_str()
            .unwrap_or("")
            .contains("read-only probe")
    );
    // Nothing secret is printed.
    assert!(!r.to_text().contains(GOOD_CREDENTIAL));
    assert!(!r.to_json().to_string().contains(GOOD_CREDENTIAL));
}

#[tokio::test]
async fn a_refused_port_blocks_everything_downstream() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let port = lab::free_port();
    let r = tether_doctor::run(input(port, &ca), lab.world()).await;
    let tcp = format!("tcp:127.0.0.1:{port}");
    assert_verdict(&r, &tcp, ErrorCode::ConnectRefused);
    for id in ["tls", "http", "auth", "revocation"] {
        assert_eq!(
            status(&r, id),
            &Status::Skipped {
                blocked_by: tcp.clone()
            },
            "{id}"
        );
    }
    assert!(
        r.verdict.root_cause.contains("refused"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn a_silently_dropped_connection_ends_within_the_deadline() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let resolver = tether_transport::StaticResolver::new().with(
        "localhost",
        Ok(vec![
            "127.0.0.1".parse().expect("ip"),
            "::1".parse().expect("ip"),
        ]),
    );
    let world = lab.world_with(
        Arc::new(resolver),
        Arc::new(BlackholeDialer),
        Arc::new(SystemClock),
    );
    let mut i = input(443, &ca);
    i.deadline = Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    let r = tether_doctor::run(i, world).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2300), "took {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "gave up early: {took:?}"
    );
    assert_eq!(
        code(&r, "tcp:127.0.0.1:443"),
        Some(ErrorCode::ConnectTimeout)
    );
    assert_eq!(code(&r, "tcp:[::1]:443"), Some(ErrorCode::ConnectTimeout));
    assert_eq!(
        r.verdict.code,
        Some(ErrorCode::ConnectTimeout),
        "{}",
        r.to_text()
    );
    assert!(
        r.verdict.root_cause.contains("firewall"),
        "{}",
        r.verdict.root_cause
    );
}

async fn dns_lab(host: &str) -> Report {
    let dns = Dnsmasq::start().await;
    let lab = Lab::new();
    std::fs::write(lab.dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").expect("write");
    let ns = SocketAddr::from(([127, 0, 0, 1], dns.port));
    let mut world = lab.world_with(
        Arc::new(SystemResolver::with_name_servers(
            vec![ns],
            Duration::from_secs(2),
        )),
        Arc::new(TcpDialer),
        Arc::new(SystemClock),
    );
    world.dns_port = dns.port;
    let ca = Ca::root("Tether Lab CA");
    let mut i = input(443, &ca);
    i.server = url(&format!("https://{host}:443/"));
    tether_doctor::run(i, world).await
}

#[tokio::test]
async fn nxdomain_from_a_real_dnsmasq() {
    let r = dns_lab("nx.test").await;
    assert_verdict(&r, "dns.system", ErrorCode::DnsNxDomain);
    assert_eq!(code(&r, "dns.ns:127.0.0.1"), Some(ErrorCode::DnsNxDomain));
    assert_eq!(
        status(&r, "tcp"),
        &Status::Skipped {
            blocked_by: "dns.system".into()
        }
    );
}

#[tokio::test]
async fn servfail_from_a_real_dnsmasq() {
    let r = dns_lab("fail.test").await;
    assert_verdict(&r, "dns.system", ErrorCode::DnsServFail);
    assert_eq!(code(&r, "dns.ns:127.0.0.1"), Some(ErrorCode::DnsServFail));
}

#[tokio::test]
async fn a_name_that_resolves_through_a_real_dnsmasq_reaches_tcp() {
    let r = dns_lab("good.test").await;
    assert_eq!(status(&r, "dns.system"), &Status::Pass, "{}", r.to_text());
    assert_eq!(
        r.check("dns.ns:127.0.0.1").expect("ns").evidence["addresses"][0],
        "127.0.0.1"
    );
    // Nothing listens on 443 here.
    assert_eq!(
        code(&r, "tcp:127.0.0.1:443"),
        Some(ErrorCode::ConnectRefused)
    );
}

async fn proxy_lab(creds: Option<&str>) -> (Report, u16) {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let proxy = Tinyproxy::start(server.port()).await;
    let mut i = input(server.port(), &ca);
    let p = match creds {
        Some(c) => format!("http://{c}@127.0.0.1:{}", proxy.port),
        None => format!("http://127.0.0.1:{}", proxy.port),
    };
    i.transport.proxy = ProxySetting::Explicit(ProxyConfig::parse(&p).expect("proxy URL"));
    let r = tether_doctor::run(i, lab.world()).await;
    (r, proxy.port)
}

#[tokio::test]
async fn a_web_server_in_the_proxy_setting_is_not_a_proxy_that_refuses() {
    // A real nginx answers CONNECT with "400 Bad Request" and its HTML
    // page: the setting is wrong, no proxy admin has anything to allow.
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let web = tether_testlab::nginx::Nginx::start(&tether_testlab::nginx::Site {
        server: "location / { return 200 'a web site'; }".into(),
        ..Default::default()
    })
    .await;
    let mut i = input(server.port(), &ca);
    let p = format!("http://127.0.0.1:{}", web.port);
    i.transport.proxy = ProxySetting::Explicit(ProxyConfig::parse(&p).expect("proxy URL"));
    let r = tether_doctor::run(i, lab.world()).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyNotAProxy);
    assert!(
        r.verdict.root_cause.contains("not an HTTP proxy")
            && r.verdict.root_cause.contains("400")
            && r.verdict.root_cause.contains("nginx"),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        !r.verdict.action.contains("allow CONNECT"),
        "{}",
        r.verdict.action
    );
    assert!(
        r.verdict.action.contains("host and port"),
        "{}",
        r.verdict.action
    );
    let proxy = r.check("proxy").expect("proxy");
    assert_eq!(proxy.evidence["answered_by"], "not_a_proxy");
    assert!(
        proxy.evidence["body_snippet"]
            .as_str()
            .unwrap_or("")
            .contains("400 Bad Request"),
        "{}",
        r.to_text()
    );
}

#[tokio::test]
async fn a_real_proxy_refusing_the_port_is_still_a_proxy_refusal() {
    // tinyproxy allows CONNECT to one port only; asked for another, it
    // refuses as a proxy does (403, Server: tinyproxy).
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let proxy = Tinyproxy::start(lab::free_port()).await;
    let mut i = input(server.port(), &ca);
    let p = proxy.url_with("user", "pass");
    i.transport.proxy = ProxySetting::Explicit(ProxyConfig::parse(&p).expect("proxy URL"));
    let r = tether_doctor::run(i, lab.world()).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyConnectRefused);
    assert_eq!(
        r.check("proxy").expect("proxy").evidence["answered_by"],
        "proxy"
    );
}

#[tokio::test]
async fn a_real_proxy_demanding_credentials_none_configured() {
    let (r, port) = proxy_lab(None).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyAuthRequired);
    assert_eq!(
        r.check("proxy").expect("proxy").evidence["auth_schemes"][0],
        "Basic"
    );
    assert_eq!(
        r.verdict.root_cause,
        format!(
            "The proxy 127.0.0.1:{port} demands authentication (407, offers Basic) and no credentials are configured."
        )
    );
    assert_eq!(
        status(&r, "tls"),
        &Status::Skipped {
            blocked_by: "proxy".into()
        }
    );
}

#[tokio::test]
async fn a_real_proxy_rejecting_wrong_credentials() {
    let (r, port) = proxy_lab(Some("user:wrong")).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyAuthFailed);
    // tinyproxy 1.11 answers wrong credentials with 401.
    assert!(
        r.verdict.root_cause.starts_with(&format!(
            "The proxy 127.0.0.1:{port} rejected the configured credentials (40"
        )),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        !r.to_text().contains("wrong"),
        "the password leaked:\n{}",
        r.to_text()
    );
}

#[tokio::test]
async fn a_real_proxy_with_the_right_credentials_passes() {
    let (r, port) = proxy_lab(Some("user:pass")).await;
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
    assert_eq!(status(&r, &format!("tcp:127.0.0.1:{port}")), &Status::Pass);
    let p = r.check("proxy").expect("proxy");
    assert_eq!(p.evidence["status"], 200);
    assert_eq!(p.evidence["credentials_accepted"], true);
}

#[tokio::test]
async fn an_unreachable_proxy_is_named_and_blocks_tls_and_http() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    // A port that was just free on loopback: nothing listens there, so the
    // kernel refuses the connection to the "proxy".
    let proxy_port = lab::free_port();
    let mut i = input(server.port(), &ca);
    let p = format!("http://127.0.0.1:{proxy_port}");
    i.transport.proxy = ProxySetting::Explicit(ProxyConfig::parse(&p).expect("proxy URL"));
    let r = tether_doctor::run(i, lab.world()).await;

    let tcp = format!("tcp:127.0.0.1:{proxy_port}");
    assert_verdict(&r, &tcp, ErrorCode::ProxyUnreachable);
    assert_eq!(code(&r, &tcp), Some(ErrorCode::ProxyUnreachable));
    let evidence = &r.check(&tcp).expect("tcp").evidence;
    assert_eq!(evidence["connected"], false, "{}", r.to_text());
    assert!(
        r.verdict.root_cause.contains("proxy") && r.verdict.root_cause.contains("refused"),
        "{}",
        r.verdict.root_cause
    );
    for id in ["tls", "http"] {
        assert_eq!(
            status(&r, id),
            &Status::Skipped {
                blocked_by: tcp.clone()
            },
            "{id}\n{}",
            r.to_text()
        );
    }
}

async fn tls_lab(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    trusted: &Ca,
) -> Report {
    let lab = Lab::new();
    let server = Server::start(chain, key, Mode::Tether).await;
    tether_doctor::run(input(server.port(), trusted), lab.world()).await
}

#[tokio::test]
async fn tls_expired_certificate() {
    let ca = Ca::root("Tether Lab CA");
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca.issue_with(
        &["localhost"],
        now - time::Duration::days(60),
        now - time::Duration::days(1),
        None,
    );
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_verdict(&r, "tls", ErrorCode::TlsCertExpired);
    assert!(
        r.verdict.root_cause.contains("this host's clock reads"),
        "{}",
        r.verdict.root_cause
    );
    assert_eq!(
        r.check("tls").expect("tls").evidence["chain"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn tls_wrong_host() {
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["other.example"]);
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_verdict(&r, "tls", ErrorCode::TlsHostnameMismatch);
    assert!(
        r.verdict.root_cause.contains("other.example"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn tls_unknown_issuer() {
    let trusted = Ca::root("Tether Lab CA");
    let stranger = Ca::root("Some Other CA");
    let leaf = stranger.issue(&["localhost"]);
    let r = tls_lab(leaf.chain(&[&stranger]), leaf.key(), &trusted).await;
    assert_verdict(&r, "tls", ErrorCode::TlsUnknownIssuer);
    assert!(
        r.verdict.root_cause.contains("CN=Some Other CA"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn tls_incomplete_chain() {
    let root = Ca::root("Tether Lab Root");
    let inter = root.intermediate("Tether Lab Intermediate");
    let leaf = inter.issue(&["localhost"]);
    // The server forgets its intermediate.
    let r = tls_lab(leaf.chain(&[]), leaf.key(), &root).await;
    assert_verdict(&r, "tls", ErrorCode::TlsChainIncomplete);
    assert!(
        r.verdict.root_cause.contains("CN=Tether Lab Intermediate"),
        "{}",
        r.verdict.root_cause
    );
    // With the intermediate sent, the same PKI passes.
    let r = tls_lab(leaf.chain(&[&inter]), leaf.key(), &root).await;
    assert_eq!(status(&r, "tls"), &Status::Pass, "{}", r.to_text());
}

/// The self-signed verdict: its own code, the subject, the fingerprint a
/// pin would name, and the two ways out.
fn assert_self_signed(r: &Report, subject: &str, fingerprint: &str) {
    assert_verdict(r, "tls", ErrorCode::TlsSelfSigned);
    assert!(
        r.verdict.root_cause.contains(subject),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        r.verdict.root_cause.contains(fingerprint),
        "{}",
        r.verdict.root_cause
    );
    assert!(r.verdict.action.contains("pin"), "{}", r.verdict.action);
    assert!(
        r.verdict.action.contains("platform's CA"),
        "{}",
        r.verdict.action
    );
    assert_eq!(
        r.check("tls").expect("tls").evidence["reason"],
        "self_signed",
        "{}",
        r.to_text()
    );
}

#[tokio::test]
async fn a_self_signed_leaf_is_named_with_its_fingerprint() {
    let trusted = Ca::root("Tether Lab CA");
    let leaf = tether_testlab::pki::Leaf::self_signed(&["localhost"]);
    let fp = tether_x509::fingerprint(&leaf.chain(&[])[0]);
    let r = tls_lab(leaf.chain(&[]), leaf.key(), &trusted).await;
    assert_self_signed(&r, "CN=localhost", &fp);
}

#[tokio::test]
async fn a_self_signed_certificate_from_openssl_served_by_a_real_nginx_is_named() {
    // `openssl req -x509` marks the certificate CA:TRUE, which webpki
    // refuses as "CA used as end entity": the generic handshake failure
    // until the doctor looks at the certificate itself.
    let lab = Lab::new();
    let trusted = Ca::root("Tether Lab CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = tether_testlab::pki::openssl_self_signed(dir.path(), &["localhost"]);
    let pem = std::fs::read(&cert).expect("cert");
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("one certificate")
        .expect("PEM");
    let fp = tether_x509::fingerprint(&der);
    let nginx = tether_testlab::nginx::Nginx::static_https(dir.path(), &cert, &key).await;
    let r = tether_doctor::run(input(nginx.port, &trusted), lab.world()).await;
    assert_self_signed(&r, "CN=localhost", &fp);
}

#[tokio::test]
async fn a_certificate_signed_with_sha1_is_named_not_a_generic_handshake_failure() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tether_testlab::pki::openssl_sha1_chain(dir.path(), &["localhost"]);
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("leaf PEM")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("key PEM");
    let server = Server::start(chain, key, Mode::Tether).await;
    let mut i = DoctorInput::new(url(&format!("https://localhost:{}/", server.port())));
    i.transport.trust = TrustConfig {
        ca_pem: Some(std::fs::read(&ca).expect("CA PEM")),
        system_roots: false,
        ..TrustConfig::default()
    };
    i.deadline = Duration::from_secs(5);
    let r = tether_doctor::run(i, lab.world()).await;
    assert_verdict(&r, "tls", ErrorCode::TlsWeakCertificate);
    assert!(
        r.verdict.root_cause.contains("ecdsa-with-SHA1")
            && r.verdict.root_cause.contains("CN=localhost"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn tls_inspection_is_named_from_the_issuer() {
    // A chain as mitmproxy presents it: its own CA ("mitmproxy") signing a
    // leaf for the server's name.
    let platform = Ca::root("Tether Lab CA");
    let mitm = Ca::root("mitmproxy");
    let leaf = mitm.issue(&["localhost"]);
    let r = tls_lab(leaf.chain(&[&mitm]), leaf.key(), &platform).await;
    assert_verdict(&r, "tls", ErrorCode::TlsInspected);
    assert!(
        r.verdict.root_cause.contains("intercepted by mitmproxy"),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        r.verdict.action.contains("extra_ca_file"),
        "{}",
        r.verdict.action
    );
}

#[tokio::test]
async fn a_captive_portal_is_not_mistaken_for_the_server() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost"]);
    let server = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Portal).await;
    let r = tether_doctor::run(input(server.port(), &ca), lab.world()).await;
    assert_verdict(&r, "http", ErrorCode::HttpNotTether);
    assert!(
        r.verdict.root_cause.contains("Guest Wi-Fi: please log in"),
        "{}",
        r.verdict.root_cause
    );
    assert_eq!(
        status(&r, "auth"),
        &Status::Skipped {
            blocked_by: "http".into()
        }
    );
}

/// A real nginx in front of the server's name, serving `site` over TLS
/// with a certificate the doctor trusts; the doctor's report through it.
async fn through_nginx(
    site: impl FnOnce(&std::path::Path) -> tether_testlab::nginx::Site,
) -> Report {
    through_nginx_twice(site, 1).await
}

async fn through_nginx_twice(
    site: impl FnOnce(&std::path::Path) -> tether_testlab::nginx::Site,
    runs: usize,
) -> Report {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = ca.issue(&["localhost"]);
    let (cert, key) = leaf.write_chain(dir.path(), "leaf", &[&ca]);
    let mut site = site(dir.path());
    site.tls = Some((cert, key));
    let nginx = tether_testlab::nginx::Nginx::start(&site).await;
    let mut r = None;
    for _ in 0..runs {
        r = Some(tether_doctor::run(input(nginx.port, &ca), lab.world()).await);
    }
    r.expect("at least one run")
}

#[tokio::test]
async fn a_degraded_server_answering_503_is_the_server_not_a_balancer() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost"]);
    let server = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Degraded).await;
    let r = tether_doctor::run(input(server.port(), &ca), lab.world()).await;
    assert_eq!(status(&r, "http"), &Status::Warn, "{}", r.to_text());
    assert_eq!(code(&r, "http"), Some(ErrorCode::StoreUnavailable));
    assert!(
        r.verdict.root_cause.contains("database is locked"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn a_real_haproxy_whose_backend_is_down_is_named() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = ca.issue(&["localhost"]);
    let pem = dir.path().join("haproxy.pem");
    std::fs::write(
        &pem,
        format!(
            "{}{}{}",
            leaf.pem(),
            String::from_utf8_lossy(&ca.pem()),
            leaf.key_pem()
        ),
    )
    .expect("pem");
    let dead = lab::free_port();
    let balancer = tether_testlab::haproxy::Haproxy::start(&tether_testlab::haproxy::Balancer {
        tls: Some(pem),
        servers: vec![format!("127.0.0.1:{dead}")],
        ..Default::default()
    })
    .await;
    let r = tether_doctor::run(input(balancer.port, &ca), lab.world()).await;
    assert_verdict(&r, "http", ErrorCode::HttpBackendDown);
    assert!(
        r.verdict.root_cause.contains("503"),
        "{}",
        r.verdict.root_cause
    );
    assert_eq!(
        r.check("http").expect("http").evidence["answered_by"],
        "balancer_backend_down"
    );
}

#[tokio::test]
async fn a_real_nginx_whose_backend_is_down_is_named() {
    let dead = lab::free_port();
    let r = through_nginx(|_| tether_testlab::nginx::Site {
        server: format!("location / {{ proxy_pass http://127.0.0.1:{dead}; }}"),
        ..Default::default()
    })
    .await;
    assert_verdict(&r, "http", ErrorCode::HttpBackendDown);
    assert!(
        r.verdict.root_cause.contains("502") && r.verdict.root_cause.contains("nginx"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn a_real_nginx_rate_limit_says_how_long_to_slow_down() {
    // One request a minute: the first run takes it, the second meets 429.
    let r = through_nginx_twice(
        |root| tether_testlab::nginx::Site {
            http: "limit_req_zone $binary_remote_addr zone=agents:1m rate=1r/m;".into(),
            server: format!(
                "root {}; location / {{ limit_req zone=agents nodelay; limit_req_status 429; add_header Retry-After 30 always; }}",
                root.display()
            ),
            ..Default::default()
        },
        2,
    )
    .await;
    assert_verdict(&r, "http", ErrorCode::HttpGatewayRateLimited);
    assert!(
        r.verdict.root_cause.contains("30 seconds"),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        r.verdict.action.contains("wait 30 seconds"),
        "{}",
        r.verdict.action
    );
}

#[tokio::test]
async fn a_real_nginx_demanding_a_client_certificate_is_named() {
    let r = through_nginx(|dir| {
        let client_ca = Ca::root("Gateway Client CA");
        let path = dir.join("client-ca.pem");
        std::fs::write(&path, client_ca.pem()).expect("client CA");
        tether_testlab::nginx::Site {
            server: format!(
                "ssl_client_certificate {}; ssl_verify_client on; location / {{ return 200 'ok'; }}",
                path.display()
            ),
            ..Default::default()
        }
    })
    .await;
    assert_verdict(&r, "http", ErrorCode::HttpClientCertRequired);
    assert!(
        r.verdict
            .root_cause
            .contains("client certificate is required"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn clock_skew_against_the_server_and_ntp() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let ntp = Ntp::start(time::Duration::ZERO).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc() + time::Duration::minutes(10));
    let resolver = tether_transport::StaticResolver::new()
        .with("localhost", Ok(vec!["127.0.0.1".parse().expect("ip")]));
    let world = lab.world_with(Arc::new(resolver), Arc::new(TcpDialer), Arc::new(clock));
    let mut i = input(server.port(), &ca);
    i.ntp_servers = vec![ntp.addr.to_string()];
    let r = tether_doctor::run(i, world).await;
    assert_verdict(&r, "clock", ErrorCode::ClockSkew);
    assert!(
        r.verdict.root_cause.contains("10 min ahead of the server"),
        "{}",
        r.verdict.root_cause
    );
    let skew = r.check("clock").expect("clock").evidence["skew_vs_ntp_s"]
        .as_f64()
        .expect("ntp");
    assert!((skew - 600.0).abs() < 5.0, "{skew}");
}

#[tokio::test]
async fn ntp_blocked_is_a_warning_not_a_failure() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    // A UDP port where nothing answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut i = input(server.port(), &ca);
    i.ntp_servers = vec![silent.local_addr().expect("addr").to_string()];
    i.deadline = Duration::from_secs(4);
    let r = tether_doctor::run(i, lab.world()).await;
    assert_eq!(r.verdict.status, VerdictStatus::Warnings, "{}", r.to_text());
    assert_eq!(r.verdict.code, Some(ErrorCode::NtpUnreachable));
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn a_revoked_credential_is_named() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let mut i = input(server.port(), &ca);
    i.credential = Some("revoked-credential".into());
    let r = tether_doctor::run(i, lab.world()).await;
    assert_verdict(&r, "auth", ErrorCode::AgentCredentialRejected);
    assert!(!r.to_text().contains("revoked-credential"));
}

#[tokio::test]
async fn an_older_server_without_the_probe_gets_no_check_in() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let server = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::OldTether).await;
    let r = tether_doctor::run(input(server.port(), &ca), lab.world()).await;
    let auth = r.check("auth").expect("an auth check");
    assert!(matches!(auth.status, Status::Warn), "{}", r.to_text());
    assert_eq!(auth.code, Some(ErrorCode::CredentialProbeUnsupported));
    assert_eq!(
        server::CHECKINS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the doctor must not fall back to a check-in"
    );
}

/// A pre-install check: not enrolled, no token given.
fn pre_install(port: u16, ca: &Ca) -> DoctorInput {
    let mut i = input(port, ca);
    i.enrolled = false;
    i.credential = None;
    i
}

#[tokio::test]
async fn before_enrollment_not_enrolled_is_information_and_hides_no_warning() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    // The CRL server named in the certificate is down.
    let crl_url = format!("http://127.0.0.1:{}/lab.crl", lab::free_port());
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca.issue_with(
        &["localhost"],
        now - time::Duration::days(1),
        now + time::Duration::days(30),
        Some(&crl_url),
    );
    let server = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Tether).await;
    let r = tether_doctor::run(pre_install(server.port(), &ca), lab.world()).await;
    assert_eq!(status(&r, "auth"), &Status::Info, "{}", r.to_text());
    assert_eq!(code(&r, "auth"), Some(ErrorCode::NotEnrolled));
    assert_eq!(r.verdict.status, VerdictStatus::Warnings, "{}", r.to_text());
    assert_eq!(
        r.verdict.check.as_deref(),
        Some("revocation"),
        "{}",
        r.to_text()
    );
    assert_eq!(r.verdict.code, Some(ErrorCode::RevocationUnreachable));
    assert_eq!(r.exit_code(), 1);
    assert!(r.to_text().contains("INFO  auth"), "{}", r.to_text());
    assert_eq!(
        r.to_json()["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == "auth"))
            .map(|c| c["status"].clone()),
        Some(serde_json::json!("info"))
    );

    // With nothing else to say, the path is healthy and the next step named.
    let healthy = healthy_server(&ca).await;
    let r = tether_doctor::run(pre_install(healthy.port(), &ca), lab.world()).await;
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
    assert_eq!(r.exit_code(), 0);
    assert!(
        r.verdict.root_cause.contains("not enrolled"),
        "{}",
        r.verdict.root_cause
    );
    assert!(r.verdict.action.contains("enroll"), "{}", r.verdict.action);
}

#[tokio::test]
async fn a_silent_revocation_server_costs_its_budget_not_the_deadline() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    // One listener for both the OCSP responder and the CRL: it accepts,
    // reads the request and never answers.
    let port = lab::free_port();
    let _silent = PlainHttp::silent_on(port).await;
    let ocsp_url = format!("http://127.0.0.1:{port}/ocsp");
    let crl_url = format!("http://127.0.0.1:{port}/lab.crl");
    let leaf = ca.issue_opts(
        &["localhost"],
        &tether_testlab::pki::LeafOptions {
            crl_url: Some(&crl_url),
            ocsp_url: Some(&ocsp_url),
            ..Default::default()
        },
    );
    let server = Server::start(leaf.chain(&[&ca]), leaf.key(), Mode::Tether).await;
    let mut i = input(server.port(), &ca);
    i.deadline = Duration::from_secs(6);
    i.revocation_budget = Duration::from_secs(2);
    let r = tether_doctor::run(i, lab.world()).await;
    // The run ends soon after the revocation budget, well inside the
    // deadline, and the revocation check reports instead of being cut off.
    assert!(
        r.duration < Duration::from_secs(4),
        "took {:?}\n{}",
        r.duration,
        r.to_text()
    );
    assert_eq!(status(&r, "revocation"), &Status::Warn, "{}", r.to_text());
    assert_eq!(
        code(&r, "revocation"),
        Some(ErrorCode::RevocationUnreachable)
    );
    let evidence = format!("{:?}", r.check("revocation").expect("revocation").evidence);
    assert!(evidence.contains("revocation budget"), "{evidence}");
    // Every other check completed, and passed.
    for id in ["tls", "http", "auth", "clock", "host.version"] {
        assert_eq!(status(&r, id), &Status::Pass, "{id}: {}", r.to_text());
    }
    assert_eq!(r.verdict.status, VerdictStatus::Warnings, "{}", r.to_text());
    assert_eq!(r.verdict.check.as_deref(), Some("revocation"));
}

#[tokio::test]
async fn a_certificate_revoked_by_its_crl() {
    let ca = Ca::root("Tether Lab CA");
    // The CRL server's address must be known before the leaf is issued.
    let crl_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let crl_port = crl_listener.local_addr().expect("addr").port();
    drop(crl_listener);
    let crl_url = format!("http://127.0.0.1:{crl_port}/lab.crl");
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca.issue_with(
        &["localhost"],
        now - time::Duration::days(1),
        now + time::Duration::days(30),
        Some(&crl_url),
    );

    // Unreachable CRL server first: a warning, told apart from "revoked".
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_eq!(
        code(&r, "revocation"),
        Some(ErrorCode::RevocationUnreachable),
        "{}",
        r.to_text()
    );
    assert_eq!(status(&r, "revocation"), &Status::Warn);

    let http = PlainHttp::start_on(crl_port, ca.crl(&[&leaf.serial])).await;
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_verdict(&r, "revocation", ErrorCode::TlsRevoked);
    assert!(
        r.verdict.root_cause.contains(&crl_url),
        "{}",
        r.verdict.root_cause
    );

    // A CRL that does not list the certificate: good.
    http.set_body(ca.crl(&[&[0x42, 0x42]]));
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_eq!(status(&r, "revocation"), &Status::Pass, "{}", r.to_text());
    assert_eq!(
        r.check("revocation").expect("rev").evidence["certificates"][0]["crl"][0]["status"],
        "good"
    );
}

#[tokio::test]
async fn a_nearly_full_disk_on_a_real_tmpfs() {
    let mnt = tempfile::tempdir().expect("tempdir");
    let status_code = std::process::Command::new(lab::program("mount"))
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("run mount");
    assert!(
        status_code.success(),
        "mounting a tmpfs failed (the lab needs root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    // Fill it to 90 %.
    std::fs::write(mnt.path().join("ballast"), vec![0u8; 920 * 1024]).expect("fill the tmpfs");
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let mut i = input(server.port(), &ca);
    i.state_dir = Some(mnt.path().to_path_buf());
    let r = tether_doctor::run(i, lab.world()).await;
    assert_verdict(&r, "host.disk", ErrorCode::DiskNearlyFull);
    assert!(
        r.verdict.root_cause.contains("KiB free"),
        "{}",
        r.verdict.root_cause
    );
}

#[tokio::test]
async fn shell_and_service_proxy_settings_that_differ_are_flagged() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let mut i = input(server.port(), &ca);
    i.shell_proxy_env = BTreeMap::from([(
        "https_proxy".to_owned(),
        "http://bob:hunter2@proxy:3128".to_owned(),
    )]);
    i.service_proxy_env = Some(BTreeMap::new());
    let r = tether_doctor::run(i, lab.world()).await;
    assert_eq!(r.verdict.status, VerdictStatus::Warnings, "{}", r.to_text());
    assert_eq!(r.verdict.code, Some(ErrorCode::ProxyEnvMismatch));
    assert!(r.verdict.root_cause.contains("HTTPS_PROXY"));
    assert!(!r.to_json().to_string().contains("hunter2"));
}

#[tokio::test]
async fn targets_tell_refused_from_reachable_and_probe_tls() {
    let closed = lab::free_port();
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let mut i = input(server.port(), &ca);
    i.targets = vec![
        ("127.0.0.1".into(), closed),
        ("localhost".into(), server.port()),
    ];
    let r = tether_doctor::run(i, lab.world()).await;
    assert_eq!(
        code(&r, &format!("target:127.0.0.1:{closed}")),
        Some(ErrorCode::ConnectRefused)
    );
    let t = r
        .check(&format!("target:localhost:{}", server.port()))
        .expect("target");
    assert_eq!(t.status, Status::Pass, "{}", r.to_text());
    assert_eq!(
        t.evidence["connected"],
        format!("127.0.0.1:{}", server.port())
    );
}

#[tokio::test]
async fn ocsp_good_revoked_unknown_and_unreachable_from_a_real_openssl_responder() {
    let ca = Ca::root("Tether Lab CA");
    let port = lab::free_port();
    let ocsp_url = format!("http://127.0.0.1:{port}/");
    let good = ca.issue_with_ocsp(&["localhost"], &ocsp_url);
    let revoked = ca.issue_with_ocsp(&["localhost"], &ocsp_url);
    let stranger = ca.issue_with_ocsp(&["localhost"], &ocsp_url);

    // Nothing listens yet: "unreachable", a warning, not "revoked".
    let r = tls_lab(good.chain(&[&ca]), good.key(), &ca).await;
    assert_eq!(status(&r, "revocation"), &Status::Warn, "{}", r.to_text());
    assert_eq!(
        code(&r, "revocation"),
        Some(ErrorCode::RevocationUnreachable)
    );
    let rev = r.check("revocation").expect("revocation");
    assert_eq!(rev.evidence["outcome"], "unreachable");
    assert_eq!(
        rev.evidence["certificates"][0]["ocsp"][0]["status"],
        "unreachable"
    );
    assert!(rev.problem.as_deref().unwrap_or("").contains(&ocsp_url));

    let _responder = OpensslOcsp::start(port, &ca, &good.serial, &revoked.serial).await;

    let r = tls_lab(good.chain(&[&ca]), good.key(), &ca).await;
    assert_eq!(
        status(&r, "revocation"),
        &Status::Pass,
        "{:?}",
        r.check("revocation").expect("revocation").evidence
    );
    let rev = r.check("revocation").expect("revocation");
    assert_eq!(rev.evidence["outcome"], "good");
    assert_eq!(rev.evidence["certificates"][0]["ocsp"][0]["status"], "good");
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());

    let r = tls_lab(revoked.chain(&[&ca]), revoked.key(), &ca).await;
    assert_verdict(&r, "revocation", ErrorCode::TlsRevoked);
    assert!(
        r.verdict.root_cause.contains("OCSP responder at")
            && r.verdict.root_cause.contains(&ocsp_url),
        "{}",
        r.verdict.root_cause
    );
    let rev = r.check("revocation").expect("revocation");
    assert_eq!(
        rev.evidence["certificates"][0]["ocsp"][0]["status"],
        "revoked"
    );
    assert_eq!(
        rev.evidence["certificates"][0]["ocsp"][0]["reason"],
        "KeyCompromise"
    );
    assert_eq!(
        rev.evidence["certificates"][0]["ocsp"][0]["revoked_at"],
        "2025-01-01T00:00:00Z"
    );

    // A certificate the responder has never heard of: "unknown".
    let r = tls_lab(stranger.chain(&[&ca]), stranger.key(), &ca).await;
    assert_eq!(status(&r, "revocation"), &Status::Warn, "{}", r.to_text());
    assert_eq!(code(&r, "revocation"), Some(ErrorCode::RevocationUnknown));
    assert_eq!(
        r.check("revocation").expect("revocation").evidence["certificates"][0]["ocsp"][0]["status"],
        "unknown"
    );
}

#[tokio::test]
async fn no_revocation_information_is_told_apart() {
    let ca = Ca::root("Tether Lab CA");
    let leaf = ca.issue(&["localhost"]);
    let r = tls_lab(leaf.chain(&[&ca]), leaf.key(), &ca).await;
    assert_eq!(status(&r, "revocation"), &Status::Pass, "{}", r.to_text());
    assert_eq!(
        r.check("revocation").expect("revocation").evidence["outcome"],
        "no_information"
    );
}

/// The doctor against `https://ADDR:PORT/` with the real system resolver
/// and real TCP: the address is an IP literal inside the test's netns.
async fn netns_doctor(ip: std::net::Ipv4Addr, port: u16, deadline: Duration) -> Report {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let mut i = input(port, &ca);
    i.server = url(&format!("https://{ip}:{port}/"));
    i.deadline = deadline;
    let world = lab.world_with(
        Arc::new(SystemResolver::new()),
        Arc::new(TcpDialer),
        Arc::new(SystemClock),
    );
    tether_doctor::run(i, world).await
}

#[tokio::test]
async fn netns_a_reset_from_a_real_firewall_is_refused() {
    let mut ns = netns::Netns::new();
    let port = 8443;
    ns.listen(port);
    let tcp = format!("tcp:{}:{port}", ns.ns_ip);
    // Without the rule, the listener answers: TCP passes, and TLS (not
    // spoken by socat) is where the path breaks.
    let r = netns_doctor(ns.ns_ip, port, Duration::from_secs(3)).await;
    assert_eq!(status(&r, &tcp), &Status::Pass, "{}", r.to_text());
    assert_eq!(r.verdict.check.as_deref(), Some("tls"), "{}", r.to_text());

    ns.firewall(&[
        "-p",
        "tcp",
        "--dport",
        "8443",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]);
    let r = netns_doctor(ns.ns_ip, port, Duration::from_secs(3)).await;
    assert_verdict(&r, &tcp, ErrorCode::ConnectRefused);
    assert!(
        r.verdict.root_cause.contains("refused"),
        "{}",
        r.verdict.root_cause
    );
    assert!(r.duration < Duration::from_secs(1), "took {:?}", r.duration);
}

#[tokio::test]
async fn netns_a_real_firewall_dropping_packets_times_out_within_the_deadline() {
    let mut ns = netns::Netns::new();
    let port = 8443;
    ns.listen(port);
    ns.firewall(&["-p", "tcp", "--dport", "8443", "-j", "DROP"]);
    let deadline = Duration::from_secs(2);
    let started = tokio::time::Instant::now();
    let r = netns_doctor(ns.ns_ip, port, deadline).await;
    let took = started.elapsed();
    let tcp = format!("tcp:{}:{port}", ns.ns_ip);
    assert_verdict(&r, &tcp, ErrorCode::ConnectTimeout);
    assert!(
        r.verdict.root_cause.contains("firewall"),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        took < deadline + Duration::from_millis(300),
        "took {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "gave up early: {took:?}"
    );
    assert_eq!(
        status(&r, "tls"),
        &Status::Skipped {
            blocked_by: tcp.clone()
        }
    );
}

#[tokio::test]
async fn netns_an_unreachable_route_is_unreachable() {
    let ns = netns::Netns::new();
    let r = netns_doctor(ns.unreachable_ip, 8443, Duration::from_secs(3)).await;
    let tcp = format!("tcp:{}:8443", ns.unreachable_ip);
    assert_verdict(&r, &tcp, ErrorCode::ConnectUnreachable);
    assert!(
        r.verdict.root_cause.contains("unreachable"),
        "{}",
        r.verdict.root_cause
    );
    assert!(r.duration < Duration::from_secs(1), "took {:?}", r.duration);
}

#[tokio::test]
async fn tls_inspection_by_a_real_mitmproxy_is_named_with_the_fix() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let mitm = Mitmproxy::start().await;
    let mut i = input(server.port(), &ca);
    i.transport.proxy = ProxySetting::Explicit(
        ProxyConfig::parse(&format!("http://127.0.0.1:{}", mitm.port)).expect("proxy URL"),
    );
    let r = tether_doctor::run(i, lab.world()).await;
    assert_eq!(status(&r, "proxy"), &Status::Pass, "{}", r.to_text());
    assert_verdict(&r, "tls", ErrorCode::TlsInspected);
    assert!(
        r.verdict.root_cause.contains("intercepted by mitmproxy"),
        "{}",
        r.verdict.root_cause
    );
    assert!(
        r.verdict.action.contains("extra_ca_file") && r.verdict.action.contains("exempt"),
        "{}",
        r.verdict.action
    );
    // The chain shown is mitmproxy's, captured though verification failed.
    let tls = r.check("tls").expect("tls");
    let issuer = tls.evidence["chain"][0]["issuer"].as_str().unwrap_or("");
    assert!(issuer.contains("mitmproxy"), "{}", tls.evidence["chain"]);
}

#[tokio::test]
async fn squid_with_basic_auth_no_wrong_and_right_credentials() {
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let squid = Squid::start(server.port(), "lab", "lab-pass").await;
    let run = |creds: Option<&str>| {
        let mut i = input(server.port(), &ca);
        let p = match creds {
            Some(c) => format!("http://{c}@127.0.0.1:{}", squid.port),
            None => format!("http://127.0.0.1:{}", squid.port),
        };
        i.transport.proxy = ProxySetting::Explicit(ProxyConfig::parse(&p).expect("proxy URL"));
        tether_doctor::run(i, lab.world())
    };

    let r = run(None).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyAuthRequired);
    let p = r.check("proxy").expect("proxy");
    assert_eq!(p.evidence["status"], 407, "{}", r.to_text());
    assert_eq!(p.evidence["auth_schemes"][0], "Basic");
    assert_eq!(
        r.verdict.root_cause,
        format!(
            "The proxy 127.0.0.1:{} demands authentication (407, offers Basic) and no credentials are configured.",
            squid.port
        )
    );

    let r = run(Some("lab:wrong-pass")).await;
    assert_verdict(&r, "proxy", ErrorCode::ProxyAuthFailed);
    assert!(
        r.verdict.root_cause.starts_with(&format!(
            "The proxy 127.0.0.1:{} rejected the configured credentials (407",
            squid.port
        )),
        "{}",
        r.verdict.root_cause
    );
    assert!(!r.to_text().contains("wrong-pass"), "{}", r.to_text());

    let r = run(Some("lab:lab-pass")).await;
    assert_eq!(r.verdict.status, VerdictStatus::Healthy, "{}", r.to_text());
    let p = r.check("proxy").expect("proxy");
    assert_eq!(p.evidence["status"], 200);
    assert_eq!(p.evidence["credentials_accepted"], true);
    assert!(!r.to_json().to_string().contains("lab-pass"));
    // squid itself saw the three attempts: two refused, one tunnelled.
    let log = std::fs::read_to_string(squid.dir.path().join("access.log")).unwrap_or_default();
    assert!(log.contains("TCP_TUNNEL/200"), "{log}");
    assert!(log.contains("TCP_DENIED/407"), "{log}");
}

#[tokio::test]
async fn clock_skew_beyond_the_token_window_is_tied_to_it() {
    // The server refused the token: its window opens in 4 min by the
    // server's clock. This host's clock is 10 min behind, so by its own
    // clock the admin must wait 14 min.
    let lab = Lab::new();
    let ca = Ca::root("Tether Lab CA");
    let server = healthy_server(&ca).await;
    let now = time::OffsetDateTime::now_utc();
    let clock = ManualClock::new(now - time::Duration::minutes(10));
    let resolver = tether_transport::StaticResolver::new()
        .with("localhost", Ok(vec!["127.0.0.1".parse().expect("ip")]));
    let world = lab.world_with(Arc::new(resolver), Arc::new(TcpDialer), Arc::new(clock));
    let mut i = input(server.port(), &ca);
    i.enrolled = false;
    i.credential = None;
    i.token = Some("tt_lab_token_secret".into());
    let mut refusal = tether_wire::ApiError::new(
        ErrorCode::TokenNotYetValid,
        "the token is not valid yet",
        now,
    );
    refusal.not_before = Some(now + time::Duration::minutes(4));
    i.last_token_error = Some(refusal);
    let r = tether_doctor::run(i, world).await;
    assert_verdict(&r, "auth", ErrorCode::TokenNotYetValid);
    assert!(
        r.verdict.root_cause.contains(
            "in 4 min by the server's clock, in 14 min by your clock (your clock is 10 min behind the server's)"
        ),
        "{}",
        r.verdict.root_cause
    );
    assert_eq!(code(&r, "clock"), Some(ErrorCode::ClockSkew));
    let clock = r.check("clock").expect("clock");
    assert!(
        clock.problem.as_deref().unwrap_or("").starts_with(
            "This host's clock is 10 min behind the server. The token becomes valid at"
        ),
        "{:?}",
        clock.problem
    );
    assert!(!r.to_text().contains("tt_lab_token_secret"));
}
