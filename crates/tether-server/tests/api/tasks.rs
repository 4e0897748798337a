//! The task queue over the real API: hostile input refused with codes, the
//! lease / heartbeat / result protocol with its fencing, the poll cap,
//! schedules that missed runs, and admin actions still reaching an agent one
//! version older the old way (recorded bodies).

use serde_json::{Value, json};
use tether_wire::{
    ActionInfo, ActionState, AgentKind, CheckinResponse, ErrorCode, HeartbeatReply, ResultAck,
    ScheduleInfo, TaskDetail, TaskInfo, TaskPollReply, TaskState,
};
use uuid::Uuid;

use crate::support::{self, token_request};

fn group_task(spec: Value) -> Value {
    json!({"kind": "doctor", "spec": spec,
           "target": {"type": "group", "group": "prod", "agent_kind": "discovery"}})
}

#[tokio::test]
async fn hostile_task_input_is_refused_with_a_code() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let e = h.enroll_ok(&t.token, "bot-1").await;
    let cases: Vec<(Value, u16, ErrorCode, &str)> = vec![
        (
            json!({"kind": "launch", "spec": {}, "target": {"type": "agent", "agent_id": e.agent_id}}),
            422,
            ErrorCode::TaskSpecInvalid,
            "kind",
        ),
        (
            group_task(json!({"uplaod": true})),
            422,
            ErrorCode::TaskSpecInvalid,
            "uplaod",
        ),
        (
            group_task(json!({"targets": vec!["a:1"; 17]})),
            422,
            ErrorCode::TaskSpecInvalid,
            "at most 16",
        ),
        (
            group_task(json!({"pad": "x".repeat(70_000)})),
            413,
            ErrorCode::BodyTooLarge,
            "",
        ),
        (
            group_task(json!([1, 2])),
            422,
            ErrorCode::TaskSpecInvalid,
            "a JSON object",
        ),
        (
            json!({"kind": "doctor", "spec": {}, "target": {"type": "agent", "agent_id": Uuid::new_v4()}}),
            422,
            ErrorCode::TaskTargetInvalid,
            "does not exist",
        ),
        (
            json!({"kind": "discover", "spec": {"targets": ["0.0.0.0/0"], "ports": [443]},
                   "target": {"type": "group", "group": "prod", "agent_kind": "discovery"}}),
            422,
            ErrorCode::ScanSpecTooLarge,
            "at most 65536 addresses",
        ),
        (
            json!({"kind": "discover", "spec": {"targets": ["10.0.0.1"], "ports": ["1-65535"]},
                   "target": {"type": "group", "group": "prod", "agent_kind": "discovery"}}),
            422,
            ErrorCode::ScanSpecTooLarge,
            "at most 1024 ports",
        ),
        (
            json!({"kind": "discover", "spec": {"targets": [], "ports": [443]},
                   "target": {"type": "group", "group": "prod", "agent_kind": "discovery"}}),
            422,
            ErrorCode::ScanTargetsEmpty,
            "at least one target",
        ),
        (
            json!({"kind": "discover", "spec": {}, "target": {"type": "group", "group": "prod", "agent_kind": "connector"}}),
            422,
            ErrorCode::TaskTargetInvalid,
            "discover tasks run on discovery agents",
        ),
        // An ACME issuer this server has not registered: refused when the
        // task is created, not at the agent's first issue call.
        (
            json!({"kind": "deploy", "spec": {
                "names": ["web.test"],
                "target": {"cert": "/etc/t/cert.pem", "key": "/etc/t/key.pem"},
                "reload": {"command": ["true"]},
                "verify": {"address": "127.0.0.1", "port": 443},
                "issuer": "acme:pebble",
                "challenge": {"listener": 80}},
                "target": {"type": "group", "group": "prod", "agent_kind": "provisioning"}}),
            422,
            ErrorCode::AcmeIssuerUnknown,
            "no ACME issuer named \"pebble\"",
        ),
        (
            json!({"kind": "deploy", "spec": {
                "names": ["web.test"],
                "target": {"cert": "/etc/t/cert.pem", "key": "/etc/t/key.pem"},
                "reload": {"command": ["true"]},
                "verify": {"address": "127.0.0.1", "port": 443},
                "issuer": "acme:Bad Name",
                "challenge": {"listener": 80}},
                "target": {"type": "group", "group": "prod", "agent_kind": "provisioning"}}),
            422,
            ErrorCode::DeploySpecInvalid,
            "issuer",
        ),
        (
            json!({"kind": "doctor", "spec": {}, "target": {"type": "group", "group": "prod", "agent_kind": "discovery", "site": "mars"}}),
            422,
            ErrorCode::TaskTargetInvalid,
            "not defined",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["schedule"] = json!({"type": "cron", "expr": "0 2 * * 1-5"});
                v
            },
            422,
            ErrorCode::TaskScheduleInvalid,
            "by name",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["schedule"] = json!({"type": "cron", "expr": "0 2 * * *", "tz": "Mars/Olympus"});
                v
            },
            422,
            ErrorCode::TaskScheduleInvalid,
            "IANA",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["schedule"] = json!({"type": "interval", "secs": 1});
                v
            },
            422,
            ErrorCode::TaskScheduleInvalid,
            "60 to",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["allowed_hours"] = json!({"from": "25:00", "to": "04:00"});
                v
            },
            422,
            ErrorCode::TaskScheduleInvalid,
            "HH:MM",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["lease_secs"] = json!(1);
                v
            },
            422,
            ErrorCode::InvalidField,
            "10 to 3600",
        ),
        (
            {
                let mut v = group_task(json!({}));
                v["max_attempts"] = json!(0);
                v
            },
            422,
            ErrorCode::InvalidField,
            "1 to 20",
        ),
    ];
    for (body, status, code, needle) in cases {
        let r = h
            .client
            .post("/v1/admin/tasks", Some(&h.admin), &body)
            .await;
        let err = r.error(status, code);
        assert!(
            err.message.contains(needle),
            "{needle:?} not in {:?}",
            err.message
        );
    }
    // Sites: a bad zone, a bad name.
    h.client
        .json_request(
            "PUT",
            "/v1/admin/sites/paris",
            Some(&h.admin),
            &json!({"tz": "Europe/Atlantis"}),
        )
        .await
        .error(422, ErrorCode::SiteInvalid);
    h.client
        .json_request(
            "PUT",
            "/v1/admin/sites/a%20b",
            Some(&h.admin),
            &json!({"tz": "UTC"}),
        )
        .await
        .error(422, ErrorCode::SiteInvalid);
    // Agents cannot create tasks; admins cannot poll.
    h.client
        .post(
            "/v1/admin/tasks",
            Some(&e.credential),
            &group_task(json!({})),
        )
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    h.client
        .post(
            "/v1/agent/tasks/poll",
            Some(&h.admin),
            &json!({"wait_secs": 0, "capacity": 1, "kinds": ["doctor"]}),
        )
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
}

