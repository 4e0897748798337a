//! OCSP (RFC 6960): the request for one certificate, and the reading of
//! the responder's answer. The answer counts only if it is signed by the
//! issuer, or by a responder certificate the issuer signed for OCSP
//! (`id-kp-OCSPSigning`), and if it is about the certificate asked for.
//!
//! The CertID uses SHA-1, as RFC 5019 requires of every responder; the hash
//! identifies the issuer, it secures nothing.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use time::OffsetDateTime;
use x509_cert::der::asn1::{Any, OctetString};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// id-sha1.
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// id-pkix-ocsp-basic.
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// Leeway for thisUpdate in the future and nextUpdate in the past.
const LEEWAY: time::Duration = time::Duration::minutes(5);

/// Why an OCSP exchange gave no status. Each variant carries what was
/// observed and, where it helps, what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum OcspError {
    #[error("the {which} certificate cannot be parsed: {reason}")]
    BadCertificate { which: &'static str, reason: String },
    #[error("the request cannot be encoded: {0}")]
    Encode(String),
    #[error("the answer is not a DER OCSP response: {0}")]
    NotOcsp(String),
    #[error("the responder answered {observed:?} instead of \"successful\"")]
    Unsuccessful { observed: String },
    #[error("the response type is {observed}, expected id-pkix-ocsp-basic ({OCSP_BASIC})")]
    NotBasic { observed: String },
    #[error("the response is not signed by the issuer or a responder it delegated to ({observed})")]
    BadSignature { observed: String },
    #[error("the response names no status for serial {expected}")]
    NotAnswered { expected: String },
    #[error("the response is stale: nextUpdate {next_update} is before this host's clock {now}")]
    Stale {
        next_update: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error(
        "the response is from the future: thisUpdate {this_update} is after this host's clock {now}"
    )]
    NotYetValid {
        this_update: OffsetDateTime,
        now: OffsetDateTime,
    },
}

/// What the responder said about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OcspStatus {
    Good,
    Revoked {
        at: OffsetDateTime,
        reason: Option<String>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

impl OcspStatus {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            OcspStatus::Good => "good",
            OcspStatus::Revoked { .. } => "revoked",
            OcspStatus::Unknown => "unknown",
        }
    }
}

/// The DER OCSP request for `cert`, issued by `issuer`.
pub(crate) fn request(cert: &[u8], issuer: &[u8]) -> Result<Vec<u8>, OcspError> {
    let id = cert_id(cert, issuer)?;
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    req.to_der().map_err(|e| OcspError::Encode(e.to_string()))
}

fn parse<'a>(der: &'a [u8], which: &'static str) -> Result<X509Certificate<'a>, OcspError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| OcspError::BadCertificate {
            which,
            reason: e.to_string(),
        })
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn cert_id(cert: &[u8], issuer: &[u8]) -> Result<CertId, OcspError> {
    let leaf = parse(cert, "checked")?;
    let ca = parse(issuer, "issuer")?;
    let encode = |e: x509_cert::der::Error| OcspError::Encode(e.to_string());
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Any::null()),
        },
        issuer_name_hash: OctetString::new(sha1(ca.subject().as_raw())).map_err(encode)?,
        issuer_key_hash: OctetString::new(sha1(&ca.public_key().subject_public_key.data))
            .map_err(encode)?,
        serial_number: SerialNumber::new(leaf.raw_serial()).map_err(encode)?,
    })
}

/// Reads the responder's DER answer about `cert` (issued by `issuer`),
/// checking its signature and its freshness against `now`.
pub(crate) fn read_response(
    der: &[u8],
    cert: &[u8],
    issuer: &[u8],
    now: OffsetDateTime,
) -> Result<OcspStatus, OcspError> {
    let resp = OcspResponse::from_der(der).map_err(|e| OcspError::NotOcsp(e.to_string()))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Unsuccessful {
            observed: format!("{:?}", resp.response_status),
        });
    }
    let Some(bytes) = resp.response_bytes else {
        return Err(OcspError::NotOcsp("successful but empty".into()));
    };
    if bytes.response_type != OCSP_BASIC {
        return Err(OcspError::NotBasic {
            observed: bytes.response_type.to_string(),
        });
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| OcspError::NotOcsp(e.to_string()))?;
    verify_signature(&basic, issuer)?;

    let wanted = cert_id(cert, issuer)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| same_cert(&s.cert_id, &wanted))
        .ok_or_else(|| OcspError::NotAnswered {
            expected: hex(wanted.serial_number.as_bytes()),
        })?;
    let this_update = to_time(&single.this_update.0);
    if this_update > now + LEEWAY {
        return Err(OcspError::NotYetValid { this_update, now });
    }
    if let Some(next) = &single.next_update {
        let next_update = to_time(&next.0);
        if next_update + LEEWAY < now {
            return Err(OcspError::Stale { next_update, now });
        }
    }
    Ok(match &single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Revoked(info) => OcspStatus::Revoked {
            at: to_time(&info.revocation_time.0),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
        CertStatus::Unknown(_) => OcspStatus::Unknown,
    })
}

