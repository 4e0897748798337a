//! Revocation by the built-in CA (issue #10): the pointers issued
//! certificates carry, the CRL the intermediate signs, and the OCSP
//! responder's reading of requests and signing of answers (RFC 6960).
//!
//! - [`PkiUrls`]: the CRL Distribution Point and the AIA OCSP URL, both
//!   plain `http://` under the control plane's public PKI base URL
//!   (docs/pki.md says why not HTTPS).
//! - [`IssuingCa::crl`]: a DER CRL (v2, CRL number, thisUpdate and
//!   nextUpdate, reason codes) signed by the intermediate, built by rcgen.
//! - [`read_request`]: a DER OCSP request, read as hostile input with
//!   RustCrypto's `x509-ocsp` and `der`: which of its CertIDs name this
//!   issuer (by SHA-1 or SHA-256 hashes), their serials, and its nonce.
//! - [`IssuingCa::ocsp_response`]: a `BasicOCSPResponse` signed by the
//!   intermediate itself (ECDSA P-256 with ring), nonce echoed.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use time::{Duration, OffsetDateTime};
use x509_cert::der::asn1::{BitString, GeneralizedTime, Ia5String, Null, OctetString};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use tether_wire::RevocationReason;

/// The status of an OCSP response (`successful`, `malformedRequest`, …).
pub use x509_ocsp::OcspResponseStatus;

/// The path of the CRL under the PKI base URL.
pub const CRL_PATH: &str = "/pki/ca.crl";
/// The path of the OCSP responder under the PKI base URL (POST, and GET
/// with the base64 request appended).
pub const OCSP_PATH: &str = "/pki/ocsp";
/// `Content-Type` of a DER CRL (RFC 5280 section 4.2.1.13).
pub const CRL_CONTENT_TYPE: &str = "application/pkix-crl";
/// `Content-Type` of an OCSP request and response (RFC 6960 appendix A).
pub const OCSP_REQUEST_TYPE: &str = "application/ocsp-request";
pub const OCSP_RESPONSE_TYPE: &str = "application/ocsp-response";
/// The largest OCSP request read, DER; a real one is under 1 KiB.
pub const MAX_OCSP_REQUEST: usize = 16 * 1024;
/// The most certificates one OCSP request may ask about.
pub const MAX_OCSP_CERTS: usize = 32;
/// How long a CRL is valid (its nextUpdate after thisUpdate).
pub const CRL_VALIDITY: Duration = Duration::days(7);
/// How long an OCSP answer is valid.
pub const OCSP_VALIDITY: Duration = Duration::hours(1);

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const ID_PE_AIA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
const ID_OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// The revocation URLs issued certificates point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiUrls {
    pub crl: String,
    pub ocsp: String,
}

impl PkiUrls {
    /// From the control plane's public PKI base URL (`http://host[:port]`,
    /// no path): `…/pki/ca.crl` and `…/pki/ocsp`.
    pub fn new(base: &str) -> Result<PkiUrls, String> {
        let base = base.trim_end_matches('/');
        let rest = base.strip_prefix("http://").ok_or_else(|| {
            format!(
                "{base:?} is not an http:// URL; revocation is fetched over plain HTTP (docs/pki.md)"
            )
        })?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) || !rest.is_ascii() {
            return Err(format!(
                "{base:?} must be http://HOST or http://HOST:PORT, without a path or user"
            ));
        }
        Ok(PkiUrls {
            crl: format!("{base}{CRL_PATH}"),
            ocsp: format!("{base}{OCSP_PATH}"),
        })
    }

    /// The DER content of the Authority Information Access extension
    /// naming the OCSP responder (rcgen has no AIA of its own).
    pub(crate) fn aia_der(&self) -> Result<Vec<u8>, String> {
        let uri = Ia5String::new(&self.ocsp).map_err(|e| e.to_string())?;
        AuthorityInfoAccessSyntax(vec![AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: GeneralName::UniformResourceIdentifier(uri),
        }])
        .to_der()
        .map_err(|e| e.to_string())
    }

    pub(crate) fn aia_oid() -> Vec<u64> {
        ID_PE_AIA.arcs().map(u64::from).collect()
    }
}

/// One certificate a CRL lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// Lower-case hex, as issued.
    pub serial: String,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// Why a revocation answer could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    #[error("serial {0:?} is not hexadecimal")]
    Serial(String),
    #[error("the CRL cannot be signed: {0}")]
    Crl(#[from] rcgen::Error),
    #[error("the OCSP response cannot be encoded: {0}")]
    Encode(String),
    #[error("the intermediate's key cannot sign OCSP responses: {0}")]
    Key(String),
}

