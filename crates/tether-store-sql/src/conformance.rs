//! The conformance story: every behaviour of [`Store`] that callers rely on,
//! written once and run against every backend.
//!
//! Each check is a `pub async fn name(f: Fixture)` that takes a fresh, empty
//! store and panics with a message naming what broke. [`for_each_check!`]
//! lists them, so a backend's test file turns each into its own test:
//!
//! ```text
//! macro_rules! checks {
//!     ($($name:ident),* $(,)?) => {$(
//!         #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//!         async fn $name() { run(tether_store_sql::conformance::$name).await }
//!     )*};
//! }
//! tether_store_sql::for_each_check!(checks);
//! ```
//!
//! [`run_all`] runs the whole story in one go, for another crate's backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tether_store::{
    AgentRecord, Checkin, Enrollment, NewToken, PolicySettings, SecretHash, StatusChange, Store,
    StoreError, TokenUnavailable,
};
use tether_wire::{AgentKind, AgentStatus, DefsPolicy, ErrorCode, HostFacts, LastError};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{PostgresStore, SqliteStore};

mod actions;
mod wakeups;
pub use actions::{
    actions_are_queued_delivered_once_and_completed, bundles_are_stored_listed_and_pruned,
    concurrent_deliveries_hand_out_each_action_once,
};
pub use wakeups::task_wakeups_reach_subscribers;
mod defs;
pub use defs::{
    agent_defs_state_round_trips_through_both_checkin_paths, defs_version_odd_notes_round_trip,
    defs_versions_are_ordered_and_filtered, defs_versions_round_trip,
    duplicate_defs_version_is_refused_and_original_kept, policy_defs_round_trip,
};
mod hardening;
pub use hardening::{
    admin_credentials_are_named_revoked_and_rotated, agent_pages_reach_every_agent,
    bundle_info_comes_without_its_bytes, concurrent_revocations_leave_one_admin_credential,
    heartbeats_return_the_previous_time, outages_give_active_agents_a_full_threshold,
    pre_hardening_rows, retention_prunes_old_rows_but_keeps_each_agents_newest_transition,
    token_and_credential_pages_reach_every_row, upgraded_from_0004_keeps_admin_credentials,
};
mod certs;
pub use certs::{
    a_silent_location_is_gone_after_two_completed_scans, cert_pages_reach_every_cert_and_filter,
    certs_are_stored_once_with_their_locations, changed_and_silent_locations_are_marked,
    first_and_last_seen_are_the_probes_times, gone_is_decided_per_completed_scan,
    issued_certs_and_deployments_are_kept_once,
};
mod tasks;
pub use tasks::{
    concurrent_lessors_never_lease_a_task_twice, expired_leases_and_deadlines_are_found,
    finished_tasks_past_retention_are_pruned_with_their_results,
    held_tasks_are_leased_only_after_approval, leases_go_to_eligible_agents_in_order, new_task,
    result_chunks_are_stored_once, schedules_fire_each_run_once, sites_label_agents_and_tokens,
    tasks_round_trip_and_writes_are_compare_and_set,
    the_queue_depth_counts_waiting_and_running_tasks,
};
mod acme;
pub use acme::acme_issuers_round_trip_once_by_name;
mod leases;
pub use leases::{
    concurrent_claimants_get_a_lease_once, job_leases_have_one_holder_and_pass_on_expiry,
};
mod renewals;
pub use renewals::{
    a_renewal_task_is_issued_once, one_open_renewal_per_cert_and_writes_are_compare_and_set,
    renewal_candidates_and_policies, the_scheduler_reads_only_due_renewals,
};
mod revocation;
pub use revocation::revocations_are_kept_once_for_issued_certs_only;
mod upgrades;
pub use upgrades::agent_upgrades_keep_the_last_report;
mod audit;
pub use audit::audit_entries_are_paged_newest_first_filtered_and_pruned;
mod rollouts;
pub use rollouts::rollouts_pause_on_rollback_and_count_progress;
mod upgrade;
pub use upgrade::{
    NEWER_CONTRACT, NEWER_EXPAND, PRE_DEFS_AGENT, copy_migrations_before, newer_build_migrations,
    pre_defs_rows, runs_against_a_newer_expand_only_schema, upgraded_from_0003_keeps_data,
};

/// Raw SQL access to the database behind a store, which the story needs to
/// corrupt rows on purpose and to look at what is really stored.
#[async_trait]
pub trait RawSql: Send + Sync + 'static {
    /// Runs statements; returns the rows affected.
    async fn execute(&self, sql: &str) -> Result<u64, StoreError>;
    /// The first column of the first row, as text.
    async fn fetch_text(&self, sql: &str) -> Result<Option<String>, StoreError>;
}

#[async_trait]
impl RawSql for SqliteStore {
    async fn execute(&self, sql: &str) -> Result<u64, StoreError> {
        self.execute_raw(sql).await
    }
    async fn fetch_text(&self, sql: &str) -> Result<Option<String>, StoreError> {
        self.fetch_text_raw(sql).await
    }
}

#[async_trait]
impl RawSql for PostgresStore {
    async fn execute(&self, sql: &str) -> Result<u64, StoreError> {
        self.execute_raw(sql).await
    }
    async fn fetch_text(&self, sql: &str) -> Result<Option<String>, StoreError> {
        self.fetch_text_raw(sql).await
    }
}

/// A fresh, empty store (only the migration's seed data) and raw access to
/// its database.
#[derive(Clone)]
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub raw: Arc<dyn RawSql>,
}

impl Fixture {
    pub fn new<S: Store + RawSql>(store: Arc<S>) -> Fixture {
        Fixture {
            store: store.clone(),
            raw: store,
        }
    }
}

/// Calls `$callback!` with the name of every check, so one list drives both
/// backends' test files and [`run_all`].
#[macro_export]
macro_rules! for_each_check {
    ($callback:ident) => {
        $callback! {
            ping_and_backend,
            job_leases_have_one_holder_and_pass_on_expiry,
            concurrent_claimants_get_a_lease_once,
            task_wakeups_reach_subscribers,
            one_open_renewal_per_cert_and_writes_are_compare_and_set,
            a_renewal_task_is_issued_once,
            renewal_candidates_and_policies,
            the_scheduler_reads_only_due_renewals,
            acme_issuers_round_trip_once_by_name,
            admin_credentials,
            tokens_round_trip,
            revoking_keeps_the_first_time,
            enroll_creates_an_agent,
            enroll_respects_max_uses,
            enroll_refuses_revoked_and_unknown_tokens,
            failed_enrollment_consumes_nothing,
            concurrent_enrollments_never_exceed_max_uses,
            reregistration_replaces_the_credential,
            a_rotated_credential_takes_over_when_first_presented,
            status_change_is_compare_and_set,
            concurrent_status_changes_apply_once,
            checkin_records_facts_and_deadline,
            checkin_status_change_is_compare_and_set,
            concurrent_checkins_each_get_their_own_row,
            shutdown_records_the_stop,
            approval_is_idempotent,
            credential_rejection_is_flagged,
            removal_hides_the_agent,
            list_agents_orders_and_filters,
            transitions_are_newest_first,
            overdue_agents_are_active_and_past_deadline,
            overdue_agents_are_found_however_sweep_at_was_left,
            counts_by_status,
            policies_are_seeded_and_revised,
            policy_max_concurrent_tasks_is_kept_unless_given,
            policy_update_is_compare_and_set,
            json_columns_round_trip,
            sql_metacharacters_round_trip,
            corrupt_rows_are_reported_not_overwritten,
            actions_are_queued_delivered_once_and_completed,
            concurrent_deliveries_hand_out_each_action_once,
            bundles_are_stored_listed_and_pruned,
            defs_versions_round_trip,
            defs_version_odd_notes_round_trip,
            duplicate_defs_version_is_refused_and_original_kept,
            defs_versions_are_ordered_and_filtered,
            agent_defs_state_round_trips_through_both_checkin_paths,
            policy_defs_round_trip,
            admin_credentials_are_named_revoked_and_rotated,
            concurrent_revocations_leave_one_admin_credential,
            agent_pages_reach_every_agent,
            token_and_credential_pages_reach_every_row,
            heartbeats_return_the_previous_time,
            outages_give_active_agents_a_full_threshold,
            retention_prunes_old_rows_but_keeps_each_agents_newest_transition,
            bundle_info_comes_without_its_bytes,
            tasks_round_trip_and_writes_are_compare_and_set,
            leases_go_to_eligible_agents_in_order,
            held_tasks_are_leased_only_after_approval,
            the_queue_depth_counts_waiting_and_running_tasks,
            concurrent_lessors_never_lease_a_task_twice,
            result_chunks_are_stored_once,
            expired_leases_and_deadlines_are_found,
            schedules_fire_each_run_once,
            sites_label_agents_and_tokens,
            finished_tasks_past_retention_are_pruned_with_their_results,
            certs_are_stored_once_with_their_locations,
            changed_and_silent_locations_are_marked,
            cert_pages_reach_every_cert_and_filter,
            issued_certs_and_deployments_are_kept_once,
            gone_is_decided_per_completed_scan,
            a_silent_location_is_gone_after_two_completed_scans,
            first_and_last_seen_are_the_probes_times,
            revocations_are_kept_once_for_issued_certs_only,
            agent_upgrades_keep_the_last_report,
            rollouts_pause_on_rollback_and_count_progress,
            audit_entries_are_paged_newest_first_filtered_and_pruned,
        }
    };
}

