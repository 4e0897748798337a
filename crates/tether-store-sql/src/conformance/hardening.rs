//! The story of the server's own housekeeping: named and revocable admin
//! credentials, keyset paging that reaches every row, the control plane's
//! outages (and the grace they give), retention, and durable writes.

use std::collections::BTreeSet;

use tether_store::{
    AgentFilter, Cursor, NewAdminCredential, NewBundle, NewOutage, Replaced, StatusChange,
};
use tether_wire::{ActionKind, ActionResult, AgentStatus, OutageKind};
use uuid::Uuid;

use super::{
    Fixture, agent, assert_conflict, assert_not_found, checkin, enroll_at, insert_token, secret, t,
};

fn credential(name: &str, bootstrap: Option<&str>, at_secs: i64) -> NewAdminCredential {
    NewAdminCredential {
        id: Uuid::new_v4(),
        hash: secret(),
        name: name.to_owned(),
        bootstrap_instance: bootstrap.map(str::to_owned),
        created_at: t(at_secs),
    }
}

pub async fn admin_credentials_are_named_revoked_and_rotated(f: Fixture) {
    let s = &*f.store;
    let boot = credential("bootstrap", Some("server-a"), 0);
    let created = s.create_admin_credential(&boot).await.expect("creates");
    assert_eq!(
        (created.id, created.name.as_str(), created.revoked_at),
        (boot.id, "bootstrap", None)
    );
    assert_eq!(created.bootstrap_instance.as_deref(), Some("server-a"));
    assert_eq!(created.created_at, t(0));
    let ci = credential("ci", None, 1);
    s.create_admin_credential(&ci).await.expect("creates");
    assert_conflict(
        s.create_admin_credential(&NewAdminCredential {
            id: Uuid::new_v4(),
            ..ci.clone()
        })
        .await,
        "the same secret twice",
    );
    let by_hash = s
        .admin_credential_by_hash(&ci.hash)
        .await
        .expect("reads")
        .expect("found");
    assert_eq!((by_hash.id, by_hash.bootstrap_instance), (ci.id, None));
    assert!(
        s.admin_credential_by_hash(&secret())
            .await
            .expect("reads")
            .is_none()
    );
    assert_eq!(s.admin_credential_count().await.expect("counts"), 2);

    // Revocation takes effect at once, keeps its first time, and is listed.
    let revoked = s
        .revoke_admin_credential(ci.id, t(10))
        .await
        .expect("revokes");
    assert_eq!(revoked.revoked_at, Some(t(10)));
    assert!(!s.admin_credential_valid(&ci.hash).await.expect("reads"));
    assert_eq!(s.admin_credential_count().await.expect("counts"), 1);
    let again = s
        .revoke_admin_credential(ci.id, t(20))
        .await
        .expect("revoking twice is fine");
    assert_eq!(again.revoked_at, Some(t(10)), "the first time stands");
    assert_not_found(
        s.revoke_admin_credential(Uuid::new_v4(), t(20)).await,
        "revoking an unknown credential",
    );

    // The last credential that works cannot be revoked.
    assert_conflict(
        s.revoke_admin_credential(boot.id, t(30)).await,
        "revoking the last credential",
    );
    assert!(s.admin_credential_valid(&boot.hash).await.expect("reads"));

    // Rotation: the old one stops, the new one works, in one step.
    let rotated = credential("bootstrap", Some("server-a"), 40);
    let (new, n) = s
        .replace_admin_credential(&Replaced::Id(boot.id), &rotated, t(40))
        .await
        .expect("rotates");
    assert_eq!((new.id, n), (rotated.id, 1));
    assert!(!s.admin_credential_valid(&boot.hash).await.expect("reads"));
    assert!(
        s.admin_credential_valid(&rotated.hash)
            .await
            .expect("reads")
    );
    assert_not_found(
        s.replace_admin_credential(&Replaced::Id(boot.id), &credential("x", None, 41), t(41))
            .await,
        "rotating a revoked credential",
    );

    // A new bootstrap credential revokes every bootstrap credential of the
    // instances named, and only those.
    let other_server = credential("bootstrap", Some("server-b"), 50);
    s.create_admin_credential(&other_server)
        .await
        .expect("creates");
    let legacy = credential("bootstrap", Some("legacy"), 51);
    s.create_admin_credential(&legacy).await.expect("creates");
    let fresh = credential("bootstrap", Some("server-a"), 60);
    let (_, n) = s
        .replace_admin_credential(
            &Replaced::BootstrapOf(vec!["server-a".into(), "legacy".into()]),
            &fresh,
            t(60),
        )
        .await
        .expect("replaces");
    assert_eq!(n, 2, "server-a's rotated credential and the legacy one");
    assert!(
        !s.admin_credential_valid(&rotated.hash)
            .await
            .expect("reads")
    );
    assert!(!s.admin_credential_valid(&legacy.hash).await.expect("reads"));
    assert!(
        s.admin_credential_valid(&other_server.hash)
            .await
            .expect("reads"),
        "another server's bootstrap credential is untouched"
    );
    assert!(s.admin_credential_valid(&fresh.hash).await.expect("reads"));

    let all = s.list_admin_credentials(None, 100).await.expect("lists");
    let names: Vec<(&str, bool)> = all
        .iter()
        .map(|c| (c.name.as_str(), c.revoked_at.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            ("bootstrap", true),
            ("ci", true),
            ("bootstrap", true),
            ("bootstrap", false),
            ("bootstrap", true),
            ("bootstrap", false),
        ],
        "oldest first, revoked ones included"
    );
}

