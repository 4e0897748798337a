//! Per-certificate facts and the chain's verdicts.
//!
//! The verdicts come from the classifier the doctor uses (`tether-x509`):
//! the same rules name a self-signed certificate, a weak key, a broken
//! signature hash and where an untrusted chain stops, so a scan and a
//! doctor run say the same of one chain. What this module adds is what an
//! inventory records and the doctor does not need (serial, every SAN kind,
//! AIA and CDP URLs, bounded text) and webpki's trust decision against the
//! scan's roots. No other part of the scanner reads X.509.

use std::net::IpAddr;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

/// The most subject alternative names recorded per certificate; the total
/// is always counted.
pub const MAX_SANS_RECORDED: usize = 1_000;
/// The most URLs recorded per extension (AIA, CDP).
const MAX_URLS: usize = 16;
/// The most characters kept of any text a certificate carries.
const MAX_TEXT: usize = 1_024;

/// What one certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// Hex, as the certificate carries it.
    pub serial: String,
    /// DNS names, IP addresses and other names, at most
    /// [`MAX_SANS_RECORDED`].
    pub sans: Vec<String>,
    /// How many SANs the certificate holds.
    pub sans_total: usize,
    /// `rsa`, `ec`, `ed25519`, `dsa`…
    pub key_type: String,
    /// Bits of the key (RSA modulus, EC field), 0 when unknown.
    pub key_bits: usize,
    /// The signature algorithm, by name when known, else its OID.
    pub signature_algorithm: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// `sha256:<hex>` of the DER.
    pub fingerprint: String,
    /// OCSP responders and CA issuers from Authority Information Access.
    pub aia_urls: Vec<String>,
    /// CRL distribution points.
    pub cdp_urls: Vec<String>,
    pub is_ca: bool,
    /// This certificate's own problems (validity, self-signature, weak key
    /// or signature).
    pub verdicts: Vec<Verdict>,
}

/// A problem with a certificate or the presented chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Expired,
    NotYetValid,
    SelfSigned,
    UnknownIssuer,
    IncompleteChain,
    NameMismatch,
    WeakKey,
    WeakSignature,
    /// The bytes the server sent as a certificate are not one.
    Unparsable,
    /// The certificate reads, but the path verifier refuses to process it
    /// (for example a leaf with thousands of names), so trust and name
    /// are unknown.
    Unverifiable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not_yet_valid",
            Verdict::SelfSigned => "self_signed",
            Verdict::UnknownIssuer => "unknown_issuer",
            Verdict::IncompleteChain => "incomplete_chain",
            Verdict::NameMismatch => "name_mismatch",
            Verdict::WeakKey => "weak_key",
            Verdict::WeakSignature => "weak_signature",
            Verdict::Unparsable => "unparsable",
            Verdict::Unverifiable => "unverifiable",
        }
    }
}

/// A presented chain, end-entity first, with its verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub certs: Vec<CertFacts>,
    /// How many certificates the server sent (more than recorded when it
    /// sent more than [`crate::legacy::MAX_CHAIN_CERTS`]).
    pub presented: usize,
    /// Problems of the chain as a whole, the leaf's own ones included; empty
    /// means it verifies for the name against the trusted roots.
    pub verdicts: Vec<Verdict>,
    /// The chain reaches a trusted root (possibly through intermediates the
    /// server did not send: that is still an incomplete chain).
    pub trusted: bool,
}

