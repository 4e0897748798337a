//! The task queue's half of the store ([`tether_store::TaskStore`]), written
//! once for both backends like `store_impl.rs`. Each backend provides
//! `const TASK_LOCK: &str`: `" FOR UPDATE SKIP LOCKED"` on PostgreSQL, so
//! that several servers leasing at once each skip the rows another holds,
//! and nothing on SQLite, whose `BEGIN IMMEDIATE` already serializes writers.

macro_rules! task_columns {
    () => {
        "id, kind, spec, target_agent, target_group, target_kind, target_site, state, attempt, \
         max_attempts, epoch, lease_secs, deadline_at, allowed_hours, tz, leased_to, \
         lease_expires_at, heartbeat_at, progress, cancel_requested, last_error, reason, outcome, \
         not_before, schedule_id, created_at, updated_at, finished_at, version, result_chunks, \
         approval, approval_by, approval_at"
    };
}

pub(crate) const INSERT_TASK: &str = concat!(
    "INSERT INTO tasks (",
    task_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
     $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)"
);
pub(crate) const TASK: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
/// Optional filters: a NULL parameter matches every row.
/// The queue depth: waiting and running tasks, through the
/// `(state, lease_expires_at)` index.
pub(crate) const COUNT_OPEN_TASKS: &str = "SELECT state, COUNT(*) AS n FROM tasks \
     WHERE state IN ('queued', 'leased') GROUP BY state";
pub(crate) const LIST_TASKS: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR target_agent = $2 OR leased_to = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR kind = $3) \
     ORDER BY created_at DESC, id LIMIT $4"
);
pub(crate) const UPDATE_TASK: &str = "UPDATE tasks SET state = $2, attempt = $3, epoch = $4, \
     leased_to = $5, lease_expires_at = $6, heartbeat_at = $7, progress = $8, \
     cancel_requested = $9, last_error = $10, reason = $11, outcome = $12, not_before = $13, \
     deadline_at = $14, updated_at = $15, finished_at = $16, result_chunks = $17, \
     approval = $19, approval_by = $20, approval_at = $21, \
     version = version + 1 WHERE id = $1 AND version = $18";
/// The candidates for a lease, before the kinds filter and the lock suffix
/// are appended. Admin actions first, then the oldest. A task held for an
/// admin's approval is never a candidate.
pub(crate) const LEASE_CANDIDATES: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE state = 'queued' AND not_before <= $1 \
     AND (approval IS NULL OR approval = 'approved') \
     AND (target_agent = $2 OR (target_group = $3 AND target_kind = $4 \
          AND (target_site IS NULL OR target_site = $5)))"
);
pub(crate) const LEASE_ORDER: &str = " ORDER BY CASE WHEN kind IN ('doctor', 'update_defs') THEN 0 ELSE 1 END, created_at, id LIMIT ";
pub(crate) const EXPIRED_LEASES: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE state = 'leased' AND lease_expires_at <= $1 \
     ORDER BY lease_expires_at LIMIT $2"
);
pub(crate) const PAST_DEADLINE: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE deadline_at <= $1 AND state IN ('queued', 'leased') \
     ORDER BY deadline_at LIMIT $2"
);
pub(crate) const INSERT_RESULT: &str = "INSERT INTO task_results (task_id, epoch, chunk, items, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
pub(crate) const COUNT_RESULT: &str = "UPDATE tasks SET result_chunks = result_chunks + 1, \
     version = version + 1 WHERE id = $1 AND epoch = $2";
pub(crate) const RESULTS: &str = "SELECT items FROM task_results WHERE task_id = $1 AND epoch = $2 \
     ORDER BY chunk LIMIT $3";

macro_rules! schedule_columns {
    () => {
        "id, rule, tz, template, next_run_at, last_run_at, last_task_id, missed, created_at"
    };
}
pub(crate) const INSERT_SCHEDULE: &str = concat!(
    "INSERT INTO task_schedules (",
    schedule_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
pub(crate) const SCHEDULE: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM task_schedules WHERE id = $1"
);
pub(crate) const LIST_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM task_schedules ORDER BY created_at, id LIMIT $1"
);
pub(crate) const DUE_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM task_schedules WHERE next_run_at <= $1 ORDER BY next_run_at LIMIT $2"
);
pub(crate) const FIRE_SCHEDULE: &str = "UPDATE task_schedules SET next_run_at = $3, \
     last_run_at = $4, last_task_id = $5, missed = $6 WHERE id = $1 AND next_run_at = $2";
