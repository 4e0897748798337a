//! The story of the task queue: tasks round-trip and are written by
//! compare-and-set, leases go to eligible agents only and never twice, result
//! chunks are stored once, schedules fire once, sites label agents.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use tether_store::{LeaseRequest, ScheduleRecord, ScheduleRun, Store, TaskFilter, TaskSnapshot};
use tether_wire::{
    AgentKind, AllowedHours, Approval, ApprovalState, Outcome, Progress, TaskKind, TaskOutcome,
    TaskState, TaskTarget,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{Fixture, agent, assert_conflict, assert_not_found, enroll_at, t};

/// A queued task for `target`, created at `at`.
pub fn new_task(kind: TaskKind, target: TaskTarget, at: OffsetDateTime) -> TaskSnapshot {
    TaskSnapshot {
        id: Uuid::new_v4(),
        kind,
        spec: json!({"upload": false, "note": "it's \"quoted\" -- ; DROP TABLE tasks"}),
        target,
        state: TaskState::Queued,
        attempt: 0,
        max_attempts: 3,
        epoch: 0,
        lease_secs: 60,
        deadline_at: None,
        allowed_hours: None,
        tz: "UTC".into(),
        leased_to: None,
        lease_expires_at: None,
        heartbeat_at: None,
        progress: None,
        cancel_requested: false,
        last_error: None,
        reason: None,
        outcome: None,
        not_before: at,
        schedule_id: None,
        created_at: at,
        updated_at: at,
        finished_at: None,
        version: 0,
        result_chunks: 0,
        approval: None,
    }
}

fn group(name: &str) -> TaskTarget {
    TaskTarget::Group {
        group: name.into(),
        agent_kind: AgentKind::Discovery,
        site: None,
    }
}

fn request(agent: Uuid, now: OffsetDateTime, limit: u32) -> LeaseRequest {
    LeaseRequest {
        agent_id: agent,
        group: "plant-a".into(),
        agent_kind: AgentKind::Discovery,
        site: None,
        kinds: vec![TaskKind::Discover, TaskKind::Doctor, TaskKind::UpdateDefs],
        actions_only: false,
        now,
        limit,
    }
}

async fn stored(store: &dyn Store, id: Uuid) -> TaskSnapshot {
    store.task(id).await.expect("reads").expect("exists")
}

/// The queue depth the metrics show: waiting and running tasks, both
/// always listed.
pub async fn the_queue_depth_counts_waiting_and_running_tasks(f: Fixture) {
    let s = &*f.store;
    let counts = |q: u64, l: u64| vec![(TaskState::Queued, q), (TaskState::Leased, l)];
    assert_eq!(s.count_open_tasks().await.expect("counts"), counts(0, 0));
    let (a, _) = enroll_at(s, t(0)).await;
    for i in 0..3 {
        let task = new_task(
            TaskKind::Discover,
            TaskTarget::Agent { agent_id: a.id },
            t(1 + i),
        );
        s.insert_task(&task).await.expect("inserts");
    }
    let leased = s
        .lease_tasks(&request(a.id, t(100), 1))
        .await
        .expect("leases");
    assert_eq!(leased.len(), 1);
    assert_eq!(s.count_open_tasks().await.expect("counts"), counts(2, 1));
}

/// A deploy held for an admin's approval is never leased, whoever asks; the
/// approval (who, when) is written by compare-and-set and round-trips, and
/// only then does the task go to its agent. A rejected one ends cancelled,
/// never leased.
pub async fn held_tasks_are_leased_only_after_approval(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let mut deploy_req = request(a.id, t(100), 8);
    deploy_req.kinds.push(TaskKind::Deploy);
    let mut held = new_task(
        TaskKind::Deploy,
        TaskTarget::Agent { agent_id: a.id },
        t(10),
    );
    held.approval = Some(Approval::awaiting());
    held.reason = Some(tether_tasks::lease::awaiting_approval(held.id));
    f.store.insert_task(&held).await.expect("inserts");
    assert_eq!(stored(&*f.store, held.id).await, held, "round-trips");
    let mut rejected = new_task(
        TaskKind::Deploy,
        TaskTarget::Agent { agent_id: a.id },
        t(11),
    );
    rejected.approval = Some(Approval::awaiting());
    f.store.insert_task(&rejected).await.expect("inserts");
    assert!(
        f.store
            .lease_tasks(&deploy_req)
            .await
            .expect("leases")
            .is_empty(),
        "held tasks are never leased"
    );

    // Approved by compare-and-set: a second decision on the old row loses.
    let approved = held.approve("ops-alice", t(50)).expect("approves");
    assert!(f.store.update_task(&approved).await.expect("writes"));
    let late = held.reject("ops-bob", "too late", t(51)).expect("decides");
    assert!(
        !f.store.update_task(&late).await.expect("runs"),
        "a decision on a stale row is not applied"
    );
    let read = stored(&*f.store, held.id).await;
    assert_eq!(
        read.approval,
        Some(Approval {
            state: ApprovalState::Approved,
            by: Some("ops-alice".into()),
            at: Some(t(50)),
        })
    );
    assert!(!read.held());

    let r = rejected
        .reject("ops-bob", "change freeze", t(60))
        .expect("rejects");
    assert!(f.store.update_task(&r).await.expect("writes"));
    let read_r = stored(&*f.store, rejected.id).await;
    assert_eq!(read_r.state, TaskState::Cancelled);
    assert_eq!(
        read_r.approval.as_ref().map(|a| (a.state, a.by.as_deref())),
        Some((ApprovalState::Rejected, Some("ops-bob")))
    );

    let leased = f.store.lease_tasks(&deploy_req).await.expect("leases");
    assert_eq!(
        leased.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![held.id],
        "the approved task only"
    );
    assert_eq!(leased[0].epoch, 1);
    assert_eq!(leased[0].approval, read.approval, "the approval is kept");
    assert!(
        f.store
            .lease_tasks(&deploy_req)
            .await
            .expect("leases")
            .is_empty()
    );
}

pub async fn tasks_round_trip_and_writes_are_compare_and_set(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let mut task = new_task(TaskKind::Discover, group("plant-a"), t(10));
    task.deadline_at = Some(t(3600));
    task.allowed_hours = Some(AllowedHours {
        from: "22:00".into(),
        to: "04:00".into(),
    });
    task.tz = "Europe/Paris".into();
    f.store.insert_task(&task).await.expect("inserts");
    assert_eq!(
        stored(&*f.store, task.id).await,
        task,
        "round-trips every field"
    );
    assert_conflict(f.store.insert_task(&task).await, "a duplicate id");

    let mut leased = task.lease(a.id, t(20), true);
    leased.progress = Some(Progress {
        done: 4,
        total: Some(10),
        message: "ünïcode ✓".into(),
    });
    leased.outcome = Some(TaskOutcome {
        outcome: Outcome::Failed,
        message: "x".into(),
    });
    assert!(f.store.update_task(&leased).await.expect("writes"));
    let read = stored(&*f.store, task.id).await;
    assert_eq!(read.version, task.version + 1, "the version is bumped");
    assert_eq!(read.progress, leased.progress);
    assert_eq!(read.outcome, leased.outcome);
    assert_eq!(
        (read.epoch, read.state, read.leased_to),
        (1, TaskState::Leased, Some(a.id))
    );
    // A second writer that decided on the old row loses.
    assert!(
        !f.store.update_task(&leased).await.expect("runs"),
        "a stale version is not applied"
    );

    let other = new_task(
        TaskKind::Doctor,
        TaskTarget::Agent { agent_id: a.id },
        t(30),
    );
    f.store.insert_task(&other).await.expect("inserts");
    let all = f
        .store
        .list_tasks(&TaskFilter::default(), 10)
        .await
        .expect("lists");
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![other.id, task.id],
        "newest first"
    );
    let mine = f
        .store
        .list_tasks(
            &TaskFilter {
                agent: Some(a.id),
                ..TaskFilter::default()
            },
            10,
        )
        .await
        .expect("lists");
    assert_eq!(mine.len(), 2, "targeted at or leased to the agent");
    let queued = f
        .store
        .list_tasks(
            &TaskFilter {
                state: Some(TaskState::Queued),
                kind: Some(TaskKind::Doctor),
                ..TaskFilter::default()
            },
            10,
        )
        .await
        .expect("lists");
    assert_eq!(
        queued.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    assert!(f.store.task(Uuid::new_v4()).await.expect("reads").is_none());
}

pub async fn leases_go_to_eligible_agents_in_order(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let now = t(100);
    let mine = new_task(
        TaskKind::Discover,
        TaskTarget::Agent { agent_id: a.id },
        t(1),
    );
    let theirs = new_task(
        TaskKind::Discover,
        TaskTarget::Agent {
            agent_id: Uuid::new_v4(),
        },
        t(2),
    );
    let group_task = new_task(TaskKind::Discover, group("plant-a"), t(3));
    let other_group = new_task(TaskKind::Discover, group("plant-b"), t(4));
    let mut other_kind = new_task(TaskKind::Discover, group("plant-a"), t(5));
    other_kind.target = TaskTarget::Group {
        group: "plant-a".into(),
        agent_kind: AgentKind::Connector,
        site: None,
    };
    let mut later = new_task(TaskKind::Discover, group("plant-a"), t(6));
    later.not_before = now + Duration::seconds(1);
    let mut closed = new_task(TaskKind::Discover, group("plant-a"), t(7));
    // 19:17 UTC is outside 01:00–02:00 UTC.
    closed.allowed_hours = Some(AllowedHours {
        from: "01:00".into(),
        to: "02:00".into(),
    });
    let mut elsewhere = new_task(TaskKind::Discover, group("plant-a"), t(8));
    elsewhere.target = TaskTarget::Group {
        group: "plant-a".into(),
        agent_kind: AgentKind::Discovery,
        site: Some("paris".into()),
    };
    let action = new_task(TaskKind::Doctor, TaskTarget::Agent { agent_id: a.id }, t(9));
    for task in [
        &mine,
        &theirs,
        &group_task,
        &other_group,
        &other_kind,
        &later,
        &closed,
        &elsewhere,
        &action,
    ] {
        f.store.insert_task(task).await.expect("inserts");
    }
    assert_eq!(
        agent(&*f.store, a.id).await.pending_actions,
        1,
        "an admin action for the agent raises the check-in's cheap flag"
    );
    let mut only_actions = request(a.id, now, 10);
    only_actions.actions_only = true;
    let got = f.store.lease_tasks(&only_actions).await.expect("leases");
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![action.id],
        "check-in delivery takes only admin actions targeted at the agent"
    );
    let got = f
        .store
        .lease_tasks(&request(a.id, now, 10))
        .await
        .expect("leases");
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![mine.id, group_task.id],
        "its own task and its group's, oldest first; not another agent's, group's, kind's or site's; not before not_before; not outside allowed hours"
    );
    for task in &got {
        assert_eq!(
            (task.state, task.epoch, task.attempt, task.leased_to),
            (TaskState::Leased, 1, 1, Some(a.id))
        );
        assert_eq!(
            task.lease_expires_at,
            Some(now + Duration::seconds(15)),
            "a poll's lease waits for its pickup"
        );
        assert_eq!(
            &stored(&*f.store, task.id).await,
            task,
            "what was returned is stored"
        );
    }
    let mut at_site = request(a.id, now, 10);
    at_site.site = Some("paris".into());
    let got = f.store.lease_tasks(&at_site).await.expect("leases");
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![elsewhere.id]
    );
    let mut no_discover = request(a.id, now + Duration::seconds(5), 10);
    no_discover.kinds = vec![TaskKind::Doctor];
    assert!(
        f.store
            .lease_tasks(&no_discover)
            .await
            .expect("leases")
            .is_empty(),
        "kinds the agent cannot run are left"
    );
    let got = f
        .store
        .lease_tasks(&request(a.id, now + Duration::seconds(5), 1))
        .await
        .expect("leases");
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![later.id],
        "the limit holds"
    );
}