fn clip(s: String) -> String {
    if s.len() <= MAX_TEXT {
        s
    } else {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// `sha256:<hex>` of some DER: the one fingerprint of the code base.
pub use tether_x509::fingerprint;

impl CertFacts {
    /// Reads a DER certificate; `None` when it is not one. Never trusts
    /// what it reads: every list and text is bounded.
    pub fn from_der(der: &[u8], now: OffsetDateTime) -> Option<CertFacts> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        let not_before =
            OffsetDateTime::from_unix_timestamp(validity.not_before.timestamp()).ok()?;
        let not_after = OffsetDateTime::from_unix_timestamp(validity.not_after.timestamp()).ok()?;
        let mut sans = Vec::new();
        let mut sans_total = 0;
        let mut aia_urls = Vec::new();
        let mut cdp_urls = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        sans_total += 1;
                        if sans.len() >= MAX_SANS_RECORDED {
                            continue;
                        }
                        let text = match name {
                            GeneralName::DNSName(d) => (*d).to_owned(),
                            GeneralName::IPAddress(b) => match b.len() {
                                4 => <[u8; 4]>::try_from(*b)
                                    .map(|a| IpAddr::from(a).to_string())
                                    .unwrap_or_default(),
                                16 => <[u8; 16]>::try_from(*b)
                                    .map(|a| IpAddr::from(a).to_string())
                                    .unwrap_or_default(),
                                _ => format!("ip:{}", hex::encode(b)),
                            },
                            GeneralName::RFC822Name(e) => format!("email:{e}"),
                            GeneralName::URI(u) => format!("uri:{u}"),
                            other => format!("{other}"),
                        };
                        sans.push(clip(text));
                    }
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for desc in &aia.accessdescs {
                        if let GeneralName::URI(u) = &desc.access_location
                            && aia_urls.len() < MAX_URLS
                        {
                            aia_urls.push(clip((*u).to_owned()));
                        }
                    }
                }
                ParsedExtension::CRLDistributionPoints(cdp) => {
                    for point in &cdp.points {
                        if let Some(DistributionPointName::FullName(names)) =
                            &point.distribution_point
                        {
                            for n in names {
                                if let GeneralName::URI(u) = n
                                    && cdp_urls.len() < MAX_URLS
                                {
                                    cdp_urls.push(clip((*u).to_owned()));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let (key_type, key_bits) = match cert.public_key().parsed() {
            Ok(PublicKey::RSA(rsa)) => ("rsa", rsa.key_size()),
            Ok(PublicKey::EC(ec)) => ("ec", ec.key_size()),
            Ok(PublicKey::DSA(_)) => ("dsa", 0),
            Ok(PublicKey::GostR3410(_)) | Ok(PublicKey::GostR3410_2012(_)) => ("gost", 0),
            Ok(PublicKey::Unknown(_)) | Err(_) => {
                match cert
                    .public_key()
                    .algorithm
                    .algorithm
                    .to_id_string()
                    .as_str()
                {
                    "1.3.101.112" => ("ed25519", 256),
                    "1.3.101.113" => ("ed448", 456),
                    _ => ("unknown", 0),
                }
            }
        };
        // The shared classifier's reading decides every verdict below.
        let shared = tether_x509::CertFacts::from_der(der)?;
        let signature_algorithm = shared.signature_algorithm.clone();
        let subject = clip(cert.subject().to_string());
        let issuer = clip(cert.issuer().to_string());
        let mut verdicts = Vec::new();
        if now > not_after {
            verdicts.push(Verdict::Expired);
        }
        if now < not_before {
            verdicts.push(Verdict::NotYetValid);
        }
        if shared.self_issued && !shared.is_ca {
            verdicts.push(Verdict::SelfSigned);
        }
        if shared.key.is_weak() {
            verdicts.push(Verdict::WeakKey);
        }
        // A root's own signature is never checked by anyone, so a SHA-1
        // self-signature on a CA is not a weakness.
        if shared.has_weak_signature() && !(shared.self_issued && shared.is_ca) {
            verdicts.push(Verdict::WeakSignature);
        }
        Some(CertFacts {
            subject,
            issuer,
            serial: clip(hex::encode(cert.raw_serial())),
            sans,
            sans_total,
            key_type: key_type.to_owned(),
            key_bits,
            signature_algorithm,
            not_before,
            not_after,
            fingerprint: shared.fingerprint,
            aia_urls,
            cdp_urls,
            is_ca: cert.is_ca(),
            verdicts,
        })
    }
}

/// The trust anchors verdicts are judged against.
#[derive(Debug, Default)]
pub struct Roots {
    anchors: Vec<TrustAnchor<'static>>,
}

impl Roots {
    /// The operating system's roots plus `extra` (PEM certificates).
    pub fn system_and(extra: &[CertificateDer<'static>]) -> Roots {
        let mut roots = Roots::default();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs.iter().chain(extra.iter()) {
            if let Ok(a) = webpki::anchor_from_trusted_cert(c) {
                roots.anchors.push(a.to_owned());
            }
        }
        roots
    }

    /// Only `certs` (tests, or a private PKI).
    pub fn only(certs: &[CertificateDer<'static>]) -> Roots {
        Roots {
            anchors: certs
                .iter()
                .filter_map(|c| {
                    webpki::anchor_from_trusted_cert(c)
                        .ok()
                        .map(|a| a.to_owned())
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// Reads a presented chain and judges it: each certificate's own problems,
/// then trust (unknown issuer, incomplete chain, self-signed) and the name.
/// `name` is the SNI sent, or the address when none was.
pub fn judge(
    ders: &[Vec<u8>],
    presented: usize,
    name: &str,
    roots: &Roots,
    now: OffsetDateTime,
) -> Chain {
    let certs: Vec<CertFacts> = ders
        .iter()
        .map(|d| {
            CertFacts::from_der(d, now).unwrap_or_else(|| CertFacts {
                subject: String::new(),
                issuer: String::new(),
                serial: String::new(),
                sans: Vec::new(),
                sans_total: 0,
                key_type: "unknown".to_owned(),
                key_bits: 0,
                signature_algorithm: String::new(),
                not_before: OffsetDateTime::UNIX_EPOCH,
                not_after: OffsetDateTime::UNIX_EPOCH,
                fingerprint: fingerprint(d),
                aia_urls: Vec::new(),
                cdp_urls: Vec::new(),
                is_ca: false,
                verdicts: vec![Verdict::Unparsable],
            })
        })
        .collect();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let push = |v: Verdict, into: &mut Vec<Verdict>| {
        if !into.contains(&v) {
            into.push(v);
        }
    };
    let Some((leaf_der, rest)) = ders.split_first() else {
        return Chain {
            certs,
            presented,
            verdicts,
            trusted: false,
        };
    };
    let Some(leaf) = certs.first() else {
        return Chain::default();
    };
    for v in &leaf.verdicts {
        push(*v, &mut verdicts);
    }
    for c in certs.iter().skip(1) {
        for v in &c.verdicts {
            if matches!(
                v,
                Verdict::Expired | Verdict::NotYetValid | Verdict::WeakKey | Verdict::WeakSignature
            ) {
                push(*v, &mut verdicts);
            }
        }
    }
    // The shared classifier's reading of the chain, for where it stops.
    let shared: Vec<tether_x509::CertFacts> = ders
        .iter()
        .filter_map(|d| tether_x509::CertFacts::from_der(d))
        .collect();
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let mut trusted = false;
    if let Ok(ee) = webpki::EndEntityCert::try_from(&leaf_cert) {
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        // Trust is judged inside the leaf's validity, so an expired leaf
        // still says whether its issuer is known.
        let at = now.clamp(leaf.not_before, leaf.not_after);
        let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &roots.anchors,
            &intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        ) {
            Ok(_) => trusted = true,
            // Where the untrusted chain stops, as the doctor names it.
            Err(webpki::Error::UnknownIssuer) => match tether_x509::shape(&shared) {
                tether_x509::Shape::SelfSigned { .. } => push(Verdict::SelfSigned, &mut verdicts),
                tether_x509::Shape::StopsShort { .. } => {
                    push(Verdict::IncompleteChain, &mut verdicts)
                }
                _ => push(Verdict::UnknownIssuer, &mut verdicts),
            },
            Err(
                webpki::Error::UnsupportedSignatureAlgorithmContext(_)
                | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
                | webpki::Error::InvalidSignatureForPublicKey,
            ) => {
                if !verdicts.contains(&Verdict::WeakSignature)
                    && !verdicts.contains(&Verdict::WeakKey)
                {
                    push(Verdict::WeakSignature, &mut verdicts);
                }
            }
            // A lone self-signed certificate that webpki refuses for its
            // shape (a CA used as a server certificate) is still, first of
            // all, self-signed.
            Err(_)
                if certs.len() == 1
                    && matches!(
                        tether_x509::shape(&shared),
                        tether_x509::Shape::SelfSigned { .. }
                    ) =>
            {
                push(Verdict::SelfSigned, &mut verdicts);
            }
            Err(_) => push(Verdict::UnknownIssuer, &mut verdicts),
        }
        let server_name = match name.parse::<IpAddr>() {
            Ok(ip) => Some(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(name.to_owned()).ok(),
        };
        match server_name {
            Some(sn) => {
                if ee.verify_is_valid_for_subject_name(&sn).is_err() {
                    push(Verdict::NameMismatch, &mut verdicts);
                }
            }
            None => push(Verdict::NameMismatch, &mut verdicts),
        }
    } else if !verdicts.contains(&Verdict::Unparsable) {
        push(Verdict::Unverifiable, &mut verdicts);
    }
    Chain {
        certs,
        presented,
        verdicts,
        trusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_testlab::pki::{Ca, Leaf, LeafOptions};

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn ders(chain: &[CertificateDer<'static>]) -> Vec<Vec<u8>> {
        chain.iter().map(|c| c.to_vec()).collect()
    }

    #[test]
    fn facts_carry_names_key_signature_urls_and_fingerprint() {
        let ca = Ca::root("Facts Root");
        let leaf = ca.issue_opts(
            &["a.test", "127.0.0.1"],
            &LeafOptions {
                crl_url: Some("http://crl.test/ca.crl"),
                ocsp_url: Some("http://ocsp.test/"),
                ..LeafOptions::default()
            },
        );
        let f = CertFacts::from_der(&leaf.der, now()).expect("parses");
        assert_eq!(f.sans, vec!["a.test", "127.0.0.1"]);
        assert_eq!(f.sans_total, 2);
        assert!(
            f.subject.contains("a.test") && f.issuer.contains("Facts Root"),
            "{f:?}"
        );
        assert_eq!(f.serial, hex::encode(&leaf.serial));
        assert_eq!((f.key_type.as_str(), f.key_bits), ("ec", 256));
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(f.aia_urls, vec!["http://ocsp.test/"]);
        assert_eq!(f.cdp_urls, vec!["http://crl.test/ca.crl"]);
        assert_eq!(f.fingerprint, fingerprint(&leaf.der));
        assert_eq!(f.not_after, leaf.not_after);
        assert!(f.verdicts.is_empty(), "{:?}", f.verdicts);
    }

    #[test]
    fn verdicts_name_each_problem() {
        let root = Ca::root("Verdict Root");
        let inter = root.intermediate("Verdict Intermediate");
        let roots = Roots::only(&[root.der()]);
        let good = inter.issue(&["good.test"]);
        let c = judge(&ders(&good.chain(&[&inter])), 2, "good.test", &roots, now());
        assert!(c.trusted && c.verdicts.is_empty(), "{:?}", c.verdicts);

        let c = judge(&ders(&good.chain(&[])), 1, "good.test", &roots, now());
        assert_eq!(c.verdicts, vec![Verdict::IncompleteChain]);

        let c = judge(
            &ders(&good.chain(&[&inter])),
            2,
            "other.test",
            &roots,
            now(),
        );
        assert_eq!(c.verdicts, vec![Verdict::NameMismatch]);

        let unknown = Ca::root("Someone Else");
        let stranger = unknown.issue(&["good.test"]);
        let c = judge(
            &ders(&stranger.chain(&[&unknown])),
            2,
            "good.test",
            &roots,
            now(),
        );
        assert_eq!(c.verdicts, vec![Verdict::UnknownIssuer]);

        let selfie = Leaf::self_signed(&["self.test"]);
        let c = judge(&ders(&selfie.chain(&[])), 1, "self.test", &roots, now());
        assert_eq!(c.verdicts, vec![Verdict::SelfSigned]);

        let t = now();
        let old = inter.issue_between(
            &["good.test"],
            t - time::Duration::days(60),
            t - time::Duration::days(1),
        );
        let c = judge(&ders(&old.chain(&[&inter])), 2, "good.test", &roots, t);
        assert_eq!(
            c.verdicts,
            vec![Verdict::Expired],
            "trust judged inside validity"
        );
        let early = inter.issue_between(
            &["good.test"],
            t + time::Duration::days(1),
            t + time::Duration::days(60),
        );
        let c = judge(&ders(&early.chain(&[&inter])), 2, "good.test", &roots, t);
        assert_eq!(c.verdicts, vec![Verdict::NotYetValid]);

        let c = judge(&[root.der().to_vec()], 1, "127.0.0.1", &Roots::default(), t);
        assert!(
            c.verdicts.contains(&Verdict::SelfSigned),
            "{:?}",
            c.verdicts
        );

        let c = judge(&[b"not a certificate".to_vec()], 1, "good.test", &roots, t);
        assert_eq!(c.verdicts, vec![Verdict::Unparsable]);
        assert_eq!(c.certs.len(), 1);
    }

    #[test]
    fn hostile_der_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let leaf = Leaf::self_signed(&["h.test"]);
        for i in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut der = leaf.der.to_vec();
            // Flip bytes of a real certificate, and cut it.
            let at = (state as usize) % der.len();
            der[at] ^= (state >> 8) as u8;
            der.truncate(der.len() - (i % 50));
            let _ = CertFacts::from_der(&der, now());
            let _ = judge(&[der], 1, "h.test", &Roots::default(), now());
        }
    }
}
