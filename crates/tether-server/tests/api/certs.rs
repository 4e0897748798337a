//! The discovery inventory over the real API: discover results delivered by
//! an agent become certificates deduplicated by fingerprint, with every
//! location; a changed or silent location is marked; listings filter and
//! page; hostile fingerprints and filters are refused with codes.

use serde_json::{Value, json};
use tether_wire::{
    AgentKind, CertDetail, CertInfo, CheckinResponse, ErrorCode, LocationState, ResultAck,
    TaskInfo, TaskPollReply,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{self, Harness, token_request};

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formats")
}

fn fp(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// A `tether_scan::EndpointResult` that accepted TLS with a one-certificate
/// chain, as the agent sends it.
fn tls(
    ip: &str,
    sni: Option<&str>,
    cert: u8,
    not_after: OffsetDateTime,
    chain_verdicts: &[&str],
) -> Value {
    json!({
        "ip": ip, "port": 443, "sni": sni,
        "outcome": "tls_accepted", "protocol": "TLSv1_3", "cipher": "TLS13_AES_128_GCM_SHA256",
        "chain": {
            "certs": [{
                "subject": format!("CN=host-{cert}\u{1b}[31m"), "issuer": "CN=Lab CA", "serial": "0a",
                "sans": ["a.example"], "sans_total": 1, "key_type": "ec", "key_bits": 256,
                "signature_algorithm": "ecdsa-with-SHA256",
                "not_before": "2026-01-01T00:00:00Z", "not_after": rfc(not_after),
                "fingerprint": fp(cert), "aia_urls": [], "cdp_urls": [], "is_ca": false,
                "verdicts": []
            }],
            "presented": 1, "verdicts": chain_verdicts, "trusted": chain_verdicts.is_empty()
        },
        "elapsed_ms": 4
    })
}

fn refused(ip: &str, sni: Option<&str>) -> Value {
    json!({"ip": ip, "port": 443, "sni": sni, "outcome": "refused", "elapsed_ms": 1})
}

fn filtered(ip: &str, sni: Option<&str>) -> Value {
    json!({"ip": ip, "port": 443, "sni": sni, "outcome": "filtered", "detail": "no answer", "elapsed_ms": 5000})
}

/// A discover attempt in progress: its results path and epoch.
struct Attempt {
    res: String,
    epoch: u64,
    next: usize,
}

impl Attempt {
    async fn start(h: &Harness, agent: uuid::Uuid, credential: &str) -> Attempt {
        // One attempt: a failed one is not retried behind the next scan.
        let body = json!({"kind": "discover", "spec": {"targets": ["10.0.0.0/30"], "ports": [443]},
                          "target": {"type": "agent", "agent_id": agent}, "max_attempts": 1});
        let r = h
            .client
            .post("/v1/admin/tasks", Some(&h.admin), &body)
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let created: TaskInfo<Value> = r.json();
        let got: TaskPollReply<Value> = h
            .client
            .post(
                "/v1/agent/tasks/poll",
                Some(credential),
                &json!({"wait_secs": 1, "capacity": 1, "kinds": ["discover"]}),
            )
            .await
            .ok();
        assert_eq!(got.leases.len(), 1);
        Attempt {
            res: format!("/v1/agent/tasks/{}/results", created.id),
            epoch: got.leases[0].epoch,
            next: 0,
        }
    }

    async fn chunk(&mut self, h: &Harness, credential: &str, items: Value) {
        let chunk = json!({"epoch": self.epoch, "chunk": self.next, "items": items});
        self.next += 1;
        let ack: ResultAck = h
            .client
            .post(&self.res, Some(credential), &chunk)
            .await
            .ok();
        assert!(ack.stored);
    }

    async fn end(self, h: &Harness, credential: &str, outcome: &str) {
        let end = json!({"epoch": self.epoch, "chunk": self.next, "items": {"summary": {"total": 1}},
                         "outcome": {"outcome": outcome, "message": "done"}});
        let _: ResultAck = h.client.post(&self.res, Some(credential), &end).await.ok();
    }
}

/// Runs one discover task on `agent` whose results are `chunks`, each sent
/// twice, then ends it.
async fn discover(h: &Harness, agent: uuid::Uuid, credential: &str, chunks: &[Value]) {
    let body = json!({"kind": "discover", "spec": {"targets": ["10.0.0.0/30"], "ports": [443]},
                      "target": {"type": "agent", "agent_id": agent}});
    let r = h
        .client
        .post("/v1/admin/tasks", Some(&h.admin), &body)
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created: TaskInfo<Value> = r.json();
    let got: TaskPollReply<Value> = h
        .client
        .post(
            "/v1/agent/tasks/poll",
            Some(credential),
            &json!({"wait_secs": 1, "capacity": 1, "kinds": ["discover"]}),
        )
        .await
        .ok();
    assert_eq!(got.leases.len(), 1);
    let epoch = got.leases[0].epoch;
    let res = format!("/v1/agent/tasks/{}/results", created.id);
    for (n, items) in chunks.iter().enumerate() {
        let chunk = json!({"epoch": epoch, "chunk": n, "items": items});
        let first: ResultAck = h.client.post(&res, Some(credential), &chunk).await.ok();
        assert!(first.stored);
        let again: ResultAck = h.client.post(&res, Some(credential), &chunk).await.ok();
        assert!(!again.stored);
    }
    let end = json!({"epoch": epoch, "chunk": chunks.len(), "items": {"summary": {"total": 4}},
                     "outcome": {"outcome": "ok", "message": "done"}});
    let _: ResultAck = h.client.post(&res, Some(credential), &end).await.ok();
}

async fn list(h: &Harness, query: &str) -> Vec<CertInfo> {
    h.client
        .get(&format!("/v1/admin/certs{query}"), Some(&h.admin))
        .await
        .ok()
}

async fn show(h: &Harness, fingerprint: &str) -> CertDetail {
    h.client
        .get(&format!("/v1/admin/certs/{fingerprint}"), Some(&h.admin))
        .await
        .ok()
}

#[tokio::test]
async fn discover_results_fill_the_inventory_and_mark_changes() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let a = h.enroll_ok(&t.token, "bot-a").await;
    let _: CheckinResponse = h.checkin(&a.credential).await.ok();
    let now = tether_wire::Clock::now(&h.clock);
    let soon = now + time::Duration::days(10);
    let later = now + time::Duration::days(400);
    discover(
        &h,
        a.agent_id,
        &a.credential,
        &[
            json!([
                tls("10.0.0.1", Some("a.example"), 1, soon, &[]),
                tls("10.0.0.2", None, 1, soon, &["name_mismatch"]),
            ]),
            json!([
                tls("10.0.0.3", None, 2, later, &["self_signed"]),
                refused("10.0.0.4", None),
            ]),
        ],
    )
    .await;
    let all = list(&h, "").await;
    assert_eq!(all.len(), 2, "deduplicated by fingerprint: {all:?}");
    let one = all.iter().find(|c| c.fingerprint == fp(1)).expect("cert 1");
    assert_eq!(one.locations, 2, "each chunk was sent twice, stored once");
    assert_eq!(
        one.cert.subject, "CN=host-1\u{1b}[31m",
        "JSON keeps the text"
    );
    let expiring = list(&h, "?expiring=30d").await;
    assert_eq!(
        expiring
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect::<Vec<_>>(),
        vec![fp(1)]
    );
    let self_signed = list(&h, "?verdict=self_signed").await;
    assert_eq!(self_signed.len(), 1);
    assert_eq!(self_signed[0].fingerprint, fp(2));
    // Paging: one per page, the cursor in the header.
    let r = h
        .client
        .get("/v1/admin/certs?limit=1", Some(&h.admin))
        .await;
    let first: Vec<CertInfo> = r.ok();
    assert_eq!(first.len(), 1);
    let next = r
        .headers
        .get(tether_wire::NEXT_CURSOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("a next cursor")
        .to_owned();
    let second = list(&h, &format!("?limit=1&after={next}")).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].fingerprint, first[0].fingerprint);

    let d = show(&h, &fp(1)).await;
    assert_eq!(d.seen_at.len(), 2);
    assert!(d.seen_at.iter().all(|l| l.state == LocationState::Current));
    assert!(d.seen_at.iter().all(|l| l.agent_id == a.agent_id));
    assert_eq!(d.chain.len(), 1);
    // The admin may give the fingerprint in capitals, without the prefix.
    let upper = show(&h, &fp(1)[7..].to_ascii_uppercase()).await;
    assert_eq!(upper.info.fingerprint, fp(1));

    // A later scan: 10.0.0.1 now presents cert 2, 10.0.0.2 refuses.
    h.clock.advance(time::Duration::hours(1));
    discover(
        &h,
        a.agent_id,
        &a.credential,
        &[json!([
            tls("10.0.0.1", Some("a.example"), 2, later, &["self_signed"]),
            refused("10.0.0.2", None),
        ])],
    )
    .await;
    let d = show(&h, &fp(1)).await;
    let at = |addr: &str| {
        d.seen_at
            .iter()
            .find(|l| l.address == addr)
            .unwrap_or_else(|| panic!("{addr} in {:?}", d.seen_at))
            .clone()
    };
    let changed = at("10.0.0.1:443");
    assert_eq!(changed.state, LocationState::Changed);
    assert_eq!(changed.replaced_by.as_deref(), Some(fp(2).as_str()));
    assert_eq!(changed.sni.as_deref(), Some("a.example"));
    assert_eq!(at("10.0.0.2:443").state, LocationState::Gone);
    let two = show(&h, &fp(2)).await;
    assert_eq!(two.info.locations, 2);
    let moved = two
        .seen_at
        .iter()
        .find(|l| l.address == "10.0.0.1:443")
        .expect("cert 2 at 10.0.0.1");
    assert_eq!(moved.previous.as_deref(), Some(fp(1).as_str()));
    assert_eq!(moved.state, LocationState::Current);
}