macro_rules! define_run_all {
    ($($name:ident),* $(,)?) => {
        /// The names of every check, in story order.
        pub const CHECKS: &[&str] = &[$(stringify!($name)),*];

        /// Runs every check, each on a fresh fixture from `make`.
        pub async fn run_all<F, Fut>(make: F)
        where
            F: Fn() -> Fut,
            Fut: Future<Output = Fixture>,
        {
            $(
                tracing::info!(check = stringify!($name), "conformance check");
                $name(make().await).await;
            )*
        }
    };
}

for_each_check!(define_run_all);

// Helpers.

/// A fixed instant with milliseconds, plus `secs`.
fn t(secs: i64) -> OffsetDateTime {
    time::macros::datetime!(2026-05-17 19:16:00.250 UTC) + Duration::seconds(secs)
}

/// A random 32-byte digest, as unique as a real SHA-256 of a fresh secret.
fn secret() -> SecretHash {
    let mut hash = [0_u8; 32];
    hash[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    hash[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    hash
}

fn new_token(max_uses: Option<u32>) -> NewToken {
    NewToken {
        id: Uuid::new_v4(),
        hash: secret(),
        kind: AgentKind::Discovery,
        group: String::from("plant-a"),
        policy: String::from("default"),
        not_before: t(-3600),
        expires_at: t(3600),
        max_uses,
        require_approval: false,
        created_at: t(-3600),
    }
}

async fn insert_token(store: &dyn Store, max_uses: Option<u32>) -> NewToken {
    let token = new_token(max_uses);
    store.insert_token(&token).await.expect("insert_token");
    token
}

fn facts(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.to_owned(),
        os: String::from("linux debian 12"),
        internal_ips: vec![String::from("10.1.2.3"), String::from("fe80::1")],
        uptime_secs: 86_400,
        installed_at: Some(t(-86_400)),
    }
}

fn enrollment(token: &NewToken, at: OffsetDateTime) -> Enrollment {
    let agent_id = Uuid::new_v4();
    Enrollment {
        token_id: token.id,
        agent_id,
        replaces: None,
        name: format!("agent-{}", agent_id.simple()),
        kind: token.kind,
        group: token.group.clone(),
        policy: token.policy.clone(),
        credential_hash: secret(),
        requires_approval: token.require_approval,
        version: String::from("1.0.0"),
        facts: facts("host-1"),
        external_ip: Some(String::from("198.51.100.7")),
        at,
        status: AgentStatus::Pending,
        reason: String::from("enrolled"),
    }
}

/// Enrolls one agent with its own token, at `at`.
async fn enroll_at(store: &dyn Store, at: OffsetDateTime) -> (AgentRecord, Enrollment) {
    let token = insert_token(store, Some(1)).await;
    let e = enrollment(&token, at);
    let record = store.enroll(&e).await.expect("enroll");
    (record, e)
}

fn checkin(id: Uuid, at: OffsetDateTime) -> Checkin {
    Checkin {
        agent_id: id,
        at,
        external_ip: Some(String::from("203.0.113.9")),
        version: String::from("1.0.1"),
        facts: facts("host-1"),
        definitions: BTreeMap::new(),
        defs: Vec::new(),
        last_errors: BTreeMap::new(),
        proxy: None,
        checkin_interval_secs: 30,
        inactive_after_secs: 90,
        status_change: None,
    }
}

/// A policy's settings without definitions channels.
pub fn policy_settings(
    checkin_interval_secs: u32,
    jitter_percent: u8,
    targets: &[String],
) -> PolicySettings {
    PolicySettings {
        checkin_interval_secs,
        jitter_percent,
        targets: targets.to_vec(),
        defs: DefsPolicy::default(),
        max_concurrent_tasks: None,
    }
}

fn change(from: AgentStatus, to: AgentStatus, reason: &str) -> StatusChange {
    StatusChange {
        from,
        to,
        reason: reason.to_owned(),
    }
}

async fn agent(store: &dyn Store, id: Uuid) -> AgentRecord {
    store.agent(id).await.expect("agent").expect("agent exists")
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "{what}: expected NotFound, got {result:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{what}: expected Conflict, got {result:?}"
    );
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, needles: &[&str], what: &str) {
    match result {
        Err(StoreError::Corrupt(message)) => {
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{what}: Corrupt message {message:?} does not name {needle:?}"
                );
            }
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

// The checks.

pub async fn ping_and_backend(f: Fixture) {
    f.store.ping().await.expect("ping");
    assert!(
        ["sqlite", "postgres"].contains(&f.store.backend()),
        "backend {}",
        f.store.backend()
    );
}

pub async fn admin_credentials(f: Fixture) {
    let s = &*f.store;
    assert_eq!(s.admin_credential_count().await.expect("count"), 0);
    let hash = secret();
    assert!(!s.admin_credential_valid(&hash).await.expect("valid"));
    s.insert_admin_credential(&hash, "bootstrap", t(0))
        .await
        .expect("insert");
    assert!(s.admin_credential_valid(&hash).await.expect("valid"));
    assert!(
        !s.admin_credential_valid(&secret()).await.expect("valid"),
        "another hash is not valid"
    );
    assert_eq!(s.admin_credential_count().await.expect("count"), 1);
    assert_conflict(
        s.insert_admin_credential(&hash, "again", t(1)).await,
        "duplicate admin credential",
    );
    s.insert_admin_credential(&secret(), "second", t(2))
        .await
        .expect("insert");
    assert_eq!(s.admin_credential_count().await.expect("count"), 2);
}

pub async fn tokens_round_trip(f: Fixture) {
    let s = &*f.store;
    assert!(s.list_tokens().await.expect("list").is_empty());
    let mut first = new_token(Some(3));
    first.require_approval = true;
    first.kind = AgentKind::Connector;
    // Sub-millisecond precision is not kept: timestamps are stored in ms.
    first.not_before = t(-60) + Duration::nanoseconds(123_456);
    s.insert_token(&first).await.expect("insert");
    let mut second = new_token(None);
    second.created_at = first.created_at + Duration::seconds(1);
    s.insert_token(&second).await.expect("insert");

    let stored = s.token(first.id).await.expect("token").expect("exists");
    assert_eq!(stored.id, first.id);
    assert_eq!(stored.kind, AgentKind::Connector);
    assert_eq!(stored.group, first.group);
    assert_eq!(stored.policy, first.policy);
    assert_eq!(
        stored.not_before,
        t(-60),
        "not_before truncated to the millisecond"
    );
    assert_eq!(stored.expires_at, first.expires_at);
    assert_eq!(stored.max_uses, Some(3));
    assert_eq!(stored.uses, 0);
    assert!(stored.require_approval);
    assert_eq!(stored.revoked_at, None);
    assert_eq!(stored.created_at, first.created_at);

    let by_hash = s
        .token_by_hash(&first.hash)
        .await
        .expect("by hash")
        .expect("exists");
    assert_eq!(by_hash, stored);
    assert_eq!(s.token_by_hash(&secret()).await.expect("by hash"), None);
    assert_eq!(s.token(Uuid::new_v4()).await.expect("token"), None);
    let unlimited = s.token(second.id).await.expect("token").expect("exists");
    assert_eq!(unlimited.max_uses, None);

    let ids: Vec<Uuid> = s
        .list_tokens()
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![first.id, second.id], "oldest first");

    let mut same_id = new_token(None);
    same_id.id = first.id;
    assert_conflict(s.insert_token(&same_id).await, "duplicate token id");
    let mut same_hash = new_token(None);
    same_hash.hash = first.hash;
    assert_conflict(s.insert_token(&same_hash).await, "duplicate token hash");
}