pub async fn concurrent_lessors_never_lease_a_task_twice(f: Fixture) {
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(enroll_at(&*f.store, t(i)).await.0.id);
    }
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        let task = new_task(TaskKind::Discover, group("plant-a"), t(10 + i));
        ids.insert(task.id);
        f.store.insert_task(&task).await.expect("inserts");
    }
    let store: Arc<dyn Store> = Arc::clone(&f.store);
    let mut handles = Vec::new();
    for agent in agents {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Bounded: 60 tasks, at most 3 per call, 6 lessors.
            for round in 0..40 {
                let leased = store
                    .lease_tasks(&request(agent, t(100 + round), 3))
                    .await
                    .expect("leases");
                got.extend(leased.into_iter().map(|t| t.id));
            }
            got
        }));
    }
    let mut seen = Vec::new();
    for h in handles {
        seen.extend(h.await.expect("lessor"));
    }
    let unique: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(
        seen.len(),
        unique.len(),
        "a task was leased twice: {seen:?}"
    );
    assert_eq!(unique, ids, "every task was leased");
    for id in ids {
        assert_eq!(stored(&*f.store, id).await.epoch, 1, "one lease each");
    }
}

pub async fn result_chunks_are_stored_once(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let task = new_task(
        TaskKind::Discover,
        TaskTarget::Agent { agent_id: a.id },
        t(1),
    );
    f.store.insert_task(&task).await.expect("inserts");
    let leased = f
        .store
        .lease_tasks(&request(a.id, t(2), 1))
        .await
        .expect("leases")
        .remove(0);
    assert!(
        f.store
            .insert_result(task.id, 1, 0, Some("[1,2]"), t(3))
            .await
            .expect("stores")
    );
    assert!(
        !f.store
            .insert_result(task.id, 1, 0, Some("[9,9]"), t(4))
            .await
            .expect("runs"),
        "the same (task, epoch, chunk) again is a duplicate"
    );
    assert!(
        f.store
            .insert_result(task.id, 1, 1, None, t(5))
            .await
            .expect("stores")
    );
    assert!(
        f.store
            .insert_result(task.id, 2, 0, Some("[3]"), t(5))
            .await
            .expect("stores")
    );
    assert_eq!(
        f.store.results(task.id, 1, 100).await.expect("reads"),
        vec![Some("[1,2]".to_owned()), None],
        "in order, the first copy kept"
    );
    let now = stored(&*f.store, task.id).await;
    assert_eq!(
        now.result_chunks, 2,
        "only the current epoch's chunks count"
    );
    assert!(
        now.version > leased.version,
        "a stored chunk bumps the version"
    );
    assert!(
        f.store
            .insert_result(Uuid::new_v4(), 1, 0, None, t(6))
            .await
            .is_err(),
        "a chunk of an unknown task is refused"
    );
}

