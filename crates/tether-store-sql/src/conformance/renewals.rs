//! The renewal story: one open renewal per certificate however often it is
//! inserted, compare-and-set writes, tasks that lead back to their renewal,
//! one issuance per renewal task, candidates that exclude renewed and
//! replaced certificates, and policies per scope.

use std::sync::Arc;

use tether_store::{IssueClaim, Renewal, RenewalLocation};
use tether_wire::{ErrorCode, IssuedCert, RenewalPolicy, RenewalState};
use uuid::Uuid;

use super::{Fixture, t};

fn fp(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

async fn issued(f: &Fixture, n: u8) {
    let cert = IssuedCert {
        fingerprint: fp(n),
        serial: format!("{n:02x}"),
        names: vec!["web.example".into()],
        not_before: t(0),
        not_after: t(90 * 86_400),
        issued_at: t(0),
        task_id: None,
        agent_id: None,
        issuer: None,
        renewal_window: None,
    };
    f.store.record_issued(&cert, "pem").await.expect("records");
}

pub async fn one_open_renewal_per_cert_and_writes_are_compare_and_set(f: Fixture) {
    let s = &f.store;
    let p = RenewalPolicy::default();
    // A burst of inserts of the same certificate's renewal keeps one.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(s);
        let r = Renewal::due(&fp(1), &p, false, t(0));
        handles.push(tokio::spawn(async move { store.insert_renewal(&r).await }));
    }
    let mut won = 0;
    for h in handles {
        if h.await.expect("joins").expect("inserts or conflicts") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one renewal is open per certificate");
    let open = s.due_renewals(t(0), 10).await.expect("lists");
    assert_eq!(open.len(), 1);
    let r = open[0].clone();
    assert_eq!((r.state, r.version), (RenewalState::Due, 0));
    assert_eq!(s.renewal(r.id).await.expect("reads"), Some(r.clone()));

    // An attempt with two tasks; a stale version is refused.
    let mut started = r.clone();
    started.state = RenewalState::Issuing;
    started.attempt = 1;
    started.locations = 2;
    started.tasks = vec![Uuid::new_v4(), Uuid::new_v4()];
    started.reason = "attempt 1 — \u{1b}[31m'; DROP TABLE cert_renewals; --".into();
    assert!(s.update_renewal(&started).await.expect("writes"));
    assert!(
        !s.update_renewal(&started).await.expect("refuses"),
        "stale version"
    );
    let stored = s.renewal(r.id).await.expect("reads").expect("exists");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.reason, started.reason);
    assert_eq!(stored.tasks, started.tasks);
    for task in &started.tasks {
        let of = s
            .renewal_of_task(*task)
            .await
            .expect("reads")
            .expect("found");
        assert_eq!(of.id, r.id);
    }
    assert!(
        s.renewal_of_task(Uuid::new_v4())
            .await
            .expect("reads")
            .is_none()
    );

    // Failed with a code, then verified: the certificate may get a new
    // renewal only once this one is closed.
    let failed = stored.fail(
        ErrorCode::RenewalAgentInactive,
        "bot Inactive".into(),
        false,
        t(10),
    );
    assert!(s.update_renewal(&failed).await.expect("writes"));
    let stored = s.renewal(r.id).await.expect("reads").expect("exists");
    assert_eq!(stored.reason_code, Some(ErrorCode::RenewalAgentInactive));
    assert_eq!(stored.next_attempt_at, failed.next_attempt_at);
    assert!(
        !s.insert_renewal(&Renewal::due(&fp(1), &p, true, t(20)))
            .await
            .expect("conflicts"),
        "a failed renewal is still open"
    );
    let mut verified = stored.clone();
    verified.state = RenewalState::Verified;
    verified.new_fingerprint = Some(fp(2));
    assert!(s.update_renewal(&verified).await.expect("writes"));
    assert!(
        s.due_renewals(t(365 * 86_400), 10)
            .await
            .expect("lists")
            .is_empty()
    );
    assert!(
        s.insert_renewal(&Renewal::due(&fp(1), &p, true, t(30)))
            .await
            .expect("inserts")
    );
    let of = s.renewals_of(&fp(1)).await.expect("lists");
    assert_eq!(of.len(), 2);
    assert_eq!(of[0].created_at, t(30), "newest first");
    assert_eq!(s.list_renewals(1).await.expect("lists").len(), 1);
}

