//! Test PKI, generated fresh for every test run with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue server certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
    pub name: String,
}

/// A server certificate and its key.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key generation");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(365);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key).expect("CA self-signature");
        Ca {
            cert,
            key,
            name: name.to_owned(),
        }
    }

    pub fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate valid from yesterday for 30 days.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.issue_between(names, now - Duration::days(1), now + Duration::days(30))
    }

    pub fn issue_between(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key generation");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Certificates carry whole seconds.
        let not_before = not_before.replace_nanosecond(0).expect("valid nanosecond");
        let not_after = not_after.replace_nanosecond(0).expect("valid nanosecond");
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf signature");
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            not_before,
            not_after,
        }
    }
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }

    /// The chain a server presents: this leaf, then the given CAs.
    pub fn chain(&self, cas: &[&Ca]) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.der.clone())
            .chain(cas.iter().map(|ca| ca.der()))
            .collect()
    }
}