/// The issuer hashes a CertID names this CA by, per hash algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHashes {
    sha1: (Vec<u8>, Vec<u8>),
    sha256: (Vec<u8>, Vec<u8>),
}

impl IssuerHashes {
    /// From the issuer's DER certificate: hashes of its subject name's DER
    /// and of its public key's bits (RFC 6960 section 4.1.1).
    pub fn from_cert_der(der: &[u8]) -> Option<IssuerHashes> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let name = cert.subject().as_raw();
        let key = &cert.public_key().subject_public_key.data;
        let h = |alg: &'static ring::digest::Algorithm, data: &[u8]| {
            ring::digest::digest(alg, data).as_ref().to_vec()
        };
        Some(IssuerHashes {
            sha1: (
                h(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, name),
                h(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, key),
            ),
            sha256: (
                h(&ring::digest::SHA256, name),
                h(&ring::digest::SHA256, key),
            ),
        })
    }

    fn names(&self, id: &CertId) -> bool {
        let (name, key) = if id.hash_algorithm.oid == ID_SHA1 {
            &self.sha1
        } else if id.hash_algorithm.oid == ID_SHA256 {
            &self.sha256
        } else {
            return false;
        };
        id.issuer_name_hash.as_bytes() == name.as_slice()
            && id.issuer_key_hash.as_bytes() == key.as_slice()
    }

    /// The SHA-1 hash of the issuer's key: the responder's id (byKey).
    fn key_sha1(&self) -> &[u8] {
        &self.sha1.1
    }
}

/// Why an OCSP request was refused (`malformedRequest`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OcspRequestError {
    #[error("the request is larger than {MAX_OCSP_REQUEST} bytes ({0})")]
    TooLarge(usize),
    #[error("the request is not a DER OCSPRequest: {0}")]
    NotDer(String),
    #[error("the request names no certificate")]
    Empty,
    #[error("the request names {0} certificates; at most {MAX_OCSP_CERTS} are answered")]
    TooMany(usize),
}

/// One certificate an OCSP request asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedCert {
    pub cert_id: CertId,
    /// The serial as this CA writes it (lower-case hex, no leading zero
    /// octets) when the CertID names this issuer; `None` for another
    /// issuer (answered `unknown`).
    pub serial: Option<String>,
}

/// A request read by [`read_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspQuery {
    pub certs: Vec<AskedCert>,
    /// The request's nonce extension, echoed unchanged in the response.
    pub nonce: Option<Extension>,
}

/// Reads a DER OCSP request (hostile input: size, syntax, count).
pub fn read_request(der: &[u8], issuer: &IssuerHashes) -> Result<OcspQuery, OcspRequestError> {
    if der.len() > MAX_OCSP_REQUEST {
        return Err(OcspRequestError::TooLarge(der.len()));
    }
    let req = OcspRequest::from_der(der).map_err(|e| OcspRequestError::NotDer(e.to_string()))?;
    let list = req.tbs_request.request_list;
    if list.is_empty() {
        return Err(OcspRequestError::Empty);
    }
    if list.len() > MAX_OCSP_CERTS {
        return Err(OcspRequestError::TooMany(list.len()));
    }
    let certs = list
        .into_iter()
        .map(|r| {
            let serial = issuer
                .names(&r.req_cert)
                .then(|| hex_serial(r.req_cert.serial_number.as_bytes()));
            AskedCert {
                cert_id: r.req_cert,
                serial,
            }
        })
        .collect();
    let nonce = req
        .tbs_request
        .request_extensions
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == ID_OCSP_NONCE);
    Ok(OcspQuery { certs, nonce })
}

/// A DER INTEGER's bytes as this CA writes serials: lower-case hex without
/// leading zero octets.
fn hex_serial(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the responder says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspAnswer {
    Good,
    Revoked {
        at: OffsetDateTime,
        reason: RevocationReason,
    },
    Unknown,
}

/// An OCSP response without a signature: `malformedRequest`,
/// `internalError`, `tryLater` or `unauthorized`, DER.
pub fn unsigned_response(status: OcspResponseStatus) -> Vec<u8> {
    let resp = OcspResponse {
        response_status: status,
        response_bytes: None,
    };
    // Two small fields of fixed shape: encoding cannot fail; should it, the
    // empty body is still not a 500.
    resp.to_der().unwrap_or_default()
}

fn gtime(t: OffsetDateTime) -> Result<OcspGeneralizedTime, RevokeError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| RevokeError::Encode(format!("{t} is before 1970")))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(|e| RevokeError::Encode(e.to_string()))
}

