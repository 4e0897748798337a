//! Agent upgrades: the last report per agent is kept, an unchanged one
//! changes nothing, and states this server does not know read as unknown.

use tether_wire::{UpgradeReport, UpgradeState};

use super::{Fixture, enroll_at, t};

pub async fn agent_upgrades_keep_the_last_report(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let (b, _) = enroll_at(s, t(1)).await;
    assert_eq!(s.agent_upgrade(a.id).await.expect("reads"), None);
    let upgrading = UpgradeReport {
        state: UpgradeState::Upgrading,
        version: "1.2.0".into(),
        from: Some("1.1.0".into()),
        reason: None,
        at: t(10),
    };
    s.record_agent_upgrade(a.id, &upgrading, t(11))
        .await
        .expect("records");
    // The same report again (every check-in carries it) is a no-op.
    s.record_agent_upgrade(a.id, &upgrading, t(40))
        .await
        .expect("records");
    assert_eq!(
        s.agent_upgrade(a.id).await.expect("reads"),
        Some(upgrading.clone())
    );
    let rolled_back = UpgradeReport {
        state: UpgradeState::RolledBack,
        version: "1.2.0".into(),
        from: Some("1.1.0".into()),
        reason: Some("version 1.2.0 did not check in within 3m".into()),
        at: t(200),
    };
    s.record_agent_upgrade(a.id, &rolled_back, t(201))
        .await
        .expect("records");
    let upgraded_b = UpgradeReport {
        state: UpgradeState::Upgraded,
        version: "1.2.0".into(),
        from: None,
        reason: None,
        at: t(300),
    };
    s.record_agent_upgrade(b.id, &upgraded_b, t(301))
        .await
        .expect("records");
    assert_eq!(
        s.agent_upgrade(a.id).await.expect("reads"),
        Some(rolled_back.clone())
    );
    let mut all = s.agent_upgrades().await.expect("lists");
    all.sort_by_key(|(id, _)| *id);
    let mut want = vec![(a.id, rolled_back), (b.id, upgraded_b)];
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(all, want);
    // A state written by a newer server reads as unknown, not an error.
    f.raw
        .execute(&format!(
            "UPDATE agent_upgrades SET state = 'staged' WHERE agent_id = '{}'",
            b.id
        ))
        .await
        .expect("raw update");
    let got = s.agent_upgrade(b.id).await.expect("reads").expect("kept");
    assert_eq!(got.state, UpgradeState::Unknown);
}
