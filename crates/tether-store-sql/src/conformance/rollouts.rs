//! Agent rollouts: one per group, replaced whole; admin changes return the
//! row as it is now; a rollback pauses only the rollout it concerns and
//! never undoes a later resume; progress counts the group's agents; the
//! fleet list reads a page's upgrade reports in one call.

use tether_store::{RolloutChange, RolloutRecord, StoreError};
use tether_wire::{RolloutProgress, RolloutStage, UpgradeReport, UpgradeState};

use super::{Fixture, checkin, enroll_at, t};

fn rollout(group: &str, version: &str, percent: u8, at: i64) -> RolloutRecord {
    RolloutRecord::new(group, version, percent, t(at))
}

pub async fn rollouts_pause_on_rollback_and_count_progress(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let (b, _) = enroll_at(s, t(1)).await;
    let (c, _) = enroll_at(s, t(2)).await;
    let group = a.group.clone();
    assert_eq!(b.group, group, "the fixture's agents share a group");
    assert!(s.rollouts().await.expect("lists").is_empty());
    for change in [RolloutChange::Resume, RolloutChange::Promote] {
        assert!(matches!(
            s.change_rollout("nope", &change, t(5)).await,
            Err(StoreError::NotFound)
        ));
    }
    assert!(matches!(
        s.delete_rollout("nope").await,
        Err(StoreError::NotFound)
    ));

    s.put_rollout(&rollout(&group, "2.0.0", 10, 100))
        .await
        .expect("puts");
    s.put_rollout(&rollout("other", "3.0.0", 100, 100))
        .await
        .expect("puts");
    let all = s.rollouts().await.expect("lists");
    assert_eq!(all.len(), 2);
    let ours = all.iter().find(|r| r.group == group).expect("ours");
    assert_eq!(ours, &rollout(&group, "2.0.0", 10, 100));

    // A rollback of another version, or reported before the admin's last
    // change, pauses nothing.
    assert!(
        !s.pause_rollout_on_rollback(&group, "1.9.0", "x", t(150), t(151))
            .await
            .expect("runs")
    );
    assert!(
        !s.pause_rollout_on_rollback(&group, "2.0.0", "x", t(90), t(151))
            .await
            .expect("runs")
    );
    assert!(
        s.pause_rollout_on_rollback(&group, "2.0.0", "agent a rolled back", t(150), t(151))
            .await
            .expect("runs")
    );
    // Already paused: the first reason stays.
    assert!(
        !s.pause_rollout_on_rollback(&group, "2.0.0", "again", t(160), t(161))
            .await
            .expect("runs")
    );
    let ours = s
        .rollouts()
        .await
        .expect("lists")
        .into_iter()
        .find(|r| r.group == group)
        .expect("ours");
    assert_eq!(
        ours.paused,
        Some((t(151), "agent a rolled back".to_owned()))
    );
    assert_eq!(
        ours.updated_at,
        t(100),
        "an agent's report is not an admin change"
    );

    // A resume after the rollback holds against that same report.
    let resumed = s
        .change_rollout(&group, &RolloutChange::Resume, t(200))
        .await
        .expect("resumes");
    assert_eq!(resumed.paused, None);
    assert_eq!(resumed.updated_at, t(200));
    assert!(
        !s.pause_rollout_on_rollback(&group, "2.0.0", "agent a rolled back", t(150), t(201))
            .await
            .expect("runs")
    );
    let paused = s
        .change_rollout(
            &group,
            &RolloutChange::Pause {
                reason: "by hand".into(),
            },
            t(300),
        )
        .await
        .expect("pauses");
    assert_eq!(paused.paused, Some((t(300), "by hand".to_owned())));
    let promoted = s
        .change_rollout(&group, &RolloutChange::Promote, t(310))
        .await
        .expect("promotes");
    assert_eq!(promoted.stage, RolloutStage::All);
    assert_eq!(
        promoted.paused,
        Some((t(300), "by hand".to_owned())),
        "promote does not resume"
    );
    // Replacing starts over.
    s.put_rollout(&rollout(&group, "2.0.1", 50, 400))
        .await
        .expect("replaces");
    let ours = s
        .rollouts()
        .await
        .expect("lists")
        .into_iter()
        .find(|r| r.group == group)
        .expect("ours");
    assert_eq!(ours, rollout(&group, "2.0.1", 50, 400));

    // Progress: a on the target, b rolled back from it, c behind.
    let mut on = checkin(a.id, t(410));
    on.version = "2.0.1".into();
    s.record_checkin(&on).await.expect("checks in");
    let back = UpgradeReport {
        state: UpgradeState::RolledBack,
        version: "2.0.1".into(),
        from: Some("1.0.0".into()),
        reason: Some("exited".into()),
        at: t(420),
    };
    s.record_agent_upgrade(b.id, &back, t(421))
        .await
        .expect("records");
    assert_eq!(
        s.rollout_progress(&group, "2.0.1").await.expect("counts"),
        RolloutProgress {
            agents: 3,
            on_target: 1,
            rolled_back: 1,
        }
    );
    assert_eq!(
        s.rollout_progress("empty-group", "2.0.1")
            .await
            .expect("counts"),
        RolloutProgress::default()
    );
    // Upgrade reports of a page's agents, in one call.
    let got = s
        .agent_upgrades_of(&[a.id, b.id, c.id])
        .await
        .expect("reads");
    assert_eq!(got, vec![(b.id, back)]);
    assert!(s.agent_upgrades_of(&[]).await.expect("reads").is_empty());

    s.delete_rollout(&group).await.expect("deletes");
    assert_eq!(s.rollouts().await.expect("lists").len(), 1);
}
