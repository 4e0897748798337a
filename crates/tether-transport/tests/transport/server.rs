//! The routes the transport tests ask for, served by the lab's HTTPS server.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tether_testlab::https::{HttpsServer, Reply, Request, full};

pub struct TestServer;

impl TestServer {
    /// Serves the routes on 127.0.0.1 with the given chain (end-entity
    /// first) and key.
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> HttpsServer {
        HttpsServer::start(chain, key, handle).await
    }

    pub async fn start_on(
        bind: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> HttpsServer {
        HttpsServer::start_on(bind, chain, key, handle).await
    }
}

async fn handle(req: Request) -> Reply {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    match req.uri().path() {
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
    }
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
