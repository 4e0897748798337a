//! The policy's `max_concurrent_tasks` reaches the task worker at the next
//! check-in: a real HTTPS server on loopback answers check-ins with a policy
//! and records the task polls, whose `capacity` is the limit (plus the admin
//! actions' own lane) minus what runs.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use harness::{AGENT, Harness, T0, api_error, client_for, policy};
use tether_agent::tasks::executor::Executors;
use tether_agent::tasks::spool::Spool;
use tether_agent::tasks::{TaskLimit, TaskWorker};
use tether_testlab::canned::{CannedReply, RecordedRequest, TestServer};
use tether_wire::{AgentStatus, CheckinResponse, ErrorCode, TaskPoll, TaskPollReply};

/// Check-ins get a policy allowing `limit` tasks at once; polls get no
/// lease and are told to come back in a second.
async fn server(limit: Arc<AtomicU32>) -> TestServer {
    TestServer::start(move |r: &RecordedRequest| match r.path.as_str() {
        "/v1/agent/checkin" => CannedReply::json(
            200,
            &CheckinResponse {
                agent_id: AGENT,
                status: AgentStatus::Active,
                policy: tether_wire::Policy {
                    max_concurrent_tasks: limit.load(Ordering::SeqCst),
                    ..policy(60, 0)
                },
                actions: Vec::new(),
                server_time: T0,
                current_agent_version: None,
                upgrade: None,
            },
        ),
        "/v1/agent/tasks/poll" => CannedReply::json(
            200,
            &TaskPollReply::<serde_json::Value> {
                leases: Vec::new(),
                retry_after_secs: Some(1),
            },
        ),
        "/v1/agent/shutdown" => CannedReply::no_content(),
        _ => api_error(404, ErrorCode::NotFound),
    })
    .await
}

fn polls(server: &TestServer) -> Vec<TaskPoll> {
    server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/agent/tasks/poll")
        .map(|r| serde_json::from_slice(&r.body).expect("poll body"))
        .collect()
}

/// Waits (bounded) for a poll after the first `seen`, and returns it.
async fn next_poll(server: &TestServer, seen: usize) -> TaskPoll {
    for _ in 0..100 {
        if let Some(p) = polls(server).into_iter().nth(seen) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no poll number {} within 5 s", seen + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_limit_applies_at_the_next_checkin() {
    let served = Arc::new(AtomicU32::new(2));
    let server = server(served.clone()).await;
    let h = Harness::new(1, 60);
    let limit = TaskLimit::from_policy(None);
    assert_eq!(limit.get(), 4, "before any policy: the default");
    let mut ctx = h.context(client_for(&server), 0.5, None);
    ctx.task_limit = Some(limit.clone());
    let worker = TaskWorker {
        poll_client: client_for(&server).with_bearer("agent-cred"),
        client: client_for(&server).with_bearer("agent-cred"),
        spool: Spool::new(h.dir.path()),
        executors: Executors::default(),
        max_concurrent: limit.clone(),
        poll_wait_secs: 1,
    };
    let task = worker.spawn();
    // No running task: the limit plus the admin actions' lane.
    assert_eq!(next_poll(&server, 0).await.capacity, 5);

    // One check-in brings a policy with 2.
    h.run(&mut ctx).await;
    assert_eq!(limit.get(), 2);
    let seen = polls(&server).len();
    assert_eq!(next_poll(&server, seen).await.capacity, 3);

    // A server's out-of-bounds value is clamped into the policy's bounds.
    served.store(0, Ordering::SeqCst);
    let h = Harness::new(1, 60);
    let mut ctx = h.context(client_for(&server), 0.5, None);
    ctx.task_limit = Some(limit.clone());
    h.run(&mut ctx).await;
    assert_eq!(limit.get(), 1);
    let seen = polls(&server).len();
    assert_eq!(next_poll(&server, seen).await.capacity, 2);
    served.store(10_000, Ordering::SeqCst);
    let h = Harness::new(1, 60);
    let mut ctx = h.context(client_for(&server), 0.5, None);
    ctx.task_limit = Some(limit.clone());
    h.run(&mut ctx).await;
    assert_eq!(limit.get(), 32);
    task.abort();
}

#[test]
fn a_policy_from_an_older_server_means_the_default() {
    // The check-in reply of a server that predates the setting.
    let json = serde_json::json!({
        "name": "default", "revision": 1, "checkin_interval_secs": 30, "jitter_percent": 10
    });
    let p: tether_wire::Policy = serde_json::from_value(json).expect("parses");
    assert_eq!(p.max_concurrent_tasks, 4);
    assert_eq!(TaskLimit::from_policy(Some(&p)).get(), 4);
    assert_eq!(TaskLimit::new(7).get(), 7);
}
