//! The ACME client against a real pebble (Debian's 2.4) in a network
//! namespace of the test's own, reached over its veth, with dnsmasq
//! resolving `*.good.test` for pebble's validator to the root end of the
//! veth, where an http-01 responder listens on the port pebble validates
//! on. Faults: a challenge nobody answers, a name pebble refuses, and a
//! 429 `rateLimited` problem from an nginx in front of pebble.

use std::time::Duration;

use tether_pki::Kek;
use tether_pki::acme::ari::{RenewalPolicy, WindowSource, renewal_window, validity};
use tether_pki::acme::{ACME_URN, AcmeAccount, AcmeDirectory, AcmeError, SealedAccount};
use tether_testlab::dnsmasq::Dnsmasq;
use tether_testlab::netns::Netns;
use tether_testlab::nginx::{Nginx, Site};
use tether_testlab::pebble::{Http01Responder, Pebble};
use tether_wire::ErrorCode;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const WAIT: Duration = Duration::from_secs(30);

struct Lab {
    pebble: Pebble,
    responder: Http01Responder,
    _dns: Dnsmasq,
}

async fn lab() -> Lab {
    lab_rejecting_nonces(None).await
}

async fn lab_rejecting_nonces(percent: Option<u8>) -> Lab {
    let ns = Netns::new();
    let dns = Dnsmasq::start_for(&ns).await;
    let responder = Http01Responder::start(ns.host_ip).await;
    let pebble = Pebble::start_rejecting_nonces(ns, &dns, responder.port, percent).await;
    Lab {
        pebble,
        responder,
        _dns: dns,
    }
}

fn kek() -> Kek {
    Kek::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("kek")
}

fn directory(pebble: &Pebble) -> AcmeDirectory {
    AcmeDirectory {
        url: pebble.directory_url(),
        ca_pem: Some(pebble.ca_pem()),
    }
}

/// A key and CSR as the agent makes them (the key stays here).
fn csr(names: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.serialize_request(&key).expect("csr").der().to_vec()
}

fn leaf_der(chain_pem: &str) -> Vec<u8> {
    pem::parse_many(chain_pem).expect("pem")[0]
        .contents()
        .to_vec()
}

async fn issue(lab: &Lab, account: &AcmeAccount, names: &[&str]) -> Result<String, AcmeError> {
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let order = account.order(&owned).await?;
    for c in &order.challenges {
        lab.responder.provision(&c.token, &c.key_authorization);
    }
    account.challenges_ready(&order.url).await?;
    account.finalize(&order.url, &csr(names), WAIT).await
}

