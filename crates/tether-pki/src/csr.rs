//! A certificate signing request, read as hostile input.
//!
//! Order of checks: size, PEM or DER, PKCS#10 syntax, the key's type and
//! size, the signature with the CSR's own key (rcgen verifies it with ring
//! while reading), then every requested name against the names the task
//! allows. The CA signs only what passed, and puts in the certificate only
//! the names checked here, never the CSR's subject or other extensions.

use std::net::IpAddr;

use tether_wire::ErrorCode;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The largest CSR read, PEM or DER.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// The most names one certificate may carry.
pub const MAX_NAMES: usize = 100;

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";

/// Why a CSR is refused; each reason has its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    #[error("the CSR is {size} bytes; at most {MAX_CSR_BYTES} are read")]
    TooLarge { size: usize },
    #[error("the CSR is not a PKCS#10 request: {0}")]
    Malformed(String),
    #[error("the CSR's signature does not verify with its own key")]
    BadSignature,
    #[error("the CSR's key is {observed}; expected ECDSA P-256/P-384, Ed25519 or RSA 2048-8192")]
    KeyRefused { observed: String },
    #[error("the CSR asks for {name:?}, which the task does not allow (allowed: {allowed})")]
    NameNotAllowed { name: String, allowed: String },
    #[error("the CSR asks for no name (no subjectAltName and no common name)")]
    NoName,
    #[error("the CSR asks for {count} names; at most {MAX_NAMES}")]
    TooManyNames { count: usize },
}

impl CsrError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CsrError::TooLarge { .. } | CsrError::Malformed(_) => ErrorCode::CsrMalformed,
            CsrError::BadSignature => ErrorCode::CsrSignatureInvalid,
            CsrError::KeyRefused { .. } => ErrorCode::CsrKeyRefused,
            CsrError::NameNotAllowed { .. } | CsrError::NoName | CsrError::TooManyNames { .. } => {
                ErrorCode::CsrNameNotAllowed
            }
        }
    }
}

/// A checked CSR: its DER and the names it may have.
#[derive(Debug, Clone)]
pub struct CsrRequest {
    pub der: Vec<u8>,
    /// DNS names (lower case) and IP addresses, in the CSR's order, unique.
    pub names: Vec<String>,
    /// E.g. `ECDSA P-256`, `RSA 3072`.
    pub key: String,
}

/// The CSR as DER: PEM (`CERTIFICATE REQUEST`) or raw DER.
fn der_of(input: &[u8]) -> Result<Vec<u8>, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { size: input.len() });
    }
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    let p = pem::parse(input).map_err(|e| CsrError::Malformed(format!("not PEM: {e}")))?;
    match p.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Ok(p.into_contents()),
        other => Err(CsrError::Malformed(format!(
            "PEM label {:?}, expected CERTIFICATE REQUEST",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Checks a CSR against the names the task allows (DNS names compared
/// without case, IP addresses by value). `allowed` comes from a validated
/// task spec.
pub fn check(input: &[u8], allowed: &[String]) -> Result<CsrRequest, CsrError> {
    let der = der_of(input)?;
    // The DER parser reads the outer SEQUENCE's tag number only, so a PEM
    // body whose first byte another class or a primitive form (0xd0…)
    // still parsed, and its signature (over the inner info) verified: the
    // fuzz target found it. A PKCS#10 request is a universal constructed
    // SEQUENCE; anything else is refused before any parser sees it.
    if der.first() != Some(&0x30) {
        return Err(CsrError::Malformed(format!(
            "the request starts with tag 0x{:02x}, not a SEQUENCE (0x30)",
            der.first().copied().unwrap_or_default()
        )));
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} bytes after the request",
            rest.len()
        )));
    }
    // The key first: ring would not verify a weak key's signature, and the
    // refusal must name the key, not the signature.
    let key = key_of(&csr)?;
    // rcgen reads the request again and verifies its signature with ring.
    match rcgen::CertificateSigningRequestParams::from_der(&der.clone().into()) {
        Ok(_) => {}
        Err(rcgen::Error::RingUnspecified) => return Err(CsrError::BadSignature),
        Err(e) => return Err(CsrError::Malformed(e.to_string())),
    }
    let mut requested: Vec<String> = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(n) => requested.push(n.to_ascii_lowercase()),
                        GeneralName::IPAddress(b) => requested.push(ip_text(b)?),
                        other => {
                            return Err(CsrError::Malformed(format!(
                                "a subjectAltName of another type ({other:?})"
                            )));
                        }
                    }
                }
            }
        }
    }
    // The subject is never copied into the certificate; its common name
    // counts as a requested name only when the CSR has no subjectAltName
    // (as `openssl req -subj /CN=name` makes).
    let cns = if requested.is_empty() {
        csr.certification_request_info
            .subject
            .iter_common_name()
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    for cn in cns {
        let cn = cn
            .as_str()
            .map_err(|_| CsrError::Malformed("a common name that is not text".to_owned()))?;
        requested.push(cn.to_ascii_lowercase());
    }
    let mut names: Vec<String> = Vec::new();
    for n in requested {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.is_empty() {
        return Err(CsrError::NoName);
    }
    if names.len() > MAX_NAMES {
        return Err(CsrError::TooManyNames { count: names.len() });
    }
    let allowed_norm: Vec<String> = allowed.iter().map(|a| normalize(a)).collect();
    for n in &names {
        if !allowed_norm.contains(&normalize(n)) {
            return Err(CsrError::NameNotAllowed {
                name: n.chars().take(256).collect(),
                allowed: allowed.join(", ").chars().take(512).collect(),
            });
        }
    }
    Ok(CsrRequest { der, names, key })
}

fn normalize(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.trim_end_matches('.').to_ascii_lowercase(),
    }
}

fn ip_text(bytes: &[u8]) -> Result<String, CsrError> {
    match bytes.len() {
        4 => {
            let b: [u8; 4] = bytes.try_into().map_err(|_| CsrError::NoName)?;
            Ok(IpAddr::from(b).to_string())
        }
        16 => {
            let b: [u8; 16] = bytes.try_into().map_err(|_| CsrError::NoName)?;
            Ok(IpAddr::from(b).to_string())
        }
        n => Err(CsrError::Malformed(format!("an IP address of {n} bytes"))),
    }
}

fn key_of(csr: &X509CertificationRequest<'_>) -> Result<String, CsrError> {
    let spki = &csr.certification_request_info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    let refused = |observed: String| Err(CsrError::KeyRefused { observed });
    match alg.as_str() {
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => Ok("ECDSA P-256".to_owned()),
                OID_P384 => Ok("ECDSA P-384".to_owned()),
                other => refused(format!("ECDSA on curve {other}")),
            }
        }
        OID_ED25519 => Ok("Ed25519".to_owned()),
        OID_RSA => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => return refused("an unreadable RSA key".to_owned()),
            };
            if (2048..=8192).contains(&bits) {
                Ok(format!("RSA {bits}"))
            } else {
                refused(format!("RSA {bits}"))
            }
        }
        other => refused(format!("algorithm {other}")),
    }
}
