//! The check-in's retry and jitter parameters. The arithmetic is the one
//! pure function in `tether_transport::backoff`, shared with definitions
//! checks and downloads; what is the check-in's own is its base, its cap and
//! honouring Retry-After.

use std::time::Duration;

use tether_transport::backoff::{self, Jitter};

/// The first retry waits up to this long.
pub const BASE: Duration = Duration::from_secs(1);

/// Retries never wait longer than this (or the policy interval, if larger).
pub const CAP: Duration = Duration::from_secs(5 * 60);

/// A server's Retry-After is honoured up to this long; a hostile or broken
/// server must not be able to park the agent for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 60 * 60);

/// The largest jitter accepted from a policy, in percent.
pub const MAX_JITTER_PERCENT: u8 = backoff::MAX_JITTER_PERCENT;

/// The shortest check-in interval accepted from a policy.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The retry cap for a policy interval: the larger of [`CAP`] and the interval.
pub fn cap_for(interval: Duration) -> Duration {
    CAP.max(interval)
}

/// The delay before retry number `attempt` (0 for the first retry): "full
/// jitter", uniform in `[0, min(cap, BASE * 2^attempt)]`, but never below
/// `retry_after` (itself capped at [`MAX_RETRY_AFTER`]).
///
/// Bounds: `min(retry_after, MAX_RETRY_AFTER) <= result` and
/// `result <= max(cap, min(retry_after, MAX_RETRY_AFTER))`.
pub fn retry_delay(
    attempt: u32,
    cap: Duration,
    retry_after: Option<Duration>,
    sample: f64,
) -> Duration {
    let jittered = backoff::retry_delay(BASE, cap, attempt, Jitter::Full, sample);
    let floor = retry_after.map_or(Duration::ZERO, |r| r.min(MAX_RETRY_AFTER));
    jittered.max(floor)
}

/// The next regular check-in delay: `interval` plus or minus up to
/// `jitter_percent` (clamped to [`MAX_JITTER_PERCENT`]).
pub fn jittered_interval(interval: Duration, jitter_percent: u8, sample: f64) -> Duration {
    backoff::jittered_interval(interval.max(MIN_INTERVAL), jitter_percent, sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: [f64; 9] = [0.0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.999_999, 1.0, f64::NAN];

    #[test]
    fn retry_delay_stays_within_bounds_for_every_attempt_and_sample() {
        let retry_afters = [
            None,
            Some(Duration::ZERO),
            Some(Duration::from_millis(1500)),
            Some(Duration::from_secs(120)),
            Some(Duration::from_secs(3600)),
            Some(Duration::from_secs(86_400 * 30)),
        ];
        for cap in [CAP, Duration::from_secs(3600)] {
            for attempt in [0, 1, 2, 5, 8, 9, 20, 31, 32, 1000, u32::MAX] {
                for ra in retry_afters {
                    for s in SAMPLES {
                        let d = retry_delay(attempt, cap, ra, s);
                        let floor = ra.unwrap_or_default().min(MAX_RETRY_AFTER);
                        assert!(
                            d >= floor,
                            "attempt {attempt} ra {ra:?} s {s}: {d:?} < {floor:?}"
                        );
                        assert!(
                            d <= cap.max(floor),
                            "attempt {attempt} ra {ra:?} s {s}: {d:?} > cap"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn retry_delay_grows_exponentially_until_the_cap() {
        let top = |attempt| retry_delay(attempt, CAP, None, 1.0);
        assert_eq!(top(0), Duration::from_secs(1));
        assert_eq!(top(1), Duration::from_secs(2));
        assert_eq!(top(4), Duration::from_secs(16));
        assert_eq!(top(8), Duration::from_secs(256));
        assert_eq!(top(9), CAP);
        assert_eq!(top(60), CAP);
        assert_eq!(retry_delay(3, CAP, None, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(3, CAP, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_minimum_not_a_target() {
        let ra = Some(Duration::from_secs(30));
        assert_eq!(retry_delay(0, CAP, ra, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(9, CAP, ra, 1.0), CAP);
        assert_eq!(
            retry_delay(9, CAP, Some(Duration::from_secs(86_400)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn cap_is_the_larger_of_five_minutes_and_the_interval() {
        assert_eq!(cap_for(Duration::from_secs(30)), CAP);
        assert_eq!(cap_for(Duration::from_secs(900)), Duration::from_secs(900));
    }

    #[test]
    fn jittered_interval_stays_within_percent() {
        let table: [(u64, u8, f64, u64); 6] = [
            (30_000, 10, 0.0, 27_000),
            (30_000, 10, 0.5, 30_000),
            (30_000, 10, 1.0, 33_000),
            (30_000, 0, 0.9, 30_000),
            (30_000, 200, 0.0, 15_000),
            (0, 10, 0.5, 1_000),
        ];
        for (ms, pct, s, want) in table {
            let got = jittered_interval(Duration::from_millis(ms), pct, s);
            let got_ms = (got.as_secs_f64() * 1000.0).round();
            assert!(
                (got_ms - want as f64).abs() < 1.0,
                "{ms} {pct} {s}: {got:?}"
            );
        }
        for pct in 0..=255u8 {
            for s in SAMPLES {
                let d = jittered_interval(Duration::from_secs(60), pct, s);
                assert!(
                    d >= Duration::from_secs(30) && d <= Duration::from_secs(90),
                    "{pct} {s} {d:?}"
                );
            }
        }
    }
}
