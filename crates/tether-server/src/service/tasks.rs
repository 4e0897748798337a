//! The task queue: admins create tasks (once or on a schedule), agents lease
//! them by long poll, extend their leases with heartbeats and deliver
//! results in chunks; the sweeper expires leases, dead-letters tasks past
//! their deadline and fires schedules.
//!
//! Every decision about a task's next state is `tether_tasks`' (pure); this
//! module reads the task, asks the state machine, and writes the answer with
//! compare-and-set ([`mutate`]), re-reading when another server won.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tether_store::{
    AgentRecord, LeaseRequest, ScheduleRecord, ScheduleRun, StoreError, TaskFilter, TaskSnapshot,
};
use tether_tasks::reason::{AgentView, Eligible};
use tether_tasks::schedule;
use tether_tasks::window::{Window, WindowState};
use tether_wire::{
    Action, ActionInfo, ActionKind, ActionResult, ActionState, AgentStatus, Approval,
    DoctorSummary, Heartbeat, HeartbeatReply, NewTask, Outcome, ResultAck, ResultChunk,
    ScheduleInfo, Site, TaskDetail, TaskInfo, TaskKind, TaskLease, TaskOutcome, TaskPoll,
    TaskPollReply, TaskState, TaskTarget,
};
use time::{Duration, OffsetDateTime};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{Ctx, ServiceError, validate};

pub mod hub;
pub mod wakeups;

/// The most tasks one list returns.
pub const MAX_LIST: u32 = 1000;
/// The most result chunks `show` returns.
pub const MAX_RESULTS: u32 = 1000;
/// The most chunks one attempt may send.
pub const MAX_CHUNKS: u32 = 100_000;
/// The longest deadline a task may have: 30 days.
pub const MAX_DEADLINE_SECS: u64 = 30 * 86_400;
/// The most tasks one poll hands out.
pub const MAX_PER_POLL: u32 = 16;
/// Rows the sweeper reads per query.
const SWEEP_BATCH: u32 = 500;
/// Compare-and-set retries before giving up with a conflict.
const CAS_TRIES: usize = 8;

/// What `create` made.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Task(TaskInfo<Value>),
    Schedule(ScheduleInfo<Value>),
}

pub(crate) fn refused(id: Uuid) -> impl Fn(tether_tasks::Refusal) -> ServiceError {
    move |refusal| ServiceError::TaskRefused { id, refusal }
}

pub(crate) fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound {
        what: "task",
        id: id.to_string(),
    }
}

/// Reads, decides, writes with compare-and-set; re-reads when another writer
/// won. `decide` returns `Ok(None)` when nothing needs writing.
async fn mutate<F>(ctx: &Ctx, id: Uuid, decide: F) -> Result<TaskSnapshot, ServiceError>
where
    F: Fn(&TaskSnapshot) -> Result<Option<TaskSnapshot>, ServiceError>,
{
    for _ in 0..CAS_TRIES {
        let current = ctx.store.task(id).await?.ok_or_else(|| not_found(id))?;
        let Some(mut next) = decide(&current)? else {
            return Ok(current);
        };
        if ctx.store.update_task(&next).await? {
            next.version += 1;
            return Ok(next);
        }
    }
    Err(ServiceError::Conflict(format!(
        "task {id} kept changing under {CAS_TRIES} attempts to update it; retry"
    )))
}

// ---------------------------------------------------------------- admin side

/// The time zone a task of `target` is read in: its site's, else UTC.
async fn zone_of(ctx: &Ctx, target: &TaskTarget) -> Result<String, ServiceError> {
    let site = match target {
        TaskTarget::Group { site, .. } => site.clone(),
        TaskTarget::Agent { agent_id } => ctx.store.agent_site(*agent_id).await?,
    };
    let Some(site) = site else {
        return Ok("UTC".to_owned());
    };
    let sites = ctx.store.list_sites().await?;
    Ok(sites
        .into_iter()
        .find(|s| s.name == site)
        .map_or_else(|| "UTC".to_owned(), |s| s.tz))
}