pub async fn revoking_keeps_the_first_time(f: Fixture) {
    let s = &*f.store;
    let token = insert_token(s, None).await;
    let revoked = s.revoke_token(token.id, t(5)).await.expect("revoke");
    assert_eq!(revoked.revoked_at, Some(t(5)));
    assert_eq!(revoked.id, token.id);
    let again = s.revoke_token(token.id, t(9)).await.expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(t(5)),
        "the first revocation time stands"
    );
    assert_eq!(
        s.token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .revoked_at,
        Some(t(5))
    );
    assert_not_found(
        s.revoke_token(Uuid::new_v4(), t(5)).await,
        "revoking an unknown token",
    );
}

pub async fn enroll_creates_an_agent(f: Fixture) {
    let s = &*f.store;
    let token = insert_token(s, Some(10)).await;
    let e = enrollment(&token, t(0));
    let record = s.enroll(&e).await.expect("enroll");
    assert_eq!(record.id, e.agent_id);
    assert_eq!(record.name, e.name);
    assert_eq!(record.kind, e.kind);
    assert_eq!(record.group, e.group);
    assert_eq!(record.policy, e.policy);
    assert_eq!(record.status, AgentStatus::Pending);
    assert!(!record.requires_approval);
    assert_eq!(record.approved_at, None);
    assert_eq!(record.enrolled_at, t(0));
    assert_eq!(record.last_seen, None);
    assert_eq!(record.deadline_at, None);
    assert_eq!(record.stopped_at, None);
    assert_eq!(record.credential_rejected_at, None);
    assert_eq!(record.external_ip, e.external_ip);
    assert_eq!(record.version, e.version);
    assert_eq!(record.facts, e.facts);
    assert!(record.definitions.is_empty());
    assert!(record.last_errors.is_empty());
    assert_eq!(record.proxy, None);
    assert_eq!(
        record.checkin_interval_secs, 30,
        "the default policy's interval"
    );

    assert_eq!(agent(s, e.agent_id).await, record);
    assert_eq!(
        s.agent_by_credential(&e.credential_hash)
            .await
            .expect("by credential"),
        Some(record.clone())
    );
    assert_eq!(
        s.agent_by_credential(&secret())
            .await
            .expect("by credential"),
        None
    );
    assert_eq!(s.agent(Uuid::new_v4()).await.expect("agent"), None);
    assert_eq!(s.list_agents(None, 100).await.expect("list"), vec![record]);
    assert_eq!(
        s.token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        1
    );

    let transitions = s.transitions(e.agent_id, 10).await.expect("transitions");
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0].from, None);
    assert_eq!(transitions[0].to, AgentStatus::Pending);
    assert_eq!(transitions[0].reason, "enrolled");
    assert_eq!(transitions[0].at, t(0));

    // A token that requires approval is remembered on the agent.
    let mut gated = new_token(None);
    gated.require_approval = true;
    s.insert_token(&gated).await.expect("insert");
    let gated_agent = s.enroll(&enrollment(&gated, t(1))).await.expect("enroll");
    assert!(gated_agent.requires_approval);
}

pub async fn enroll_respects_max_uses(f: Fixture) {
    let s = &*f.store;
    let token = insert_token(s, Some(2)).await;
    s.enroll(&enrollment(&token, t(0)))
        .await
        .expect("first use");
    s.enroll(&enrollment(&token, t(1)))
        .await
        .expect("second use");
    let third = enrollment(&token, t(2));
    let result = s.enroll(&third).await;
    assert!(
        matches!(
            result,
            Err(StoreError::TokenUnavailable(TokenUnavailable::Exhausted))
        ),
        "third use: {result:?}"
    );
    assert_eq!(
        s.token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        2
    );
    assert_eq!(
        s.agent(third.agent_id).await.expect("agent"),
        None,
        "the refused agent was not created"
    );

    let zero = insert_token(s, Some(0)).await;
    let result = s.enroll(&enrollment(&zero, t(3))).await;
    assert!(
        matches!(
            result,
            Err(StoreError::TokenUnavailable(TokenUnavailable::Exhausted))
        ),
        "{result:?}"
    );

    let unlimited = insert_token(s, None).await;
    for i in 0..5 {
        s.enroll(&enrollment(&unlimited, t(10 + i)))
            .await
            .expect("unlimited token");
    }
    assert_eq!(
        s.token(unlimited.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        5
    );
    assert_eq!(s.list_agents(None, 100).await.expect("list").len(), 7);
}

pub async fn enroll_refuses_revoked_and_unknown_tokens(f: Fixture) {
    let s = &*f.store;
    let token = insert_token(s, Some(5)).await;
    s.enroll(&enrollment(&token, t(0)))
        .await
        .expect("before revocation");
    s.revoke_token(token.id, t(1)).await.expect("revoke");
    let refused = enrollment(&token, t(2));
    let result = s.enroll(&refused).await;
    assert!(
        matches!(
            result,
            Err(StoreError::TokenUnavailable(TokenUnavailable::Revoked))
        ),
        "{result:?}"
    );
    assert_eq!(s.agent(refused.agent_id).await.expect("agent"), None);
    assert_eq!(
        s.token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        1
    );

    // Revoked wins over exhausted: the admin's decision is the better answer.
    let spent = insert_token(s, Some(1)).await;
    s.enroll(&enrollment(&spent, t(3))).await.expect("only use");
    s.revoke_token(spent.id, t(4)).await.expect("revoke");
    let result = s.enroll(&enrollment(&spent, t(5))).await;
    assert!(
        matches!(
            result,
            Err(StoreError::TokenUnavailable(TokenUnavailable::Revoked))
        ),
        "{result:?}"
    );

    let ghost = new_token(None);
    assert_not_found(
        s.enroll(&enrollment(&ghost, t(6))).await,
        "enrolling with an unknown token",
    );
}

pub async fn failed_enrollment_consumes_nothing(f: Fixture) {
    let s = &*f.store;
    let (first, first_enrollment) = enroll_at(s, t(0)).await;
    let token = insert_token(s, Some(5)).await;

    // The agent insert fails after the token use was counted: both roll back.
    let mut same_id = enrollment(&token, t(1));
    same_id.agent_id = first.id;
    assert_conflict(s.enroll(&same_id).await, "enrolling an existing agent id");
    let mut same_credential = enrollment(&token, t(1));
    same_credential.credential_hash = first_enrollment.credential_hash;
    assert_conflict(
        s.enroll(&same_credential).await,
        "enrolling with a credential in use",
    );

    let mut absent = enrollment(&token, t(2));
    absent.replaces = Some(absent.agent_id);
    assert_not_found(s.enroll(&absent).await, "re-registering an absent agent");

    assert_eq!(
        s.token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        0,
        "no use was consumed"
    );
    assert_eq!(
        s.list_agents(None, 100).await.expect("list"),
        vec![first.clone()]
    );
    assert_eq!(
        s.transitions(first.id, 10)
            .await
            .expect("transitions")
            .len(),
        1
    );
}

pub async fn concurrent_enrollments_never_exceed_max_uses(f: Fixture) {
    let token = insert_token(&*f.store, Some(5)).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&f.store);
        let e = enrollment(&token, t(i));
        tasks.push(tokio::spawn(async move { store.enroll(&e).await }));
    }
    let (mut enrolled, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.expect("enrollment task panicked") {
            Ok(_) => enrolled += 1,
            Err(StoreError::TokenUnavailable(TokenUnavailable::Exhausted)) => exhausted += 1,
            Err(other) => panic!("concurrent enrollment failed with {other:?}"),
        }
    }
    assert_eq!((enrolled, exhausted), (5, 15));
    assert_eq!(
        f.store
            .token(token.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        5
    );
    assert_eq!(f.store.list_agents(None, 100).await.expect("list").len(), 5);
}

