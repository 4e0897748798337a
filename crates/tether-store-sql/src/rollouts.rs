//! Agent rollouts ([`tether_store::RolloutStore`]), written once for both
//! backends like `upgrades.rs`.

const COLUMNS: &str =
    "group_name, version, stage, canary_percent, paused_at, pause_reason, created_at, updated_at";

pub(crate) const PUT_ROLLOUT: &str = "INSERT INTO agent_rollouts \
     (group_name, version, stage, canary_percent, paused_at, pause_reason, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (group_name) DO UPDATE SET \
     version = excluded.version, stage = excluded.stage, \
     canary_percent = excluded.canary_percent, paused_at = excluded.paused_at, \
     pause_reason = excluded.pause_reason, created_at = excluded.created_at, \
     updated_at = excluded.updated_at";

pub(crate) fn rollouts() -> String {
    format!("SELECT {COLUMNS} FROM agent_rollouts ORDER BY group_name")
}

pub(crate) fn pause() -> String {
    format!(
        "UPDATE agent_rollouts SET paused_at = COALESCE(paused_at, $2), pause_reason = $3, \
         updated_at = $2 WHERE group_name = $1 RETURNING {COLUMNS}"
    )
}

pub(crate) fn resume() -> String {
    format!(
        "UPDATE agent_rollouts SET paused_at = NULL, pause_reason = NULL, updated_at = $2 \
         WHERE group_name = $1 RETURNING {COLUMNS}"
    )
}

pub(crate) fn promote() -> String {
    format!(
        "UPDATE agent_rollouts SET stage = 'all', updated_at = $2 \
         WHERE group_name = $1 RETURNING {COLUMNS}"
    )
}

pub(crate) const DELETE_ROLLOUT: &str = "DELETE FROM agent_rollouts WHERE group_name = $1";

/// The admin's last change must precede the report (`updated_at <= $5`),
/// so a resume after a rollback holds.
pub(crate) const PAUSE_ON_ROLLBACK: &str = "UPDATE agent_rollouts \
     SET paused_at = $4, pause_reason = $3 \
     WHERE group_name = $1 AND version = $2 AND paused_at IS NULL AND updated_at <= $5";

pub(crate) const PROGRESS: &str = "SELECT COUNT(*) AS agents, \
     SUM(CASE WHEN a.version = $2 THEN 1 ELSE 0 END) AS on_target, \
     SUM(CASE WHEN u.state = 'rolled_back' AND u.version = $2 THEN 1 ELSE 0 END) AS rolled_back \
     FROM agents a LEFT JOIN agent_upgrades u ON u.agent_id = a.id \
     WHERE a.group_name = $1 AND a.removed_at IS NULL";

/// How many agent ids one query of [`upgrades_of`] binds.
pub(crate) const IDS_PER_QUERY: usize = 500;

/// The last upgrade of each of `n` agents (`n` placeholders).
pub(crate) fn upgrades_of(n: usize) -> String {
    let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "SELECT agent_id, state, version, from_version, reason, at \
         FROM agent_upgrades WHERE agent_id IN ({})",
        marks.join(", ")
    )
}

macro_rules! impl_rollout_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::RolloutStore for $store {
            async fn put_rollout(
                &self,
                r: &tether_store::RolloutRecord,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::to_ms;
                sqlx::query($crate::rollouts::PUT_ROLLOUT)
                    .bind(r.group.as_str())
                    .bind(r.version.as_str())
                    .bind(r.stage.as_str())
                    .bind(i64::from(r.canary_percent))
                    .bind(r.paused.as_ref().map(|(at, _)| to_ms(*at)))
                    .bind(r.paused.as_ref().map(|(_, why)| why.as_str()))
                    .bind(to_ms(r.created_at))
                    .bind(to_ms(r.updated_at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn rollouts(
                &self,
            ) -> Result<Vec<tether_store::RolloutRecord>, tether_store::StoreError> {
                let rows = sqlx::query(&$crate::rollouts::rollouts())
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::rollout(r)).collect()
            }

            async fn change_rollout(
                &self,
                group: &str,
                change: &tether_store::RolloutChange,
                at: time::OffsetDateTime,
            ) -> Result<tether_store::RolloutRecord, tether_store::StoreError> {
                use tether_store::RolloutChange;
                let at = $crate::row::to_ms(at);
                let row = match change {
                    RolloutChange::Pause { reason } => {
                        sqlx::query(&$crate::rollouts::pause())
                            .bind(group)
                            .bind(at)
                            .bind(reason.as_str())
                            .fetch_optional(self.writer())
                            .await
                    }
                    RolloutChange::Resume => {
                        sqlx::query(&$crate::rollouts::resume())
                            .bind(group)
                            .bind(at)
                            .fetch_optional(self.writer())
                            .await
                    }
                    RolloutChange::Promote => {
                        sqlx::query(&$crate::rollouts::promote())
                            .bind(group)
                            .bind(at)
                            .fetch_optional(self.writer())
                            .await
                    }
                }
                .map_err($crate::error::db)?;
                match row {
                    Some(r) => $crate::row::rollout(&r),
                    None => Err(tether_store::StoreError::NotFound),
                }
            }

            async fn delete_rollout(&self, group: &str) -> Result<(), tether_store::StoreError> {
                let done = sqlx::query($crate::rollouts::DELETE_ROLLOUT)
                    .bind(group)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                if done.rows_affected() == 0 {
                    return Err(tether_store::StoreError::NotFound);
                }
                Ok(())
            }

            async fn pause_rollout_on_rollback(
                &self,
                group: &str,
                version: &str,
                reason: &str,
                reported_at: time::OffsetDateTime,
                at: time::OffsetDateTime,
            ) -> Result<bool, tether_store::StoreError> {
                use $crate::row::to_ms;
                let done = sqlx::query($crate::rollouts::PAUSE_ON_ROLLBACK)
                    .bind(group)
                    .bind(version)
                    .bind(reason)
                    .bind(to_ms(at))
                    .bind(to_ms(reported_at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(done.rows_affected() > 0)
            }

            async fn rollout_progress(
                &self,
                group: &str,
                version: &str,
            ) -> Result<tether_wire::RolloutProgress, tether_store::StoreError> {
                let row = sqlx::query($crate::rollouts::PROGRESS)
                    .bind(group)
                    .bind(version)
                    .fetch_one(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                $crate::row::rollout_progress(&row)
            }

            async fn agent_upgrades_of(
                &self,
                agents: &[uuid::Uuid],
            ) -> Result<Vec<(uuid::Uuid, tether_wire::UpgradeReport)>, tether_store::StoreError>
            {
                let mut out = Vec::new();
                for chunk in agents.chunks($crate::rollouts::IDS_PER_QUERY) {
                    let sql = $crate::rollouts::upgrades_of(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(id.to_string());
                    }
                    let rows = q
                        .fetch_all(self.reader())
                        .await
                        .map_err($crate::error::db)?;
                    for r in &rows {
                        out.push($crate::row::agent_upgrade(r)?);
                    }
                }
                Ok(out)
            }
        }
    };
}