/// Checks a new task and fills its defaults: the spec as its kind
/// normalizes it, the target, the limits, the zone and the window.
async fn check(ctx: &Ctx, req: &NewTask<Value>) -> Result<(NewTask<Value>, String), ServiceError> {
    let rules = tether_tasks::rules(req.kind).ok_or_else(|| {
        ServiceError::TaskSpec(tether_tasks::SpecError::new(
            "kind",
            req.kind.as_str(),
            "discover, doctor or update_defs",
        ))
    })?;
    let spec = tether_tasks::kind::validate(req.kind, &req.spec).map_err(ServiceError::TaskSpec)?;
    match &req.target {
        TaskTarget::Agent { agent_id } => {
            let agent = ctx.store.agent(*agent_id).await?.ok_or_else(|| {
                ServiceError::TaskTarget(format!("agent {agent_id} does not exist or was removed"))
            })?;
            if !rules.agent_kinds.contains(&agent.kind) {
                return Err(ServiceError::TaskTarget(format!(
                    "agent {agent_id} is a {} agent; {} tasks run on {} agents",
                    agent.kind,
                    req.kind,
                    kinds(rules.agent_kinds)
                )));
            }
        }
        TaskTarget::Group {
            group,
            agent_kind,
            site,
        } => {
            validate::name("target.group", group)?;
            if !rules.agent_kinds.contains(agent_kind) {
                return Err(ServiceError::TaskTarget(format!(
                    "{} tasks run on {} agents, not {agent_kind}",
                    req.kind,
                    kinds(rules.agent_kinds)
                )));
            }
            if let Some(site) = site {
                let known = ctx.store.list_sites().await?;
                if !known.iter().any(|s| &s.name == site) {
                    return Err(ServiceError::TaskTarget(format!(
                        "site {:?} is not defined; create it with `tether sites set NAME --tz ZONE`",
                        site.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
    }
    let max_attempts = req.max_attempts.unwrap_or(rules.default_max_attempts);
    if !(1..=tether_tasks::kind::MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(ServiceError::invalid(
            "max_attempts",
            max_attempts,
            format!("1 to {}", tether_tasks::kind::MAX_ATTEMPTS),
        ));
    }
    let lease_secs = req.lease_secs.unwrap_or(rules.default_lease_secs);
    let (min, max) = (
        tether_tasks::kind::MIN_LEASE_SECS,
        tether_tasks::kind::MAX_LEASE_SECS,
    );
    if !(min..=max).contains(&lease_secs) {
        return Err(ServiceError::invalid(
            "lease_secs",
            lease_secs,
            format!("{min} to {max} seconds"),
        ));
    }
    if let Some(d) = req.deadline_secs
        && !(1..=MAX_DEADLINE_SECS).contains(&d)
    {
        return Err(ServiceError::invalid(
            "deadline_secs",
            d,
            format!("1 to {MAX_DEADLINE_SECS} seconds"),
        ));
    }
    let tz = zone_of(ctx, &req.target).await?;
    if let Some(hours) = &req.allowed_hours {
        Window::parse(hours, &tz).map_err(ServiceError::TaskSchedule)?;
    }
    // The discovery spec's parser and limits are the scanner's (the agent
    // runs the same check before it scans). It cannot live in
    // tether-tasks' hook: tether-scan depends on tether-tasks.
    if req.kind == tether_wire::TaskKind::Discover {
        tether_scan::DiscoverSpec::from_json(&spec)
            .and_then(|s| s.plan())
            .map_err(ServiceError::ScanSpec)?;
    }
    if req.require_approval && req.kind != tether_wire::TaskKind::Deploy {
        return Err(ServiceError::ApprovalNotApplicable(req.kind));
    }
    // The deploy spec's parser is the endpoint's, for the same reason.
    if req.kind == tether_wire::TaskKind::Deploy {
        let deploy =
            tether_deploy::DeploySpec::from_json(&spec).map_err(ServiceError::DeploySpec)?;
        super::issuance::check_issuer(ctx, &deploy).await?;
    }
    let mut checked = req.clone();
    checked.spec = spec;
    checked.max_attempts = Some(max_attempts);
    checked.lease_secs = Some(lease_secs);
    Ok((checked, tz))
}

fn kinds(k: &[tether_wire::AgentKind]) -> String {
    k.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A new queued task from a checked request.
fn snapshot(
    req: &NewTask<Value>,
    tz: &str,
    now: OffsetDateTime,
    schedule_id: Option<Uuid>,
) -> TaskSnapshot {
    let task = TaskSnapshot {
        id: Uuid::new_v4(),
        kind: req.kind,
        spec: req.spec.clone(),
        target: req.target.clone(),
        state: TaskState::Queued,
        attempt: 0,
        max_attempts: req.max_attempts.unwrap_or(1),
        epoch: 0,
        lease_secs: req.lease_secs.unwrap_or(60),
        deadline_at: req
            .deadline_secs
            .and_then(|d| i64::try_from(d).ok())
            .map(|d| now + Duration::seconds(d)),
        allowed_hours: req.allowed_hours.clone(),
        tz: tz.to_owned(),
        leased_to: None,
        lease_expires_at: None,
        heartbeat_at: None,
        progress: None,
        cancel_requested: false,
        last_error: None,
        reason: Some(match schedule_id {
            Some(s) => format!("created by schedule {s}"),
            None => "created by an admin".to_owned(),
        }),
        outcome: None,
        not_before: now,
        schedule_id,
        created_at: now,
        updated_at: now,
        finished_at: None,
        version: 0,
        result_chunks: 0,
        approval: req.require_approval.then(Approval::awaiting),
    };
    with_hold_reason(task)
}

/// A held task's reason ends with what to do about it, naming its id.
fn with_hold_reason(mut task: TaskSnapshot) -> TaskSnapshot {
    if task.held() {
        let why = tether_tasks::lease::awaiting_approval(task.id);
        task.reason = Some(match task.reason.take() {
            Some(r) => format!("{r}; {why}"),
            None => why,
        });
    }
    task
}

/// Wakes the agents that may run `task`, now or when its window opens.
fn announce(ctx: &Ctx, task: &TaskSnapshot) {
    let now = ctx.now();
    let opens = task
        .allowed_hours
        .as_ref()
        .and_then(|h| Window::parse(h, &task.tz).ok())
        .and_then(|w| match w.state(now) {
            WindowState::Open => None,
            WindowState::Closed { opens_at } => Some(opens_at),
        });
    let at = opens.or((task.not_before > now).then_some(task.not_before));
    match at {
        Some(at) => ctx.tasks.wake_at(task.target.clone(), at, now),
        None => ctx.tasks.wake(&task.target),
    }
    // The other servers' polls too (see `wakeups`), from a timer of this
    // process when the task may not start yet. Outside the caller's
    // request: the task is stored, and a lost wake-up only delays it until
    // the polls return.
    let delay = at
        .and_then(|at| std::time::Duration::try_from(at - now).ok())
        .unwrap_or_default();
    let store = Arc::clone(&ctx.store);
    let target = task.target.clone();
    let task_id = task.id;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Err(error) = store.publish_task_wake(&target).await {
            warn!(error = %error, task_id = %task_id, "could not wake the other servers' polls; they see the task when their polls return");
        }
    });
}

/// Creates a task, or a schedule when the request has one.
pub async fn create(ctx: &Ctx, req: NewTask<Value>) -> Result<Created, ServiceError> {
    let (checked, tz) = check(ctx, &req).await?;
    let now = ctx.now();
    if let Some(rule) = &checked.schedule {
        let (parsed, tz) = schedule::parse(rule, &tz).map_err(ServiceError::TaskSchedule)?;
        let next = parsed.next_after(now).ok_or_else(|| {
            ServiceError::TaskSchedule(schedule::ScheduleError::new(
                "schedule",
                format!("{rule:?}"),
                "a rule that runs at least once in the coming years",
            ))
        })?;
        let mut template = checked.clone();
        template.schedule = None;
        let record = ScheduleRecord {
            id: Uuid::new_v4(),
            rule: json_text(rule)?,
            tz,
            template: json_text(&template)?,
            next_run_at: next,
            last_run_at: None,
            last_task_id: None,
            missed: Vec::new(),
            created_at: now,
        };
        ctx.store.insert_schedule(&record).await?;
        info!(schedule_id = %record.id, kind = %checked.kind, next_run = %super::rfc(next), "created a schedule");
        return Ok(Created::Schedule(schedule_info(&record)?));
    }
    let task = snapshot(&checked, &tz, now, None);
    ctx.store.insert_task(&task).await?;
    info!(task_id = %task.id, kind = %task.kind, target = ?task.target, "created a task");
    announce(ctx, &task);
    Ok(Created::Task(info_of(ctx, &task).await?))
}

/// Creates a one-off task with a chosen id (a renewal names its tasks
/// before creating them, so a repeated creation is a conflict, never a
/// second task), saying who created it in its reason.
pub(crate) async fn create_with_id(
    ctx: &Ctx,
    req: NewTask<Value>,
    id: Uuid,
    reason: String,
) -> Result<TaskSnapshot, ServiceError> {
    let (checked, tz) = check(ctx, &req).await?;
    let mut task = snapshot(&checked, &tz, ctx.now(), None);
    task.id = id;
    task.reason = Some(reason);
    let task = with_hold_reason(task);
    ctx.store.insert_task(&task).await?;
    info!(task_id = %task.id, kind = %task.kind, target = ?task.target, "created a task");
    announce(ctx, &task);
    Ok(task)
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::Conflict(format!("cannot encode: {e}")))
}

fn schedule_info(r: &ScheduleRecord) -> Result<ScheduleInfo<Value>, ServiceError> {
    let corrupt = |e: serde_json::Error| {
        ServiceError::Store(StoreError::Corrupt(format!("schedule {}: {e}", r.id)))
    };
    Ok(ScheduleInfo {
        id: r.id,
        rule: serde_json::from_str(&r.rule).map_err(corrupt)?,
        tz: r.tz.clone(),
        template: serde_json::from_str(&r.template).map_err(corrupt)?,
        next_run_at: r.next_run_at,
        last_run_at: r.last_run_at,
        last_task_id: r.last_task_id,
        missed: r.missed.clone(),
        created_at: r.created_at,
    })
}

/// Who could run tasks, remembered per list call so that many tasks of one
/// group cost one read of that group's agents.
#[derive(Default)]
struct EligibleCache {
    groups: std::collections::HashMap<(String, tether_wire::AgentKind), (u32, u32)>,
    agents: BTreeMap<Uuid, Option<AgentView>>,
}

impl EligibleCache {
    async fn agent(&mut self, ctx: &Ctx, id: Uuid) -> Result<Option<AgentView>, ServiceError> {
        if let Some(v) = self.agents.get(&id) {
            return Ok(v.clone());
        }
        let view = match ctx.store.agent(id).await? {
            None => None,
            Some(a) => {
                let since = ctx
                    .store
                    .transitions(id, 1)
                    .await?
                    .first()
                    .filter(|t| t.to == a.status)
                    .map(|t| t.at);
                Some(AgentView {
                    name: a.name,
                    status: a.status,
                    since,
                    last_seen: a.last_seen,
                })
            }
        };
        self.agents.insert(id, view.clone());
        Ok(view)
    }

    async fn eligible(&mut self, ctx: &Ctx, target: &TaskTarget) -> Result<Eligible, ServiceError> {
        match target {
            TaskTarget::Agent { agent_id } => {
                Ok(Eligible::Agent(self.agent(ctx, *agent_id).await?))
            }
            TaskTarget::Group {
                group, agent_kind, ..
            } => {
                let key = (group.clone(), *agent_kind);
                if let Some((total, active)) = self.groups.get(&key) {
                    return Ok(Eligible::Group {
                        total: *total,
                        active: *active,
                    });
                }
                // Only this group's agents, every page of them.
                let mut pages = super::agents::Pages::new(tether_store::AgentFilter {
                    group: Some(group.clone()),
                    ..Default::default()
                });
                let (mut total, mut active) = (0u32, 0u32);
                while let Some(page) = pages.next(ctx).await? {
                    for a in page.iter().filter(|a| a.kind == *agent_kind) {
                        total += 1;
                        if a.status == AgentStatus::Active {
                            active += 1;
                        }
                    }
                }
                self.groups.insert(key, (total, active));
                Ok(Eligible::Group { total, active })
            }
        }
    }
}

async fn info_cached(
    ctx: &Ctx,
    cache: &mut EligibleCache,
    task: &TaskSnapshot,
) -> Result<TaskInfo<Value>, ServiceError> {
    let waiting = match task.state {
        TaskState::Queued | TaskState::Leased => {
            let eligible = cache.eligible(ctx, &task.target).await?;
            let holder = match task.leased_to {
                Some(a) => cache.agent(ctx, a).await?.map(|v| v.name),
                None => None,
            };
            tether_tasks::reason::waiting(task, &eligible, holder.as_deref(), ctx.now())
        }
        _ => None,
    };
    Ok(task.info(waiting))
}

async fn info_of(ctx: &Ctx, task: &TaskSnapshot) -> Result<TaskInfo<Value>, ServiceError> {
    info_cached(ctx, &mut EligibleCache::default(), task).await
}

/// Tasks, newest first, each with the reason it waits.
pub async fn list(
    ctx: &Ctx,
    filter: &TaskFilter,
    limit: Option<u32>,
) -> Result<Vec<TaskInfo<Value>>, ServiceError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ServiceError::invalid(
            "limit",
            limit,
            format!("1 to {MAX_LIST}"),
        ));
    }
    let tasks = ctx.store.list_tasks(filter, limit).await?;
    let mut cache = EligibleCache::default();
    let mut out = Vec::with_capacity(tasks.len());
    for t in &tasks {
        out.push(info_cached(ctx, &mut cache, t).await?);
    }
    Ok(out)
}

/// One task with the current epoch's results.
pub async fn show(ctx: &Ctx, id: Uuid) -> Result<TaskDetail<Value>, ServiceError> {
    let task = ctx.store.task(id).await?.ok_or_else(|| not_found(id))?;
    let results = ctx
        .store
        .results(id, task.epoch, MAX_RESULTS)
        .await?
        .into_iter()
        .flatten()
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                ServiceError::Store(StoreError::Corrupt(format!(
                    "a result chunk of task {id}: {e}"
                )))
            })
        })
        .collect::<Result<Vec<Value>, _>>()?;
    Ok(TaskDetail {
        task: info_of(ctx, &task).await?,
        results,
    })
}

