//! The chain classifier: what is wrong with a presented chain, named.

use time::OffsetDateTime;

use crate::facts::CertFacts;

/// One thing wrong with a presented chain. A chain can have several (an
/// expired self-signed certificate); [`classify`] lists them in the order
/// a person should fix them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A certificate's validity ended before `now`.
    Expired {
        /// The certificate's subject.
        subject: String,
        /// The end of its validity.
        not_after: OffsetDateTime,
        /// The time the check used.
        now: OffsetDateTime,
    },
    /// A certificate's validity starts after `now`.
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// The start of its validity.
        not_before: OffsetDateTime,
        /// The time the check used.
        now: OffsetDateTime,
    },
    /// The end-entity certificate signs itself: no CA vouches for it.
    SelfSigned {
        /// Its subject.
        subject: String,
        /// Its fingerprint, `sha256:<hex>`, which is what a pin names.
        fingerprint: String,
    },
    /// The chain ends in a root that no trust anchor is.
    UnknownIssuer {
        /// The root's subject.
        root: String,
    },
    /// The chain stops at a certificate whose issuer was not sent and is
    /// not a trust anchor.
    IncompleteChain {
        /// The last certificate presented.
        subject: String,
        /// Its issuer, the certificate that is missing.
        issuer: String,
    },
    /// The end-entity certificate does not name the host.
    NameMismatch {
        /// The host asked for.
        expected: String,
        /// The names the certificate carries.
        presented: Vec<String>,
    },
    /// A certificate's key is below today's floor.
    WeakKey {
        /// The certificate's subject.
        subject: String,
        /// `RSA`, `EC`, `DSA`…
        algorithm: String,
        /// Its size, when the algorithm has one.
        bits: Option<u32>,
    },
    /// A certificate is signed with a broken hash (MD5, SHA-1).
    WeakSignature {
        /// The certificate's subject.
        subject: String,
        /// The signature algorithm.
        algorithm: String,
    },
}

/// Where an untrusted chain stops: the question a refused chain raises is
/// which of these it is, since each has its own fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shape {
    /// Nothing parsable was presented.
    Empty,
    /// The end-entity certificate signs itself.
    SelfSigned {
        /// Its subject.
        subject: String,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// The chain ends in a root (a self-signed CA).
    EndsInRoot {
        /// The root's subject.
        root: String,
    },
    /// The chain stops before a root.
    StopsShort {
        /// The last certificate presented.
        subject: String,
        /// Its issuer, which was not sent.
        issuer: String,
    },
}

/// The shape of a chain, end-entity first.
pub fn shape(chain: &[CertFacts]) -> Shape {
    let (Some(leaf), Some(top)) = (chain.first(), chain.last()) else {
        return Shape::Empty;
    };
    if leaf.self_issued {
        return Shape::SelfSigned {
            subject: leaf.subject.clone(),
            fingerprint: leaf.fingerprint.clone(),
        };
    }
    if top.self_issued {
        return Shape::EndsInRoot {
            root: top.subject.clone(),
        };
    }
    Shape::StopsShort {
        subject: top.subject.clone(),
        issuer: top.issuer.clone(),
    }
}

