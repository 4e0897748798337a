//! Agent upgrade reports at check-in (issue #13): kept and shown, hostile
//! ones refused with nothing stored, unknown states from newer agents read.

use tether_wire::{AgentKind, CheckinResponse, ErrorCode, UpgradeReport, UpgradeState};

use crate::support::{self, checkin_request, token_request};

fn report(state: UpgradeState, reason: Option<&str>) -> UpgradeReport {
    UpgradeReport {
        state,
        version: "1.3.0".into(),
        from: Some("1.2.0".into()),
        reason: reason.map(str::to_owned),
        at: time::macros::datetime!(2026-12-07 23:00 UTC),
    }
}

#[tokio::test]
async fn upgrade_reports_are_kept_and_hostile_ones_refused() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let long = "r".repeat(1025);
    let bad = [
        UpgradeReport {
            version: String::new(),
            ..report(UpgradeState::Upgrading, None)
        },
        UpgradeReport {
            version: "9".repeat(65),
            ..report(UpgradeState::Upgrading, None)
        },
        UpgradeReport {
            from: Some("1.2\u{1b}[31m".into()),
            ..report(UpgradeState::Upgraded, None)
        },
        report(UpgradeState::RolledBack, Some(&long)),
        report(UpgradeState::RolledBack, Some("bad\u{0}reason")),
    ];
    for upgrade in bad {
        let mut req = checkin_request();
        req.upgrade = Some(upgrade);
        h.client
            .post("/v1/agent/checkin", Some(&e.credential), &req)
            .await
            .error(422, ErrorCode::InvalidField);
    }
    assert_eq!(h.detail(e.agent_id).await.summary.upgrade, None);

    let rolled_back = report(
        UpgradeState::RolledBack,
        Some("version 1.3.0 did not check in within 3m"),
    );
    let mut req = checkin_request();
    req.upgrade = Some(rolled_back.clone());
    let _: CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(&e.credential), &req)
        .await
        .ok();
    assert_eq!(
        h.detail(e.agent_id).await.summary.upgrade,
        Some(rolled_back)
    );

    // A newer agent's state this server does not know is kept as unknown.
    let mut body = serde_json::to_value(checkin_request()).expect("json");
    body["upgrade"] = serde_json::json!({
        "state": "staged", "version": "1.4.0", "at": "2026-12-07T23:30:00Z"
    });
    let _: CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(&e.credential), &body)
        .await
        .ok();
    let shown = h.detail(e.agent_id).await.summary.upgrade.expect("kept");
    assert_eq!(
        (shown.state, shown.version.as_str()),
        (UpgradeState::Unknown, "1.4.0")
    );
}

async fn rollout_call(
    h: &support::Harness,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> support::Reply {
    h.client
        .json_request(method, path, Some(&h.admin), body)
        .await
}

async fn offered(h: &support::Harness, credential: &str) -> Option<String> {
    let reply: CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(credential), &checkin_request())
        .await
        .ok();
    reply.upgrade.map(|u| u.version)
}

