//! ACME end to end: the real server registers an account with a real
//! pebble (`tether certs acme add`), a real provisioning agent deploys a
//! certificate from it to a PEM set a real nginx serves, answering pebble's
//! http-01 challenge with its own listener; pebble runs in a network
//! namespace of the test's own, reached over its veth, and resolves the
//! name through a real dnsmasq to the root end of the veth. Then: a challenge pebble cannot reach fails with
//! the CA's problem and its code while the deployed certificate stays
//! served; a forced renewal goes through the same ACME issuer; and the
//! certificate is revoked at pebble, not on the built-in CA's CRL.

use std::time::Duration;

use serde_json::Value;
use tether_testlab::dnsmasq::Dnsmasq;
use tether_testlab::free_port;
use tether_testlab::netns::Netns;
use tether_testlab::pebble::Pebble;
use tether_wire::{AcmeIssuerInfo, AcmeIssuerList, CertHistory, RenewalState, TaskState};

use crate::deploy::{
    PemSite, assert_serves, deploy_args, deploy_ok, fp_of_file, provisioning_agent, wait_task,
};
use crate::lab::{Backend, Server};
use crate::renewal::wait_renewal;

const NAME: &str = "web.good.test";
/// A name no challenge is answered for.
const OTHER: &str = "unanswered.good.test";

fn issuer_of(pem_file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(pem_file).expect("cert");
    let der = pem::parse(text).expect("pem").into_contents();
    tether_x509::CertFacts::from_der(&der)
        .expect("a certificate")
        .issuer
}

