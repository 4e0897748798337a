//! Limits that keep one client, or one agent, from taking the server, and
//! never throttle the good path: a NAT or a load balancer puts whole fleets
//! behind one address, so nothing here refuses a request that would succeed
//! because of what its neighbours did, except concurrent `/defs/` streams,
//! whose per-address cap is generous and configurable.
//!
//! - Failed enrollments per source address: the first
//!   `enroll_failures_per_minute` failures are answered as usual, later ones
//!   429 (TETHER-E3405) with Retry-After. A valid token is never refused.
//! - Concurrent `/defs/` streams per source address.
//! - Concurrent bundle uploads, server-wide, and uploads per agent per hour.
//!
//! Addresses are keyed by IPv4 address or IPv6 /64: one IPv6 host usually
//! holds a whole /64, so a per-address key would limit nothing there.
//! Rate limiting is governor's GCRA, keyed; the stream slots are a counter
//! per key released when the stream ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Keys kept by a keyed limiter before stale ones are dropped.
const MAX_KEYS: usize = 100_000;
/// What a client over a concurrency cap is asked to wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The key a source address is limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                AddrKey(IpAddr::from(octets))
            }
            v4 => AddrKey(v4),
        }
    }
}

/// Why a request must wait, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn secs(&self) -> u32 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
    }
}

/// What the limits are set to (from the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub enroll_failures_per_minute: u32,
    pub defs_streams_per_address: u32,
    pub bundle_uploads_concurrent: u32,
    pub bundle_uploads_per_agent_per_hour: u32,
}

pub struct Limits {
    enroll_failures: Option<DefaultKeyedRateLimiter<AddrKey>>,
    streams: Arc<Slots>,
    uploads: Arc<Semaphore>,
    upload_quota: DefaultKeyedRateLimiter<Uuid>,
    settings: LimitSettings,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Checks `key` against a keyed limiter, dropping stale keys when the map
/// grows large so a spray of addresses cannot grow it without bound.
fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Throttled>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    limiter.check_key(key).map_err(|not_until| Throttled {
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    })
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            enroll_failures: (settings.enroll_failures_per_minute > 0).then(|| {
                RateLimiter::keyed(Quota::per_minute(nonzero(
                    settings.enroll_failures_per_minute,
                )))
            }),
            streams: Arc::new(Slots {
                per_key: settings.defs_streams_per_address.max(1),
                held: Mutex::default(),
            }),
            uploads: Arc::new(Semaphore::new(
                usize::try_from(settings.bundle_uploads_concurrent.max(1)).unwrap_or(1),
            )),
            upload_quota: RateLimiter::keyed(Quota::per_hour(nonzero(
                settings.bundle_uploads_per_agent_per_hour,
            ))),
            settings,
        }
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// An enrollment from `peer` failed. `Ok` answers the failure as it is;
    /// `Err` means this address failed too often and is answered 429.
    pub fn enroll_failed(&self, peer: Option<IpAddr>) -> Result<(), Throttled> {
        match (&self.enroll_failures, peer) {
            (Some(limiter), Some(ip)) => check(limiter, &AddrKey::of(ip)),
            _ => Ok(()),
        }
    }

    /// A slot for one `/defs/` stream to `peer`, held until the guard drops
    /// (when the body is sent or the connection goes).
    pub fn defs_stream(&self, peer: Option<IpAddr>) -> Result<Option<SlotGuard>, Throttled> {
        let Some(ip) = peer else {
            return Ok(None);
        };
        Slots::take(&self.streams, AddrKey::of(ip))
            .map(Some)
            .ok_or(Throttled {
                retry_after: BUSY_RETRY_AFTER,
            })
    }

    /// Streams held now for `peer` (for tests and logs).
    pub fn defs_streams_held(&self, peer: IpAddr) -> u32 {
        self.streams.held_by(AddrKey::of(peer))
    }

    /// A place among the concurrent uploads, and the agent's hourly quota.
    /// The quota is only spent once a place is free.
    pub fn upload(&self, agent: Uuid) -> Result<OwnedSemaphorePermit, Throttled> {
        let permit = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| Throttled {
                retry_after: BUSY_RETRY_AFTER,
            })?;
        check(&self.upload_quota, &agent)?;
        Ok(permit)
    }
}

/// Concurrent streams per key.
#[derive(Debug)]
struct Slots {
    per_key: u32,
    held: Mutex<HashMap<AddrKey, u32>>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AddrKey, u32>> {
        // Counters only; a panic elsewhere cannot leave one half written.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(slots: &Arc<Slots>, key: AddrKey) -> Option<SlotGuard> {
        let mut held = slots.lock();
        let n = held.entry(key).or_insert(0);
        if *n >= slots.per_key {
            return None;
        }
        *n += 1;
        Some(SlotGuard {
            slots: slots.clone(),
            key,
        })
    }

    fn held_by(&self, key: AddrKey) -> u32 {
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// One held stream slot; dropping it frees the slot. The map only holds
/// keys with streams in flight, so it is bounded by the connection cap.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
    key: AddrKey,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(enroll: u32, streams: u32, uploads: u32, per_hour: u32) -> Limits {
        Limits::new(LimitSettings {
            enroll_failures_per_minute: enroll,
            defs_streams_per_address: streams,
            bundle_uploads_concurrent: uploads,
            bundle_uploads_per_agent_per_hour: per_hour,
        })
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(AddrKey::of(mapped), AddrKey::of(v4));
    }

    #[test]
    fn enrollment_failures_are_limited_per_address() {
        let l = limits(3, 1, 1, 1);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(l.enroll_failed(Some(a)).is_ok());
        }
        let t = l.enroll_failed(Some(a)).expect_err("over the limit");
        assert!((1..=60).contains(&t.secs()), "{t:?}");
        assert!(l.enroll_failed(Some(b)).is_ok(), "another address");
        let off = limits(0, 1, 1, 1);
        for _ in 0..100 {
            assert!(off.enroll_failed(Some(a)).is_ok(), "0 turns it off");
        }
    }

    #[test]
    fn stream_slots_are_released_when_dropped() {
        let l = limits(1, 2, 1, 1);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let first = l.defs_stream(Some(a)).expect("free");
        let second = l.defs_stream(Some(a)).expect("free");
        assert_eq!(l.defs_streams_held(a), 2);
        assert!(l.defs_stream(Some(a)).is_err());
        assert!(
            l.defs_stream(Some("192.0.2.9".parse().expect("ip")))
                .is_ok()
        );
        drop(first);
        assert_eq!(l.defs_streams_held(a), 1);
        let third = l.defs_stream(Some(a)).expect("a slot was freed");
        drop((second, third));
        assert_eq!(l.defs_streams_held(a), 0);
    }

    #[test]
    fn uploads_are_capped_at_once_and_per_agent() {
        let l = limits(1, 1, 1, 2);
        let agent = Uuid::new_v4();
        let permit = l.upload(agent).expect("free");
        assert!(l.upload(Uuid::new_v4()).is_err(), "one at a time");
        drop(permit);
        drop(l.upload(agent).expect("second of two"));
        let t = l.upload(agent).expect_err("quota spent");
        assert!(t.secs() > 60, "wait for the hourly quota: {t:?}");
        assert!(l.upload(Uuid::new_v4()).is_ok(), "another agent");
    }
}
