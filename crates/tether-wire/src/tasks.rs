//! The task queue's bodies: what an admin creates, what an agent leases, its
//! heartbeats and its results.
//!
//! A task's spec is kind-specific data. This crate stays free of a JSON
//! library, so the bodies that carry a spec or result items are generic over
//! it (`S`); the server, the client and the agent instantiate them with
//! `serde_json::Value`, and each kind parses its own spec at the edge.
//!
//! | method | path | body → reply |
//! |---|---|---|
//! | POST | `/v1/admin/tasks` | [`NewTask`] → [`TaskInfo`] (201), or [`ScheduleInfo`] when it has a schedule |
//! | GET | `/v1/admin/tasks?state=S&agent=ID&limit=N` | → `Vec<`[`TaskInfo`]`>` |
//! | GET | `/v1/admin/tasks/{id}` | → [`TaskDetail`] |
//! | POST | `/v1/admin/tasks/{id}/cancel` | → [`TaskInfo`] |
//! | POST | `/v1/admin/tasks/{id}/retry` | → [`TaskInfo`] |
//! | POST | `/v1/admin/tasks/{id}/approve` | → [`TaskInfo`] (a held `deploy`: leased from now on) |
//! | POST | `/v1/admin/tasks/{id}/reject` | [`RejectTask`] → [`TaskInfo`] (a held `deploy`: cancelled with the reason) |
//! | GET | `/v1/admin/schedules` | → `Vec<`[`ScheduleInfo`]`>` |
//! | DELETE | `/v1/admin/schedules/{id}` | → 204 |
//! | PUT | `/v1/admin/sites/{name}` | [`SiteUpdate`] → [`Site`] |
//! | GET | `/v1/admin/sites` | → `Vec<`[`Site`]`>` |
//! | PUT | `/v1/admin/agents/{id}/site` | [`AgentSiteUpdate`] → 204 |
//! | POST | `/v1/agent/tasks/poll` | [`TaskPoll`] → [`TaskPollReply`] (held up to `wait_secs`) |
//! | POST | `/v1/agent/tasks/{id}/heartbeat` | [`Heartbeat`] → [`HeartbeatReply`] |
//! | POST | `/v1/agent/tasks/{id}/results` | [`ResultChunk`] → [`ResultAck`] |
//! | POST | `/v1/agent/tasks/{id}/issue` | [`IssueRequest`](crate::IssueRequest) → [`IssueResponse`](crate::IssueResponse) (a leased `deploy` task's CSR, signed by the built-in CA); for an ACME issuer first 202 [`IssuePending`](crate::IssuePending) (designed, not served yet) |
//! | GET | `/v1/admin/certs/{fingerprint}/history` | → [`CertHistory`](crate::CertHistory) |

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AgentKind;

/// What a task does. Each kind has its own spec, checked by the server when
/// the task is created, and its own executor on the agent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskKind {
    /// Scan targets for TLS endpoints and report their certificates.
    Discover,
    /// Run the connectivity doctor; with `{"upload": true}` also collect and
    /// upload the escalation bundle (the admin action of the same name).
    Doctor,
    /// Check the definitions channels now (the admin action of the same name).
    UpdateDefs,
    /// Make a key and CSR on the host, have the control plane's built-in CA
    /// sign it, and deploy the certificate to a PEM set (issue #10).
    Deploy,
    /// A kind this build does not know (a newer server's).
    #[serde(other)]
    Unknown,
}