pub async fn finished_tasks_past_retention_are_pruned_with_their_results(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    // One task per final state, finished at t(10), and one still queued.
    let mut ids = Vec::new();
    for state in [TaskState::Succeeded, TaskState::Cancelled, TaskState::Dead] {
        let task = new_task(TaskKind::Doctor, TaskTarget::Agent { agent_id: a.id }, t(1));
        f.store.insert_task(&task).await.expect("inserts");
        let mut leased = f
            .store
            .lease_tasks(&request(a.id, t(2), 1))
            .await
            .expect("leases")
            .remove(0);
        assert!(
            f.store
                .insert_result(task.id, leased.epoch, 0, Some("[1]"), t(3))
                .await
                .expect("stores")
        );
        leased = stored(&*f.store, task.id).await;
        leased.state = state;
        leased.finished_at = Some(t(10));
        leased.leased_to = None;
        assert!(f.store.update_task(&leased).await.expect("updates"));
        ids.push((state, task.id, leased.epoch));
    }
    let queued = new_task(TaskKind::Doctor, TaskTarget::Agent { agent_id: a.id }, t(1));
    f.store.insert_task(&queued).await.expect("inserts");

    assert_eq!(
        f.store
            .prune_finished_tasks(t(10), 100)
            .await
            .expect("prunes"),
        0,
        "finished at t(10) is not before t(10)"
    );
    assert_eq!(
        f.store
            .prune_finished_tasks(t(11), 1)
            .await
            .expect("prunes"),
        1,
        "the limit holds"
    );
    assert_eq!(
        f.store
            .prune_finished_tasks(t(11), 100)
            .await
            .expect("prunes"),
        1
    );
    for (state, id, epoch) in ids {
        let kept = f.store.task(id).await.expect("reads");
        assert_eq!(
            kept.is_some(),
            state == TaskState::Dead,
            "{state:?}: only the dead-lettered task is kept (it waits for retry)"
        );
        let results = f.store.results(id, epoch, 10).await.expect("reads");
        assert_eq!(results.is_empty(), state != TaskState::Dead, "{state:?}");
    }
    assert!(f.store.task(queued.id).await.expect("reads").is_some());
}

