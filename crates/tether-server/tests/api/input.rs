//! Hostile input: every bad request gets the right 4xx code in an ApiError
//! body, and nothing ever answers a bare 500.

use tether_wire::{
    AgentKind, AgentSummary, ApiError, CheckinResponse, ErrorCode, Policy, PolicyUpdate,
};

use crate::support::{self, enroll_request, token_request};

#[tokio::test]
async fn malformed_bodies_are_refused_with_serde_s_message() {
    let h = support::start().await;
    let json = [("content-type", "application/json")];
    let r = h
        .client
        .send("POST", "/v1/enroll", &json, Some(b"{not json".to_vec()))
        .await;
    let e = r.error(400, ErrorCode::MalformedJson);
    assert!(e.message.contains("line 1"), "{}", e.message);

    let r = h
        .client
        .send(
            "POST",
            "/v1/enroll",
            &json,
            Some(b"{\"token\": 5}".to_vec()),
        )
        .await;
    r.error(400, ErrorCode::MalformedJson);

    // A field this server does not know is ignored (a newer agent may send
    // one: ARCHITECTURE.md, wire compatibility) and grants nothing: the body
    // is judged on what it knows, here an unknown token.
    let mut body = serde_json::to_value(enroll_request("tet_x", "a")).expect("json");
    body["admin"] = serde_json::Value::Bool(true);
    h.client
        .post("/v1/enroll", None, &body)
        .await
        .error(401, ErrorCode::TokenUnknown);

    let r = h
        .client
        .send(
            "POST",
            "/v1/enroll",
            &[("content-type", "text/plain")],
            Some(b"{}".to_vec()),
        )
        .await;
    let e = r.error(415, ErrorCode::UnsupportedMediaType);
    assert!(e.message.contains("text/plain"), "{}", e.message);
    h.client
        .send("POST", "/v1/enroll", &[], Some(b"{}".to_vec()))
        .await
        .error(415, ErrorCode::UnsupportedMediaType);
    h.client
        .send("POST", "/v1/enroll", &json, None)
        .await
        .error(400, ErrorCode::MalformedJson);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_the_limit() {
    let h = support::start_with(|c| c.max_body_bytes = 4096).await;
    let big = format!("{{\"token\":\"{}\"}}", "a".repeat(5000));
    let r = h
        .client
        .send(
            "POST",
            "/v1/enroll",
            &[("content-type", "application/json")],
            Some(big.into_bytes()),
        )
        .await;
    let e = r.error(413, ErrorCode::BodyTooLarge);
    assert!(e.message.contains("4096 bytes"), "{}", e.message);

    // Chunked, so no Content-Length announces it: the limit still holds.
    let chunk = "a".repeat(3000);
    let raw = format!(
        "POST /v1/enroll HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let reply = h.client.raw(raw.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("TETHER-E4002"), "{reply}");
}

#[tokio::test]
async fn bad_ids_routes_and_methods_get_json_errors() {
    let h = support::start().await;
    let e = h
        .client
        .get("/v1/admin/agents/not-a-uuid", Some(&h.admin))
        .await
        .error(400, ErrorCode::InvalidId);
    assert!(e.message.contains("not-a-uuid"), "{}", e.message);
    let auth = format!("Bearer {}", h.admin);
    h.client
        .send(
            "POST",
            "/v1/admin/tokens/1%20OR%201=1/revoke",
            &[("authorization", &auth)],
            None,
        )
        .await
        .error(400, ErrorCode::InvalidId);
    h.client
        .send(
            "DELETE",
            "/v1/admin/agents/%ff%fe",
            &[("authorization", &auth)],
            None,
        )
        .await
        .error(400, ErrorCode::InvalidId);
    h.client
        .get(
            &format!("/v1/admin/agents/{}", uuid::Uuid::new_v4()),
            Some(&h.admin),
        )
        .await
        .error(404, ErrorCode::NotFound);

    let e = h
        .client
        .get("/v1/nothing/here", None)
        .await
        .error(404, ErrorCode::NotFound);
    assert!(e.message.contains("/v1/nothing/here"), "{}", e.message);
    let e = h
        .client
        .get("/v1/enroll", None)
        .await
        .error(405, ErrorCode::MethodNotAllowed);
    assert!(e.message.contains("GET"), "{}", e.message);
    h.client
        .send("PATCH", "/v1/admin/tokens", &[], None)
        .await
        .error(405, ErrorCode::MethodNotAllowed);

    h.client
        .get("/v1/admin/agents?status=zombie", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .get("/v1/admin/agents?limit=-1", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .get("/v1/admin/agents?drop=table", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    let ok: Vec<AgentSummary> = h
        .client
        .get("/v1/admin/agents?status=Active&limit=5", Some(&h.admin))
        .await
        .ok();
    assert!(ok.is_empty());
}

#[tokio::test]
async fn agent_credentials_missing_garbage_or_unknown_are_refused() {
    let h = support::start().await;
    let body = support::checkin_request();
    h.client
        .post("/v1/agent/checkin", None, &body)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    h.client
        .post("/v1/agent/checkin", Some("' OR 1=1 --"), &body)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    let unknown = format!("tac_{}", "Z".repeat(43));
    let e = h
        .client
        .post("/v1/agent/checkin", Some(&unknown), &body)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    assert!(e.message.contains("not recognised"), "{}", e.message);
    let r = h
        .client
        .send(
            "POST",
            "/v1/agent/checkin",
            &[
                ("authorization", "Bearer"),
                ("content-type", "application/json"),
            ],
            Some(b"{}".to_vec()),
        )
        .await;
    r.error(401, ErrorCode::AgentCredentialRejected);
    // Authentication comes before the body: garbage with no credential is 401.
    let r = h
        .client
        .send(
            "POST",
            "/v1/agent/shutdown",
            &[("content-type", "application/json")],
            Some(b"{{{".to_vec()),
        )
        .await;
    r.error(401, ErrorCode::AgentCredentialRejected);
    // A non-UTF-8 header value is treated as absent.
    let raw = b"POST /v1/agent/checkin HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer \xff\xfe\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let reply = h.client.raw(raw).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.contains("TETHER-E2201"), "{reply}");
}

#[tokio::test]
async fn field_rules_are_enforced_and_sql_metacharacters_stored_verbatim() {
    let h = support::start().await;
    let admin = Some(h.admin.as_str());
    let bad_token = |f: &dyn Fn(&mut tether_wire::CreateTokenRequest)| {
        let mut r = token_request(AgentKind::Connector);
        f(&mut r);
        r
    };
    for (req, field) in [
        (bad_token(&|r| r.group = "prod eu".into()), "group"),
        (bad_token(&|r| r.group = String::new()), "group"),
        (bad_token(&|r| r.group = "g".repeat(65)), "group"),
        (bad_token(&|r| r.group = "a';--".into()), "group"),
        (bad_token(&|r| r.valid_for_secs = 30), "valid_for_secs"),
        (
            bad_token(&|r| r.valid_for_secs = 366 * 86_400),
            "valid_for_secs",
        ),
        (
            bad_token(&|r| r.valid_for_secs = u64::MAX),
            "valid_for_secs",
        ),
        (bad_token(&|r| r.max_uses = Some(0)), "max_uses"),
        (bad_token(&|r| r.max_uses = Some(1_000_001)), "max_uses"),
        (bad_token(&|r| r.policy = Some("no/slash".into())), "policy"),
        (
            bad_token(&|r| r.not_before = Some(time::macros::datetime!(9999-12-31 23:59 UTC))),
            "not_before",
        ),
    ] {
        let e: ApiError = h
            .client
            .post("/v1/admin/tokens", admin, &req)
            .await
            .error(422, ErrorCode::InvalidField);
        assert!(
            e.message.starts_with(&format!("field {field}: got ")),
            "{}",
            e.message
        );
        assert!(e.message.contains("expected"), "{}", e.message);
    }
    for (name, body) in [
        (
            "fast",
            PolicyUpdate {
                defs: Default::default(),
                checkin_interval_secs: 4,
                jitter_percent: 10,
                targets: Vec::new(),
                max_concurrent_tasks: None,
                if_revision: None,
            },
        ),
        (
            "fast",
            PolicyUpdate {
                defs: Default::default(),
                checkin_interval_secs: 86_401,
                jitter_percent: 10,
                targets: Vec::new(),
                max_concurrent_tasks: None,
                if_revision: None,
            },
        ),
        (
            "fast",
            PolicyUpdate {
                defs: Default::default(),
                checkin_interval_secs: 30,
                jitter_percent: 51,
                targets: Vec::new(),
                max_concurrent_tasks: None,
                if_revision: None,
            },
        ),
        (
            "bad%20name",
            PolicyUpdate {
                defs: Default::default(),
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: Vec::new(),
                max_concurrent_tasks: None,
                if_revision: None,
            },
        ),
    ] {
        let r = h
            .client
            .json_request("PUT", &format!("/v1/admin/policies/{name}"), admin, &body)
            .await;
        r.error(422, ErrorCode::InvalidField);
    }
    // Doctor targets: host:port with a sane host and port, at most 64.
    let too_many: Vec<String> = (1..=65).map(|p| format!("ldap.corp:{p}")).collect();
    for targets in [
        vec![String::from("ldap.corp")],
        vec![String::from("ldap.corp:0")],
        vec![String::from("ldap.corp:65536")],
        vec![String::from("ok.corp:22"), String::from("bad host:22")],
        vec![String::from("evil;rm -rf:22")],
        vec![format!("{}:22", "a".repeat(254))],
        too_many,
    ] {
        let body = PolicyUpdate {
            defs: Default::default(),
            checkin_interval_secs: 30,
            jitter_percent: 10,
            targets,
            max_concurrent_tasks: None,
            if_revision: None,
        };
        let e = h
            .client
            .json_request("PUT", "/v1/admin/policies/targets", admin, &body)
            .await
            .error(422, ErrorCode::InvalidField);
        assert!(
            e.message.starts_with("field targets: got "),
            "{}",
            e.message
        );
    }
    // Long tasks at once: 1 to 32.
    for (n, json) in [(0_u32, "0"), (33, "33"), (u32::MAX, "4294967295")] {
        let body = PolicyUpdate {
            defs: Default::default(),
            checkin_interval_secs: 30,
            jitter_percent: 10,
            targets: Vec::new(),
            max_concurrent_tasks: Some(n),
            if_revision: None,
        };
        let e = h
            .client
            .json_request("PUT", "/v1/admin/policies/targets", admin, &body)
            .await
            .error(422, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            format!("field max_concurrent_tasks: got {json}; expected 1 to 32"),
        );
    }
    for bad in [
        serde_json::json!(-1),
        serde_json::json!("4"),
        serde_json::json!(1.5),
    ] {
        let body = serde_json::json!({"checkin_interval_secs": 30, "max_concurrent_tasks": bad});
        let r = h
            .client
            .json_request("PUT", "/v1/admin/policies/targets", admin, &body)
            .await;
        assert!(
            (400..500).contains(&r.status),
            "{bad}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let list: Vec<Policy> = h.client.get("/v1/admin/policies", admin).await.ok();
    assert!(
        list.iter().all(|p| p.name != "targets"),
        "a refused policy is not saved"
    );

    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    for name in [String::new(), "x".repeat(129), "tab\there".to_owned()] {
        h.enroll(&enroll_request(&t.token, &name))
            .await
            .error(422, ErrorCode::InvalidField);
    }
    let hostile = "web'); DROP TABLE agents;-- \"%_\\";
    let e = h.enroll_ok(&t.token, hostile).await;
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.name, hostile);
    let all: Vec<AgentSummary> = h.client.get("/v1/admin/agents", admin).await.ok();
    assert_eq!(all.len(), 1, "the table is still there");
    let mut body = support::checkin_request();
    body.proxy = Some("http://user:secret@proxy.corp:3128".into());
    h.client
        .post("/v1/agent/checkin", Some(&e.credential), &body)
        .await
        .ok::<CheckinResponse>();
    assert_eq!(
        h.detail(e.agent_id).await.proxy.as_deref(),
        Some("http://proxy.corp:3128"),
        "no proxy password kept"
    );
    body.proxy = None;
    body.facts.internal_ips = vec!["10.0.0.1".into(); 65];
    h.client
        .post("/v1/agent/checkin", Some(&e.credential), &body)
        .await
        .error(422, ErrorCode::InvalidField);
}

#[tokio::test]
async fn raw_garbage_never_gets_a_500() {
    let h = support::start().await;
    for raw in [
        &b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"[..],
        b"POST /v1/enroll HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\x00\x01\x02\x03",
        b"POST /v1/enroll HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 99999999999\r\nconnection: close\r\n\r\n{}",
        b"GET /v1/admin/agents/%00 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    ] {
        let reply = h.client.raw(raw).await;
        assert!(reply.starts_with("HTTP/1.1 "), "{reply:?}");
        assert!(!reply.starts_with("HTTP/1.1 500"), "{reply}");
    }
    assert_eq!(
        h.client.get("/health", None).await.status,
        200,
        "still serving"
    );
}
