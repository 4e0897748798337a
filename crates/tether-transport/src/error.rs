//! The transport's one error type. Each variant names its phase, carries
//! what was observed, and maps to a stable catalog code.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tether_wire::ErrorCode;

use crate::dial::{ConnectAttempt, ConnectErrorKind};
use crate::dns::DnsErrorKind;
use crate::tls::TlsErrorKind;

/// The phase of the path a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Checking the configuration and URL, before any network traffic.
    Config,
    /// Resolving the server's (or the proxy's) name.
    Dns,
    /// Opening the TCP connection.
    Connect,
    /// Asking the proxy for a tunnel.
    ProxyConnect,
    /// Authenticating to the proxy.
    ProxyAuth,
    /// The TLS handshake and certificate verification.
    Tls,
    /// The HTTP exchange.
    Http,
}

impl Phase {
    /// The stable lowercase name, as shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Config => "config",
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::ProxyConnect => "proxy-connect",
            Phase::ProxyAuth => "proxy-auth",
            Phase::Tls => "tls",
            Phase::Http => "http",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure on the transport path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The name could not be resolved.
    #[error("dns: resolving {host} failed: {kind} (after {elapsed:?})")]
    Dns {
        host: String,
        kind: DnsErrorKind,
        elapsed: Duration,
    },
    /// No TCP connection could be opened. `addr` and `kind` are the most
    /// telling of the `attempts` (one per resolved address, in order).
    #[error("connect: {addr}: {kind} (after {elapsed:?}{})", others(attempts, *addr))]
    Connect {
        addr: SocketAddr,
        kind: ConnectErrorKind,
        elapsed: Duration,
        attempts: Vec<ConnectAttempt>,
    },
    /// The proxy itself could not be reached (its name or its port).
    #[error("proxy-connect: the proxy {proxy} is unreachable: {source}")]
    ProxyUnreachable {
        proxy: String,
        #[source]
        source: Box<TransportError>,
    },
    /// The proxy demanded authentication (407, or 401 from some proxies).
    #[error(
        "proxy-auth: the proxy {proxy} answered {status} (offers [{}]); {}",
        offered_schemes.join(", "),
        if *credentials_configured { "the configured credentials were rejected" } else { "no credentials are configured" }
    )]
    ProxyAuth {
        proxy: String,
        status: u16,
        offered_schemes: Vec<String>,
        credentials_configured: bool,
    },
    /// The proxy answered CONNECT with a non-2xx status other than 407.
    /// `refusal` says whether a proxy refused, or something that is not a
    /// proxy answered, with the headers and body start that was judged from
    /// (boxed: errors travel in every `Result` of the transport).
    #[error("proxy-connect: the proxy {proxy} refused the tunnel: {status} {reason}")]
    ProxyRefused {
        proxy: String,
        status: u16,
        reason: String,
        refusal: Box<crate::proxy::Refusal>,
    },
    /// The proxy's reply is not usable HTTP.
    #[error("proxy-connect: bad reply from the proxy {proxy}: {detail}")]
    ProxyBadReply { proxy: String, detail: String },
    /// The proxy accepted the connection but did not answer CONNECT in time.
    #[error("proxy-connect: the proxy {proxy} did not answer CONNECT within {elapsed:?}")]
    ProxyTimeout { proxy: String, elapsed: Duration },
    /// The TLS handshake or certificate verification failed. `chain` is what
    /// the server presented (end-entity first), empty if it sent nothing.
    #[error("tls: {server_name}: {kind}")]
    Tls {
        server_name: String,
        kind: TlsErrorKind,
        chain: Vec<Vec<u8>>,
    },
    /// The HTTP exchange did not finish in time.
    #[error("http: no complete answer within {elapsed:?}")]
    HttpTimeout { elapsed: Duration },
    /// The HTTP exchange failed (connection closed, malformed reply…).
    #[error("http: {detail}")]
    Http { detail: String },
    /// The response body is larger than the configured cap.
    #[error("http: the response body is larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    /// The URL cannot be used by this transport.
    #[error("config: invalid URL {url:?}: {detail}")]
    InvalidUrl { url: String, detail: String },
    /// The transport's configuration is invalid.
    #[error("config: {detail}")]
    Config { detail: String },
}

/// Renders the other failed attempts for the `Connect` message.
fn others(attempts: &[ConnectAttempt], reported: SocketAddr) -> String {
    let rest: Vec<String> = attempts
        .iter()
        .filter(|a| a.addr != reported)
        .map(|a| format!("{}: {}", a.addr, a.kind))
        .collect();
    if rest.is_empty() {
        String::new()
    } else {
        format!("; also tried {}", rest.join(", "))
    }
}

