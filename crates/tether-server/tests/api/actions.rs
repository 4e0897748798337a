//! "Run the doctor and upload": an admin queues the action, the agent gets
//! it at its next check-in (once), uploads a bundle, reports the verdict;
//! the admin lists, downloads and sees the verdict in the agent's detail.

use tether_wire::{
    ActionInfo, ActionKind, ActionResult, ActionState, AgentKind, BundleInfo, CheckinResponse,
    DoctorSummary, ErrorCode,
};

use crate::support::{self, token_request};

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *body).expect("appends");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

#[tokio::test]
async fn queued_doctor_is_delivered_once_and_its_bundle_and_verdict_are_stored() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let other = h.enroll_ok(&t.token, "web-02").await;
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert!(c.actions.is_empty());

    // Queue: {"type":"doctor"} means upload.
    let reply = h
        .client
        .post(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
            &serde_json::json!({"type": "doctor"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let queued: ActionInfo = reply.json();
    assert_eq!(queued.kind, ActionKind::Doctor { upload: true });
    assert_eq!(queued.state, ActionState::Queued);
    // Unknown kinds, bad agents and bad debug windows are refused.
    h.client
        .post(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
            &serde_json::json!({"type": "launch_rockets"}),
        )
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .post(
            &format!("/v1/admin/agents/{}/actions", uuid::Uuid::new_v4()),
            Some(&h.admin),
            &serde_json::json!({"type": "doctor"}),
        )
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .post(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
            &serde_json::json!({"type": "debug", "minutes": 100000}),
        )
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .post(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&e.credential),
            &serde_json::json!({"type": "doctor"}),
        )
        .await
        .error(401, ErrorCode::AdminCredentialRejected);

    // Delivered at the next check-in, once, and only to its agent.
    let c: CheckinResponse = h.checkin(&other.credential).await.ok();
    assert!(c.actions.is_empty());
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.actions.len(), 1);
    assert_eq!(c.actions[0].id, queued.id);
    assert_eq!(c.actions[0].kind, ActionKind::Doctor { upload: true });
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert!(c.actions.is_empty(), "delivered once");

    // The agent uploads its bundle.
    let manifest = serde_json::json!({
        "schema_version": 1,
        "verdict": {"status": "failed", "code": "TETHER-E3101", "root_cause": "refused",
                    "action": "start it", "check": "tcp:127.0.0.1:1", "at": "2026-05-17T12:00:00Z"}
    })
    .to_string();
    let data = tar_gz(&[
        ("MANIFEST.json", manifest.as_bytes()),
        ("REDACTIONS.json", b"[]"),
    ]);
    let auth = format!("Bearer {}", e.credential);
    let reply = h
        .client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[
                ("authorization", &auth),
                ("content-type", "application/gzip"),
            ],
            Some(data.clone()),
        )
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let bundle: BundleInfo = reply.json();
    assert_eq!(bundle.size_bytes, data.len() as u64);
    assert_eq!(
        bundle.verdict.as_ref().map(|v| v.status.as_str()),
        Some("failed")
    );

    // Refusals: no auth, wrong type, not gzip, too large.
    h.client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[("content-type", "application/gzip")],
            Some(data.clone()),
        )
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    h.client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(data.clone()),
        )
        .await
        .error(422, ErrorCode::BundleInvalid);
    let e2 = h
        .client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[
                ("authorization", &auth),
                ("content-type", "application/gzip"),
            ],
            Some(b"<html>not gzip</html>".to_vec()),
        )
        .await
        .error(422, ErrorCode::BundleInvalid);
    assert!(e2.message.contains("gzip signature"), "{}", e2.message);
    let big = vec![0x1f_u8; 16 * 1024 * 1024 + 1];
    let e3 = h
        .client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[
                ("authorization", &auth),
                ("content-type", "application/gzip"),
            ],
            Some(big),
        )
        .await
        .error(413, ErrorCode::BodyTooLarge);
    assert!(e3.message.contains("16 MiB"), "{}", e3.message);

    // The agent reports the result; only once, only its own action.
    let result = ActionResult {
        ok: true,
        message: "doctor ran; bundle uploaded".to_owned(),
        doctor: Some(DoctorSummary {
            status: "failed".to_owned(),
            code: Some(ErrorCode::ConnectRefused),
            root_cause: "refused".to_owned(),
            action: "start it".to_owned(),
            check: Some("tcp:127.0.0.1:1".to_owned()),
            at: time::macros::datetime!(2026-05-17 12:00 UTC),
            bundle_id: Some(bundle.id),
        }),
    };
    let path = format!("/v1/agent/actions/{}/result", queued.id);
    h.client
        .post(&path, Some(&other.credential), &result)
        .await
        .error(404, ErrorCode::NotFound);
    let done: ActionInfo = h
        .client
        .post(&path, Some(&e.credential), &result)
        .await
        .ok();
    assert_eq!(done.state, ActionState::Completed);
    h.client
        .post(&path, Some(&e.credential), &result)
        .await
        .error(409, ErrorCode::Conflict);

    // The admin's view.
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.last_doctor, result.doctor);
    let listed: Vec<BundleInfo> = h
        .client
        .get(
            &format!("/v1/admin/agents/{}/bundles", e.agent_id),
            Some(&h.admin),
        )
        .await
        .ok();
    assert_eq!(listed, vec![bundle.clone()]);
    let actions: Vec<ActionInfo> = h
        .client
        .get(
            &format!("/v1/admin/agents/{}/actions", e.agent_id),
            Some(&h.admin),
        )
        .await
        .ok();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].result.as_ref(), Some(&result));
    let download = h
        .client
        .get(&format!("/v1/admin/bundles/{}", bundle.id), Some(&h.admin))
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(
        download.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/gzip"[..])
    );
    assert_eq!(
        &download.body[..],
        &data[..],
        "downloaded bytes are the uploaded bytes"
    );
    h.client
        .get(
            &format!("/v1/admin/bundles/{}", uuid::Uuid::new_v4()),
            Some(&h.admin),
        )
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .get(
            &format!("/v1/admin/bundles/{}", bundle.id),
            Some(&e.credential),
        )
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
}

