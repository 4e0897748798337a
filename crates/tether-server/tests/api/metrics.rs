//! `GET /metrics`: Prometheus's text format, for admin tokens only; the
//! fleet gauges and the server's own request and batch metrics.

use tether_wire::{AgentKind, CheckinResponse, ErrorCode};

use crate::support::{self, token_request};

/// The value of the sample named exactly `series` (name and labels as
/// Prometheus writes them), if the text has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_are_for_admins_and_count_the_fleet_and_the_requests() {
    let h = support::start().await;
    // No token, or an agent's credential: refused like any admin route.
    h.client
        .get("/metrics", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    h.client
        .get("/metrics", Some(&e.credential))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);

    // Two check-ins: the first moves the agent to Active, the second goes
    // through the group-committed batch.
    let _: CheckinResponse = h.checkin(&e.credential).await.ok();
    let _: CheckinResponse = h.checkin(&e.credential).await.ok();
    let _ = h.client.get("/no/such/route", Some(&h.admin)).await;

    let reply = h.client.get("/metrics", Some(&h.admin)).await;
    assert_eq!(reply.status, 200);
    let media = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(media.starts_with("text/plain; version=0.0.4"), "{media}");
    let text = String::from_utf8(reply.body.to_vec()).expect("utf-8");
    assert_eq!(
        sample(&text, "tether_agents{status=\"active\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tether_agents{status=\"pending\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tether_tasks{state=\"queued\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tether_tasks{state=\"leased\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tether_http_requests_total{route=\"/v1/agent/checkin\",method=\"POST\",status=\"2xx\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tether_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"4xx\"}"
        ),
        Some(2.0),
        "the refused scrapes: {text}"
    );
    assert!(
        sample(
            &text,
            "tether_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"4xx\"}"
        )
        .is_some(),
        "an unknown path is counted without its own label: {text}"
    );
    assert!(
        sample(
            &text,
            "tether_http_request_duration_seconds_count{route=\"/v1/agent/checkin\",method=\"POST\"}"
        ) == Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "tether_checkin_batch_size_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "tether_metrics_fleet_read_seconds").is_some(),
        "{text}"
    );
    // The token's secret and the credential never appear.
    assert!(
        !text.contains(&e.credential) && !text.contains(&h.admin),
        "{text}"
    );
}