pub async fn a_rotated_credential_takes_over_when_first_presented(f: Fixture) {
    let s = &*f.store;
    let (a, e) = enroll_at(s, t(0)).await;
    let old = e.credential_hash;
    let found = |h: SecretHash| async move {
        s.agent_by_credential(&h)
            .await
            .expect("lookup")
            .map(|r| r.id)
    };

    // A first pending credential, replaced by a second before it is ever
    // presented: the first is then nothing, and the old one keeps working.
    let (never_used, next) = (secret(), secret());
    s.set_pending_credential(a.id, &never_used)
        .await
        .expect("pending");
    s.set_pending_credential(a.id, &next)
        .await
        .expect("pending again");
    assert_eq!(
        found(old).await,
        Some(a.id),
        "the current credential still works"
    );
    assert_eq!(
        found(next).await,
        None,
        "a pending credential is not yet the credential"
    );
    assert_eq!(
        s.promote_pending_credential(&never_used)
            .await
            .expect("promote"),
        None,
        "a replaced pending credential is nothing"
    );

    // Presented: it becomes the credential, the old one moves aside.
    let promoted = s
        .promote_pending_credential(&next)
        .await
        .expect("promote")
        .expect("pending");
    assert_eq!(promoted.id, a.id);
    assert_eq!(found(next).await, Some(a.id));
    assert_eq!(found(old).await, None, "the old credential stops working");
    assert_eq!(
        s.agent_by_previous_credential(&old).await.expect("prev"),
        Some(a.id)
    );
    assert_eq!(
        s.promote_pending_credential(&next).await.expect("again"),
        None,
        "promoted once"
    );

    // A removed or unknown agent has nothing to rotate.
    assert!(matches!(
        s.set_pending_credential(Uuid::new_v4(), &secret()).await,
        Err(tether_store::StoreError::NotFound)
    ));
}

pub async fn reregistration_replaces_the_credential(f: Fixture) {
    let s = &*f.store;
    let (original, first) = enroll_at(s, t(0)).await;
    assert!(
        s.change_status(
            original.id,
            &change(AgentStatus::Pending, AgentStatus::Active, "ok"),
            t(1)
        )
        .await
        .expect("cas")
    );
    s.approve_agent(original.id, t(2)).await.expect("approve");
    s.record_shutdown(original.id, "service stopped", t(3))
        .await
        .expect("shutdown");
    assert_eq!(agent(s, original.id).await.stopped_at, Some(t(3)));

    s.upsert_policy("night-shift", &policy_settings(300, 5, &[]), None, t(4))
        .await
        .expect("policy");
    let mut new = new_token(Some(1));
    new.kind = AgentKind::Connector;
    new.group = String::from("plant-b");
    new.policy = String::from("night-shift");
    new.require_approval = true;
    s.insert_token(&new).await.expect("insert");

    let mut again = enrollment(&new, t(10));
    again.agent_id = original.id;
    again.replaces = Some(original.id);
    again.name = String::from("renamed");
    again.version = String::from("2.0.0");
    again.facts = facts("host-2");
    again.reason = String::from("re-registered");
    let replaced = s.enroll(&again).await.expect("re-register");

    assert_eq!(replaced.id, original.id, "the identity is kept");
    assert_eq!(
        replaced.enrolled_at, original.enrolled_at,
        "history is kept"
    );
    assert_eq!(replaced.name, "renamed");
    assert_eq!(replaced.kind, AgentKind::Connector);
    assert_eq!(replaced.group, "plant-b");
    assert_eq!(replaced.policy, "night-shift");
    assert_eq!(replaced.version, "2.0.0");
    assert_eq!(replaced.facts, facts("host-2"));
    assert_eq!(replaced.status, AgentStatus::Pending);
    assert!(replaced.requires_approval);
    assert_eq!(
        replaced.approved_at, None,
        "approval starts over under the new token"
    );
    assert_eq!(replaced.stopped_at, None);
    assert_eq!(agent(s, original.id).await, replaced);

    assert_eq!(
        s.agent_by_credential(&first.credential_hash)
            .await
            .expect("old"),
        None,
        "old credential stops working"
    );
    assert_eq!(
        s.agent_by_credential(&again.credential_hash)
            .await
            .expect("new")
            .map(|a| a.id),
        Some(original.id)
    );
    assert_eq!(
        s.agent_by_previous_credential(&first.credential_hash)
            .await
            .expect("prev"),
        Some(original.id)
    );
    assert_eq!(
        s.agent_by_previous_credential(&again.credential_hash)
            .await
            .expect("prev"),
        None
    );
    assert_eq!(
        s.agent_by_previous_credential(&secret())
            .await
            .expect("prev"),
        None
    );
    assert_eq!(
        s.token(new.id).await.expect("token").expect("exists").uses,
        1
    );
    assert_eq!(
        s.list_agents(None, 100).await.expect("list").len(),
        1,
        "no second agent"
    );

    let history = s.transitions(original.id, 10).await.expect("transitions");
    let steps: Vec<(Option<AgentStatus>, AgentStatus)> =
        history.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        steps,
        vec![
            (Some(AgentStatus::Stopped), AgentStatus::Pending),
            (Some(AgentStatus::Active), AgentStatus::Stopped),
            (Some(AgentStatus::Pending), AgentStatus::Active),
            (None, AgentStatus::Pending),
        ]
    );
    assert_eq!(history[0].reason, "re-registered");
    assert_eq!(history[0].at, t(10));

    // The id to replace must be the agent's own.
    let other = insert_token(s, None).await;
    let mut mismatched = enrollment(&other, t(11));
    mismatched.replaces = Some(original.id);
    assert_conflict(
        s.enroll(&mismatched).await,
        "replaces differs from agent_id",
    );

    // A removed agent cannot be re-registered.
    s.remove_agent(original.id, t(12)).await.expect("remove");
    let mut late = enrollment(&other, t(13));
    late.agent_id = original.id;
    late.replaces = Some(original.id);
    assert_not_found(s.enroll(&late).await, "re-registering a removed agent");
    assert_eq!(
        s.agent_by_previous_credential(&first.credential_hash)
            .await
            .expect("prev"),
        None
    );
    assert_eq!(
        s.token(other.id)
            .await
            .expect("token")
            .expect("exists")
            .uses,
        0
    );
}

pub async fn status_change_is_compare_and_set(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let activate = change(AgentStatus::Pending, AgentStatus::Active, "first check-in");
    assert!(
        s.change_status(a.id, &activate, t(1)).await.expect("cas"),
        "applies from the recorded status"
    );
    assert_eq!(agent(s, a.id).await.status, AgentStatus::Active);
    assert!(
        !s.change_status(a.id, &activate, t(2)).await.expect("cas"),
        "a stale `from` does not apply"
    );
    assert_eq!(agent(s, a.id).await.status, AgentStatus::Active);
    let history = s.transitions(a.id, 10).await.expect("transitions");
    assert_eq!(history.len(), 2, "only the applied change is recorded");
    assert_eq!(
        (history[0].from, history[0].to),
        (Some(AgentStatus::Pending), AgentStatus::Active)
    );
    assert_eq!(history[0].reason, "first check-in");
    assert_eq!(history[0].at, t(1));
    assert_not_found(
        s.change_status(Uuid::new_v4(), &activate, t(3)).await,
        "changing an unknown agent",
    );
}

