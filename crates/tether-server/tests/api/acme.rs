//! The ACME issue flow's hostile inputs, on a real server and a real pebble
//! (issue #10): registration bodies that are not an issuer, a directory
//! that is not ACME, an agent that cannot answer challenges, and order
//! handles that were altered or belong to another lease. Each gets its
//! code; nothing is stored or ordered on a refusal.

use serde_json::{Value, json};
use tether_testlab::dnsmasq::Dnsmasq;
use tether_testlab::free_port;
use tether_testlab::netns::Netns;
use tether_testlab::pebble::Pebble;
use tether_wire::{
    AcmeIssuerInfo, AcmeIssuerList, AgentKind, CheckinResponse, ErrorCode, IssuePending, TaskInfo,
    TaskPollReply,
};

use crate::support::{self, token_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registrations_and_issue_calls_get_their_codes() {
    let h = support::start().await;
    let ns = Netns::new();
    let dns = Dnsmasq::start_for(&ns).await;
    let pebble = Pebble::start(ns, &dns, free_port()).await;
    let pebble_ca = String::from_utf8(pebble.ca_pem()).expect("pem");
    let add = |body: Value| {
        let h = &h;
        async move {
            h.client
                .post("/v1/admin/acme-issuers", Some(&h.admin), &body)
                .await
        }
    };

    // Bodies that are not an issuer: refused before any request to a CA.
    for (body, field) in [
        (
            json!({"name": "Bad Name", "directory": pebble.directory_url()}),
            "name",
        ),
        (
            json!({"name": "-x", "directory": pebble.directory_url()}),
            "name",
        ),
        (
            json!({"name": "p", "directory": "http://127.0.0.1:1/dir"}),
            "directory",
        ),
        (
            json!({"name": "p", "directory": "file:///etc/passwd"}),
            "directory",
        ),
        (
            json!({"name": "p", "directory": format!("https://x/{}", "a".repeat(3000))}),
            "directory",
        ),
        (
            json!({"name": "p", "directory": pebble.directory_url(), "email": "a@b\r\nBcc: c@d"}),
            "email",
        ),
        (
            json!({"name": "p", "directory": pebble.directory_url(), "email": "nobody"}),
            "email",
        ),
        (
            json!({"name": "p", "directory": pebble.directory_url(), "ca_pem": "not a pem"}),
            "ca_pem",
        ),
    ] {
        let e = add(body.clone()).await.error(422, ErrorCode::InvalidField);
        assert!(e.message.contains(field), "{body}: {}", e.message);
    }
    // Nothing listens there: the transport's failure, named.
    let e =
        add(json!({"name": "p", "directory": format!("https://127.0.0.1:{}/dir", free_port())}))
            .await
            .error(502, ErrorCode::AcmeUnreachable);
    assert!(e.message.contains("could not be reached"), "{}", e.message);
    // A server that answers, but not as an ACME directory (pebble's own
    // management-free API root).
    let not_acme = pebble.directory_url().replace("/dir", "/nonce-plz");
    add(json!({"name": "p", "directory": not_acme, "ca_pem": pebble_ca}))
        .await
        .error(502, ErrorCode::AcmeNotAcme);
    let none: AcmeIssuerList = h
        .client
        .get("/v1/admin/acme-issuers", Some(&h.admin))
        .await
        .ok();
    assert!(none.issuers.is_empty(), "nothing stored: {none:?}");

    // A real registration.
    let r =
        add(json!({"name": "pebble", "directory": pebble.directory_url(), "ca_pem": pebble_ca}))
            .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let info: AcmeIssuerInfo = r.json();
    assert!(info.account.is_some());
    add(json!({"name": "pebble", "directory": pebble.directory_url(), "ca_pem": pebble_ca}))
        .await
        .error(409, ErrorCode::Conflict);

    // A provisioning agent with a leased ACME deploy.
    let t = h
        .create_token(&token_request(AgentKind::Provisioning))
        .await;
    let a = h.enroll_ok(&t.token, "prov-a").await;
    let _: CheckinResponse = h.checkin(&a.credential).await.ok();
    let body = json!({"kind": "deploy", "spec": {
        "names": ["web.good.test"],
        "target": {"cert": "/tmp/never/cert.pem", "key": "/tmp/never/key.pem"},
        "reload": {"command": ["true"]},
        "verify": {"address": "127.0.0.1", "port": 443},
        "issuer": "acme:pebble",
        "challenge": {"listener": 80}},
        "target": {"type": "agent", "agent_id": a.agent_id}});
    let r = h
        .client
        .post("/v1/admin/tasks", Some(&h.admin), &body)
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created: TaskInfo<Value> = r.json();
    let poll = json!({"wait_secs": 1, "capacity": 1, "kinds": ["deploy"]});
    let got: TaskPollReply<Value> = h
        .client
        .post("/v1/agent/tasks/poll", Some(&a.credential), &poll)
        .await
        .ok();
    assert_eq!(got.leases.len(), 1);
    let epoch = got.leases[0].epoch;
    let key = tether_deploy::keygen::generate(&["web.good.test".to_owned()]).expect("csr");
    let path = format!("/v1/agent/tasks/{}/issue", created.id);
    let issue = |body: Value| {
        let (h, path, cred) = (&h, path.clone(), a.credential.clone());
        async move { h.client.post(&path, Some(&cred), &body).await }
    };

    // An agent that does not answer challenges (every agent before ACME).
    let e = issue(json!({"epoch": epoch, "csr_pem": key.csr_pem}))
        .await
        .error(422, ErrorCode::AcmeAgentCannotAnswer);
    assert!(e.message.contains("http-01"), "{}", e.message);
    // A CSR for another name is refused before the CA hears of it.
    let other = tether_deploy::keygen::generate(&["evil.good.test".to_owned()]).expect("csr");
    issue(json!({"epoch": epoch, "csr_pem": other.csr_pem, "http01": true}))
        .await
        .error(422, ErrorCode::CsrNameNotAllowed);
    // The first call: 202 with the challenges and an opaque order handle.
    let r = issue(json!({"epoch": epoch, "csr_pem": key.csr_pem, "http01": true})).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let pending: IssuePending = r.json();
    assert_eq!(pending.challenges.len(), 1);
    assert_eq!(pending.challenges[0].name, "web.good.test");
    assert!(!pending.order.starts_with("https://"), "the URL is sealed");
    // Handles that were altered, are raw order URLs, or come from nowhere.
    let mut altered = pending.order.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    for handle in [
        String::from_utf8(altered).expect("ascii"),
        "https://127.0.0.1/order/1".to_owned(),
        "A".repeat(5000),
    ] {
        let e =
            issue(json!({"epoch": epoch, "csr_pem": key.csr_pem, "http01": true, "order": handle}))
                .await
                .error(409, ErrorCode::AcmeOrderHandleInvalid);
        assert!(!e.message.is_empty());
    }
    // Another epoch is fenced before the handle is read.
    issue(
        json!({"epoch": epoch + 1, "csr_pem": key.csr_pem, "http01": true, "order": pending.order}),
    )
    .await
    .error(409, ErrorCode::TaskStaleEpoch);
    // Nobody serves the challenge: pebble's problem, with the name.
    let e = issue(
        json!({"epoch": epoch, "csr_pem": key.csr_pem, "http01": true, "order": pending.order}),
    )
    .await
    .error(502, ErrorCode::AcmeChallengeFailed);
    assert!(e.message.contains("web.good.test"), "{}", e.message);
}
