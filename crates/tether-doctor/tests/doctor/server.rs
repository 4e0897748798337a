//! A Tether-like control plane for the doctor's tests, on the lab's HTTPS
//! server: `/health` answers like the control plane, `/v1/agent/probe`
//! accepts one credential; or, in portal mode, every path answers a captive
//! portal.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tether_testlab::https::{HttpsServer, Reply, Request, http_date};
use time::OffsetDateTime;

pub const GOOD_CREDENTIAL: &str = "good-credential";

#[derive(Clone, Copy)]
pub enum Mode {
    Tether,
    Portal,
    /// A control plane whose store is down: `/health` answers 503 with its
    /// own health body, `status: "degraded"`.
    Degraded,
    /// A control plane from before the read-only probe: `/v1/agent/probe`
    /// is an unknown route (its own 404 JSON), and check-ins are counted in
    /// [`CHECKINS`].
    OldTether,
}

/// Check-ins an [`Mode::OldTether`] server received.
pub static CHECKINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct Server;

impl Server {
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        mode: Mode,
    ) -> HttpsServer {
        HttpsServer::start(chain, key, move |req| handle(req, mode)).await
    }
}

fn reply(status: u16, ctype: &str, body: String) -> Reply {
    let mut r = tether_testlab::https::reply(status, ctype, body);
    r.headers_mut().insert(
        "date",
        http_date(OffsetDateTime::now_utc())
            .parse()
            .expect("an HTTP date is a valid header value"),
    );
    r
}

async fn handle(req: Request, mode: Mode) -> Reply {
    let now = OffsetDateTime::now_utc();
    let now_s = now
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    if let Mode::Portal = mode {
        return reply(
            200,
            "text/html",
            "<html><head><title>Guest Wi-Fi: please log in</title></head><body>Accept the terms</body></html>".into(),
        );
    }
    if let (Mode::Degraded, "/health") = (mode, req.uri().path()) {
        return reply(
            503,
            "application/json",
            format!(
                r#"{{"service":"tether","status":"degraded","version":"0.2.0","store":{{"backend":"sqlite","ok":false,"error":"database is locked"}},"server_time":"{now_s}"}}"#
            ),
        );
    }
    if let Mode::OldTether = mode {
        match req.uri().path() {
            "/v1/agent/probe" => {
                return reply(
                    404,
                    "application/json",
                    format!(
                        r#"{{"code":"TETHER-E4004","message":"no route for GET /v1/agent/probe","action":"Check the ID","server_time":"{now_s}"}}"#
                    ),
                );
            }
            "/v1/agent/checkin" => {
                CHECKINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            _ => {}
        }
    }
    match req.uri().path() {
        "/health" => reply(
            200,
            "application/json",
            format!(
                r#"{{"service":"tether","status":"ok","version":"0.2.0","store":{{"backend":"sqlite","ok":true}},"server_time":"{now_s}"}}"#
            ),
        ),
        "/v1/agent/probe" => {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth == format!("Bearer {GOOD_CREDENTIAL}") {
                reply(
                    200,
                    "application/json",
                    format!(
                        r#"{{"agent_id":"7f0c4c8e-1d7e-4b8e-9d43-5d6f0e1a2b3c","status":"active","server_time":"{now_s}","current_agent_version":"9.9.9"}}"#
                    ),
                )
            } else {
                reply(
                    401,
                    "application/json",
                    format!(
                        r#"{{"code":"TETHER-E2201","message":"unknown credential","action":"re-enroll","server_time":"{now_s}"}}"#
                    ),
                )
            }
        }
        _ => reply(404, "text/plain", "not found".into()),
    }
}
