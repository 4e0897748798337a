//! An agent's life: enroll, check in, approval, silence, return, stop,
//! re-registration and removal, with every transition recorded.

use tether_wire::{
    AgentFlag, AgentKind, AgentStatus, AgentSummary, CheckinResponse, EnrollResponse, ErrorCode,
    Policy, PolicyUpdate, ShutdownNotice,
};
use time::Duration;

use crate::support::{self, checkin_request, enroll_request, token_request};

#[tokio::test]
async fn enroll_then_first_checkin_makes_the_agent_active() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    assert!(e.credential.starts_with("tac_"));
    assert_ne!(e.credential, t.token);
    assert_eq!(
        (e.status, e.kind, e.group.as_str()),
        (AgentStatus::Pending, AgentKind::Connector, "prod")
    );
    assert_eq!(
        (
            e.policy.name.as_str(),
            e.policy.checkin_interval_secs,
            e.policy.jitter_percent
        ),
        ("default", 30, 10)
    );

    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Pending);
    assert_eq!(
        d.summary.external_ip.as_deref(),
        Some("127.0.0.1"),
        "the TCP peer"
    );
    assert_eq!(
        d.transitions[0].reason,
        format!("enrolled with token {}; awaiting first check-in", t.info.id)
    );

    h.clock.advance(Duration::seconds(3));
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!((c.agent_id, c.status), (e.agent_id, AgentStatus::Active));
    assert_eq!(c.policy, e.policy);
    assert!(c.actions.is_empty());
    assert_eq!(
        c.current_agent_version.as_deref(),
        Some(tether_wire::VERSION)
    );
    assert_eq!(c.server_time, h.clock_now());

    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Active);
    assert_eq!(d.summary.last_seen, Some(h.clock_now()));
    assert_eq!(d.summary.hostname, "host-1");
    // ceil(2 × 30 × 1.1) + 10
    assert_eq!((d.checkin_interval_secs, d.inactive_after_secs), (30, 76));
    assert_eq!(d.transitions[0].from, Some(AgentStatus::Pending));
    assert_eq!(
        (d.transitions[0].to, d.transitions[0].reason.as_str()),
        (AgentStatus::Active, "first check-in")
    );
    assert!(d.summary.flags.is_empty(), "{:?}", d.summary.flags);

    let active: Vec<AgentSummary> = h
        .client
        .get("/v1/admin/agents?status=active", Some(&h.admin))
        .await
        .ok();
    assert_eq!(active.len(), 1);
    let pending: Vec<AgentSummary> = h
        .client
        .get("/v1/admin/agents?status=pending", Some(&h.admin))
        .await
        .ok();
    assert!(pending.is_empty());
}

#[tokio::test]
async fn unapproved_agents_wait_and_approval_takes_effect_at_the_next_checkin() {
    let h = support::start().await;
    let mut req = token_request(AgentKind::Provisioning);
    req.require_approval = true;
    let t = h.create_token(&req).await;
    let e = h.enroll_ok(&t.token, "db-01").await;
    assert_eq!(e.status, AgentStatus::Pending);
    let d = h.detail(e.agent_id).await;
    assert!(
        d.transitions[0].reason.ends_with("; awaiting approval"),
        "{}",
        d.transitions[0].reason
    );

    h.clock.advance(Duration::seconds(5));
    let refusal = h
        .checkin(&e.credential)
        .await
        .error(403, ErrorCode::AgentPendingApproval);
    assert!(refusal.message.contains(&e.agent_id.to_string()));
    // The check-in's facts are recorded; the status stays Pending.
    let d = h.detail(e.agent_id).await;
    assert_eq!(
        (d.summary.status, d.summary.last_seen),
        (AgentStatus::Pending, Some(h.clock_now()))
    );
    // A stop notice is refused the same way.
    let r = h
        .client
        .post(
            "/v1/agent/shutdown",
            Some(&e.credential),
            &ShutdownNotice {
                reason: "bye".into(),
            },
        )
        .await;
    r.error(403, ErrorCode::AgentPendingApproval);

    let path = format!("/v1/admin/agents/{}/approve", e.agent_id);
    let auth = format!("Bearer {}", h.admin);
    let approved: AgentSummary = h
        .client
        .send("POST", &path, &[("authorization", &auth)], None)
        .await
        .ok();
    assert_eq!(
        approved.status,
        AgentStatus::Pending,
        "approval is not a check-in"
    );

    h.clock.advance(Duration::seconds(5));
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.status, AgentStatus::Active);
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.transitions[0].reason, "first check-in after approval");

    let missing = format!("/v1/admin/agents/{}/approve", uuid::Uuid::new_v4());
    h.client
        .send("POST", &missing, &[("authorization", &auth)], None)
        .await
        .error(404, ErrorCode::NotFound);
}

