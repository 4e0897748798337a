//! Certificate renewal's half of the store: renewal policies, where each
//! certificate was deployed (so it can be redeployed there), the renewals
//! themselves ([`tether_tasks::renewal::Renewal`], compare-and-set like
//! tasks) and the one issuance each renewal task may have.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

pub use tether_tasks::renewal::Renewal;

use crate::StoreError;

/// Where a certificate was deployed and verified: the deploy task's spec and
/// agent, kept apart from the task (which retention prunes) so the
/// certificate can be redeployed there when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalLocation {
    pub fingerprint: String,
    pub task_id: Uuid,
    pub agent_id: Uuid,
    /// The deploy spec, as JSON.
    pub spec: String,
    pub at: OffsetDateTime,
}

/// A certificate the built-in CA issued that is deployed somewhere and has
/// no renewal yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalCandidate {
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What became of a claim to issue for a renewal's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueClaim {
    /// This caller issues; it must then `complete` or `release` the claim.
    Claimed,
    /// The same request was issued already: here is its certificate.
    Issued {
        fingerprint: String,
        cert_pem: String,
        chain_pem: String,
    },
    /// The same request is being issued by another call right now.
    InFlight,
    /// Another request was issued (or is being issued) for this task.
    Refused,
}

#[async_trait]
pub trait RenewalStore: Send + Sync {
    /// The policy of a scope (`default`, `cert:<fingerprint>`,
    /// `group:<name>`), as JSON.
    async fn renewal_policy(&self, scope: &str) -> Result<Option<String>, StoreError>;
    /// Sets (or replaces) a scope's policy.
    async fn set_renewal_policy(
        &self,
        scope: &str,
        policy: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Remembers a verified deploy's location. Idempotent by (fingerprint,
    /// task).
    async fn record_renewal_location(&self, location: &RenewalLocation) -> Result<(), StoreError>;
    /// A certificate's locations, one per agent and spec, oldest first.
    async fn renewal_locations(
        &self,
        fingerprint: &str,
    ) -> Result<Vec<RenewalLocation>, StoreError>;
    /// Certificates with a location, no renewal and no deploy that replaced
    /// them, by fingerprint after `after`, at most `limit`.
    async fn renewal_candidates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RenewalCandidate>, StoreError>;
    /// Inserts a renewal. `false` when the certificate already has a renewal
    /// that is not verified: there is at most one open renewal per
    /// certificate, whoever asks and however often.
    async fn insert_renewal(&self, renewal: &Renewal) -> Result<bool, StoreError>;
    /// Writes `renewal` if the stored version is still `renewal.version`
    /// (then bumps it), and records its tasks for [`Self::renewal_of_task`].
    /// `false` when someone else wrote first.
    async fn update_renewal(&self, renewal: &Renewal) -> Result<bool, StoreError>;
    async fn renewal(&self, id: Uuid) -> Result<Option<Renewal>, StoreError>;
    /// Renewals the scheduler must step at `now` (`Renewal::wake_at` at or
    /// before it): attempts under way, and due or failed renewals whose next
    /// attempt has come; never verified ones, nor failed ones still backing
    /// off. Filtered by an index, earliest first, at most `limit`.
    async fn due_renewals(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Renewal>, StoreError>;
    /// Every renewal, newest first, at most `limit`.
    async fn list_renewals(&self, limit: u32) -> Result<Vec<Renewal>, StoreError>;
    /// A certificate's renewals, newest first.
    async fn renewals_of(&self, fingerprint: &str) -> Result<Vec<Renewal>, StoreError>;
    /// The renewal a deploy task belongs to.
    async fn renewal_of_task(&self, task_id: Uuid) -> Result<Option<Renewal>, StoreError>;
    /// The certificate issued for a renewal's task, if any.
    async fn renewal_task_issued(&self, task_id: Uuid) -> Result<Option<String>, StoreError>;
    /// Claims the one issuance of a renewal's task for the request whose
    /// SHA-256 is `request`. Atomic: of concurrent claims, one wins.
    async fn claim_renewal_issue(
        &self,
        task_id: Uuid,
        request: &str,
    ) -> Result<IssueClaim, StoreError>;
    /// Records what the claimed issuance produced.
    async fn complete_renewal_issue(
        &self,
        task_id: Uuid,
        fingerprint: &str,
        cert_pem: &str,
        chain_pem: &str,
    ) -> Result<(), StoreError>;
    /// Gives a claim back when signing failed, so a retry may issue.
    async fn release_renewal_issue(&self, task_id: Uuid) -> Result<(), StoreError>;
}