#[tokio::test]
async fn leases_heartbeats_and_results_are_fenced_by_epoch() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let a = h.enroll_ok(&t.token, "bot-a").await;
    let b = h.enroll_ok(&t.token, "bot-b").await;
    let _: CheckinResponse = h.checkin(&a.credential).await.ok();
    let _: CheckinResponse = h.checkin(&b.credential).await.ok();
    let mut body = group_task(json!({"upload": false}));
    body["lease_secs"] = json!(30);
    body["max_attempts"] = json!(3);
    let created: TaskInfo<Value> = {
        let r = h
            .client
            .post("/v1/admin/tasks", Some(&h.admin), &body)
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    assert_eq!(created.state, TaskState::Queued);
    assert_eq!(
        created.waiting.as_deref(),
        Some("waiting for a free agent (2 Active of kind discovery in group prod)")
    );
    let poll = json!({"wait_secs": 1, "capacity": 4, "kinds": ["doctor", "update_defs"]});
    let got: TaskPollReply<Value> = h
        .client
        .post("/v1/agent/tasks/poll", Some(&a.credential), &poll)
        .await
        .ok();
    assert_eq!(got.leases.len(), 1);
    let lease = &got.leases[0];
    assert_eq!(
        (lease.task_id, lease.epoch, lease.attempt),
        (created.id, 1, 1)
    );
    assert_eq!(lease.spec, json!({"upload": false}));
    // Nothing left for b: its poll is held for its wait, then returns empty.
    let none: TaskPollReply<Value> = h
        .client
        .post("/v1/agent/tasks/poll", Some(&b.credential), &poll)
        .await
        .ok();
    assert!(none.leases.is_empty());

    let hb = format!("/v1/agent/tasks/{}/heartbeat", created.id);
    let beat: HeartbeatReply = h
        .client
        .post(
            &hb,
            Some(&a.credential),
            &json!({"epoch": 1, "progress": {"done": 40, "total": 100, "message": "scanning"}}),
        )
        .await
        .ok();
    assert!(!beat.cancel);
    let shown: TaskDetail<Value> = h
        .client
        .get(&format!("/v1/admin/tasks/{}", created.id), Some(&h.admin))
        .await
        .ok();
    let waiting = shown
        .task
        .waiting
        .expect("a leased task says why it is not done");
    assert!(
        waiting.starts_with("leased to bot-a until ") && waiting.ends_with("at 40 % (scanning)"),
        "{waiting}"
    );
    // Another agent, a stale epoch, control characters: refused with codes.
    h.client
        .post(&hb, Some(&b.credential), &json!({"epoch": 1}))
        .await
        .error(409, ErrorCode::TaskNotLeased);
    h.client
        .post(&hb, Some(&a.credential), &json!({"epoch": 0}))
        .await
        .error(409, ErrorCode::TaskStaleEpoch);
    h.client
        .post(
            &hb,
            Some(&a.credential),
            &json!({"epoch": 1, "progress": {"done": 1, "message": "\u{1b}[31m"}}),
        )
        .await
        .error(422, ErrorCode::InvalidField);

    let res = format!("/v1/agent/tasks/{}/results", created.id);
    let chunk = json!({"epoch": 1, "chunk": 0, "items": {"status": "healthy", "root_cause": "none", "action": "", "at": "2026-05-17T12:00:00Z"}});
    let ack: ResultAck = h.client.post(&res, Some(&a.credential), &chunk).await.ok();
    assert!(ack.stored);
    let again: ResultAck = h.client.post(&res, Some(&a.credential), &chunk).await.ok();
    assert!(
        !again.stored,
        "the same (task, epoch, chunk) is stored once"
    );
    h.client
        .post(&res, Some(&a.credential), &json!({"epoch": 7, "chunk": 1}))
        .await
        .error(409, ErrorCode::TaskStaleEpoch);
    let end = json!({"epoch": 1, "chunk": 1, "outcome": {"outcome": "ok", "message": "done"}});
    let ack: ResultAck = h.client.post(&res, Some(&a.credential), &end).await.ok();
    assert_eq!(ack.state, TaskState::Succeeded);
    let replay: ResultAck = h.client.post(&res, Some(&a.credential), &end).await.ok();
    assert!(
        !replay.stored,
        "a resent last chunk is acknowledged, not stored again"
    );
    h.client
        .post(&hb, Some(&a.credential), &json!({"epoch": 1}))
        .await
        .error(409, ErrorCode::TaskFinal);
    let shown: TaskDetail<Value> = h
        .client
        .get(&format!("/v1/admin/tasks/{}", created.id), Some(&h.admin))
        .await
        .ok();
    assert_eq!(shown.task.state, TaskState::Succeeded);
    assert_eq!(shown.results.len(), 1);
    assert_eq!(shown.task.result_chunks, 2);
    // The doctor verdict became the agent's last one.
    assert_eq!(
        h.detail(a.agent_id).await.last_doctor.map(|d| d.status),
        Some("healthy".to_owned())
    );
    // Retrying a finished task is refused; cancelling too.
    h.client
        .post(
            &format!("/v1/admin/tasks/{}/retry", created.id),
            Some(&h.admin),
            &json!(null),
        )
        .await
        .error(409, ErrorCode::TaskNotRetriable);
    h.client
        .post(
            &format!("/v1/admin/tasks/{}/cancel", created.id),
            Some(&h.admin),
            &json!(null),
        )
        .await
        .error(409, ErrorCode::TaskFinal);
}