#[tokio::test]
async fn registers_a_sealed_account_and_issues_through_http_01() {
    let lab = lab().await;
    let dir = directory(&lab.pebble);
    let (registered, sealed) = AcmeAccount::register(&dir, Some("ops@good.test"), &kek())
        .await
        .expect("register");
    // The stored form is sealed: neither the credentials' JSON fields nor
    // the account's URL show in it, and it is not JSON.
    assert!(serde_json::from_slice::<serde_json::Value>(&sealed.0).is_err());
    for needle in [
        &b"BEGIN"[..],
        b"key_pkcs8",
        b"directory",
        registered.id().as_bytes(),
    ] {
        assert!(
            !sealed.0.windows(needle.len()).any(|w| w == needle),
            "sealed account shows {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // A wrong KEK cannot open it (its code names the KEK).
    let wrong = Kek::from_base64("HxwdHhscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwI=").expect("kek");
    let err = AcmeAccount::open(&dir, &sealed, &wrong)
        .await
        .expect_err("wrong kek");
    assert_eq!(err.code(), ErrorCode::AcmeAccountKeyUnavailable);
    let err = AcmeAccount::open(&dir, &SealedAccount(b"garbage".to_vec()), &kek())
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), ErrorCode::AcmeAccountKeyUnavailable);

    // Issue with the account as reopened from its sealed form.
    let account = AcmeAccount::open(&dir, &sealed, &kek())
        .await
        .expect("open");
    assert_eq!(account.id(), registered.id());
    let names = ["www.good.test", "api.good.test"];
    let chain = issue(&lab, &account, &names).await.expect("issued");
    assert!(lab.responder.hits() >= 2, "pebble validated both names");
    // From inside its namespace: every request came over the veth.
    let peers = lab.responder.peers();
    assert!(
        peers
            .iter()
            .all(|p| *p == std::net::IpAddr::from(lab.pebble.ip())),
        "validated from {peers:?}, not from pebble's namespace ({})",
        lab.pebble.ip()
    );
    let blocks = pem::parse_many(&chain).expect("chain pem");
    assert!(blocks.len() >= 2, "leaf and pebble's intermediate: {chain}");
    let der = leaf_der(&chain);
    let (_, cert) = X509Certificate::from_der(&der).expect("leaf");
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .expect("san ext")
        .expect("san")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    for n in names {
        assert!(sans.contains(&n.to_owned()), "{n} in {sans:?}");
    }

    // Pebble 2.4 offers no renewalInfo: the window falls back to the
    // policy, 2/3 of the issued certificate's lifetime.
    let info = account.renewal_info(&der).await.expect("renewal info");
    assert_eq!(info, None);
    let (nb, na) = validity(&der).expect("validity");
    assert_eq!(nb, cert.validity().not_before.to_datetime());
    let w = renewal_window(nb, na, info.as_ref(), RenewalPolicy::default());
    assert!(matches!(w.source, WindowSource::Policy { .. }));
    assert_eq!(w.window.start, nb + (na - nb) * (2.0 / 3.0));
    assert!(w.window.start < w.window.end && w.window.end < na);
}

/// RFC 8555 §6.5: a `badNonce` refusal means the request was not
/// processed and must be sent again. With pebble refusing 40% of good
/// nonces, every step of two issuances and a revocation meets refusals
/// (about 30 requests: 12 refusals expected), more than instant-acme's
/// three sends per request absorb alone (a request fails there once in 16,
/// so without the step's own retries this test fails 6 times in 7); each
/// still succeeds.
#[tokio::test]
async fn refused_nonces_are_sent_again_until_the_ca_takes_them() {
    let lab = lab_rejecting_nonces(Some(40)).await;
    let dir = directory(&lab.pebble);
    let (account, _sealed) = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect("register despite refused nonces");
    for name in ["nonce-a.good.test", "nonce-b.good.test"] {
        let chain = issue(&lab, &account, &[name])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e} ({})", e.code()));
        let der = leaf_der(&chain);
        assert!(
            account.revoke(&der, 4).await.expect("revoke"),
            "{name}: the revocation was refused as already done"
        );
    }
    // pebble does not log each refusal; it logs that it refuses (about 30
    // requests above at 40%: the chance that none was refused is 1e-7).
    let log = lab.pebble.log();
    assert!(
        log.contains("Configured to reject 40% of good nonces"),
        "{log}"
    );
}

#[tokio::test]
async fn a_challenge_nobody_answers_ends_with_pebbles_problem() {
    let lab = lab().await;
    let dir = directory(&lab.pebble);
    let (account, _) = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect("register");
    let names = vec!["silent.good.test".to_owned()];
    let order = account.order(&names).await.expect("order");
    assert_eq!(order.challenges.len(), 1);
    // Not provisioned: the responder answers 404.
    account.challenges_ready(&order.url).await.expect("ready");
    let err = account
        .finalize(&order.url, &csr(&["silent.good.test"]), WAIT)
        .await
        .expect_err("validation fails");
    assert_eq!(err.code(), ErrorCode::AcmeChallengeFailed, "{err}");
    let problem = err.problem().expect("problem kept");
    assert!(
        problem
            .kind
            .as_deref()
            .is_some_and(|k| k.starts_with(ACME_URN)),
        "{problem:?}"
    );
    assert!(problem.detail.is_some(), "{problem:?}");
    assert_eq!(
        problem.subproblems[0].identifier.as_deref(),
        Some("silent.good.test")
    );
}