#[tokio::test]
async fn hostile_inventory_queries_are_refused_with_codes() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let a = h.enroll_ok(&t.token, "bot-a").await;
    for (path, status, code) in [
        (
            "/v1/admin/certs/not-a-fingerprint",
            422,
            ErrorCode::InvalidField,
        ),
        ("/v1/admin/certs/sha256:abc", 422, ErrorCode::InvalidField),
        (
            "/v1/admin/certs/sha1:0000000000000000000000000000000000000000",
            422,
            ErrorCode::InvalidField,
        ),
        (
            "/v1/admin/certs?expiring=soon",
            422,
            ErrorCode::InvalidField,
        ),
        ("/v1/admin/certs?expiring=-1d", 422, ErrorCode::InvalidField),
        (
            "/v1/admin/certs?expiring=99999999999999999999d",
            422,
            ErrorCode::InvalidField,
        ),
        (
            "/v1/admin/certs?verdict=x%27%20OR%20%271%27%3D%271",
            422,
            ErrorCode::InvalidField,
        ),
        ("/v1/admin/certs?limit=0", 422, ErrorCode::InvalidField),
        (
            "/v1/admin/certs?after=yesterday",
            400,
            ErrorCode::InvalidCursor,
        ),
    ] {
        let e = h.client.get(path, Some(&h.admin)).await.error(status, code);
        assert!(!e.message.is_empty(), "{path}");
    }
    let missing = format!("/v1/admin/certs/{}", fp(7));
    let e = h
        .client
        .get(&missing, Some(&h.admin))
        .await
        .error(404, ErrorCode::NotFound);
    assert!(e.message.contains(&fp(7)), "{}", e.message);
    // An agent's credential does not read the inventory.
    h.client
        .get("/v1/admin/certs", Some(&a.credential))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    // Results an agent made up are skipped, not stored, not fatal.
    let _: CheckinResponse = h.checkin(&a.credential).await.ok();
    let mut bad = tls("10.0.0.9", None, 3, tether_wire::Clock::now(&h.clock), &[]);
    bad["chain"]["certs"][0]["fingerprint"] = json!("sha256:'; DROP TABLE certs; --");
    discover(
        &h,
        a.agent_id,
        &a.credential,
        &[json!([bad, {"ip": "nowhere", "port": 443}, 7, "text"])],
    )
    .await;
    assert!(list(&h, "").await.is_empty());
}

