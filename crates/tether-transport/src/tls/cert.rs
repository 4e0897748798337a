//! A readable summary of one certificate, for error messages and the
//! doctor's report of the presented chain.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::fingerprint::fingerprint;

/// The fields of a certificate a person needs to diagnose a TLS failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
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
    /// `sha256:<hex>` of the DER.
    pub fingerprint: String,
}

impl CertSummary {
    /// Parses a DER certificate; `None` if it is not one.
    pub fn from_der(der: &[u8]) -> Option<CertSummary> {
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
        Some(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: OffsetDateTime::from_unix_timestamp(validity.not_before.timestamp())
                .ok()?,
            not_after: OffsetDateTime::from_unix_timestamp(validity.not_after.timestamp()).ok()?,
            dns_names,
            ip_addresses,
            is_ca: cert.is_ca(),
            fingerprint: fingerprint(der),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_names_validity_and_issuer() {
        let key = rcgen::KeyPair::generate().expect("keygen");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params.not_before = time::macros::datetime!(2024-01-01 00:00 UTC);
        params.not_after = time::macros::datetime!(2034-01-01 00:00 UTC);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test leaf");
        let cert = params.self_signed(&key).expect("sign");
        let s = CertSummary::from_der(cert.der()).expect("parses");
        assert_eq!(s.dns_names, vec!["localhost"]);
        assert_eq!(s.ip_addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(s.names(), vec!["localhost", "127.0.0.1"]);
        assert_eq!(s.not_before, time::macros::datetime!(2024-01-01 00:00 UTC));
        assert_eq!(s.not_after, time::macros::datetime!(2034-01-01 00:00 UTC));
        assert!(s.subject.contains("test leaf"), "{}", s.subject);
        assert_eq!(s.subject, s.issuer);
        assert!(!s.is_ca);
        assert_eq!(s.fingerprint, fingerprint(cert.der()));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(CertSummary::from_der(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(CertSummary::from_der(&[]), None);
    }

    #[test]
    fn hostile_der_never_panics() {
        for input in crate::hostile::inputs(2000, 300) {
            let _ = CertSummary::from_der(&input);
        }
    }
}
