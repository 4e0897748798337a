//! The story of actions (queued, delivered once, completed) and escalation
//! bundles (stored with their bytes, listed without them, pruned per agent).

use tether_store::{NewBundle, StoreError};
use tether_wire::{ActionKind, ActionResult, ActionState, DoctorSummary, ErrorCode};
use uuid::Uuid;

use super::{Fixture, agent, assert_conflict, assert_not_found, enroll_at, t};

fn summary(status: &str, at_secs: i64) -> DoctorSummary {
    DoctorSummary {
        status: status.to_owned(),
        code: Some(ErrorCode::ConnectRefused),
        root_cause: "connection refused by 127.0.0.1:1 — nothing listens".to_owned(),
        action: ErrorCode::ConnectRefused.action().to_owned(),
        check: Some("tcp:127.0.0.1:1".to_owned()),
        at: t(at_secs),
        bundle_id: None,
    }
}

pub async fn actions_are_queued_delivered_once_and_completed(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let (other, _) = enroll_at(&*f.store, t(1)).await;
    assert_eq!(
        agent(&*f.store, a.id).await.pending_actions,
        0,
        "a new agent has no actions"
    );

    let first = Uuid::new_v4();
    let queued = f
        .store
        .queue_action(first, a.id, &ActionKind::Doctor { upload: true }, t(10))
        .await
        .expect("queues");
    assert_eq!(queued.state, ActionState::Queued);
    assert_eq!(queued.kind, ActionKind::Doctor { upload: true });
    assert_eq!(queued.created_at, t(10));
    let second = Uuid::new_v4();
    f.store
        .queue_action(second, a.id, &ActionKind::Debug { minutes: 5 }, t(11))
        .await
        .expect("queues");
    assert_eq!(
        agent(&*f.store, a.id).await.pending_actions,
        2,
        "the cheap flag counts queued actions"
    );
    assert_eq!(agent(&*f.store, other.id).await.pending_actions, 0);
    assert_not_found(
        f.store
            .queue_action(
                Uuid::new_v4(),
                Uuid::new_v4(),
                &ActionKind::Doctor { upload: false },
                t(12),
            )
            .await,
        "queueing for an unknown agent",
    );

    // Delivery is oldest first, bounded by the limit, and the flag follows.
    let taken = f.store.take_actions(a.id, t(20), 1).await.expect("takes");
    assert_eq!(taken.iter().map(|x| x.id).collect::<Vec<_>>(), vec![first]);
    assert_eq!(taken[0].state, ActionState::Delivered);
    assert_eq!(taken[0].delivered_at, Some(t(20)));
    assert_eq!(agent(&*f.store, a.id).await.pending_actions, 1);
    let taken = f.store.take_actions(a.id, t(21), 10).await.expect("takes");
    assert_eq!(taken.iter().map(|x| x.id).collect::<Vec<_>>(), vec![second]);
    assert_eq!(agent(&*f.store, a.id).await.pending_actions, 0);
    assert!(
        f.store
            .take_actions(a.id, t(22), 10)
            .await
            .expect("takes")
            .is_empty(),
        "an action is delivered once"
    );

    // Completion: only by its own agent, only once.
    let result = ActionResult {
        ok: true,
        message: "doctor ran; bundle uploaded".to_owned(),
        doctor: Some(summary("failed", 25)),
    };
    assert_not_found(
        f.store
            .complete_action(other.id, first, &result, t(30))
            .await,
        "another agent completing this agent's action",
    );
    assert_eq!(f.store.last_doctor(a.id).await.expect("reads"), None);
    let done = f
        .store
        .complete_action(a.id, first, &result, t(30))
        .await
        .expect("completes");
    assert_eq!(done.state, ActionState::Completed);
    assert_eq!(done.completed_at, Some(t(30)));
    assert_eq!(done.result.as_ref(), Some(&result));
    assert_eq!(
        f.store.last_doctor(a.id).await.expect("reads"),
        result.doctor,
        "a doctor result becomes the agent's last verdict"
    );
    assert_conflict(
        f.store.complete_action(a.id, first, &result, t(31)).await,
        "completing twice",
    );
    let fresh = Uuid::new_v4();
    f.store
        .queue_action(fresh, a.id, &ActionKind::Doctor { upload: false }, t(32))
        .await
        .expect("queues");
    assert_conflict(
        f.store.complete_action(a.id, fresh, &result, t(33)).await,
        "completing an action that was never delivered",
    );

    let listed = f.store.list_actions(a.id, 10).await.expect("lists");
    assert_eq!(
        listed.iter().map(|x| (x.id, x.state)).collect::<Vec<_>>(),
        vec![
            (fresh, ActionState::Queued),
            (second, ActionState::Delivered),
            (first, ActionState::Completed)
        ],
        "newest first"
    );
    assert_not_found(
        f.store.last_doctor(Uuid::new_v4()).await,
        "last doctor of an unknown agent",
    );
}

pub async fn concurrent_deliveries_hand_out_each_action_once(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = Uuid::new_v4();
        f.store
            .queue_action(id, a.id, &ActionKind::Doctor { upload: true }, t(10 + i))
            .await
            .expect("queues");
        ids.push(id);
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store.take_actions(a.id, t(100 + i), 10).await
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        let taken = task.await.expect("task runs").expect("takes");
        seen.extend(taken.into_iter().map(|x| x.id));
    }
    seen.sort();
    ids.sort();
    assert_eq!(
        seen, ids,
        "every action delivered exactly once across concurrent check-ins"
    );
    assert_eq!(agent(&*f.store, a.id).await.pending_actions, 0);
}

pub async fn bundles_are_stored_listed_and_pruned(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let (other, _) = enroll_at(&*f.store, t(1)).await;
    // Every byte value, including NUL and invalid UTF-8, survives.
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = Uuid::new_v4();
        let info = f
            .store
            .insert_bundle(
                &NewBundle {
                    id,
                    agent_id: a.id,
                    data: data.clone(),
                    sha256: format!("{i:064x}"),
                    verdict: (i == 3).then(|| summary("warnings", 40)),
                    at: t(40 + i),
                },
                3,
            )
            .await
            .expect("stores");
        assert_eq!(info.size_bytes, 70_000);
        assert_eq!(info.agent_id, a.id);
        ids.push(id);
    }
    let listed = f.store.list_bundles(a.id, 10).await.expect("lists");
    assert_eq!(
        listed.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2], ids[1]],
        "newest first, only the newest 3 kept"
    );
    assert_eq!(listed[0].verdict, Some(summary("warnings", 40)));
    assert_eq!(listed[1].verdict, None);
    assert_eq!(
        f.store.last_doctor(a.id).await.expect("reads"),
        Some(summary("warnings", 40)),
        "a bundle's verdict becomes the agent's last verdict"
    );
    let (info, bytes) = f
        .store
        .bundle(ids[3])
        .await
        .expect("reads")
        .expect("bundle exists");
    assert_eq!(info, listed[0]);
    assert_eq!(bytes, data, "bytes round-trip exactly");
    assert_eq!(f.store.bundle(ids[0]).await.expect("reads"), None, "pruned");
    assert!(
        f.store
            .list_bundles(other.id, 10)
            .await
            .expect("lists")
            .is_empty()
    );
    let orphan = f
        .store
        .insert_bundle(
            &NewBundle {
                id: Uuid::new_v4(),
                agent_id: Uuid::new_v4(),
                data: vec![1],
                sha256: String::new(),
                verdict: None,
                at: t(50),
            },
            3,
        )
        .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
}
