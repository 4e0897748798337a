//! The ACME issuers' registry: issuers round-trip with their sealed account
//! bytes (stored as hex, never anything else), a name is taken once, removal
//! is reported, and a corrupt stored blob is reported, not returned.

use tether_store::{AcmeIssuer, StoreError};

use super::Fixture;

fn issuer(name: &str) -> AcmeIssuer {
    AcmeIssuer {
        name: name.to_owned(),
        directory: format!("https://{name}.test:14000/dir"),
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB'; --\n-----END CERTIFICATE-----\n".into()),
        contact: Some("ops@example.test".into()),
        // Every byte value, so no encoding can drop one.
        sealed_account: (0..=255u8).collect(),
        created_at: time::macros::datetime!(2026-12-07 14:00:00.123 UTC),
    }
}

pub async fn acme_issuers_round_trip_once_by_name(f: Fixture) {
    let s = &f.store;
    assert_eq!(s.acme_issuers().await.expect("lists"), vec![]);
    assert_eq!(s.acme_issuer("pebble").await.expect("reads"), None);
    let pebble = issuer("pebble");
    s.insert_acme_issuer(&pebble).await.expect("inserts");
    let bare = AcmeIssuer {
        ca_pem: None,
        contact: None,
        sealed_account: vec![7],
        ..issuer("le-staging")
    };
    s.insert_acme_issuer(&bare).await.expect("inserts");
    assert_eq!(
        s.acme_issuer("pebble").await.expect("reads").as_ref(),
        Some(&pebble)
    );
    assert_eq!(
        s.acme_issuers().await.expect("lists"),
        vec![bare.clone(), pebble.clone()],
        "by name"
    );
    // The sealed bytes are stored as hex: the raw column is exactly that.
    let raw = f
        .raw
        .fetch_text("SELECT sealed_account FROM acme_issuers WHERE name = 'le-staging'")
        .await
        .expect("raw read");
    assert_eq!(raw.as_deref(), Some("07"));

    let again = AcmeIssuer {
        directory: "https://other.test/dir".into(),
        ..issuer("pebble")
    };
    match s.insert_acme_issuer(&again).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a taken name is a Conflict, got {other:?}"),
    }
    assert_eq!(
        s.acme_issuer("pebble").await.expect("reads"),
        Some(pebble.clone()),
        "the first issuer is kept"
    );

    assert!(s.remove_acme_issuer("pebble").await.expect("removes"));
    assert!(!s.remove_acme_issuer("pebble").await.expect("removes"));
    assert_eq!(s.acme_issuers().await.expect("lists"), vec![bare]);
    // The name is free again.
    s.insert_acme_issuer(&pebble).await.expect("re-inserts");

    // A blob that is not hex is reported as corrupt, naming the column.
    f.raw
        .execute("UPDATE acme_issuers SET sealed_account = 'xyz' WHERE name = 'pebble'")
        .await
        .expect("corrupts");
    match s.acme_issuer("pebble").await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("sealed_account"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match s.acme_issuers().await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
