//! The singleton jobs' leases ([`tether_store::LeaseStore`]), written once
//! for both backends like `store_impl.rs`.
//!
//! A claim is one portable upsert: a new row, or the existing one taken over
//! when its holder is the claimant (a renewal, the epoch kept) or its lease
//! has expired (a takeover, the epoch plus one). Both PostgreSQL and SQLite
//! evaluate the `SET` expressions over the old row and return no row when
//! the `WHERE` refuses, and both serialize concurrent upserts of one key, so
//! of two claimants of an expired lease exactly one gets it.

pub(crate) const CLAIM_JOB: &str = "INSERT INTO job_leases \
     (job, holder, epoch, acquired_at, expires_at) VALUES ($1, $2, 1, $3, $4) \
     ON CONFLICT (job) DO UPDATE SET \
     epoch = CASE WHEN job_leases.holder = excluded.holder \
         THEN job_leases.epoch ELSE job_leases.epoch + 1 END, \
     acquired_at = CASE WHEN job_leases.holder = excluded.holder \
         THEN job_leases.acquired_at ELSE excluded.acquired_at END, \
     holder = excluded.holder, \
     expires_at = excluded.expires_at \
     WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= excluded.acquired_at \
     RETURNING job, holder, epoch, acquired_at, expires_at";
/// Expires the holder's lease now, keeping the row (and so the epoch).
pub(crate) const RELEASE_JOB: &str = "UPDATE job_leases SET expires_at = $3 \
     WHERE job = $1 AND holder = $2 AND expires_at > $3";
pub(crate) const JOB_LEASES: &str =
    "SELECT job, holder, epoch, acquired_at, expires_at FROM job_leases ORDER BY job";

macro_rules! impl_lease_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::LeaseStore for $store {
            async fn claim_job(
                &self,
                job: &str,
                holder: &str,
                now: time::OffsetDateTime,
                until: time::OffsetDateTime,
            ) -> Result<Option<tether_store::JobLease>, tether_store::StoreError> {
                use $crate::row::to_ms;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let row = sqlx::query($crate::leases::CLAIM_JOB)
                    .bind(job)
                    .bind(holder)
                    .bind(to_ms(now))
                    .bind(to_ms(until))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::job_lease(r)).transpose()
            }

            async fn release_job(
                &self,
                job: &str,
                holder: &str,
                now: time::OffsetDateTime,
            ) -> Result<bool, tether_store::StoreError> {
                let done = sqlx::query($crate::leases::RELEASE_JOB)
                    .bind(job)
                    .bind(holder)
                    .bind($crate::row::to_ms(now))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(done.rows_affected() > 0)
            }

            async fn job_leases(
                &self,
            ) -> Result<Vec<tether_store::JobLease>, tether_store::StoreError> {
                let rows = sqlx::query($crate::leases::JOB_LEASES)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::job_lease(r)).collect()
            }
        }
    };
}
