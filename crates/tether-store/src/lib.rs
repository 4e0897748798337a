//! The control plane's store: one trait ([`Store`]) that every backend
//! implements and that one conformance story (`tether-store-sql`'s
//! `conformance` module) tests on SQLite and PostgreSQL alike.
//!
//! The store persists facts; it does not read the clock and it does not
//! decide statuses. Callers pass `now` and the status they derived, and the
//! store applies changes atomically (compare-and-set on the previous status,
//! with the transition recorded in the same transaction).

use std::collections::BTreeMap;

use async_trait::async_trait;
use tether_wire::{
    ActionInfo, ActionKind, ActionResult, AgentKind, AgentStatus, BundleInfo, ChannelState,
    ControlPlaneOutage, DefsPolicy, DefsVersion, DoctorSummary, HostFacts, LastError, OutageKind,
    Transition,
};
use time::OffsetDateTime;
use uuid::Uuid;

mod acme;
mod audit;
mod certs;
mod leases;
mod renewals;
mod revocation;
mod rollouts;
mod tasks;
mod upgrades;
mod wakeups;
pub use acme::{AcmeIssuer, AcmeIssuerStore};
pub use audit::{AuditFilter, AuditStore};
pub use certs::{
    CertFilter, CertRecord, CertStore, SILENT_SCANS_TO_GONE, ScanId, ScanSettled, Seen, SeenCert,
    Sighting,
};
pub use leases::{JobLease, LeaseStore};
pub use renewals::{IssueClaim, Renewal, RenewalCandidate, RenewalLocation, RenewalStore};
pub use revocation::{RevocationStore, Revoked, SerialStatus};
pub use rollouts::{RolloutChange, RolloutRecord, RolloutStore};
pub use tasks::{LeaseRequest, ScheduleRecord, ScheduleRun, TaskFilter, TaskStore};
pub use tether_tasks::TaskSnapshot;
pub use upgrades::UpgradeStore;
pub use wakeups::{TaskWake, TaskWakeSubscription, TaskWakeups};

/// A SHA-256 digest of a high-entropy secret (token, credential). Secrets are
/// never stored; only these.
pub type SecretHash = [u8; 32];

