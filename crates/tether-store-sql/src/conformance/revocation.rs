//! The built-in CA's revocations: only an issued certificate can be
//! revoked, revoking twice keeps the first revocation, the OCSP lookup by
//! serial sees it, and the CRL's list drops certificates once they expire.

use tether_store::{Revoked, StoreError};
use tether_wire::{IssuedCert, RevocationReason};
use time::Duration;

use super::{Fixture, t};

fn issued(n: u8, serial: &str, days: i64) -> IssuedCert {
    IssuedCert {
        fingerprint: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        serial: serial.to_owned(),
        names: vec![format!("host{n}.example")],
        not_before: t(-3600),
        not_after: t(days * 86_400),
        issued_at: t(0),
        task_id: None,
        agent_id: None,
        issuer: None,
        renewal_window: None,
    }
}

pub async fn revocations_are_kept_once_for_issued_certs_only(f: Fixture) {
    let s = &f.store;
    let a = issued(0xa1, "7fa1", 90);
    let b = issued(0xb2, "7fb2", 1);
    for c in [&a, &b] {
        s.record_issued(c, "-----BEGIN CERTIFICATE-----")
            .await
            .expect("records");
    }
    // Not issued by this CA: refused, and nothing is written.
    let foreign = format!("sha256:{}", "ee".repeat(32));
    match s
        .revoke_issued(&foreign, RevocationReason::KeyCompromise, t(10), "ops")
        .await
    {
        Err(StoreError::NotFound) => {}
        other => panic!("revoking an unknown certificate must be NotFound, got {other:?}"),
    }
    assert_eq!(s.revocation(&foreign).await.expect("reads"), None);

    assert_eq!(
        s.serial_status("7fa1")
            .await
            .expect("reads")
            .map(|st| st.revocation),
        Some(None),
        "an issued certificate is good until revoked"
    );
    assert_eq!(s.serial_status("0bad").await.expect("reads"), None);

    let first = match s
        .revoke_issued(
            &a.fingerprint,
            RevocationReason::KeyCompromise,
            t(10),
            "ops",
        )
        .await
        .expect("revokes")
    {
        Revoked::Now(r) => r,
        other => panic!("the first revocation is new, got {other:?}"),
    };
    assert_eq!(first.serial, "7fa1");
    assert_eq!(first.reason, RevocationReason::KeyCompromise);
    assert_eq!(first.revoked_at, t(10));
    assert_eq!(first.revoked_by, "ops");
    assert_eq!(first.not_after, a.not_after);
    // Idempotent: the first reason, time and admin stay.
    match s
        .revoke_issued(&a.fingerprint, RevocationReason::Superseded, t(20), "other")
        .await
        .expect("revokes again")
    {
        Revoked::Already(r) => assert_eq!(r, first, "the first revocation stays"),
        other => panic!("a second revocation is Already, got {other:?}"),
    }
    let status = s
        .serial_status("7fa1")
        .await
        .expect("reads")
        .expect("issued");
    assert_eq!(status.fingerprint, a.fingerprint);
    assert_eq!(status.revocation, Some(first.clone()));

    let second = match s
        .revoke_issued(
            &b.fingerprint,
            RevocationReason::CessationOfOperation,
            t(5),
            "ops",
        )
        .await
        .expect("revokes")
    {
        Revoked::Now(r) => r,
        other => panic!("new, got {other:?}"),
    };
    // Oldest first; an expired certificate leaves the list.
    assert_eq!(
        s.unexpired_revocations(t(30)).await.expect("lists"),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        s.unexpired_revocations(t(86_400) + Duration::seconds(1))
            .await
            .expect("lists"),
        vec![first]
    );
}
