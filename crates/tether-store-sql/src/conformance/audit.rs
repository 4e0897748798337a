//! The admin audit log: entries round-trip as written, list newest first
//! through keyset pages that never skip or repeat a row, filter by actor
//! and by time, and are pruned by age in bounded batches.

use tether_store::{AuditFilter, Cursor, StoreError};
use tether_wire::AuditEntry;
use uuid::Uuid;

use super::{Fixture, t};

fn entry(secs: i64, actor: &str, status: u16) -> AuditEntry {
    AuditEntry {
        id: Uuid::new_v4(),
        at: t(secs),
        actor: actor.to_owned(),
        actor_id: (actor != tether_wire::UNAUTHENTICATED).then(Uuid::new_v4),
        method: "POST".into(),
        route: "/v1/admin/agents/{id}/approve".into(),
        path: format!("/v1/admin/agents/{}/approve", Uuid::nil()),
        target: Some(Uuid::nil().to_string()),
        address: Some("203.0.113.7".into()),
        status,
        code: (status >= 400).then(|| "TETHER-E1001".to_owned()),
    }
}

pub async fn audit_entries_are_paged_newest_first_filtered_and_pruned(f: Fixture) {
    let s = &*f.store;
    assert_eq!(
        s.list_audit(&AuditFilter::default(), None, 10)
            .await
            .expect("lists"),
        vec![],
        "a fresh store has no audit entries"
    );
    // Two at the same millisecond (ordered by id), SQL metacharacters and
    // an entry with every optional field empty.
    let mut written = vec![
        entry(0, "alice", 201),
        entry(10, "bob's; DROP TABLE admin_audit;--", 200),
        entry(10, "alice", 204),
        entry(20, tether_wire::UNAUTHENTICATED, 401),
        AuditEntry {
            target: None,
            address: None,
            code: None,
            actor_id: None,
            ..entry(30, "alice", 200)
        },
    ];
    for e in &written {
        s.record_audit(e).await.expect("records");
    }
    // The same id twice is refused, not a second row.
    match s.record_audit(&written[0]).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("recording an id twice must be Conflict, got {other:?}"),
    }
    written.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));

    // Every page of 2 in turn reaches every row once, newest first.
    let mut seen = Vec::new();
    let mut before: Option<Cursor> = None;
    loop {
        let page = s
            .list_audit(&AuditFilter::default(), before.as_ref(), 2)
            .await
            .expect("lists");
        let Some(last) = page.last() else { break };
        before = Some(Cursor {
            at: last.at,
            id: last.id,
        });
        seen.extend(page);
    }
    assert_eq!(
        seen, written,
        "pages of 2 give every entry once, newest first"
    );

    let alice = s
        .list_audit(
            &AuditFilter {
                actor: Some("alice".into()),
                since: None,
            },
            None,
            10,
        )
        .await
        .expect("lists");
    assert_eq!(alice.len(), 3, "alice's entries only: {alice:?}");
    assert!(alice.iter().all(|e| e.actor == "alice"));
    let odd = s
        .list_audit(
            &AuditFilter {
                actor: Some("bob's; DROP TABLE admin_audit;--".into()),
                since: None,
            },
            None,
            10,
        )
        .await
        .expect("lists");
    assert_eq!(
        odd.len(),
        1,
        "a name with SQL metacharacters is just a name"
    );

    let recent = s
        .list_audit(
            &AuditFilter {
                actor: Some("alice".into()),
                since: Some(t(10)),
            },
            None,
            10,
        )
        .await
        .expect("lists");
    assert_eq!(
        recent.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![t(30), t(10)],
        "since is inclusive and combines with actor"
    );

    // Pruning takes the oldest first, at most `limit` per call.
    assert_eq!(s.prune_audit(t(15), 1).await.expect("prunes"), 1);
    assert_eq!(s.prune_audit(t(15), 100).await.expect("prunes"), 2);
    assert_eq!(s.prune_audit(t(15), 100).await.expect("prunes"), 0);
    let left = s
        .list_audit(&AuditFilter::default(), None, 10)
        .await
        .expect("lists");
    assert_eq!(
        left.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![t(30), t(20)],
        "only entries older than the cut are gone"
    );
}