pub async fn concurrent_revocations_leave_one_admin_credential(f: Fixture) {
    let s = f.store.clone();
    let mut ids = Vec::new();
    for i in 0..4 {
        let c = credential(&format!("c{i}"), None, i);
        s.create_admin_credential(&c).await.expect("creates");
        ids.push(c.id);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let s = s.clone();
            tokio::spawn(async move { s.revoke_admin_credential(id, t(100)).await })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        if task.await.expect("joins").is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 1, "exactly one revocation is refused");
    assert_eq!(s.admin_credential_count().await.expect("counts"), 1);
}

/// Follows every page of `list` from the start.
async fn all_pages<T, F, Fut>(page: u32, key: impl Fn(&T) -> Cursor, list: F) -> Vec<T>
where
    F: Fn(Option<Cursor>, u32) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let rows = list(after, page).await;
        assert!(
            rows.len() <= page as usize,
            "a page holds at most the limit"
        );
        let full = rows.len() == page as usize;
        after = rows.last().map(&key);
        out.extend(rows);
        if !full {
            return out;
        }
    }
}

pub async fn agent_pages_reach_every_agent(f: Fixture) {
    let s = f.store.clone();
    // Agents enrolled at the same instant are told apart by their id.
    let mut groups = std::collections::BTreeMap::new();
    let mut ids = BTreeSet::new();
    for i in 0..23 {
        let token = insert_token(&*s, None).await;
        let mut e = super::enrollment(&token, t(i / 3));
        if i % 2 == 0 {
            e.group = "even".to_owned();
        }
        let a = s.enroll(&e).await.expect("enrolls");
        groups.insert(a.id, e.group.clone());
        ids.insert(a.id);
        if i % 5 == 0 {
            s.record_checkin(&StatusChangeCheckin::active(a.id, t(100)))
                .await
                .expect("checks in");
        }
    }
    let removed = *ids.iter().next().expect("an agent");
    s.remove_agent(removed, t(200)).await.expect("removes");
    ids.remove(&removed);

    let key = |a: &tether_store::AgentRecord| Cursor {
        at: a.enrolled_at,
        id: a.id,
    };
    let everyone = all_pages(4, key, |after, limit| {
        let s = s.clone();
        async move {
            s.list_agents_page(&AgentFilter::default(), after.as_ref(), limit)
                .await
                .expect("lists")
        }
    })
    .await;
    let seen: Vec<_> = everyone.iter().map(|a| a.id).collect();
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        ids,
        "every agent but the removed one, once"
    );
    assert_eq!(seen.len(), ids.len(), "no agent twice");
    assert!(
        everyone
            .windows(2)
            .all(|w| (w[0].enrolled_at, w[0].id) < (w[1].enrolled_at, w[1].id)),
        "oldest enrollment first, then by id"
    );

    let even = AgentFilter {
        group: Some("even".to_owned()),
        ..AgentFilter::default()
    };
    let evens = all_pages(3, key, |after, limit| {
        let (s, even) = (s.clone(), even.clone());
        async move {
            s.list_agents_page(&even, after.as_ref(), limit)
                .await
                .expect("lists")
        }
    })
    .await;
    let expected: BTreeSet<_> = ids
        .iter()
        .filter(|id| groups[id] == "even")
        .copied()
        .collect();
    assert_eq!(
        evens.iter().map(|a| a.id).collect::<BTreeSet<_>>(),
        expected
    );

    let active = AgentFilter {
        status: Some(AgentStatus::Active),
        group: Some("even".to_owned()),
    };
    let both = s.list_agents_page(&active, None, 100).await.expect("lists");
    assert!(!both.is_empty());
    assert!(
        both.iter()
            .all(|a| a.status == AgentStatus::Active && a.group == "even")
    );
    let statused = s
        .list_agents_page(
            &AgentFilter {
                status: Some(AgentStatus::Pending),
                group: None,
            },
            None,
            100,
        )
        .await
        .expect("lists");
    assert!(statused.iter().all(|a| a.status == AgentStatus::Pending));
    assert_eq!(
        statused.len()
            + s.list_agents_page(
                &AgentFilter {
                    status: Some(AgentStatus::Active),
                    group: None,
                },
                None,
                100,
            )
            .await
            .expect("lists")
            .len(),
        ids.len()
    );
}