pub async fn cancel(ctx: &Ctx, id: Uuid) -> Result<TaskInfo<Value>, ServiceError> {
    let now = ctx.now();
    let t = mutate(ctx, id, |t| t.cancel(now).map(Some).map_err(refused(id))).await?;
    info!(task_id = %id, state = %t.state, "cancelled a task");
    info_of(ctx, &t).await
}

/// The longest rejection reason, in characters.
pub const MAX_REJECT_REASON: usize = 1024;

/// An admin (`by`, the credential's name) approves a held deploy: from now
/// on its agent may lease it, within its allowed hours.
pub async fn approve(ctx: &Ctx, id: Uuid, by: &str) -> Result<TaskInfo<Value>, ServiceError> {
    let now = ctx.now();
    let t = mutate(ctx, id, |t| {
        t.approve(by, now).map(Some).map_err(refused(id))
    })
    .await?;
    info!(task_id = %id, approved_by = %by, "approved a task");
    announce(ctx, &t);
    info_of(ctx, &t).await
}

/// An admin rejects a held deploy: it ends cancelled with `reason`, never
/// leased, so nothing on its target changed.
pub async fn reject(
    ctx: &Ctx,
    id: Uuid,
    by: &str,
    reason: &str,
) -> Result<TaskInfo<Value>, ServiceError> {
    let reason = reason.trim();
    let count = reason.chars().count();
    if count == 0 || count > MAX_REJECT_REASON || reason.chars().any(char::is_control) {
        return Err(ServiceError::RejectReason(format!(
            "got {count} characters{}; expected 1 to {MAX_REJECT_REASON} characters of one line",
            if reason.chars().any(char::is_control) {
                " with control characters"
            } else {
                ""
            }
        )));
    }
    let now = ctx.now();
    let t = mutate(ctx, id, |t| {
        t.reject(by, reason, now).map(Some).map_err(refused(id))
    })
    .await?;
    info!(task_id = %id, rejected_by = %by, "rejected a task");
    info_of(ctx, &t).await
}

