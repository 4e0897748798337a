//! Task wake-ups between servers: publishing always succeeds on a live
//! store; a backend that several servers share delivers what is published
//! after a subscription began, and one that a server owns has nothing to
//! subscribe to.

use std::time::Duration;

use tether_store::TaskWake;
use tether_wire::{AgentKind, TaskTarget};
use uuid::Uuid;

use super::Fixture;

pub async fn task_wakeups_reach_subscribers(f: Fixture) {
    let s = &f.store;
    let agent = TaskTarget::Agent {
        agent_id: Uuid::from_u128(7),
    };
    let group = TaskTarget::Group {
        group: "lab".into(),
        agent_kind: AgentKind::Discovery,
        site: Some("paris".into()),
    };
    s.publish_task_wake(&agent)
        .await
        .expect("publishing with nobody listening succeeds");
    let Some(mut sub) = s.subscribe_task_wakes().await.expect("subscribes") else {
        assert_eq!(s.backend(), "sqlite", "a shared backend carries wake-ups");
        return;
    };
    for target in [&agent, &group] {
        s.publish_task_wake(target).await.expect("publishes");
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("the wake-up arrives within 5 s")
            .expect("the subscription is live");
        assert_eq!(got, TaskWake::Target(target.clone()));
    }
}
