//! A store that fails: the real SQLite store behind a switch that makes
//! every call fail as an unreachable database would. The server must answer
//! 503 with a code and `Retry-After`, never a bare 500, and recover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tether_store::*;
use tether_wire::{AgentKind, AgentStatus, ErrorCode, Health, ManualClock, Transition};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{self, Client, token_request};

pub struct Switchable {
    pub inner: Arc<dyn Store>,
    pub down: AtomicBool,
    /// Every call waits forever, as on a database that stopped answering.
    pub hang: AtomicBool,
    /// Only writes to the audit log fail.
    pub audit_down: AtomicBool,
}

impl Switchable {
    pub fn new(inner: Arc<dyn Store>) -> Switchable {
        Switchable {
            inner,
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            audit_down: AtomicBool::new(false),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "connection refused (db.internal:5432)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// The task queue behind the same switch.
#[async_trait]
impl TaskStore for Switchable {
    async fn insert_task(&self, task: &TaskSnapshot) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_task(task).await
    }
    async fn record_doctor(
        &self,
        agent_id: Uuid,
        doctor: &tether_wire::DoctorSummary,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_doctor(agent_id, doctor).await
    }
    async fn task(&self, id: Uuid) -> Result<Option<TaskSnapshot>, StoreError> {
        self.check().await?;
        self.inner.task(id).await
    }
    async fn count_open_tasks(&self) -> Result<Vec<(tether_wire::TaskState, u64)>, StoreError> {
        self.check().await?;
        self.inner.count_open_tasks().await
    }
    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError> {
        self.check().await?;
        self.inner.list_tasks(filter, limit).await
    }
    async fn update_task(&self, task: &TaskSnapshot) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.update_task(task).await
    }
    async fn lease_tasks(&self, req: &LeaseRequest) -> Result<Vec<TaskSnapshot>, StoreError> {
        self.check().await?;
        self.inner.lease_tasks(req).await
    }
    async fn expired_leases(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError> {
        self.check().await?;
        self.inner.expired_leases(before, limit).await
    }
    async fn tasks_past_deadline(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError> {
        self.check().await?;
        self.inner.tasks_past_deadline(now, limit).await
    }
    async fn insert_result(
        &self,
        task_id: Uuid,
        epoch: u64,
        chunk: u32,
        items: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner
            .insert_result(task_id, epoch, chunk, items, at)
            .await
    }
    async fn results(
        &self,
        task_id: Uuid,
        epoch: u64,
        limit: u32,
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.check().await?;
        self.inner.results(task_id, epoch, limit).await
    }
    async fn insert_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_schedule(schedule).await
    }
    async fn schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        self.check().await?;
        self.inner.schedule(id).await
    }
    async fn list_schedules(&self, limit: u32) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.check().await?;
        self.inner.list_schedules(limit).await
    }
    async fn due_schedules(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.check().await?;
        self.inner.due_schedules(now, limit).await
    }
    async fn fire_schedule(&self, run: &ScheduleRun) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.fire_schedule(run).await
    }
    async fn delete_schedule(&self, id: Uuid) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.delete_schedule(id).await
    }
    async fn prune_finished_tasks(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.prune_finished_tasks(before, limit).await
    }
    async fn upsert_site(
        &self,
        name: &str,
        tz: &str,
        at: OffsetDateTime,
    ) -> Result<tether_wire::Site, StoreError> {
        self.check().await?;
        self.inner.upsert_site(name, tz, at).await
    }
    async fn list_sites(&self) -> Result<Vec<tether_wire::Site>, StoreError> {
        self.check().await?;
        self.inner.list_sites().await
    }
    async fn set_agent_site(&self, agent_id: Uuid, site: Option<&str>) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.set_agent_site(agent_id, site).await
    }
    async fn agent_site(&self, agent_id: Uuid) -> Result<Option<String>, StoreError> {
        self.check().await?;
        self.inner.agent_site(agent_id).await
    }
    async fn set_token_site(&self, token_id: Uuid, site: Option<&str>) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.set_token_site(token_id, site).await
    }
    async fn token_site(&self, token_id: Uuid) -> Result<Option<String>, StoreError> {
        self.check().await?;
        self.inner.token_site(token_id).await
    }
}