#[tokio::test]
async fn silence_makes_an_agent_inactive_and_its_return_active_again() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    h.checkin(&e.credential).await.ok::<CheckinResponse>();

    // Within the threshold nothing happens.
    h.clock.advance(Duration::seconds(76));
    assert_eq!(h.server.sweep_now().await.expect("sweeps"), 0);
    assert_eq!(
        h.detail(e.agent_id).await.summary.status,
        AgentStatus::Active
    );

    h.clock.advance(Duration::seconds(4));
    assert_eq!(h.server.sweep_now().await.expect("sweeps"), 1);
    assert_eq!(
        h.server.sweep_now().await.expect("sweeps"),
        0,
        "already inactive"
    );
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Inactive);
    assert_eq!(
        d.transitions[0].reason,
        "no check-in for 80 s (threshold 76 s)"
    );
    assert_eq!(d.transitions[0].from, Some(AgentStatus::Active));

    h.clock.advance(Duration::seconds(15));
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.status, AgentStatus::Active);
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.transitions[0].reason, "check-in after 95 s of silence");
    let path: Vec<_> = d.transitions.iter().rev().map(|t| t.to).collect();
    assert_eq!(
        path,
        [
            AgentStatus::Pending,
            AgentStatus::Active,
            AgentStatus::Inactive,
            AgentStatus::Active
        ]
    );
}

#[tokio::test]
async fn the_sweeper_timer_runs_on_its_own() {
    let h = support::start_with(|c| c.sweep_interval_ms = 20).await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    h.checkin(&e.credential).await.ok::<CheckinResponse>();
    h.clock.advance(Duration::seconds(500));
    let mut status = AgentStatus::Active;
    for _ in 0..250 {
        status = h.detail(e.agent_id).await.summary.status;
        if status == AgentStatus::Inactive {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, AgentStatus::Inactive);
}

#[tokio::test]
async fn a_clean_stop_is_recorded_and_a_later_checkin_revives() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    h.checkin(&e.credential).await.ok::<CheckinResponse>();
    let r = h
        .client
        .post(
            "/v1/agent/shutdown",
            Some(&e.credential),
            &ShutdownNotice {
                reason: "systemctl stop".into(),
            },
        )
        .await;
    assert_eq!(r.status, 204);
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Stopped);
    assert!(
        d.transitions[0].reason.contains("systemctl stop"),
        "{}",
        d.transitions[0].reason
    );
    // A stopped agent is not swept to Inactive.
    h.clock.advance(Duration::seconds(1000));
    assert_eq!(h.server.sweep_now().await.expect("sweeps"), 0);
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.status, AgentStatus::Active);
    assert_eq!(
        h.detail(e.agent_id).await.transitions[0].reason,
        "check-in after clean stop"
    );
}

#[tokio::test]
async fn re_registration_replaces_the_credential_and_flags_the_old_one() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let first = h.enroll_ok(&t.token, "web-01").await;
    h.checkin(&first.credential).await.ok::<CheckinResponse>();

    h.clock.advance(Duration::seconds(10));
    let mut req = enroll_request(&t.token, "web-01");
    req.previous_credential = Some(first.credential.clone());
    let second: EnrollResponse = h.enroll(&req).await.ok();
    assert_eq!(second.agent_id, first.agent_id, "same identity");
    assert_ne!(second.credential, first.credential);
    let d = h.detail(first.agent_id).await;
    assert!(
        d.transitions[0]
            .reason
            .starts_with("re-registered with token"),
        "{}",
        d.transitions[0].reason
    );

    h.clock.advance(Duration::seconds(10));
    let e = h
        .checkin(&first.credential)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    assert!(e.message.contains("replaced"), "{}", e.message);
    let d = h.detail(first.agent_id).await;
    assert!(
        d.summary.flags.contains(&AgentFlag::CredentialRejected),
        "{:?}",
        d.summary.flags
    );

    h.clock.advance(Duration::seconds(10));
    h.checkin(&second.credential).await.ok::<CheckinResponse>();
    assert!(
        h.detail(first.agent_id).await.summary.flags.is_empty(),
        "a newer check-in clears the flag"
    );

    // A previous credential that matches nothing is ignored: a new agent.
    let mut req = enroll_request(&t.token, "web-02");
    req.previous_credential = Some(format!("tac_{}", "x".repeat(43)));
    let third: EnrollResponse = h.enroll(&req).await.ok();
    assert_ne!(third.agent_id, first.agent_id);
}