pub async fn expired_leases_and_deadlines_are_found(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let short = new_task(TaskKind::Doctor, TaskTarget::Agent { agent_id: a.id }, t(1));
    let mut due = new_task(TaskKind::Discover, group("plant-a"), t(2));
    due.deadline_at = Some(t(50));
    let mut done = new_task(TaskKind::Discover, group("plant-b"), t(3));
    done.deadline_at = Some(t(50));
    done.state = TaskState::Succeeded;
    for task in [&short, &due, &done] {
        f.store.insert_task(task).await.expect("inserts");
    }
    let leased = f
        .store
        .lease_tasks(&request(a.id, t(10), 1))
        .await
        .expect("leases");
    assert_eq!(leased[0].id, short.id, "admin actions first");
    assert!(
        f.store
            .expired_leases(t(24), 10)
            .await
            .expect("reads")
            .is_empty()
    );
    let expired = f.store.expired_leases(t(25), 10).await.expect("reads");
    assert_eq!(
        expired.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![short.id]
    );
    assert!(
        f.store
            .tasks_past_deadline(t(49), 10)
            .await
            .expect("reads")
            .is_empty()
    );
    let late = f.store.tasks_past_deadline(t(50), 10).await.expect("reads");
    assert_eq!(
        late.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![due.id],
        "finished tasks have no deadline to miss"
    );
}