pub async fn retry(ctx: &Ctx, id: Uuid) -> Result<TaskInfo<Value>, ServiceError> {
    let now = ctx.now();
    let t = mutate(ctx, id, |t| t.retry(now).map(Some).map_err(refused(id))).await?;
    info!(task_id = %id, "retried a task");
    announce(ctx, &t);
    info_of(ctx, &t).await
}

pub async fn schedules(ctx: &Ctx) -> Result<Vec<ScheduleInfo<Value>>, ServiceError> {
    ctx.store
        .list_schedules(MAX_LIST)
        .await?
        .iter()
        .map(schedule_info)
        .collect()
}

pub async fn delete_schedule(ctx: &Ctx, id: Uuid) -> Result<(), ServiceError> {
    if ctx.store.delete_schedule(id).await? {
        info!(schedule_id = %id, "deleted a schedule");
        Ok(())
    } else {
        Err(ServiceError::NotFound {
            what: "schedule",
            id: id.to_string(),
        })
    }
}

// ------------------------------------------------------------------- sites

fn check_site_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::SiteInvalid(format!(
            "name {:?}: expected 1-64 letters, digits, '-', '_' or '.'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

pub async fn set_site(ctx: &Ctx, name: &str, tz: &str) -> Result<Site, ServiceError> {
    check_site_name(name)?;
    schedule::zone(tz).map_err(|e| ServiceError::SiteInvalid(e.to_string()))?;
    let site = ctx.store.upsert_site(name, tz, ctx.now()).await?;
    info!(site = %name, tz = %tz, "site set");
    Ok(site)
}

pub async fn sites(ctx: &Ctx) -> Result<Vec<Site>, ServiceError> {
    Ok(ctx.store.list_sites().await?)
}

/// Labels an agent with a site (which must exist), or clears the label.
pub async fn set_agent_site(
    ctx: &Ctx,
    agent: Uuid,
    site: Option<&str>,
) -> Result<(), ServiceError> {
    if let Some(name) = site {
        check_site_name(name)?;
        if !ctx.store.list_sites().await?.iter().any(|s| s.name == name) {
            return Err(ServiceError::SiteInvalid(format!(
                "site {name:?} is not defined; create it with `tether sites set {name} --tz ZONE`"
            )));
        }
    }
    ctx.store
        .set_agent_site(agent, site)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound {
                what: "agent",
                id: agent.to_string(),
            },
            other => other.into(),
        })?;
    info!(agent_id = %agent, site = site.unwrap_or("-"), "agent site set");
    Ok(())
}