/// The scheduler's read: only renewals whose time has come (due now, an
/// attempt under way, a failure whose back-off ended), filtered in SQL on
/// `wake_at` with an index; never verified ones nor failures backing off.
pub async fn the_scheduler_reads_only_due_renewals(f: Fixture) {
    let s = &f.store;
    let p = RenewalPolicy::default();
    let insert = |n: u8, at: i64| Renewal::due(&fp(n), &p, false, t(at));
    // Due now.
    let due = insert(1, 0);
    assert!(s.insert_renewal(&due).await.expect("inserts"));
    // Due only in an hour (a forced renewal is due at once; this one is a
    // renewal written with its next attempt later, as after a restart).
    let mut later = insert(2, 0);
    later.next_attempt_at = Some(t(3600));
    assert!(s.insert_renewal(&later).await.expect("inserts"));
    // An attempt under way: looked at every tick.
    let running = insert(3, 0);
    assert!(s.insert_renewal(&running).await.expect("inserts"));
    let mut issuing = running.clone();
    issuing.state = RenewalState::Issuing;
    issuing.attempt = 1;
    issuing.tasks = vec![Uuid::new_v4()];
    issuing.updated_at = t(5);
    assert!(s.update_renewal(&issuing).await.expect("writes"));
    // Failed, backing off for 5 minutes from t(10).
    let failing = insert(4, 0);
    assert!(s.insert_renewal(&failing).await.expect("inserts"));
    let failed = failing.fail(
        ErrorCode::RenewalAgentInactive,
        "bot Inactive".into(),
        false,
        t(10),
    );
    assert!(s.update_renewal(&failed).await.expect("writes"));
    // Verified: closed, never read again.
    let closing = insert(5, 0);
    assert!(s.insert_renewal(&closing).await.expect("inserts"));
    let mut verified = closing.clone();
    verified.state = RenewalState::Verified;
    verified.new_fingerprint = Some(fp(6));
    assert!(s.update_renewal(&verified).await.expect("writes"));

    let ids = |v: Vec<Renewal>| v.into_iter().map(|r| r.fingerprint).collect::<Vec<_>>();
    assert_eq!(
        ids(s.due_renewals(t(20), 100).await.expect("lists")),
        vec![fp(1), fp(3)],
        "due now and under way, earliest first"
    );
    assert_eq!(
        ids(s.due_renewals(t(20 + 300), 100).await.expect("lists")),
        vec![fp(1), fp(3), fp(4)],
        "the failure once its back-off ended"
    );
    assert_eq!(
        ids(s.due_renewals(t(3600), 100).await.expect("lists")),
        vec![fp(1), fp(3), fp(4), fp(2)]
    );
    assert_eq!(
        ids(s.due_renewals(t(3600), 2).await.expect("lists")),
        vec![fp(1), fp(3)],
        "bounded"
    );
    // What the store keeps is the state machine's answer, for every row.
    for r in s.list_renewals(100).await.expect("lists") {
        let stored = f
            .raw
            .fetch_text(&format!(
                "SELECT CAST(wake_at AS TEXT) FROM cert_renewals WHERE id = '{}'",
                r.id
            ))
            .await
            .expect("reads");
        assert_eq!(
            stored.and_then(|v| v.parse::<i64>().ok()),
            r.wake_at()
                .and_then(|w| i64::try_from(w.unix_timestamp_nanos() / 1_000_000).ok()),
            "wake_at of {}",
            r.fingerprint
        );
    }
}