pub async fn schedules_fire_each_run_once(f: Fixture) {
    let schedule = ScheduleRecord {
        id: Uuid::new_v4(),
        rule: r#"{"type":"cron","expr":"0 2 * * *"}"#.into(),
        tz: "Europe/Paris".into(),
        template: r#"{"kind":"doctor","spec":{},"target":{"type":"group","group":"g","agent_kind":"discovery"}}"#.into(),
        next_run_at: t(100),
        last_run_at: None,
        last_task_id: None,
        missed: Vec::new(),
        created_at: t(0),
    };
    f.store.insert_schedule(&schedule).await.expect("inserts");
    assert_eq!(
        f.store.schedule(schedule.id).await.expect("reads"),
        Some(schedule.clone())
    );
    assert!(
        f.store
            .due_schedules(t(99), 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        f.store
            .due_schedules(t(100), 10)
            .await
            .expect("reads")
            .len(),
        1
    );
    let run = |task: TaskSnapshot| ScheduleRun {
        schedule_id: schedule.id,
        due_at: t(100),
        next_run_at: t(200),
        missed: vec!["2026-05-17T19:16:00Z".into()],
        at: t(101),
        task,
    };
    let mut first = new_task(TaskKind::Doctor, group("g"), t(101));
    first.schedule_id = Some(schedule.id);
    let second = new_task(TaskKind::Doctor, group("g"), t(101));
    let store: Arc<dyn Store> = Arc::clone(&f.store);
    let (run_a, run_b) = (run(first.clone()), run(second.clone()));
    let (a, b) = tokio::join!(store.fire_schedule(&run_a), store.fire_schedule(&run_b));
    let fired = [a.expect("fires"), b.expect("fires")];
    assert_eq!(
        fired.iter().filter(|f| **f).count(),
        1,
        "one of two servers fires the run"
    );
    let tasks = f
        .store
        .list_tasks(&TaskFilter::default(), 10)
        .await
        .expect("lists");
    assert_eq!(tasks.len(), 1, "one task for one run");
    let after = f
        .store
        .schedule(schedule.id)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(after.next_run_at, t(200));
    assert_eq!(after.last_run_at, Some(t(101)));
    assert_eq!(after.last_task_id, Some(tasks[0].id));
    assert_eq!(after.missed, vec!["2026-05-17T19:16:00Z".to_owned()]);
    assert_eq!(f.store.list_schedules(10).await.expect("lists").len(), 1);
    assert!(f.store.delete_schedule(schedule.id).await.expect("deletes"));
    assert!(!f.store.delete_schedule(schedule.id).await.expect("runs"));
    assert!(
        f.store.task(tasks[0].id).await.expect("reads").is_some(),
        "its tasks are kept"
    );
}

pub async fn sites_label_agents_and_tokens(f: Fixture) {
    let (a, enrollment) = enroll_at(&*f.store, t(0)).await;
    f.store
        .upsert_site("paris", "Europe/Paris", t(1))
        .await
        .expect("creates");
    f.store
        .upsert_site("nyc", "America/New_York", t(1))
        .await
        .expect("creates");
    f.store
        .upsert_site("paris", "Europe/Berlin", t(2))
        .await
        .expect("updates");
    let sites = f.store.list_sites().await.expect("lists");
    assert_eq!(
        sites
            .iter()
            .map(|s| (s.name.as_str(), s.tz.as_str()))
            .collect::<Vec<_>>(),
        vec![("nyc", "America/New_York"), ("paris", "Europe/Berlin")]
    );
    assert_eq!(f.store.agent_site(a.id).await.expect("reads"), None);
    f.store
        .set_agent_site(a.id, Some("paris"))
        .await
        .expect("sets");
    assert_eq!(
        f.store.agent_site(a.id).await.expect("reads").as_deref(),
        Some("paris")
    );
    // The agent's record carries it too, in a listing and alone.
    let listed = f
        .store
        .list_agents_page(&tether_store::AgentFilter::default(), None, 100)
        .await
        .expect("lists");
    let row = listed.iter().find(|r| r.id == a.id).expect("listed");
    assert_eq!(row.site.as_deref(), Some("paris"));
    let alone = f.store.agent(a.id).await.expect("reads").expect("present");
    assert_eq!(alone.site.as_deref(), Some("paris"));
    f.store.set_agent_site(a.id, None).await.expect("clears");
    assert_eq!(f.store.agent_site(a.id).await.expect("reads"), None);
    let cleared = f.store.agent(a.id).await.expect("reads").expect("present");
    assert_eq!(cleared.site, None);
    assert_not_found(
        f.store.set_agent_site(Uuid::new_v4(), Some("x")).await,
        "an unknown agent",
    );
    f.store
        .set_token_site(enrollment.token_id, Some("nyc"))
        .await
        .expect("sets");
    assert_eq!(
        f.store
            .token_site(enrollment.token_id)
            .await
            .expect("reads")
            .as_deref(),
        Some("nyc")
    );
    assert_not_found(
        f.store.set_token_site(Uuid::new_v4(), None).await,
        "an unknown token",
    );
}