/// Two CertIDs name the same certificate if their hashes (with the same
/// algorithm) and serials agree; a responder may answer with another hash
/// algorithm, which this doctor does not compute, so that is a miss.
fn same_cert(a: &CertId, b: &CertId) -> bool {
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number.as_bytes() == b.serial_number.as_bytes()
}

fn to_time(t: &x509_cert::der::asn1::GeneralizedTime) -> OffsetDateTime {
    let secs = t.to_unix_duration().as_secs();
    // A GeneralizedTime is at most year 9999, well inside i64 seconds.
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The response must be signed by the issuer itself, or by a responder
/// certificate included in it that the issuer signed and marked for OCSP.
fn verify_signature(basic: &BasicOcspResponse, issuer: &[u8]) -> Result<(), OcspError> {
    let ca = parse(issuer, "issuer")?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| OcspError::Encode(e.to_string()))?;
    let alg = basic.signature_algorithm.oid.to_string();
    let sig = basic.signature.raw_bytes();
    if verify(&ca, &alg, &tbs, sig).is_ok() {
        return Ok(());
    }
    let mut why = format!("the issuer's key does not verify the {alg} signature");
    for responder in basic.certs.iter().flatten() {
        let Ok(der) = responder.to_der() else {
            continue;
        };
        let Ok(rc) = parse(&der, "responder") else {
            continue;
        };
        if rc.issuer().as_raw() != ca.subject().as_raw() {
            why = format!(
                "the responder \"{}\" is not issued by the issuer",
                rc.subject()
            );
            continue;
        }
        let cert_alg = rc.signature_algorithm.algorithm.to_id_string();
        if verify(
            &ca,
            &cert_alg,
            rc.tbs_certificate.as_ref(),
            &rc.signature_value.data,
        )
        .is_err()
        {
            why = format!(
                "the responder \"{}\" is not signed by the issuer",
                rc.subject()
            );
            continue;
        }
        let for_ocsp = rc
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.ocsp_signing);
        if !for_ocsp {
            why = format!(
                "the responder \"{}\" lacks id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9)",
                rc.subject()
            );
            continue;
        }
        if verify(&rc, &alg, &tbs, sig).is_ok() {
            return Ok(());
        }
        why = format!(
            "the responder \"{}\" does not verify the signature",
            rc.subject()
        );
    }
    Err(OcspError::BadSignature { observed: why })
}

/// Verifies `sig` over `data` with `signer`'s public key and the signature
/// algorithm `alg` (a dotted OID).
fn verify(signer: &X509Certificate<'_>, alg: &str, data: &[u8], sig: &[u8]) -> Result<(), ()> {
    let spki = signer.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let p256 = curve.as_deref() == Some("1.2.840.10045.3.1.7");
    let p384 = curve.as_deref() == Some("1.3.132.0.34");
    let algorithm: &'static dyn VerificationAlgorithm = match alg {
        "1.2.840.113549.1.1.5" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.10045.4.3.2" if p256 => &signature::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.2" if p384 => &signature::ECDSA_P384_SHA256_ASN1,
        "1.2.840.10045.4.3.3" if p256 => &signature::ECDSA_P256_SHA384_ASN1,
        "1.2.840.10045.4.3.3" if p384 => &signature::ECDSA_P384_SHA384_ASN1,
        "1.3.101.112" => &signature::ED25519,
        _ => return Err(()),
    };
    UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(data, sig)
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf() -> (Vec<u8>, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "OCSP Unit CA");
        let ca = p.self_signed(&ca_key).expect("ca");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut lp = rcgen::CertificateParams::new(vec!["x.test".to_owned()]).expect("params");
        lp.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x9a, 0x01]));
        let leaf = lp.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
        (leaf.der().to_vec(), ca.der().to_vec())
    }

    #[test]
    fn the_request_names_the_issuer_and_serial() {
        let (leaf, ca) = ca_and_leaf();
        let der = request(&leaf, &ca).expect("request");
        let req = OcspRequest::from_der(&der).expect("decodes");
        let id = &req.tbs_request.request_list[0].req_cert;
        assert_eq!(id.hash_algorithm.oid, SHA1);
        // The DER INTEGER keeps the sign octet a high first byte needs.
        assert_eq!(id.serial_number.as_bytes(), &[0x00, 0x9a, 0x01]);
        let (_, ca_cert) = X509Certificate::from_der(&ca).expect("ca");
        assert_eq!(
            id.issuer_name_hash.as_bytes(),
            sha1(ca_cert.subject().as_raw())
        );
        assert_eq!(id.issuer_key_hash.as_bytes().len(), 20);
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let (leaf, ca) = ca_and_leaf();
        let now = OffsetDateTime::now_utc();
        for junk in [
            &b""[..],
            b"\x30\x03\x0a\x01\x00",
            b"<html>portal</html>",
            &[0x30; 64],
        ] {
            assert!(read_response(junk, &leaf, &ca, now).is_err(), "{junk:?}");
        }
        // tryLater (3), well-formed.
        assert_eq!(
            read_response(b"\x30\x03\x0a\x01\x03", &leaf, &ca, now),
            Err(OcspError::Unsuccessful {
                observed: "TryLater".into()
            })
        );
        assert!(request(b"junk", &ca).is_err());
    }
}
