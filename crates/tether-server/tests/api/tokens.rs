//! Tokens: create, list, revoke, and every refusal an enrolling agent can meet.

use tether_wire::{AgentKind, ApiError, EnrollResponse, ErrorCode, TokenInfo};
use time::Duration;

use crate::support::{self, enroll_request, token_request};

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let h = support::start().await;
    let mut req = token_request(AgentKind::Discovery);
    req.max_uses = Some(5);
    let created = h.create_token(&req).await;
    assert!(created.token.starts_with("tet_"));
    assert_eq!(created.info.kind, AgentKind::Discovery);
    assert_eq!(created.info.policy, "default");
    assert_eq!(
        created.info.expires_at - created.info.not_before,
        Duration::hours(1)
    );
    assert_eq!((created.info.uses, created.info.max_uses), (0, Some(5)));

    let list: Vec<TokenInfo> = h.client.get("/v1/admin/tokens", Some(&h.admin)).await.ok();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0], created.info);
    // The secret is shown once and never listed.
    assert!(
        !String::from_utf8_lossy(&h.client.get("/v1/admin/tokens", Some(&h.admin)).await.body)
            .contains(&created.token)
    );

    let path = format!("/v1/admin/tokens/{}/revoke", created.info.id);
    let revoked: TokenInfo = h
        .client
        .send(
            "POST",
            &path,
            &[("authorization", &format!("Bearer {}", h.admin))],
            None,
        )
        .await
        .ok();
    assert!(revoked.revoked_at.is_some());

    let e = h
        .enroll(&enroll_request(&created.token, "web-01"))
        .await
        .error(403, ErrorCode::TokenRevoked);
    assert!(e.message.contains("revoked at"), "{}", e.message);
    assert_eq!(e.expires_at, Some(created.info.expires_at));

    let unknown = format!("/v1/admin/tokens/{}/revoke", uuid::Uuid::new_v4());
    h.client
        .send(
            "POST",
            &unknown,
            &[("authorization", &format!("Bearer {}", h.admin))],
            None,
        )
        .await
        .error(404, ErrorCode::NotFound);
}

#[tokio::test]
async fn admin_routes_refuse_missing_and_wrong_credentials() {
    let h = support::start().await;
    h.client
        .get("/v1/admin/tokens", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    h.client
        .get("/v1/admin/tokens", Some("garbage"))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    let forged = format!("tta_{}", "A".repeat(43));
    h.client
        .get("/v1/admin/tokens", Some(&forged))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    let r = h
        .client
        .send(
            "GET",
            "/v1/admin/agents",
            &[("authorization", "Basic dXNlcjpwdw==")],
            None,
        )
        .await;
    r.error(401, ErrorCode::AdminCredentialRejected);
    // An agent credential is not an admin credential.
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let agent = h.enroll_ok(&t.token, "a").await;
    h.client
        .get("/v1/admin/agents", Some(&agent.credential))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
}

#[tokio::test]
async fn every_token_refusal_has_its_code_times_and_message() {
    let h = support::start().await;

    let e = h
        .enroll(&enroll_request("tet_doesnotexist", "a"))
        .await
        .error(401, ErrorCode::TokenUnknown);
    assert!(e.not_before.is_none());
    h.enroll(&enroll_request("not-even-a-token'; --", "a"))
        .await
        .error(401, ErrorCode::TokenUnknown);

    // Not yet valid: starts in 4 minutes.
    let now = h.clock_now(); // the injected clock, not the wall clock: start-up may cross a second
    let mut req = token_request(AgentKind::Connector);
    req.not_before = Some(h.clock_now() + Duration::minutes(4));
    let later = h.create_token(&req).await;
    let e: ApiError = h
        .enroll(&enroll_request(&later.token, "a"))
        .await
        .error(403, ErrorCode::TokenNotYetValid);
    assert!(e.message.contains("(in 4 min)"), "{}", e.message);
    assert!(e.message.contains("server time is"), "{}", e.message);
    assert_eq!(e.not_before, Some(later.info.not_before));
    assert_eq!(e.expires_at, Some(later.info.expires_at));
    assert!(e.server_time >= now);

    // Expired: the clock moves past the one-hour window.
    let soon = h.create_token(&token_request(AgentKind::Connector)).await;
    h.clock.advance(Duration::minutes(61));
    let e = h
        .enroll(&enroll_request(&soon.token, "a"))
        .await
        .error(403, ErrorCode::TokenExpired);
    assert!(e.message.starts_with("token expired at "), "{}", e.message);
    assert!(e.message.contains("(60 s ago)"), "{}", e.message);
    assert_eq!(e.expires_at, Some(soon.info.expires_at));
    assert_eq!(e.server_time, h.clock_now());
    // The later token is now inside its window.
    let ok: EnrollResponse = h.enroll(&enroll_request(&later.token, "a")).await.ok();
    assert_eq!(ok.server_time, h.clock_now());

    // Use limit.
    let mut req = token_request(AgentKind::Connector);
    req.max_uses = Some(1);
    let once = h.create_token(&req).await;
    h.enroll_ok(&once.token, "first").await;
    let e = h
        .enroll(&enroll_request(&once.token, "second"))
        .await
        .error(403, ErrorCode::TokenExhausted);
    assert_eq!(e.message, "token has been used 1 times; its limit is 1");

    // Kind not allowed.
    let t = h.create_token(&token_request(AgentKind::Discovery)).await;
    let mut req = enroll_request(&t.token, "a");
    req.kind = Some(AgentKind::Connector);
    let e = h
        .enroll(&req)
        .await
        .error(403, ErrorCode::TokenKindNotAllowed);
    assert_eq!(
        e.message,
        "agent asked for kind connector, but this token allows only discovery"
    );
    req.kind = Some(AgentKind::Discovery);
    let ok: EnrollResponse = h.enroll(&req).await.ok();
    assert_eq!(ok.kind, AgentKind::Discovery);
}

impl support::Harness {
    pub fn clock_now(&self) -> time::OffsetDateTime {
        use tether_wire::Clock as _;
        self.clock.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_never_exceed_max_uses() {
    let h = support::start().await;
    let mut req = token_request(AgentKind::Connector);
    req.max_uses = Some(3);
    let token = h.create_token(&req).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = h.client.clone();
        let body = enroll_request(&token.token, &format!("racer-{i}"));
        tasks.push(tokio::spawn(async move {
            client.post("/v1/enroll", None, &body).await
        }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for task in tasks {
        let reply = task.await.expect("task");
        match reply.status {
            200 => ok += 1,
            _ => {
                reply.error(403, ErrorCode::TokenExhausted);
                exhausted += 1;
            }
        }
    }
    assert_eq!((ok, exhausted), (3, 17));
    let list: Vec<TokenInfo> = h.client.get("/v1/admin/tokens", Some(&h.admin)).await.ok();
    assert_eq!(list[0].uses, 3);
    let agents: Vec<tether_wire::AgentSummary> =
        h.client.get("/v1/admin/agents", Some(&h.admin)).await.ok();
    assert_eq!(agents.len(), 3);
}