pub async fn concurrent_status_changes_apply_once(f: Fixture) {
    let (a, _) = enroll_at(&*f.store, t(0)).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            let activate = change(
                AgentStatus::Pending,
                AgentStatus::Active,
                &format!("racer {i}"),
            );
            store.change_status(a.id, &activate, t(i)).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if task
            .await
            .expect("status task panicked")
            .expect("change_status")
        {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one compare-and-set wins");
    let history = f.store.transitions(a.id, 100).await.expect("transitions");
    assert_eq!(
        history.len(),
        2,
        "one transition for the winner, none for the losers"
    );
    assert_eq!(agent(&*f.store, a.id).await.status, AgentStatus::Active);
}

pub async fn checkin_records_facts_and_deadline(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let mut c = checkin(a.id, t(60));
    c.checkin_interval_secs = 45;
    c.inactive_after_secs = 135;
    c.facts = facts("host-renamed");
    c.definitions = BTreeMap::from([(String::from("signatures"), String::from("2026.05.17-1"))]);
    c.last_errors = BTreeMap::from([(
        String::from("transport"),
        LastError {
            code: ErrorCode::ProxyAuthRequired,
            message: String::from("407 from proxy"),
            at: t(50),
        },
    )]);
    c.proxy = Some(String::from("http://proxy.corp.example:3128"));
    let stored = s.record_checkin(&c).await.expect("checkin");
    assert_eq!(stored.last_seen, Some(t(60)));
    assert_eq!(
        stored.deadline_at,
        Some(t(60 + 135)),
        "deadline is last_seen + inactive_after_secs"
    );
    assert_eq!(stored.checkin_interval_secs, 45);
    assert_eq!(stored.inactive_after_secs, 135);
    assert_eq!(stored.external_ip, c.external_ip);
    assert_eq!(stored.version, "1.0.1");
    assert_eq!(stored.facts, c.facts);
    assert_eq!(stored.definitions, c.definitions);
    assert_eq!(stored.last_errors, c.last_errors);
    assert_eq!(stored.proxy, c.proxy);
    assert_eq!(
        stored.status,
        AgentStatus::Pending,
        "no status change was asked for"
    );
    assert_eq!(stored.enrolled_at, a.enrolled_at);
    assert_eq!(
        agent(s, a.id).await,
        stored,
        "the returned record is what is stored"
    );
    assert_eq!(s.transitions(a.id, 10).await.expect("transitions").len(), 1);

    // Optional values can be cleared again.
    let mut later = checkin(a.id, t(120));
    later.external_ip = None;
    let stored = s.record_checkin(&later).await.expect("checkin");
    assert_eq!(stored.external_ip, None);
    assert_eq!(stored.proxy, None);
    assert!(stored.definitions.is_empty() && stored.last_errors.is_empty());
    assert_eq!(stored.deadline_at, Some(t(120 + 90)));

    assert_not_found(
        s.record_checkin(&checkin(Uuid::new_v4(), t(1))).await,
        "check-in of an unknown agent",
    );
    let mut unknown = checkin(Uuid::new_v4(), t(1));
    unknown.status_change = Some(change(AgentStatus::Pending, AgentStatus::Active, "x"));
    assert_not_found(
        s.record_checkin(&unknown).await,
        "check-in with a status change of an unknown agent",
    );
}

/// Check-ins arriving together are group-committed (batch.rs): each caller
/// still gets its own agent's row, a removed or unknown agent in the same
/// batch gets `NotFound`, and nothing is lost.
pub async fn concurrent_checkins_each_get_their_own_row(f: Fixture) {
    let s = f.store.clone();
    let mut agents = Vec::new();
    for _ in 0..12 {
        agents.push(enroll_at(&*s, t(0)).await.0);
    }
    let removed = agents.pop().expect("enrolled");
    s.remove_agent(removed.id, t(1)).await.expect("remove");

    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..10i64 {
        for (i, a) in agents.iter().enumerate() {
            let (s, id) = (s.clone(), a.id);
            tasks.spawn(async move {
                let mut c = checkin(id, t(100 + round));
                c.facts = facts(&format!("host-{i}"));
                c.version = format!("1.0.{round}");
                (id, i, s.record_checkin(&c).await)
            });
        }
        for id in [removed.id, Uuid::new_v4()] {
            let s = s.clone();
            tasks.spawn(
                async move { (id, usize::MAX, s.record_checkin(&checkin(id, t(100))).await) },
            );
        }
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (id, i, result) = joined.expect("task");
        if i == usize::MAX {
            assert_not_found(result, "check-in of a removed or unknown agent in a batch");
            continue;
        }
        let row = result.expect("check-in of an enrolled agent");
        assert_eq!(row.id, id, "each caller gets its own agent's row");
        assert_eq!(row.facts, facts(&format!("host-{i}")));
        ok += 1;
    }
    assert_eq!(ok, 110);
    for (i, a) in agents.iter().enumerate() {
        let stored = agent(&*s, a.id).await;
        assert_eq!(stored.facts, facts(&format!("host-{i}")));
        assert!(
            stored
                .last_seen
                .is_some_and(|at| at >= t(100) && at <= t(109))
        );
    }
}

pub async fn checkin_status_change_is_compare_and_set(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let mut first = checkin(a.id, t(30));
    first.status_change = Some(change(
        AgentStatus::Pending,
        AgentStatus::Active,
        "first check-in",
    ));
    let stored = s.record_checkin(&first).await.expect("checkin");
    assert_eq!(stored.status, AgentStatus::Active);
    assert_eq!(agent(s, a.id).await, stored);

    // A stale `from`: the check-in is still written, the status is not.
    let mut stale = checkin(a.id, t(60));
    stale.version = String::from("1.0.2");
    stale.status_change = Some(change(
        AgentStatus::Inactive,
        AgentStatus::Active,
        "came back",
    ));
    let stored = s.record_checkin(&stale).await.expect("checkin");
    assert_eq!(stored.status, AgentStatus::Active);
    assert_eq!(stored.version, "1.0.2");
    assert_eq!(stored.last_seen, Some(t(60)));

    let history = s.transitions(a.id, 10).await.expect("transitions");
    assert_eq!(history.len(), 2, "one enrollment, one applied change");
    assert_eq!(
        (history[0].from, history[0].to),
        (Some(AgentStatus::Pending), AgentStatus::Active)
    );
    assert_eq!(
        (history[0].reason.as_str(), history[0].at),
        ("first check-in", t(30))
    );
}

pub async fn shutdown_records_the_stop(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    s.record_checkin(&Checkin {
        status_change: Some(change(
            AgentStatus::Pending,
            AgentStatus::Active,
            "checked in",
        )),
        ..checkin(a.id, t(10))
    })
    .await
    .expect("checkin");
    s.record_shutdown(a.id, "systemctl stop", t(20))
        .await
        .expect("shutdown");
    let stopped = agent(s, a.id).await;
    assert_eq!(stopped.status, AgentStatus::Stopped);
    assert_eq!(stopped.stopped_at, Some(t(20)));
    let history = s.transitions(a.id, 10).await.expect("transitions");
    assert_eq!(
        (history[0].from, history[0].to),
        (Some(AgentStatus::Active), AgentStatus::Stopped)
    );
    assert_eq!(
        (history[0].reason.as_str(), history[0].at),
        ("systemctl stop", t(20))
    );

    // A repeated notice changes nothing.
    s.record_shutdown(a.id, "again", t(30))
        .await
        .expect("shutdown again");
    assert_eq!(agent(s, a.id).await.stopped_at, Some(t(20)));
    assert_eq!(s.transitions(a.id, 10).await.expect("transitions").len(), 3);

    // From Pending too.
    let (b, _) = enroll_at(s, t(40)).await;
    s.record_shutdown(b.id, "before first check-in", t(41))
        .await
        .expect("shutdown");
    assert_eq!(agent(s, b.id).await.status, AgentStatus::Stopped);

    assert_not_found(
        s.record_shutdown(Uuid::new_v4(), "x", t(1)).await,
        "shutdown of an unknown agent",
    );
}

pub async fn approval_is_idempotent(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let approved = s.approve_agent(a.id, t(5)).await.expect("approve");
    assert_eq!(approved.approved_at, Some(t(5)));
    assert_eq!(
        approved.status,
        AgentStatus::Pending,
        "approval does not decide the status"
    );
    let again = s.approve_agent(a.id, t(9)).await.expect("approve again");
    assert_eq!(again.approved_at, Some(t(5)), "the first approval stands");
    assert_eq!(agent(s, a.id).await, again);
    assert_not_found(
        s.approve_agent(Uuid::new_v4(), t(5)).await,
        "approving an unknown agent",
    );
}

pub async fn credential_rejection_is_flagged(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    s.flag_credential_rejected(a.id, t(7)).await.expect("flag");
    assert_eq!(agent(s, a.id).await.credential_rejected_at, Some(t(7)));
    s.flag_credential_rejected(a.id, t(8))
        .await
        .expect("flag again");
    assert_eq!(
        agent(s, a.id).await.credential_rejected_at,
        Some(t(8)),
        "the latest rejection is kept"
    );
    assert_not_found(
        s.flag_credential_rejected(Uuid::new_v4(), t(7)).await,
        "flagging an unknown agent",
    );
}

pub async fn removal_hides_the_agent(f: Fixture) {
    let s = &*f.store;
    let (kept, _) = enroll_at(s, t(0)).await;
    let (gone, gone_enrollment) = enroll_at(s, t(1)).await;
    for id in [kept.id, gone.id] {
        s.record_checkin(&Checkin {
            status_change: Some(change(AgentStatus::Pending, AgentStatus::Active, "up")),
            ..checkin(id, t(2))
        })
        .await
        .expect("checkin");
    }
    s.remove_agent(gone.id, t(3)).await.expect("remove");

    assert_eq!(s.agent(gone.id).await.expect("agent"), None);
    assert_eq!(
        s.agent_by_credential(&gone_enrollment.credential_hash)
            .await
            .expect("by credential"),
        None
    );
    let listed: Vec<Uuid> = s
        .list_agents(None, 100)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, vec![kept.id]);
    assert!(
        s.list_agents(Some(AgentStatus::Active), 100)
            .await
            .expect("list")
            .iter()
            .all(|a| a.id != gone.id)
    );
    let overdue: Vec<Uuid> = s
        .overdue_agents(t(10_000), 100)
        .await
        .expect("overdue")
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(overdue, vec![kept.id], "removed agents are never overdue");
    assert_eq!(
        s.count_by_status().await.expect("counts")[&AgentStatus::Active],
        1
    );

    assert_not_found(s.remove_agent(gone.id, t(4)).await, "removing twice");
    assert_not_found(
        s.remove_agent(Uuid::new_v4(), t(4)).await,
        "removing an unknown agent",
    );
    assert_not_found(
        s.record_checkin(&checkin(gone.id, t(5))).await,
        "check-in of a removed agent",
    );
    assert_not_found(
        s.change_status(
            gone.id,
            &change(AgentStatus::Active, AgentStatus::Inactive, "x"),
            t(5),
        )
        .await,
        "status change of a removed agent",
    );
    assert_not_found(
        s.record_shutdown(gone.id, "x", t(5)).await,
        "shutdown of a removed agent",
    );
    assert_not_found(
        s.approve_agent(gone.id, t(5)).await,
        "approving a removed agent",
    );
    assert_not_found(
        s.flag_credential_rejected(gone.id, t(5)).await,
        "flagging a removed agent",
    );
    assert!(
        s.agent(kept.id).await.expect("agent").is_some(),
        "the other agent is untouched"
    );
}