/// Everything wrong with a presented chain (DER, end-entity first).
///
/// `server_name` is the host the client asked for, if any. `anchors` are
/// the trust anchors to judge the issuer against; with none, trust is not
/// judged, except that a self-signed end-entity certificate is always
/// named. Trust here is by name and fingerprint: whether the signatures
/// verify is the TLS library's answer, and a chain it refused is named by
/// [`shape`].
pub fn classify(
    chain: &[Vec<u8>],
    server_name: Option<&str>,
    now: OffsetDateTime,
    anchors: &[CertFacts],
) -> Vec<Finding> {
    let facts: Vec<CertFacts> = chain
        .iter()
        .filter_map(|der| CertFacts::from_der(der))
        .collect();
    let mut findings = Vec::new();
    for f in &facts {
        if now > f.not_after {
            findings.push(Finding::Expired {
                subject: f.subject.clone(),
                not_after: f.not_after,
                now,
            });
        } else if now < f.not_before {
            findings.push(Finding::NotYetValid {
                subject: f.subject.clone(),
                not_before: f.not_before,
                now,
            });
        }
    }
    let trusted = |f: &CertFacts| {
        anchors
            .iter()
            .any(|a| a.fingerprint == f.fingerprint || (!f.self_issued && a.subject == f.issuer))
    };
    match shape(&facts) {
        Shape::Empty => {}
        Shape::SelfSigned {
            subject,
            fingerprint,
        } => {
            if !facts.first().is_some_and(trusted) {
                findings.push(Finding::SelfSigned {
                    subject,
                    fingerprint,
                });
            }
        }
        Shape::EndsInRoot { root } => {
            if !anchors.is_empty() && !facts.iter().any(trusted) {
                findings.push(Finding::UnknownIssuer { root });
            }
        }
        Shape::StopsShort { subject, issuer } => {
            if !anchors.is_empty() && !facts.iter().any(trusted) {
                findings.push(Finding::IncompleteChain { subject, issuer });
            }
        }
    }
    if let (Some(leaf), Some(host)) = (facts.first(), server_name)
        && !leaf.matches_name(host)
    {
        findings.push(Finding::NameMismatch {
            expected: host.to_owned(),
            presented: leaf.names(),
        });
    }
    for f in &facts {
        if f.key.is_weak() {
            findings.push(Finding::WeakKey {
                subject: f.subject.clone(),
                algorithm: f.key.algorithm.clone(),
                bits: f.key.bits,
            });
        }
        // A root's signature on itself is never checked by anyone, so its
        // hash does not matter; every other signature does.
        let is_root = f.self_issued && f.is_ca;
        if f.has_weak_signature() && !is_root {
            findings.push(Finding::WeakSignature {
                subject: f.subject.clone(),
                algorithm: f.signature_algorithm.clone(),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        let key = KeyPair::generate().expect("keygen");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = datetime!(2024-01-01 00:00 UTC);
        p.not_after = datetime!(2034-01-01 00:00 UTC);
        let cert = match parent {
            Some(parent) => p.signed_by(&key, &parent.cert, &parent.key),
            None => p.self_signed(&key),
        }
        .expect("sign");
        Ca { cert, key }
    }

    fn leaf(
        names: &[&str],
        issuer: Option<&Ca>,
        validity: (OffsetDateTime, OffsetDateTime),
    ) -> Vec<u8> {
        let key = KeyPair::generate().expect("keygen");
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(DnType::CommonName, names[0]);
        (p.not_before, p.not_after) = validity;
        match issuer {
            Some(ca) => p.signed_by(&key, &ca.cert, &ca.key),
            None => p.self_signed(&key),
        }
        .expect("sign")
        .der()
        .to_vec()
    }

    const VALID: (OffsetDateTime, OffsetDateTime) = (
        datetime!(2025-01-01 00:00 UTC),
        datetime!(2027-01-01 00:00 UTC),
    );

    fn facts(der: &[u8]) -> CertFacts {
        CertFacts::from_der(der).expect("parses")
    }

    #[test]
    fn a_good_chain_has_no_findings() {
        let root = ca("Root", None);
        let inter = ca("Inter", Some(&root));
        let l = leaf(&["api.test"], Some(&inter), VALID);
        let chain = vec![l, inter.cert.der().to_vec()];
        let anchors = [facts(root.cert.der())];
        assert_eq!(classify(&chain, Some("api.test"), NOW, &anchors), vec![]);
        // Presenting the root as well changes nothing.
        let mut with_root = chain.clone();
        with_root.push(root.cert.der().to_vec());
        assert_eq!(
            classify(&with_root, Some("api.test"), NOW, &anchors),
            vec![]
        );
    }

    #[test]
    fn a_self_signed_leaf_is_named_with_its_fingerprint() {
        let l = leaf(&["api.test"], None, VALID);
        let fp = crate::fingerprint(&l);
        let findings = classify(std::slice::from_ref(&l), Some("api.test"), NOW, &[]);
        assert!(
            matches!(
                &findings[..],
                [Finding::SelfSigned { subject, fingerprint }] if subject == "CN=api.test" && *fingerprint == fp
            ),
            "{findings:?}"
        );
        // Pinned (trusted by fingerprint), it is fine.
        assert_eq!(
            classify(
                std::slice::from_ref(&l),
                Some("api.test"),
                NOW,
                &[facts(&l)]
            ),
            vec![]
        );
    }

    #[test]
    fn an_untrusted_root_and_a_missing_intermediate_are_told_apart() {
        let root = ca("Root", None);
        let stranger = ca("Stranger", None);
        let inter = ca("Inter", Some(&root));
        let anchors = [facts(root.cert.der())];

        let l = leaf(&["api.test"], Some(&stranger), VALID);
        let chain = vec![l, stranger.cert.der().to_vec()];
        assert_eq!(
            classify(&chain, Some("api.test"), NOW, &anchors),
            vec![Finding::UnknownIssuer {
                root: "CN=Stranger".into()
            }]
        );

        let l = leaf(&["api.test"], Some(&inter), VALID);
        assert_eq!(
            classify(std::slice::from_ref(&l), Some("api.test"), NOW, &anchors),
            vec![Finding::IncompleteChain {
                subject: "CN=api.test".into(),
                issuer: "CN=Inter".into()
            }]
        );
        assert_eq!(
            shape(&[facts(&l)]),
            Shape::StopsShort {
                subject: "CN=api.test".into(),
                issuer: "CN=Inter".into()
            }
        );
    }

    #[test]
    fn validity_and_names_are_judged_against_the_given_time_and_host() {
        let root = ca("Root", None);
        let anchors = [facts(root.cert.der())];
        let expired = leaf(
            &["api.test"],
            Some(&root),
            (
                datetime!(2020-01-01 00:00 UTC),
                datetime!(2021-01-01 00:00 UTC),
            ),
        );
        assert_eq!(
            classify(
                std::slice::from_ref(&expired),
                Some("other.test"),
                NOW,
                &anchors
            ),
            vec![
                Finding::Expired {
                    subject: "CN=api.test".into(),
                    not_after: datetime!(2021-01-01 00:00 UTC),
                    now: NOW
                },
                Finding::NameMismatch {
                    expected: "other.test".into(),
                    presented: vec!["api.test".into()]
                }
            ]
        );
        let future = leaf(
            &["api.test"],
            Some(&root),
            (
                datetime!(2030-01-01 00:00 UTC),
                datetime!(2031-01-01 00:00 UTC),
            ),
        );
        assert!(matches!(
            &classify(&[future], None, NOW, &anchors)[..],
            [Finding::NotYetValid { .. }]
        ));
    }

    /// A certificate made by the real `openssl req` with a 1024-bit RSA key
    /// signed with SHA-1 (rcgen refuses to make one).
    fn openssl_weak_leaf() -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("tether-x509-weak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let out = dir.join("weak.der");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-sha1",
                "-newkey",
                "rsa:1024",
                "-nodes",
                "-subj",
                "/CN=weak.test",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-days",
                "30",
                "-outform",
                "DER",
            ])
            .arg("-keyout")
            .arg(dir.join("weak.key"))
            .arg("-out")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs (scripts/install-test-deps.sh installs it)");
        assert!(status.success());
        let der = std::fs::read(&out).expect("certificate written");
        let _ = std::fs::remove_dir_all(&dir);
        der
    }

    #[test]
    fn a_weak_key_and_a_sha1_signature_from_real_openssl_are_named() {
        let der = openssl_weak_leaf();
        let f = facts(&der);
        assert_eq!(f.key.algorithm, "RSA");
        assert_eq!(f.key.bits, Some(1024));
        assert_eq!(f.signature_algorithm, "sha1WithRSAEncryption");
        let findings = classify(&[der], Some("weak.test"), OffsetDateTime::now_utc(), &[]);
        assert!(
            findings.contains(&Finding::WeakKey {
                subject: "CN=weak.test".into(),
                algorithm: "RSA".into(),
                bits: Some(1024)
            }),
            "{findings:?}"
        );
        assert!(
            findings.contains(&Finding::WeakSignature {
                subject: "CN=weak.test".into(),
                algorithm: "sha1WithRSAEncryption".into()
            }),
            "{findings:?}"
        );
        assert!(
            matches!(findings[0], Finding::SelfSigned { .. }),
            "{findings:?}"
        );
    }

    #[test]
    fn garbage_and_empty_chains_classify_without_panicking() {
        assert_eq!(classify(&[], Some("x"), NOW, &[]), vec![]);
        assert_eq!(classify(&[vec![0x30, 0x00]], Some("x"), NOW, &[]), vec![]);
        assert_eq!(shape(&[]), Shape::Empty);
    }
}