pub async fn a_renewal_task_is_issued_once(f: Fixture) {
    let s = &f.store;
    let mut r = Renewal::due(&fp(3), &RenewalPolicy::default(), false, t(0));
    assert!(s.insert_renewal(&r).await.expect("inserts"));
    r.state = RenewalState::Issuing;
    r.attempt = 1;
    r.locations = 1;
    let task = Uuid::new_v4();
    r.tasks = vec![task];
    assert!(s.update_renewal(&r).await.expect("writes"));

    assert_eq!(s.renewal_task_issued(task).await.expect("reads"), None);
    assert_eq!(
        s.claim_renewal_issue(task, "csr-a").await.expect("claims"),
        IssueClaim::Claimed
    );
    assert_eq!(
        s.claim_renewal_issue(task, "csr-a").await.expect("claims"),
        IssueClaim::InFlight
    );
    assert_eq!(
        s.claim_renewal_issue(task, "csr-b").await.expect("claims"),
        IssueClaim::Refused
    );
    // Signing failed: the claim is given back, and another request may win.
    s.release_renewal_issue(task).await.expect("releases");
    assert_eq!(
        s.claim_renewal_issue(task, "csr-b").await.expect("claims"),
        IssueClaim::Claimed
    );
    s.complete_renewal_issue(task, &fp(4), "cert", "chain")
        .await
        .expect("completes");
    s.release_renewal_issue(task)
        .await
        .expect("a completed claim stays");
    assert_eq!(
        s.claim_renewal_issue(task, "csr-b").await.expect("claims"),
        IssueClaim::Issued {
            fingerprint: fp(4),
            cert_pem: "cert".into(),
            chain_pem: "chain".into()
        },
        "a retried call gets the same certificate"
    );
    assert_eq!(
        s.claim_renewal_issue(task, "csr-c").await.expect("claims"),
        IssueClaim::Refused
    );
    assert_eq!(
        s.renewal_task_issued(task).await.expect("reads"),
        Some(fp(4))
    );
    assert!(
        s.claim_renewal_issue(Uuid::new_v4(), "csr").await.is_err(),
        "a task of no renewal cannot claim"
    );
}

pub async fn renewal_candidates_and_policies(f: Fixture) {
    let s = &f.store;
    for n in [5, 6, 7] {
        issued(&f, n).await;
    }
    let agent = Uuid::new_v4();
    let loc = |n: u8| RenewalLocation {
        fingerprint: fp(n),
        task_id: Uuid::new_v4(),
        agent_id: agent,
        spec: r#"{"names":["web.example"]}"#.into(),
        at: t(1),
    };
    let l5 = loc(5);
    s.record_renewal_location(&l5).await.expect("records");
    s.record_renewal_location(&l5).await.expect("idempotent");
    s.record_renewal_location(&loc(6)).await.expect("records");
    assert_eq!(s.renewal_locations(&fp(5)).await.expect("lists"), [l5]);
    // 7 has no location: it is nowhere to renew.
    let all: Vec<String> = s
        .renewal_candidates(None, 10)
        .await
        .expect("lists")
        .into_iter()
        .map(|c| c.fingerprint)
        .collect();
    assert_eq!(all, [fp(5), fp(6)]);
    let page = s.renewal_candidates(Some(&fp(5)), 10).await.expect("pages");
    assert_eq!(page.len(), 1);
    assert_eq!(
        (page[0].not_before, page[0].not_after),
        (t(0), t(90 * 86_400))
    );
    // A certificate with a renewal is no longer a candidate.
    assert!(
        s.insert_renewal(&Renewal::due(
            &fp(5),
            &RenewalPolicy::default(),
            false,
            t(2)
        ))
        .await
        .expect("inserts")
    );
    let left = s.renewal_candidates(None, 10).await.expect("lists");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].fingerprint, fp(6));

    assert_eq!(s.renewal_policy("default").await.expect("reads"), None);
    s.set_renewal_policy("default", "{\"a\":1}", t(0))
        .await
        .expect("sets");
    s.set_renewal_policy("default", "{\"a\":2}", t(1))
        .await
        .expect("replaces");
    s.set_renewal_policy(&format!("cert:{}", fp(5)), "{}", t(1))
        .await
        .expect("sets");
    assert_eq!(
        s.renewal_policy("default").await.expect("reads").as_deref(),
        Some("{\"a\":2}")
    );
    assert_eq!(s.renewal_policy("group:x").await.expect("reads"), None);
}
