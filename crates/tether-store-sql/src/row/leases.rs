//! Decoding the singleton jobs' lease rows.

use tether_store::{JobLease, StoreError};

use super::{Fields, RawRow};

pub(crate) fn job_lease(row: &dyn RawRow) -> Result<JobLease, StoreError> {
    let f = Fields::new(row, "job_leases", "job")?;
    Ok(JobLease {
        job: f.text("job")?,
        holder: f.text("holder")?,
        epoch: f.u64("epoch")?,
        acquired_at: f.time("acquired_at")?,
        expires_at: f.time("expires_at")?,
    })
}
