//! Retry and jitter arithmetic for everything that retries over the
//! transport: check-ins, definitions checks, downloads. One pure function,
//! so the callers differ only in their parameters (base, cap, jitter), never
//! in the arithmetic. The random sample is an argument (a number in
//! `[0, 1]`; NaN and out-of-range values are clamped), so tests can walk
//! the whole range and proptests can check the bounds.

use std::time::Duration;

/// How a retry delay is spread below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`: the least load on a server that is back.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`: never retries in a burst,
    /// for fleets that lost the same mirror at once.
    Equal,
}

/// The ceiling of retry number `attempt` (0 for the first retry):
/// `base * 2^attempt`, at most `cap`. Never overflows.
pub fn ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// The delay before retry number `attempt`: [`ceiling`] spread by `jitter`
/// with `sample`.
pub fn retry_delay(
    base: Duration,
    cap: Duration,
    attempt: u32,
    jitter: Jitter,
    sample: f64,
) -> Duration {
    let top = ceiling(base, cap, attempt);
    let sample = clamp_sample(sample);
    match jitter {
        Jitter::Full => top.mul_f64(sample),
        Jitter::Equal => {
            let half = top / 2;
            half + (top - half).mul_f64(sample)
        }
    }
}

/// A regular interval plus or minus up to `percent` (at most 50).
pub fn jittered_interval(interval: Duration, percent: u8, sample: f64) -> Duration {
    let pct = f64::from(percent.min(MAX_JITTER_PERCENT)) / 100.0;
    interval.mul_f64(1.0 + pct * (2.0 * clamp_sample(sample) - 1.0))
}

/// The largest jitter accepted, in percent.
pub const MAX_JITTER_PERCENT: u8 = 50;

fn clamp_sample(sample: f64) -> f64 {
    if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dur() -> impl Strategy<Value = Duration> {
        (0u64..=86_400_000).prop_map(Duration::from_millis)
    }

    fn sample() -> impl Strategy<Value = f64> {
        prop_oneof![
            0.0f64..=1.0,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0),
            Just(2.0)
        ]
    }

    proptest! {
        #[test]
        fn a_delay_never_exceeds_its_ceiling_nor_the_cap(
            base in dur(), cap in dur(), attempt in any::<u32>(), s in sample(),
        ) {
            let top = ceiling(base, cap, attempt);
            prop_assert!(top <= cap);
            for jitter in [Jitter::Full, Jitter::Equal] {
                let d = retry_delay(base, cap, attempt, jitter, s);
                prop_assert!(d <= top, "{jitter:?} {d:?} > {top:?}");
                if jitter == Jitter::Equal {
                    prop_assert!(d >= top / 2, "{d:?} < half of {top:?}");
                }
            }
        }

        #[test]
        fn ceilings_grow_with_the_attempt_until_the_cap(
            base in dur(), cap in dur(), attempt in 0u32..64,
        ) {
            let (a, b) = (ceiling(base, cap, attempt), ceiling(base, cap, attempt + 1));
            prop_assert!(a <= b);
            if b < cap && attempt < 31 {
                prop_assert_eq!(b, a * 2);
            }
        }

        #[test]
        fn delays_grow_with_the_sample(
            base in dur(), cap in dur(), attempt in 0u32..40, a in 0.0f64..=1.0, b in 0.0f64..=1.0,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            for jitter in [Jitter::Full, Jitter::Equal] {
                prop_assert!(
                    retry_delay(base, cap, attempt, jitter, lo)
                        <= retry_delay(base, cap, attempt, jitter, hi)
                );
            }
        }

        #[test]
        fn jittered_intervals_stay_within_their_percent(
            ms in 0u64..=86_400_000, pct in any::<u8>(), s in sample(),
        ) {
            let interval = Duration::from_millis(ms);
            let d = jittered_interval(interval, pct, s);
            let spread = interval.mul_f64(f64::from(pct.min(MAX_JITTER_PERCENT)) / 100.0);
            // mul_f64 rounds to the nanosecond.
            let slack = Duration::from_micros(1);
            prop_assert!(d + slack >= interval - spread && d <= interval + spread + slack);
        }
    }

    #[test]
    fn the_extremes_are_exact() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(retry_delay(base, cap, 0, Jitter::Full, 1.0), base);
        assert_eq!(
            retry_delay(base, cap, 8, Jitter::Full, 1.0),
            Duration::from_secs(256)
        );
        assert_eq!(retry_delay(base, cap, 9, Jitter::Full, 1.0), cap);
        assert_eq!(retry_delay(base, cap, u32::MAX, Jitter::Full, 1.0), cap);
        assert_eq!(retry_delay(base, cap, 3, Jitter::Full, 0.0), Duration::ZERO);
        assert_eq!(
            retry_delay(base, cap, 3, Jitter::Equal, 0.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            retry_delay(base, cap, 3, Jitter::Full, f64::NAN),
            Duration::from_secs(4)
        );
    }
}