#[tokio::test]
async fn a_name_pebble_refuses_keeps_the_problem_document() {
    let lab = lab().await;
    let dir = directory(&lab.pebble);
    let (account, _) = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect("register");
    let err = account
        .order(&["*.*.good.test".to_owned()])
        .await
        .expect_err("refused");
    // Pebble refuses a name with two wildcards at new-order, as malformed.
    assert_eq!(err.code(), ErrorCode::AcmeRequestRefused, "{err}");
    let problem = err.problem().expect("problem kept");
    assert_eq!(
        problem.kind.as_deref(),
        Some("urn:ietf:params:acme:error:malformed")
    );
    assert_eq!(problem.status, Some(400));
    assert!(
        problem
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("*.*.good.test")),
        "{problem:?}"
    );
}

#[tokio::test]
async fn a_429_rate_limited_problem_from_a_gateway_is_kept() {
    let lab = lab().await;
    let dir = lab.pebble.api_ca();
    let scratch = tether_testlab::Scratch::new("acme-gw");
    let (cert, key) = dir
        .issue(&["127.0.0.1", "localhost"])
        .write_chain(scratch.path(), "gw", &[]);
    let body = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders recently: see https://good.test/rate-limits","status":429}"#;
    let gateway = Nginx::start(&Site {
        tls: Some((cert, key)),
        server: format!(
            "location = /order-plz {{ default_type application/problem+json; add_header Retry-After 3600 always; return 429 '{body}'; }}\n\
             location / {{ proxy_pass https://{}:{}; proxy_set_header Host $http_host; proxy_ssl_verify off; }}",
            lab.pebble.ip(),
            lab.pebble.port
        ),
        ..Site::default()
    })
    .await;
    let via_gateway = AcmeDirectory {
        url: format!("https://127.0.0.1:{}/dir", gateway.port),
        ca_pem: Some(lab.pebble.ca_pem()),
    };
    let (account, _) = AcmeAccount::register(&via_gateway, None, &kek())
        .await
        .expect("register through the gateway");
    let err = account
        .order(&["www.good.test".to_owned()])
        .await
        .expect_err("rate limited");
    assert_eq!(err.code(), ErrorCode::AcmeRateLimited, "{err}");
    assert_eq!(ErrorCode::AcmeRateLimited.http_status(), 429);
    let problem = err.problem().expect("problem kept");
    assert_eq!(
        problem.kind.as_deref(),
        Some("urn:ietf:params:acme:error:rateLimited")
    );
    assert_eq!(problem.status, Some(429));
    assert!(
        problem
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("too many new orders")),
        "{problem:?}"
    );
    // nginx logs a request after answering it: wait for the line, bounded.
    let mut logged = false;
    for _ in 0..40 {
        logged = gateway.access_log().contains("POST /order-plz");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        logged,
        "the 429 came from the gateway: {}",
        gateway.access_log()
    );
}

#[tokio::test]
async fn an_unreachable_or_non_acme_directory_has_its_code() {
    let dir = AcmeDirectory {
        url: format!("https://127.0.0.1:{}/dir", tether_testlab::free_port()),
        ca_pem: None,
    };
    let err = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::AcmeUnreachable, "{err}");
    assert!(err.to_string().contains("TETHER-E"), "{err}");

    // A web server that is not an ACME CA answers an HTML page.
    let scratch = tether_testlab::Scratch::new("acme-notacme");
    let ca = tether_testlab::pki::Ca::root("not acme");
    let (cert, key) = ca
        .issue(&["127.0.0.1"])
        .write_chain(scratch.path(), "web", &[]);
    std::fs::write(scratch.path().join("dir"), "<html>hello</html>").expect("page");
    let web = Nginx::static_https(scratch.path(), &cert, &key).await;
    let dir = AcmeDirectory {
        url: format!("https://127.0.0.1:{}/dir", web.port),
        ca_pem: Some(ca.pem()),
    };
    let err = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect_err("not acme");
    assert_eq!(err.code(), ErrorCode::AcmeNotAcme, "{err}");
}
