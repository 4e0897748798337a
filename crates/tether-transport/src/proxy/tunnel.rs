//! The HTTP CONNECT exchange with a proxy.
//!
//! The reply head is read one byte at a time up to its blank line, so not a
//! single byte of the tunnelled stream (the server's TLS records) is consumed
//! here. The head is small and read once per connection, so the extra system
//! calls do not matter.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::BoxedIo;
use crate::error::TransportError;
use crate::proxy::ProxyConfig;

/// The largest reply head accepted from a proxy.
pub(crate) const MAX_REPLY_HEAD: usize = 16 * 1024;

/// The most headers accepted in a proxy's reply head.
const MAX_REPLY_HEADERS: usize = 64;

/// What the proxy answered to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyReply {
    /// The status code (200 when the tunnel is open).
    pub status: u16,
    /// The reason phrase, as sent.
    pub reason: String,
    /// The reply headers, in order (values lossily decoded as UTF-8).
    pub headers: Vec<(String, String)>,
    /// The authentication schemes from `Proxy-Authenticate` (or, from
    /// proxies that answer 401, `WWW-Authenticate`), e.g. `["Basic"]`.
    pub auth_schemes: Vec<String>,
}

/// Sends CONNECT for `host:port` and reads the reply head. Returns the
/// stream, positioned at the first byte of the tunnel, and the reply, or the
/// error the reply stands for.
pub(crate) async fn connect(
    mut io: BoxedIo,
    proxy: &ProxyConfig,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(BoxedIo, ProxyReply), TransportError> {
    let redacted = proxy.redacted();
    let request = connect_request(proxy, host, port);
    let exchange = async {
        io.write_all(request.as_bytes()).await?;
        io.flush().await?;
        read_head(&mut io).await
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(TransportError::ProxyTimeout {
                proxy: redacted,
                elapsed: timeout,
            });
        }
        Ok(Err(HeadError::Io(e))) => {
            return Err(TransportError::ProxyBadReply {
                proxy: redacted,
                detail: format!("the connection failed while waiting for the reply: {e}"),
            });
        }
        Ok(Err(HeadError::Closed { received })) => {
            return Err(TransportError::ProxyBadReply {
                proxy: redacted,
                detail: format!(
                    "the proxy closed the connection after {received} bytes, before a complete reply"
                ),
            });
        }
        Ok(Err(HeadError::TooLarge)) => {
            return Err(TransportError::ProxyBadReply {
                proxy: redacted,
                detail: format!("the reply head is larger than {MAX_REPLY_HEAD} bytes"),
            });
        }
        Ok(Ok(head)) => head,
    };
    let reply = parse_reply(&head).map_err(|detail| TransportError::ProxyBadReply {
        proxy: redacted.clone(),
        detail,
    })?;
    match reply.status {
        200..=299 => Ok((io, reply)),
        // Only the proxy can answer a CONNECT (the server is not reached
        // yet), so a 401 is the proxy's too: tinyproxy 1.11 answers wrong
        // credentials with "401 Unauthorized" and WWW-Authenticate.
        401 | 407 => Err(TransportError::ProxyAuth {
            proxy: redacted,
            status: reply.status,
            offered_schemes: reply.auth_schemes,
            credentials_configured: proxy.username.is_some(),
        }),
        _ => {
            // The connection is spent; its body (bounded in size and time)
            // tells a web server's error page from a proxy's refusal.
            let body = read_body_start(&mut io, &reply.headers).await;
            let answered_by = super::who_answered(reply.status, &reply.headers, &body);
            Err(TransportError::ProxyRefused {
                proxy: redacted,
                status: reply.status,
                reason: reply.reason,
                refusal: Box::new(super::Refusal {
                    answered_by,
                    headers: reply.headers,
                    body,
                }),
            })
        }
    }
}

/// The most of a refusal's body read to judge who answered.
const MAX_REFUSAL_BODY: usize = 4096;

/// How long a refusal's body is waited for.
const REFUSAL_BODY_WAIT: Duration = Duration::from_millis(500);

/// The first bytes of a refusal's body: up to its `Content-Length`, at most
/// [`MAX_REFUSAL_BODY`], within [`REFUSAL_BODY_WAIT`]; whatever arrived.
async fn read_body_start(io: &mut BoxedIo, headers: &[(String, String)]) -> Vec<u8> {
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let want = declared.unwrap_or(MAX_REFUSAL_BODY).min(MAX_REFUSAL_BODY);
    let mut body = Vec::with_capacity(want.min(1024));
    let read = async {
        let mut buf = [0u8; 1024];
        while body.len() < want {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n.min(want - body.len())]),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_BODY_WAIT, read).await;
    body
}

