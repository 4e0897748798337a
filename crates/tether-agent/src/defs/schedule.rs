//! When the agent checks its definitions channels, kept pure: callers pass
//! the random sample (a number in `[0, 1)`), so tests can fix it.
//!
//! - The first check after start waits a per-agent random offset, so a fleet
//!   restarted together (a reboot wave, a package upgrade) does not hit the
//!   update servers at once. An agent with nothing installed yet waits at
//!   most [`FIRST_CHECK_CAP`], because it has no definitions at all.
//! - Later checks run every policy interval, with the policy's jitter. They
//!   are relative to the last check, never aligned to wall-clock times.
//! - After a failure the agent retries sooner than the interval, with a
//!   growing delay ([`retry_delay`]), but never sooner than a cool-down the
//!   update server asked for ([`not_before_cooldown`]).

use std::time::Duration;

/// The first check of an agent with nothing installed waits at most this long.
pub const FIRST_CHECK_CAP: Duration = Duration::from_secs(10 * 60);

/// The shortest update interval accepted from a policy. The server validates
/// policies; this floor only stops a broken one from making a tight loop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The first retry after a failed check waits about this long; each further
/// failure doubles it, up to the interval.
pub const RETRY_BASE: Duration = Duration::from_secs(60);

/// The policy's interval, floored at [`MIN_INTERVAL`].
pub fn interval(interval_secs: u32) -> Duration {
    Duration::from_secs(u64::from(interval_secs)).max(MIN_INTERVAL)
}

/// The delay before the first check: uniform in `[0, min(interval,
/// FIRST_CHECK_CAP))` when nothing is installed yet, `[0, interval)`
/// otherwise.
pub fn first_delay(interval: Duration, installed: bool, sample: f64) -> Duration {
    let interval = interval.max(MIN_INTERVAL);
    let window = if installed {
        interval
    } else {
        interval.min(FIRST_CHECK_CAP)
    };
    below(window, sample)
}

/// The delay between two successful checks: the interval ± the policy's
/// jitter (the same arithmetic as check-ins).
pub fn next_delay(interval: Duration, jitter_percent: u8, sample: f64) -> Duration {
    crate::backoff::jittered_interval(interval.max(MIN_INTERVAL), jitter_percent, sample)
}

/// The delay after failure number `failures` (1 for the first): "equal
/// jitter" in `[ceiling / 2, ceiling]`, where the ceiling is
/// `RETRY_BASE * 2^(failures - 1)` capped at the interval. Half the ceiling
/// is kept so a fleet that lost its mirror does not retry in a burst.
pub fn retry_delay(failures: u32, interval: Duration, sample: f64) -> Duration {
    tether_transport::backoff::retry_delay(
        RETRY_BASE,
        interval.max(MIN_INTERVAL),
        failures.saturating_sub(1),
        tether_transport::backoff::Jitter::Equal,
        sample,
    )
}

/// A delay moved past the update server's cool-down, if one is running.
pub fn not_before_cooldown(delay: Duration, cooldown: Option<Duration>) -> Duration {
    delay.max(cooldown.unwrap_or_default())
}

