//! `acme::issued_from_chain` reads what an ACME CA answered as hostile
//! input: the chain must be PEM certificates whose leaf carries exactly the
//! agent's CSR's names and key; anything else is TETHER-E8436 and nothing
//! is deployed. Random bytes never panic.

use proptest::prelude::*;
use rcgen::{CertificateParams, CertificateSigningRequestParams, IsCa, KeyPair};
use tether_pki::acme::{AcmeError, issued_from_chain};
use tether_pki::csr::{self, CsrRequest};
use tether_wire::ErrorCode;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    Ca { cert, key }
}

/// A CSR for `names` as the agent makes it, checked as the server does.
fn request(names: &[&str]) -> (CsrRequest, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let csr = CertificateParams::new(names.clone())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (csr::check(csr.as_bytes(), &names).expect("checked"), csr)
}

/// The CA signs `csr_pem` as it is (its key), for `names`.
fn sign(ca: &Ca, csr_pem: &str, names: &[&str]) -> String {
    let mut params = CertificateSigningRequestParams::from_pem(csr_pem).expect("csr");
    params.params.subject_alt_names = names
        .iter()
        .map(|n| rcgen::SanType::DnsName((*n).try_into().expect("name")))
        .collect();
    params.signed_by(&ca.cert, &ca.key).expect("signed").pem()
}

fn refused(chain: &str, req: &CsrRequest) -> String {
    match issued_from_chain(chain, req) {
        Err(e @ AcmeError::BadChain(_)) => {
            assert_eq!(e.code(), ErrorCode::AcmeChainInvalid);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_leaf_for_the_csr_is_taken_with_its_chain() {
    let ca = ca();
    let (req, csr) = request(&["a.test", "b.test"]);
    let leaf = sign(&ca, &csr, &["b.test", "a.test"]);
    let chain = format!("{leaf}{}", ca.cert.pem());
    let issued = issued_from_chain(&chain, &req).expect("accepted");
    assert_eq!(issued.names, vec!["b.test", "a.test"]);
    assert!(issued.cert_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        pem::parse(&issued.chain_pem).expect("chain").contents(),
        ca.cert.der().as_ref()
    );
    assert_eq!(
        issued.fingerprint,
        tether_x509::fingerprint(&issued.cert_der)
    );
    assert!(!issued.serial.is_empty());
    assert!(
        issued
            .serial
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

#[test]
fn a_leaf_with_another_key_or_other_names_is_refused() {
    let ca = ca();
    let (req, _) = request(&["a.test"]);
    // Another key: a CA that signed someone else's request.
    let (_, other_csr) = request(&["a.test"]);
    let why = refused(&sign(&ca, &other_csr, &["a.test"]), &req);
    assert!(why.contains("key"), "{why}");
    // The right key with a name the order did not ask for.
    let (req, csr) = request(&["a.test"]);
    let why = refused(&sign(&ca, &csr, &["a.test", "evil.test"]), &req);
    assert!(why.contains("evil.test"), "{why}");
    // …or with one missing.
    let (req, csr) = request(&["a.test", "b.test"]);
    refused(&sign(&ca, &csr, &["a.test"]), &req);
}

#[test]
fn what_is_not_a_chain_is_refused() {
    let ca = ca();
    let (req, csr) = request(&["a.test"]);
    let leaf = sign(&ca, &csr, &["a.test"]);
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for (chain, what) in [
        ("", "empty"),
        ("<html>rate limited</html>", "HTML"),
        (garbage, "not X.509"),
        (&format!("{leaf}{garbage}"), "a bad intermediate"),
        (&leaf.repeat(9), "too many certificates"),
        (&"A".repeat(70 * 1024), "too large"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "a key, no certificate",
        ),
    ] {
        let why = refused(chain, &req);
        assert!(!why.is_empty(), "{what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_chains_never_panic(body in "[A-Za-z0-9+/=\n-]{0,3000}") {
        let (req, _) = request(&["a.test"]);
        let text = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        prop_assert!(issued_from_chain(&text, &req).is_err());
        prop_assert!(issued_from_chain(&body, &req).is_err());
    }
}
