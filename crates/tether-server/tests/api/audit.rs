//! The admin audit log over real HTTPS: every admin action is found with
//! its actor, route, target, address and outcome, refused credentials as
//! `unauthenticated`, reads are not recorded, nothing secret is kept, the
//! PROXY-protocol address is the one recorded, and hostile query
//! parameters get stable codes.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tether_wire::{
    AgentKind, AuditEntry, CreateAdminTokenRequest, CreatedAdminToken, ErrorCode,
    NEXT_CURSOR_HEADER,
};
use tokio::io::AsyncWriteExt as _;

use crate::support::{self, Client, token_request};

fn find<'a>(log: &'a [AuditEntry], method: &str, route: &str) -> &'a AuditEntry {
    log.iter()
        .find(|e| e.method == method && e.route == route)
        .unwrap_or_else(|| panic!("no {method} {route} in the audit log: {log:#?}"))
}

#[tokio::test]
async fn admin_actions_are_recorded_with_who_what_where_and_the_outcome() {
    let h = support::start().await;
    let auth = format!("Bearer {}", h.admin);

    // An enrollment token (its secret must not be recorded).
    let mut req = token_request(AgentKind::Provisioning);
    req.require_approval = true;
    let token = h.create_token(&req).await;
    // A named admin credential (its secret neither).
    let created: CreatedAdminToken = h
        .client
        .post(
            "/v1/admin/admin-tokens",
            Some(&h.admin),
            &CreateAdminTokenRequest { name: "ci".into() },
        )
        .await
        .json();
    // An agent approved, then removed, by the new credential.
    let e = h.enroll_ok(&token.token, "db-01").await;
    let approve = format!("/v1/admin/agents/{}/approve", e.agent_id);
    let ci_auth = format!("Bearer {}", created.token);
    let r = h
        .client
        .send("POST", &approve, &[("authorization", &ci_auth)], None)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let remove = format!("/v1/admin/agents/{}", e.agent_id);
    let r = h
        .client
        .send("DELETE", &remove, &[("authorization", &ci_auth)], None)
        .await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    // A refused credential, and one that was never sent.
    h.client
        .send(
            "POST",
            &approve,
            &[("authorization", "Bearer tta_not-a-real-credential")],
            None,
        )
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    h.client
        .send("DELETE", &remove, &[], None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    // A failing action by a good credential keeps its code.
    let missing = format!("/v1/admin/agents/{}/approve", uuid::Uuid::new_v4());
    let r = h
        .client
        .send("POST", &missing, &[("authorization", &auth)], None)
        .await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // Reads are not actions.
    let _ = h.client.get("/v1/admin/agents", Some(&h.admin)).await;

    let reply = h.client.get("/v1/admin/audit", Some(&h.admin)).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let log: Vec<AuditEntry> = reply.ok();
    assert_eq!(log.len(), 7, "seven actions, no reads: {log:#?}");
    assert!(
        log.windows(2)
            .all(|w| (w[0].at, w[0].id) >= (w[1].at, w[1].id)),
        "newest first"
    );
    assert!(log.iter().all(|e| e.method != "GET"));
    // Nothing secret anywhere in the JSON.
    for secret in [&token.token, &created.token, &h.admin, &e.credential] {
        assert!(!text.contains(secret.as_str()), "a secret leaked: {text}");
    }
    assert!(!text.contains("tta_not-a-real-credential"), "{text}");

    let t = find(&log, "POST", "/v1/admin/tokens");
    assert_eq!((t.status, t.target.as_deref()), (200, None));
    assert_eq!(t.address.as_deref(), Some("127.0.0.1"));
    assert!(t.actor_id.is_some());
    let bootstrap_actor = t.actor.clone();
    let a = find(&log, "POST", "/v1/admin/admin-tokens");
    assert_eq!(
        (a.actor.as_str(), a.status),
        (bootstrap_actor.as_str(), 201)
    );

    let approved = log
        .iter()
        .find(|x| x.route == "/v1/admin/agents/{id}/approve" && x.status == 200)
        .expect("the approval");
    assert_eq!(approved.actor, "ci");
    assert_eq!(approved.actor_id, Some(created.info.id));
    assert_eq!(approved.path, approve);
    assert_eq!(approved.target, Some(e.agent_id.to_string()));
    assert_eq!(approved.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(approved.code, None);
    assert_eq!(approved.at, h.clock_now());

    let removed = log
        .iter()
        .find(|x| x.method == "DELETE" && x.actor == "ci")
        .expect("the removal");
    assert_eq!(removed.route, "/v1/admin/agents/{id}");
    assert_eq!(removed.target, Some(e.agent_id.to_string()));

    let refused: Vec<&AuditEntry> = log
        .iter()
        .filter(|x| x.actor == tether_wire::UNAUTHENTICATED)
        .collect();
    assert_eq!(refused.len(), 2, "{log:#?}");
    for x in &refused {
        assert_eq!(x.status, 401);
        assert_eq!(x.actor_id, None);
        assert_eq!(
            x.code.as_deref(),
            Some(ErrorCode::AdminCredentialRejected.as_str())
        );
        assert_eq!(x.target, Some(e.agent_id.to_string()));
    }
    let failed = log
        .iter()
        .find(|x| x.status == 404)
        .expect("the failed approval");
    assert_eq!(failed.code.as_deref(), Some(ErrorCode::NotFound.as_str()));
    assert_eq!(failed.actor, bootstrap_actor);

    // Filters: by actor, by since, and pages that reach every entry.
    let ci: Vec<AuditEntry> = h
        .client
        .get("/v1/admin/audit?actor=ci", Some(&h.admin))
        .await
        .ok();
    assert_eq!(ci.len(), 2, "{ci:#?}");
    let none: Vec<AuditEntry> = h
        .client
        .get("/v1/admin/audit?since=2099-01-01T00:00:00Z", Some(&h.admin))
        .await
        .ok();
    assert!(none.is_empty());
    let recent: Vec<AuditEntry> = h
        .client
        .get("/v1/admin/audit?since=1h", Some(&h.admin))
        .await
        .ok();
    assert_eq!(recent.len(), 7);
    let mut paged = Vec::new();
    let mut path = "/v1/admin/audit?limit=3".to_owned();
    loop {
        let r = h.client.get(&path, Some(&h.admin)).await;
        let next = r
            .headers
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let rows: Vec<AuditEntry> = r.ok();
        paged.extend(rows);
        match next {
            Some(c) => path = format!("/v1/admin/audit?limit=3&after={c}"),
            None => break,
        }
    }
    assert_eq!(paged, log, "pages of 3 give the same entries in order");
}

#[tokio::test]
async fn hostile_audit_queries_get_stable_codes() {
    let h = support::start().await;
    for (query, code) in [
        ("after=nonsense", ErrorCode::InvalidCursor),
        ("after=1.not-a-uuid", ErrorCode::InvalidCursor),
        (
            "after=99999999999999999999.00000000-0000-0000-0000-000000000000",
            ErrorCode::InvalidCursor,
        ),
        ("limit=0", ErrorCode::InvalidField),
        ("limit=100000", ErrorCode::InvalidField),
        ("limit=-1", ErrorCode::InvalidField),
        ("since=yesterday", ErrorCode::InvalidField),
        ("since=2h3m", ErrorCode::InvalidField),
        ("since=99999999999999d", ErrorCode::InvalidField),
        ("since=-5h", ErrorCode::InvalidField),
        ("actor=", ErrorCode::InvalidField),
        ("actor=%0Aevil", ErrorCode::InvalidField),
        ("actor=%FF", ErrorCode::InvalidField),
        ("sort=desc", ErrorCode::InvalidField),
    ] {
        let r = h
            .client
            .get(&format!("/v1/admin/audit?{query}"), Some(&h.admin))
            .await;
        assert_eq!(
            r.status,
            code.http_status(),
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.error(code.http_status(), code);
    }
    let long = "a".repeat(500);
    h.client
        .get(&format!("/v1/admin/audit?actor={long}"), Some(&h.admin))
        .await
        .error(
            ErrorCode::InvalidField.http_status(),
            ErrorCode::InvalidField,
        );
    // Reading the log needs an admin credential.
    h.client
        .get("/v1/admin/audit", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    // A very long path is recorded capped.
    let long_path = format!("/v1/admin/agents/{}/approve", "x".repeat(5000));
    let r = h
        .client
        .send(
            "POST",
            &long_path,
            &[("authorization", &format!("Bearer {}", h.admin))],
            None,
        )
        .await;
    assert!(r.status >= 400);
    let log: Vec<AuditEntry> = h.client.get("/v1/admin/audit", Some(&h.admin)).await.ok();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].path.chars().count(), tether_wire::AUDIT_PATH_MAX);
    assert!(
        log[0]
            .target
            .as_ref()
            .is_some_and(|t| t.chars().count() <= 128)
    );
}

#[tokio::test]
async fn the_proxy_protocol_address_is_the_one_recorded() {
    let h = support::start_with(|c| {
        c.proxy_protocol_from = vec!["127.0.0.1/32".into()];
    })
    .await;
    let client = Client::new(&h.server);
    let mut tcp = tokio::net::TcpStream::connect(h.server.local_addr)
        .await
        .expect("connects");
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 443\r\n")
        .await
        .expect("writes the header");
    let tls = client.tls_on(tcp, "localhost").await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let auth = format!("Bearer {}", h.admin);
    let body = serde_json::to_vec(&token_request(AgentKind::Provisioning)).expect("json");
    let r = Client::send_on(
        &mut sender,
        "POST",
        "/v1/admin/tokens",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = Client::send_on(
        &mut sender,
        "GET",
        "/v1/admin/audit",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let log: Vec<AuditEntry> = r.ok();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].address.as_deref(), Some("203.0.113.9"));
}