/// Called with the number of check-ins in each batch the store writes.
pub type BatchObserver = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The token could not be used: it was revoked or reached its use limit,
    /// possibly by a concurrent enrollment that won the race.
    #[error("token unavailable: {0:?}")]
    TokenUnavailable(TokenUnavailable),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed the query.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be decoded. Nothing is overwritten.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database URL is not one this build accepts. The message names the
    /// scheme seen (never the whole URL, which may hold a password) and the
    /// accepted forms. Retrying cannot help: the configuration must change.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The TLS connection the database settings ask for could not be made:
    /// the database does not offer TLS, or its certificate did not verify.
    /// Retrying cannot help: the database or the settings must change.
    #[error("TLS to the database failed: {0}")]
    Tls(String),
    /// The database holds a contract migration of a newer Tether (one that
    /// drops or renames what older builds may still use): this build must
    /// not run against it. Expand-only migrations of a newer build are no
    /// reason to refuse (rolling upgrades, docs/deploy-multi-server.md).
    #[error("the database was migrated by a newer Tether that removed what this build uses: {0}")]
    SchemaTooNew(String),
    /// A migration this build knows was applied with other content: a
    /// released migration file was changed, or the database was altered.
    #[error("an applied migration differs from this build's: {0}")]
    MigrationAltered(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUnavailable {
    Revoked,
    Exhausted,
}

/// A token to insert. `hash` is SHA-256 of the token secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: Uuid,
    pub hash: SecretHash,
    pub kind: AgentKind,
    pub group: String,
    pub policy: String,
    pub not_before: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub max_uses: Option<u32>,
    pub require_approval: bool,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub kind: AgentKind,
    pub group: String,
    pub policy: String,
    pub not_before: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub require_approval: bool,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// What [`Store::enroll`] writes, atomically with consuming one use of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub token_id: Uuid,
    /// The new agent's id, or the id of the agent being re-registered.
    pub agent_id: Uuid,
    /// `Some(id)` when re-registering: that agent's credential is replaced
    /// (the old one stops working in the same transaction) and its scope is
    /// taken from the new token. Its history is kept.
    pub replaces: Option<Uuid>,
    pub name: String,
    pub kind: AgentKind,
    pub group: String,
    pub policy: String,
    pub credential_hash: SecretHash,
    pub requires_approval: bool,
    pub version: String,
    pub facts: HostFacts,
    pub external_ip: Option<String>,
    pub at: OffsetDateTime,
    /// The status the agent starts in (Pending) and why, recorded as a transition.
    pub status: AgentStatus,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: Uuid,
    pub name: String,
    pub kind: AgentKind,
    pub group: String,
    pub policy: String,
    /// The last recorded status (the server derives the current one from facts).
    pub status: AgentStatus,
    pub requires_approval: bool,
    pub approved_at: Option<OffsetDateTime>,
    pub enrolled_at: OffsetDateTime,
    pub last_seen: Option<OffsetDateTime>,
    /// When this agent becomes overdue: `last_seen + inactive_after_secs`.
    pub deadline_at: Option<OffsetDateTime>,
    pub stopped_at: Option<OffsetDateTime>,
    pub credential_rejected_at: Option<OffsetDateTime>,
    pub external_ip: Option<String>,
    pub version: String,
    pub facts: HostFacts,
    pub definitions: BTreeMap<String, String>,
    /// The definitions channels as the agent last reported them; empty
    /// before its first check-in that carried them.
    pub defs: Vec<ChannelState>,
    pub last_errors: BTreeMap<String, LastError>,
    pub proxy: Option<String>,
    pub checkin_interval_secs: u32,
    pub inactive_after_secs: u32,
    /// How many queued actions wait for this agent: the cheap flag the
    /// check-in reads before it looks for actions at all.
    pub pending_actions: u32,
    /// The site label (`TaskStore::set_agent_site`), if any.
    pub site: Option<String>,
}

/// A status change to apply only if the agent's recorded status is still `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub from: AgentStatus,
    pub to: AgentStatus,
    pub reason: String,
}

/// What a successful check-in writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkin {
    pub agent_id: Uuid,
    pub at: OffsetDateTime,
    pub external_ip: Option<String>,
    pub version: String,
    pub facts: HostFacts,
    pub definitions: BTreeMap<String, String>,
    /// The definitions channels' state, replacing what was stored.
    pub defs: Vec<ChannelState>,
    pub last_errors: BTreeMap<String, LastError>,
    pub proxy: Option<String>,
    pub checkin_interval_secs: u32,
    pub inactive_after_secs: u32,
    /// Applied (with its transition) in the same transaction, if the recorded
    /// status still equals `from`.
    pub status_change: Option<StatusChange>,
}

/// An agent that has been silent past its deadline, as the sweeper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub id: Uuid,
    pub last_seen: Option<OffsetDateTime>,
    pub deadline_at: OffsetDateTime,
    pub inactive_after_secs: u32,
}

/// An escalation bundle to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBundle {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// The gzip bytes, already validated by the caller.
    pub data: Vec<u8>,
    /// SHA-256 of `data`, hex.
    pub sha256: String,
    /// The doctor verdict read from the bundle's manifest, if any. When
    /// present it also becomes the agent's last doctor verdict.
    pub verdict: Option<DoctorSummary>,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub name: String,
    pub revision: i64,
    pub checkin_interval_secs: u32,
    pub jitter_percent: u8,
    /// `host:port` targets the doctor checks, validated by the server.
    pub targets: Vec<String>,
    /// What the policy says about definitions channels.
    pub defs: DefsPolicy,
    /// Long tasks an agent runs at once.
    pub max_concurrent_tasks: u32,
    pub updated_at: OffsetDateTime,
}