/// A check-in that makes an agent Active.
struct StatusChangeCheckin;

impl StatusChangeCheckin {
    fn active(id: Uuid, at: time::OffsetDateTime) -> tether_store::Checkin {
        let mut c = checkin(id, at);
        c.status_change = Some(StatusChange {
            from: AgentStatus::Pending,
            to: AgentStatus::Active,
            reason: "first check-in".to_owned(),
        });
        c
    }
}

pub async fn token_and_credential_pages_reach_every_row(f: Fixture) {
    let s = f.store.clone();
    let mut tokens = BTreeSet::new();
    for _ in 0..7 {
        tokens.insert(insert_token(&*s, None).await.id);
    }
    let listed = all_pages(
        3,
        |t: &tether_store::TokenRecord| Cursor {
            at: t.created_at,
            id: t.id,
        },
        |after, limit| {
            let s = s.clone();
            async move {
                s.list_tokens_page(after.as_ref(), limit)
                    .await
                    .expect("lists")
            }
        },
    )
    .await;
    assert_eq!(listed.len(), 7);
    assert_eq!(listed.iter().map(|t| t.id).collect::<BTreeSet<_>>(), tokens);

    let mut creds = BTreeSet::new();
    for i in 0..5 {
        let c = credential(&format!("c{i}"), None, i % 2);
        s.create_admin_credential(&c).await.expect("creates");
        creds.insert(c.id);
    }
    let listed = all_pages(
        2,
        |c: &tether_store::AdminCredentialRecord| Cursor {
            at: c.created_at,
            id: c.id,
        },
        |after, limit| {
            let s = s.clone();
            async move {
                s.list_admin_credentials(after.as_ref(), limit)
                    .await
                    .expect("lists")
            }
        },
    )
    .await;
    assert_eq!(listed.iter().map(|c| c.id).collect::<BTreeSet<_>>(), creds);
    assert_eq!(listed.len(), 5);
}

pub async fn heartbeats_return_the_previous_time(f: Fixture) {
    let s = &*f.store;
    assert_eq!(s.heartbeat("a", t(0)).await.expect("beats"), None);
    assert_eq!(s.heartbeat("a", t(5)).await.expect("beats"), Some(t(0)));
    assert_eq!(s.heartbeat("b", t(6)).await.expect("beats"), None);
    assert_eq!(s.heartbeat("a", t(9)).await.expect("beats"), Some(t(5)));
}

