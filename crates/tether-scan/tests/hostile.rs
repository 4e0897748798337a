//! Property tests over every parser of outside input (the bounded stand-in
//! for fuzz targets, run with the unit suite): certificate facts, the chain
//! classifier, the legacy handshake reader and the spec never panic, and
//! what they record stays within its bounds.

use proptest::prelude::*;
use serde_json::json;
use tether_scan::DiscoverSpec;
use tether_scan::facts::{CertFacts, MAX_SANS_RECORDED, Roots, judge};
use tether_scan::legacy::{self, Answer, MAX_CHAIN_CERTS};
use time::OffsetDateTime;

fn leaf() -> Vec<u8> {
    tether_testlab::pki::Leaf::self_signed(&["fuzz.test"])
        .der
        .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn certificate_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let now = OffsetDateTime::now_utc();
        if let Some(f) = CertFacts::from_der(&bytes, now) {
            prop_assert!(f.sans.len() <= MAX_SANS_RECORDED);
        }
        let chain = judge(&[bytes.clone(), bytes], 2, "fuzz.test", &Roots::default(), now);
        prop_assert_eq!(chain.certs.len(), 2);
    }

    #[test]
    fn mutated_certificates_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in 0usize..64) {
        let mut der = leaf();
        for (at, b) in flips {
            let i = at % der.len();
            der[i] ^= b;
        }
        der.truncate(der.len().saturating_sub(cut));
        let now = OffsetDateTime::now_utc();
        let _ = CertFacts::from_der(&der, now);
        let chain = judge(&[der], 1, "fuzz.test", &Roots::default(), now);
        prop_assert_eq!(chain.certs.len(), 1);
    }

    #[test]
    fn server_flights_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut io = tokio_test_io(bytes);
        let answer = rt.block_on(legacy::probe(&mut io, Some("fuzz.test")));
        if let Answer::Hello { chain, presented, .. } = answer {
            prop_assert!(chain.len() <= MAX_CHAIN_CERTS && chain.len() <= presented);
        }
    }

    #[test]
    fn spec_text_never_panics(targets in proptest::collection::vec("[0-9a-f:./\\-]{0,40}", 0..6),
                              ports in proptest::collection::vec("[0-9\\-]{0,12}", 0..6)) {
        let _ = DiscoverSpec::from_json(&json!({"targets": targets, "ports": ports})).and_then(|s| s.plan());
    }
}

/// A duplex stream whose peer has sent `bytes` and closed.
fn tokio_test_io(bytes: Vec<u8>) -> tokio::io::DuplexStream {
    let (client, mut server) = tokio::io::duplex(8192);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut hello = vec![0u8; 4096];
            let _ = server.read(&mut hello).await;
            let _ = server.write_all(&bytes).await;
        });
    });
    client
}