/// The inventory behind the same switch.
#[async_trait]
impl CertStore for Switchable {
    async fn record_sightings(
        &self,
        scan: ScanId,
        sightings: &[Sighting],
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_sightings(scan, sightings).await
    }
    async fn complete_scan(&self, scan: ScanId) -> Result<ScanSettled, StoreError> {
        self.check().await?;
        self.inner.complete_scan(scan).await
    }
    async fn abandon_scan(&self, task_id: Uuid) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.abandon_scan(task_id).await
    }
    async fn list_certs(
        &self,
        filter: &CertFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<CertRecord>, StoreError> {
        self.check().await?;
        self.inner.list_certs(filter, after, limit).await
    }
    async fn cert(&self, fingerprint: &str) -> Result<Option<CertRecord>, StoreError> {
        self.check().await?;
        self.inner.cert(fingerprint).await
    }
    async fn cert_locations(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> Result<Vec<tether_wire::CertLocation>, StoreError> {
        self.check().await?;
        self.inner.cert_locations(fingerprint, limit).await
    }
    async fn record_issued(
        &self,
        cert: &tether_wire::IssuedCert,
        pem: &str,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_issued(cert, pem).await
    }
    async fn issued_cert(
        &self,
        fingerprint: &str,
    ) -> Result<Option<tether_wire::IssuedCert>, StoreError> {
        self.check().await?;
        self.inner.issued_cert(fingerprint).await
    }
    async fn issued_cert_pem(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        self.check().await?;
        self.inner.issued_cert_pem(fingerprint).await
    }
    async fn set_renewal_window(
        &self,
        fingerprint: &str,
        window: &tether_wire::RenewalWindowSeen,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.set_renewal_window(fingerprint, window).await
    }
    async fn record_deployment(
        &self,
        deployment: &tether_wire::DeploymentRecord,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_deployment(deployment).await
    }
    async fn deployments(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> Result<Vec<tether_wire::DeploymentRecord>, StoreError> {
        self.check().await?;
        self.inner.deployments(fingerprint, limit).await
    }
}

/// The singleton jobs' leases behind the same switch.
#[async_trait]
impl LeaseStore for Switchable {
    async fn claim_job(
        &self,
        job: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<JobLease>, StoreError> {
        self.check().await?;
        self.inner.claim_job(job, holder, now, until).await
    }
    async fn release_job(
        &self,
        job: &str,
        holder: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.release_job(job, holder, now).await
    }
    async fn job_leases(&self) -> Result<Vec<JobLease>, StoreError> {
        self.check().await?;
        self.inner.job_leases().await
    }
}

/// Renewals behind the same switch.
#[async_trait]
impl tether_store::RenewalStore for Switchable {
    async fn renewal_policy(&self, scope: &str) -> Result<Option<String>, StoreError> {
        self.check().await?;
        self.inner.renewal_policy(scope).await
    }
    async fn set_renewal_policy(
        &self,
        scope: &str,
        policy: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.set_renewal_policy(scope, policy, at).await
    }
    async fn record_renewal_location(
        &self,
        location: &tether_store::RenewalLocation,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_renewal_location(location).await
    }
    async fn renewal_locations(
        &self,
        fingerprint: &str,
    ) -> Result<Vec<tether_store::RenewalLocation>, StoreError> {
        self.check().await?;
        self.inner.renewal_locations(fingerprint).await
    }
    async fn renewal_candidates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<tether_store::RenewalCandidate>, StoreError> {
        self.check().await?;
        self.inner.renewal_candidates(after, limit).await
    }
    async fn insert_renewal(&self, renewal: &tether_store::Renewal) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.insert_renewal(renewal).await
    }
    async fn update_renewal(&self, renewal: &tether_store::Renewal) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.update_renewal(renewal).await
    }
    async fn renewal(&self, id: Uuid) -> Result<Option<tether_store::Renewal>, StoreError> {
        self.check().await?;
        self.inner.renewal(id).await
    }
    async fn due_renewals(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<tether_store::Renewal>, StoreError> {
        self.check().await?;
        self.inner.due_renewals(now, limit).await
    }
    async fn list_renewals(&self, limit: u32) -> Result<Vec<tether_store::Renewal>, StoreError> {
        self.check().await?;
        self.inner.list_renewals(limit).await
    }
    async fn renewals_of(
        &self,
        fingerprint: &str,
    ) -> Result<Vec<tether_store::Renewal>, StoreError> {
        self.check().await?;
        self.inner.renewals_of(fingerprint).await
    }
    async fn renewal_of_task(
        &self,
        task_id: Uuid,
    ) -> Result<Option<tether_store::Renewal>, StoreError> {
        self.check().await?;
        self.inner.renewal_of_task(task_id).await
    }
    async fn renewal_task_issued(&self, task_id: Uuid) -> Result<Option<String>, StoreError> {
        self.check().await?;
        self.inner.renewal_task_issued(task_id).await
    }
    async fn claim_renewal_issue(
        &self,
        task_id: Uuid,
        request: &str,
    ) -> Result<tether_store::IssueClaim, StoreError> {
        self.check().await?;
        self.inner.claim_renewal_issue(task_id, request).await
    }
    async fn complete_renewal_issue(
        &self,
        task_id: Uuid,
        fingerprint: &str,
        cert_pem: &str,
        chain_pem: &str,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner
            .complete_renewal_issue(task_id, fingerprint, cert_pem, chain_pem)
            .await
    }
    async fn release_renewal_issue(&self, task_id: Uuid) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.release_renewal_issue(task_id).await
    }
}

/// The built-in CA's revocations behind the same switch.
#[async_trait]
impl RevocationStore for Switchable {
    async fn revoke_issued(
        &self,
        fingerprint: &str,
        reason: tether_wire::RevocationReason,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<Revoked, StoreError> {
        self.check().await?;
        self.inner.revoke_issued(fingerprint, reason, at, by).await
    }
    async fn revocation(
        &self,
        fingerprint: &str,
    ) -> Result<Option<tether_wire::Revocation>, StoreError> {
        self.check().await?;
        self.inner.revocation(fingerprint).await
    }
    async fn serial_status(&self, serial: &str) -> Result<Option<SerialStatus>, StoreError> {
        self.check().await?;
        self.inner.serial_status(serial).await
    }
    async fn unexpired_revocations(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<tether_wire::Revocation>, StoreError> {
        self.check().await?;
        self.inner.unexpired_revocations(now).await
    }
}

/// The ACME issuers' registry behind the same switch.
#[async_trait]
impl tether_store::AcmeIssuerStore for Switchable {
    async fn insert_acme_issuer(
        &self,
        issuer: &tether_store::AcmeIssuer,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_acme_issuer(issuer).await
    }
    async fn acme_issuer(
        &self,
        name: &str,
    ) -> Result<Option<tether_store::AcmeIssuer>, StoreError> {
        self.check().await?;
        self.inner.acme_issuer(name).await
    }
    async fn acme_issuers(&self) -> Result<Vec<tether_store::AcmeIssuer>, StoreError> {
        self.check().await?;
        self.inner.acme_issuers().await
    }
    async fn remove_acme_issuer(&self, name: &str) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.remove_acme_issuer(name).await
    }
}

/// One server: the defaults (no wake-ups between servers).
impl tether_store::TaskWakeups for Switchable {}

/// Agent upgrades behind the same switch.
#[async_trait]
impl tether_store::UpgradeStore for Switchable {
    async fn record_agent_upgrade(
        &self,
        agent: uuid::Uuid,
        report: &tether_wire::UpgradeReport,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_agent_upgrade(agent, report, now).await
    }
    async fn agent_upgrade(
        &self,
        agent: uuid::Uuid,
    ) -> Result<Option<tether_wire::UpgradeReport>, StoreError> {
        self.check().await?;
        self.inner.agent_upgrade(agent).await
    }
    async fn agent_upgrades(
        &self,
    ) -> Result<Vec<(uuid::Uuid, tether_wire::UpgradeReport)>, StoreError> {
        self.check().await?;
        self.inner.agent_upgrades().await
    }
}

/// The audit log behind the same switch.
#[async_trait]
impl tether_store::AuditStore for Switchable {
    async fn record_audit(&self, entry: &tether_wire::AuditEntry) -> Result<(), StoreError> {
        self.check().await?;
        if self.audit_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("audit table unreachable".into()));
        }
        self.inner.record_audit(entry).await
    }
    async fn list_audit(
        &self,
        filter: &tether_store::AuditFilter,
        before: Option<&tether_store::Cursor>,
        limit: u32,
    ) -> Result<Vec<tether_wire::AuditEntry>, StoreError> {
        self.check().await?;
        self.inner.list_audit(filter, before, limit).await
    }
    async fn prune_audit(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.prune_audit(before, limit).await
    }
}