#[tokio::test]
async fn removed_agents_lose_their_credential_at_once() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    h.checkin(&e.credential).await.ok::<CheckinResponse>();
    let path = format!("/v1/admin/agents/{}", e.agent_id);
    let auth = format!("Bearer {}", h.admin);
    assert_eq!(
        h.client
            .send("DELETE", &path, &[("authorization", &auth)], None)
            .await
            .status,
        204
    );
    h.checkin(&e.credential)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    h.client
        .get(&path, Some(&h.admin))
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .send("DELETE", &path, &[("authorization", &auth)], None)
        .await
        .error(404, ErrorCode::NotFound);
    let all: Vec<AgentSummary> = h.client.get("/v1/admin/agents", Some(&h.admin)).await.ok();
    assert!(all.is_empty());
}

#[tokio::test]
async fn policies_drive_intervals_and_thresholds() {
    let h = support::start().await;
    let list: Vec<Policy> = h
        .client
        .get("/v1/admin/policies", Some(&h.admin))
        .await
        .ok();
    assert!(
        list.iter()
            .any(|p| p.name == "default" && p.checkin_interval_secs == 30)
    );

    let update = PolicyUpdate {
        defs: Default::default(),
        checkin_interval_secs: 5,
        jitter_percent: 0,
        targets: vec![String::from("ldap.corp:389"), String::from("[::1]:22")],
        max_concurrent_tasks: None,
        if_revision: None,
    };
    let p: Policy = h
        .client
        .json_request("PUT", "/v1/admin/policies/fast", Some(&h.admin), &update)
        .await
        .ok();
    assert_eq!((p.name.as_str(), p.checkin_interval_secs), ("fast", 5));
    assert_eq!(p.targets, update.targets, "targets round-trip");
    let update = PolicyUpdate {
        defs: Default::default(),
        checkin_interval_secs: 6,
        jitter_percent: 0,
        targets: Vec::new(),
        max_concurrent_tasks: None,
        if_revision: None,
    };
    let p2: Policy = h
        .client
        .json_request("PUT", "/v1/admin/policies/fast", Some(&h.admin), &update)
        .await
        .ok();
    assert!(p2.revision > p.revision);

    // An edit based on an older revision is refused and changes nothing.
    let stale = PolicyUpdate {
        checkin_interval_secs: 7,
        if_revision: Some(p.revision),
        ..update.clone()
    };
    let e = h
        .client
        .json_request("PUT", "/v1/admin/policies/fast", Some(&h.admin), &stale)
        .await
        .error(409, ErrorCode::Conflict);
    assert!(e.message.contains("changed meanwhile"), "{}", e.message);
    let current = PolicyUpdate {
        if_revision: Some(p2.revision),
        ..stale
    };
    let p3: Policy = h
        .client
        .json_request("PUT", "/v1/admin/policies/fast", Some(&h.admin), &current)
        .await
        .ok();
    assert_eq!(
        (p3.revision, p3.checkin_interval_secs),
        (p2.revision + 1, 7)
    );
    let update = PolicyUpdate {
        checkin_interval_secs: 6,
        max_concurrent_tasks: Some(2),
        if_revision: None,
        ..current
    };
    let p2: Policy = h
        .client
        .json_request("PUT", "/v1/admin/policies/fast", Some(&h.admin), &update)
        .await
        .ok();

    let mut req = token_request(AgentKind::Connector);
    req.policy = Some("fast".into());
    let t = h.create_token(&req).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    assert_eq!(e.policy, p2);
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.policy.checkin_interval_secs, 6);
    assert_eq!(
        c.policy.max_concurrent_tasks, 2,
        "the agent's limit comes with the check-in"
    );
    // ceil(2 × 6 × 1.0) + 10
    assert_eq!(h.detail(e.agent_id).await.inactive_after_secs, 22);

    let mut req = token_request(AgentKind::Connector);
    req.policy = Some("nonexistent".into());
    let r = h
        .client
        .post("/v1/admin/tokens", Some(&h.admin), &req)
        .await;
    let err = r.error(422, ErrorCode::InvalidField);
    assert!(
        err.message.contains("default") && err.message.contains("fast"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn older_agents_are_flagged_outdated() {
    let h = support::start_with(|c| c.current_agent_version = Some("1.10.0".into())).await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let mut req = enroll_request(&t.token, "old");
    req.agent_version = "1.9.3".into();
    let old: EnrollResponse = h.enroll(&req).await.ok();
    let mut req = enroll_request(&t.token, "new");
    req.agent_version = "1.10.0".into();
    let new: EnrollResponse = h.enroll(&req).await.ok();
    assert_eq!(
        h.detail(old.agent_id).await.summary.flags,
        vec![AgentFlag::VersionOutdated]
    );
    assert!(h.detail(new.agent_id).await.summary.flags.is_empty());
    let mut body = checkin_request();
    body.agent_version = "1.10.0".into();
    let c: CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(&old.credential), &body)
        .await
        .ok();
    assert_eq!(c.current_agent_version.as_deref(), Some("1.10.0"));
    assert!(
        h.detail(old.agent_id).await.summary.flags.is_empty(),
        "upgraded"
    );
}