pub async fn list_agents_orders_and_filters(f: Fixture) {
    let s = &*f.store;
    let (late, _) = enroll_at(s, t(30)).await;
    let (early, _) = enroll_at(s, t(10)).await;
    let (middle, _) = enroll_at(s, t(20)).await;
    s.change_status(
        middle.id,
        &change(AgentStatus::Pending, AgentStatus::Active, "up"),
        t(31),
    )
    .await
    .expect("cas");

    let all: Vec<Uuid> = s
        .list_agents(None, 100)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        all,
        vec![early.id, middle.id, late.id],
        "oldest enrollment first"
    );
    let two: Vec<Uuid> = s
        .list_agents(None, 2)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(two, vec![early.id, middle.id]);
    let pending: Vec<Uuid> = s
        .list_agents(Some(AgentStatus::Pending), 100)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, vec![early.id, late.id]);
    let active: Vec<Uuid> = s
        .list_agents(Some(AgentStatus::Active), 100)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(active, vec![middle.id]);
    assert!(
        s.list_agents(Some(AgentStatus::Stopped), 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(s.list_agents(None, 0).await.expect("list").is_empty());
}

pub async fn transitions_are_newest_first(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let steps = [
        (AgentStatus::Pending, AgentStatus::Active, t(10)),
        (AgentStatus::Active, AgentStatus::Inactive, t(20)),
        // Two changes in the same millisecond keep the order they were made in.
        (AgentStatus::Inactive, AgentStatus::Active, t(30)),
        (AgentStatus::Active, AgentStatus::Inactive, t(30)),
    ];
    for (i, (from, to, at)) in steps.iter().enumerate() {
        assert!(
            s.change_status(a.id, &change(*from, *to, &format!("step {i}")), *at)
                .await
                .expect("cas")
        );
    }
    let history = s.transitions(a.id, 100).await.expect("transitions");
    let reasons: Vec<&str> = history.iter().map(|t| t.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["step 3", "step 2", "step 1", "step 0", "enrolled"]
    );
    let newest_two = s.transitions(a.id, 2).await.expect("transitions");
    assert_eq!(newest_two, history[..2].to_vec());
    assert!(
        s.transitions(Uuid::new_v4(), 10)
            .await
            .expect("transitions")
            .is_empty()
    );
}

pub async fn overdue_agents_are_active_and_past_deadline(f: Fixture) {
    let s = &*f.store;
    let activate = || Some(change(AgentStatus::Pending, AgentStatus::Active, "up"));
    // Active agents with deadlines 90, 95, 100 and 140 s after t(0).
    let mut active = Vec::new();
    for (last_seen, inactive_after) in [(0, 90), (5, 90), (10, 90), (50, 90)] {
        let (a, _) = enroll_at(s, t(-1)).await;
        let c = Checkin {
            inactive_after_secs: inactive_after,
            status_change: activate(),
            ..checkin(a.id, t(last_seen))
        };
        s.record_checkin(&c).await.expect("checkin");
        active.push(a.id);
    }
    // Past their deadline but not recorded Active: not the sweeper's business.
    let (inactive, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&Checkin {
        status_change: activate(),
        ..checkin(inactive.id, t(0))
    })
    .await
    .expect("checkin");
    s.change_status(
        inactive.id,
        &change(AgentStatus::Active, AgentStatus::Inactive, "silent"),
        t(95),
    )
    .await
    .expect("cas");
    let (pending, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&checkin(pending.id, t(0)))
        .await
        .expect("checkin");
    let (stopped, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&Checkin {
        status_change: activate(),
        ..checkin(stopped.id, t(0))
    })
    .await
    .expect("checkin");
    s.record_shutdown(stopped.id, "stop", t(1))
        .await
        .expect("shutdown");
    let (never_checked_in, _) = enroll_at(s, t(-1)).await;
    s.change_status(
        never_checked_in.id,
        &change(AgentStatus::Pending, AgentStatus::Active, "x"),
        t(0),
    )
    .await
    .expect("cas");

    let overdue = s.overdue_agents(t(100), 100).await.expect("overdue");
    let ids: Vec<Uuid> = overdue.iter().map(|o| o.id).collect();
    assert_eq!(
        ids,
        vec![active[0], active[1]],
        "deadline strictly before now, earliest first"
    );
    assert_eq!(overdue[0].last_seen, Some(t(0)));
    assert_eq!(overdue[0].deadline_at, t(90));
    assert_eq!(overdue[0].inactive_after_secs, 90);
    assert_eq!(overdue[1].deadline_at, t(95));

    let first: Vec<Uuid> = s
        .overdue_agents(t(100), 1)
        .await
        .expect("overdue")
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(first, vec![active[0]], "the limit is respected");
    assert!(
        s.overdue_agents(t(90), 100)
            .await
            .expect("overdue")
            .is_empty(),
        "a deadline equal to now is not past"
    );
    assert_eq!(
        s.overdue_agents(t(1000), 100).await.expect("overdue").len(),
        4
    );
}

/// `sweep_at`, the sweeper's index, is a lower bound of the deadline that a
/// check-in leaves alone (so it stays a HOT update on PostgreSQL). Whatever
/// state a row is in (raised by an earlier sweep, lowered by a shorter
/// threshold, unknown because a server of the previous release wrote the
/// row), the overdue are found, and only them.
pub async fn overdue_agents_are_found_however_sweep_at_was_left(f: Fixture) {
    let s = &*f.store;
    let active_at = |id, at, inactive_after_secs| Checkin {
        inactive_after_secs,
        status_change: Some(change(AgentStatus::Pending, AgentStatus::Active, "up")),
        ..checkin(id, at)
    };
    let again_at = |id, at, inactive_after_secs| Checkin {
        inactive_after_secs,
        ..checkin(id, at)
    };
    // Deadline 90.
    let (plain, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&active_at(plain.id, t(0), 90))
        .await
        .expect("checkin");
    // Deadline 1000 (so sweep_at 1000), then a shorter threshold: deadline 50.
    let (shortened, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&active_at(shortened.id, t(0), 1000))
        .await
        .expect("checkin");
    // Deadline 90, written by an older server: no sweep_at.
    let (legacy, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&active_at(legacy.id, t(0), 90))
        .await
        .expect("checkin");
    // Deadline 90, then a check-in at 80 moves it to 170: sweep_at stays at
    // 90 until a sweep finds it is not overdue.
    let (alive, _) = enroll_at(s, t(-1)).await;
    s.record_checkin(&active_at(alive.id, t(0), 90))
        .await
        .expect("checkin");

    assert!(
        s.overdue_agents(t(10), 100)
            .await
            .expect("overdue")
            .is_empty()
    );
    s.record_checkin(&again_at(shortened.id, t(20), 30))
        .await
        .expect("checkin");
    s.record_checkin(&again_at(alive.id, t(80), 90))
        .await
        .expect("checkin");

    let ids = |o: Vec<tether_store::Overdue>| o.iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.overdue_agents(t(60), 100).await.expect("overdue")),
        vec![shortened.id],
        "a shorter threshold lowers sweep_at"
    );
    // (Just before the sweep, so none raised it.) The ids are UUIDs this test generated, so interpolating them is safe.
    f.raw
        .execute(&format!(
            "UPDATE agents SET sweep_at = NULL WHERE id = '{}'",
            legacy.id
        ))
        .await
        .expect("as an older server leaves it");
    let mut expected = vec![plain.id, legacy.id];
    expected.sort();
    expected.insert(0, shortened.id);
    assert_eq!(
        ids(s.overdue_agents(t(100), 100).await.expect("overdue")),
        expected,
        "earliest deadline first, ties by id; a row without sweep_at is found"
    );
    let sweep_at = |id: Uuid| {
        format!(
            "SELECT CASE WHEN sweep_at = deadline_at THEN 'deadline' ELSE 'behind' END \
             FROM agents WHERE id = '{id}'"
        )
    };
    assert_eq!(
        f.raw.fetch_text(&sweep_at(alive.id)).await.expect("reads"),
        Some("deadline".to_owned()),
        "a sweep raises the sweep_at of an agent that is not overdue to its deadline"
    );
    assert_eq!(
        ids(s.overdue_agents(t(171), 100).await.expect("overdue")),
        {
            let mut all = vec![plain.id, legacy.id];
            all.sort();
            all.insert(0, shortened.id);
            all.push(alive.id);
            all
        }
    );
}

