//! [`Transport`]: the full path and its individual phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;
use url::Url;

use crate::config::TransportConfig;
use crate::dial::{BoxedIo, ConnectAttempt, ConnectErrorKind, Dial, TcpDialer};
use crate::dns::{Resolve, SystemResolver};
use crate::error::TransportError;
use crate::http::{Connection, Established, HttpSettings, Response};
use crate::proxy::{ProxyConfig, ProxyReply, ProxySetting, tunnel};
use crate::tls::{TlsClient, TlsInfo, TlsStream};

/// How long each phase took. A phase that did not run is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Resolving the server's name (or the proxy's, when one is used).
    pub dns: Option<Duration>,
    /// Opening the TCP connection (all attempts).
    pub connect: Option<Duration>,
    /// The CONNECT exchange with the proxy.
    pub proxy: Option<Duration>,
    /// The TLS handshake.
    pub tls: Option<Duration>,
    /// The HTTP exchange.
    pub http: Option<Duration>,
}

impl PhaseTimings {
    /// The sum of the phases that ran.
    pub fn total(&self) -> Duration {
        [self.dns, self.connect, self.proxy, self.tls, self.http]
            .into_iter()
            .flatten()
            .sum()
    }
}

/// The transport: cheap to clone (everything is shared), safe to use from
/// many tasks at once.
#[derive(Clone, Debug)]
pub struct Transport {
    config: Arc<TransportConfig>,
    /// The proxy after reading the environment, if the setting asks for it.
    proxy: Option<Arc<ProxyConfig>>,
    resolver: Arc<dyn Resolve>,
    dialer: Arc<dyn Dial>,
    tls: Arc<TlsClient>,
    user_agent: HeaderValue,
}

/// The parts of an `https://` URL the path needs.
#[derive(Debug)]
struct Origin {
    /// The host for DNS, SNI and CONNECT: a name, or an IP without brackets.
    host: String,
    port: u16,
    /// The `Host` header value.
    authority: String,
}