/// The escalation capture as an action: its window is checked, it is
/// delivered at check-in like a debug window (an action, not a task), and
/// an older agent that does not know it reads it as `Unknown`.
#[tokio::test]
async fn a_capture_action_is_checked_and_delivered_at_check_in() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let path = format!("/v1/admin/agents/{}/actions", e.agent_id);
    for secs in [0, 1, 3601, 86_400] {
        h.client
            .post(
                &path,
                Some(&h.admin),
                &serde_json::json!({"type": "capture", "secs": secs}),
            )
            .await
            .error(422, ErrorCode::InvalidField);
    }
    let reply = h
        .client
        .post(
            &path,
            Some(&h.admin),
            &serde_json::json!({"type": "capture", "secs": 60, "tls_keylog": true}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let queued: ActionInfo = reply.json();
    assert_eq!(
        queued.kind,
        ActionKind::Capture {
            secs: Some(60),
            tls_keylog: true
        }
    );
    let c: CheckinResponse = h.checkin(&e.credential).await.ok();
    assert_eq!(c.actions.len(), 1, "{c:?}");
    assert_eq!(c.actions[0].id, queued.id);
    assert_eq!(c.actions[0].kind, queued.kind);
    // Without a window: the agent's policy decides.
    let reply = h
        .client
        .post(
            &path,
            Some(&h.admin),
            &serde_json::json!({"type": "capture"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(
        reply.json::<ActionInfo>().kind,
        ActionKind::Capture {
            secs: None,
            tls_keylog: false
        }
    );
}

/// An agent credential rotated in place: the old one works until the new
/// one is first presented, then only the new one does, and a copy still
/// using the old one is refused as replaced. A rotation never presented
/// (the agent crashed before saving it) leaves the old credential working.
#[tokio::test]
async fn a_rotated_credential_replaces_the_old_one_when_first_presented() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let rotate = |credential: String| {
        let h = &h;
        async move {
            h.client
                .post(
                    "/v1/agent/credential/rotate",
                    Some(&credential),
                    &serde_json::json!({}),
                )
                .await
        }
    };
    // Lost: never saved by the agent, never presented.
    let lost: tether_wire::RotatedCredential = rotate(e.credential.clone()).await.ok();
    assert!(lost.credential.starts_with("tac_"));
    let next: tether_wire::RotatedCredential = rotate(e.credential.clone()).await.ok();
    assert_ne!(lost.credential, next.credential);
    let _: CheckinResponse = h.checkin(&e.credential).await.ok();
    // The lost one was replaced by the second rotation: it is nothing.
    h.checkin(&lost.credential)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    // Presented: the new one is the credential now, the old one is refused.
    let c: CheckinResponse = h.checkin(&next.credential).await.ok();
    assert_eq!(c.agent_id, e.agent_id);
    let refused = h
        .checkin(&e.credential)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    assert!(refused.message.contains("replaced"), "{refused:?}");
    let _: CheckinResponse = h.checkin(&next.credential).await.ok();
    // Unauthenticated or by a stranger: refused, nothing issued.
    rotate("tac_not-a-credential-this-server-issued".to_owned())
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
}