// ---------------------------------------------------------------- agent side

fn lease_of(t: &TaskSnapshot) -> TaskLease<Value> {
    TaskLease {
        task_id: t.id,
        kind: t.kind,
        spec: t.spec.clone(),
        epoch: t.epoch,
        attempt: t.attempt,
        max_attempts: t.max_attempts,
        lease_secs: t.lease_secs,
        lease_expires_at: t.lease_expires_at.unwrap_or(t.updated_at),
        deadline_at: t.deadline_at,
    }
}

/// The long poll: leases what is ready, else holds the request until a task
/// for this agent is created or the wait ends.
pub async fn poll(
    ctx: &Ctx,
    agent: &AgentRecord,
    req: TaskPoll,
) -> Result<TaskPollReply<Value>, ServiceError> {
    if req.kinds.len() > 16 {
        return Err(ServiceError::invalid(
            "kinds",
            req.kinds.len(),
            "at most 16 kinds",
        ));
    }
    let capacity = req.capacity.min(MAX_PER_POLL);
    let kinds: Vec<TaskKind> = req
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != TaskKind::Unknown)
        .collect();
    let wait =
        std::time::Duration::from_secs(u64::from(req.wait_secs.min(ctx.tasks.max_wait_secs)));
    let site = ctx.store.agent_site(agent.id).await?;
    let lease = |now| LeaseRequest {
        agent_id: agent.id,
        group: agent.group.clone(),
        agent_kind: agent.kind,
        site: site.clone(),
        kinds: kinds.clone(),
        actions_only: false,
        now,
        limit: capacity,
    };
    if capacity == 0 || kinds.is_empty() {
        // Nothing to hand out; hold the poll anyway so the agent does not spin.
        tokio::time::sleep(wait).await;
        return Ok(TaskPollReply {
            leases: Vec::new(),
            retry_after_secs: None,
        });
    }
    // Register before the first query, so a task created in between wakes us.
    let registration = ctx.tasks.register(agent.id, &agent.group, agent.kind);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let leased = ctx.store.lease_tasks(&lease(ctx.now())).await?;
        if !leased.is_empty() {
            for t in &leased {
                info!(task_id = %t.id, agent_id = %agent.id, epoch = t.epoch, attempt = t.attempt, kind = %t.kind, "leased a task");
            }
            return Ok(TaskPollReply {
                leases: leased.iter().map(lease_of).collect(),
                retry_after_secs: None,
            });
        }
        let Some(reg) = &registration else {
            return Err(ServiceError::PollersFull {
                held: ctx.tasks.held(),
                max: ctx.tasks.max_pollers,
            });
        };
        if tokio::time::timeout_at(deadline, reg.notify.notified())
            .await
            .is_err()
        {
            return Ok(TaskPollReply {
                leases: Vec::new(),
                retry_after_secs: None,
            });
        }
    }
}

