//! The task queue's half of the store: tasks, their result chunks,
//! schedules and sites.
//!
//! The store applies the decisions of `tether-tasks` (the pure state
//! machine): every write of a task is a compare-and-set on its `version`, so
//! two servers that decided on the same old row cannot both win. Leasing is
//! the one decision taken inside the store, because it must pick rows and
//! mark them in one transaction: concurrent lessors (several servers on
//! PostgreSQL) never lease one task twice.

use async_trait::async_trait;
use tether_tasks::TaskSnapshot;
use tether_wire::{AgentKind, Site, TaskKind, TaskState};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;

/// Which tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    /// Tasks targeted at, or leased to, this agent.
    pub agent: Option<Uuid>,
    pub kind: Option<TaskKind>,
}

/// An agent asking for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub agent_id: Uuid,
    pub group: String,
    pub agent_kind: AgentKind,
    pub site: Option<String>,
    /// The kinds the agent can run.
    pub kinds: Vec<TaskKind>,
    /// Only admin actions targeted at this agent (check-in delivery to
    /// agents that do not poll). Such leases are confirmed at once (the
    /// check-in reply is read); a poll's wait for the agent's first heartbeat.
    pub actions_only: bool,
    pub now: OffsetDateTime,
    pub limit: u32,
}

/// A recurring task as stored. The rule and template are JSON as the wire
/// carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub id: Uuid,
    /// `tether_wire::ScheduleRule` as JSON.
    pub rule: String,
    pub tz: String,
    /// `tether_wire::NewTask<Value>` as JSON.
    pub template: String,
    pub next_run_at: OffsetDateTime,
    pub last_run_at: Option<OffsetDateTime>,
    pub last_task_id: Option<Uuid>,
    /// The missed runs folded into the last run, as text.
    pub missed: Vec<String>,
    pub created_at: OffsetDateTime,
}

/// One run of a schedule, written atomically with the task it creates.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRun {
    pub schedule_id: Uuid,
    /// The `next_run_at` the caller read: the run applies only if it is
    /// still stored (so two servers fire a run once).
    pub due_at: OffsetDateTime,
    pub next_run_at: OffsetDateTime,
    pub missed: Vec<String>,
    pub at: OffsetDateTime,
    pub task: TaskSnapshot,
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Inserts a new task. `Conflict` if the id exists. An admin action
    /// (`TaskKind::is_action`) for one agent also raises that agent's
    /// `pending_actions`, in the same transaction, so that a check-in of an
    /// agent that does not poll delivers it.
    async fn insert_task(&self, task: &TaskSnapshot) -> Result<(), StoreError>;
    /// Records a doctor verdict reported as a task result as the agent's
    /// last doctor verdict.
    async fn record_doctor(
        &self,
        agent_id: Uuid,
        doctor: &tether_wire::DoctorSummary,
    ) -> Result<(), StoreError>;
    async fn task(&self, id: Uuid) -> Result<Option<TaskSnapshot>, StoreError>;
    /// How many tasks wait (`queued`) and run (`leased`) now: the queue
    /// depth. Both states are always present, zero when none.
    async fn count_open_tasks(&self) -> Result<Vec<(tether_wire::TaskState, u64)>, StoreError>;
    /// Newest first.
    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError>;
    /// Writes the task's mutable fields if the stored version is still
    /// `task.version`, and bumps the version. Returns whether it applied.
    async fn update_task(&self, task: &TaskSnapshot) -> Result<bool, StoreError>;
    /// Leases up to `limit` queued tasks this agent may run whose
    /// `not_before` has come and whose allowed hours are open: tasks targeted
    /// at the agent, then tasks of its group and kind (and site), oldest
    /// first, admin actions ahead of longer work. Each gets the next epoch
    /// (`TaskSnapshot::lease`). Concurrent callers never lease a task twice.
    async fn lease_tasks(&self, req: &LeaseRequest) -> Result<Vec<TaskSnapshot>, StoreError>;
    /// Leased tasks whose lease ran out at or before `before`, at most `limit`.
    async fn expired_leases(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError>;
    /// Unfinished tasks whose deadline is at or before `now`, at most `limit`.
    async fn tasks_past_deadline(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TaskSnapshot>, StoreError>;
    /// Stores one result chunk, idempotently by (task, epoch, chunk): a chunk
    /// already stored is left as it was and `false` returned. A new chunk of
    /// the task's current epoch raises its `result_chunks`.
    async fn insert_result(
        &self,
        task_id: Uuid,
        epoch: u64,
        chunk: u32,
        items: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// The chunks of one epoch in order (JSON text; `None` for a chunk
    /// without items).
    async fn results(
        &self,
        task_id: Uuid,
        epoch: u64,
        limit: u32,
    ) -> Result<Vec<Option<String>>, StoreError>;

    async fn insert_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError>;
    async fn schedule(&self, id: Uuid) -> Result<Option<ScheduleRecord>, StoreError>;
    async fn list_schedules(&self, limit: u32) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Schedules due at or before `now`, at most `limit`.
    async fn due_schedules(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Records a run and inserts its task in one transaction, only if the
    /// schedule is still due at `run.due_at`. Returns whether it applied.
    async fn fire_schedule(&self, run: &ScheduleRun) -> Result<bool, StoreError>;
    /// Returns whether it existed. Tasks it created are kept.
    async fn delete_schedule(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Deletes up to `limit` succeeded or cancelled tasks that finished
    /// before `before`, with their results. Dead-lettered tasks are kept
    /// (they wait for `retry`). Returns how many tasks were deleted.
    async fn prune_finished_tasks(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Creates or updates a site.
    async fn upsert_site(
        &self,
        name: &str,
        tz: &str,
        at: OffsetDateTime,
    ) -> Result<Site, StoreError>;
    async fn list_sites(&self) -> Result<Vec<Site>, StoreError>;
    /// Sets (or clears) an agent's site label. `NotFound` if the agent is
    /// absent or removed.
    async fn set_agent_site(&self, agent_id: Uuid, site: Option<&str>) -> Result<(), StoreError>;
    async fn agent_site(&self, agent_id: Uuid) -> Result<Option<String>, StoreError>;
    /// Sets the site agents enrolled with this token get. `NotFound` if absent.
    async fn set_token_site(&self, token_id: Uuid, site: Option<&str>) -> Result<(), StoreError>;
    async fn token_site(&self, token_id: Uuid) -> Result<Option<String>, StoreError>;
}