/// `window * sample` for a sample in `[0, 1)`, strictly below `window`
/// (zero for an empty window). Out-of-range or NaN samples are clamped.
fn below(window: Duration, sample: f64) -> Duration {
    let nanos = window.as_nanos();
    if nanos == 0 {
        return Duration::ZERO;
    }
    let sample = if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        0.5
    };
    // f64 keeps 53 bits, far more than a day in nanoseconds needs; the cast
    // back saturates, and the `min` keeps the interval half-open.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scaled = (nanos as f64 * sample) as u128;
    let capped = scaled.min(nanos - 1);
    Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const SAMPLES: [f64; 9] = [0.0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.999_999, 1.0, f64::NAN];

    #[test]
    fn first_delay_is_capped_at_ten_minutes_only_when_nothing_is_installed() {
        for s in SAMPLES {
            let fresh = first_delay(6 * HOUR, false, s);
            assert!(fresh < FIRST_CHECK_CAP, "{s}: {fresh:?}");
            let installed = first_delay(6 * HOUR, true, s);
            assert!(installed < 6 * HOUR, "{s}: {installed:?}");
            // A short interval bounds both.
            let short = first_delay(Duration::from_secs(120), false, s);
            assert!(short < Duration::from_secs(120), "{s}: {short:?}");
        }
        assert_eq!(first_delay(6 * HOUR, false, 0.5), Duration::from_secs(300));
        assert_eq!(first_delay(6 * HOUR, true, 0.5), 3 * HOUR);
        assert_eq!(first_delay(6 * HOUR, true, 0.0), Duration::ZERO);
        assert_eq!(
            first_delay(6 * HOUR, true, 1.0),
            6 * HOUR - Duration::from_nanos(1),
            "the window is half-open"
        );
        assert_eq!(
            first_delay(Duration::ZERO, true, 0.5),
            MIN_INTERVAL / 2,
            "a zero interval is floored"
        );
    }

    #[test]
    fn first_delays_of_a_fleet_spread_uniformly_over_the_window() {
        // A fixed seed: 10 000 agents, each drawing its own offset.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e7e);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = first_delay(6 * HOUR, false, rng.random::<f64>());
            assert!(d < FIRST_CHECK_CAP);
            let minute = usize::try_from(d.as_secs() / 60).expect("below ten minutes");
            buckets[minute] += 1;
        }
        // Uniform: about 1 000 per minute; 850..1150 is > 4 sigma wide.
        for (minute, n) in buckets.iter().enumerate() {
            assert!((850..1150).contains(n), "minute {minute}: {n} {buckets:?}");
        }
    }

    #[test]
    fn next_delay_applies_the_policy_jitter() {
        assert_eq!(next_delay(6 * HOUR, 10, 0.5), 6 * HOUR);
        assert_eq!(next_delay(HOUR, 10, 0.0), Duration::from_secs(3240));
        assert_eq!(next_delay(HOUR, 10, 1.0), Duration::from_secs(3960));
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..1000 {
            let d = next_delay(HOUR, 20, rng.random::<f64>());
            assert!(d >= HOUR.mul_f64(0.8) && d <= HOUR.mul_f64(1.2), "{d:?}");
        }
    }

    #[test]
    fn retries_double_from_a_minute_up_to_the_interval() {
        let top = |failures| retry_delay(failures, 6 * HOUR, 1.0);
        let bottom = |failures| retry_delay(failures, 6 * HOUR, 0.0);
        assert_eq!(bottom(1), Duration::from_secs(30));
        assert_eq!(top(1), Duration::from_secs(60));
        assert_eq!(bottom(2), Duration::from_secs(60));
        assert_eq!(bottom(5), Duration::from_secs(480));
        assert_eq!(bottom(9), Duration::from_secs(7680));
        assert_eq!(bottom(10), 3 * HOUR, "capped: half of the interval");
        assert_eq!(bottom(u32::MAX), 3 * HOUR);
        // failures = 0 behaves like the first failure.
        assert_eq!(retry_delay(0, 6 * HOUR, 0.0), Duration::from_secs(30));
        // An interval shorter than the base caps the first retry too.
        assert_eq!(
            retry_delay(1, Duration::from_secs(20), 0.0),
            Duration::from_secs(10)
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 0..64 {
            for _ in 0..50 {
                let d = retry_delay(failures, HOUR, rng.random::<f64>());
                assert!(
                    d >= Duration::from_secs(30) && d <= HOUR,
                    "{failures}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn a_cool_down_pushes_the_check_past_it() {
        let d = Duration::from_secs(60);
        assert_eq!(not_before_cooldown(d, None), d);
        assert_eq!(
            not_before_cooldown(d, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        assert_eq!(not_before_cooldown(d, Some(Duration::from_secs(5))), d);
    }

    #[test]
    fn interval_is_floored() {
        assert_eq!(interval(0), MIN_INTERVAL);
        assert_eq!(interval(21_600), 6 * HOUR);
    }
}