/// The CONNECT request head. Contains the credentials: never log it.
fn connect_request(proxy: &ProxyConfig, host: &str, port: u16) -> String {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = &proxy.username {
        let pass = proxy.password.as_deref().unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req
}

#[derive(Debug)]
enum HeadError {
    Io(std::io::Error),
    Closed { received: usize },
    TooLarge,
}

impl From<std::io::Error> for HeadError {
    fn from(e: std::io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// Reads up to and including the blank line that ends the head.
async fn read_head(io: &mut BoxedIo) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        if head.len() >= MAX_REPLY_HEAD {
            return Err(HeadError::TooLarge);
        }
        if io.read(&mut byte).await? == 0 {
            return Err(HeadError::Closed {
                received: head.len(),
            });
        }
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
    }
}

/// Parses a proxy's reply head to CONNECT (hostile input: public so the
/// fuzz targets call this very function); the error is a human-readable
/// detail.
pub fn parse_reply(head: &[u8]) -> Result<ProxyReply, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REPLY_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the reply head is incomplete".to_owned()),
        Err(e) => {
            return Err(format!(
                "the reply is not HTTP ({e}); it starts with {:?}",
                preview(head)
            ));
        }
    }
    let Some(status) = resp.code else {
        return Err("the reply has no status code".to_owned());
    };
    let reason = resp.reason.unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let challenges = |header: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(header))
            .flat_map(|(_, value)| auth_schemes(value))
            .collect()
    };
    let mut auth_schemes = challenges("proxy-authenticate");
    if auth_schemes.is_empty() {
        auth_schemes = challenges("www-authenticate");
    }
    Ok(ProxyReply {
        status,
        reason,
        headers,
        auth_schemes,
    })
}

/// The scheme names in one `Proxy-Authenticate` value. A value may hold
/// several challenges (`Negotiate, Basic realm="x"`); a scheme is a token
/// that starts the value or follows a comma and is not a `name=value`
/// parameter.
fn auth_schemes(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut segment_start = 0;
    let mut segments = Vec::new();
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                segments.push(&value[segment_start..i]);
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&value[segment_start..]);
    for segment in segments {
        let first = segment.split_whitespace().next().unwrap_or("");
        if !first.is_empty() && !first.contains('=') {
            out.push(first.to_owned());
        }
    }
    out
}

/// The first bytes of a reply, escaped, for error messages.
fn preview(head: &[u8]) -> String {
    let n = head.len().min(32);
    String::from_utf8_lossy(&head[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_basic_credentials_only_when_configured() {
        let with = ProxyConfig::parse("http://alice:s3cret@p:3128").expect("valid");
        let req = connect_request(&with, "server.example", 443);
        assert!(
            req.starts_with("CONNECT server.example:443 HTTP/1.1\r\nHost: server.example:443\r\n")
        );
        // base64("alice:s3cret")
        assert!(
            req.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n"));

        let without = ProxyConfig::parse("http://p:3128").expect("valid");
        let req = connect_request(&without, "::1", 8443);
        assert_eq!(
            req,
            "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"
        );
    }

    #[test]
    fn replies_are_parsed_with_their_auth_schemes() {
        let head = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
            Proxy-Authenticate: Negotiate\r\n\
            Proxy-Authenticate: Basic realm=\"corp, inc\", charset=\"UTF-8\"\r\n\
            Content-Length: 0\r\n\r\n";
        let reply = parse_reply(head).expect("valid");
        assert_eq!(reply.status, 407);
        assert_eq!(reply.reason, "Proxy Authentication Required");
        assert_eq!(reply.auth_schemes, vec!["Negotiate", "Basic"]);
        assert_eq!(reply.headers.len(), 3);
    }

    #[test]
    fn a_401_reply_offers_its_www_authenticate_schemes() {
        let head =
            b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"Tinyproxy\"\r\n\r\n";
        let reply = parse_reply(head).expect("valid");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.auth_schemes, vec!["Basic"]);
    }

    #[test]
    fn several_challenges_in_one_header_are_split() {
        assert_eq!(
            auth_schemes("NTLM, Basic realm=\"a,b\", Digest realm=\"x\", qop=\"auth\""),
            vec!["NTLM", "Basic", "Digest"]
        );
        assert!(auth_schemes("").is_empty());
    }

    #[test]
    fn non_http_replies_are_rejected_with_a_preview() {
        let err = parse_reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").expect_err("not http");
        assert!(err.contains("not HTTP"), "{err}");
        assert!(err.contains("SSH-2.0"), "{err}");
    }

    #[tokio::test]
    async fn head_reading_stops_at_the_blank_line() {
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nTLS-BYTES")
            .await
            .expect("write");
        let mut io: BoxedIo = Box::new(client);
        let head = read_head(&mut io).await.expect("head");
        assert_eq!(head, b"HTTP/1.1 200 OK\r\n\r\n");
        let mut rest = [0u8; 9];
        io.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"TLS-BYTES");
    }

    #[tokio::test]
    async fn oversized_heads_are_cut_off() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REPLY_HEAD + 10));
        server.write_all(&big).await.expect("write");
        let mut io: BoxedIo = Box::new(client);
        assert!(matches!(read_head(&mut io).await, Err(HeadError::TooLarge)));
    }

    #[test]
    fn hostile_replies_never_panic() {
        for input in crate::hostile::inputs(3000, 200) {
            if let Ok(reply) = parse_reply(&input) {
                assert!(reply.headers.len() <= MAX_REPLY_HEADERS);
            }
            let _ = auth_schemes(&String::from_utf8_lossy(&input));
        }
    }
}