/// Rollouts through the API (issue #13): hostile input refused with its
/// code, the canary share offered to part of the group, promote and pause,
/// and a rollback report pausing the rollout by itself.
#[tokio::test]
async fn rollouts_offer_a_published_release_to_a_canary_share_and_a_rollback_pauses_them() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let mut agents = Vec::new();
    for i in 0..20 {
        agents.push(h.enroll_ok(&t.token, &format!("web-{i:02}")).await);
    }
    // Hostile or impossible input: a stable code each, nothing stored.
    for (group, body, status, code) in [
        (
            "prod",
            serde_json::json!({"version": "9.9.9"}),
            422,
            ErrorCode::RolloutReleaseMissing,
        ),
        (
            "prod",
            serde_json::json!({"version": "9.9.9+Build"}),
            400,
            ErrorCode::RolloutVersionInvalid,
        ),
        (
            "prod",
            serde_json::json!({"version": "../../x"}),
            400,
            ErrorCode::RolloutVersionInvalid,
        ),
        (
            "prod",
            serde_json::json!({"version": "9.9.9", "canary_percent": 0}),
            400,
            ErrorCode::RolloutCanaryInvalid,
        ),
        (
            "prod",
            serde_json::json!({"version": "9.9.9", "canary_percent": 101}),
            400,
            ErrorCode::RolloutCanaryInvalid,
        ),
        (
            "bad%20group",
            serde_json::json!({"version": "9.9.9"}),
            422,
            ErrorCode::InvalidField,
        ),
    ] {
        rollout_call(&h, "PUT", &format!("/v1/admin/rollouts/{group}"), &body)
            .await
            .error(status, code);
    }
    let reply = rollout_call(
        &h,
        "PUT",
        "/v1/admin/rollouts/prod",
        &serde_json::json!({"version": 7}),
    )
    .await;
    assert!((400..500).contains(&reply.status), "{reply:?}");
    rollout_call(
        &h,
        "POST",
        "/v1/admin/rollouts/prod/resume",
        &serde_json::json!({}),
    )
    .await
    .error(404, ErrorCode::NotFound);
    let none: Vec<tether_wire::Rollout> = h
        .client
        .get("/v1/admin/rollouts", Some(&h.admin))
        .await
        .ok();
    assert!(none.is_empty());

    // A release is a publish on its channel.
    let auth = format!("Bearer {}", h.admin);
    let reply = h
        .client
        .send(
            "POST",
            "/v1/admin/defs/agent-linux-x86_64-2.0.0/versions",
            &[
                ("content-type", "application/octet-stream"),
                ("authorization", &auth),
            ],
            Some(b"\x7fELF not really".to_vec()),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let releases: Vec<tether_wire::Release> = h
        .client
        .get("/v1/admin/releases", Some(&h.admin))
        .await
        .ok();
    assert_eq!(releases.len(), 1);
    assert_eq!(
        (releases[0].platform.as_str(), releases[0].version.as_str()),
        ("linux-x86_64", "2.0.0")
    );

    let r: tether_wire::Rollout = rollout_call(
        &h,
        "PUT",
        "/v1/admin/rollouts/prod",
        &serde_json::json!({"version": "2.0.0", "canary_percent": 50}),
    )
    .await
    .ok();
    assert_eq!(r.stage, tether_wire::RolloutStage::Canary);
    assert_eq!(r.progress.agents, 20);
    let mut canary = 0;
    for a in &agents {
        if offered(&h, &a.credential).await.as_deref() == Some("2.0.0") {
            canary += 1;
        }
    }
    assert!(
        (1..20).contains(&canary),
        "a share, not none or all: {canary}"
    );
    let r: tether_wire::Rollout = rollout_call(
        &h,
        "POST",
        "/v1/admin/rollouts/prod/promote",
        &serde_json::json!({}),
    )
    .await
    .ok();
    assert_eq!(r.stage, tether_wire::RolloutStage::All);
    for a in &agents {
        assert_eq!(offered(&h, &a.credential).await.as_deref(), Some("2.0.0"));
    }
    // A pause reason is text from outside: control characters refused.
    rollout_call(
        &h,
        "POST",
        "/v1/admin/rollouts/prod/pause",
        &serde_json::json!({"reason": "a\u{1b}[31m"}),
    )
    .await
    .error(422, ErrorCode::InvalidField);

    // A rollback of the target version pauses the rollout with the reason,
    // and nothing is offered while paused.
    let mut req = checkin_request();
    req.upgrade = Some(UpgradeReport {
        state: UpgradeState::RolledBack,
        version: "2.0.0".into(),
        from: None,
        reason: Some("version 2.0.0 exited (exit status: 3) before it checked in".into()),
        at: time::OffsetDateTime::now_utc(),
    });
    let reply: CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(&agents[0].credential), &req)
        .await
        .ok();
    assert_eq!(
        reply.upgrade, None,
        "not offered the version that rolled back on it"
    );
    let listed: Vec<tether_wire::Rollout> = h
        .client
        .get("/v1/admin/rollouts", Some(&h.admin))
        .await
        .ok();
    assert!(listed[0].paused, "{listed:?}");
    let why = listed[0].pause_reason.clone().unwrap_or_default();
    assert!(why.contains("web-00") && why.contains("exited"), "{why}");
    assert_eq!(listed[0].progress.rolled_back, 1);
    for a in &agents[1..] {
        assert_eq!(offered(&h, &a.credential).await, None);
    }
    // The fleet list says who is behind and why.
    let detail = h.detail(agents[0].agent_id).await;
    assert_eq!(
        detail.summary.rollout.map(|r| r.state),
        Some(tether_wire::AgentRolloutState::RolledBack)
    );
    let detail = h.detail(agents[1].agent_id).await;
    assert_eq!(
        detail.summary.rollout.map(|r| r.state),
        Some(tether_wire::AgentRolloutState::Paused)
    );
    let r: tether_wire::Rollout = rollout_call(
        &h,
        "POST",
        "/v1/admin/rollouts/prod/resume",
        &serde_json::json!({}),
    )
    .await
    .ok();
    assert!(!r.paused);
    assert_eq!(
        offered(&h, &agents[1].credential).await.as_deref(),
        Some("2.0.0")
    );
    let reply = h
        .client
        .send(
            "DELETE",
            "/v1/admin/rollouts/prod",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(offered(&h, &agents[1].credential).await, None);
}
