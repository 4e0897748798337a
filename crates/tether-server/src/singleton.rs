//! Singleton jobs: the work that must run on one server at a time when
//! several servers share one database (issue #12). The status sweeper, the
//! task sweeper (lease reaper, dead letters, schedule firing), retention and
//! the renewal scheduler each hold a lease row in the store ([`tether_store::LeaseStore`]); a
//! server runs a job only while it holds that job's lease.
//!
//! One task per server ([`run`]) claims or renews every job's lease each
//! `ttl / 3`. A claim that succeeds makes the job this server's until
//! `2 × ttl / 3` after the claim began, measured on the local monotonic
//! clock: two renewals may fail before the server stops running the job,
//! and it stops a third of the lease before the store's expiry, which is the
//! room left for clock skew between servers and for a stalled process. A
//! server whose renewals fail (the store is down) therefore stops on its
//! own, and another takes over once the lease expires: after a kill -9 of
//! the holder, within `ttl + ttl / 3` (the expiry, then the next claim).
//! A clean stop releases the leases, so the others take over at their next
//! claim.
//!
//! Definitions re-signing is keyed by the repository it signs
//! (`defs-refresh/<repository id>`, [`tether_defs_publish::repo::Repo::id`]):
//! servers sharing one repository (`defs_dir`) re-sign it from one server,
//! and a server with a repository of its own re-signs that one.
//!
//! The holder is the server's instance id (`data_dir/instance.id`): a
//! restarted server takes its own lease back at once. Two processes on one
//! data dir are not supported, and a data dir must never be copied to make
//! another server (docs/deploy-multi-server.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_store::Store;
use tether_wire::Clock;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// A job that runs on one server at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    /// Declares silent agents Inactive ([`crate::sweeper`]).
    StatusSweeper,
    /// Expires task leases, dead-letters late tasks, fires schedules.
    TaskSweeper,
    /// Deletes history past its retention.
    Retention,
    /// Re-signs the definitions metadata before it expires.
    DefsRefresh,
    /// Renews due certificates ([`crate::service::renewal`]).
    Renewal,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::StatusSweeper,
        Job::TaskSweeper,
        Job::Retention,
        Job::DefsRefresh,
        Job::Renewal,
    ];

    /// The name shown in logs and `/health`.
    pub fn name(self) -> &'static str {
        match self {
            Job::StatusSweeper => "status-sweeper",
            Job::TaskSweeper => "task-sweeper",
            Job::Retention => "retention",
            Job::DefsRefresh => "defs-refresh",
            Job::Renewal => "renewal",
        }
    }
}

/// The default lease, in seconds (`singleton_lease_secs`).
pub const DEFAULT_LEASE_SECS: u32 = 15;

/// This server's view of the singleton jobs' leases.
#[derive(Debug)]
pub struct Singletons {
    holder: String,
    /// The id of the definitions repository this server signs.
    defs_repository: String,
    ttl: Duration,
    /// Per job: until when (local monotonic time) this server runs it, and
    /// the lease's epoch.
    held: Mutex<BTreeMap<Job, (Instant, u64)>>,
}

