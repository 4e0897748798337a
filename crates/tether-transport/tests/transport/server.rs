//! A small HTTPS server (tokio-rustls + hyper) for the tests, on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub struct TestServer {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves on 127.0.0.1 with the given chain (end-entity first) and key.
    pub async fn start(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self::start_on("127.0.0.1:0", chain, key).await
    }

    pub async fn start_on(
        bind: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await.expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // Handshake failures are what many tests provoke.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(handle))
                        .await;
                });
            }
        });
        TestServer {
            addr,
            connections,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

type Reply = hyper::Response<BoxBody<Bytes, Infallible>>;

fn full(status: u16, body: impl Into<Bytes>) -> Reply {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

async fn handle(req: hyper::Request<Incoming>) -> Result<Reply, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let reply = match req.uri().path() {
        "/hello" => full(200, "hello from the test server"),
        "/echo" => full(
            200,
            format!(
                "method={} target={} host={} ua={}",
                req.method(),
                req.uri(),
                header("host"),
                header("user-agent")
            ),
        ),
        "/big" => full(200, vec![b'x'; 1024 * 1024]),
        "/chunked" => hyper::Response::builder()
            .status(200)
            .body(Chunks { left: 32 }.boxed())
            .expect("valid response"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, "finally")
        }
        "/retry" => hyper::Response::builder()
            .status(429)
            .header("retry-after", "7")
            .body(Full::new(Bytes::from_static(b"slow down")).boxed())
            .expect("valid response"),
        _ => full(404, "not found"),
    };
    Ok(reply)
}

/// A body of 64 KiB chunks without a length, so hyper sends it chunked.
struct Chunks {
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'y'; 64 * 1024])))))
    }
}
