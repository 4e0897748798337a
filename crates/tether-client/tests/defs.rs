//! The definitions calls (publish, summary, export, group actions) against a
//! real HTTPS server on loopback, including the bulk transport's body cap.

use bytes::Bytes;
use tether_client::{ApiClient, ClientError};
use tether_testlab::canned::{CannedReply, TestServer};
use tether_transport::{Transport, TransportConfig, TransportError};
use tether_wire::{
    ActionInfo, ActionKind, ActionState, ApiError, ChannelSummary, DefsVersion, DeltaInfo,
    ErrorCode,
};
use time::macros::datetime;
use uuid::Uuid;

fn client(server: &TestServer) -> ApiClient {
    let transport = Transport::new(server.transport_config()).expect("transport builds");
    ApiClient::new(transport, server.url()).with_bearer("admin-secret")
}

fn version(n: u64) -> DefsVersion {
    DefsVersion {
        channel: "main".into(),
        version: n,
        sha256: "ab".repeat(32),
        length: 1000,
        content: "text".into(),
        published_at: datetime!(2026-05-17 12:00 UTC),
        notes: Some("weekly".into()),
        full_size: 400,
        deltas: vec![DeltaInfo {
            from_version: n - 1,
            kind: "line".into(),
            size: 40,
        }],
        agents: 0,
    }
}

#[tokio::test]
async fn publish_sends_octet_stream_and_encodes_channel_and_notes() {
    let server = TestServer::scripted(vec![CannedReply::json(201, &version(2))]).await;
    let got = client(&server)
        .publish_defs(
            "main",
            Bytes::from_static(b"rule 1\nrule 2\n"),
            Some("fix #12 & more/less"),
        )
        .await
        .expect("publish succeeds");
    assert_eq!(got, version(2));
    let r = &server.requests()[0];
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(
        r.path,
        "/v1/admin/defs/main/versions?notes=fix%20%2312%20%26%20more%2Fless"
    );
    assert_eq!(
        r.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/octet-stream"[..])
    );
    assert_eq!(
        r.headers.get("authorization").map(|v| v.as_bytes()),
        Some(&b"Bearer admin-secret"[..])
    );
    assert_eq!(&r.body[..], b"rule 1\nrule 2\n");
}

#[tokio::test]
async fn a_hostile_channel_name_stays_one_path_segment() {
    let err = ApiError::new(
        ErrorCode::ChannelInvalid,
        "bad channel",
        datetime!(2026-05-17 12:00 UTC),
    );
    let server = TestServer::scripted(vec![CannedReply::json(422, &err)]).await;
    let got = client(&server)
        .publish_defs("../x?y", Bytes::from_static(b"x"), None)
        .await
        .expect_err("the server refuses it");
    assert_eq!(got.code(), ErrorCode::ChannelInvalid);
    assert_eq!(got.status(), Some(422));
    assert_eq!(
        server.requests()[0].path,
        "/v1/admin/defs/..%2Fx%3Fy/versions"
    );
}

#[tokio::test]
async fn summary_with_and_without_a_channel() {
    let summary = ChannelSummary {
        channel: "main".into(),
        versions: vec![version(2)],
        agents_subscribed: 3,
        agents_in_policy: 2,
        agents_download_problem: 1,
        agents_never_installed: 0,
    };
    let server = TestServer::scripted(vec![CannedReply::json(200, &vec![summary.clone()])]).await;
    let c = client(&server);
    assert_eq!(
        c.defs_summary(None).await.expect("ok"),
        vec![summary.clone()]
    );
    assert_eq!(
        c.defs_summary(Some("a b")).await.expect("ok"),
        vec![summary]
    );
    let reqs = server.requests();
    assert_eq!(reqs[0].path, "/v1/admin/defs/summary");
    assert_eq!(reqs[1].path, "/v1/admin/defs/summary?channel=a%20b");
    assert_eq!(reqs[1].method, http::Method::GET);
}

#[tokio::test]
async fn export_returns_the_tar_bytes_and_refuses_html() {
    let tar = vec![7u8; 10_000];
    let server = TestServer::scripted(vec![
        CannedReply::raw(200, "application/x-tar", tar.clone()),
        CannedReply::raw(200, "text/html", "<html>login</html>"),
    ])
    .await;
    let c = client(&server);
    assert_eq!(c.export_defs("main").await.expect("exports"), tar);
    assert_eq!(server.requests()[0].path, "/v1/admin/defs/main/export");
    let err = c.export_defs("main").await.expect_err("a portal page");
    assert!(matches!(err, ClientError::NotTether { .. }), "{err:?}");
}

#[tokio::test]
async fn export_larger_than_the_cap_needs_the_bulk_transport() {
    let big = vec![1u8; 64 * 1024];
    let server = TestServer::scripted(vec![CannedReply::raw(
        200,
        "application/x-tar",
        big.clone(),
    )])
    .await;
    let small = TransportConfig {
        max_body_bytes: 16 * 1024,
        ..server.transport_config()
    };
    let c = ApiClient::new(
        Transport::new(small.clone()).expect("transport builds"),
        server.url(),
    );
    let err = c.export_defs("main").await.expect_err("over the cap");
    assert!(
        matches!(
            err,
            ClientError::Transport(TransportError::BodyTooLarge { limit: 16384 })
        ),
        "{err:?}"
    );
    let bulk = Transport::new(TransportConfig {
        max_body_bytes: 1024 * 1024,
        ..small
    })
    .expect("transport builds");
    let c = c.with_bulk_transport(bulk);
    assert_eq!(c.export_defs("main").await.expect("fits the bulk cap"), big);
}

#[tokio::test]
async fn group_actions_post_the_kind_and_return_one_action_per_agent() {
    let kind = ActionKind::UpdateDefs {
        channel: Some("main".into()),
    };
    let infos: Vec<ActionInfo> = [Uuid::from_u128(1), Uuid::from_u128(2)]
        .into_iter()
        .map(|agent_id| ActionInfo {
            id: Uuid::new_v4(),
            agent_id,
            kind: kind.clone(),
            state: ActionState::Queued,
            created_at: datetime!(2026-05-17 12:00 UTC),
            delivered_at: None,
            completed_at: None,
            result: None,
        })
        .collect();
    let server = TestServer::scripted(vec![CannedReply::json(200, &infos)]).await;
    let got = client(&server)
        .queue_group_action("lab/eu", &kind)
        .await
        .expect("queued");
    assert_eq!(got, infos);
    let r = &server.requests()[0];
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.path, "/v1/admin/groups/lab%2Feu/actions");
    let sent: ActionKind = serde_json::from_slice(&r.body).expect("the body is the kind");
    assert_eq!(sent, kind);
}