async fn a_certificate_is_ordered_deployed_renewed_and_revoked_through_acme(backend: Backend) {
    let ns = Netns::new();
    let dns = Dnsmasq::start_for(&ns).await;
    let http01_port = free_port();
    // The agent's listener binds 0.0.0.0, so pebble's validator reaches
    // it on the root end of the veth, what dnsmasq answers.
    let pebble = Pebble::start(ns, &dns, http01_port).await;
    let server = Server::start(backend).await;

    // The account is registered from the server, sealed with its KEK.
    let ca_file = pebble.ca_file();
    let added: AcmeIssuerInfo = serde_json::from_str(
        &server
            .admin_ok(&[
                "certs",
                "acme",
                "add",
                "pebble",
                "--directory",
                &pebble.directory_url(),
                "--acme-ca-file",
                ca_file.to_str().expect("utf8"),
                "--email",
                "pki@good.test",
                "--json",
            ])
            .await,
    )
    .expect("acme add --json");
    assert!(
        added
            .account
            .as_deref()
            .is_some_and(|a| a.starts_with("https://")),
        "{added:?}"
    );
    assert!(added.private_ca);
    let list: AcmeIssuerList =
        serde_json::from_str(&server.admin_ok(&["certs", "acme", "list", "--json"]).await)
            .expect("acme list --json");
    assert_eq!(list.issuers.len(), 1);
    assert_eq!(list.issuers[0].name, "pebble");
    // A second registration under the same name is refused, not replaced.
    let again = server
        .admin(&[
            "certs",
            "acme",
            "add",
            "pebble",
            "--directory",
            &pebble.directory_url(),
        ])
        .await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let (agent, agent_id) = provisioning_agent(&server).await;
    let site = PemSite::start("e2e-acme-site", &[NAME], "").await;
    let (set, nginx) = (&site.set, &site.nginx);
    let p = |n: &str| site.path(n);
    let deploy = |name: &'static str, port: u16| {
        let port = port.to_string();
        let args = deploy_args(
            &agent_id.to_string(),
            &[name],
            &[
                ("cert", p("cert.pem")),
                ("key", p("key.pem")),
                ("fullchain", p("fullchain.pem")),
            ],
            &site.reload(),
            &site.verify(),
            &[
                "--sni",
                name,
                "--issuer",
                "acme:pebble",
                "--http01-port",
                &port,
                "--max-attempts",
                "1",
            ],
        );
        let server = &server;
        async move { deploy_ok(server, &args).await }
    };

    // 1. Ordered, validated through the agent's listener, deployed.
    let id = deploy(NAME, http01_port).await;
    let d = wait_task(&server, &id, Duration::from_secs(90)).await;
    assert_eq!(
        d.task.state,
        TaskState::Succeeded,
        "{d:#?}\nagent:\n{}\npebble:\n{}",
        agent.stderr(),
        pebble.log()
    );
    let first = fp_of_file(&set.join("cert.pem"));
    assert_serves(nginx.port, &first).await;
    assert!(
        issuer_of(&set.join("cert.pem")).contains("Pebble"),
        "{}",
        issuer_of(&set.join("cert.pem"))
    );
    // Pebble fetched the key authorization from the agent.
    assert!(pebble.log().contains("acme-challenge"), "{}", pebble.log());
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &first, "--json"])
            .await,
    )
    .expect("history --json");
    let issued = h
        .issued
        .expect("recorded as issued through the control plane");
    assert_eq!(issued.issuer.as_deref(), Some("acme:pebble"));
    assert_eq!(issued.names, vec![NAME.to_owned()]);
    // Pebble 2.4 offers no renewalInfo: the policy's window decides.
    assert_eq!(issued.renewal_window, None);
    let text = server.admin_ok(&["certs", "history", &first]).await;
    assert!(text.contains("by acme:pebble"), "{text}");

    // 2. Pebble validates a new name (the account's authorization for the
    //    first is still valid) on its port, where nothing answers now: the
    //    CA's problem comes back with its code, and the certificate stays.
    let id = deploy(OTHER, free_port()).await;
    let d = wait_task(&server, &id, Duration::from_secs(90)).await;
    assert_eq!(d.task.state, TaskState::Dead, "{d:#?}");
    let why = format!("{:?} {:?}", d.task.outcome, d.task.last_error);
    assert!(why.contains("TETHER-E8424"), "{why}");
    assert!(why.contains(OTHER), "the failed name is named: {why}");
    assert_eq!(fp_of_file(&set.join("cert.pem")), first);
    assert_serves(nginx.port, &first).await;

    // 3. A forced renewal goes through the certificate's own issuer.
    server.admin_ok(&["certs", "renew", &first]).await;
    let r = wait_renewal(&server, &first, RenewalState::Verified).await;
    assert_eq!(r.issuer, "acme:pebble", "{r:#?}");
    let second = fp_of_file(&set.join("cert.pem"));
    assert_ne!(second, first);
    assert_serves(nginx.port, &second).await;
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &second, "--json"])
            .await,
    )
    .expect("history --json");
    assert_eq!(
        h.issued.and_then(|i| i.issuer).as_deref(),
        Some("acme:pebble")
    );

    // 4. Revoked at pebble (the built-in CA has nothing to sign here).
    let out: Value = serde_json::from_str(
        &server
            .admin_ok(&[
                "certs",
                "revoke",
                &first,
                "--reason",
                "superseded",
                "--json",
            ])
            .await,
    )
    .expect("revoke --json");
    assert_eq!(out["newly_revoked"], true, "{out:#}");
    assert!(
        pebble.log().to_lowercase().contains("revok"),
        "{}",
        pebble.log()
    );
    let out: Value = serde_json::from_str(
        &server
            .admin_ok(&[
                "certs",
                "revoke",
                &first,
                "--reason",
                "superseded",
                "--json",
            ])
            .await,
    )
    .expect("revoke --json");
    assert_eq!(out["newly_revoked"], false, "{out:#}");

    // The issuer can be removed; a deploy naming it is then refused at once.
    server
        .admin_ok(&["certs", "acme", "remove", "pebble"])
        .await;
    let port = http01_port.to_string();
    let refused = deploy_args(
        &agent_id.to_string(),
        &[NAME],
        &[("cert", p("cert.pem")), ("key", p("key.pem"))],
        "/bin/true",
        &format!("127.0.0.1:{}", nginx.port),
        &["--issuer", "acme:pebble", "--http01-port", &port],
    );
    let refused = server
        .admin(&refused.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("TETHER-E8432"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

crate::both_backends!(a_certificate_is_ordered_deployed_renewed_and_revoked_through_acme);
