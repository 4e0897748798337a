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
