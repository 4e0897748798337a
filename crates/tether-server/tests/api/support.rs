//! The test harness: a real server (SQLite in a temp dir, HTTPS on
//! 127.0.0.1:0) driven over real TLS connections that trust its generated CA.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_server::{RunningServer, ServerConfig};
use tether_wire::{
    AgentKind, ApiError, CheckinRequest, CreateTokenRequest, CreatedToken, EnrollRequest,
    EnrollResponse, ErrorCode, HostFacts, ManualClock,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub struct Harness {
    pub server: RunningServer,
    pub clock: ManualClock,
    pub client: Client,
    pub admin: String,
    /// Kept so the data dir lives as long as the server.
    pub _dir: tempfile::TempDir,
}

/// A fixed, whole-second start time keeps messages predictable.
pub fn epoch() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

pub fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        // Tests sweep explicitly with `sweep_now` unless they test the timer.
        sweep_interval_ms: 3_600_000,
        ..ServerConfig::default()
    }
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    adjust(&mut cfg);
    let clock = ManualClock::new(epoch());
    let server = tether_server::start(cfg, Arc::new(clock.clone()))
        .await
        .expect("server starts");
    let admin = std::fs::read_to_string(&server.admin_token_path)
        .expect("admin token")
        .trim()
        .to_owned();
    let client = Client::new(&server);
    Harness {
        server,
        clock,
        client,
        admin,
        _dir: dir,
    }
}

pub fn facts(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.to_owned(),
        os: "linux debian 12".to_owned(),
        internal_ips: vec!["10.0.0.5".to_owned()],
        uptime_secs: 1234,
        installed_at: None,
    }
}

pub fn enroll_request(token: &str, name: &str) -> EnrollRequest {
    EnrollRequest {
        token: token.to_owned(),
        name: name.to_owned(),
        kind: None,
        agent_version: tether_wire::VERSION.to_owned(),
        facts: facts(name),
        previous_credential: None,
    }
}

pub fn checkin_request() -> CheckinRequest {
    CheckinRequest {
        defs: Vec::new(),
        agent_version: tether_wire::VERSION.to_owned(),
        facts: facts("host-1"),
        definitions: Default::default(),
        last_errors: Default::default(),
        proxy: None,
        upgrade: None,
    }
}

pub fn token_request(kind: AgentKind) -> CreateTokenRequest {
    CreateTokenRequest {
        kind,
        group: "prod".to_owned(),
        valid_for_secs: 3600,
        not_before: None,
        max_uses: None,
        require_approval: false,
        policy: None,
        site: None,
    }
}

/// One HTTP reply, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body {:?} is not the expected JSON: {e}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a JSON error with this status and code, and returns it.
    pub fn error(&self, status: u16, code: ErrorCode) -> ApiError {
        let e: ApiError = self.json();
        assert_eq!(
            (self.status, e.code),
            (status, code),
            "message: {}",
            e.message
        );
        assert_eq!(
            self.headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        e
    }

    pub fn ok<T: DeserializeOwned>(&self) -> T {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

/// A client that trusts the server's CA and checks its name.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Client {
    pub fn new(server: &RunningServer) -> Self {
        let ca = CertificateDer::from_pem_file(&server.ca_pem_path).expect("CA PEM");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("CA accepted");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            addr: server.local_addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A TLS stream to the server, verified for `name`.
    pub async fn tls(&self, name: &str) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("connects");
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        self.connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    }

    /// A TLS stream over a TCP connection the caller opened, verified for `name`.
    pub async fn tls_on(&self, tcp: TcpStream, name: &str) -> TlsStream<TcpStream> {
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        self.connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    }

    /// An HTTP/1.1 connection that can carry several requests.
    pub async fn connection(&self) -> SendRequest<Full<Bytes>> {
        let tls = self.tls("localhost").await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        sender
    }

    pub async fn send_on(
        sender: &mut SendRequest<Full<Bytes>>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_ne!(
            status,
            500,
            "a bare 500 must never happen: {}",
            String::from_utf8_lossy(&body)
        );
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut sender = self.connection().await;
        Self::send_on(&mut sender, method, path, headers, body).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send("GET", path, &headers, None).await
    }

    pub async fn post<T: Serialize>(&self, path: &str, bearer: Option<&str>, body: &T) -> Reply {
        self.json_request("POST", path, bearer, body).await
    }

    pub async fn json_request<T: Serialize>(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &T,
    ) -> Reply {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(auth.iter().map(|a| ("authorization", a.as_str())));
        let bytes = serde_json::to_vec(body).expect("serializes");
        self.send(method, path, &headers, Some(bytes)).await
    }

    /// Sends raw bytes over TLS and reads until the server closes or `limit`
    /// bytes arrived: for requests a well-behaved client cannot produce.
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut tls = self.tls("localhost").await;
        tls.write_all(request).await.expect("writes");
        tls.flush().await.expect("flushes");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf)).await
            {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Harness {
    pub async fn create_token(&self, req: &CreateTokenRequest) -> CreatedToken {
        self.client
            .post("/v1/admin/tokens", Some(&self.admin), req)
            .await
            .ok()
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Reply {
        self.client.post("/v1/enroll", None, req).await
    }

    pub async fn enroll_ok(&self, token: &str, name: &str) -> EnrollResponse {
        self.enroll(&enroll_request(token, name)).await.ok()
    }

    pub async fn checkin(&self, credential: &str) -> Reply {
        self.client
            .post("/v1/agent/checkin", Some(credential), &checkin_request())
            .await
    }

    pub async fn detail(&self, id: uuid::Uuid) -> tether_wire::AgentDetail {
        self.client
            .get(&format!("/v1/admin/agents/{id}"), Some(&self.admin))
            .await
            .ok()
    }
}