impl Singletons {
    /// `holder` is this server's instance id; `ttl` the lease's length;
    /// `defs_repository` the id of the definitions repository it signs.
    pub fn new(holder: &str, ttl: Duration, defs_repository: &str) -> Singletons {
        Singletons {
            holder: holder.to_owned(),
            defs_repository: defs_repository.to_owned(),
            ttl,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease's length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the leases are claimed or renewed.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The key of `job`'s lease row.
    pub fn key(&self, job: Job) -> String {
        match job {
            // Keyed by the repository (see the module doc).
            Job::DefsRefresh => format!("{}/{}", job.name(), self.defs_repository),
            other => other.name().to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Job, (Instant, u64)>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every write is one insert or remove), so a poisoned lock is used.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this server runs `job` now.
    pub fn holds(&self, job: Job) -> bool {
        self.lock()
            .get(&job)
            .is_some_and(|(until, _)| *until > Instant::now())
    }

    /// The jobs this server runs now, by name.
    pub fn held_jobs(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(job, _)| job.name().to_owned())
            .collect()
    }

    /// Claims or renews every job's lease once. Returns the jobs held
    /// afterwards.
    pub async fn claim_all(&self, store: &dyn Store, clock: &dyn Clock) -> Vec<String> {
        let ttl = time::Duration::try_from(self.ttl).unwrap_or(time::Duration::seconds(15));
        for job in Job::ALL {
            let began = Instant::now();
            let now = clock.now();
            let key = self.key(job);
            match store.claim_job(&key, &self.holder, now, now + ttl).await {
                Ok(Some(lease)) => {
                    let until = began + self.ttl - self.ttl / 3;
                    let before = self.lock().insert(job, (until, lease.epoch));
                    let fresh = before.is_none_or(|(was_until, was_epoch)| {
                        was_epoch != lease.epoch || was_until <= began
                    });
                    if fresh {
                        info!(
                            job = job.name(),
                            holder = %self.holder,
                            epoch = lease.epoch,
                            "singleton job acquired: this server runs it"
                        );
                    }
                }
                Ok(None) => {
                    if self.lock().remove(&job).is_some() {
                        warn!(
                            job = job.name(),
                            "singleton job lost: another server took its lease"
                        );
                    } else {
                        debug!(job = job.name(), "singleton job is held by another server");
                    }
                }
                Err(error) => {
                    // The job stays this server's until its local deadline;
                    // past it, `holds` says no without another word.
                    warn!(job = job.name(), %error, "could not renew the singleton job's lease");
                }
            }
        }
        self.held_jobs()
    }

    /// Releases every lease this server holds (a clean stop).
    pub async fn release_all(&self, store: &dyn Store, clock: &dyn Clock) {
        let held: Vec<Job> = std::mem::take(&mut *self.lock()).into_keys().collect();
        for job in held {
            match store
                .release_job(&self.key(job), &self.holder, clock.now())
                .await
            {
                Ok(true) => info!(job = job.name(), "singleton job released"),
                Ok(false) => {}
                Err(error) => {
                    warn!(job = job.name(), %error, "could not release the singleton job's lease; it expires on its own")
                }
            }
        }
    }
}

/// Claims and renews the leases every `ttl / 3` until `stop` turns true,
/// then releases them.
pub async fn run(
    singletons: Arc<Singletons>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(singletons.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                singletons.claim_all(store.as_ref(), clock.as_ref()).await;
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    singletons.release_all(store.as_ref(), clock.as_ref()).await;
    debug!("singleton leases released");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::ManualClock;

    async fn store() -> Arc<dyn Store> {
        tether_store_sql::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite")
    }

    #[tokio::test]
    async fn one_server_runs_each_job_and_another_takes_over_after_expiry() {
        let store = store().await;
        let clock = ManualClock::new(time::macros::datetime!(2026-12-07 11:00 UTC));
        // A short lease, so the local deadline passes in real time (a paused
        // runtime would time out the store's pool instead).
        let ttl = Duration::from_millis(900);
        // Each with a definitions repository of its own.
        let a = Singletons::new("a", ttl, "repo-a");
        let b = Singletons::new("b", ttl, "repo-b");
        assert_eq!(
            a.claim_all(store.as_ref(), &clock).await,
            [
                "status-sweeper",
                "task-sweeper",
                "retention",
                "defs-refresh",
                "renewal"
            ]
        );
        // b holds only its own repository's re-signing.
        assert_eq!(b.claim_all(store.as_ref(), &clock).await, ["defs-refresh"]);
        assert!(a.holds(Job::StatusSweeper) && !b.holds(Job::StatusSweeper));

        // a stops renewing (it died): its own view lapses at 2/3 of the
        // lease, the store's lease at the full lease.
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert!(
            !a.holds(Job::StatusSweeper),
            "a stops before its lease ends"
        );
        clock.advance(time::Duration::milliseconds(650));
        assert_eq!(b.claim_all(store.as_ref(), &clock).await, ["defs-refresh"]);
        clock.advance(time::Duration::milliseconds(250));
        assert_eq!(
            b.claim_all(store.as_ref(), &clock).await,
            [
                "status-sweeper",
                "task-sweeper",
                "retention",
                "defs-refresh",
                "renewal"
            ]
        );
        let leases = store.job_leases().await.expect("lists");
        let sweeper = leases
            .iter()
            .find(|l| l.job == "status-sweeper")
            .expect("stored");
        assert_eq!((sweeper.holder.as_str(), sweeper.epoch), ("b", 2));
        // a comes back: it does not get the job while b renews.
        assert_eq!(a.claim_all(store.as_ref(), &clock).await, ["defs-refresh"]);

        // A clean stop hands the jobs over at the next claim.
        b.release_all(store.as_ref(), &clock).await;
        assert!(b.held_jobs().is_empty());
        assert_eq!(a.claim_all(store.as_ref(), &clock).await.len(), 5);
    }

    #[tokio::test]
    async fn servers_sharing_a_definitions_repository_re_sign_it_from_one() {
        let store = store().await;
        let clock = ManualClock::new(time::macros::datetime!(2026-12-07 11:00 UTC));
        let ttl = Duration::from_secs(15);
        let a = Singletons::new("a", ttl, "shared");
        let b = Singletons::new("b", ttl, "shared");
        let c = Singletons::new("c", ttl, "own");
        assert_eq!(a.claim_all(store.as_ref(), &clock).await.len(), 5);
        assert!(b.claim_all(store.as_ref(), &clock).await.is_empty());
        assert_eq!(c.claim_all(store.as_ref(), &clock).await, ["defs-refresh"]);
        assert!(a.holds(Job::DefsRefresh) && !b.holds(Job::DefsRefresh));
        let mut keys: Vec<(String, String)> = store
            .job_leases()
            .await
            .expect("lists")
            .into_iter()
            .filter(|l| l.job.starts_with("defs-refresh"))
            .map(|l| (l.job, l.holder))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("defs-refresh/own".to_owned(), "c".to_owned()),
                ("defs-refresh/shared".to_owned(), "a".to_owned())
            ]
        );
    }
}
