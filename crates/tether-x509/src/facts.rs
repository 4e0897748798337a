//! The facts of one certificate, read from DER.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

/// The fingerprint of a DER certificate, as `sha256:<lowercase hex>`: the
/// one form the server prints, the agent pins and the doctor reports.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha256(der)))
}

/// The raw SHA-256 of a DER certificate.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The subject's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// `RSA`, `EC`, `DSA`, `Ed25519`, `Ed448`, or the algorithm's OID.
    pub algorithm: String,
    /// The key size in bits, when the algorithm has one to compare.
    pub bits: Option<u32>,
}

impl KeyFacts {
    /// Whether the key is below today's floor: RSA under 2048 bits, EC
    /// under 256 bits, or DSA at any size.
    pub fn is_weak(&self) -> bool {
        match (self.algorithm.as_str(), self.bits) {
            ("RSA", Some(b)) => b < 2048,
            ("EC", Some(b)) => b < 256,
            ("DSA", _) => true,
            _ => false,
        }
    }
}

/// The fields of a certificate a person needs to diagnose a TLS failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject's distinguished name, e.g. `CN=localhost`.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS names from the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses from the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether the certificate is a CA (basic constraints).
    pub is_ca: bool,
    /// Whether subject and issuer are the same name (byte for byte), and
    /// the authority key identifier, when present, is the subject's own:
    /// a certificate that signs itself.
    pub self_issued: bool,
    /// `sha256:<hex>` of the DER.
    pub fingerprint: String,
    /// The subject's public key.
    pub key: KeyFacts,
    /// The signature algorithm's name (`sha256WithRSAEncryption`…) or OID.
    pub signature_algorithm: String,
}

impl CertFacts {
    /// Parses a DER certificate; `None` if it is not one.
    pub fn from_der(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let same_name = cert.subject().as_raw() == cert.issuer().as_raw();
        let own_key_id = own_key_identifier(&cert);
        let self_issued = same_name && own_key_id;
        Some(CertFacts {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: OffsetDateTime::from_unix_timestamp(validity.not_before.timestamp())
                .ok()?,
            not_after: OffsetDateTime::from_unix_timestamp(validity.not_after.timestamp()).ok()?,
            dns_names,
            ip_addresses,
            is_ca: cert.is_ca(),
            self_issued,
            fingerprint: fingerprint(der),
            key: key_facts(&cert),
            signature_algorithm: signature_name(&cert.signature_algorithm.algorithm.to_id_string()),
        })
    }

    /// Every name the certificate is valid for, DNS names first.
    pub fn names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .cloned()
            .chain(self.ip_addresses.iter().map(|ip| ip.to_string()))
            .collect()
    }

    /// Whether the certificate is valid for `host` (a DNS name, with one
    /// leading wildcard label allowed in the certificate, or an IP address;
    /// brackets around an IPv6 address are ignored).
    pub fn matches_name(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        let host = bare.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => pattern == host,
            }
        })
    }

    /// Whether the signature uses a broken hash (MD2, MD5 or SHA-1).
    pub fn has_weak_signature(&self) -> bool {
        WEAK_SIGNATURES.contains(&self.signature_algorithm.as_str())
    }
}

/// A self-issued certificate's authority key identifier, when it has one,
/// names its own subject key; a CA that renamed itself does not pass.
fn own_key_identifier(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let mut aki = None;
    let mut ski = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::SubjectKeyIdentifier(s) => ski = Some(s.0.to_vec()),
            _ => {}
        }
    }
    match (aki, ski) {
        (Some(a), Some(s)) => a == s,
        _ => true,
    }
}

