//! A Tether-like HTTPS server on 127.0.0.1 (tokio-rustls + hyper): `/health`
//! answers like the control plane, `/v1/agent/probe` accepts one
//! credential; or, in portal mode, every path answers a captive portal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

pub const GOOD_CREDENTIAL: &str = "good-credential";

#[derive(Clone, Copy)]
pub enum Mode {
    Tether,
    Portal,
}

pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        mode: Mode,
    ) -> Server {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(req, mode));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn reply(status: u16, ctype: &str, body: impl Into<Bytes>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("date", httpdate(OffsetDateTime::now_utc()))
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn httpdate(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&f).expect("formats")
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    mode: Mode,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let now = OffsetDateTime::now_utc();
    let now_s = now
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    if let Mode::Portal = mode {
        return Ok(reply(
            200,
            "text/html",
            "<html><head><title>Guest Wi-Fi: please log in</title></head><body>Accept the terms</body></html>",
        ));
    }
    Ok(match req.uri().path() {
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
        _ => reply(404, "text/plain", "not found"),
    })
}
