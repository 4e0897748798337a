//! The test PKI, generated fresh on every run with rcgen: roots,
//! intermediates, leaves with chosen names, validity, CRL distribution
//! points and OCSP responders, self-signed leaves, and CRLs. Nothing opaque
//! is committed: this file is the generator.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority that issues leaves, intermediates and CRLs.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
    /// The common name it was made with.
    pub name: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pem: String,
    key_der: Vec<u8>,
    key_pem: String,
    /// The serial number's bytes (positive, no leading zero).
    pub serial: Vec<u8>,
    /// Validity, in whole seconds as certificates carry it.
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What a leaf says besides its names.
#[derive(Debug, Clone, Default)]
pub struct LeafOptions<'a> {
    /// Start of validity; default yesterday.
    pub not_before: Option<OffsetDateTime>,
    /// End of validity; default in 30 days.
    pub not_after: Option<OffsetDateTime>,
    /// A CRL distribution point.
    pub crl_url: Option<&'a str>,
    /// An OCSP responder (Authority Information Access).
    pub ocsp_url: Option<&'a str>,
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

/// Whole seconds: certificates carry no fraction, and tests compare the
/// values they asked for with the ones they read back.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}

fn leaf_params(names: &[&str], options: &LeafOptions<'_>) -> (CertificateParams, Vec<u8>) {
    let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = whole_seconds(options.not_before.unwrap_or(now - Duration::days(1)));
    params.not_after = whole_seconds(options.not_after.unwrap_or(now + Duration::days(30)));
    let serial = next_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    if let Some(url) = options.crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_owned()],
        }];
    }
    if let Some(url) = options.ocsp_url {
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia_ocsp(url),
        )];
    }
    (params, serial)
}

impl Ca {
    /// A self-signed root valid from a year ago for ten years.
    pub fn root(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let cert = ca_params(name).self_signed(&key).expect("self-signed");
        Ca {
            cert,
            key,
            name: name.to_owned(),
        }
    }

    /// A CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let cert = ca_params(name)
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        Ca {
            cert,
            key,
            name: name.to_owned(),
        }
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

    /// A server certificate for `names` valid from yesterday for 30 days.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_opts(names, &LeafOptions::default())
    }

    /// A server certificate valid between the given times.
    pub fn issue_between(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        self.issue_opts(
            names,
            &LeafOptions {
                not_before: Some(not_before),
                not_after: Some(not_after),
                ..LeafOptions::default()
            },
        )
    }

    /// A server certificate valid between the given times, naming a CRL.
    pub fn issue_with(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        crl_url: Option<&str>,
    ) -> Leaf {
        self.issue_opts(
            names,
            &LeafOptions {
                not_before: Some(not_before),
                not_after: Some(not_after),
                crl_url,
                ocsp_url: None,
            },
        )
    }

    /// A leaf whose Authority Information Access names the OCSP responder
    /// at `ocsp_url`.
    pub fn issue_with_ocsp(&self, names: &[&str], ocsp_url: &str) -> Leaf {
        self.issue_opts(
            names,
            &LeafOptions {
                ocsp_url: Some(ocsp_url),
                ..LeafOptions::default()
            },
        )
    }

    /// A leaf with every option spelled out.
    pub fn issue_opts(&self, names: &[&str], options: &LeafOptions<'_>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let (params, serial) = leaf_params(names, options);
        let (not_before, not_after) = (params.not_before, params.not_after);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf signature");
        Leaf::new(&cert, &key, serial, not_before, not_after)
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

    /// Writes `<stem>.pem` (the certificate) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        write_pair(dir, stem, &self.cert.pem(), &self.key_pem())
    }
}

impl Leaf {
    /// A leaf that signs itself, like `openssl req -x509` for a quick
    /// server: no CA vouches for it. It is not a CA itself (no basic
    /// constraints), so only its issuer, not its shape, is wrong.
    pub fn self_signed(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let (params, serial) = leaf_params(names, &LeafOptions::default());
        let (not_before, not_after) = (params.not_before, params.not_after);
        let cert = params.self_signed(&key).expect("self-signature");
        Leaf::new(&cert, &key, serial, not_before, not_after)
    }

    fn new(
        cert: &rcgen::Certificate,
        key: &KeyPair,
        serial: Vec<u8>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
            serial,
            not_before,
            not_after,
        }
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The chain a server presents: this leaf, then the given CAs.
    pub fn chain(&self, cas: &[&Ca]) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.der.clone())
            .chain(cas.iter().map(|c| c.der()))
            .collect()
    }

    /// Writes `<stem>.pem` (this leaf followed by `cas`, as servers such as
    /// nginx and haproxy want their chain) and `<stem>.key` into `dir`.
    pub fn write_chain(&self, dir: &Path, stem: &str, cas: &[&Ca]) -> (PathBuf, PathBuf) {
        let mut chain = self.pem.clone();
        for ca in cas {
            chain.push_str(&ca.cert.pem());
        }
        write_pair(dir, stem, &chain, &self.key_pem)
    }
}

fn write_pair(dir: &Path, stem: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert).expect("the lab directory is writable");
    std::fs::write(&key_path, key).expect("the lab directory is writable");
    (cert_path, key_path)
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

/// A serial unique within this process and unlikely to repeat across runs:
/// the clock's nanoseconds plus a counter.
fn next_serial() -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut v = n.to_be_bytes().to_vec();
    v[0] = 0x11; // positive, no leading zero
    v
}

/// A self-signed certificate made the way a person makes one for a quick
/// server, by the real `openssl req -x509`: subject `CN=<first name>`, the
/// names as subject alternative names, and OpenSSL's default basic
/// constraints (`CA:TRUE`), so it is a CA used as its own end entity.
/// Returns the certificate and key PEM files written into `dir`.
pub fn openssl_self_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let cert = dir.join("self-signed.pem");
    let key = dir.join("self-signed.key");
    let sans: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect();
    let out = std::process::Command::new(crate::program("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj"])
        .arg(format!(
            "/CN={}",
            names.first().copied().unwrap_or("localhost")
        ))
        .arg("-addext")
        .arg(format!("subjectAltName={}", sans.join(",")))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl req -x509 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A chain made by the real `openssl`, the way an old internal CA still
/// signs: a CA ("CN=Weak Lab CA", P-256) and a leaf for `names` whose
/// signature uses SHA-1 (`ecdsa-with-SHA1`). Returns the CA, the leaf and
/// the leaf's key as PEM files written into `dir`.
pub fn openssl_sha1_chain(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(crate::program("openssl"))
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "30",
            "-subj",
            "/CN=Weak Lab CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    let cn = format!("/CN={}", names.first().copied().unwrap_or("localhost"));
    run(&[
        &["req", "-new"][..],
        &ec,
        &[
            "-subj",
            cn.as_str(),
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    let sans: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect();
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .expect("the lab directory is writable");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-sha1",
        "-days",
        "30",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_differ_and_leaves_carry_what_was_asked() {
        let ca = Ca::root("Lab Root");
        let a = ca.issue(&["a.test"]);
        let b = ca.issue(&["b.test"]);
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.not_after - a.not_before, Duration::days(31));
        assert_eq!(a.chain(&[&ca]).len(), 2);
        assert!(a.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let s = Leaf::self_signed(&["self.test"]);
        assert!(s.key_pem().contains("PRIVATE KEY"));
    }
}
