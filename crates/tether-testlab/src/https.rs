//! An HTTPS server on loopback (tokio-rustls + hyper) around any handler:
//! the mechanism under every TLS test server. Routes are the test's story
//! and stay in the test; accepting, handshaking and serving live here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What a handler answers.
pub type Reply = hyper::Response<BoxBody<Bytes, Infallible>>;

/// A request as the handler receives it.
pub type Request = hyper::Request<Incoming>;

/// A running server; dropping it stops it.
pub struct HttpsServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rustls server config presenting `chain` (end-entity first) with `key`,
/// offering HTTP/1.1 by ALPN, with the ring provider the workspace uses.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("the test chain and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

impl HttpsServer {
    /// Serves `handler` on 127.0.0.1 (a free port) with the given chain.
    pub async fn start<H, F>(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        handler: H,
    ) -> HttpsServer
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        HttpsServer::start_on("127.0.0.1:0", chain, key, handler).await
    }

    /// Serves on `bind` (e.g. `[::1]:0`).
    pub async fn start_on<H, F>(
        bind: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        handler: H,
    ) -> HttpsServer
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        HttpsServer::start_with(bind, Arc::new(server_config(chain, key)), handler).await
    }

    /// Serves with a config of the caller's (client authentication, old
    /// protocol versions…).
    pub async fn start_with<H, F>(
        bind: &str,
        config: Arc<rustls::ServerConfig>,
        handler: H,
    ) -> HttpsServer
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind(bind).await.expect("bind test server");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    // Handshake failures are what many tests provoke.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let reply = handler(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        HttpsServer {
            addr,
            connections,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A reply with a status, a content type and a whole body.
pub fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("a status and one header make a valid response")
}

/// A reply with a status and body only.
pub fn full(status: u16, body: impl Into<Bytes>) -> Reply {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .expect("a status makes a valid response")
}

/// The `Date` header's form (IMF-fixdate) of `t`.
pub fn http_date(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .expect("every UTC time formats")
}