#[async_trait]
impl tether_store::RolloutStore for Switchable {
    async fn put_rollout(&self, r: &tether_store::RolloutRecord) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.put_rollout(r).await
    }
    async fn rollouts(&self) -> Result<Vec<tether_store::RolloutRecord>, StoreError> {
        self.check().await?;
        self.inner.rollouts().await
    }
    async fn change_rollout(
        &self,
        group: &str,
        change: &tether_store::RolloutChange,
        at: OffsetDateTime,
    ) -> Result<tether_store::RolloutRecord, StoreError> {
        self.check().await?;
        self.inner.change_rollout(group, change, at).await
    }
    async fn delete_rollout(&self, group: &str) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.delete_rollout(group).await
    }
    async fn pause_rollout_on_rollback(
        &self,
        group: &str,
        version: &str,
        reason: &str,
        reported_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner
            .pause_rollout_on_rollback(group, version, reason, reported_at, at)
            .await
    }
    async fn rollout_progress(
        &self,
        group: &str,
        version: &str,
    ) -> Result<tether_wire::RolloutProgress, StoreError> {
        self.check().await?;
        self.inner.rollout_progress(group, version).await
    }
    async fn agent_upgrades_of(
        &self,
        agents: &[uuid::Uuid],
    ) -> Result<Vec<(uuid::Uuid, tether_wire::UpgradeReport)>, StoreError> {
        self.check().await?;
        self.inner.agent_upgrades_of(agents).await
    }
}

