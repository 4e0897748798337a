//! Who answered `GET /health` when the Tether server did not: a balancer
//! whose backend is down, a gateway that rate-limits, a gateway that
//! demands a client certificate, or a portal or block page. Each has its
//! own code and fix, told apart by status, headers and body.

use std::time::Duration;

use time::OffsetDateTime;

/// Who answered in the Tether server's place, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A reverse proxy or load balancer answered 502/503/504: the server
    /// behind it is down or out of its reach.
    BackendDown {
        /// The intermediary, from `Server` or the body (`haproxy`, `nginx`).
        by: Option<String>,
    },
    /// A gateway answered 429: slow down.
    RateLimited {
        /// The intermediary, when it names itself.
        by: Option<String>,
        /// Retry-After, when it gives one.
        retry_after: Option<Duration>,
    },
    /// A gateway demands a TLS client certificate (nginx's "400 No required
    /// SSL certificate was sent", or 495/496).
    ClientCertRequired {
        /// The intermediary, when it names itself.
        by: Option<String>,
    },
    /// Anything else: a captive portal, a block page, another site.
    NotTether,
}

/// Judges an answer that is not the Tether server's health JSON.
pub(crate) fn classify(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> Answer {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(8192)]).to_ascii_lowercase();
    let by = header("server").or_else(|| {
        [
            "haproxy",
            "nginx",
            "envoy",
            "traefik",
            "cloudflare",
            "apache",
        ]
        .iter()
        .find(|n| text.contains(*n))
        .map(|n| (*n).to_owned())
    });
    let client_cert = status == 495
        || status == 496
        || (status == 400
            && (text.contains("no required ssl certificate was sent")
                || text.contains("ssl certificate error")));
    if client_cert {
        return Answer::ClientCertRequired { by };
    }
    match status {
        429 => Answer::RateLimited {
            by,
            retry_after: header("retry-after").and_then(|v| retry_after(&v, now)),
        },
        502..=504 => Answer::BackendDown { by },
        _ => Answer::NotTether,
    }
}

/// Retry-After as delta-seconds or an HTTP date, capped at a day so a
/// hostile value cannot tell anyone to wait for years.
fn retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    const CAP: u64 = 86_400;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(CAP)));
    }
    let at = super::parse_http_date(value)?;
    let secs = (at - now).whole_seconds().clamp(0, CAP as i64);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn backends_down_rate_limits_and_client_certificates_are_told_apart() {
        assert_eq!(
            classify(
                503,
                &headers(&[]),
                b"<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>",
                NOW
            ),
            Answer::BackendDown { by: None }
        );
        assert_eq!(
            classify(
                502,
                &headers(&[("server", "nginx/1.22.1")]),
                b"<html>502 Bad Gateway</html>",
                NOW
            ),
            Answer::BackendDown {
                by: Some("nginx/1.22.1".into())
            }
        );
        assert_eq!(
            classify(429, &headers(&[("retry-after", "30")]), b"", NOW),
            Answer::RateLimited {
                by: None,
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            classify(
                400,
                &headers(&[("server", "nginx")]),
                b"<title>400 No required SSL certificate was sent</title>",
                NOW
            ),
            Answer::ClientCertRequired {
                by: Some("nginx".into())
            }
        );
        assert_eq!(
            classify(200, &headers(&[]), b"<title>Guest Wi-Fi</title>", NOW),
            Answer::NotTether
        );
        assert_eq!(
            classify(400, &headers(&[]), b"bad request", NOW),
            Answer::NotTether
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_caps_both() {
        assert_eq!(retry_after("120", NOW), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Thu, 01 Jan 2026 00:01:00 GMT", NOW),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Wed, 31 Dec 2025 00:00:00 GMT", NOW),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("99999999999999", NOW),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(retry_after("soon", NOW), None);
    }
}
