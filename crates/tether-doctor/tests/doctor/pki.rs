//! Test PKI, generated fresh for every run with rcgen: roots, intermediates,
//! leaves with chosen names, validity and CRL distribution points, and CRLs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

pub struct Leaf {
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
    pub serial: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
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
    params
}

impl Ca {
    pub fn root(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let cert = ca_params(name).self_signed(&key).expect("self-signed");
        Ca { cert, key }
    }

    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let cert = ca_params(name)
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        Ca { cert, key }
    }

    pub fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn issue(&self, names: &[&str]) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.issue_with(
            names,
            now - Duration::days(1),
            now + Duration::days(30),
            None,
        )
    }

    pub fn issue_with(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        crl_url: Option<&str>,
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before.replace_nanosecond(0).expect("ns");
        params.not_after = not_after.replace_nanosecond(0).expect("ns");
        let serial: Vec<u8> = rand_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        if let Some(url) = crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf signature");
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            serial,
        }
    }

    /// A leaf for `names` whose Authority Information Access names the OCSP
    /// responder at `ocsp_url`.
    pub fn issue_with_ocsp(&self, names: &[&str], ocsp_url: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(30);
        let serial: Vec<u8> = rand_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia_ocsp(ocsp_url),
        )];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf signature");
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            serial,
        }
    }

    /// A DER CRL revoking the given serials.
    pub fn crl(&self, revoked: &[&[u8]]) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::hours(2),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("CRL signature")
            .der()
            .to_vec()
    }
}

/// DER of `AuthorityInfoAccessSyntax` with one id-ad-ocsp URI, encoded
/// here by hand (rcgen has no AIA support).
fn aia_ocsp(url: &str) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }
    // 1.3.6.1.5.5.7.48.1 (id-ad-ocsp).
    let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]);
    let uri = tlv(0x86, url.as_bytes());
    let desc = tlv(0x30, &[oid, uri].concat());
    tlv(0x30, &desc)
}

fn rand_serial() -> Vec<u8> {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut v = (n as u64).to_be_bytes().to_vec();
    v[0] = 0x11; // positive, no leading zero
    v
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }

    pub fn chain(&self, cas: &[&Ca]) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.der.clone())
            .chain(cas.iter().map(|c| c.der()))
            .collect()
    }
}