pub async fn outages_give_active_agents_a_full_threshold(f: Fixture) {
    let s = &*f.store;
    // Active, deadline soon (t(10) + 90 s); Active, deadline far away;
    // Pending; Inactive.
    let (soon, _) = enroll_at(s, t(0)).await;
    s.record_checkin(&StatusChangeCheckin::active(soon.id, t(10)))
        .await
        .expect("checks in");
    // Its check-in was recorded later than the outage's end (another
    // server of the same store heard it), so its deadline is later anyway.
    let (far, _) = enroll_at(s, t(1)).await;
    s.record_checkin(&StatusChangeCheckin::active(far.id, t(320)))
        .await
        .expect("checks in");
    let (pending, _) = enroll_at(s, t(2)).await;
    let (gone, _) = enroll_at(s, t(3)).await;
    s.record_checkin(&StatusChangeCheckin::active(gone.id, t(10)))
        .await
        .expect("checks in");
    s.change_status(
        gone.id,
        &StatusChange {
            from: AgentStatus::Active,
            to: AgentStatus::Inactive,
            reason: "silent".into(),
        },
        t(200),
    )
    .await
    .expect("changes");

    let recorded = s
        .record_outage(&NewOutage {
            id: Uuid::new_v4(),
            kind: OutageKind::Restart,
            instance: "server-a".into(),
            started_at: t(50),
            ended_at: t(300),
        })
        .await
        .expect("records");
    assert_eq!(recorded.agents_given_grace, 1, "only the agent due soon");
    assert_eq!(
        agent(s, soon.id).await.deadline_at,
        Some(t(300 + 90)),
        "a full threshold from the end of the outage"
    );
    assert_eq!(
        agent(s, far.id).await.deadline_at,
        Some(t(320 + 90)),
        "a later deadline is kept"
    );
    assert_eq!(agent(s, pending.id).await.deadline_at, None);
    assert_eq!(
        agent(s, gone.id).await.deadline_at,
        Some(t(100)),
        "an Inactive agent stays as it was"
    );
    let overdue = s.overdue_agents(t(350), 10).await.expect("reads");
    assert!(
        overdue.is_empty(),
        "nobody is overdue within the new threshold: {overdue:?}"
    );
    let overdue = s.overdue_agents(t(391), 10).await.expect("reads");
    assert_eq!(
        overdue.iter().map(|o| o.id).collect::<Vec<_>>(),
        [soon.id],
        "overdue again once the threshold from the outage passed"
    );

    s.record_outage(&NewOutage {
        id: Uuid::new_v4(),
        kind: OutageKind::Store,
        instance: "server-a".into(),
        started_at: t(400),
        ended_at: t(420),
    })
    .await
    .expect("records");
    let listed = s.outages(t(0), 10).await.expect("lists");
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.kind, o.started_at, o.ended_at))
            .collect::<Vec<_>>(),
        [
            (OutageKind::Store, t(400), t(420)),
            (OutageKind::Restart, t(50), t(300))
        ],
        "newest first"
    );
    assert_eq!(s.outages(t(310), 10).await.expect("lists").len(), 1);
    assert_eq!(s.outages(t(0), 1).await.expect("lists").len(), 1);
}

pub async fn retention_prunes_old_rows_but_keeps_each_agents_newest_transition(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    s.record_checkin(&StatusChangeCheckin::active(a.id, t(10)))
        .await
        .expect("checks in");
    s.record_shutdown(a.id, "bye", t(20)).await.expect("stops");
    let (quiet, _) = enroll_at(s, t(1)).await;
    assert_eq!(s.transitions(a.id, 10).await.expect("reads").len(), 3);

    let deleted = s.prune_transitions(t(1000), 100).await.expect("prunes");
    assert_eq!(deleted, 2, "all but each agent's newest");
    let left = s.transitions(a.id, 10).await.expect("reads");
    assert_eq!(
        left.iter().map(|t| t.to).collect::<Vec<_>>(),
        [AgentStatus::Stopped]
    );
    assert_eq!(s.transitions(quiet.id, 10).await.expect("reads").len(), 1);
    assert_eq!(s.prune_transitions(t(1000), 100).await.expect("prunes"), 0);

    // Bounded: at most `limit` rows per call.
    let (b, _) = enroll_at(s, t(2)).await;
    for i in 0..4 {
        s.record_checkin(&StatusChangeCheckin::active(b.id, t(30 + i)))
            .await
            .expect("checks in");
        s.change_status(
            b.id,
            &StatusChange {
                from: AgentStatus::Active,
                to: AgentStatus::Pending,
                reason: "test".into(),
            },
            t(31 + i),
        )
        .await
        .expect("changes");
    }
    // Nine transitions: t(2), then Active at t(30..=33) and Pending at
    // t(31..=34). The first call takes the three oldest, the second those
    // before t(33) that are left.
    assert_eq!(s.prune_transitions(t(1000), 3).await.expect("prunes"), 3);
    assert_eq!(s.prune_transitions(t(33), 100).await.expect("prunes"), 3);
    assert_eq!(s.transitions(b.id, 20).await.expect("reads").len(), 3);

    // Completed actions go; queued and delivered ones stay.
    let done = Uuid::new_v4();
    s.queue_action(done, a.id, &ActionKind::Doctor { upload: false }, t(40))
        .await
        .expect("queues");
    s.take_actions(a.id, t(41), 10).await.expect("delivers");
    s.complete_action(
        a.id,
        done,
        &ActionResult {
            ok: true,
            message: "fine".into(),
            doctor: None,
        },
        t(42),
    )
    .await
    .expect("completes");
    let delivered = Uuid::new_v4();
    s.queue_action(
        delivered,
        a.id,
        &ActionKind::Doctor { upload: false },
        t(43),
    )
    .await
    .expect("queues");
    s.take_actions(a.id, t(44), 10).await.expect("delivers");
    let queued = Uuid::new_v4();
    s.queue_action(queued, a.id, &ActionKind::Doctor { upload: false }, t(45))
        .await
        .expect("queues");
    assert_eq!(
        s.prune_completed_actions(t(42), 100).await.expect("prunes"),
        0,
        "completed at t(42) is not before t(42)"
    );
    assert_eq!(
        s.prune_completed_actions(t(1000), 100)
            .await
            .expect("prunes"),
        1
    );
    let ids: BTreeSet<_> = s
        .list_actions(a.id, 10)
        .await
        .expect("lists")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, BTreeSet::from([delivered, queued]));

    for (i, end) in [100, 200, 300].into_iter().enumerate() {
        s.record_outage(&NewOutage {
            id: Uuid::new_v4(),
            kind: OutageKind::Store,
            instance: format!("s{i}"),
            started_at: t(end - 10),
            ended_at: t(end),
        })
        .await
        .expect("records");
    }
    assert_eq!(s.prune_outages(t(250), 100).await.expect("prunes"), 2);
    assert_eq!(s.outages(t(0), 10).await.expect("lists").len(), 1);
}