impl TaskKind {
    /// The kinds an admin can create, in the order they are listed.
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Discover,
        TaskKind::Doctor,
        TaskKind::UpdateDefs,
        TaskKind::Deploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Discover => "discover",
            TaskKind::Doctor => "doctor",
            TaskKind::UpdateDefs => "update_defs",
            TaskKind::Deploy => "deploy",
            TaskKind::Unknown => "unknown",
        }
    }

    /// Admin actions: short work with a short lease, which agents one version
    /// older still receive at check-in.
    pub fn is_action(self) -> bool {
        matches!(self, TaskKind::Doctor | TaskKind::UpdateDefs)
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown task kind {s:?} (expected discover, doctor, update_defs or deploy)"
                )
            })
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting to be leased; [`TaskInfo::waiting`] says why it waits.
    Queued,
    /// Leased to one agent until `lease_expires_at`.
    Leased,
    /// Finished, with its outcome.
    Succeeded,
    /// Dead-lettered: its last attempt failed, or its deadline passed. It
    /// keeps the last error; `retry` revives it.
    Dead,
    /// Cancelled by an admin.
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Queued,
        TaskState::Leased,
        TaskState::Succeeded,
        TaskState::Dead,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Leased => "leased",
            TaskState::Succeeded => "succeeded",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to the task unless an admin retries it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Dead | TaskState::Cancelled
        )
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown task state {s:?} (expected queued, leased, succeeded, dead or cancelled)"
                )
            })
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may run a task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskTarget {
    /// This one agent.
    Agent { agent_id: Uuid },
    /// Any eligible agent of the group and kind (and site, when given).
    Group {
        group: String,
        agent_kind: AgentKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
    },
}

/// Local hours during which a task may start, in the site's (or the given)
/// time zone. `from` > `to` spans midnight (22:00–04:00).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllowedHours {
    /// `HH:MM`.
    pub from: String,
    /// `HH:MM`.
    pub to: String,
}

/// How a recurring task repeats.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleRule {
    /// Every `secs` seconds after the previous run was due.
    Interval { secs: u64 },
    /// A five-field cron expression (`minute hour day month weekday`, weekdays
    /// by name) in a time zone: the one given, else the target site's, else UTC.
    Cron {
        expr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tz: Option<String>,
    },
}

/// `POST /v1/admin/tasks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask<S> {
    pub kind: TaskKind,
    pub spec: S,
    pub target: TaskTarget,
    /// Attempts before the task is dead-lettered (default per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The visibility timeout: a lease not extended by a heartbeat for this
    /// long expires (default per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u32>,
    /// Seconds from creation after which the task is dead-lettered if it has
    /// not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hours: Option<AllowedHours>,
    /// Makes this a recurring task: the reply is the schedule, and each run
    /// creates a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleRule>,
    /// Hold the task until an admin approves it (`deploy` only): no agent
    /// leases it, so nothing on the target changes and no reload runs,
    /// before `POST /v1/admin/tasks/{id}/approve`. Absent in older bodies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_approval: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a task that needs an admin's approval stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Held: no agent may lease it until an admin approves.
    Awaiting,
    /// Released by an admin.
    Approved,
    /// Refused by an admin; the task ended cancelled.
    Rejected,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Awaiting => "awaiting",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for ApprovalState {
    type Err = String;

    fn from_str(s: &str) -> Result<ApprovalState, String> {
        match s {
            "awaiting" => Ok(ApprovalState::Awaiting),
            "approved" => Ok(ApprovalState::Approved),
            "rejected" => Ok(ApprovalState::Rejected),
            other => Err(format!(
                "approval state {:?}: expected awaiting, approved or rejected",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// A task's approval: whether it still waits, and who decided when.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub state: ApprovalState,
    /// The admin credential's name that approved or rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub at: Option<OffsetDateTime>,
}

impl Approval {
    /// A task held until an admin approves it.
    pub fn awaiting() -> Approval {
        Approval {
            state: ApprovalState::Awaiting,
            by: None,
            at: None,
        }
    }
}

/// `POST /v1/admin/tasks/{id}/reject`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectTask {
    /// Why, in one line (1 to 1024 characters): the task's reason and
    /// error, and a renewal's failure reason.
    pub reason: String,
}

/// Progress an agent reports with a heartbeat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub message: String,
}

impl Progress {
    /// Whole percent done, when the total is known and not zero.
    pub fn percent(&self) -> Option<u64> {
        self.total
            .filter(|t| *t > 0)
            .map(|t| self.done.min(t).saturating_mul(100) / t)
    }
}

/// What became of an attempt, as the agent reports it with its last chunk.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The work was done (a doctor run that found a fault was still done).
    Ok,
    /// The attempt failed; the task is retried while attempts remain.
    Failed,
    /// The agent stopped the work because the task was cancelled.
    Cancelled,
}

/// The end of an attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub outcome: Outcome,
    /// One line for the admin.
    pub message: String,
}

