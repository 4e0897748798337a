//! The transport's configuration. Callers (the agent's config file, the CLI's
//! flags) convert their own typed config into this struct at their edge.

use std::time::Duration;

use crate::proxy::ProxySetting;

/// Everything the transport needs to know, built once per [`crate::Transport`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Which HTTP proxy to use, if any.
    pub proxy: ProxySetting,
    /// Which certificate authorities to trust, and the optional CA pin.
    pub trust: TrustConfig,
    /// Per-phase time limits.
    pub timeouts: Timeouts,
    /// Hard cap on any response body (hostile servers/proxies); default 4 MiB.
    pub max_body_bytes: usize,
    /// User-Agent header value, e.g. "tether-agent/0.1.0".
    pub user_agent: String,
}

impl TransportConfig {
    /// The default cap on a response body.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            proxy: ProxySetting::Direct,
            trust: TrustConfig::default(),
            timeouts: Timeouts::default(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            user_agent: format!("tether/{}", tether_wire::VERSION),
        }
    }
}

/// Which certificates anchor the server's chain.
///
/// Without a pin, the roots are `ca_pem` + `extra_ca_pem` + (optionally) the
/// operating system's roots. With a pin, only the pinned CA anchors the chain
/// and the roots are ignored: a pin is a stronger statement than a root list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    /// sha256 of the DER of a CA certificate that must appear in the presented
    /// chain and anchor it (pinning by fingerprint at enrollment; NEVER
    /// trust-on-first-use). A certificate in `ca_pem` with this fingerprint is
    /// also accepted as the anchor, for servers that do not send their root.
    pub pinned_ca_sha256: Option<[u8; 32]>,
    /// PEM bytes of CA certs to trust as roots (the server CA saved at
    /// enrollment, or an operator CA file).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM bytes of extra CAs (TLS-inspection environments), added to the roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Also trust the operating system's roots (rustls-native-certs).
    pub system_roots: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            pinned_ca_sha256: None,
            ca_pem: None,
            extra_ca_pem: None,
            system_roots: true,
        }
    }
}

/// Time limits, one per phase. Each is applied to its phase alone, so a slow
/// DNS answer does not eat into the TLS budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit on resolving one host name.
    pub dns: Duration,
    /// Limit on one TCP connection attempt (per resolved address).
    pub connect: Duration,
    /// Limit on the proxy's answer to CONNECT.
    pub proxy: Duration,
    /// Limit on the TLS handshake.
    pub tls: Duration,
    /// Limit on one HTTP exchange: request sent, head and body received.
    pub http: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            proxy: Duration::from_secs(5),
            tls: Duration::from_secs(5),
            http: Duration::from_secs(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = TransportConfig::default();
        assert!(matches!(c.proxy, ProxySetting::Direct));
        assert!(c.trust.system_roots);
        assert_eq!(c.trust.pinned_ca_sha256, None);
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.timeouts.dns, Duration::from_secs(5));
        assert_eq!(c.timeouts.connect, Duration::from_secs(5));
        assert_eq!(c.timeouts.proxy, Duration::from_secs(5));
        assert_eq!(c.timeouts.tls, Duration::from_secs(5));
        assert_eq!(c.timeouts.http, Duration::from_secs(15));
        assert!(c.user_agent.starts_with("tether/"));
    }
}
