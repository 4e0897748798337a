//! The HTTP phase: HTTP/1.1 over an established TLS stream, with a time
//! limit per exchange and a hard cap on response bodies.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::TransportError;
use crate::tls::{TlsInfo, TlsStream};
use crate::transport::PhaseTimings;

/// An open HTTPS connection to a server's origin. Keep-alive: it can send
/// many requests, one at a time.
#[derive(Debug)]
pub struct Connection {
    /// How long each phase of opening the connection took.
    pub timings: PhaseTimings,
    /// The address the TCP connection went to (the proxy's, when tunnelled).
    pub peer: SocketAddr,
    /// What TLS negotiated and what the server presented.
    pub tls: TlsInfo,
    /// The proxy the connection goes through, as `host:port` (no credentials).
    pub via_proxy: Option<String>,
    sender: SendRequest<Full<Bytes>>,
    /// The `Host` header value: host, plus the port when it is not 443.
    authority: String,
    user_agent: HeaderValue,
    http_timeout: Duration,
    max_body_bytes: usize,
}

/// A complete response: status, headers and the whole (capped) body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most `max_body_bytes` long.
    pub body: Bytes,
    /// The timings of the phases this response needed.
    pub timings: PhaseTimings,
}

/// The parts of the transport's configuration the HTTP phase uses.
pub(crate) struct HttpSettings {
    pub(crate) authority: String,
    pub(crate) user_agent: HeaderValue,
    pub(crate) http_timeout: Duration,
    pub(crate) max_body_bytes: usize,
}

/// What the connection phases produced, handed to the HTTP phase.
pub(crate) struct Established {
    pub(crate) stream: TlsStream,
    pub(crate) timings: PhaseTimings,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: TlsInfo,
    pub(crate) via_proxy: Option<String>,
}

impl Connection {
    /// Runs the HTTP/1.1 handshake over an established TLS stream and spawns
    /// the task that drives the connection.
    pub(crate) async fn handshake(
        established: Established,
        settings: HttpSettings,
    ) -> Result<Connection, TransportError> {
        let Established {
            stream,
            timings,
            peer,
            tls,
            via_proxy,
        } = established;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError::Http {
                detail: format!("HTTP/1.1 handshake failed: {e}"),
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(error = %error, "HTTP connection ended with an error");
            }
        });
        Ok(Connection {
            timings,
            peer,
            tls,
            via_proxy,
            sender,
            authority: settings.authority,
            user_agent: settings.user_agent,
            http_timeout: settings.http_timeout,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// Sends one request and reads the whole response. Adds `Host` and
    /// `User-Agent` when missing; an absolute URI is reduced to its path and
    /// query (HTTP/1.1 origin form). The exchange is limited by the HTTP
    /// timeout and the body by `max_body_bytes`.
    pub async fn send(&mut self, req: http::Request<Bytes>) -> Result<Response, TransportError> {
        let started = Instant::now();
        let req = self.prepare(req)?;
        let limit = self.max_body_bytes;
        let exchange = async {
            let (parts, body) = send_head(&mut self.sender, req).await?.into_parts();
            if let Some(len) = content_length(&parts.headers)
                && len > limit as u64
            {
                return Err(TransportError::BodyTooLarge { limit });
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        TransportError::BodyTooLarge { limit }
                    } else {
                        TransportError::Http {
                            detail: format!("reading the response body failed: {e}"),
                        }
                    }
                })?
                .to_bytes();
            Ok((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(self.http_timeout, exchange).await {
            Err(_) => {
                return Err(TransportError::HttpTimeout {
                    elapsed: self.http_timeout,
                });
            }
            Ok(result) => result?,
        };
        let elapsed = started.elapsed();
        tracing::debug!(
            status = parts.status.as_u16(),
            body_bytes = body.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "HTTP exchange finished"
        );
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            timings: PhaseTimings {
                http: Some(elapsed),
                ..PhaseTimings::default()
            },
        })
    }

    /// Sends one request and returns as soon as the response head arrives;
    /// the body is read chunk by chunk with [`BodyStream::chunk`], so a large
    /// download can be written to disk as it arrives (and resumed after a
    /// cut). The head must arrive within the HTTP timeout; each chunk must
    /// then arrive within it too (an idle limit, not a total one). There is
    /// no body cap here: the caller knows the length it will accept.
    pub async fn send_streaming(
        &mut self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, TransportError> {
        let req = self.prepare(req)?;
        let head = send_head(&mut self.sender, req);
        let resp = match tokio::time::timeout(self.http_timeout, head).await {
            Err(_) => {
                return Err(TransportError::HttpTimeout {
                    elapsed: self.http_timeout,
                });
            }
            Ok(result) => result?,
        };
        let (parts, body) = resp.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: BodyStream {
                body,
                idle: self.http_timeout,
            },
        })
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    fn prepare(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Request<Full<Bytes>>, TransportError> {
        let (mut parts, body) = req.into_parts();
        if parts.uri.authority().is_some() || parts.uri.scheme().is_some() {
            let origin_form = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/")
                .to_owned();
            parts.uri = origin_form
                .parse()
                .map_err(|e| TransportError::InvalidUrl {
                    url: parts.uri.to_string(),
                    detail: format!("cannot reduce to a path: {e}"),
                })?;
        }
        if !parts.headers.contains_key(HOST) {
            let host =
                HeaderValue::from_str(&self.authority).map_err(|e| TransportError::InvalidUrl {
                    url: self.authority.clone(),
                    detail: format!("not a valid Host header: {e}"),
                })?;
            parts.headers.insert(HOST, host);
        }
        if !parts.headers.contains_key(USER_AGENT) {
            parts.headers.insert(USER_AGENT, self.user_agent.clone());
        }
        Ok(http::Request::from_parts(parts, Full::new(body)))
    }
}

/// Waits for the connection to be ready, sends the request and returns the
/// response head (the body still to be read).
async fn send_head(
    sender: &mut SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
    sender.ready().await.map_err(|e| TransportError::Http {
        detail: format!("the connection is closed: {e}"),
    })?;
    sender
        .send_request(req)
        .await
        .map_err(|e| TransportError::Http {
            detail: format!("the request failed: {e}"),
        })
}

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct StreamingResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

impl StreamingResponse {
    /// See [`Response::retry_after`].
    pub fn retry_after(&self, now: OffsetDateTime) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        parse_retry_after(value, now)
    }
}

