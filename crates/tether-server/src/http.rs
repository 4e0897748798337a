//! The HTTPS listener: TLS via tokio-rustls, HTTP/1.1 with keep-alive via
//! hyper, one task per connection, and a graceful shutdown that stops
//! accepting, lets in-flight requests finish, then closes idle connections.
//!
//! Bounds, so no client holds the server's resources forever:
//! - at most `max_connections` connections are served at once; beyond that
//!   the listener stops accepting and new connections wait in the kernel's
//!   accept queue;
//! - a connection must finish its TLS handshake within
//!   [`TLS_HANDSHAKE_TIMEOUT`] and send each request's header within
//!   `idle_timeout` (which also closes keep-alive connections left idle);
//! - a write that makes no progress for `write_timeout` (a client that
//!   stopped reading a streamed body) fails, which closes the connection and
//!   frees the body's file and task;
//! - with the PROXY protocol on, the header is read first, within
//!   [`crate::proxy_protocol::HEADER_TIMEOUT`], and the address it names is
//!   the peer every handler, limit and log sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::api::extract::PeerAddr;

/// How long a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The listener's bounds (from the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    /// Until a request's header is complete; also how long a keep-alive
    /// connection may sit idle.
    pub idle_timeout: Duration,
    /// How long a write may make no progress.
    pub write_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &crate::ServerConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            idle_timeout: Duration::from_secs(u64::from(config.idle_timeout_secs)),
            write_timeout: Duration::from_secs(u64::from(config.write_timeout_secs)),
        }
    }
}

/// The next connection, or `None` once `stop` fires. An accept error (out
/// of file descriptors and similar) is logged and retried after a short
/// pause rather than spun on.
async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    which: &'static str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(error) => {
                    warn!(error = %error, listener = which, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Accepts connections until `stop` turns true, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    proxy: crate::proxy_protocol::Policy,
    mut stop: watch::Receiver<bool>,
) {
    let proxy = Arc::new(proxy);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    let mut saturated = false;
    loop {
        // A slot first: at the cap, connections wait in the accept queue.
        let slot = if let Ok(slot) = slots.clone().try_acquire_owned() {
            slot
        } else {
            if !saturated {
                warn!(
                    max_connections = limits.max_connections,
                    "the connection cap is reached; new connections wait until one closes"
                );
                saturated = true;
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // The semaphore is never closed.
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            }
        };
        if saturated && slots.available_permits() > 0 {
            saturated = false;
        }
        let Some((tcp, peer)) = next_connection(&listener, &mut stop, "HTTPS").await else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the connection's life.
            let _slot = slot;
            let mut tcp = tcp;
            let (peer, rest) = match crate::proxy_protocol::accept(&mut tcp, peer, &proxy).await {
                Ok(accepted) => {
                    if let Some(via) = accepted.via {
                        debug!(peer = %accepted.client, via = %via, "PROXY header accepted");
                    }
                    (accepted.client, accepted.rest)
                }
                // A balancer set up wrong is the operator's to hear about;
                // garbage and silence from the network are not worth more
                // than TLS failures are.
                Err(
                    error @ (crate::proxy_protocol::ProxyError::Untrusted { .. }
                    | crate::proxy_protocol::ProxyError::Missing { .. }),
                ) => {
                    warn!(error = %error, "connection closed before TLS");
                    return;
                }
                Err(error) => {
                    debug!(error = %error, "connection closed before TLS");
                    return;
                }
            };
            let mut tcp = TimeoutStream::new(crate::proxy_protocol::Rewind::new(rest, tcp));
            tcp.set_write_timeout(Some(limits.write_timeout));
            let tcp = Box::pin(tcp);
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(peer = %peer, error = %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let inner = TowerToHyperService::new(router);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    inner.call(request)
                });
            let connection = http.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("stopped accepting connections; waiting for in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "some connections did not finish in time"
        );
    }
}

/// The plain-HTTP listener (`pki_http_listen`): the same connection cap,
/// header and write timeouts and graceful stop as [`serve`], without TLS
/// or the PROXY protocol. Only the CRL and the OCSP responder are routed
/// here (`api::pki::router`): public data, signed, that clients must be
/// able to fetch without trusting a TLS certificate first.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let Some((tcp, peer)) = next_connection(&listener, &mut stop, "PKI").await else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let mut tcp = TimeoutStream::new(tcp);
            tcp.set_write_timeout(Some(limits.write_timeout));
            let inner = TowerToHyperService::new(router);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    inner.call(request)
                });
            let connection = http.serve_connection(TokioIo::new(Box::pin(tcp)), service);
            if let Err(error) = watcher.watch(connection).await {
                debug!(peer = %peer, error = %error, "PKI connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// The URL clients use for a bound address.
pub fn url_for(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("https://127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("https://[::1]:{}", a.port()),
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    }
}
