//! The adaptive connect timeout. A silent (dropped) port costs a scan its
//! whole connect timeout, and on a fast network that timeout is mostly
//! waste: nmap times its probes from the round trips it measures, and so do
//! we. Every TCP handshake that got an answer (a connection, or a reset) is
//! a round-trip sample; the connect limit of the scan is
//!
//! `clamp(4 × p99 of the samples, FLOOR, configured)`
//!
//! once [`MIN_SAMPLES`] samples exist, the configured timeout before that
//! (so a scan where nothing answers waits exactly as long as it was told).
//! Probes already waiting follow the limit as it moves ([`RttTracker::limit`]
//! is a watch), so endpoints started at the first instant of a scan benefit
//! too.
//!
//! A host slower than its neighbours must not be called filtered because
//! they are fast: a connect that ran out of an adaptive limit shorter than
//! the configured one is tried once more with a fresh handshake, waiting
//! [`retry_limit`]: four times the adaptive limit, at least [`RETRY_FLOOR`],
//! at most the configured timeout. A port is filtered only when both went
//! unanswered. What is left: a host whose handshake takes longer than the
//! two waits together (at least 1.25 s) in a scan where everything else
//! answered within a quarter of the first is reported filtered, with both
//! waits in its detail; `fixed_connect_timeout` in the spec turns the
//! adaptation off.
//!
//! The samples are kept as a histogram with power-of-two buckets in
//! microseconds: memory does not grow with the scan, and the p99 is read as
//! its bucket's upper bound, so it errs long (at most 2×), never short.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// The adaptive limit never goes below this: a handful of loopback samples
/// of 50 µs must not make a 200 µs limit that one scheduling hiccup blows.
pub const FLOOR: Duration = Duration::from_millis(250);
/// The second handshake of a port that stayed silent waits at least this.
pub const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// Round trips measured before the limit adapts.
pub const MIN_SAMPLES: u64 = 4;
/// Buckets: 2^0 .. 2^39 µs (about 6 days): every `Duration` a connect can
/// take lands in one.
const BUCKETS: usize = 40;

/// The round trips of one scan and the connect limit they give.
#[derive(Debug)]
pub struct RttTracker {
    configured: Duration,
    adaptive: bool,
    histogram: Mutex<[u64; BUCKETS]>,
    limit: watch::Sender<Duration>,
}

impl RttTracker {
    /// A tracker whose limit starts at `configured`; with `adaptive` off it
    /// stays there.
    pub fn new(configured: Duration, adaptive: bool) -> RttTracker {
        RttTracker {
            configured,
            adaptive,
            histogram: Mutex::new([0; BUCKETS]),
            limit: watch::channel(configured).0,
        }
    }

    pub fn configured(&self) -> Duration {
        self.configured
    }

    /// The current connect limit, and changes to it.
    pub fn limit(&self) -> watch::Receiver<Duration> {
        self.limit.subscribe()
    }

