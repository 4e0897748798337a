//! `GET /v1/fleet/diagnosis`: admin only, its one query parameter checked,
//! and the verdict computed from what check-ins stored.

use tether_wire::{
    AgentKind, CheckinResponse, Dimension, ErrorCode, FleetDiagnosis, HintKind, IncidentKind,
    LastError,
};

use tether_wire::Clock as _;

use crate::support::{self, checkin_request, token_request};

#[tokio::test]
async fn diagnosis_names_the_proxy_all_its_agents_fail_behind() {
    let h = support::start().await;
    h.client
        .get("/v1/fleet/diagnosis", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);

    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(h.enroll_ok(&t.token, &format!("web-{i}")).await);
    }
    // An agent's credential is no admin's.
    h.client
        .get("/v1/fleet/diagnosis", Some(&agents[0].credential))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);

    // Three check in through a proxy and report that it refuses their
    // credentials for the definitions path; two go direct and are fine.
    let at = h.clock.now();
    for (i, e) in agents.iter().enumerate() {
        let mut req = checkin_request();
        if i < 3 {
            req.proxy = Some("http://10.0.0.1:3128".into());
            req.last_errors.insert(
                "defs:main".into(),
                LastError {
                    code: ErrorCode::ProxyAuthFailed,
                    message: "proxy refused".into(),
                    at,
                },
            );
        }
        for _ in 0..2 {
            let _: CheckinResponse = h
                .client
                .post("/v1/agent/checkin", Some(&e.credential), &req)
                .await
                .ok();
        }
    }
    // One agent gets a site label, which the record now carries.
    let _ = h
        .client
        .json_request(
            "PUT",
            "/v1/admin/sites/paris",
            Some(&h.admin),
            &serde_json::json!({"tz": "Europe/Paris"}),
        )
        .await;
    let reply = h
        .client
        .json_request(
            "PUT",
            &format!("/v1/admin/agents/{}/site", agents[4].agent_id),
            Some(&h.admin),
            &serde_json::json!({"site": "paris"}),
        )
        .await;
    assert!(reply.status < 300, "{reply:?}");

    let d: FleetDiagnosis = h
        .client
        .get("/v1/fleet/diagnosis", Some(&h.admin))
        .await
        .ok();
    assert_eq!((d.agents_read, d.judged, d.failing), (5, 5, 3), "{d:#?}");
    assert!(!d.truncated);
    assert_eq!(d.incidents.len(), 1, "{d:#?}");
    let i = &d.incidents[0];
    assert_eq!(i.kind, IncidentKind::Network);
    assert_eq!(i.dimension, Dimension::Proxy);
    assert_eq!(i.value, "http://10.0.0.1:3128");
    assert_eq!((i.failing, i.total), (3, 3));
    assert_eq!(i.code.as_deref(), Some("TETHER-E3203"));
    assert_eq!(
        i.contrast.as_deref(),
        Some("2 agents of the same subnet without the proxy are fine")
    );
    let nosite = d
        .hints
        .iter()
        .find(|h| h.kind == HintKind::NoSite)
        .expect("a no-site hint");
    assert_eq!(nosite.count, 4, "the labelled agent is not counted");

    // The limit bounds what is read, and says so.
    let d: FleetDiagnosis = h
        .client
        .get("/v1/fleet/diagnosis?limit=2", Some(&h.admin))
        .await
        .ok();
    assert_eq!(d.agents_read, 2);
    assert!(d.truncated);

    // Hostile queries are refused with a stable code, never a 500.
    for bad in [
        "/v1/fleet/diagnosis?limit=0",
        "/v1/fleet/diagnosis?limit=100001",
        "/v1/fleet/diagnosis?limit=-1",
        "/v1/fleet/diagnosis?limit=abc",
        "/v1/fleet/diagnosis?limit=99999999999999999999",
        "/v1/fleet/diagnosis?group=x",
        "/v1/fleet/diagnosis?limit=%ZZ",
    ] {
        let reply = h.client.get(bad, Some(&h.admin)).await;
        let e = reply.json::<tether_wire::ApiError>();
        assert_eq!(reply.status, 422, "{bad}: {e:?}");
        assert_eq!(e.code, ErrorCode::InvalidField, "{bad}");
    }
}