/// What [`Store::upsert_policy`] writes: every setting of a policy, replaced
/// as a whole. A struct rather than arguments, so that a setting added later
/// breaks every caller at compile time instead of being silently defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    pub checkin_interval_secs: u32,
    pub jitter_percent: u8,
    /// `host:port` targets the doctor checks, validated by the server.
    pub targets: Vec<String>,
    pub defs: DefsPolicy,
    /// Long tasks an agent runs at once, validated by the server. `None`
    /// keeps the stored value (the default for a new policy).
    pub max_concurrent_tasks: Option<u32>,
}

/// Where a keyset-paged listing resumes: after the row with this sort key
/// (its creation or enrollment time, then its id). Rows added or removed
/// between pages never make a page skip or repeat a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: OffsetDateTime,
    pub id: Uuid,
}

/// Which agents a paged listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
    pub group: Option<String>,
}

/// An admin API credential. Only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdminCredential {
    pub id: Uuid,
    pub hash: SecretHash,
    pub name: String,
    /// The server instance whose `admin.token` holds it, for the bootstrap
    /// credential; `None` for credentials an admin created.
    pub bootstrap_instance: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCredentialRecord {
    pub id: Uuid,
    pub name: String,
    pub bootstrap_instance: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Which credential [`Store::replace_admin_credential`] revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// This one; `NotFound` if it is absent or already revoked.
    Id(Uuid),
    /// Every credential not yet revoked whose bootstrap instance is one of
    /// these (possibly none).
    BootstrapOf(Vec<String>),
}

/// An outage of the control plane to record, with the grace it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutage {
    pub id: Uuid,
    pub kind: OutageKind,
    /// The server instance that saw it.
    pub instance: String,
    pub started_at: OffsetDateTime,
    /// From here, every Active agent gets its full threshold again.
    pub ended_at: OffsetDateTime,
}