pub async fn counts_by_status(f: Fixture) {
    let s = &*f.store;
    let empty = s.count_by_status().await.expect("counts");
    assert_eq!(
        empty,
        AgentStatus::ALL
            .into_iter()
            .map(|st| (st, 0))
            .collect::<BTreeMap<_, _>>()
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enroll_at(s, t(i)).await.0.id);
    }
    s.change_status(
        ids[0],
        &change(AgentStatus::Pending, AgentStatus::Active, "up"),
        t(10),
    )
    .await
    .expect("cas");
    s.change_status(
        ids[1],
        &change(AgentStatus::Pending, AgentStatus::Active, "up"),
        t(10),
    )
    .await
    .expect("cas");
    s.record_shutdown(ids[2], "stop", t(10))
        .await
        .expect("shutdown");
    s.remove_agent(ids[3], t(10)).await.expect("remove");
    let counts = s.count_by_status().await.expect("counts");
    let expected = BTreeMap::from([
        (AgentStatus::Pending, 1),
        (AgentStatus::Active, 2),
        (AgentStatus::Inactive, 0),
        (AgentStatus::Stopped, 1),
    ]);
    assert_eq!(counts, expected);
}

/// An edit based on an older revision is refused and changes nothing; one
/// based on the stored revision is saved; of two concurrent edits based on the
/// same revision exactly one wins.
pub async fn policy_update_is_compare_and_set(f: Fixture) {
    let s = &*f.store;
    let first = s
        .upsert_policy("edge", &policy_settings(30, 10, &[]), None, t(1))
        .await
        .expect("create");
    assert_eq!(first.revision, 1);
    let second = s
        .upsert_policy("edge", &policy_settings(60, 10, &[]), Some(1), t(2))
        .await
        .expect("based on the stored revision");
    assert_eq!((second.revision, second.checkin_interval_secs), (2, 60));
    match s
        .upsert_policy("edge", &policy_settings(90, 10, &[]), Some(1), t(3))
        .await
    {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("revision 2"), "{message}")
        }
        other => panic!("a stale edit must be a conflict, got {other:?}"),
    }
    let stored = s.policy("edge").await.expect("reads").expect("exists");
    assert_eq!(
        (stored.revision, stored.checkin_interval_secs),
        (2, 60),
        "the stale edit changed nothing"
    );

    let (slow, slower) = (policy_settings(120, 10, &[]), policy_settings(150, 10, &[]));
    let (a, b) = tokio::join!(
        s.upsert_policy("edge", &slow, Some(2), t(4)),
        s.upsert_policy("edge", &slower, Some(2), t(4)),
    );
    let won = usize::from(a.is_ok()) + usize::from(b.is_ok());
    assert_eq!(won, 1, "exactly one concurrent edit wins: {a:?} {b:?}");
    assert!(
        matches!(a, Err(StoreError::Conflict(_))) || matches!(b, Err(StoreError::Conflict(_))),
        "the other is a conflict: {a:?} {b:?}"
    );
    let stored = s.policy("edge").await.expect("reads").expect("exists");
    assert_eq!(stored.revision, 3);
}

pub async fn policy_max_concurrent_tasks_is_kept_unless_given(f: Fixture) {
    let s = &*f.store;
    let default = s
        .policy("default")
        .await
        .expect("policy")
        .expect("seeded by migration");
    assert_eq!(default.max_concurrent_tasks, 4, "the seeded default");
    let created = s
        .upsert_policy("scanners", &policy_settings(60, 5, &[]), None, t(1))
        .await
        .expect("create");
    assert_eq!(created.max_concurrent_tasks, 4, "a new policy without it");
    let two = s
        .upsert_policy(
            "scanners",
            &PolicySettings {
                max_concurrent_tasks: Some(2),
                ..policy_settings(60, 5, &[])
            },
            None,
            t(2),
        )
        .await
        .expect("set");
    assert_eq!((two.revision, two.max_concurrent_tasks), (2, 2));
    // An update that does not name it (an older admin client) keeps it.
    let kept = s
        .upsert_policy("scanners", &policy_settings(120, 5, &[]), None, t(3))
        .await
        .expect("update");
    assert_eq!(
        (kept.checkin_interval_secs, kept.max_concurrent_tasks),
        (120, 2)
    );
    assert_eq!(
        s.policy("scanners")
            .await
            .expect("reads")
            .map(|p| p.max_concurrent_tasks),
        Some(2)
    );
    let created = s
        .upsert_policy(
            "wide",
            &PolicySettings {
                max_concurrent_tasks: Some(32),
                ..policy_settings(60, 5, &[])
            },
            None,
            t(4),
        )
        .await
        .expect("create with it");
    assert_eq!(created.max_concurrent_tasks, 32);
}

pub async fn policies_are_seeded_and_revised(f: Fixture) {
    let s = &*f.store;
    let default = s
        .policy("default")
        .await
        .expect("policy")
        .expect("seeded by migration");
    assert_eq!(
        (
            default.revision,
            default.checkin_interval_secs,
            default.jitter_percent
        ),
        (1, 30, 10)
    );
    assert!(
        default.targets.is_empty(),
        "the seeded policy has no targets"
    );
    assert_eq!(s.policy("absent").await.expect("policy"), None);

    let targets = vec![
        String::from("ldap.corp.example:389"),
        String::from("10.0.0.7:22"),
    ];
    let created = s
        .upsert_policy(
            "night-shift",
            &policy_settings(300, 5, &targets),
            None,
            t(1),
        )
        .await
        .expect("create");
    assert_eq!(created.name, "night-shift");
    assert_eq!(
        (
            created.revision,
            created.checkin_interval_secs,
            created.jitter_percent
        ),
        (1, 300, 5)
    );
    assert_eq!(created.updated_at, t(1));
    assert_eq!(created.targets, targets, "targets round-trip in order");
    assert_eq!(
        s.policy("night-shift")
            .await
            .expect("policy")
            .map(|p| p.targets),
        Some(targets.clone())
    );
    let updated = s
        .upsert_policy("night-shift", &policy_settings(600, 0, &[]), None, t(2))
        .await
        .expect("update");
    assert_eq!(
        (
            updated.revision,
            updated.checkin_interval_secs,
            updated.jitter_percent
        ),
        (2, 600, 0)
    );
    assert_eq!(updated.updated_at, t(2));
    assert!(updated.targets.is_empty(), "an update replaces the targets");
    assert_eq!(
        s.policy("night-shift").await.expect("policy"),
        Some(updated.clone())
    );
    let third = s
        .upsert_policy(
            "night-shift",
            &policy_settings(600, 0, &targets),
            None,
            t(3),
        )
        .await
        .expect("update");
    assert_eq!(third.revision, 3, "every upsert is a new revision");
    assert_eq!(third.targets, targets);

    let revised_default = s
        .upsert_policy("default", &policy_settings(60, 20, &[]), None, t(4))
        .await
        .expect("update default");
    assert_eq!(revised_default.revision, 2);
    let names: Vec<String> = s
        .list_policies()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["default", "night-shift"]);

    // New agents take their interval from their policy.
    let mut token = new_token(None);
    token.policy = String::from("night-shift");
    s.insert_token(&token).await.expect("insert");
    let a = s.enroll(&enrollment(&token, t(5))).await.expect("enroll");
    assert_eq!(a.checkin_interval_secs, 600);
}