pub(crate) const DELETE_SCHEDULE: &str = "DELETE FROM task_schedules WHERE id = $1";
/// The finished tasks past their retention, oldest first: succeeded and
/// cancelled ones only (a dead-lettered task waits for `retry`).
macro_rules! prunable_tasks {
    () => {
        "SELECT id FROM tasks WHERE state IN ('succeeded', 'cancelled') \
         AND finished_at < $1 ORDER BY finished_at, id LIMIT $2"
    };
}
pub(crate) const PRUNE_TASK_RESULTS: &str = concat!(
    "DELETE FROM task_results WHERE task_id IN (",
    prunable_tasks!(),
    ")"
);
pub(crate) const PRUNE_TASKS: &str =
    concat!("DELETE FROM tasks WHERE id IN (", prunable_tasks!(), ")");

pub(crate) const UPSERT_SITE: &str = "INSERT INTO sites (name, tz, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET tz = excluded.tz, updated_at = excluded.updated_at";
pub(crate) const LIST_SITES: &str = "SELECT name, tz FROM sites ORDER BY name";
pub(crate) const SET_AGENT_SITE: &str =
    "UPDATE agents SET site = $2 WHERE id = $1 AND removed_at IS NULL";
pub(crate) const AGENT_SITE: &str = "SELECT site FROM agents WHERE id = $1";
pub(crate) const SET_TOKEN_SITE: &str = "UPDATE tokens SET site = $2 WHERE id = $1";
pub(crate) const TOKEN_SITE: &str = "SELECT site FROM tokens WHERE id = $1";

/// Binds a snapshot's columns in `task_columns!` order.
macro_rules! bind_task {
    ($q:expr, $t:expr) => {{
        use $crate::row::{to_json, to_ms};
        let t: &tether_tasks::TaskSnapshot = $t;
        let (agent, group, kind, site) = match &t.target {
            tether_wire::TaskTarget::Agent { agent_id } => {
                (Some(agent_id.to_string()), None, None, None)
            }
            tether_wire::TaskTarget::Group {
                group,
                agent_kind,
                site,
            } => (
                None,
                Some(group.clone()),
                Some(agent_kind.as_str()),
                site.clone(),
            ),
        };
        $q.bind(t.id.to_string())
            .bind(t.kind.as_str())
            .bind(to_json(&t.spec, "spec")?)
            .bind(agent)
            .bind(group)
            .bind(kind)
            .bind(site)
            .bind(t.state.as_str())
            .bind(i64::from(t.attempt))
            .bind(i64::from(t.max_attempts))
            .bind($crate::row::to_i64(t.epoch, "epoch")?)
            .bind(i64::from(t.lease_secs))
            .bind(t.deadline_at.map(to_ms))
            .bind(
                t.allowed_hours
                    .as_ref()
                    .map(|h| to_json(h, "allowed_hours"))
                    .transpose()?,
            )
            .bind(t.tz.clone())
            .bind(t.leased_to.map(|a| a.to_string()))
            .bind(t.lease_expires_at.map(to_ms))
            .bind(t.heartbeat_at.map(to_ms))
            .bind(
                t.progress
                    .as_ref()
                    .map(|p| to_json(p, "progress"))
                    .transpose()?,
            )
            .bind(t.cancel_requested)
            .bind(t.last_error.clone())
            .bind(t.reason.clone())
            .bind(
                t.outcome
                    .as_ref()
                    .map(|o| to_json(o, "outcome"))
                    .transpose()?,
            )
            .bind(to_ms(t.not_before))
            .bind(t.schedule_id.map(|s| s.to_string()))
            .bind(to_ms(t.created_at))
            .bind(to_ms(t.updated_at))
            .bind(t.finished_at.map(to_ms))
            .bind(t.version)
            .bind(i64::from(t.result_chunks))
            .bind(t.approval.as_ref().map(|a| a.state.as_str()))
            .bind(t.approval.as_ref().and_then(|a| a.by.clone()))
            .bind(t.approval.as_ref().and_then(|a| a.at).map(to_ms))
    }};
}