#[tokio::test]
async fn gone_waits_for_a_completed_scan_and_times_are_the_probes() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let a = h.enroll_ok(&t.token, "bot-a").await;
    let cred = a.credential.as_str();
    let _: CheckinResponse = h.checkin(cred).await.ok();
    let now = tether_wire::Clock::now(&h.clock);
    let later = now + time::Duration::days(400);
    let state = async |addr: &str| {
        let d = show(&h, &fp(1)).await;
        let l = d
            .seen_at
            .iter()
            .find(|l| l.address == addr)
            .unwrap_or_else(|| panic!("{addr} in {:?}", d.seen_at))
            .clone();
        (l.state, l.state_since, l.first_seen, l.last_seen)
    };

    // The task is created now; the agent probes 50 minutes later and its
    // results arrive 10 minutes after that: first and last seen are the
    // probe's time (the wire's whole seconds).
    let mut first = Attempt::start(&h, a.agent_id, cred).await;
    h.clock.advance(time::Duration::hours(1));
    let probed = (now + time::Duration::minutes(50))
        .replace_nanosecond(0)
        .expect("whole seconds");
    let mut seen = tls("10.0.0.1", None, 1, later, &[]);
    seen["observed_at"] = json!(rfc(probed));
    let mut seen2 = tls("10.0.0.2", None, 1, later, &[]);
    seen2["observed_at"] = json!(rfc(probed));
    first.chunk(&h, cred, json!([seen, seen2])).await;
    first.end(&h, cred, "ok").await;
    let (st, _, first_seen, last_seen) = state("10.0.0.1:443").await;
    assert_eq!(
        (st, first_seen, last_seen),
        (LocationState::Current, probed, probed)
    );
    assert_eq!(show(&h, &fp(1)).await.info.first_seen, probed);

    // A scan whose chunk finds 10.0.0.1 refused and 10.0.0.2 silent: nothing
    // is gone while that scan runs, nor when it fails.
    h.clock.advance(time::Duration::hours(1));
    let mut failing = Attempt::start(&h, a.agent_id, cred).await;
    failing
        .chunk(
            &h,
            cred,
            json!([refused("10.0.0.1", None), filtered("10.0.0.2", None)]),
        )
        .await;
    assert_eq!(state("10.0.0.1:443").await.0, LocationState::Current);
    failing.end(&h, cred, "failed").await;
    assert_eq!(state("10.0.0.1:443").await.0, LocationState::Current);
    assert_eq!(state("10.0.0.2:443").await.0, LocationState::Current);

    // The same findings from a scan that completes: refused is gone at once
    // (since the arrival time: this agent sent no probe time), silent once
    // is not.
    h.clock.advance(time::Duration::hours(1));
    let arrival = tether_wire::Clock::now(&h.clock);
    let mut done = Attempt::start(&h, a.agent_id, cred).await;
    done.chunk(
        &h,
        cred,
        json!([refused("10.0.0.1", None), filtered("10.0.0.2", None)]),
    )
    .await;
    assert_eq!(state("10.0.0.1:443").await.0, LocationState::Current);
    done.end(&h, cred, "ok").await;
    let (st, since, _, _) = state("10.0.0.1:443").await;
    assert_eq!((st, since), (LocationState::Gone, Some(arrival)));
    assert_eq!(
        state("10.0.0.2:443").await.0,
        LocationState::Current,
        "filtered in one completed scan is not gone"
    );

    // Silent in a second completed scan in a row: gone.
    h.clock.advance(time::Duration::hours(1));
    let arrival = tether_wire::Clock::now(&h.clock);
    let mut again = Attempt::start(&h, a.agent_id, cred).await;
    again
        .chunk(&h, cred, json!([filtered("10.0.0.2", None)]))
        .await;
    again.end(&h, cred, "ok").await;
    let (st, since, _, _) = state("10.0.0.2:443").await;
    assert_eq!((st, since), (LocationState::Gone, Some(arrival)));
}