fn crl_reason(r: RevocationReason) -> CrlReason {
    match r {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
    }
}

pub(crate) fn rcgen_reason(r: RevocationReason) -> rcgen::RevocationReason {
    match r {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
    }
}

pub(crate) fn serial_bytes(hex: &str) -> Result<Vec<u8>, RevokeError> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 40 {
        return Err(RevokeError::Serial(hex.to_owned()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| RevokeError::Serial(hex.to_owned()))
        })
        .collect()
}

/// Builds a DER CRL: `entries` signed by `issuer` with `key`.
pub(crate) fn build_crl(
    issuer: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    number: u64,
    this_update: OffsetDateTime,
    entries: &[CrlEntry],
) -> Result<Vec<u8>, RevokeError> {
    let revoked_certs = entries
        .iter()
        .map(|e| {
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&serial_bytes(&e.serial)?),
                revocation_time: e.revoked_at,
                reason_code: Some(rcgen_reason(e.reason)),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, RevokeError>>()?;
    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update: this_update + CRL_VALIDITY,
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: issuer.params().key_identifier_method.clone(),
    };
    Ok(params.signed_by(issuer, key)?.der().to_vec())
}

/// Signs a `BasicOCSPResponse` for `query` with the intermediate's key
/// (PKCS#8 DER), one answer per asked certificate, in order.
pub(crate) fn sign_ocsp(
    key_pkcs8: &[u8],
    hashes: &IssuerHashes,
    query: &OcspQuery,
    answers: &[OcspAnswer],
    now: OffsetDateTime,
) -> Result<Vec<u8>, RevokeError> {
    let this_update = gtime(now)?;
    let next_update = gtime(now + OCSP_VALIDITY)?;
    let responses = query
        .certs
        .iter()
        .zip(answers)
        .map(|(asked, answer)| {
            let cert_status = match answer {
                OcspAnswer::Good => CertStatus::Good(Null),
                OcspAnswer::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                    revocation_time: gtime(*at)?,
                    revocation_reason: Some(crl_reason(*reason)),
                }),
                OcspAnswer::Unknown => CertStatus::Unknown(Null),
            };
            Ok(SingleResponse {
                cert_id: asked.cert_id.clone(),
                cert_status,
                this_update,
                next_update: Some(next_update),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, RevokeError>>()?;
    let encode = |e: x509_cert::der::Error| RevokeError::Encode(e.to_string());
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(hashes.key_sha1().to_vec()).map_err(encode)?,
        ),
        produced_at: this_update,
        responses,
        response_extensions: query.nonce.clone().map(|n| vec![n]),
    };
    let tbs_der = tbs.to_der().map_err(encode)?;
    let rng = SystemRandom::new();
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key_pkcs8, &rng)
        .map_err(|e| RevokeError::Key(e.to_string()))?;
    let sig = signer
        .sign(&rng, &tbs_der)
        .map_err(|e| RevokeError::Key(e.to_string()))?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(sig.as_ref()).map_err(encode)?,
        certs: None,
    };
    OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_under_the_base() {
        let u = PkiUrls::new("http://pki.example:8080/").expect("valid");
        assert_eq!(u.crl, "http://pki.example:8080/pki/ca.crl");
        assert_eq!(u.ocsp, "http://pki.example:8080/pki/ocsp");
        for bad in [
            "https://pki.example",
            "http://",
            "http://a/b",
            "http://u@host",
            "ftp://x",
        ] {
            assert!(PkiUrls::new(bad).is_err(), "{bad}");
        }
        assert!(!u.aia_der().expect("encodes").is_empty());
    }

    #[test]
    fn serials_round_trip_through_der_integers() {
        assert_eq!(hex_serial(&[0x00, 0x9a, 0x01]), "9a01");
        assert_eq!(hex_serial(&[0x7f, 0x00]), "7f00");
        assert_eq!(serial_bytes("7f00").expect("hex"), vec![0x7f, 0x00]);
        for bad in ["", "7", "zz", &"ab".repeat(21)] {
            assert!(serial_bytes(bad).is_err(), "{bad}");
        }
    }
}
