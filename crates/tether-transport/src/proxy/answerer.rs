//! Who answered a CONNECT that opened no tunnel: an HTTP proxy refusing
//! it, or something that is not a proxy at all (a web server the proxy
//! setting points at by mistake). Each has its own fix, so the status, the
//! headers and the body are read for the signs of each.

/// Who answered a refused CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answerer {
    /// An HTTP proxy that refuses the tunnel (a policy, a port rule).
    Proxy {
        /// What says it is a proxy, e.g. `X-Squid-Error: ERR_ACCESS_DENIED 0`.
        evidence: String,
    },
    /// Something that is not an HTTP proxy: it did not understand CONNECT.
    NotAProxy {
        /// What says so, e.g. `Server: nginx/1.22.1, 400 with an HTML page`.
        evidence: String,
    },
}

/// What a refused CONNECT's answer showed: who answered, and what that
/// was judged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who answered.
    pub answered_by: Answerer,
    /// The reply's headers, in order.
    pub headers: Vec<(String, String)>,
    /// The first bytes of the reply's body (at most 4 KiB).
    pub body: Vec<u8>,
}

/// `Server` values of HTTP proxies and secure web gateways.
const PROXY_SERVERS: &[&str] = &[
    "squid",
    "tinyproxy",
    "privoxy",
    "polipo",
    "ziproxy",
    "3proxy",
    "ccproxy",
    "wingate",
    "zscaler",
    "bluecoat",
    "mcafee web gateway",
    "forcepoint",
    "websense",
    "fortigate",
    "proxy",
];

/// `Server` values of web servers and application servers.
const WEB_SERVERS: &[&str] = &[
    "nginx",
    "openresty",
    "apache",
    "microsoft-iis",
    "lighttpd",
    "caddy",
    "gunicorn",
    "uvicorn",
    "jetty",
    "kestrel",
    "werkzeug",
    "tomcat",
    "cloudflare",
    "envoy",
];

/// Judges a non-2xx, non-407 answer to CONNECT from its status, headers
/// and (the start of) its body. A proxy that refuses says it is a proxy
/// (`Proxy-Agent`, `Via`, `X-Squid-Error`, a proxy's `Server`), or answers
/// as a proxy does (403 by policy, 502/503/504 when the target is out of
/// reach). A web server does not know CONNECT: it answers 400, 404, 405 or
/// 501, names itself a web server, or sends its own HTML error page.
pub fn who_answered(status: u16, headers: &[(String, String)], body: &[u8]) -> Answerer {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    for name in ["Proxy-Agent", "X-Squid-Error", "Via", "Proxy-Authenticate"] {
        if let Some(v) = header(name) {
            return Answerer::Proxy {
                evidence: format!("{name}: {v}"),
            };
        }
    }
    let server = header("Server").map(str::to_owned);
    let server_lower = server.as_deref().unwrap_or("").to_ascii_lowercase();
    if let Some(s) = &server
        && PROXY_SERVERS.iter().any(|p| server_lower.contains(p))
    {
        return Answerer::Proxy {
            evidence: format!("Server: {s}"),
        };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    let html = text.contains("<html") || text.contains("<!doctype html");
    let web_server = WEB_SERVERS.iter().any(|w| server_lower.contains(w));
    let unknown_method = matches!(status, 400 | 404 | 405 | 501);
    if web_server || (unknown_method && (html || server.is_some())) {
        let mut why = Vec::new();
        if let Some(s) = &server {
            why.push(format!("Server: {s}"));
        }
        why.push(format!("{status} to CONNECT"));
        if html {
            why.push("an HTML page".to_owned());
        }
        why.push("no proxy header (Proxy-Agent, Via, X-Squid-Error)".to_owned());
        return Answerer::NotAProxy {
            evidence: why.join(", "),
        };
    }
    Answerer::Proxy {
        evidence: format!("{status} with no sign of a web server"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_web_server_answering_connect_is_not_a_proxy() {
        let nginx = who_answered(
            400,
            &h(&[("Server", "nginx/1.22.1"), ("Content-Type", "text/html")]),
            b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body><center>nginx</center></body></html>",
        );
        assert!(
            matches!(nginx, Answerer::NotAProxy { ref evidence } if evidence.contains("nginx/1.22.1")),
            "{nginx:?}"
        );
        // A bare 405 page with no Server header is still a web server's.
        let bare = who_answered(405, &[], b"<!DOCTYPE html><p>Method Not Allowed</p>");
        assert!(matches!(bare, Answerer::NotAProxy { .. }), "{bare:?}");
    }

    #[test]
    fn proxies_that_refuse_say_so() {
        for (status, headers) in [
            (
                403,
                h(&[
                    ("Server", "squid/5.7"),
                    ("X-Squid-Error", "ERR_ACCESS_DENIED 0"),
                ]),
            ),
            (403, h(&[("Server", "tinyproxy/1.11.1")])),
            (403, h(&[("Proxy-Agent", "Corp Gateway")])),
            (400, h(&[("Via", "1.1 gw.corp (squid)")])),
            (403, vec![]),
            (502, h(&[("Content-Type", "text/html")])),
        ] {
            let a = who_answered(status, &headers, b"<html>denied</html>");
            assert!(
                matches!(a, Answerer::Proxy { .. }),
                "{status} {headers:?}: {a:?}"
            );
        }
    }

    #[test]
    fn hostile_bodies_and_headers_never_panic() {
        let long = "x".repeat(100_000);
        let _ = who_answered(400, &h(&[("Server", long.as_str())]), long.as_bytes());
        let _ = who_answered(0, &[], &[0xff, 0xfe, 0x00]);
    }
}