pub async fn bundle_info_comes_without_its_bytes(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let id = Uuid::new_v4();
    s.insert_bundle(
        &NewBundle {
            id,
            agent_id: a.id,
            data: vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
            sha256: "ab".repeat(32),
            verdict: None,
            at: t(5),
        },
        10,
    )
    .await
    .expect("stores");
    let info = s.bundle_info(id).await.expect("reads").expect("found");
    assert_eq!(
        (info.id, info.agent_id, info.size_bytes, info.created_at),
        (id, a.id, 7, t(5))
    );
    assert!(
        s.bundle_info(Uuid::new_v4())
            .await
            .expect("reads")
            .is_none()
    );
}

/// Two admin credentials written the way servers before migration 0005 did:
/// the bootstrap one (hash 0x01…) and one an operator added (hash 0x02…).
pub fn pre_hardening_rows(dialect: &str) -> String {
    let hash = |byte: &str| match dialect {
        "postgres" => format!("decode('{}', 'hex')", byte.repeat(32)),
        _ => format!("X'{}'", byte.repeat(32)),
    };
    format!(
        "INSERT INTO admin_credentials (hash, label, created_at) VALUES \
         ({}, 'bootstrap (admin.token)', 1000), ({}, 'ci', 2000);",
        hash("01"),
        hash("02")
    )
}

/// After migration 0005, both credentials from [`pre_hardening_rows`] still
/// work, have ids and names, and the bootstrap one is marked as a legacy
/// bootstrap credential (the next new admin.token revokes it).
pub async fn upgraded_from_0004_keeps_admin_credentials(f: Fixture) {
    let s = &*f.store;
    for byte in [1_u8, 2] {
        assert!(
            s.admin_credential_valid(&[byte; 32]).await.expect("reads"),
            "credential {byte:#04x} still opens the admin API"
        );
    }
    let listed = s.list_admin_credentials(None, 10).await.expect("lists");
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.name.as_str(), c.bootstrap_instance.as_deref()))
            .collect::<Vec<_>>(),
        [("bootstrap", Some("legacy")), ("ci", None)]
    );
    assert_ne!(listed[0].id, listed[1].id, "each got its own id");
    let fresh = credential("bootstrap", Some("server-a"), 10);
    let (_, n) = s
        .replace_admin_credential(
            &Replaced::BootstrapOf(vec!["server-a".into(), "legacy".into()]),
            &fresh,
            t(10),
        )
        .await
        .expect("replaces");
    assert_eq!(n, 1);
    assert!(!s.admin_credential_valid(&[1; 32]).await.expect("reads"));
    assert!(s.admin_credential_valid(&[2; 32]).await.expect("reads"));
}