impl TransportError {
    /// The phase the failure happened in.
    pub fn phase(&self) -> Phase {
        match self {
            TransportError::Dns { .. } => Phase::Dns,
            TransportError::Connect { .. } => Phase::Connect,
            TransportError::ProxyUnreachable { .. }
            | TransportError::ProxyRefused { .. }
            | TransportError::ProxyBadReply { .. }
            | TransportError::ProxyTimeout { .. } => Phase::ProxyConnect,
            TransportError::ProxyAuth { .. } => Phase::ProxyAuth,
            TransportError::Tls { .. } => Phase::Tls,
            TransportError::HttpTimeout { .. }
            | TransportError::Http { .. }
            | TransportError::BodyTooLarge { .. } => Phase::Http,
            TransportError::InvalidUrl { .. } | TransportError::Config { .. } => Phase::Config,
        }
    }

    /// The stable catalog code.
    pub fn code(&self) -> ErrorCode {
        match self {
            TransportError::Dns { kind, .. } => match kind {
                DnsErrorKind::NxDomain => ErrorCode::DnsNxDomain,
                DnsErrorKind::ServFail => ErrorCode::DnsServFail,
                DnsErrorKind::Timeout => ErrorCode::DnsTimeout,
                DnsErrorKind::NoAddress => ErrorCode::DnsNoAddress,
                DnsErrorKind::Other(_) => ErrorCode::DnsFailed,
            },
            TransportError::Connect { kind, .. } => match kind {
                ConnectErrorKind::Refused => ErrorCode::ConnectRefused,
                ConnectErrorKind::Timeout => ErrorCode::ConnectTimeout,
                ConnectErrorKind::Unreachable => ErrorCode::ConnectUnreachable,
                ConnectErrorKind::Other(_) => ErrorCode::ConnectFailed,
            },
            TransportError::ProxyUnreachable { .. } => ErrorCode::ProxyUnreachable,
            TransportError::ProxyAuth {
                credentials_configured,
                ..
            } => {
                if *credentials_configured {
                    ErrorCode::ProxyAuthFailed
                } else {
                    ErrorCode::ProxyAuthRequired
                }
            }
            TransportError::ProxyRefused { refusal, .. } => match refusal.answered_by {
                crate::proxy::Answerer::NotAProxy { .. } => ErrorCode::ProxyNotAProxy,
                _ => ErrorCode::ProxyConnectRefused,
            },
            TransportError::ProxyBadReply { .. } => ErrorCode::ProxyBadReply,
            TransportError::ProxyTimeout { .. } => ErrorCode::ProxyTimeout,
            TransportError::Tls { kind, .. } => match kind {
                TlsErrorKind::Expired { .. } => ErrorCode::TlsCertExpired,
                TlsErrorKind::NotYetValid { .. } => ErrorCode::TlsCertNotYetValid,
                TlsErrorKind::HostnameMismatch { .. } => ErrorCode::TlsHostnameMismatch,
                TlsErrorKind::UnknownIssuer { .. } => ErrorCode::TlsUnknownIssuer,
                TlsErrorKind::SelfSigned { .. } => ErrorCode::TlsSelfSigned,
                TlsErrorKind::PinMismatch { .. } => ErrorCode::ServerCaPinMismatch,
                TlsErrorKind::Revoked => ErrorCode::TlsRevoked,
                TlsErrorKind::BadCertificate(_)
                | TlsErrorKind::Timeout { .. }
                | TlsErrorKind::Handshake(_) => ErrorCode::TlsHandshakeFailed,
            },
            TransportError::HttpTimeout { .. } => ErrorCode::HttpTimeout,
            TransportError::Http { .. } | TransportError::BodyTooLarge { .. } => {
                ErrorCode::HttpProtocol
            }
            TransportError::InvalidUrl { .. } | TransportError::Config { .. } => {
                ErrorCode::ConfigInvalid
            }
        }
    }

    /// Whether the same attempt, repeated later without any change of
    /// configuration, may succeed. Callers still back off between tries;
    /// `false` means "a person has to change something first".
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Dns { kind, .. } => matches!(
                kind,
                DnsErrorKind::ServFail | DnsErrorKind::Timeout | DnsErrorKind::Other(_)
            ),
            TransportError::Connect { .. }
            | TransportError::ProxyUnreachable { .. }
            | TransportError::ProxyTimeout { .. }
            | TransportError::HttpTimeout { .. }
            | TransportError::Http { .. } => true,
            // Gateway errors mean the proxy could not reach the server just now.
            // tinyproxy answers 500 when it cannot reach the server.
            TransportError::ProxyRefused { status, .. } => matches!(status, 500 | 502..=504),
            TransportError::Tls { kind, .. } => {
                matches!(
                    kind,
                    TlsErrorKind::Timeout { .. } | TlsErrorKind::Handshake(_)
                )
            }
            TransportError::ProxyAuth { .. }
            | TransportError::ProxyBadReply { .. }
            | TransportError::BodyTooLarge { .. }
            | TransportError::InvalidUrl { .. }
            | TransportError::Config { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn phases_have_stable_names() {
        let names: Vec<&str> = [
            Phase::Dns,
            Phase::Connect,
            Phase::ProxyConnect,
            Phase::ProxyAuth,
            Phase::Tls,
            Phase::Http,
            Phase::Config,
        ]
        .iter()
        .map(|p| p.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "dns",
                "connect",
                "proxy-connect",
                "proxy-auth",
                "tls",
                "http",
                "config"
            ]
        );
        assert_eq!(Phase::ProxyAuth.to_string(), "proxy-auth");
    }

