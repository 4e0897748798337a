//! The admin audit log (issue #11): every admin action the API answered,
//! appended once, listed newest first, pruned by age.

use async_trait::async_trait;
use tether_wire::AuditEntry;
use time::OffsetDateTime;

use crate::{Cursor, StoreError};

/// Which entries [`AuditStore::list_audit`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor's (a credential name, or `unauthenticated`).
    pub actor: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
}

/// The audit log's half of the store.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one entry. Its id is its key: recording the same id twice is
    /// `Conflict`.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Entries matching `filter`, newest first (by time, then id), strictly
    /// older than `before` (the last row of the previous page), at most
    /// `limit`.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes at most `limit` entries older than `before`, oldest first;
    /// returns how many.
    async fn prune_audit(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}