/// One task, as the admin sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo<S> {
    pub id: Uuid,
    pub kind: TaskKind,
    pub spec: S,
    pub target: TaskTarget,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The fencing token of the current (or last) lease; 0 before the first.
    pub epoch: u64,
    pub lease_secs: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub allowed_hours: Option<AllowedHours>,
    /// The agent holding (or that last held) the lease.
    #[serde(default)]
    pub leased_to: Option<Uuid>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub heartbeat_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub progress: Option<Progress>,
    /// Set when an admin cancelled a leased task: the agent learns it at its
    /// next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The last attempt's error, kept when dead-lettered.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Why the task was last put back, or how it ended.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub outcome: Option<TaskOutcome>,
    /// The earliest time it may be leased (a retry's back-off, a window).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default)]
    pub schedule_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// For a task that is not running: why, in one sentence. Set by the
    /// server for every queued or leased task.
    #[serde(default)]
    pub waiting: Option<String>,
    /// How many result chunks the current epoch has stored.
    #[serde(default)]
    pub result_chunks: u32,
    /// Set for a task created to wait for an admin's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// `GET /v1/admin/tasks/{id}`: the task with its stored results.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail<S> {
    pub task: TaskInfo<S>,
    /// The current epoch's result chunks, in order.
    pub results: Vec<S>,
}

/// `POST /v1/agent/tasks/poll`: the agent's long poll.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPoll {
    /// How long the server may hold the request when nothing is ready
    /// (capped by the server below common load-balancer idle timeouts).
    pub wait_secs: u32,
    /// How many more tasks the agent can start now.
    pub capacity: u32,
    /// The kinds this agent can run.
    pub kinds: Vec<TaskKind>,
}

/// A leased task, handed to an agent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLease<S> {
    pub task_id: Uuid,
    pub kind: TaskKind,
    pub spec: S,
    /// The fencing token: every heartbeat and result carries it.
    pub epoch: u64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_secs: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline_at: Option<OffsetDateTime>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPollReply<S> {
    pub leases: Vec<TaskLease<S>>,
    /// Set when the server is at its cap of held polls: poll again after
    /// this many seconds (check-ins still deliver admin actions meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,
}

/// `POST /v1/agent/tasks/{id}/heartbeat`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub epoch: u64,
    #[serde(default)]
    pub progress: Option<Progress>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// Stop the work: the task was cancelled.
    pub cancel: bool,
}

/// `POST /v1/agent/tasks/{id}/results`: one chunk, idempotent by
/// (task, epoch, chunk). The chunk carrying `outcome` ends the attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultChunk<S> {
    pub epoch: u64,
    /// 0, 1, 2… in order within an epoch.
    pub chunk: u32,
    /// The kind's result items (absent on a chunk that only ends the attempt).
    #[serde(default)]
    pub items: Option<S>,
    #[serde(default)]
    pub outcome: Option<TaskOutcome>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAck {
    /// False when this chunk was already stored (a retry after a lost reply).
    pub stored: bool,
    pub state: TaskState,
}

