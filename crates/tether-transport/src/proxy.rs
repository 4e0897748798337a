//! HTTP proxy configuration: parsing proxy URLs, reading them from the
//! environment, and NO_PROXY matching. The CONNECT exchange itself lives in
//! [`tunnel`].

mod answerer;
mod no_proxy;
pub(crate) mod tunnel;

use std::fmt;

use url::Url;

use crate::error::TransportError;

pub use answerer::{Answerer, Refusal, who_answered};
pub use tunnel::{ProxyReply, parse_reply};

/// Which proxy the transport uses.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ProxySetting {
    /// Connect straight to the server.
    #[default]
    Direct,
    /// Read HTTPS_PROXY / ALL_PROXY and NO_PROXY from the process
    /// environment when the transport is built.
    FromEnv,
    /// Use this proxy.
    Explicit(ProxyConfig),
}

/// An HTTP proxy reached over plain TCP, tunnelling with CONNECT.
///
/// `Debug` and [`ProxyConfig::redacted`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://host:port`, without credentials (they are split out below).
    pub url: Url,
    /// User name for Basic authentication, percent-decoded.
    pub username: Option<String>,
    /// Password for Basic authentication, percent-decoded.
    pub password: Option<String>,
    /// Hosts that bypass the proxy (NO_PROXY syntax, one entry per item).
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// Parses `http://user:pass@host:port`. A value without a scheme
    /// (`proxy.corp:3128`, as often found in HTTPS_PROXY) is read as http.
    /// Other schemes (https, socks5…) are rejected: the transport speaks
    /// plain-TCP HTTP proxies only. Without a port, 80 is used.
    pub fn parse(s: &str) -> Result<ProxyConfig, TransportError> {
        let trimmed = s.trim();
        // Never echo the input: it may carry a password.
        let bad = |detail: String| TransportError::Config {
            detail: format!("invalid proxy URL: {detail}"),
        };
        if trimmed.is_empty() {
            return Err(bad("the value is empty".to_owned()));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let parsed = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad(format!(
                "scheme {:?} is not supported, expected \"http\" (an HTTP proxy reached over plain TCP)",
                parsed.scheme()
            )));
        }
        let Some(host) = parsed.host_str() else {
            return Err(bad("the URL has no host".to_owned()));
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(bad("a proxy URL has no path or query".to_owned()));
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let username = match parsed.username() {
            "" => None,
            u => Some(percent_decode(u).map_err(bad)?),
        };
        let password = match parsed.password() {
            None => None,
            Some(p) => Some(percent_decode(p).map_err(bad)?),
        };
        let url = Url::parse(&format!("http://{host}:{port}")).map_err(|e| bad(e.to_string()))?;
        Ok(ProxyConfig {
            url,
            username,
            password,
            no_proxy: Vec::new(),
        })
    }

    /// Reads HTTPS_PROXY/https_proxy (then ALL_PROXY/all_proxy) and
    /// NO_PROXY/no_proxy from the given lookup, so tests need not touch the
    /// process environment. Empty values count as unset. `Ok(None)` means no
    /// proxy is configured.
    pub fn from_env_with(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ProxyConfig>, TransportError> {
        let first = |names: &[&str]| -> Option<(String, String)> {
            names.iter().find_map(|n| {
                get(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| ((*n).to_owned(), v))
            })
        };
        let Some((var, value)) = first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
        else {
            return Ok(None);
        };
        let mut proxy = ProxyConfig::parse(&value).map_err(|e| TransportError::Config {
            detail: format!("{var}: {e}"),
        })?;
        if let Some((_, list)) = first(&["NO_PROXY", "no_proxy"]) {
            proxy.no_proxy = no_proxy::split_list(&list);
        }
        Ok(Some(proxy))
    }

    /// The proxy from the process environment (see [`Self::from_env_with`]).
    pub fn from_env() -> Result<Option<ProxyConfig>, TransportError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// host:port only, never credentials (for logs and reports).
    pub fn redacted(&self) -> String {
        let host = self.url.host_str().unwrap_or("");
        let port = self.url.port_or_known_default().unwrap_or(80);
        format!("{host}:{port}")
    }

    /// The proxy's host, as it should be resolved (IPv6 literals without
    /// brackets).
    pub(crate) fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    /// The proxy's port.
    pub(crate) fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// NO_PROXY matching: exact host, ".suffix" / "suffix" domain match,
    /// "*", IP addresses and CIDR ranges. Case-insensitive; a trailing dot
    /// on either side is ignored.
    pub fn bypasses(&self, host: &str) -> bool {
        self.no_proxy
            .iter()
            .any(|entry| no_proxy::matches(entry, host))
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &self.redacted())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Decodes `%XX` escapes, as the `url` crate leaves them in user info.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a %-escape in the user info is malformed".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user info is not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tether_wire::ErrorCode;

    #[test]
    fn parse_splits_credentials_out_of_the_url() {
        let p = ProxyConfig::parse("http://alice:s%40cret@proxy.corp:3128").expect("valid");
        assert_eq!(p.url.as_str(), "http://proxy.corp:3128/");
        assert_eq!(p.username.as_deref(), Some("alice"));
        assert_eq!(p.password.as_deref(), Some("s@cret"));
        assert_eq!(p.redacted(), "proxy.corp:3128");
        assert_eq!(p.host(), "proxy.corp");
        assert_eq!(p.port(), 3128);
    }

    #[test]
    fn parse_accepts_bare_host_port_and_defaults_port_80() {
        let p = ProxyConfig::parse("proxy.corp:8080").expect("valid");
        assert_eq!(p.redacted(), "proxy.corp:8080");
        assert_eq!(p.username, None);
        let p = ProxyConfig::parse("http://proxy.corp/").expect("valid");
        assert_eq!(p.redacted(), "proxy.corp:80");
        let p = ProxyConfig::parse("http://[::1]:3128").expect("valid");
        assert_eq!(p.redacted(), "[::1]:3128");
        assert_eq!(p.host(), "::1");
    }

    #[test]
    fn parse_rejects_other_schemes_without_echoing_secrets() {
        for input in [
            "https://u:hunter2@proxy:443",
            "socks5://u:hunter2@proxy:1080",
            "",
            "http://",
            "http://u:hunter2@proxy:3128/path",
        ] {
            let err = ProxyConfig::parse(input).expect_err(input);
            assert_eq!(err.code(), ErrorCode::ConfigInvalid, "{input}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = ProxyConfig::parse("https://proxy:443").expect_err("https");
        assert!(
            err.to_string().contains("\"https\" is not supported"),
            "{err}"
        );
    }

    #[test]
    fn debug_and_redacted_never_show_the_password() {
        let p = ProxyConfig::parse("http://alice:hunter2@proxy.corp:3128").expect("valid");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!p.redacted().contains("alice"));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_prefers_https_proxy_then_all_proxy() {
        let got = ProxyConfig::from_env_with(env(&[
            ("ALL_PROXY", "http://all:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTPS_PROXY", "http://upper:3"),
        ]))
        .expect("valid");
        assert_eq!(got.map(|p| p.redacted()), Some("upper:3".to_owned()));

        let got = ProxyConfig::from_env_with(env(&[
            ("HTTPS_PROXY", "  "),
            ("all_proxy", "http://all:1"),
        ]))
        .expect("valid");
        assert_eq!(got.map(|p| p.redacted()), Some("all:1".to_owned()));

        let got =
            ProxyConfig::from_env_with(env(&[("HTTP_PROXY", "http://plain:1")])).expect("valid");
        assert!(got.is_none(), "HTTP_PROXY is for http:// URLs only");
    }

    #[test]
    fn env_reads_no_proxy_and_names_the_bad_variable() {
        let got = ProxyConfig::from_env_with(env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("no_proxy", " localhost, .corp.example ,10.0.0.0/8,,"),
        ]))
        .expect("valid")
        .expect("configured");
        assert_eq!(
            got.no_proxy,
            vec!["localhost", ".corp.example", "10.0.0.0/8"]
        );
        assert!(got.bypasses("LOCALHOST"));
        assert!(got.bypasses("a.corp.example"));
        assert!(got.bypasses("10.1.2.3"));
        assert!(!got.bypasses("server.example"));

        let err = ProxyConfig::from_env_with(env(&[("https_proxy", "socks5://u:pw@p:1")]))
            .expect_err("socks");
        assert!(err.to_string().contains("https_proxy"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%20b").as_deref(), Ok("a b"));
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn hostile_proxy_urls_never_panic_or_leak() {
        for input in crate::hostile::inputs(2000, 60) {
            let text = String::from_utf8_lossy(&input);
            if let Ok(p) = ProxyConfig::parse(&text) {
                assert_eq!(p.url.scheme(), "http");
                assert!(!p.redacted().contains('@'), "{}", p.redacted());
            }
        }
    }
}