#[async_trait]
impl Store for Switchable {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.ping().await
    }
    async fn insert_admin_credential(
        &self,
        hash: &SecretHash,
        label: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_admin_credential(hash, label, at).await
    }
    async fn admin_credential_valid(&self, hash: &SecretHash) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.admin_credential_valid(hash).await
    }
    async fn admin_credential_count(&self) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.admin_credential_count().await
    }
    async fn insert_token(&self, token: &NewToken) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_token(token).await
    }
    async fn token_by_hash(&self, hash: &SecretHash) -> Result<Option<TokenRecord>, StoreError> {
        self.check().await?;
        self.inner.token_by_hash(hash).await
    }
    async fn token(&self, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        self.check().await?;
        self.inner.token(id).await
    }
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.check().await?;
        self.inner.list_tokens().await
    }
    async fn revoke_token(&self, id: Uuid, at: OffsetDateTime) -> Result<TokenRecord, StoreError> {
        self.check().await?;
        self.inner.revoke_token(id, at).await
    }
    async fn enroll(&self, enrollment: &Enrollment) -> Result<AgentRecord, StoreError> {
        self.check().await?;
        self.inner.enroll(enrollment).await
    }
    async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>, StoreError> {
        self.check().await?;
        self.inner.agent(id).await
    }
    async fn agent_by_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.check().await?;
        self.inner.agent_by_credential(hash).await
    }
    async fn set_pending_credential(&self, id: Uuid, hash: &SecretHash) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.set_pending_credential(id, hash).await
    }
    async fn promote_pending_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.check().await?;
        self.inner.promote_pending_credential(hash).await
    }
    async fn agent_by_previous_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<Uuid>, StoreError> {
        self.check().await?;
        self.inner.agent_by_previous_credential(hash).await
    }
    async fn flag_credential_rejected(
        &self,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.flag_credential_rejected(id, at).await
    }
    async fn list_agents(
        &self,
        status: Option<AgentStatus>,
        limit: u32,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.check().await?;
        self.inner.list_agents(status, limit).await
    }
    async fn record_checkin(&self, checkin: &Checkin) -> Result<AgentRecord, StoreError> {
        self.check().await?;
        self.inner.record_checkin(checkin).await
    }
    async fn change_status(
        &self,
        id: Uuid,
        change: &StatusChange,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.change_status(id, change, at).await
    }
    async fn record_shutdown(
        &self,
        id: Uuid,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.record_shutdown(id, reason, at).await
    }
    async fn approve_agent(&self, id: Uuid, at: OffsetDateTime) -> Result<AgentRecord, StoreError> {
        self.check().await?;
        self.inner.approve_agent(id, at).await
    }
    async fn remove_agent(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.remove_agent(id, at).await
    }
    async fn transitions(&self, id: Uuid, limit: u32) -> Result<Vec<Transition>, StoreError> {
        self.check().await?;
        self.inner.transitions(id, limit).await
    }
    async fn overdue_agents(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Overdue>, StoreError> {
        self.check().await?;
        self.inner.overdue_agents(now, limit).await
    }
    async fn count_by_status(&self) -> Result<BTreeMap<AgentStatus, u64>, StoreError> {
        self.check().await?;
        self.inner.count_by_status().await
    }
    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.check().await?;
        self.inner.policy(name).await
    }
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.check().await?;
        self.inner.list_policies().await
    }
    async fn upsert_policy(
        &self,
        name: &str,
        settings: &tether_store::PolicySettings,
        if_revision: Option<i64>,
        at: OffsetDateTime,
    ) -> Result<PolicyRecord, StoreError> {
        self.check().await?;
        self.inner
            .upsert_policy(name, settings, if_revision, at)
            .await
    }
    async fn insert_defs_version(
        &self,
        version: &tether_wire::DefsVersion,
    ) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.insert_defs_version(version).await
    }
    async fn list_defs_versions(
        &self,
        channel: Option<&str>,
    ) -> Result<Vec<tether_wire::DefsVersion>, StoreError> {
        self.check().await?;
        self.inner.list_defs_versions(channel).await
    }
    async fn queue_action(
        &self,
        id: Uuid,
        agent_id: Uuid,
        kind: &tether_wire::ActionKind,
        at: OffsetDateTime,
    ) -> Result<tether_wire::ActionInfo, StoreError> {
        self.check().await?;
        self.inner.queue_action(id, agent_id, kind, at).await
    }
    async fn take_actions(
        &self,
        agent_id: Uuid,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<tether_wire::ActionInfo>, StoreError> {
        self.check().await?;
        self.inner.take_actions(agent_id, at, limit).await
    }
    async fn complete_action(
        &self,
        agent_id: Uuid,
        action_id: Uuid,
        result: &tether_wire::ActionResult,
        at: OffsetDateTime,
    ) -> Result<tether_wire::ActionInfo, StoreError> {
        self.check().await?;
        self.inner
            .complete_action(agent_id, action_id, result, at)
            .await
    }
    async fn list_actions(
        &self,
        agent_id: Uuid,
        limit: u32,
    ) -> Result<Vec<tether_wire::ActionInfo>, StoreError> {
        self.check().await?;
        self.inner.list_actions(agent_id, limit).await
    }
    async fn insert_bundle(
        &self,
        bundle: &NewBundle,
        keep: u32,
    ) -> Result<tether_wire::BundleInfo, StoreError> {
        self.check().await?;
        self.inner.insert_bundle(bundle, keep).await
    }
    async fn list_bundles(
        &self,
        agent_id: Uuid,
        limit: u32,
    ) -> Result<Vec<tether_wire::BundleInfo>, StoreError> {
        self.check().await?;
        self.inner.list_bundles(agent_id, limit).await
    }
    async fn bundle(
        &self,
        id: Uuid,
    ) -> Result<Option<(tether_wire::BundleInfo, Vec<u8>)>, StoreError> {
        self.check().await?;
        self.inner.bundle(id).await
    }
    async fn last_doctor(
        &self,
        agent_id: Uuid,
    ) -> Result<Option<tether_wire::DoctorSummary>, StoreError> {
        self.check().await?;
        self.inner.last_doctor(agent_id).await
    }
    async fn create_admin_credential(
        &self,
        credential: &NewAdminCredential,
    ) -> Result<AdminCredentialRecord, StoreError> {
        self.check().await?;
        self.inner.create_admin_credential(credential).await
    }
    async fn admin_credential_by_hash(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<AdminCredentialRecord>, StoreError> {
        self.check().await?;
        self.inner.admin_credential_by_hash(hash).await
    }
    async fn list_admin_credentials(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<AdminCredentialRecord>, StoreError> {
        self.check().await?;
        self.inner.list_admin_credentials(after, limit).await
    }
    async fn revoke_admin_credential(
        &self,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<AdminCredentialRecord, StoreError> {
        self.check().await?;
        self.inner.revoke_admin_credential(id, at).await
    }
    async fn replace_admin_credential(
        &self,
        replaced: &Replaced,
        new: &NewAdminCredential,
        at: OffsetDateTime,
    ) -> Result<(AdminCredentialRecord, u64), StoreError> {
        self.check().await?;
        self.inner.replace_admin_credential(replaced, new, at).await
    }
    async fn list_tokens_page(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.check().await?;
        self.inner.list_tokens_page(after, limit).await
    }
    async fn list_agents_page(
        &self,
        filter: &AgentFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.check().await?;
        self.inner.list_agents_page(filter, after, limit).await
    }
    async fn heartbeat(
        &self,
        instance: &str,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.check().await?;
        self.inner.heartbeat(instance, at).await
    }
    async fn record_outage(
        &self,
        outage: &NewOutage,
    ) -> Result<tether_wire::ControlPlaneOutage, StoreError> {
        self.check().await?;
        self.inner.record_outage(outage).await
    }
    async fn outages(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<tether_wire::ControlPlaneOutage>, StoreError> {
        self.check().await?;
        self.inner.outages(since, limit).await
    }
    async fn prune_transitions(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.prune_transitions(before, limit).await
    }
    async fn prune_completed_actions(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.prune_completed_actions(before, limit).await
    }
    async fn prune_outages(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.prune_outages(before, limit).await
    }
    async fn bundle_info(&self, id: Uuid) -> Result<Option<tether_wire::BundleInfo>, StoreError> {
        self.check().await?;
        self.inner.bundle_info(id).await
    }
}

/// A failure to write the audit entry is logged and counted; the admin's
/// request is answered as if nothing happened.
#[tokio::test]
async fn an_audit_write_failure_never_fails_the_admin_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = tether_server::default_database_url(dir.path());
    let inner = tether_store_sql::connect(&url).await.expect("sqlite opens");
    let store = Arc::new(Switchable::new(inner));
    let clock = ManualClock::new(support::epoch());
    let server = tether_server::start_with_store(
        support::config(dir.path()),
        store.clone(),
        Arc::new(clock),
    )
    .await
    .expect("starts");
    let admin = std::fs::read_to_string(&server.admin_token_path)
        .expect("token")
        .trim()
        .to_owned();
    let client = Client::new(&server);
    store.audit_down.store(true, Ordering::SeqCst);
    let _: tether_wire::CreatedToken = client
        .post(
            "/v1/admin/tokens",
            Some(&admin),
            &token_request(AgentKind::Connector),
        )
        .await
        .ok();
    assert_eq!(server.ctx().metrics.audit_failures(), 1);
    let log: Vec<tether_wire::AuditEntry> = client.get("/v1/admin/audit", Some(&admin)).await.ok();
    assert!(log.is_empty(), "{log:#?}");
    // Once the store takes writes again, actions are recorded again.
    store.audit_down.store(false, Ordering::SeqCst);
    let _: tether_wire::CreatedToken = client
        .post(
            "/v1/admin/tokens",
            Some(&admin),
            &token_request(AgentKind::Connector),
        )
        .await
        .ok();
    let log: Vec<tether_wire::AuditEntry> = client.get("/v1/admin/audit", Some(&admin)).await.ok();
    assert_eq!(log.len(), 1);
    assert_eq!(server.ctx().metrics.audit_failures(), 1);
    let metrics = client.get("/metrics", Some(&admin)).await;
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("tether_audit_record_failures_total 1"),
        "{}",
        String::from_utf8_lossy(&metrics.body)
    );
}

#[tokio::test]
async fn a_store_outage_is_a_503_with_retry_after_and_the_server_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = tether_server::default_database_url(dir.path());
    let inner = tether_store_sql::connect(&url).await.expect("sqlite opens");
    let store = Arc::new(Switchable::new(inner));
    let clock = ManualClock::new(support::epoch());
    let server = tether_server::start_with_store(
        support::config(dir.path()),
        store.clone(),
        Arc::new(clock),
    )
    .await
    .expect("starts");
    let admin = std::fs::read_to_string(&server.admin_token_path)
        .expect("token")
        .trim()
        .to_owned();
    let client = Client::new(&server);
    let token: tether_wire::CreatedToken = client
        .post(
            "/v1/admin/tokens",
            Some(&admin),
            &token_request(AgentKind::Connector),
        )
        .await
        .ok();

    store.down.store(true, Ordering::SeqCst);
    let r = client.get("/health", None).await;
    assert_eq!(r.status, 503);
    let health: Health = r.json();
    assert_eq!(
        (health.status.as_str(), health.store.ok),
        ("degraded", false)
    );
    assert!(
        !health
            .store
            .error
            .unwrap_or_default()
            .contains("db.internal"),
        "details stay in the log"
    );

    for r in [
        client.get("/v1/admin/tokens", Some(&admin)).await,
        client
            .post(
                "/v1/enroll",
                None,
                &support::enroll_request(&token.token, "a"),
            )
            .await,
        client
            .post(
                "/v1/agent/checkin",
                Some(&format!("tac_{}", "Q".repeat(43))),
                &support::checkin_request(),
            )
            .await,
    ] {
        let e = r.error(503, ErrorCode::StoreUnavailable);
        assert!(!e.message.contains("db.internal"), "{}", e.message);
        assert_eq!(
            r.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
    }
    assert!(
        server.sweep_now().await.is_err(),
        "the sweeper reports the outage"
    );

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(client.get("/health", None).await.status, 200);
    let e: tether_wire::EnrollResponse = client
        .post(
            "/v1/enroll",
            None,
            &support::enroll_request(&token.token, "a"),
        )
        .await
        .ok();
    assert_eq!(e.status, AgentStatus::Pending);
    server.shutdown().await;
}