/// A recurring task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo<S> {
    pub id: Uuid,
    pub rule: ScheduleRule,
    /// The time zone the rule is read in (IANA name).
    pub tz: String,
    /// The task each run creates.
    pub template: NewTask<S>,
    #[serde(with = "time::serde::rfc3339")]
    pub next_run_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_task_id: Option<Uuid>,
    /// Runs that were due while no server ran, run once at `last_run_at`.
    #[serde(default)]
    pub missed: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `PUT /v1/admin/sites/{name}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteUpdate {
    /// An IANA time zone name, e.g. `Europe/Paris`.
    pub tz: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    pub tz: String,
}

/// `PUT /v1/admin/agents/{id}/site`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSiteUpdate {
    /// The site label; `None` clears it.
    pub site: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body written before approvals (no `require_approval`, no
    /// `approval`) still parses, as not held, and is written back
    /// unchanged; a held task's approval round-trips.
    #[test]
    fn bodies_before_approvals_parse_and_write_back_unchanged() {
        let new_task = r#"{"kind":"deploy","spec":{},"target":{"type":"agent","agent_id":"00000000-0000-0000-0000-000000000007"}}"#;
        let parsed: NewTask<serde_json::Value> = serde_json::from_str(new_task).expect("parses");
        assert!(!parsed.require_approval);
        assert_eq!(serde_json::to_string(&parsed).expect("writes"), new_task);
        let held: NewTask<serde_json::Value> = serde_json::from_str(
            r#"{"kind":"deploy","spec":{},"target":{"type":"agent","agent_id":"00000000-0000-0000-0000-000000000007"},"require_approval":true}"#,
        )
        .expect("parses");
        assert!(held.require_approval);

        let info = r#"{"id":"00000000-0000-0000-0000-000000000001","kind":"deploy","spec":{},"target":{"type":"agent","agent_id":"00000000-0000-0000-0000-000000000007"},"state":"queued","attempt":0,"max_attempts":1,"epoch":0,"lease_secs":300,"created_at":"2026-05-17T10:00:00Z","updated_at":"2026-05-17T10:00:00Z"}"#;
        let parsed: TaskInfo<serde_json::Value> = serde_json::from_str(info).expect("parses");
        assert_eq!(parsed.approval, None);
        let written = serde_json::to_value(&parsed).expect("writes");
        assert!(written.get("approval").is_none(), "{written}");
        let approved = Approval {
            state: ApprovalState::Approved,
            by: Some("ops".into()),
            at: Some(time::macros::datetime!(2026-05-17 10:05 UTC)),
        };
        let text = serde_json::to_string(&approved).expect("writes");
        assert_eq!(
            text,
            r#"{"state":"approved","by":"ops","at":"2026-05-17T10:05:00Z"}"#
        );
        assert_eq!(
            serde_json::from_str::<Approval>(&text).expect("parses"),
            approved
        );
    }

    #[test]
    fn unknown_kinds_parse_as_unknown() {
        let k: TaskKind = serde_json::from_str("\"renew\"").expect("parses");
        assert_eq!(k, TaskKind::Unknown);
        let k: TaskKind = serde_json::from_str("\"deploy\"").expect("parses");
        assert_eq!(k, TaskKind::Deploy);
        assert_eq!("update_defs".parse::<TaskKind>(), Ok(TaskKind::UpdateDefs));
        assert!("unknown".parse::<TaskKind>().is_err());
    }

    #[test]
    fn targets_are_tagged() {
        let t: TaskTarget =
            serde_json::from_str(r#"{"type":"group","group":"lab","agent_kind":"discovery"}"#)
                .expect("parses");
        assert_eq!(
            t,
            TaskTarget::Group {
                group: "lab".into(),
                agent_kind: AgentKind::Discovery,
                site: None
            }
        );
    }

    #[test]
    fn percent_is_bounded() {
        let p = Progress {
            done: 40,
            total: Some(100),
            message: String::new(),
        };
        assert_eq!(p.percent(), Some(40));
        let over = Progress {
            done: 400,
            total: Some(100),
            message: String::new(),
        };
        assert_eq!(over.percent(), Some(100));
        assert_eq!(Progress::default().percent(), None);
    }
}
