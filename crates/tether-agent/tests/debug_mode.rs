//! Debug mode end to end: a check-in's debug action turns debug logging on,
//! and the run loop turns it off by itself when the window passes. Kept in
//! its own test binary: tracing's callsite interest cache is process-wide,
//! and other tests' threads would race with the reloaded filter.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Harness, T0, client_for, ok_reply, server};
use tether_agent::logs::{LogOptions, build};
use tether_wire::{Action, ActionKind};
use uuid::Uuid;

#[tokio::test]
async fn debug_action_turns_debug_on_and_it_expires_by_itself() {
    let debug = Action {
        id: Uuid::from_u128(5),
        kind: ActionKind::Debug { minutes: 1 },
    };
    let server = server(vec![ok_reply(120, vec![debug]), ok_reply(120, vec![])]).await;
    let h = Harness::new(2, 120);
    let log_dir = tempfile::tempdir().expect("tempdir");
    let (subscriber, handle) = build(&LogOptions {
        dir: Some(log_dir.path().to_owned()),
        max_bytes: 1 << 20,
        keep: 1,
        debug: false,
        stderr: None,
    })
    .expect("logs build");
    let _guard = tracing::subscriber::set_default(subscriber);
    let handle = Arc::new(handle);
    let mut ctx = h.context(client_for(&server), 0.5, Some(handle.clone()));
    let summary = h.run(&mut ctx).await;
    assert_eq!(summary.steps.len(), 1);
    // The 120 s wait was cut at the end of the 60 s debug window.
    assert_eq!(
        h.delays(),
        vec![Duration::from_secs(60), Duration::from_secs(60)]
    );
    assert!(
        !handle.is_debug(),
        "debug switched itself off when the window passed"
    );
    let state = h.store.load_required().expect("state");
    assert_eq!(state.debug_until, Some(T0 + time::Duration::minutes(1)));
    let agent_log = std::fs::read_to_string(log_dir.path().join("agent.log")).expect("agent.log");
    assert!(
        agent_log.contains("next check-in scheduled"),
        "debug events were written while on: {agent_log}"
    );
    assert!(
        !agent_log.contains("agent-cred"),
        "the credential is never logged"
    );
}
