//! Task wake-ups across servers (issue #12): two real servers on one
//! PostgreSQL, a real agent whose task poll server A holds, and tasks
//! created through server B with the admin CLI. B's NOTIFY reaches A's
//! LISTEN and A answers the held poll at once, not when it times out; and
//! a listener whose connection PostgreSQL terminates subscribes again.

use std::time::Duration;

use serde_json::Value;
use tether_wire::{AgentStatus, TaskDetail, TaskState};
use tokio::time::Instant;
use uuid::Uuid;

use crate::lab::{Agent, Backend, Server, text};

/// How long a poll is held: the agent asks for 50 s and the server allows
/// it (`task_poll_max_wait_secs`), set here so the bound below is explicit.
const HOLD: &str = "50";
/// A wake-up through the database answers the held poll within this.
const BOUND: Duration = Duration::from_secs(3);

async fn create(server: &Server, agent: Uuid) -> Uuid {
    let out: Value = serde_json::from_str(
        &server
            .admin_ok(&[
                "tasks",
                "create",
                "--json",
                "--kind",
                "doctor",
                "--agent",
                &agent.to_string(),
                "--spec",
                r#"{"upload":false,"deadline_secs":5}"#,
            ])
            .await,
    )
    .expect("JSON");
    out["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}

async fn state(server: &Server, id: Uuid) -> TaskState {
    let d: TaskDetail<Value> = serde_json::from_str(
        &server
            .admin_ok(&["tasks", "show", &id.to_string(), "--json"])
            .await,
    )
    .expect("tasks show --json");
    d.task.state
}

/// Creates a task for `agent` through `via` and returns how long after the
/// CLI returned the agent had leased it (bounded by the poll's hold).
async fn leased_after(via: &Server, holder: &Server, agent: Uuid) -> Duration {
    let id = create(via, agent).await;
    let created = Instant::now();
    loop {
        if state(via, id).await != TaskState::Queued {
            return created.elapsed();
        }
        assert!(
            created.elapsed() < Duration::from_secs(60),
            "task {id} never leased\nA:\n{}",
            holder.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on one PostgreSQL and an agent that talks to A only.
async fn lab() -> (Server, Server, Agent, Uuid) {
    let env = [("TETHER_TASK_POLL_MAX_WAIT_SECS", HOLD)];
    let a = Server::start_with(Backend::Postgres, &env).await;
    let b = Server::start_sharing_database_with(&a, &env).await;
    let token = a.token(&[]).await;
    let mut agent = Agent::new();
    let id = agent.enroll_ok(&a, &token.token, &[]).await;
    agent.run(&[]);
    b.wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;
    // The agent polls right after its first check-in; give the poll time
    // to reach A and wait there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (a, b, agent, id)
}

/// A task created through B starts on an agent whose poll A holds within
/// 3 s, not at the end of the 50 s hold. Twice in a row, so that a poll
/// returning on its own by chance (6% of a 50 s hold per try) cannot pass
/// the test for the feature.
#[tokio::test]
async fn a_task_created_on_b_wakes_the_poll_held_by_a() {
    let (a, b, mut agent, id) = lab().await;
    for round in 0..2 {
        let took = leased_after(&b, &a, id).await;
        eprintln!("round {round}: leased {took:?} after creation through B");
        assert!(
            took < BOUND,
            "round {round}: {took:?}\nA:\n{}\nagent:\n{}",
            a.log(),
            agent.stderr()
        );
    }
    assert!(
        a.log().contains("leased a task"),
        "A leased them: {}",
        a.log()
    );
    agent.terminate().await;
}

/// `pg_terminate_backend` on the servers' LISTEN connections: each logs the
/// loss, subscribes again (waking its held polls once), and a task created
/// through B afterwards still wakes the poll A holds within the bound.
#[tokio::test]
async fn a_terminated_listener_connection_subscribes_again() {
    let (a, b, mut agent, id) = lab().await;
    let db = a.database_url.clone().expect("postgres");
    let out = std::process::Command::new("psql")
        .arg(&db)
        .args([
            "-At",
            "-c",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        ])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2",
        "one listener per server: {}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.log().contains("task wake-up listener subscribed again") {
        assert!(
            Instant::now() < deadline,
            "A did not subscribe again:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        a.log()
            .contains("the task wake-up listener lost its connection"),
        "{}",
        a.log()
    );
    // The woken poll asked again and waits again; a new task wakes it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let took = leased_after(&b, &a, id).await;
    eprintln!("after the listener came back: leased {took:?} after creation through B");
    assert!(took < BOUND, "{took:?}\nA:\n{}", a.log());
    agent.terminate().await;
}