    /// A handshake answered (connected or reset) after `rtt`.
    pub fn record(&self, rtt: Duration) {
        if !self.adaptive {
            return;
        }
        let next = {
            let mut h = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
            h[bucket(rtt)] += 1;
            limit_from(&h, self.configured)
        };
        self.limit.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

/// The bucket of a duration: the number of bits of its microseconds.
fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let bits = (u64::BITS - us.leading_zeros()) as usize;
    bits.min(BUCKETS - 1)
}

/// The upper bound of a bucket.
fn bucket_top(i: usize) -> Duration {
    Duration::from_micros(1u64 << i.min(63))
}

/// The connect limit a histogram gives: the configured timeout below
/// [`MIN_SAMPLES`], else `clamp(4 × p99, FLOOR, configured)`.
fn limit_from(h: &[u64; BUCKETS], configured: Duration) -> Duration {
    let n: u64 = h.iter().sum();
    if n < MIN_SAMPLES {
        return configured;
    }
    // The smallest bucket holding the 99th percentile (at least one sample
    // above it is allowed per hundred).
    let want = n - n / 100;
    let mut seen = 0;
    let mut p99 = bucket_top(BUCKETS - 1);
    for (i, count) in h.iter().enumerate() {
        seen += count;
        if seen >= want {
            p99 = bucket_top(i);
            break;
        }
    }
    (p99.saturating_mul(4)).clamp(FLOOR.min(configured), configured)
}

/// How long the second handshake of a port that stayed silent for `first`
/// waits: `clamp(4 × first, RETRY_FLOOR, configured)`.
pub fn retry_limit(first: Duration, configured: Duration) -> Duration {
    first
        .saturating_mul(4)
        .clamp(RETRY_FLOOR.min(configured), configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    #[test]
    fn no_samples_no_adaptation() {
        let t = RttTracker::new(FIVE, true);
        for _ in 0..MIN_SAMPLES - 1 {
            t.record(Duration::from_micros(300));
        }
        assert_eq!(*t.limit().borrow(), FIVE, "too few samples yet");
        t.record(Duration::from_micros(300));
        assert_eq!(*t.limit().borrow(), FLOOR, "fast answers: the floor");
        let fixed = RttTracker::new(FIVE, false);
        for _ in 0..100 {
            fixed.record(Duration::from_micros(300));
        }
        assert_eq!(*fixed.limit().borrow(), FIVE, "adaptation turned off");
    }

    #[test]
    fn the_limit_is_four_times_the_p99_bucket_within_bounds() {
        let t = RttTracker::new(FIVE, true);
        // 50 ms round trips (a delayed link): bucket 2^16 µs = 65.5 ms.
        for _ in 0..200 {
            t.record(Duration::from_millis(50));
        }
        assert_eq!(*t.limit().borrow(), Duration::from_micros(4 << 16));
        // One slow answer in two hundred is above the 99th percentile...
        t.record(Duration::from_millis(900));
        assert_eq!(*t.limit().borrow(), Duration::from_micros(4 << 16));
        // ...three are not, and the limit follows them.
        t.record(Duration::from_millis(900));
        t.record(Duration::from_millis(900));
        assert_eq!(*t.limit().borrow(), Duration::from_micros(4 << 20));
        // Never above the configured timeout.
        for _ in 0..100 {
            t.record(Duration::from_secs(30));
        }
        assert_eq!(*t.limit().borrow(), FIVE);
        // A configured timeout below the floor stays the limit.
        let short = RttTracker::new(Duration::from_millis(100), true);
        for _ in 0..10 {
            short.record(Duration::from_micros(10));
        }
        assert_eq!(*short.limit().borrow(), Duration::from_millis(100));
    }

    #[test]
    fn waiting_probes_see_the_limit_move() {
        let t = RttTracker::new(FIVE, true);
        let mut rx = t.limit();
        assert_eq!(*rx.borrow_and_update(), FIVE);
        for _ in 0..MIN_SAMPLES {
            t.record(Duration::from_micros(100));
        }
        assert!(rx.has_changed().expect("the sender lives"));
        assert_eq!(*rx.borrow_and_update(), FLOOR);
        t.record(Duration::from_micros(100));
        assert!(
            !rx.has_changed().expect("the sender lives"),
            "an unchanged limit wakes nobody"
        );
    }

    #[test]
    fn buckets_cover_every_duration() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(1)), 1);
        assert_eq!(bucket(Duration::from_micros(1000)), 10);
        assert!(bucket_top(bucket(Duration::from_micros(1000))) >= Duration::from_micros(1000));
        assert_eq!(bucket(Duration::MAX), BUCKETS - 1);
        assert_eq!(retry_limit(FLOOR, FIVE), RETRY_FLOOR);
        assert_eq!(
            retry_limit(Duration::from_millis(400), FIVE),
            Duration::from_millis(1600)
        );
        assert_eq!(retry_limit(Duration::from_secs(3), FIVE), FIVE);
        assert_eq!(
            retry_limit(Duration::from_millis(100), Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }
}