/// Binds the mutable columns of [`UPDATE_TASK`].
macro_rules! bind_task_update {
    ($q:expr, $t:expr) => {{
        use $crate::row::{to_json, to_ms};
        let t: &tether_tasks::TaskSnapshot = $t;
        $q.bind(t.id.to_string())
            .bind(t.state.as_str())
            .bind(i64::from(t.attempt))
            .bind($crate::row::to_i64(t.epoch, "epoch")?)
            .bind(t.leased_to.map(|a| a.to_string()))
            .bind(t.lease_expires_at.map(to_ms))
            .bind(t.heartbeat_at.map(to_ms))
            .bind(
                t.progress
                    .as_ref()
                    .map(|p| to_json(p, "progress"))
                    .transpose()?,
            )
            .bind(t.cancel_requested)
            .bind(t.last_error.clone())
            .bind(t.reason.clone())
            .bind(
                t.outcome
                    .as_ref()
                    .map(|o| to_json(o, "outcome"))
                    .transpose()?,
            )
            .bind(to_ms(t.not_before))
            .bind(t.deadline_at.map(to_ms))
            .bind(to_ms(t.updated_at))
            .bind(t.finished_at.map(to_ms))
            .bind(i64::from(t.result_chunks))
            .bind(t.version)
            .bind(t.approval.as_ref().map(|a| a.state.as_str()))
            .bind(t.approval.as_ref().and_then(|a| a.by.clone()))
            .bind(t.approval.as_ref().and_then(|a| a.at).map(to_ms))
    }};
}