/// The body of a [`StreamingResponse`].
#[derive(Debug)]
pub struct BodyStream {
    body: hyper::body::Incoming,
    idle: Duration,
}

impl BodyStream {
    /// The next chunk of data; `None` at the end of the body. A connection
    /// cut before the end is an error (hyper checks Content-Length and
    /// chunked framing), as is a chunk that does not arrive in time.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(TransportError::HttpTimeout { elapsed: self.idle }),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(TransportError::Http {
                        detail: format!("the response body was cut off: {e}"),
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry no data; keep reading.
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Response {
    /// How long the server asks the client to wait, from `Retry-After`
    /// (delta-seconds or an HTTP-date, compared with `now`). A date in the
    /// past means "now" (zero). `None` if the header is absent or malformed.
    pub fn retry_after(&self, now: OffsetDateTime) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        parse_retry_after(value, now)
    }
}

fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values instead of rejecting them.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = parse_http_date(value, now)?;
    let delta = at - now;
    if delta.is_negative() {
        return Some(Duration::ZERO);
    }
    Duration::try_from(delta).ok()
}

/// Parses the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`), and
/// accepts the obsolete RFC 850 and asctime forms too, as RFC 9110 asks.
fn parse_http_date(value: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    use time::PrimitiveDateTime;
    use time::macros::format_description;

    let imf = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let rfc850 = format_description!(
        "[weekday], [day]-[month repr:short]-[year] [hour]:[minute]:[second] GMT"
    );
    let asctime = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    if let Ok(t) = PrimitiveDateTime::parse(value, imf) {
        return Some(t.assume_utc());
    }
    if let Ok(t) = PrimitiveDateTime::parse(value, asctime) {
        return Some(t.assume_utc());
    }
    // RFC 850 has a two-digit year; RFC 9110 says to read one that would
    // be more than 50 years in the future as the past century.
    let mut tokens: Vec<&str> = value.split(' ').collect();
    let date = tokens.get(1)?;
    let (day_month, yy) = date.rsplit_once('-')?;
    if yy.len() != 2 {
        return None;
    }
    let mut year = 2000 + yy.parse::<i32>().ok()?;
    if year > now.year() + 50 {
        year -= 100;
    }
    let expanded = format!("{day_month}-{year}");
    tokens[1] = &expanded;
    PrimitiveDateTime::parse(&tokens.join(" "), rfc850)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn response_with(retry_after: &str) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(retry_after).expect("ascii"),
        );
        Response {
            status: 429,
            headers,
            body: Bytes::new(),
            timings: PhaseTimings::default(),
        }
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = datetime!(2026-05-17 12:00 UTC);
        assert_eq!(
            response_with("120").retry_after(now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(response_with(" 0 ").retry_after(now), Some(Duration::ZERO));
        assert_eq!(
            response_with("99999999999999999999999").retry_after(now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_reads_http_dates() {
        let now = datetime!(2026-05-17 12:00 UTC);
        assert_eq!(
            response_with("Sun, 17 May 2026 12:01:30 GMT").retry_after(now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            response_with("Sunday, 17-May-26 12:00:10 GMT").retry_after(now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            response_with("Sun May 17 12:00:05 2026").retry_after(now),
            Some(Duration::from_secs(5))
        );
        // A date in the past means "retry now".
        assert_eq!(
            response_with("Sat, 16 May 2026 12:00:00 GMT").retry_after(now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_rejects_garbage() {
        let now = datetime!(2026-05-17 12:00 UTC);
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "17 May 2026",
            "Sun, 17 May 2026 12:01:30 PST",
        ] {
            assert_eq!(response_with(bad).retry_after(now), None, "{bad:?}");
        }
        let none = Response {
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timings: PhaseTimings::default(),
        };
        assert_eq!(none.retry_after(now), None);
    }

    #[test]
    fn hostile_retry_after_values_never_panic() {
        let now = datetime!(2026-05-17 12:00 UTC);
        for input in crate::hostile::inputs(3000, 40) {
            let _ = parse_retry_after(&String::from_utf8_lossy(&input), now);
        }
    }
}