impl Origin {
    fn from_url(url: &Url) -> Result<Origin, TransportError> {
        let invalid = |detail: &str| TransportError::InvalidUrl {
            url: url.to_string(),
            detail: detail.to_owned(),
        };
        if url.scheme() != "https" {
            return Err(invalid("only https:// URLs are supported"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid("the URL has no host")),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let host_str = url.host_str().unwrap_or(&host);
        let authority = if port == 443 {
            host_str.to_owned()
        } else {
            format!("{host_str}:{port}")
        };
        Ok(Origin {
            host,
            port,
            authority,
        })
    }
}

impl Transport {
    /// Builds a transport: reads the proxy environment if asked to, loads the
    /// trust anchors, and builds the TLS client configuration once.
    pub fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let proxy = match &config.proxy {
            ProxySetting::Direct => None,
            ProxySetting::FromEnv => ProxyConfig::from_env()?,
            ProxySetting::Explicit(p) => Some(p.clone()),
        };
        let user_agent =
            HeaderValue::from_str(&config.user_agent).map_err(|_| TransportError::Config {
                detail: format!(
                    "user_agent {:?} is not a valid header value",
                    config.user_agent
                ),
            })?;
        let tls = TlsClient::new(&config.trust)?;
        if let Some(p) = &proxy {
            tracing::debug!(proxy = %p.redacted(), no_proxy = ?p.no_proxy, "using an HTTP proxy");
        }
        Ok(Transport {
            config: Arc::new(config),
            proxy: proxy.map(Arc::new),
            resolver: Arc::new(SystemResolver::new()),
            dialer: Arc::new(TcpDialer),
            tls: Arc::new(tls),
            user_agent,
        })
    }

    /// Replaces the resolver (tests, or a doctor check against one server).
    pub fn with_resolver(mut self, r: Arc<dyn Resolve>) -> Self {
        self.resolver = r;
        self
    }

    /// Replaces the dialer (tests inject failures).
    pub fn with_dialer(mut self, d: Arc<dyn Dial>) -> Self {
        self.dialer = d;
        self
    }

    /// Checks certificate validity against `clock` instead of the system
    /// clock, so tests and the doctor see the same "now" as the rest of
    /// Tether.
    pub fn with_clock(mut self, clock: Arc<dyn tether_wire::Clock>) -> Self {
        self.tls = Arc::new(self.tls.with_clock(clock));
        self
    }

    /// Writes the secrets of this transport's TLS sessions to `sink`, so a
    /// capture of them can be decrypted. Only the escalation capture's
    /// `--tls-keylog` calls it, on a transport of its own; without it no
    /// key is ever logged.
    pub fn with_key_log(mut self, sink: Arc<crate::KeyLogSink>) -> Self {
        self.tls = Arc::new(self.tls.with_key_log(sink));
        self
    }

    /// The configuration this transport was built from.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The proxy that would be used for this host (after NO_PROXY); print it
    /// with [`ProxyConfig::redacted`].
    pub fn proxy_for(&self, host: &str) -> Option<&ProxyConfig> {
        self.proxy.as_deref().filter(|p| !p.bypasses(host))
    }

    /// Full path to an https:// URL's origin: DNS, TCP (each resolved
    /// address in order until one connects), proxy CONNECT if any, TLS,
    /// HTTP/1.1 handshake. The connection can carry many requests.
    pub async fn connect(&self, url: &Url) -> Result<Connection, TransportError> {
        let origin = Origin::from_url(url)?;
        let mut timings = PhaseTimings::default();
        let (io, peer, via_proxy) = match self.proxy_for(&origin.host) {
            Some(proxy) => {
                let unreachable = |source: TransportError| TransportError::ProxyUnreachable {
                    proxy: proxy.redacted(),
                    source: Box::new(source),
                };
                let (addrs, dns) = self.resolve(&proxy.host()).await.map_err(unreachable)?;
                timings.dns = Some(dns);
                let (io, peer, connect) = self
                    .connect_any(&addrs, proxy.port())
                    .await
                    .map_err(unreachable)?;
                timings.connect = Some(connect);
                let (io, _reply, tunnel) = self
                    .proxy_tunnel(io, proxy, &origin.host, origin.port)
                    .await?;
                timings.proxy = Some(tunnel);
                (io, peer, Some(proxy.redacted()))
            }
            None => {
                let (addrs, dns) = self.resolve(&origin.host).await?;
                timings.dns = Some(dns);
                let (io, peer, connect) = self.connect_any(&addrs, origin.port).await?;
                timings.connect = Some(connect);
                (io, peer, None)
            }
        };
        let (stream, tls, tls_elapsed) = self.tls_handshake(io, &origin.host).await?;
        timings.tls = Some(tls_elapsed);
        Connection::handshake(
            Established {
                stream,
                timings,
                peer,
                tls,
                via_proxy,
            },
            HttpSettings {
                authority: origin.authority,
                user_agent: self.user_agent.clone(),
                http_timeout: self.config.timeouts.http,
                max_body_bytes: self.config.max_body_bytes,
            },
        )
        .await
    }

    /// One-shot convenience: connect and send one request. The request's
    /// URI gives the path; when it is just `/`, the URL's path and query are
    /// used instead. The response's timings include every phase.
    pub async fn request(
        &self,
        url: &Url,
        req: http::Request<Bytes>,
    ) -> Result<Response, TransportError> {
        let mut conn = self.connect(url).await?;
        let mut req = req;
        if req.uri() == "/" {
            let target = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            *req.uri_mut() = target.parse().map_err(|e| TransportError::InvalidUrl {
                url: url.to_string(),
                detail: format!("the path is not a valid request target: {e}"),
            })?;
        }
        let mut resp = conn.send(req).await?;
        resp.timings = PhaseTimings {
            http: resp.timings.http,
            ..conn.timings
        };
        Ok(resp)
    }

    /// The DNS phase. IP literals (with or without brackets) are answered
    /// without a lookup.
    pub async fn resolve(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), TransportError> {
        let started = Instant::now();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok((vec![ip], started.elapsed()));
        }
        let limit = self.config.timeouts.dns;
        let outcome = tokio::time::timeout(limit, self.resolver.resolve(host)).await;
        let elapsed = started.elapsed();
        let kind = match outcome {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                tracing::debug!(host, addrs = ?addrs, elapsed_ms = ms(elapsed), "resolved");
                return Ok((addrs, elapsed));
            }
            Ok(Ok(_)) => crate::dns::DnsErrorKind::NoAddress,
            Ok(Err(e)) => e.kind,
            Err(_) => crate::dns::DnsErrorKind::Timeout,
        };
        let err = TransportError::Dns {
            host: host.to_owned(),
            kind,
            elapsed,
        };
        tracing::debug!(host, error = %err, "resolution failed");
        Err(err)
    }

    /// The TCP phase for one address, limited by the connect timeout.
    pub async fn tcp_connect(
        &self,
        addr: SocketAddr,
    ) -> Result<(BoxedIo, Duration), TransportError> {
        self.dial_once(addr)
            .await
            .map_err(|attempt| TransportError::Connect {
                addr,
                kind: attempt.kind.clone(),
                elapsed: attempt.elapsed,
                attempts: vec![attempt],
            })
    }

    /// The proxy phase: CONNECT `host:port` through an open connection to
    /// the proxy. Returns the tunnel and the proxy's reply.
    pub async fn proxy_tunnel(
        &self,
        io: BoxedIo,
        proxy: &ProxyConfig,
        host: &str,
        port: u16,
    ) -> Result<(BoxedIo, ProxyReply, Duration), TransportError> {
        let started = Instant::now();
        let outcome = tunnel::connect(io, proxy, host, port, self.config.timeouts.proxy).await;
        let elapsed = started.elapsed();
        match outcome {
            Ok((io, reply)) => {
                tracing::debug!(
                    proxy = %proxy.redacted(),
                    target = %format!("{host}:{port}"),
                    status = reply.status,
                    elapsed_ms = ms(elapsed),
                    "proxy tunnel open"
                );
                Ok((io, reply, elapsed))
            }
            Err(err) => {
                tracing::debug!(proxy = %proxy.redacted(), error = %err, "proxy tunnel failed");
                Err(err)
            }
        }
    }

    /// The TLS phase: handshake and verify the server's certificate for
    /// `server_name` (a host name or an IP literal).
    pub async fn tls_handshake(
        &self,
        io: BoxedIo,
        server_name: &str,
    ) -> Result<(TlsStream, TlsInfo, Duration), TransportError> {
        let started = Instant::now();
        let outcome = self
            .tls
            .handshake(io, server_name, self.config.timeouts.tls)
            .await;
        let elapsed = started.elapsed();
        match outcome {
            Ok((stream, info)) => {
                tracing::debug!(
                    server_name,
                    protocol = %info.protocol,
                    cipher = %info.cipher,
                    elapsed_ms = ms(elapsed),
                    "TLS established"
                );
                Ok((stream, info, elapsed))
            }
            Err(err) => {
                tracing::debug!(server_name, error = %err, "TLS failed");
                Err(err)
            }
        }
    }

    /// Tries each address in order; reports the most telling failure when
    /// all fail.
    async fn connect_any(
        &self,
        addrs: &[IpAddr],
        port: u16,
    ) -> Result<(BoxedIo, SocketAddr, Duration), TransportError> {
        let started = Instant::now();
        let mut attempts: Vec<ConnectAttempt> = Vec::with_capacity(addrs.len());
        for ip in addrs {
            let addr = SocketAddr::new(*ip, port);
            match self.dial_once(addr).await {
                Ok((io, _)) => {
                    let elapsed = started.elapsed();
                    tracing::debug!(addr = %addr, elapsed_ms = ms(elapsed), "connected");
                    return Ok((io, addr, elapsed));
                }
                Err(attempt) => {
                    tracing::debug!(addr = %addr, error = %attempt.kind, "connect attempt failed");
                    attempts.push(attempt);
                }
            }
        }
        // Ties go to the later attempt.
        let reported = attempts
            .iter()
            .enumerate()
            .max_by_key(|(i, a)| (a.kind.salience(), *i))
            .map(|(_, a)| a.clone());
        let Some(reported) = reported else {
            return Err(TransportError::Config {
                detail: "no address to connect to".to_owned(),
            });
        };
        Err(TransportError::Connect {
            addr: reported.addr,
            kind: reported.kind,
            elapsed: started.elapsed(),
            attempts,
        })
    }

    async fn dial_once(&self, addr: SocketAddr) -> Result<(BoxedIo, Duration), ConnectAttempt> {
        let started = Instant::now();
        let limit = self.config.timeouts.connect;
        let outcome = tokio::time::timeout(limit, self.dialer.dial(addr)).await;
        let elapsed = started.elapsed();
        let kind = match outcome {
            Ok(Ok(io)) => return Ok((io, elapsed)),
            Ok(Err(e)) => ConnectErrorKind::from_io(&e),
            Err(_) => ConnectErrorKind::Timeout,
        };
        Err(ConnectAttempt {
            addr,
            kind,
            elapsed,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("literal URL")
    }

    #[test]
    fn origins_come_from_https_urls_only() {
        let o = Origin::from_url(&url("https://Server.Example/api")).expect("valid");
        assert_eq!(
            (o.host.as_str(), o.port, o.authority.as_str()),
            ("server.example", 443, "server.example")
        );
        let o = Origin::from_url(&url("https://[::1]:8443/")).expect("valid");
        assert_eq!(
            (o.host.as_str(), o.port, o.authority.as_str()),
            ("::1", 8443, "[::1]:8443")
        );
        let err = Origin::from_url(&url("http://server.example/")).expect_err("plain http");
        assert_eq!(err.code(), tether_wire::ErrorCode::ConfigInvalid);
        assert_eq!(err.phase(), crate::Phase::Config);
    }

    #[test]
    fn timings_total_sums_the_phases_that_ran() {
        let t = PhaseTimings {
            dns: Some(Duration::from_millis(1)),
            tls: Some(Duration::from_millis(5)),
            ..PhaseTimings::default()
        };
        assert_eq!(t.total(), Duration::from_millis(6));
    }
}
