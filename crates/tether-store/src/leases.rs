//! Singleton jobs' leases: which server runs each job that must run on one
//! server at a time (the status sweeper, the task sweeper, definitions
//! re-signing, retention) when several servers share one database.
//!
//! A lease is a row: the job, its holder, an epoch that grows each time the
//! lease changes hands, and an expiry. The holder renews it well before it
//! expires; anyone may take it once it has expired. The store does not read
//! the clock: callers pass `now` and the expiry, as everywhere else.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;

/// One job's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub job: String,
    /// The server process holding it (its instance id and a per-start nonce).
    pub holder: String,
    /// 1 for the first holder; one more each time another holder takes it.
    /// A renewal by the same holder keeps it.
    pub epoch: u64,
    /// When the current holder took it.
    pub acquired_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// The leases' half of the store.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes `job`'s lease for `holder` until `until`, or renews it when
    /// `holder` holds it already. Returns the lease when `holder` holds it
    /// afterwards, `None` when another holder's lease has not expired at
    /// `now`. Atomic: of two servers claiming an expired lease at once,
    /// exactly one gets it.
    async fn claim_job(
        &self,
        job: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<JobLease>, StoreError>;

    /// Ends `holder`'s lease on `job` at `now` (a clean stop), so another
    /// server need not wait for it to expire. Returns whether `holder` held
    /// it.
    async fn release_job(
        &self,
        job: &str,
        holder: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Every job's lease, expired or not, by job name.
    async fn job_leases(&self) -> Result<Vec<JobLease>, StoreError>;
}