#[tokio::test]
async fn polls_past_the_cap_are_told_to_come_back() {
    let h = support::start_with(|c| c.max_task_pollers = 1).await;
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let a = h.enroll_ok(&t.token, "bot-a").await;
    let b = h.enroll_ok(&t.token, "bot-b").await;
    let poll = json!({"wait_secs": 3, "capacity": 1, "kinds": ["doctor"]});
    let client = h.client.clone();
    let cred = a.credential.clone();
    let poll_a = poll.clone();
    let held = tokio::spawn(async move {
        client
            .post("/v1/agent/tasks/poll", Some(&cred), &poll_a)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = h
        .client
        .post("/v1/agent/tasks/poll", Some(&b.credential), &poll)
        .await;
    r.error(503, ErrorCode::TaskPollersFull);
    assert!(r.headers.get("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(held.await.expect("poll").status, 200);
}

#[tokio::test]
async fn a_schedule_that_missed_runs_runs_once_and_names_them() {
    let h = support::start().await;
    h.client
        .json_request(
            "PUT",
            "/v1/admin/sites/paris",
            Some(&h.admin),
            &json!({"tz": "Europe/Paris"}),
        )
        .await
        .ok::<Value>();
    // The enrollment token sets the site label; an admin can change it.
    let mut req = token_request(AgentKind::Connector);
    req.site = Some("paris".into());
    let t = h.create_token(&req).await;
    let e = h.enroll_ok(&t.token, "bot-paris").await;
    assert_eq!(h.detail(e.agent_id).await.site.as_deref(), Some("paris"));
    h.client
        .json_request(
            "PUT",
            &format!("/v1/admin/agents/{}/site", e.agent_id),
            Some(&h.admin),
            &json!({"site": "lyon"}),
        )
        .await
        .error(422, ErrorCode::SiteInvalid);
    let r = h
        .client
        .json_request(
            "PUT",
            &format!("/v1/admin/agents/{}/site", e.agent_id),
            Some(&h.admin),
            &json!({"site": null}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(h.detail(e.agent_id).await.site, None);
    let mut body = json!({"kind": "doctor", "spec": {},
        "target": {"type": "group", "group": "prod", "agent_kind": "discovery", "site": "paris"}});
    body["schedule"] = json!({"type": "interval", "secs": 600});
    let r = h
        .client
        .post("/v1/admin/tasks", Some(&h.admin), &body)
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let s: ScheduleInfo<Value> = r.json();
    assert_eq!(s.tz, "Europe/Paris", "the site's zone");
    // The server was "down" for an hour: six runs were due.
    h.clock.advance(time::Duration::minutes(61));
    let swept = tether_server::service::tasks::sweep(h.server.ctx())
        .await
        .expect("sweeps");
    assert_eq!(swept.fired, 1, "missed runs run once");
    let again = tether_server::service::tasks::sweep(h.server.ctx())
        .await
        .expect("sweeps");
    assert_eq!(again.fired, 0);
    let listed: Vec<ScheduleInfo<Value>> = h
        .client
        .get("/v1/admin/schedules", Some(&h.admin))
        .await
        .ok();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].missed.len(),
        5,
        "the five runs folded into this one: {:?}",
        listed[0].missed
    );
    assert!(listed[0].next_run_at > tether_wire::Clock::now(&h.clock));
    let tasks: Vec<TaskInfo<Value>> = h.client.get("/v1/admin/tasks", Some(&h.admin)).await.ok();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].schedule_id, Some(s.id));
    assert_eq!(
        tasks[0].waiting.as_deref(),
        Some("no eligible agent (none of kind discovery in group prod at site paris)")
    );
}

/// An agent one version older knows nothing of tasks: it checks in with the
/// body it always sent, gets the doctor action in the reply, and reports
/// with the result body it always sent. Bodies recorded from that version.
#[tokio::test]
async fn an_older_agent_still_gets_admin_actions_at_check_in() {
    const OLD_CHECKIN: &str = r#"{"agent_version":"0.1.0","facts":{"hostname":"old-host","os":"linux debian 12","internal_ips":["10.0.0.9"],"uptime_secs":77},"definitions":{},"last_errors":{},"defs":[]}"#;
    const OLD_RESULT: &str = r#"{"ok":true,"message":"doctor verdict failed","doctor":{"status":"failed","code":"TETHER-E3101","root_cause":"refused","action":"start it","check":"tcp:127.0.0.1:1","at":"2026-05-17T12:00:00Z","bundle_id":null}}"#;
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "old-host").await;
    let auth = format!("Bearer {}", e.credential);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let checkin = |h: &support::Harness| {
        let c = h.client.clone();
        async move {
            c.send(
                "POST",
                "/v1/agent/checkin",
                &headers,
                Some(OLD_CHECKIN.as_bytes().to_vec()),
            )
            .await
        }
    };
    let first: CheckinResponse = checkin(&h).await.ok();
    assert!(first.actions.is_empty());
    // The admin's action is a task underneath…
    let queued: ActionInfo = h
        .client
        .post(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
            &json!({"type": "doctor", "upload": false}),
        )
        .await
        .json();
    let task: TaskDetail<Value> = h
        .client
        .get(&format!("/v1/admin/tasks/{}", queued.id), Some(&h.admin))
        .await
        .ok();
    assert_eq!(task.task.state, TaskState::Queued);
    // …and reaches the old agent in its check-in reply, once.
    let reply = checkin(&h).await;
    let raw: Value = reply.json();
    assert_eq!(
        raw["actions"],
        json!([{"id": queued.id, "type": "doctor", "upload": false}]),
        "the action as the old agent parses it"
    );
    let again: CheckinResponse = checkin(&h).await.ok();
    assert!(again.actions.is_empty(), "delivered once");
    let done = h
        .client
        .send(
            "POST",
            &format!("/v1/agent/actions/{}/result", queued.id),
            &headers,
            Some(OLD_RESULT.as_bytes().to_vec()),
        )
        .await;
    let done: ActionInfo = done.ok();
    assert_eq!(done.state, ActionState::Completed);
    let task: TaskDetail<Value> = h
        .client
        .get(&format!("/v1/admin/tasks/{}", queued.id), Some(&h.admin))
        .await
        .ok();
    assert_eq!(task.task.state, TaskState::Succeeded);
    assert_eq!(task.results.len(), 1, "the verdict is the task's result");
    let listed: Vec<ActionInfo> = h
        .client
        .get(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
        )
        .await
        .ok();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ActionState::Completed);
    assert_eq!(
        listed[0]
            .result
            .as_ref()
            .and_then(|r| r.doctor.as_ref())
            .map(|d| d.status.as_str()),
        Some("failed")
    );
    assert_eq!(
        h.detail(e.agent_id).await.last_doctor.map(|d| d.status),
        Some("failed".to_owned())
    );
}
