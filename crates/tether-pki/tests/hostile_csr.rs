//! `csr::check` over the whole input space: random bytes, random PEM
//! bodies, and a real CSR with random bytes flipped, cut or appended. It
//! never panics, and every refusal maps to one of the CSR codes; a mutated
//! CSR is never accepted with a name the task does not allow.

use proptest::prelude::*;
use tether_pki::csr;
use tether_wire::ErrorCode;

const CODES: [ErrorCode; 4] = [
    ErrorCode::CsrMalformed,
    ErrorCode::CsrSignatureInvalid,
    ErrorCode::CsrKeyRefused,
    ErrorCode::CsrNameNotAllowed,
];

fn good_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).expect("params");
    params.serialize_request(&key).expect("csr").der().to_vec()
}

fn allowed() -> Vec<String> {
    vec!["a.test".to_owned()]
}

fn judged(input: &[u8]) {
    match csr::check(input, &allowed()) {
        Ok(req) => assert!(req.names.iter().all(|n| n == "a.test"), "{:?}", req.names),
        Err(e) => assert!(CODES.contains(&e.code()), "{e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        judged(&bytes);
    }

    #[test]
    fn random_pem_bodies_never_panic(body in "[A-Za-z0-9+/=\n]{0,600}") {
        let text = format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n");
        judged(text.as_bytes());
    }

    #[test]
    fn mutated_csrs_never_panic_nor_widen_names(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut der = good_der();
        for (i, b) in flips {
            let at = i.index(der.len());
            der[at] ^= b;
        }
        judged(&der);
        let keep = cut.index(der.len());
        judged(&der[..keep]);
        der.extend_from_slice(&tail);
        judged(&der);
    }
}

/// Found by the `csr_check` fuzz target: a PEM body whose outer tag is not
/// a universal SEQUENCE (here 0xd0, private class) parsed, and its
/// signature (over the inner info, untouched) verified. It is refused as
/// malformed now, before any parser sees it.
#[test]
fn a_csr_whose_outer_tag_is_not_a_sequence_is_malformed() {
    let mut der = good_der();
    assert!(
        csr::check(&der, &allowed()).is_ok(),
        "the untouched CSR passes"
    );
    der[0] = 0xd0;
    let pem_text = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let e = csr::check(pem_text.as_bytes(), &allowed()).expect_err("refused");
    assert_eq!(e.code(), ErrorCode::CsrMalformed);
    assert!(e.to_string().contains("not a SEQUENCE"), "{e}");
}
