//! `revocation`: for each presented certificate, the OCSP (AIA) and CRL
//! (CDP) URLs; CRLs are fetched over the agent's path (directly, or
//! through the proxy's tunnel) and searched for the certificate's serial.
//! OCSP requests (RFC 6960, POST) go the same way, one per certificate
//! whose issuer is in the presented chain, and the signed answer is read
//! (good / revoked / unknown). "No revocation information", "revocation
//! server unreachable", "status unknown" and "revoked" are told apart.

pub(crate) mod ocsp;

use std::sync::Arc;

use serde_json::json;
use tether_wire::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::{CheckResult, rfc3339};

/// The largest CRL accepted.
const MAX_CRL_BYTES: usize = 8 * 1024 * 1024;

/// The revocation pointers of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pointers {
    pub(crate) subject: String,
    pub(crate) serial: Vec<u8>,
    pub(crate) ocsp: Vec<String>,
    pub(crate) crl: Vec<String>,
}

/// Reads the AIA OCSP and CDP URLs of a DER certificate.
pub(crate) fn pointers(der: &[u8]) -> Option<Pointers> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut p = Pointers {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial().to_vec(),
        ..Pointers::default()
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    // id-ad-ocsp 1.3.6.1.5.5.7.48.1
                    if ad.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1"
                        && let GeneralName::URI(u) = &ad.access_location
                    {
                        p.ocsp.push((*u).to_owned());
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(cdp) => {
                for dp in cdp.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &dp.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                p.crl.push((*u).to_owned());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(p)
}

/// Whether the DER CRL lists `serial`; `Err` if it is not a CRL.
pub(crate) fn crl_lists(crl_der: &[u8], serial: &[u8]) -> Result<bool, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(crl_der).map_err(|e| format!("not a DER CRL: {e}"))?;
    let wanted = strip_zeros(serial);
    Ok(crl
        .iter_revoked_certificates()
        .any(|rc| strip_zeros(rc.raw_serial()) == wanted))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Which fetch of a run: the certificate's index in the chain, OCSP or
/// CRL, and the URL's index in its list.
type FetchKey = (usize, bool, usize);

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let chain = ctx.found().chain.clone();
    let now = ctx.world.clock.now();
    let budget = ctx.limit(ctx.input.revocation_budget);
    let budget_end = tokio::time::Instant::now() + budget;
    let mut r = CheckResult::pass("revocation", "Revocation (OCSP/CRL)")
        .with("budget_ms", crate::report::ms(budget));
    let mut certs = Vec::new();
    let mut revoked: Option<String> = None;
    let mut unreachable = Vec::new();
    let mut unknown = Vec::new();
    let mut any_info = false;
    // The root (self-issued, last) has no revocation status to check.
    let checked = if chain.len() > 1 {
        &chain[..chain.len() - 1]
    } else {
        &chain[..]
    };
    // Every fetch starts at once, under one budget: a responder that drops
    // packets costs the budget once, not once per URL, and cannot starve
    // the others.
    let mut set = tokio::task::JoinSet::new();
    for (i, der) in checked.iter().enumerate() {
        let Some(p) = pointers(der) else { continue };
        if let Some(issuer) = chain.get(i + 1) {
            for (j, url) in p.ocsp.iter().enumerate() {
                if let Ok(req) = ocsp::request(der, issuer) {
                    let (ctx, url) = (ctx.clone(), url.clone());
                    set.spawn(async move {
                        let key: FetchKey = (i, true, j);
                        (key, fetch(&ctx, &url, Some(&req), budget_end).await)
                    });
                }
            }
        }
        for (j, url) in p.crl.iter().enumerate() {
            let (ctx, url) = (ctx.clone(), url.clone());
            set.spawn(async move {
                let key: FetchKey = (i, false, j);
                (key, fetch(&ctx, &url, None, budget_end).await)
            });
        }
    }
    let mut fetched: std::collections::HashMap<FetchKey, Result<Vec<u8>, String>> =
        std::collections::HashMap::new();
    let collect = async {
        while let Some(joined) = set.join_next().await {
            if let Ok((key, outcome)) = joined {
                fetched.insert(key, outcome);
            }
        }
    };
    let _ = tokio::time::timeout_at(budget_end, collect).await;
    set.abort_all();
    let out_of_budget = || {
        format!(
            "no answer within the revocation budget of {} ms",
            budget.as_millis()
        )
    };
    for (i, der) in checked.iter().enumerate() {
        let Some(p) = pointers(der) else { continue };
        any_info |= !p.ocsp.is_empty() || !p.crl.is_empty();
        let issuer = chain.get(i + 1);
        let mut ocsp_results = Vec::new();
        for (j, url) in p.ocsp.iter().enumerate() {
            let Some(issuer) = issuer else {
                let e = "the issuer certificate is not in the presented chain, so no OCSP request can name it";
                ocsp_results.push(json!({ "url": url, "status": "unknown", "error": e }));
                unknown.push(format!("{url} ({e})"));
                continue;
            };
            let outcome = match ocsp::request(der, issuer) {
                Ok(_) => fetched
                    .remove(&(i, true, j))
                    .unwrap_or_else(|| Err(out_of_budget()))
                    .map(|body| {
                        ocsp::read_response(&body, der, issuer, now).map_err(|e| e.to_string())
                    }),
                Err(e) => Ok(Err(e.to_string())),
            };
            match outcome {
                Ok(Ok(status)) => {
                    let mut entry = json!({ "url": url, "status": status.as_str() });
                    match &status {
                        ocsp::OcspStatus::Revoked { at, reason } => {
                            entry["revoked_at"] = rfc3339(*at).into();
                            if let Some(reason) = reason {
                                entry["reason"] = reason.as_str().into();
                            }
                            let why = reason
                                .as_deref()
                                .map(|r| format!(", reason {r}"))
                                .unwrap_or_default();
                            revoked.get_or_insert(format!(
                                "The certificate \"{}\" is revoked according to the OCSP responder at {url} (since {}{why}).",
                                p.subject,
                                rfc3339(*at)
                            ));
                        }
                        ocsp::OcspStatus::Unknown => unknown.push(format!(
                            "{url} (the responder does not know this certificate)"
                        )),
                        ocsp::OcspStatus::Good => {}
                    }
                    ocsp_results.push(entry);
                }
                Ok(Err(e)) => {
                    ocsp_results.push(json!({ "url": url, "status": "unknown", "error": e }));
                    unknown.push(format!("{url} ({e})"));
                }
                Err(e) => {
                    ocsp_results.push(json!({ "url": url, "status": "unreachable", "error": e }));
                    unreachable.push(url.clone());
                }
            }
        }
        let mut crl_results = Vec::new();
        for (j, url) in p.crl.iter().enumerate() {
            match fetched
                .remove(&(i, false, j))
                .unwrap_or_else(|| Err(out_of_budget()))
            {
                Ok(body) => match crl_lists(&body, &p.serial) {
                    Ok(true) => {
                        crl_results.push(json!({ "url": url, "status": "revoked" }));
                        revoked.get_or_insert(format!(
                            "The certificate \"{}\" is listed as revoked by the CRL at {url}.",
                            p.subject
                        ));
                    }
                    Ok(false) => crl_results.push(json!({ "url": url, "status": "good" })),
                    Err(e) => {
                        unknown.push(format!("{url} ({e})"));
                        crl_results.push(json!({ "url": url, "status": "unknown", "error": e }))
                    }
                },
                Err(e) => {
                    crl_results.push(json!({ "url": url, "status": "unreachable", "error": e }));
                    unreachable.push(url.clone());
                }
            }
        }
        certs.push(json!({
            "subject": p.subject,
            "ocsp_urls": p.ocsp,
            "ocsp": ocsp_results,
            "crl": crl_results,
        }));
    }
    r.set("certificates", certs);
    let r = if let Some(problem) = revoked {
        r.with("outcome", "revoked")
            .fail(ErrorCode::TlsRevoked, problem)
    } else if !unreachable.is_empty() {
        r.with("outcome", "unreachable").warn(
            ErrorCode::RevocationUnreachable,
            format!(
                "The revocation server could not be reached: {}.",
                unreachable.join(", ")
            ),
        )
    } else if !unknown.is_empty() {
        r.with("outcome", "unknown").warn(
            ErrorCode::RevocationUnknown,
            format!(
                "The revocation status could not be established: {}.",
                unknown.join("; ")
            ),
        )
    } else if !any_info {
        r.with("outcome", "no_information").with(
            "note",
            "no revocation information: the certificates name no OCSP or CRL URL",
        )
    } else {
        r.with("outcome", "good")
    };
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}

/// GET (or, with a body, POST as an OCSP request) an http:// URL over the
/// agent's path: through a CONNECT tunnel when a proxy is used, else
/// directly; HTTP/1.0, read to the end or to Content-Length (capped).
async fn fetch(
    ctx: &Ctx,
    url: &str,
    ocsp_request: Option<&[u8]>,
    budget_end: tokio::time::Instant,
) -> Result<Vec<u8>, String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    if u.scheme() != "http" {
        return Err(format!("unsupported scheme {}", u.scheme()));
    }
    let host = match u.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err("no host".into()),
    };
    let port = u.port_or_known_default().unwrap_or(80);
    let transport = ctx.transport().map_err(|e| e.to_string())?;
    let left = budget_end.saturating_duration_since(tokio::time::Instant::now());
    let limit = ctx.limit(std::time::Duration::from_secs(5)).min(left);
    let exchange = async {
        let proxy = transport.proxy_for(&host).cloned();
        let (hop, hop_port) = match &proxy {
            Some(p) => (
                match p.url.host() {
                    Some(url::Host::Ipv6(ip)) => ip.to_string(),
                    Some(h) => h.to_string(),
                    None => String::new(),
                },
                p.url.port_or_known_default().unwrap_or(80),
            ),
            None => (host.clone(), port),
        };
        let (addrs, _) = transport.resolve(&hop).await.map_err(|e| e.to_string())?;
        let ip = addrs.first().copied().ok_or("no address")?;
        let (mut io, _) = transport
            .tcp_connect(std::net::SocketAddr::new(ip, hop_port))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = &proxy {
            io = transport
                .proxy_tunnel(io, p, &host, port)
                .await
                .map_err(|e| e.to_string())?
                .0;
        }
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        let host_header = u.host_str().unwrap_or("");
        let mut req = match ocsp_request {
            Some(body) => format!(
                "POST {path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: tether-doctor\r\n\
                 Content-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            None => format!(
                "GET {path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: tether-doctor\r\n\r\n"
            )
            .into_bytes(),
        };
        req.extend_from_slice(ocsp_request.unwrap_or_default());
        io.write_all(&req).await.map_err(|e| e.to_string())?;
        // Read until the server closes, or until the declared body is in:
        // some responders (openssl ocsp) keep the connection open.
        let cap = MAX_CRL_BYTES + 16 * 1024;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > cap {
                return Err(format!("the answer exceeds {cap} bytes"));
            }
            if let Some((head_len, Some(body_len))) = head_and_length(&buf)
                && buf.len() >= head_len + body_len
            {
                break;
            }
        }
        Ok::<_, String>(buf)
    };
    let raw = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", limit.as_millis()))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status line")?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = &raw[split + 4..];
    // A declared length bounds the body; a longer read is trailing noise.
    match head_and_length(&raw).and_then(|(_, n)| n) {
        Some(n) if n > body.len() => Err(format!(
            "the body ended after {} of {n} declared bytes",
            body.len()
        )),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

/// The length of the HTTP head (with its blank line) once it is complete,
/// and the Content-Length it declares, if any.
fn head_and_length(raw: &[u8]) -> Option<(usize, Option<usize>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let declared = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    Some((split + 4, declared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(strip_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_zeros(&[0]), &[] as &[u8]);
    }

    #[test]
    fn heads_declare_their_body_length() {
        assert_eq!(
            head_and_length(b"HTTP/1.0 200 OK\r\nContent-length: 5\r\n\r\nab"),
            Some((38, Some(5)))
        );
        assert_eq!(
            head_and_length(b"HTTP/1.0 200 OK\r\n\r\n"),
            Some((19, None))
        );
        assert_eq!(
            head_and_length(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Some((38, None))
        );
        assert_eq!(head_and_length(b"HTTP/1.0 200 OK\r\n"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate_or_a_crl() {
        assert!(pointers(b"not a cert").is_none());
        assert!(crl_lists(b"not a crl", &[1]).is_err());
    }
}