macro_rules! impl_task_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::TaskStore for $store {
            async fn insert_task(
                &self,
                task: &tether_tasks::TaskSnapshot,
            ) -> Result<(), tether_store::StoreError> {
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let q = sqlx::query($crate::tasks::INSERT_TASK);
                bind_task!(q, task)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                // An admin action for one agent raises the cheap flag the
                // check-in reads, so agents that do not poll still get it.
                if let (true, tether_wire::TaskTarget::Agent { agent_id }) =
                    (task.kind.is_action(), &task.target)
                {
                    sqlx::query($crate::sql::BUMP_PENDING_ACTIONS)
                        .bind(agent_id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(())
            }

            async fn record_doctor(
                &self,
                agent_id: uuid::Uuid,
                doctor: &tether_wire::DoctorSummary,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::sql::SET_LAST_DOCTOR)
                    .bind(agent_id.to_string())
                    .bind($crate::row::to_json(doctor, "last_doctor")?)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn task(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_tasks::TaskSnapshot>, tether_store::StoreError> {
                let row = sqlx::query($crate::tasks::TASK)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::tasks::task(r))
                    .transpose()
            }

            async fn count_open_tasks(
                &self,
            ) -> Result<Vec<(tether_wire::TaskState, u64)>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::COUNT_OPEN_TASKS)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                let mut counts = vec![
                    (tether_wire::TaskState::Queued, 0),
                    (tether_wire::TaskState::Leased, 0),
                ];
                for row in &rows {
                    let (state, n) = $crate::row::tasks::state_count(row)?;
                    if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                        slot.1 = n;
                    }
                }
                Ok(counts)
            }

            async fn list_tasks(
                &self,
                filter: &tether_store::TaskFilter,
                limit: u32,
            ) -> Result<Vec<tether_tasks::TaskSnapshot>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::LIST_TASKS)
                    .bind(filter.state.map(|s| s.as_str()))
                    .bind(filter.agent.map(|a| a.to_string()))
                    .bind(filter.kind.map(|k| k.as_str()))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::tasks::task(r)).collect()
            }

            async fn update_task(
                &self,
                task: &tether_tasks::TaskSnapshot,
            ) -> Result<bool, tether_store::StoreError> {
                let q = sqlx::query($crate::tasks::UPDATE_TASK);
                let done = bind_task_update!(q, task)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                Ok(done == 1)
            }

            async fn lease_tasks(
                &self,
                req: &tether_store::LeaseRequest,
            ) -> Result<Vec<tether_tasks::TaskSnapshot>, tether_store::StoreError> {
                if req.limit == 0 || req.kinds.is_empty() {
                    return Ok(Vec::new());
                }
                let kinds: Vec<&'static str> = req
                    .kinds
                    .iter()
                    .filter(|k| !req.actions_only || k.is_action())
                    .map(|k| k.as_str())
                    .collect();
                if kinds.is_empty() {
                    return Ok(Vec::new());
                }
                // Only placeholders are generated; every value is bound.
                let placeholders: Vec<String> =
                    (0..kinds.len()).map(|i| format!("${}", i + 6)).collect();
                let base = $crate::tasks::LEASE_CANDIDATES;
                // Check-in delivery takes only what targets this agent: a
                // NULL group matches no row.
                let (group, agent_kind, site) = if req.actions_only {
                    (None, None, None)
                } else {
                    (
                        Some(req.group.as_str()),
                        Some(req.agent_kind.as_str()),
                        req.site.as_deref(),
                    )
                };
                // Read a few more than asked: a closed window skips a row.
                let fetch = req.limit.saturating_mul(4).min(64);
                let sql = format!(
                    "{base} AND kind IN ({}){}{fetch}{}",
                    placeholders.join(", "),
                    $crate::tasks::LEASE_ORDER,
                    Self::TASK_LOCK
                );
                // Most polls find nothing: ask a reader first, so that an
                // idle fleet's polls never queue for the write lock.
                let probe = format!("{base} AND kind IN ({}) LIMIT 1", placeholders.join(", "));
                let mut p = sqlx::query(&probe)
                    .bind($crate::row::to_ms(req.now))
                    .bind(req.agent_id.to_string())
                    .bind(group)
                    .bind(agent_kind)
                    .bind(site);
                for k in &kinds {
                    p = p.bind(*k);
                }
                if p.fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?
                    .is_none()
                {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let mut q = sqlx::query(&sql)
                    .bind($crate::row::to_ms(req.now))
                    .bind(req.agent_id.to_string())
                    .bind(group)
                    .bind(agent_kind)
                    .bind(site);
                for k in &kinds {
                    q = q.bind(*k);
                }
                let rows = q.fetch_all(&mut *tx).await.map_err($crate::error::db)?;
                let mut leased = Vec::new();
                for row in &rows {
                    if leased.len() >= req.limit as usize {
                        break;
                    }
                    let task = $crate::row::tasks::task(row)?;
                    if task.held() {
                        // The query already leaves held tasks out; this
                        // is the state machine's word on it too.
                        continue;
                    }
                    if let Some(hours) = &task.allowed_hours {
                        let open = tether_tasks::window::Window::parse(hours, &task.tz)
                            .map(|w| w.state(req.now) == tether_tasks::window::WindowState::Open)
                            .unwrap_or(true);
                        if !open {
                            continue;
                        }
                    }
                    let next = task.lease(req.agent_id, req.now, req.actions_only);
                    let q = sqlx::query($crate::tasks::UPDATE_TASK);
                    let done = bind_task_update!(q, &next)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected();
                    if done == 1 {
                        let mut next = next;
                        next.version += 1;
                        leased.push(next);
                    }
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(leased)
            }

            async fn expired_leases(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_tasks::TaskSnapshot>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::EXPIRED_LEASES)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::tasks::task(r)).collect()
            }

            async fn tasks_past_deadline(
                &self,
                now: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_tasks::TaskSnapshot>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::PAST_DEADLINE)
                    .bind($crate::row::to_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::tasks::task(r)).collect()
            }

            async fn insert_result(
                &self,
                task_id: uuid::Uuid,
                epoch: u64,
                chunk: u32,
                items: Option<&str>,
                at: time::OffsetDateTime,
            ) -> Result<bool, tether_store::StoreError> {
                let id = task_id.to_string();
                let epoch = $crate::row::to_i64(epoch, "epoch")?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let inserted = sqlx::query($crate::tasks::INSERT_RESULT)
                    .bind(&id)
                    .bind(epoch)
                    .bind(i64::from(chunk))
                    .bind(items)
                    .bind($crate::row::to_ms(at))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if inserted == 1 {
                    sqlx::query($crate::tasks::COUNT_RESULT)
                        .bind(&id)
                        .bind(epoch)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(inserted == 1)
            }

            async fn results(
                &self,
                task_id: uuid::Uuid,
                epoch: u64,
                limit: u32,
            ) -> Result<Vec<Option<String>>, tether_store::StoreError> {
                let id = task_id.to_string();
                let rows = sqlx::query($crate::tasks::RESULTS)
                    .bind(&id)
                    .bind($crate::row::to_i64(epoch, "epoch")?)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::tasks::result_items(r, &id))
                    .collect()
            }

            async fn insert_schedule(
                &self,
                s: &tether_store::ScheduleRecord,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                sqlx::query($crate::tasks::INSERT_SCHEDULE)
                    .bind(s.id.to_string())
                    .bind(&s.rule)
                    .bind(&s.tz)
                    .bind(&s.template)
                    .bind(to_ms(s.next_run_at))
                    .bind(s.last_run_at.map(to_ms))
                    .bind(s.last_task_id.map(|t| t.to_string()))
                    .bind(to_json(&s.missed, "missed")?)
                    .bind(to_ms(s.created_at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn schedule(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_store::ScheduleRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::tasks::SCHEDULE)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::tasks::schedule(r))
                    .transpose()
            }

            async fn list_schedules(
                &self,
                limit: u32,
            ) -> Result<Vec<tether_store::ScheduleRecord>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::LIST_SCHEDULES)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::tasks::schedule(r))
                    .collect()
            }

            async fn due_schedules(
                &self,
                now: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_store::ScheduleRecord>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::DUE_SCHEDULES)
                    .bind($crate::row::to_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::tasks::schedule(r))
                    .collect()
            }

            async fn fire_schedule(
                &self,
                run: &tether_store::ScheduleRun,
            ) -> Result<bool, tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let fired = sqlx::query($crate::tasks::FIRE_SCHEDULE)
                    .bind(run.schedule_id.to_string())
                    .bind(to_ms(run.due_at))
                    .bind(to_ms(run.next_run_at))
                    .bind(to_ms(run.at))
                    .bind(run.task.id.to_string())
                    .bind(to_json(&run.missed, "missed")?)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if fired != 1 {
                    return Ok(false);
                }
                let q = sqlx::query($crate::tasks::INSERT_TASK);
                bind_task!(q, &run.task)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(true)
            }

            async fn delete_schedule(
                &self,
                id: uuid::Uuid,
            ) -> Result<bool, tether_store::StoreError> {
                let n = sqlx::query($crate::tasks::DELETE_SCHEDULE)
                    .bind(id.to_string())
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn prune_finished_tasks(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<u64, tether_store::StoreError> {
                // One transaction: the results go with their task.
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                sqlx::query($crate::tasks::PRUNE_TASK_RESULTS)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let n = sqlx::query($crate::tasks::PRUNE_TASKS)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                tx.commit().await.map_err($crate::error::db)?;
                Ok(n)
            }

            async fn upsert_site(
                &self,
                name: &str,
                tz: &str,
                at: time::OffsetDateTime,
            ) -> Result<tether_wire::Site, tether_store::StoreError> {
                sqlx::query($crate::tasks::UPSERT_SITE)
                    .bind(name)
                    .bind(tz)
                    .bind($crate::row::to_ms(at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(tether_wire::Site {
                    name: name.to_owned(),
                    tz: tz.to_owned(),
                })
            }

            async fn list_sites(&self) -> Result<Vec<tether_wire::Site>, tether_store::StoreError> {
                let rows = sqlx::query($crate::tasks::LIST_SITES)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::tasks::site(r)).collect()
            }

            async fn set_agent_site(
                &self,
                agent_id: uuid::Uuid,
                site: Option<&str>,
            ) -> Result<(), tether_store::StoreError> {
                let n = sqlx::query($crate::tasks::SET_AGENT_SITE)
                    .bind(agent_id.to_string())
                    .bind(site)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if n == 0 {
                    return Err(tether_store::StoreError::NotFound);
                }
                Ok(())
            }

            async fn agent_site(
                &self,
                agent_id: uuid::Uuid,
            ) -> Result<Option<String>, tether_store::StoreError> {
                let v: Option<Option<String>> = sqlx::query_scalar($crate::tasks::AGENT_SITE)
                    .bind(agent_id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(v.flatten())
            }

            async fn set_token_site(
                &self,
                token_id: uuid::Uuid,
                site: Option<&str>,
            ) -> Result<(), tether_store::StoreError> {
                let n = sqlx::query($crate::tasks::SET_TOKEN_SITE)
                    .bind(token_id.to_string())
                    .bind(site)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if n == 0 {
                    return Err(tether_store::StoreError::NotFound);
                }
                Ok(())
            }

            async fn token_site(
                &self,
                token_id: uuid::Uuid,
            ) -> Result<Option<String>, tether_store::StoreError> {
                let v: Option<Option<String>> = sqlx::query_scalar($crate::tasks::TOKEN_SITE)
                    .bind(token_id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(v.flatten())
            }
        }
    };
}
