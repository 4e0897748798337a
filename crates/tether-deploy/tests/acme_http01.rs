//! The agent's side of ACME http-01 against a real pebble: the key and CSR
//! made on the host (`keygen`), the challenge served from a real nginx's
//! webroot or from the agent's own listener, pebble (in a network namespace
//! of the test's own) validating it over the veth, through dnsmasq
//! (`*.good.test` → the root end of the veth), and the token gone
//! afterwards.
//! The control plane's side is `tether_pki::acme` (a dev-dependency here).

use std::time::Duration;

use tether_deploy::challenge::{Solver, provision};
use tether_deploy::keygen;
use tether_pki::Kek;
use tether_pki::acme::{AcmeAccount, AcmeDirectory};
use tether_testlab::dnsmasq::Dnsmasq;
use tether_testlab::netns::Netns;
use tether_testlab::nginx::{Nginx, Site};
use tether_testlab::pebble::Pebble;
use tether_testlab::{Scratch, free_port};
use tether_wire::ErrorCode;

fn kek() -> Kek {
    Kek::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("kek")
}

/// Orders `names`, provisions with `solver`, validates and finalizes with
/// a CSR made by the agent's keygen; returns the chain and the token paths.
async fn issue_with(pebble: &Pebble, solver: &Solver, names: &[&str]) -> (String, Vec<String>) {
    let dir = AcmeDirectory {
        url: pebble.directory_url(),
        ca_pem: Some(pebble.ca_pem()),
    };
    let (account, _) = AcmeAccount::register(&dir, None, &kek())
        .await
        .expect("register");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let order = account.order(&names).await.expect("order");
    assert_eq!(order.challenges.len(), names.len());
    let served = provision(solver, &order.challenges)
        .await
        .expect("provisioned");
    account.challenges_ready(&order.url).await.expect("ready");
    let key = keygen::generate(&names).expect("key and csr");
    let csr_der = pem::parse(&key.csr_pem)
        .expect("csr pem")
        .contents()
        .to_vec();
    let chain = account
        .finalize(&order.url, &csr_der, Duration::from_secs(30))
        .await
        .expect("issued");
    served.remove();
    let paths = order.challenges.iter().map(|c| c.path()).collect();
    (chain, paths)
}

#[tokio::test]
async fn pebble_validates_a_challenge_in_nginxs_webroot_and_the_file_is_removed() {
    let ns = Netns::new();
    let dns = Dnsmasq::start_for(&ns).await;
    let webroot = Scratch::new("acme-webroot");
    webroot.open_to_all();
    // Where pebble's validator, inside the namespace, reaches the host.
    let nginx = Nginx::start(&Site {
        server: format!("root {};", webroot.path().display()),
        ip: Some(ns.host_ip),
        ..Site::default()
    })
    .await;
    let pebble = Pebble::start(ns, &dns, nginx.port).await;
    let (chain, paths) = issue_with(
        &pebble,
        &Solver::Webroot(webroot.path().to_owned()),
        &["www.good.test"],
    )
    .await;
    assert!(chain.contains("BEGIN CERTIFICATE"));
    // Pebble fetched the token from nginx…
    let log = nginx.access_log();
    assert!(log.contains(&format!("GET {} ", paths[0])), "{log}");
    assert!(log.contains("\" 200 "), "{log}");
    // …and nothing of the challenge is left in the webroot.
    assert!(!webroot.path().join(".well-known").exists());
}

#[tokio::test]
async fn pebble_validates_through_the_agents_own_listener() {
    let ns = Netns::new();
    let dns = Dnsmasq::start_for(&ns).await;
    let port = free_port();
    let pebble = Pebble::start(ns, &dns, port).await;
    // The agent binds 0.0.0.0 (`ChallengeSpec::Listener`); here the
    // address pebble's validator reaches, the root end of the veth.
    let addr = std::net::SocketAddr::from((pebble.host_ip(), port));
    let (chain, _) = issue_with(
        &pebble,
        &Solver::Listen(addr),
        &["a.good.test", "b.good.test"],
    )
    .await;
    assert!(pem::parse_many(&chain).expect("pem").len() >= 2, "{chain}");
    // The listener is gone once the challenge is removed.
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the agent's listener stopped");
}

#[tokio::test]
async fn a_port_the_web_server_holds_is_named_not_stolen() {
    let nginx = Nginx::start(&Site::default()).await;
    let addr = format!("127.0.0.1:{}", nginx.port).parse().expect("addr");
    let c = tether_wire::Http01Challenge {
        name: "www.good.test".into(),
        token: "tok".into(),
        key_authorization: "tok.x".into(),
    };
    let err = provision(&Solver::Listen(addr), &[c])
        .await
        .expect_err("port taken");
    assert_eq!(err.code(), ErrorCode::AcmeChallengeProvisionFailed);
}