pub async fn json_columns_round_trip(f: Fixture) {
    let s = &*f.store;
    let token = insert_token(s, None).await;
    let mut e = enrollment(&token, t(0));
    e.facts = HostFacts {
        hostname: String::from("hôte-東京-🚀"),
        os: String::from("windows server 2022 \"datacenter\""),
        internal_ips: Vec::new(),
        uptime_secs: u64::MAX,
        installed_at: None,
    };
    let a = s.enroll(&e).await.expect("enroll");
    assert_eq!(a.facts, e.facts);

    let mut c = checkin(a.id, t(10));
    c.facts = facts("host-json");
    c.facts.installed_at = Some(t(-5) + Duration::nanoseconds(987_654_321));
    c.definitions = (0..20)
        .map(|i| (format!("channel-{i}"), format!("v{i}\u{2028}\"{{}}")))
        .collect();
    c.last_errors = ErrorCode::ALL
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, code)| {
            let at = t(i64::try_from(i).expect("small") - 100);
            (
                format!("subsystem-{i}"),
                LastError {
                    code: *code,
                    message: format!("{}: \\ \n", code.problem()),
                    at,
                },
            )
        })
        .collect();
    let stored = s.record_checkin(&c).await.expect("checkin");
    assert_eq!(
        stored.facts, c.facts,
        "installed_at keeps its full precision inside JSON"
    );
    assert_eq!(stored.definitions, c.definitions);
    assert_eq!(stored.last_errors, c.last_errors);
    assert_eq!(agent(s, a.id).await, stored);
}

pub async fn sql_metacharacters_round_trip(f: Fixture) {
    let s = &*f.store;
    let hostile = [
        "'; DROP TABLE agents; --",
        "Robert'); DROP TABLE tokens;--",
        "\" OR \"1\"=\"1",
        "back\\slash and 'single' quotes",
        "semi;colon; $1 $2 ?1 :name @p",
        "%_ LIKE wildcards *",
        "unicode: 東京 — Ünïcödé — 🚀 — \u{202e}rtl",
        "newline\nand\ttab",
        "",
    ];
    s.upsert_policy(hostile[0], &policy_settings(42, 7, &[]), None, t(0))
        .await
        .expect("policy with a hostile name");
    assert_eq!(
        s.policy(hostile[0])
            .await
            .expect("policy")
            .expect("exists")
            .checkin_interval_secs,
        42
    );
    for (i, text) in hostile.iter().enumerate() {
        let text = (*text).to_owned();
        let mut token = new_token(None);
        token.group = text.clone();
        token.policy = text.clone();
        s.insert_token(&token).await.expect("insert");
        assert_eq!(
            s.token(token.id)
                .await
                .expect("token")
                .expect("exists")
                .group,
            text
        );

        let mut e = enrollment(&token, t(i64::try_from(i).expect("small")));
        e.name = text.clone();
        e.version = text.clone();
        e.facts.hostname = text.clone();
        e.facts.os = text.clone();
        e.facts.internal_ips = vec![text.clone()];
        e.external_ip = Some(text.clone());
        e.reason = text.clone();
        let a = s.enroll(&e).await.expect("enroll");
        assert_eq!(
            (a.name.as_str(), a.group.as_str(), a.policy.as_str()),
            (text.as_str(), text.as_str(), text.as_str())
        );
        assert_eq!(a.facts, e.facts);

        let mut c = checkin(a.id, t(100));
        c.proxy = Some(text.clone());
        c.external_ip = Some(text.clone());
        c.definitions = BTreeMap::from([(text.clone(), text.clone())]);
        c.last_errors = BTreeMap::from([(
            text.clone(),
            LastError {
                code: ErrorCode::Internal,
                message: text.clone(),
                at: t(99),
            },
        )]);
        c.status_change = Some(change(AgentStatus::Pending, AgentStatus::Active, &text));
        let stored = s.record_checkin(&c).await.expect("checkin");
        assert_eq!(stored.proxy.as_deref(), Some(text.as_str()));
        assert_eq!(stored.definitions, c.definitions);
        assert_eq!(stored.last_errors, c.last_errors);
        assert_eq!(agent(s, a.id).await, stored);
        let history = s.transitions(a.id, 10).await.expect("transitions");
        assert_eq!(history[0].reason, text);
        assert_eq!(history[1].reason, text);
    }
    // Every table is still there and whole.
    assert_eq!(
        s.list_agents(None, 100).await.expect("list").len(),
        hostile.len()
    );
    assert_eq!(s.list_tokens().await.expect("tokens").len(), hostile.len());
    assert_eq!(s.list_policies().await.expect("policies").len(), 2);
}

pub async fn corrupt_rows_are_reported_not_overwritten(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    let (b, _) = enroll_at(s, t(1)).await;
    let id = a.id.to_string();
    // The ids are UUIDs this test generated, so interpolating them is safe.
    f.raw
        .execute(&format!(
            "UPDATE agents SET facts = '{{\"hostname\": 12' WHERE id = '{id}'"
        ))
        .await
        .expect("corrupt");

    assert_corrupt(s.agent(a.id).await, &["agents", "facts", &id], "agent()");
    assert_corrupt(
        s.list_agents(None, 100).await,
        &["agents", "facts", &id],
        "list_agents()",
    );
    assert!(
        s.agent(b.id).await.expect("agent").is_some(),
        "other rows still decode"
    );
    let kept = f
        .raw
        .fetch_text(&format!("SELECT facts FROM agents WHERE id = '{id}'"))
        .await
        .expect("raw read");
    assert_eq!(
        kept.as_deref(),
        Some("{\"hostname\": 12"),
        "the corrupt value is left for inspection"
    );

    // An unknown status: a check-in that would change it is rolled back whole.
    f.raw
        .execute(&format!(
            "UPDATE agents SET status = 'zombie' WHERE id = '{}'",
            b.id
        ))
        .await
        .expect("corrupt");
    let mut c = checkin(b.id, t(50));
    c.status_change = Some(change(AgentStatus::Pending, AgentStatus::Active, "x"));
    assert_corrupt(
        s.record_checkin(&c).await,
        &["agents", "status", "zombie"],
        "record_checkin()",
    );
    let last_seen = f
        .raw
        .fetch_text(&format!(
            "SELECT CAST(last_seen AS TEXT) FROM agents WHERE id = '{}'",
            b.id
        ))
        .await
        .expect("raw read");
    assert_eq!(last_seen, None, "the failed check-in wrote nothing");
    assert_corrupt(
        s.record_shutdown(b.id, "x", t(51)).await,
        &["agents", "status"],
        "record_shutdown()",
    );
    assert_corrupt(
        s.count_by_status().await,
        &["status", "zombie"],
        "count_by_status()",
    );
    let status = f
        .raw
        .fetch_text(&format!("SELECT status FROM agents WHERE id = '{}'", b.id))
        .await
        .expect("raw");
    assert_eq!(status.as_deref(), Some("zombie"));

    let token = insert_token(s, None).await;
    f.raw
        .execute(&format!(
            "UPDATE tokens SET kind = 'robot' WHERE id = '{}'",
            token.id
        ))
        .await
        .expect("corrupt");
    assert_corrupt(
        s.token(token.id).await,
        &["tokens", "kind", &token.id.to_string()],
        "token()",
    );
    assert_corrupt(s.list_tokens().await, &["tokens", "kind"], "list_tokens()");

    f.raw
        .execute("UPDATE policies SET jitter_percent = 999 WHERE name = 'default'")
        .await
        .expect("corrupt");
    assert_corrupt(
        s.policy("default").await,
        &["policies", "jitter_percent", "default"],
        "policy()",
    );

    f.raw
        .execute(&format!(
            "UPDATE transitions SET to_status = 'lost' WHERE agent_id = '{id}'"
        ))
        .await
        .expect("corrupt");
    assert_corrupt(
        s.transitions(a.id, 10).await,
        &["transitions", "to_status", &id],
        "transitions()",
    );
}
