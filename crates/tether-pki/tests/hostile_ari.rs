//! ARI's parser and the renewal window over the whole input space: a
//! hostile `renewalInfo` body never panics, and any window the policy
//! gives lies inside the certificate's validity, start before end.

use proptest::prelude::*;
use tether_pki::acme::ari::{RenewalInfo, RenewalPolicy, renewal_window};
use time::{Duration, OffsetDateTime};

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RenewalInfo::parse(&body);
    }

    #[test]
    fn json_like_bodies_never_panic(start in "[0-9T:Z-]{0,30}", end in "[0-9T:Z-]{0,30}") {
        let body = format!(r#"{{"suggestedWindow":{{"start":"{start}","end":"{end}"}}}}"#);
        if let Ok(info) = RenewalInfo::parse(body.as_bytes()) {
            prop_assert!(info.window.start <= info.window.end);
        }
    }

    #[test]
    fn the_policy_window_lies_inside_the_validity(
        start_secs in 0i64..4_000_000_000,
        lifetime_secs in 0i64..(800 * 86_400),
        numerator in 0u32..10,
        denominator in 0u32..10,
        days in 0u32..1000,
        by_days in any::<bool>(),
    ) {
        let nb = OffsetDateTime::from_unix_timestamp(start_secs).expect("time");
        let na = nb + Duration::seconds(lifetime_secs);
        let policy = if by_days {
            RenewalPolicy::DaysBeforeExpiry { days }
        } else {
            RenewalPolicy::FractionOfLifetime { numerator, denominator }
        };
        let w = renewal_window(nb, na, None, policy).window;
        prop_assert!(nb <= w.start && w.start <= w.end && w.end <= na, "{w:?} for {nb}..{na}");
    }
}