fn key_facts(cert: &x509_parser::certificate::X509Certificate<'_>) -> KeyFacts {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    let named = match oid.as_str() {
        "1.3.101.112" => Some("Ed25519"),
        "1.3.101.113" => Some("Ed448"),
        _ => None,
    };
    let (algorithm, bits) = match spki.parsed() {
        Ok(PublicKey::RSA(k)) => ("RSA".to_owned(), Some(k.key_size())),
        Ok(PublicKey::EC(k)) => ("EC".to_owned(), Some(k.key_size())),
        Ok(PublicKey::DSA(_)) => ("DSA".to_owned(), None),
        _ => (named.map(str::to_owned).unwrap_or(oid), None),
    };
    KeyFacts {
        algorithm,
        bits: bits.and_then(|b| u32::try_from(b).ok()),
    }
}

/// Signature algorithms whose hash is broken.
const WEAK_SIGNATURES: &[&str] = &[
    "md2WithRSAEncryption",
    "md5WithRSAEncryption",
    "sha1WithRSAEncryption",
    "ecdsa-with-SHA1",
    "dsa-with-sha1",
];

fn signature_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassa-pss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10040.4.3" => "dsa-with-sha1",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        other => other,
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], cn: &str) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().expect("keygen");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
        params.not_after = time::macros::datetime!(2034-01-01 00:00 UTC);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("sign")
    }

    #[test]
    fn facts_read_names_validity_issuer_key_and_signature() {
        let cert = self_signed(&["localhost", "127.0.0.1"], "test leaf");
        let f = CertFacts::from_der(cert.der()).expect("parses");
        assert_eq!(f.dns_names, vec!["localhost"]);
        assert_eq!(f.ip_addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(f.names(), vec!["localhost", "127.0.0.1"]);
        assert_eq!(f.not_before, time::macros::datetime!(2024-01-01 00:00 UTC));
        assert_eq!(f.not_after, time::macros::datetime!(2034-01-01 00:00 UTC));
        assert!(f.subject.contains("test leaf"), "{}", f.subject);
        assert_eq!(f.subject, f.issuer);
        assert!(f.self_issued);
        assert!(!f.is_ca);
        assert_eq!(f.fingerprint, fingerprint(cert.der()));
        // rcgen's default key is ECDSA P-256 signed with SHA-256.
        assert_eq!(f.key.algorithm, "EC");
        assert_eq!(f.key.bits, Some(256));
        assert!(!f.key.is_weak());
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA256");
        assert!(!f.has_weak_signature());
    }

    #[test]
    fn names_match_exactly_by_wildcard_and_by_address() {
        let cert = self_signed(&["*.example.com", "api.test", "::1"], "w");
        let f = CertFacts::from_der(cert.der()).expect("parses");
        assert!(f.matches_name("a.example.com"));
        assert!(f.matches_name("A.Example.Com."));
        assert!(!f.matches_name("example.com"));
        assert!(!f.matches_name("a.b.example.com"));
        assert!(f.matches_name("api.test"));
        assert!(f.matches_name("[::1]"));
        assert!(!f.matches_name("127.0.0.1"));
    }

    #[test]
    fn weak_keys_are_named() {
        let weak = KeyFacts {
            algorithm: "RSA".into(),
            bits: Some(1024),
        };
        assert!(weak.is_weak());
        let ok = KeyFacts {
            algorithm: "RSA".into(),
            bits: Some(2048),
        };
        assert!(!ok.is_weak());
        let ed = KeyFacts {
            algorithm: "Ed25519".into(),
            bits: None,
        };
        assert!(!ed.is_weak());
    }

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        // sha256("abc") is a published test vector.
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(CertFacts::from_der(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(CertFacts::from_der(&[]), None);
    }

    #[test]
    fn hostile_der_never_panics() {
        // Every truncation and a sweep of single-byte corruptions of a real
        // certificate: the parser meets each length field cut short.
        let cert = self_signed(&["localhost"], "hostile");
        let der = cert.der().to_vec();
        for len in 0..der.len() {
            let _ = CertFacts::from_der(&der[..len]);
        }
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[i] ^= flip;
                let _ = CertFacts::from_der(&bad);
            }
        }
    }
}