/// The control plane's persistence. Every method is one atomic unit. The
/// task queue's methods are in [`TaskStore`], the inventory's in
/// [`CertStore`], the singleton jobs' leases in [`LeaseStore`], renewals in
/// [`RenewalStore`], the built-in CA's revocations in [`RevocationStore`]
/// the ACME issuers in [`AcmeIssuerStore`] and the task wake-ups between
/// servers in [`TaskWakeups`], agent upgrades in [`UpgradeStore`] and the
/// admin audit log in [`AuditStore`], all part of the same one store.
#[async_trait]
pub trait Store:
    TaskStore
    + CertStore
    + LeaseStore
    + RenewalStore
    + RevocationStore
    + AcmeIssuerStore
    + TaskWakeups
    + UpgradeStore
    + RolloutStore
    + AuditStore
    + Send
    + Sync
    + 'static
{
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;

    // Admin credentials.
    async fn insert_admin_credential(
        &self,
        hash: &SecretHash,
        label: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn admin_credential_valid(&self, hash: &SecretHash) -> Result<bool, StoreError>;
    async fn admin_credential_count(&self) -> Result<u64, StoreError>;
    /// Creates a named credential. A `Conflict` if the hash or id exists.
    async fn create_admin_credential(
        &self,
        credential: &NewAdminCredential,
    ) -> Result<AdminCredentialRecord, StoreError>;
    /// The credential with this hash, revoked or not.
    async fn admin_credential_by_hash(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AdminCredentialRecord>, StoreError>;
    /// Credentials, oldest first, after `after`.
    async fn list_admin_credentials(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<AdminCredentialRecord>, StoreError>;
    /// Revokes a credential (revoking twice keeps the first time).
    /// `NotFound` if absent. Refused with `Conflict` when it is the last
    /// credential not revoked, in the same transaction, so two concurrent
    /// revocations cannot lock every admin out.
    async fn revoke_admin_credential(
        &self,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<AdminCredentialRecord, StoreError>;
    /// Revokes what `replaced` names and creates `new`, in one transaction
    /// (rotation). Returns the new credential and how many were revoked.
    async fn replace_admin_credential(
        &self,
        replaced: &Replaced,
        new: &NewAdminCredential,
        at: OffsetDateTime,
    ) -> Result<(AdminCredentialRecord, u64), StoreError>;

    // Enrollment tokens.
    async fn insert_token(&self, token: &NewToken) -> Result<(), StoreError>;
    async fn token_by_hash(&self, hash: &SecretHash) -> Result<Option<TokenRecord>, StoreError>;
    async fn token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Tokens, oldest first, after `after`.
    async fn list_tokens_page(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token; revoking twice keeps the first time. `NotFound` if absent.
    async fn revoke_token(&self, id: Uuid, at: OffsetDateTime) -> Result<TokenRecord, StoreError>;

    /// Consumes one use of the token and creates (or re-registers) the agent,
    /// in one transaction. Concurrent enrollments never exceed `max_uses`: the
    /// loser gets `TokenUnavailable(Exhausted)`. A token revoked meanwhile gives
    /// `TokenUnavailable(Revoked)`. Re-registering an absent agent is `NotFound`.
    async fn enroll(&self, enrollment: &Enrollment) -> Result<AgentRecord, StoreError>;

    // Agents.
    async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>, StoreError>;
    async fn agent_by_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// Keeps `hash` as the agent's next credential (a rotation's first step,
    /// replacing any earlier one that was never used); the current
    /// credential keeps working. `NotFound` for an unknown or removed agent.
    async fn set_pending_credential(&self, id: Uuid, hash: &SecretHash) -> Result<(), StoreError>;
    /// If `hash` is an agent's pending credential, makes it the credential
    /// (the old one becomes the previous credential, refused from now on)
    /// and returns the agent; `None` otherwise.
    async fn promote_pending_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// The agent whose credential was replaced at re-registration, if `hash` is
    /// that old credential. Lets the server flag "credential rejected".
    async fn agent_by_previous_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<Uuid>, StoreError>;
    async fn flag_credential_rejected(
        &self,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Agents not removed, optionally with the given recorded status, oldest enrollment first.
    async fn list_agents(
        &self,
        status: Option<AgentStatus>,
        limit: u32,
    ) -> Result<Vec<AgentRecord>, StoreError>;
    /// Agents not removed that match `filter`, oldest enrollment first,
    /// after `after`: every agent is reachable by following pages.
    async fn list_agents_page(
        &self,
        filter: &AgentFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<AgentRecord>, StoreError>;
    /// Writes a check-in; returns the agent as stored afterwards.
    async fn record_checkin(&self, checkin: &Checkin) -> Result<AgentRecord, StoreError>;
    /// Compare-and-set on the recorded status; records the transition when
    /// applied. Returns whether it applied. `NotFound` if the agent is absent.
    async fn change_status(
        &self,
        id: Uuid,
        change: &StatusChange,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Records a clean shutdown: `stopped_at`, and status Stopped with a transition.
    async fn record_shutdown(
        &self,
        id: Uuid,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn approve_agent(&self, id: Uuid, at: OffsetDateTime) -> Result<AgentRecord, StoreError>;
    /// Removes the agent: its credential stops working at once. `NotFound` if absent.
    async fn remove_agent(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Newest first.
    async fn transitions(&self, id: Uuid, limit: u32) -> Result<Vec<Transition>, StoreError>;
    /// Active agents whose deadline is before `now`, at most `limit`.
    async fn overdue_agents(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Overdue>, StoreError>;
    /// Records that this server instance is alive at `at`; returns the time
    /// it was last recorded alive before, if ever.
    async fn heartbeat(
        &self,
        instance: &str,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError>;
    /// Records an outage of the control plane and, in the same transaction,
    /// gives every Active agent a full threshold from `ended_at`: a deadline
    /// earlier than `ended_at + inactive_after_secs` moves to it. Returns the
    /// outage as stored, with the number of agents given grace.
    async fn record_outage(&self, outage: &NewOutage) -> Result<ControlPlaneOutage, StoreError>;
    /// Outages that ended at or after `since`, newest first.
    async fn outages(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ControlPlaneOutage>, StoreError>;
    /// Deletes up to `limit` transitions recorded before `before`, but never
    /// an agent's newest one (it explains its current status). Returns how
    /// many were deleted.
    async fn prune_transitions(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Deletes up to `limit` completed actions completed before `before`.
    async fn prune_completed_actions(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Deletes up to `limit` outages that ended before `before`.
    async fn prune_outages(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// How many agents (not removed) have each recorded status.
    async fn count_by_status(&self) -> Result<BTreeMap<AgentStatus, u64>, StoreError>;
    /// Reports the size of every group-committed batch of check-ins to
    /// `observer` (the server's metrics). A backend without batches ignores it.
    fn observe_checkin_batches(&self, _observer: BatchObserver) {}

    // Policies. A policy named "default" always exists (seeded by migration:
    // 30 s interval, 10 % jitter).
    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError>;
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Creates or updates a policy; the revision goes up by one on each change.
    /// With `if_revision`, an existing policy is updated only while it is still
    /// at that revision (compare-and-set); otherwise `Conflict` names the
    /// stored revision and nothing changes.
    async fn upsert_policy(
        &self,
        name: &str,
        settings: &PolicySettings,
        if_revision: Option<i64>,
        at: OffsetDateTime,
    ) -> Result<PolicyRecord, StoreError>;

    // Actions: queued by an admin, delivered at a check-in, completed by the agent.
    /// Queues an action and raises the agent's `pending_actions` in the same
    /// transaction. `NotFound` if the agent is absent or removed.
    async fn queue_action(
        &self,
        id: Uuid,
        agent_id: Uuid,
        kind: &ActionKind,
        at: OffsetDateTime,
    ) -> Result<ActionInfo, StoreError>;
    /// Marks up to `limit` queued actions of the agent delivered (oldest
    /// first) and returns them; `pending_actions` is reset to what is still
    /// queued. Concurrent callers never receive the same action twice.
    async fn take_actions(
        &self,
        agent_id: Uuid,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ActionInfo>, StoreError>;
    /// Records the result of a delivered action of this agent. `NotFound` if
    /// the action is not this agent's; `Conflict` if it is not delivered (not
    /// yet, or already completed). A doctor verdict in the result becomes the
    /// agent's last doctor verdict.
    async fn complete_action(
        &self,
        agent_id: Uuid,
        action_id: Uuid,
        result: &ActionResult,
        at: OffsetDateTime,
    ) -> Result<ActionInfo, StoreError>;
    /// The agent's actions, newest first.
    async fn list_actions(&self, agent_id: Uuid, limit: u32)
    -> Result<Vec<ActionInfo>, StoreError>;

    // Escalation bundles.
    /// Stores a bundle, then keeps only the agent's newest `keep` bundles.
    /// `NotFound` if the agent is absent or removed.
    async fn insert_bundle(&self, bundle: &NewBundle, keep: u32) -> Result<BundleInfo, StoreError>;
    /// The agent's bundles without their bytes, newest first.
    async fn list_bundles(&self, agent_id: Uuid, limit: u32)
    -> Result<Vec<BundleInfo>, StoreError>;
    /// One bundle without its bytes.
    async fn bundle_info(&self, id: Uuid) -> Result<Option<BundleInfo>, StoreError>;
    /// One bundle with its bytes.
    async fn bundle(&self, id: Uuid) -> Result<Option<(BundleInfo, Vec<u8>)>, StoreError>;
    /// The agent's last doctor verdict, if it reported one. `NotFound` if the
    /// agent is absent or removed.
    async fn last_doctor(&self, agent_id: Uuid) -> Result<Option<DoctorSummary>, StoreError>;

    // Definitions: the published versions, mirrored from the TUF repository
    // (which stays the source of truth) so that summaries are one query.
    /// Records a published version. A version already recorded for the
    /// channel is `Conflict`, and the stored one is left as it was.
    /// `agents` is not stored.
    async fn insert_defs_version(&self, version: &DefsVersion) -> Result<(), StoreError>;
    /// Recorded versions, of one channel or of all, ordered by channel then
    /// newest version first. `agents` is always 0 here.
    async fn list_defs_versions(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<DefsVersion>, StoreError>;
}
