//! Certificate renewal on the control plane: the scheduler (a singleton
//! job), the idempotent issuance gate, forced renewals and policies.
//!
//! Each tick ([`tick`]):
//! 1. looks for due certificates: built-in CA certificates with a verified
//!    deploy location, no renewal yet and no deploy that replaced them,
//!    whose policy (per certificate, else per group of the location's agent,
//!    else the default) says they are due; each gets one `due` renewal (the
//!    store keeps at most one open renewal per certificate);
//! 2. steps every open renewal through the pure state machine
//!    ([`tether_tasks::renewal`]): starts an attempt (one deploy task per
//!    location, the same spec and agent as the deploy that put it there)
//!    or fails it with the reason (no eligible bot, bot Inactive since …),
//!    and advances attempts from their tasks, the issuance and the deploy
//!    reports (the verifying handshake is the rescan).
//!
//! Every write is compare-and-set, so ticks fired in a burst (or on two
//! servers during a lease handover) start one attempt and create its tasks
//! once, and [`gate_issue`] lets each renewal task be issued one
//! certificate, whatever retries.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tether_store::{IssueClaim, Renewal, RenewalLocation, StoreError};
use tether_tasks::TaskSnapshot;
use tether_tasks::renewal::{Deployed, Eligibility, Step, SuggestedWindow, TaskView, due_at};
use tether_wire::{
    AgentStatus, DeployReport, ErrorCode, IssueResponse, NewTask, RenewalInfo, RenewalPolicy,
    RenewalState, TaskKind, TaskTarget,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{Ctx, ServiceError};
use crate::singleton::Job;

/// Candidates read per page while looking for due certificates.
pub const CANDIDATE_PAGE: u32 = 500;
/// Pages per tick; the rest waits for the next tick.
pub const MAX_CANDIDATE_PAGES: usize = 20;
/// Open renewals stepped per tick.
pub const MAX_OPEN: u32 = 1000;
/// The most renewals a listing returns.
pub const MAX_LIST: u32 = 1000;
/// Deploys read per certificate when matching reports to tasks.
const DEPLOYS_READ: u32 = 200;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticked {
    /// Renewals created because their certificate became due.
    pub created: u32,
    /// Renewals whose state changed.
    pub stepped: u32,
}

/// The policy for `fingerprint` at a location of an agent in `group`.
pub async fn policy_for(
    ctx: &Ctx,
    fingerprint: &str,
    group: Option<&str>,
) -> Result<RenewalPolicy, ServiceError> {
    if let Some(p) = stored_policy(ctx, fingerprint, group).await? {
        return Ok(p);
    }
    let cert = ctx.store.issued_cert(fingerprint).await?;
    Ok(default_policy(cert.as_ref()))
}

/// The first stored policy of the certificate's scopes, most specific
/// first; `None` when none is stored (or none can be read).
async fn stored_policy(
    ctx: &Ctx,
    fingerprint: &str,
    group: Option<&str>,
) -> Result<Option<RenewalPolicy>, ServiceError> {
    let mut scopes = vec![format!("cert:{fingerprint}")];
    if let Some(g) = group {
        scopes.push(format!("group:{g}"));
    }
    scopes.push("default".to_owned());
    for scope in scopes {
        if let Some(text) = ctx.store.renewal_policy(&scope).await? {
            match serde_json::from_str::<RenewalPolicy>(&text) {
                Ok(p) => return Ok(Some(p)),
                Err(error) => {
                    warn!(scope = %scope, error = %error, "a stored renewal policy cannot be read; trying the next scope");
                }
            }
        }
    }
    Ok(None)
}

/// Without a policy, a certificate renews through the CA that issued it.
fn default_policy(cert: Option<&tether_wire::IssuedCert>) -> RenewalPolicy {
    RenewalPolicy {
        issuer: cert
            .and_then(|c| c.issuer.clone())
            .unwrap_or_else(|| "builtin".to_owned()),
        ..RenewalPolicy::default()
    }
}

/// Sets the policy of a scope: `default`, `cert:<fingerprint>` or
/// `group:<name>`.
pub async fn set_policy(
    ctx: &Ctx,
    scope: &str,
    policy: &RenewalPolicy,
) -> Result<(), ServiceError> {
    let scope_ok = scope == "default"
        || scope
            .strip_prefix("cert:")
            .is_some_and(|f| super::certs::fingerprint(f).is_ok())
        || scope
            .strip_prefix("group:")
            .is_some_and(|g| (1..=64).contains(&g.len()));
    if !scope_ok {
        return Err(ServiceError::invalid(
            "scope",
            scope.chars().take(80).collect::<String>(),
            "default, cert:sha256:<64 hex> or group:<name>",
        ));
    }
    tether_tasks::renewal::check_policy(policy)
        .map_err(|e| ServiceError::Renewal(ErrorCode::RenewalPolicyInvalid, e.to_string()))?;
    let text = serde_json::to_string(policy)
        .map_err(|e| ServiceError::Conflict(format!("cannot encode the policy: {e}")))?;
    ctx.store
        .set_renewal_policy(scope, &text, ctx.now())
        .await?;
    info!(scope = %scope, "renewal policy set");
    Ok(())
}

/// A verified deploy's location, remembered so the certificate can be
/// renewed there (called when a deploy's report is recorded).
pub async fn remember(
    ctx: &Ctx,
    task: &TaskSnapshot,
    agent_id: Uuid,
    report: &DeployReport,
) -> Result<(), ServiceError> {
    if report.state != "deployed" {
        return Ok(());
    }
    ctx.store
        .record_renewal_location(&RenewalLocation {
            fingerprint: report.new_fingerprint.clone(),
            task_id: task.id,
            agent_id,
            spec: task.spec.to_string(),
            at: ctx.now(),
        })
        .await?;
    Ok(())
}

/// `tether certs renew FP`: a renewal now, whatever the policy says. A
/// failed renewal is retried at once; one under way is refused.
pub async fn force(ctx: &Ctx, text: &str) -> Result<RenewalInfo, ServiceError> {
    let fp = super::certs::fingerprint(text)?;
    let now = ctx.now();
    if ctx.store.issued_cert(&fp).await?.is_none() {
        return Err(ServiceError::NotFound {
            what: "certificate issued by the built-in CA",
            id: fp,
        });
    }
    for _ in 0..3 {
        if let Some(open) = ctx
            .store
            .renewals_of(&fp)
            .await?
            .into_iter()
            .find(|r| !r.state.is_final())
        {
            let next = open.force(now).map_err(|code| {
                ServiceError::Renewal(
                    code,
                    format!(
                        "renewal {} of {fp} is {} ({})",
                        open.id, open.state, open.reason
                    ),
                )
            })?;
            if ctx.store.update_renewal(&next).await? {
                info!(renewal_id = %next.id, fingerprint = %fp, "renewal retried by an admin");
                return Ok(next.info());
            }
            continue;
        }
        let group = first_group(ctx, &fp).await?;
        let policy = policy_for(ctx, &fp, group.as_deref()).await?;
        let r = Renewal::due(&fp, &policy, true, now);
        if ctx.store.insert_renewal(&r).await? {
            info!(renewal_id = %r.id, fingerprint = %fp, "renewal forced by an admin");
            return Ok(r.info());
        }
    }
    Err(ServiceError::Conflict(format!(
        "the renewal of {fp} kept changing; retry"
    )))
}

/// `tether certs renewals`: newest first.
pub async fn list(ctx: &Ctx) -> Result<Vec<RenewalInfo>, ServiceError> {
    Ok(ctx
        .store
        .list_renewals(MAX_LIST)
        .await?
        .iter()
        .map(Renewal::info)
        .collect())
}

/// A certificate's renewals, for its history.
pub async fn of(ctx: &Ctx, fingerprint: &str) -> Result<Vec<RenewalInfo>, ServiceError> {
    Ok(ctx
        .store
        .renewals_of(fingerprint)
        .await?
        .iter()
        .map(Renewal::info)
        .collect())
}

async fn first_group(ctx: &Ctx, fp: &str) -> Result<Option<String>, ServiceError> {
    let locations = ctx.store.renewal_locations(fp).await?;
    let Some(first) = locations.first() else {
        return Ok(None);
    };
    Ok(ctx.store.agent(first.agent_id).await?.map(|a| a.group))
}

/// One scheduler tick: due certificates get a renewal, open renewals step.
pub async fn tick(ctx: &Ctx) -> Result<Ticked, ServiceError> {
    let mut done = Ticked::default();
    let now = ctx.now();
    let mut after: Option<String> = None;
    let mut ari_budget = super::acme::WINDOWS_PER_TICK;
    for _ in 0..MAX_CANDIDATE_PAGES {
        let page = ctx
            .store
            .renewal_candidates(after.as_deref(), CANDIDATE_PAGE)
            .await?;
        for c in &page {
            let group = first_group(ctx, &c.fingerprint).await?;
            // Read once: the default policy's issuer and the ARI window.
            let cert = ctx.store.issued_cert(&c.fingerprint).await?;
            let policy = match stored_policy(ctx, &c.fingerprint, group.as_deref()).await? {
                Some(p) => p,
                None => default_policy(cert.as_ref()),
            };
            // An ACME CA's suggested window (RFC 9773) decides when it
            // offers one; the built-in CA has none, so the policy does.
            let ari = match &cert {
                Some(cert) => super::acme::window(ctx, cert, now, &mut ari_budget)
                    .await
                    .map(|(start, end)| SuggestedWindow { start, end }),
                None => None,
            };
            let due = due_at(&policy, c.not_before, c.not_after, ari);
            if due > now {
                continue;
            }
            let r = Renewal::due(&c.fingerprint, &policy, false, now);
            if ctx.store.insert_renewal(&r).await? {
                info!(renewal_id = %r.id, fingerprint = %c.fingerprint, due = %super::rfc(due), "certificate due for renewal");
                done.created += 1;
            }
        }
        match page.last() {
            Some(last) if page.len() == CANDIDATE_PAGE as usize => {
                after = Some(last.fingerprint.clone());
            }
            _ => break,
        }
    }
    // Only renewals whose time has come: an attempt under way, or a due or
    // failed one whose next attempt is now (an index range in the store).
    for r in ctx.store.due_renewals(now, MAX_OPEN).await? {
        if step(ctx, &r).await? {
            done.stepped += 1;
        }
    }
    Ok(done)
}

/// Steps one renewal; whether it changed.
async fn step(ctx: &Ctx, r: &Renewal) -> Result<bool, ServiceError> {
    let now = ctx.now();
    let locations = ctx.store.renewal_locations(&r.fingerprint).await?;
    let group = match locations.first() {
        Some(l) => ctx.store.agent(l.agent_id).await?.map(|a| a.group),
        None => None,
    };
    let policy = policy_for(ctx, &r.fingerprint, group.as_deref()).await?;
    let next = if r.may_start(now) {
        let mut eligible = Vec::with_capacity(locations.len());
        for l in &locations {
            eligible.push(eligibility(ctx, l.agent_id).await?);
        }
        match r.start(&policy, &eligible, Uuid::new_v4, now) {
            Step::StartAttempt(next) => match issuer_problem(ctx, &next.issuer).await? {
                Some((code, why)) => r.fail(code, why, true, now),
                None => {
                    if !ctx.store.update_renewal(&next).await? {
                        return Ok(false);
                    }
                    info!(renewal_id = %next.id, fingerprint = %next.fingerprint, attempt = next.attempt, locations = next.locations, issuer = %next.issuer, "renewal attempt started");
                    ensure_tasks(ctx, &next, &locations, &policy).await?;
                    return Ok(true);
                }
            },
            Step::Update(next) => next,
            Step::Wait => return Ok(false),
        }
    } else {
        let views = views(ctx, r, &locations, &policy).await?;
        match r.observe(&views, now) {
            Step::Update(next) | Step::StartAttempt(next) => next,
            Step::Wait => return Ok(false),
        }
    };
    let written = ctx.store.update_renewal(&next).await?;
    if written {
        match next.state {
            RenewalState::Failed => {
                warn!(renewal_id = %next.id, fingerprint = %next.fingerprint, code = ?next.reason_code.map(|c| c.as_str()), reason = %next.reason, "renewal attempt failed");
            }
            state => {
                info!(renewal_id = %next.id, fingerprint = %next.fingerprint, state = %state, reason = %next.reason, "renewal advanced");
            }
        }
    }
    Ok(written)
}

/// Whether the issuer can issue on this server; `None` when it can.
async fn issuer_problem(
    ctx: &Ctx,
    issuer: &str,
) -> Result<Option<(ErrorCode, String)>, ServiceError> {
    if let Some(name) = issuer.strip_prefix("acme:") {
        return Ok(super::acme::problem(ctx, name).await?.map(|(code, why)| {
            (
                ErrorCode::RenewalIssuerUnavailable,
                format!("the issuer {issuer:?} is not available on this server: {code}: {why}"),
            )
        }));
    }
    if issuer != "builtin" {
        return Ok(Some((
            ErrorCode::RenewalIssuerUnavailable,
            format!("the issuer {issuer:?} is not available on this server"),
        )));
    }
    if ctx.ca.is_none() {
        return Ok(Some((
            ErrorCode::RenewalCaFailed,
            format!(
                "the CA's error: {}: no built-in CA is open on this server",
                ErrorCode::CaNotInitialized
            ),
        )));
    }
    Ok(None)
}

async fn eligibility(ctx: &Ctx, agent_id: Uuid) -> Result<Eligibility, ServiceError> {
    let Some(a) = ctx.store.agent(agent_id).await? else {
        return Ok(Eligibility::Gone { agent_id });
    };
    Ok(match a.status {
        AgentStatus::Inactive => Eligibility::Inactive {
            agent_id,
            since: a.deadline_at.or(a.last_seen).unwrap_or(a.enrolled_at),
        },
        AgentStatus::Stopped => Eligibility::Inactive {
            agent_id,
            since: a.stopped_at.or(a.last_seen).unwrap_or(a.enrolled_at),
        },
        _ => Eligibility::Ready,
    })
}

/// The location's deploy spec, issued by the attempt's issuer (the
/// policy's, or its fallback): the built-in CA takes no challenge, an ACME
/// issuer keeps the location's (a spec without one is refused when the task
/// is created, and the attempt fails saying so).
fn with_issuer(spec: &mut Value, issuer: &str) {
    if let Some(o) = spec.as_object_mut() {
        if issuer == "builtin" {
            o.remove("issuer");
            o.remove("challenge");
        } else {
            o.insert("issuer".to_owned(), Value::String(issuer.to_owned()));
        }
    }
}

/// Creates the attempt's deploy tasks that do not exist yet (all of them,
/// or those a crash between the renewal's write and the tasks' left out).
async fn ensure_tasks(
    ctx: &Ctx,
    r: &Renewal,
    locations: &[RenewalLocation],
    policy: &RenewalPolicy,
) -> Result<(), ServiceError> {
    for (id, l) in r.tasks.iter().zip(locations) {
        if ctx.store.task(*id).await?.is_some() {
            continue;
        }
        let mut spec: Value = serde_json::from_str(&l.spec).map_err(|e| {
            ServiceError::Store(StoreError::Corrupt(format!(
                "renewal_locations.spec of task {}: {e}",
                l.task_id
            )))
        })?;
        with_issuer(&mut spec, &r.issuer);
        let req = NewTask {
            kind: TaskKind::Deploy,
            spec,
            target: TaskTarget::Agent {
                agent_id: l.agent_id,
            },
            // The renewal retries with its own back-off, and a second
            // attempt of the task could not be issued anyway.
            max_attempts: Some(1),
            lease_secs: None,
            deadline_secs: None,
            allowed_hours: policy.allowed_hours.clone(),
            schedule: None,
            // Held, like the admin's own deploys, when the policy says so:
            // nothing on the host changes before an admin approves.
            require_approval: policy.require_approval,
        };
        let reason = format!(
            "created by renewal {} of {} (attempt {})",
            r.id, r.fingerprint, r.attempt
        );
        match super::tasks::create_with_id(ctx, req, *id, reason).await {
            Ok(_) => {}
            // A concurrent tick created it first.
            Err(ServiceError::Store(StoreError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the store says of each task of the current attempt.
async fn views(
    ctx: &Ctx,
    r: &Renewal,
    locations: &[RenewalLocation],
    policy: &RenewalPolicy,
) -> Result<Vec<TaskView>, ServiceError> {
    let mut out = Vec::with_capacity(r.tasks.len());
    let mut missing = false;
    for id in &r.tasks {
        let task = ctx.store.task(*id).await?;
        missing |= task.is_none();
        let issued = ctx.store.renewal_task_issued(*id).await?;
        let deployed = match &issued {
            Some(fp) => ctx
                .store
                .deployments(fp, DEPLOYS_READ)
                .await?
                .into_iter()
                .find(|d| d.task_id == *id && d.report.new_fingerprint == *fp)
                .map(|d| deployed_of(&d.report)),
            None => None,
        };
        out.push(TaskView {
            id: *id,
            state: task.as_ref().map(|t| t.state),
            last_error: task.as_ref().and_then(|t| {
                t.last_error
                    .clone()
                    .or_else(|| t.outcome.as_ref().map(|o| o.message.clone()))
            }),
            issued,
            deployed,
            awaiting_approval: task.as_ref().is_some_and(|t| t.held()),
        });
    }
    if missing {
        ensure_tasks(ctx, r, locations, policy).await?;
    }
    Ok(out)
}

fn deployed_of(report: &DeployReport) -> Deployed {
    if report.state == "deployed" {
        Deployed::Verified {
            fingerprint: report.new_fingerprint.clone(),
        }
    } else {
        Deployed::RolledBack {
            code: report.failure.as_ref().map(|f| f.code.clone()),
            message: report
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_else(|| report.state.clone()),
        }
    }
}

/// What [`gate_issue`] decided for one issue call.
#[derive(Debug)]
pub enum Gate {
    /// Not a renewal's task: issue as usual.
    Open,
    /// This call issues for the renewal's task; report the result with
    /// [`issued`] or [`issue_failed`].
    Claimed,
    /// The same request was issued already: answer with the same
    /// certificate, sign nothing.
    Again(IssueResponse),
}

/// Issuance is idempotent per renewal: a renewal's task gets one
/// certificate. A retried call with the same CSR gets the same certificate;
/// another CSR for the task (a stale or repeated attempt) is refused.
pub async fn gate_issue(ctx: &Ctx, task_id: Uuid, csr_der: &[u8]) -> Result<Gate, ServiceError> {
    let Some(r) = ctx.store.renewal_of_task(task_id).await? else {
        return Ok(Gate::Open);
    };
    if !r.tasks.contains(&task_id)
        || !matches!(
            r.state,
            RenewalState::Issuing | RenewalState::Issued | RenewalState::Deploying
        )
    {
        return Err(ServiceError::Renewal(
            ErrorCode::RenewalAlreadyIssued,
            format!(
                "task {task_id} belongs to an earlier attempt of renewal {} (now {}, attempt {})",
                r.id, r.state, r.attempt
            ),
        ));
    }
    if let Some((code, why)) = issuer_problem(ctx, &r.issuer).await? {
        return Err(ServiceError::Renewal(code, why));
    }
    let request = hex::encode(Sha256::digest(csr_der));
    match ctx.store.claim_renewal_issue(task_id, &request).await? {
        IssueClaim::Claimed => Ok(Gate::Claimed),
        IssueClaim::Issued {
            fingerprint,
            cert_pem,
            chain_pem,
        } => {
            let issued = ctx.store.issued_cert(&fingerprint).await?.ok_or_else(|| {
                ServiceError::Store(StoreError::Corrupt(format!(
                    "renewal task {task_id} names {fingerprint}, which issued_certs lacks"
                )))
            })?;
            info!(task_id = %task_id, renewal_id = %r.id, fingerprint = %fingerprint, "a retried issue call got the renewal's certificate again");
            Ok(Gate::Again(IssueResponse {
                cert_pem,
                chain_pem,
                fingerprint,
                serial: issued.serial,
                not_after: issued.not_after,
            }))
        }
        IssueClaim::InFlight => Err(ServiceError::Conflict(format!(
            "the certificate of task {task_id} is being issued by another call; retry"
        ))),
        IssueClaim::Refused => Err(ServiceError::Renewal(
            ErrorCode::RenewalAlreadyIssued,
            format!(
                "renewal {} already issued (or is issuing) a certificate for task {task_id} from another request",
                r.id
            ),
        )),
    }
}

/// The claimed issuance produced `issued`.
pub async fn issued(ctx: &Ctx, task_id: Uuid, issued: &IssueResponse) -> Result<(), ServiceError> {
    ctx.store
        .complete_renewal_issue(
            task_id,
            &issued.fingerprint,
            &issued.cert_pem,
            &issued.chain_pem,
        )
        .await?;
    Ok(())
}

/// The claimed issuance failed: a retry may claim it again.
pub async fn issue_failed(ctx: &Ctx, task_id: Uuid) {
    if let Err(error) = ctx.store.release_renewal_issue(task_id).await {
        warn!(task_id = %task_id, error = %error, "could not release a renewal's issue claim");
    }
}

/// Runs [`tick`] every `interval` while this server holds the renewal job.
pub async fn run(ctx: Ctx, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if !ctx.singletons.holds(Job::Renewal) {
                    continue;
                }
                match tick(&ctx).await {
                    Ok(t) if t != Ticked::default() => debug!(created = t.created, stepped = t.stepped, "renewal tick"),
                    Ok(_) => {}
                    Err(error) => warn!(error = %error, "renewal tick failed; retrying at the next tick"),
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    debug!("renewal scheduler stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::future::join_all;
    use tether_store::{Enrollment, NewToken, Store};
    use tether_wire::{AgentKind, HostFacts, IssueRequest, IssuedCert, ManualClock};
    use time::OffsetDateTime;

    use super::*;
    use crate::service::Settings;

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-12-07 12:00 UTC)
    }

    struct World {
        ctx: Ctx,
        clock: Arc<ManualClock>,
        agent: tether_store::AgentRecord,
        _dir: tempfile::TempDir,
    }

    async fn world() -> World {
        let store: Arc<dyn Store> = tether_store_sql::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        let clock = Arc::new(ManualClock::new(t0()));
        let config = crate::ServerConfig::default();
        let dir = tempfile::tempdir().expect("temp dir");
        let defs = tether_defs_publish::repo::Repo::open(&dir.path().join("defs"), clock.clone())
            .await
            .expect("opens the definitions repository");
        let mut ctx = Ctx::new(
            store.clone(),
            defs,
            clock.clone(),
            Settings::from_config(&config),
            crate::limits::LimitSettings::from_config(&config),
            "test",
        )
        .await
        .expect("builds the context");
        let kek = tether_pki::Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
        let ca = tether_pki::ca::init(
            &super::super::issuance::files(dir.path()),
            &kek,
            "Test",
            tether_pki::ca::RootKeyPlace::Online,
            OffsetDateTime::now_utc(),
        )
        .expect("CA");
        ctx.ca = Some(Arc::new(ca));
        let token = NewToken {
            id: Uuid::new_v4(),
            hash: [7; 32],
            kind: AgentKind::Provisioning,
            group: "web".into(),
            policy: "default".into(),
            not_before: t0(),
            expires_at: t0() + time::Duration::days(1),
            max_uses: None,
            require_approval: false,
            created_at: t0(),
        };
        store.insert_token(&token).await.expect("token");
        let agent = store
            .enroll(&Enrollment {
                token_id: token.id,
                agent_id: Uuid::new_v4(),
                replaces: None,
                name: "web-1".into(),
                kind: AgentKind::Provisioning,
                group: "web".into(),
                policy: "default".into(),
                credential_hash: [8; 32],
                requires_approval: false,
                version: tether_wire::VERSION.to_owned(),
                facts: HostFacts {
                    hostname: "web-1".into(),
                    os: "linux".into(),
                    internal_ips: vec![],
                    uptime_secs: 1,
                    installed_at: None,
                },
                external_ip: None,
                at: t0(),
                status: AgentStatus::Active,
                reason: "test".into(),
            })
            .await
            .expect("enrolls");
        World {
            ctx,
            clock,
            agent,
            _dir: dir,
        }
    }

    fn spec() -> Value {
        serde_json::json!({
            "names": ["web.test"],
            "target": {"cert": "/etc/t/cert.pem", "key": "/etc/t/key.pem"},
            "reload": {"command": ["true"]},
            "verify": {"address": "127.0.0.1", "port": 443}
        })
    }

    /// A certificate deployed by `agent`, valid from `nb` for `days`.
    async fn deployed(w: &World, n: u8, nb: OffsetDateTime, days: i64) -> String {
        let fp = format!("sha256:{}", format!("{n:02x}").repeat(32));
        let cert = IssuedCert {
            fingerprint: fp.clone(),
            serial: format!("{n:02x}"),
            names: vec!["web.test".into()],
            not_before: nb,
            not_after: nb + time::Duration::days(days),
            issued_at: nb,
            task_id: None,
            agent_id: Some(w.agent.id),
            issuer: None,
            renewal_window: None,
        };
        w.ctx
            .store
            .record_issued(&cert, "pem")
            .await
            .expect("issued");
        w.ctx
            .store
            .record_renewal_location(&RenewalLocation {
                fingerprint: fp.clone(),
                task_id: Uuid::new_v4(),
                agent_id: w.agent.id,
                spec: spec().to_string(),
                at: nb,
            })
            .await
            .expect("location");
        fp
    }

    /// Leases the task to the world's agent, as a poll would.
    async fn lease(w: &World, id: Uuid) -> u64 {
        let mut t = w.ctx.store.task(id).await.expect("reads").expect("task");
        t.state = tether_wire::TaskState::Leased;
        t.leased_to = Some(w.agent.id);
        t.epoch += 1;
        t.attempt += 1;
        t.lease_expires_at = Some(w.ctx.now() + time::Duration::minutes(5));
        assert!(w.ctx.store.update_task(&t).await.expect("writes"));
        t.epoch
    }

    #[tokio::test]
    async fn a_stale_window_fired_in_a_burst_issues_exactly_one_certificate() {
        let w = world().await;
        // Due long ago: a stale window, every tick sees it due.
        let fp = deployed(&w, 1, t0() - time::Duration::days(80), 90).await;
        let not_due = deployed(&w, 2, t0() - time::Duration::days(1), 90).await;
        let ticks = join_all((0..20).map(|_| tick(&w.ctx))).await;
        for t in &ticks {
            assert!(t.is_ok(), "{t:?}");
        }
        let open = w.ctx.store.due_renewals(t0(), 10).await.expect("lists");
        assert_eq!(open.len(), 1, "one renewal: {open:#?}");
        let r = &open[0];
        assert_eq!(r.fingerprint, fp);
        assert_ne!(r.fingerprint, not_due);
        assert_eq!(
            (r.state, r.attempt, r.tasks.len()),
            (RenewalState::Issuing, 1, 1)
        );
        let tasks = w
            .ctx
            .store
            .list_tasks(&tether_store::TaskFilter::default(), 100)
            .await
            .expect("tasks");
        assert_eq!(tasks.len(), 1, "one deploy task: {tasks:#?}");
        let task = &tasks[0];
        assert_eq!(task.id, r.tasks[0]);
        assert_eq!(task.max_attempts, 1);
        assert!(task.reason.as_deref().unwrap_or("").contains("renewal"));

        // The agent asks for its certificate; retries of the same call, in
        // a burst and afterwards, get the same certificate.
        let epoch = lease(&w, task.id).await;
        let key = tether_deploy::keygen::generate(&["web.test".to_owned()]).expect("csr");
        let req = IssueRequest {
            epoch,
            csr_pem: key.csr_pem.clone(),
            http01: false,
            order: None,
        };
        let burst = join_all(
            (0..10).map(|_| super::super::issuance::issue(&w.ctx, &w.agent, task.id, req.clone())),
        )
        .await;
        let mut fps = std::collections::BTreeSet::new();
        for r in burst {
            match r {
                Ok(super::super::acme::IssueReply::Issued(resp)) => {
                    fps.insert((resp.fingerprint, resp.serial));
                }
                Ok(other) => panic!("the built-in CA sent {other:?}"),
                // Another call of the burst was signing at that instant.
                Err(ServiceError::Conflict(_)) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let super::super::acme::IssueReply::Issued(again) =
            super::super::issuance::issue(&w.ctx, &w.agent, task.id, req.clone())
                .await
                .expect("a retry gets the certificate")
        else {
            panic!("the built-in CA answers with the certificate");
        };
        fps.insert((again.fingerprint.clone(), again.serial.clone()));
        assert_eq!(fps.len(), 1, "one certificate: {fps:?}");
        // Another key for the same renewal task is refused with its code.
        let other = tether_deploy::keygen::generate(&["web.test".to_owned()]).expect("csr");
        let refused = super::super::issuance::issue(
            &w.ctx,
            &w.agent,
            task.id,
            IssueRequest {
                epoch,
                csr_pem: other.csr_pem,
                http01: false,
                order: None,
            },
        )
        .await
        .expect_err("refused");
        assert_eq!(refused.code(), ErrorCode::RenewalAlreadyIssued);
        // More ticks change nothing but the state: issued, one task.
        join_all((0..10).map(|_| tick(&w.ctx))).await;
        let r = w
            .ctx
            .store
            .renewal(r.id)
            .await
            .expect("reads")
            .expect("renewal");
        assert_eq!(r.state, RenewalState::Issued, "{r:#?}");
        assert!(r.reason.starts_with("issued at 1 of 1"), "{}", r.reason);
        let tasks = w
            .ctx
            .store
            .list_tasks(&tether_store::TaskFilter::default(), 100)
            .await
            .expect("tasks");
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            w.ctx
                .store
                .renewal_task_issued(task.id)
                .await
                .expect("reads"),
            Some(again.fingerprint)
        );
    }

    #[tokio::test]
    async fn an_inactive_bot_and_a_failed_task_are_explained_and_back_off() {
        let w = world().await;
        let fp = deployed(&w, 3, t0() - time::Duration::days(80), 90).await;
        // The agent went silent: Inactive since its deadline.
        let since = t0() - time::Duration::hours(3);
        let mut a = w.agent.clone();
        a.deadline_at = Some(since);
        w.ctx
            .store
            .change_status(
                a.id,
                &tether_store::StatusChange {
                    from: AgentStatus::Active,
                    to: AgentStatus::Inactive,
                    reason: "silent".into(),
                },
                t0(),
            )
            .await
            .expect("inactive");
        tick(&w.ctx).await.expect("ticks");
        let r = w
            .ctx
            .store
            .due_renewals(t0() + time::Duration::days(1), 10)
            .await
            .expect("lists")
            .remove(0);
        assert_eq!(r.fingerprint, fp);
        assert_eq!(r.state, RenewalState::Failed);
        assert_eq!(r.reason_code, Some(ErrorCode::RenewalAgentInactive));
        assert!(r.reason.contains("bot Inactive since"), "{}", r.reason);
        assert_eq!(r.next_attempt_at, Some(t0() + time::Duration::minutes(5)));
        // Before the back-off ends nothing is tried, whatever the ticks.
        w.clock.advance(time::Duration::minutes(4));
        tick(&w.ctx).await.expect("ticks");
        assert_eq!(
            w.ctx.store.renewal(r.id).await.expect("reads"),
            Some(r.clone())
        );

        // The agent is back; the next attempt's task is dead-lettered with
        // the CA's code: the CA's error, and twice the back-off.
        w.ctx
            .store
            .change_status(
                a.id,
                &tether_store::StatusChange {
                    from: AgentStatus::Inactive,
                    to: AgentStatus::Active,
                    reason: "back".into(),
                },
                w.ctx.now(),
            )
            .await
            .expect("active");
        w.clock.advance(time::Duration::minutes(1));
        tick(&w.ctx).await.expect("ticks");
        let r = w.ctx.store.renewal(r.id).await.expect("reads").expect("r");
        assert_eq!((r.state, r.attempt), (RenewalState::Issuing, 1), "{r:#?}");
        let mut t = w
            .ctx
            .store
            .task(r.tasks[0])
            .await
            .expect("reads")
            .expect("task");
        t.state = tether_wire::TaskState::Dead;
        t.last_error = Some("TETHER-E8508: TETHER-E8405 no built-in CA".into());
        assert!(w.ctx.store.update_task(&t).await.expect("writes"));
        tick(&w.ctx).await.expect("ticks");
        let r = w.ctx.store.renewal(r.id).await.expect("reads").expect("r");
        assert_eq!(r.state, RenewalState::Failed);
        assert_eq!(r.reason_code, Some(ErrorCode::RenewalCaFailed));
        assert!(r.reason.contains("TETHER-E8405"), "{}", r.reason);
        assert_eq!(
            r.next_attempt_at,
            Some(w.ctx.now() + time::Duration::minutes(10))
        );
        // An admin forces it: retried at the next tick.
        let forced = force(&w.ctx, &fp).await.expect("forced");
        assert_eq!(forced.state, RenewalState::Failed);
        tick(&w.ctx).await.expect("ticks");
        let r = w.ctx.store.renewal(r.id).await.expect("reads").expect("r");
        assert_eq!((r.state, r.attempt), (RenewalState::Issuing, 2));
        let err = force(&w.ctx, &fp).await.expect_err("under way");
        assert_eq!(err.code(), ErrorCode::RenewalInProgress);
    }

    #[tokio::test]
    async fn a_policy_that_requires_approval_holds_the_renewals_deploys() {
        let w = world().await;
        let fp = deployed(&w, 4, t0() - time::Duration::days(80), 90).await;
        let policy = RenewalPolicy {
            require_approval: true,
            ..RenewalPolicy::default()
        };
        set_policy(&w.ctx, "default", &policy).await.expect("set");
        tick(&w.ctx).await.expect("ticks");
        let r = w.ctx.store.due_renewals(t0(), 10).await.expect("lists")[0].clone();
        assert_eq!(
            (r.fingerprint.as_str(), r.state),
            (fp.as_str(), RenewalState::Issuing)
        );
        let task = w
            .ctx
            .store
            .task(r.tasks[0])
            .await
            .expect("reads")
            .expect("task");
        assert!(task.held(), "{task:#?}");
        assert!(
            task.reason
                .as_deref()
                .is_some_and(|why| why.ends_with(&tether_tasks::lease::awaiting_approval(task.id))),
            "{:?}",
            task.reason
        );
        // Held: no agent may lease it, whatever the ticks; the renewal
        // says what it waits for.
        tick(&w.ctx).await.expect("ticks");
        let r = w
            .ctx
            .store
            .renewal(r.id)
            .await
            .expect("reads")
            .expect("renewal");
        assert!(
            r.reason
                .ends_with(&tether_tasks::lease::awaiting_approval(task.id)),
            "{}",
            r.reason
        );
        let leased = w
            .ctx
            .store
            .lease_tasks(&tether_store::LeaseRequest {
                agent_id: w.agent.id,
                group: "web".into(),
                agent_kind: AgentKind::Provisioning,
                site: None,
                kinds: vec![tether_wire::TaskKind::Deploy],
                actions_only: false,
                now: w.ctx.now(),
                limit: 4,
            })
            .await
            .expect("leases");
        assert!(leased.is_empty(), "{leased:#?}");
        // Rejected: the renewal fails with the admin's reason.
        super::super::tasks::reject(&w.ctx, task.id, "ops-alice", "change freeze")
            .await
            .expect("rejects");
        tick(&w.ctx).await.expect("ticks");
        let r = w.ctx.store.renewal(r.id).await.expect("reads").expect("r");
        assert_eq!(r.state, RenewalState::Failed);
        assert_eq!(r.reason_code, Some(ErrorCode::RenewalTaskFailed));
        assert!(
            r.reason.contains("rejected by ops-alice: change freeze"),
            "{}",
            r.reason
        );
    }
}