    #[test]
    fn dns_kinds_map_to_their_codes() {
        for (kind, code, retry) in [
            (DnsErrorKind::NxDomain, ErrorCode::DnsNxDomain, false),
            (DnsErrorKind::ServFail, ErrorCode::DnsServFail, true),
            (DnsErrorKind::Timeout, ErrorCode::DnsTimeout, true),
            (DnsErrorKind::NoAddress, ErrorCode::DnsNoAddress, false),
            (DnsErrorKind::Other("x".into()), ErrorCode::DnsFailed, true),
        ] {
            let e = TransportError::Dns {
                host: "h".into(),
                kind,
                elapsed: Duration::ZERO,
            };
            assert_eq!(e.code(), code);
            assert_eq!(e.phase(), Phase::Dns);
            assert_eq!(e.is_retriable(), retry, "{e}");
        }
    }

    #[test]
    fn proxy_auth_code_depends_on_configured_credentials() {
        let mk = |credentials_configured| TransportError::ProxyAuth {
            proxy: "p:3128".into(),
            status: 407,
            offered_schemes: vec!["Basic".into()],
            credentials_configured,
        };
        assert_eq!(mk(false).code(), ErrorCode::ProxyAuthRequired);
        assert_eq!(mk(true).code(), ErrorCode::ProxyAuthFailed);
        assert_eq!(mk(true).phase(), Phase::ProxyAuth);
        assert!(mk(false).to_string().contains("offers [Basic]"));
        assert!(!mk(true).is_retriable());
    }

    #[test]
    fn connect_message_lists_every_attempt() {
        let e = TransportError::Connect {
            addr: addr("192.0.2.1:443"),
            kind: ConnectErrorKind::Refused,
            elapsed: Duration::from_millis(3),
            attempts: vec![
                ConnectAttempt {
                    addr: addr("[2001:db8::1]:443"),
                    kind: ConnectErrorKind::Unreachable,
                    elapsed: Duration::ZERO,
                },
                ConnectAttempt {
                    addr: addr("192.0.2.1:443"),
                    kind: ConnectErrorKind::Refused,
                    elapsed: Duration::from_millis(3),
                },
            ],
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("connect: 192.0.2.1:443: connection refused"),
            "{msg}"
        );
        assert!(
            msg.contains("also tried [2001:db8::1]:443: network or host unreachable"),
            "{msg}"
        );
        assert_eq!(e.code(), ErrorCode::ConnectRefused);
    }

    #[test]
    fn proxy_unreachable_keeps_its_cause() {
        let cause = TransportError::Dns {
            host: "proxy.corp".into(),
            kind: DnsErrorKind::NxDomain,
            elapsed: Duration::ZERO,
        };
        let e = TransportError::ProxyUnreachable {
            proxy: "proxy.corp:3128".into(),
            source: Box::new(cause),
        };
        assert_eq!(e.code(), ErrorCode::ProxyUnreachable);
        assert_eq!(e.phase(), Phase::ProxyConnect);
        let source = std::error::Error::source(&e).expect("has a source");
        assert!(source.to_string().contains("NXDOMAIN"));
    }

    #[test]
    fn tls_kinds_map_to_their_codes() {
        let t = time::macros::datetime!(2026-01-01 00:00 UTC);
        for (kind, code) in [
            (
                TlsErrorKind::Expired {
                    not_after: t,
                    now: t,
                },
                ErrorCode::TlsCertExpired,
            ),
            (
                TlsErrorKind::NotYetValid {
                    not_before: t,
                    now: t,
                },
                ErrorCode::TlsCertNotYetValid,
            ),
            (
                TlsErrorKind::HostnameMismatch {
                    expected: "a".into(),
                    presented: vec![],
                },
                ErrorCode::TlsHostnameMismatch,
            ),
            (
                TlsErrorKind::UnknownIssuer { issuer: "x".into() },
                ErrorCode::TlsUnknownIssuer,
            ),
            (
                TlsErrorKind::SelfSigned {
                    subject: "CN=x".into(),
                    fingerprint: "sha256:00".into(),
                },
                ErrorCode::TlsSelfSigned,
            ),
            (
                TlsErrorKind::PinMismatch {
                    expected: "e".into(),
                    presented: vec![],
                },
                ErrorCode::ServerCaPinMismatch,
            ),
            (TlsErrorKind::Revoked, ErrorCode::TlsRevoked),
            (
                TlsErrorKind::Handshake("x".into()),
                ErrorCode::TlsHandshakeFailed,
            ),
        ] {
            let e = TransportError::Tls {
                server_name: "s".into(),
                kind,
                chain: vec![],
            };
            assert_eq!(e.code(), code);
            assert_eq!(e.phase(), Phase::Tls);
        }
    }
}