/// Extends the lease; says whether the agent must stop.
pub async fn heartbeat(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    hb: Heartbeat,
) -> Result<HeartbeatReply, ServiceError> {
    if let Some(p) = &hb.progress {
        text("progress.message", &p.message)?;
    }
    let now = ctx.now();
    let t = mutate(ctx, id, |t| {
        t.heartbeat(agent.id, hb.epoch, hb.progress.clone(), now)
            .map(Some)
            .map_err(refused(id))
    })
    .await?;
    debug!(task_id = %id, agent_id = %agent.id, epoch = hb.epoch, "heartbeat");
    Ok(HeartbeatReply {
        lease_expires_at: t.lease_expires_at.unwrap_or(now),
        cancel: t.cancel_requested,
    })
}

fn text(field: &'static str, value: &str) -> Result<(), ServiceError> {
    if value.len() > tether_tasks::lease::MAX_TEXT * 4 {
        return Err(ServiceError::invalid(
            field,
            format!("{} bytes", value.len()),
            format!("at most {} bytes", tether_tasks::lease::MAX_TEXT * 4),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ServiceError::invalid(
            field,
            "control characters",
            "plain text",
        ));
    }
    Ok(())
}

/// Stores a result chunk once; the chunk with an outcome ends the attempt.
pub async fn result(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    chunk: ResultChunk<Value>,
) -> Result<ResultAck, ServiceError> {
    if chunk.chunk >= MAX_CHUNKS {
        return Err(ServiceError::invalid(
            "chunk",
            chunk.chunk,
            format!("below {MAX_CHUNKS}"),
        ));
    }
    if let Some(o) = &chunk.outcome {
        text("outcome.message", &o.message)?;
    }
    let task = ctx.store.task(id).await?.ok_or_else(|| not_found(id))?;
    // A chunk the server already has is acknowledged whatever happened
    // since: the agent only needs to know it may forget it.
    let items = chunk.items.as_ref().map(json_text).transpose()?;
    match task.accept_result(agent.id, chunk.epoch) {
        Ok(()) => {}
        Err(refusal) => {
            if chunk.epoch == task.epoch && task.state.is_final() {
                // The attempt already ended (a retry of the last chunk).
                return Ok(ResultAck {
                    stored: false,
                    state: task.state,
                });
            }
            warn!(task_id = %id, agent_id = %agent.id, epoch = chunk.epoch, current = task.epoch, refusal = %refusal, "refused a result");
            return Err(refused(id)(refusal));
        }
    }
    // Discover results feed the inventory, idempotently, before the chunk
    // is stored: a delivery that fails between the two is retried whole.
    if task.kind == TaskKind::Discover
        && let Some(items) = &chunk.items
    {
        super::certs::ingest(ctx, agent, &task, chunk.epoch, items).await?;
    }
    // A deploy's report (and its verifying handshake) likewise.
    if task.kind == TaskKind::Deploy
        && let Some(items) = &chunk.items
    {
        super::issuance::record(ctx, agent, &task, chunk.epoch, items).await?;
    }
    let stored = ctx
        .store
        .insert_result(id, chunk.epoch, chunk.chunk, items.as_deref(), ctx.now())
        .await?;
    if task.kind == TaskKind::Doctor
        && let Some(items) = &chunk.items
        && let Ok(summary) = serde_json::from_value::<DoctorSummary>(items.clone())
    {
        super::actions::summary(&summary)?;
        ctx.store.record_doctor(agent.id, &summary).await?;
    }
    let Some(outcome) = chunk.outcome else {
        return Ok(ResultAck {
            stored,
            state: task.state,
        });
    };
    // The inventory settles the scan's absences before the attempt ends:
    // settling is idempotent, so a delivery retried after a failure between
    // the two loses nothing.
    if task.kind == TaskKind::Discover {
        let completed = outcome.outcome == Outcome::Ok;
        super::certs::complete(ctx, &task, chunk.epoch, completed).await?;
    }
    let done = finish(ctx, agent, id, chunk.epoch, &outcome).await?;
    Ok(ResultAck {
        stored,
        state: done.state,
    })
}

async fn finish(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    epoch: u64,
    outcome: &TaskOutcome,
) -> Result<TaskSnapshot, ServiceError> {
    let now = ctx.now();
    let t = mutate(ctx, id, |t| {
        t.finish(agent.id, epoch, outcome, now)
            .map(|(t, _)| Some(t))
            .map_err(refused(id))
    })
    .await?;
    info!(task_id = %id, agent_id = %agent.id, epoch, state = %t.state, outcome = ?outcome.outcome, "an attempt ended");
    if t.state == TaskState::Queued {
        announce(ctx, &t);
    }
    Ok(t)
}

// ------------------------------------------------------ actions, the old way

/// An admin action as a task: for one agent, a short lease.
pub async fn create_action(
    ctx: &Ctx,
    agent_id: Uuid,
    kind: &ActionKind,
) -> Result<TaskInfo<Value>, ServiceError> {
    let (kind, spec) = match kind {
        ActionKind::Doctor { upload } => {
            (TaskKind::Doctor, serde_json::json!({ "upload": upload }))
        }
        ActionKind::UpdateDefs { channel } => (
            TaskKind::UpdateDefs,
            serde_json::json!({ "channel": channel }),
        ),
        other => {
            return Err(ServiceError::invalid(
                "type",
                format!("{other:?}"),
                "\"doctor\" or \"update_defs\"",
            ));
        }
    };
    let req = NewTask {
        kind,
        spec,
        target: TaskTarget::Agent { agent_id },
        max_attempts: None,
        lease_secs: None,
        deadline_secs: None,
        allowed_hours: None,
        schedule: None,
        require_approval: false,
    };
    let (checked, tz) = check(ctx, &req).await.map_err(|e| match e {
        ServiceError::TaskTarget(_) => ServiceError::NotFound {
            what: "agent",
            id: agent_id.to_string(),
        },
        other => other,
    })?;
    let task = snapshot(&checked, &tz, ctx.now(), None);
    ctx.store.insert_task(&task).await?;
    info!(task_id = %task.id, agent_id = %agent_id, kind = %task.kind, "queued an admin action as a task");
    announce(ctx, &task);
    info_of(ctx, &task).await
}

/// An action task as the old actions API shows it.
pub fn action_info(
    t: &TaskInfo<Value>,
    agent_id: Uuid,
    doctor: Option<DoctorSummary>,
) -> ActionInfo {
    let kind = match t.kind {
        TaskKind::Doctor => ActionKind::Doctor {
            upload: t
                .spec
                .get("upload")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        },
        TaskKind::UpdateDefs => ActionKind::UpdateDefs {
            channel: t
                .spec
                .get("channel")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        _ => ActionKind::Unknown,
    };
    let state = match t.state {
        TaskState::Queued => ActionState::Queued,
        TaskState::Leased => ActionState::Delivered,
        _ => ActionState::Completed,
    };
    ActionInfo {
        id: t.id,
        agent_id,
        kind,
        state,
        created_at: t.created_at,
        delivered_at: (t.epoch > 0).then_some(t.updated_at),
        completed_at: t.finished_at,
        result: t.outcome.as_ref().map(|o| ActionResult {
            ok: o.outcome == Outcome::Ok,
            message: o.message.clone(),
            doctor,
        }),
    }
}

/// The doctor verdict a finished doctor task reported, if any.
pub async fn doctor_of(
    ctx: &Ctx,
    t: &TaskInfo<Value>,
) -> Result<Option<DoctorSummary>, ServiceError> {
    if t.kind != TaskKind::Doctor || t.result_chunks == 0 {
        return Ok(None);
    }
    let chunks = ctx.store.results(t.id, t.epoch, 4).await?;
    Ok(chunks
        .into_iter()
        .flatten()
        .find_map(|c| serde_json::from_str::<DoctorSummary>(&c).ok()))
}

/// Check-in delivery of admin actions to an agent that holds no poll here
/// (an agent one version older, or one past the poll cap): they are leased
/// like any task and handed out as actions, the way agents always got them.
pub async fn deliver_actions(
    ctx: &Ctx,
    agent: &AgentRecord,
    limit: u32,
) -> Result<Vec<Action>, ServiceError> {
    if ctx.tasks.is_polling(agent.id) {
        return Ok(Vec::new());
    }
    let leased = ctx
        .store
        .lease_tasks(&LeaseRequest {
            agent_id: agent.id,
            group: agent.group.clone(),
            agent_kind: agent.kind,
            site: None,
            kinds: vec![TaskKind::Doctor, TaskKind::UpdateDefs],
            actions_only: true,
            now: ctx.now(),
            limit,
        })
        .await?;
    Ok(leased
        .iter()
        .map(|t| {
            info!(task_id = %t.id, agent_id = %agent.id, kind = %t.kind, "delivered an action task at check-in");
            Action {
                id: t.id,
                kind: action_info(&t.info(None), agent.id, None).kind,
            }
        })
        .collect())
}

/// Whether `id` is an action task handed to this agent (leased to it now).
pub async fn holds_action(ctx: &Ctx, agent: &AgentRecord, id: Uuid) -> Result<bool, ServiceError> {
    Ok(ctx
        .store
        .task(id)
        .await?
        .is_some_and(|t| t.kind.is_action() && t.leased_to == Some(agent.id)))
}

/// `POST /v1/agent/actions/{id}/result` for an action that is a task: ends
/// its current attempt. `None` when `id` is not a task.
pub async fn complete_action(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    result: &ActionResult,
) -> Result<Option<ActionInfo>, ServiceError> {
    let Some(task) = ctx.store.task(id).await? else {
        return Ok(None);
    };
    // As for actions: another agent's is unknown to this one, and a
    // finished one cannot be completed again.
    if !task.kind.is_action() || task.leased_to != Some(agent.id) {
        return Ok(None);
    }
    if task.state.is_final() {
        return Err(ServiceError::Conflict(format!(
            "action {id} is completed; only a delivered action can be completed"
        )));
    }
    if let Some(d) = &result.doctor {
        super::actions::summary(d)?;
        ctx.store.record_doctor(agent.id, d).await?;
        let items = json_text(d)?;
        ctx.store
            .insert_result(id, task.epoch, 0, Some(&items), ctx.now())
            .await?;
    }
    let outcome = TaskOutcome {
        outcome: if result.ok {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        message: result.message.clone(),
    };
    let done = finish(ctx, agent, id, task.epoch, &outcome).await?;
    let info = info_of(ctx, &done).await?;
    Ok(Some(action_info(&info, agent.id, result.doctor.clone())))
}

// ----------------------------------------------------------------- sweeper

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub past_deadline: usize,
    pub fired: usize,
}

/// Expires leases, dead-letters tasks past their deadline, fires due schedules.
pub async fn sweep(ctx: &Ctx) -> Result<Swept, ServiceError> {
    let now = ctx.now();
    let mut swept = Swept::default();
    let grace = ctx.tasks.grace_until;
    if now >= grace {
        for t in ctx.store.expired_leases(now, SWEEP_BATCH).await? {
            let holder = match t.leased_to {
                Some(a) => ctx
                    .store
                    .agent(a)
                    .await?
                    .map_or_else(|| a.to_string(), |r| r.name),
                None => "-".to_owned(),
            };
            let r = mutate(ctx, t.id, |cur| {
                Ok(cur
                    .lease_expired(now, grace)
                    .then(|| cur.expire(&holder, now).0))
            })
            .await;
            match r {
                Ok(t) if t.state != TaskState::Leased => {
                    swept.expired += 1;
                    info!(task_id = %t.id, state = %t.state, reason = t.reason.as_deref().unwrap_or(""), "a lease expired");
                    if t.state == TaskState::Queued {
                        announce(ctx, &t);
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(task_id = %t.id, error = %e, "could not expire a lease"),
            }
        }
    }
    for t in ctx.store.tasks_past_deadline(now, SWEEP_BATCH).await? {
        match mutate(ctx, t.id, |cur| Ok(cur.past_deadline(now))).await {
            Ok(t) if t.state == TaskState::Dead => {
                swept.past_deadline += 1;
                info!(task_id = %t.id, reason = t.reason.as_deref().unwrap_or(""), "a task passed its deadline");
            }
            Ok(_) => {}
            Err(e) => warn!(task_id = %t.id, error = %e, "could not dead-letter a task"),
        }
    }
    for s in ctx.store.due_schedules(now, SWEEP_BATCH).await? {
        match fire(ctx, &s, now).await {
            Ok(true) => swept.fired += 1,
            Ok(false) => {}
            Err(e) => warn!(schedule_id = %s.id, error = %e, "could not fire a schedule"),
        }
    }
    Ok(swept)
}

/// Runs a due schedule once, however many runs were missed.
async fn fire(ctx: &Ctx, s: &ScheduleRecord, now: OffsetDateTime) -> Result<bool, ServiceError> {
    let info = schedule_info(s)?;
    let (rule, _) = schedule::parse(&info.rule, &s.tz).map_err(ServiceError::TaskSchedule)?;
    let due = rule.due(s.next_run_at, now);
    if !due.run {
        return Ok(false);
    }
    let mut missed: Vec<String> = due.missed.iter().map(|t| super::rfc(*t)).collect();
    if due.missed_count > due.missed.len() {
        missed.push(format!("… {} missed in all", due.missed_count));
    }
    let task = snapshot(&info.template, &s.tz, now, Some(s.id));
    let run = ScheduleRun {
        schedule_id: s.id,
        due_at: s.next_run_at,
        next_run_at: due.next,
        missed: missed.clone(),
        at: now,
        task: task.clone(),
    };
    let fired = ctx.store.fire_schedule(&run).await?;
    if fired {
        info!(schedule_id = %s.id, task_id = %task.id, missed = due.missed_count, next_run = %super::rfc(due.next), "a schedule ran");
        announce(ctx, &task);
    }
    Ok(fired)
}

/// Runs [`sweep`] every `interval` until `stop`.
pub async fn run_sweeper(
    ctx: Ctx,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if !ctx.singletons.holds(crate::singleton::Job::TaskSweeper) {
                    continue;
                }
                if let Err(error) = sweep(&ctx).await {
                    warn!(error = %error, "the task sweep failed; retrying at the next tick");
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    debug!("task sweeper stopped");
}

/// The hub for a server started at `now`.
pub fn hub(
    max_pollers: usize,
    max_wait_secs: u32,
    grace_secs: u32,
    now: OffsetDateTime,
) -> Arc<hub::TaskHub> {
    Arc::new(hub::TaskHub::new(
        max_pollers,
        max_wait_secs,
        now + Duration::seconds(i64::from(grace_secs)),
    ))
}
