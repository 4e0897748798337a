//! An HTTPS server with canned replies and a recorded request log, and the
//! small PKI it presents, for tests of the client and of the agent's loops.
//!
//! The server presents leaf + CA, like the real control plane, so CA pinning
//! by fingerprint can be exercised. It listens on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tether_transport::{ProxySetting, TransportConfig, TrustConfig};

use crate::https::{HttpsServer, Reply, Request, server_config};
use crate::pki::Ca;

/// A generated CA and server certificate.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The rustls configuration of a server presenting leaf + CA.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestPki {
    /// Generates a fresh CA and a leaf for `localhost` and `127.0.0.1`.
    pub fn generate() -> TestPki {
        // A distinct name per CA, so two test PKIs never look like issuer
        // and subject of each other.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let ca = Ca::root(&format!("Tether test CA {nonce}"));
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        TestPki {
            ca_der: ca.der().to_vec(),
            ca_pem: ca.cert.pem(),
            server_config: Arc::new(server_config(leaf.chain(&[&ca]), leaf.key())),
        }
    }

    /// `sha256:HEX` of the CA, as `--ca-fingerprint` takes it.
    pub fn ca_fingerprint(&self) -> String {
        tether_transport::fingerprint(&self.ca_der)
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A reply the server sends.
#[derive(Debug, Clone)]
pub struct CannedReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CannedReply {
    /// A JSON reply.
    pub fn json(status: u16, body: &impl serde::Serialize) -> CannedReply {
        CannedReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).expect("test bodies serialize"),
        }
    }

    /// A reply with any content type and body.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> CannedReply {
        CannedReply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// An empty 204.
    pub fn no_content() -> CannedReply {
        CannedReply {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> CannedReply {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn into_reply(self) -> Reply {
        let mut builder = hyper::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder
            .body(Full::new(Bytes::from(self.body)).boxed())
            .expect("canned replies are valid responses")
    }
}

type Handler = dyn Fn(&RecordedRequest) -> CannedReply + Send + Sync;

/// The running server. Dropping it stops it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub pki: TestPki,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    _server: HttpsServer,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 that answers every request with `handler`.
    pub async fn start(
        handler: impl Fn(&RecordedRequest) -> CannedReply + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::start_with_pki(TestPki::generate(), handler).await
    }

    /// Starts a server that answers with `replies` in order, then repeats the last.
    pub async fn scripted(replies: Vec<CannedReply>) -> TestServer {
        let next = Mutex::new(0usize);
        TestServer::start(move |_| {
            let mut i = next.lock().unwrap_or_else(|p| p.into_inner());
            let reply = replies
                .get(*i)
                .or(replies.last())
                .cloned()
                .unwrap_or_else(CannedReply::no_content);
            *i += 1;
            reply
        })
        .await
    }

    pub async fn start_with_pki(
        pki: TestPki,
        handler: impl Fn(&RecordedRequest) -> CannedReply + Send + Sync + 'static,
    ) -> TestServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        let server = HttpsServer::start_with(
            "127.0.0.1:0",
            pki.server_config.clone(),
            move |req: Request| {
                let handler = handler.clone();
                let recorded = recorded.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let rec = RecordedRequest {
                        method: parts.method,
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: parts.headers,
                        body,
                    };
                    let reply = handler(&rec);
                    recorded.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
                    reply.into_reply()
                }
            },
        )
        .await;
        TestServer {
            addr: server.addr,
            pki,
            requests,
            _server: server,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}", self.addr.port())).expect("valid URL")
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A direct transport configuration that trusts this server's CA only.
    pub fn transport_config(&self) -> TransportConfig {
        TransportConfig {
            proxy: ProxySetting::Direct,
            trust: TrustConfig {
                pinned_ca_sha256: None,
                ca_pem: Some(self.pki.ca_pem.clone().into_bytes()),
                extra_ca_pem: None,
                system_roots: false,
            },
            ..TransportConfig::default()
        }
    }
}
