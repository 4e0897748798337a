//! The singleton jobs' leases: one holder at a time, renewals keep the
//! epoch, a takeover after expiry raises it, and of concurrent claimants
//! exactly one wins.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::Fixture;

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-12-07 11:00 UTC)
}

pub async fn job_leases_have_one_holder_and_pass_on_expiry(f: Fixture) {
    let s = &f.store;
    let ttl = Duration::seconds(15);
    let at = |secs: i64| t0() + Duration::seconds(secs);
    let a = s
        .claim_job("sweeper", "a", at(0), at(0) + ttl)
        .await
        .expect("claims")
        .expect("a free job is taken");
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    assert_eq!((a.acquired_at, a.expires_at), (at(0), at(15)));
    assert_eq!(
        s.claim_job("sweeper", "b", at(1), at(1) + ttl)
            .await
            .expect("claims"),
        None,
        "a live lease is not taken"
    );
    let renewed = s
        .claim_job("sweeper", "a", at(5), at(5) + ttl)
        .await
        .expect("renews")
        .expect("the holder renews");
    assert_eq!(renewed.epoch, 1, "a renewal keeps the epoch");
    assert_eq!(renewed.acquired_at, at(0), "a renewal keeps the start");
    assert_eq!(renewed.expires_at, at(20));
    assert_eq!(
        s.claim_job("sweeper", "b", at(19), at(19) + ttl)
            .await
            .expect("claims"),
        None,
        "the renewal moved the expiry"
    );
    // Another job is a lease of its own.
    let other = s
        .claim_job("retention", "b", at(19), at(19) + ttl)
        .await
        .expect("claims")
        .expect("another job is free");
    assert_eq!(other.epoch, 1);
    let b = s
        .claim_job("sweeper", "b", at(20), at(20) + ttl)
        .await
        .expect("claims")
        .expect("an expired lease is taken");
    assert_eq!(
        (b.holder.as_str(), b.epoch, b.acquired_at),
        ("b", 2, at(20))
    );
    assert_eq!(
        s.claim_job("sweeper", "a", at(21), at(21) + ttl)
            .await
            .expect("claims"),
        None,
        "the old holder cannot renew a lease it lost"
    );
    let leases = s.job_leases().await.expect("lists");
    let names: Vec<_> = leases
        .iter()
        .map(|l| (l.job.as_str(), l.holder.as_str(), l.epoch))
        .collect();
    assert_eq!(names, [("retention", "b", 1), ("sweeper", "b", 2)]);

    assert!(
        !s.release_job("sweeper", "a", at(22))
            .await
            .expect("releases"),
        "only the holder releases"
    );
    assert!(
        s.release_job("sweeper", "b", at(22))
            .await
            .expect("releases")
    );
    assert!(
        !s.release_job("sweeper", "b", at(22))
            .await
            .expect("releases"),
        "a released lease is released once"
    );
    let a = s
        .claim_job("sweeper", "a", at(22), at(22) + ttl)
        .await
        .expect("claims")
        .expect("a released lease is free at once");
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 3));
}

pub async fn concurrent_claimants_get_a_lease_once(f: Fixture) {
    let ttl = Duration::seconds(15);
    for (round, now) in [(0, t0()), (1, t0() + Duration::minutes(1))] {
        // Round 0: nobody holds the job. Round 1: the winner of round 0 has
        // expired and everyone, the old holder included, claims at once.
        let mut claims = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(&f.store);
            claims.push(tokio::spawn(async move {
                store
                    .claim_job("tasks", &format!("server-{round}-{i}"), now, now + ttl)
                    .await
                    .expect("claims")
            }));
        }
        let mut won = Vec::new();
        for claim in claims {
            if let Some(lease) = claim.await.expect("joins") {
                won.push(lease);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: one winner, got {won:?}");
        assert_eq!(won[0].epoch, round + 1, "round {round}");
        let stored = f.store.job_leases().await.expect("lists");
        assert_eq!(
            stored, won,
            "round {round}: the stored lease is the winner's"
        );
    }
}
