//! Renewals ([`tether_store::RenewalStore`]), written once for both
//! backends like `leases.rs`: every statement is portable.
//!
//! At most one open renewal per certificate is the `UNIQUE` constraint on
//! `open_fingerprint` (the fingerprint while the renewal is not verified,
//! NULL after), so a burst of schedulers inserting the same renewal leaves
//! one row. Writes are compare-and-set on `version`, as for tasks.

const RENEWAL_COLUMNS: &str = "id, fingerprint, state, issuer, attempt, failures, ca_failures, \
     locations, done, tasks, new_fingerprint, reason_code, reason, next_attempt_at, forced, \
     created_at, updated_at, version";

pub(crate) const POLICY: &str = "SELECT policy FROM renewal_policies WHERE scope = $1";
pub(crate) const SET_POLICY: &str = "INSERT INTO renewal_policies (scope, policy, updated_at) \
     VALUES ($1, $2, $3) ON CONFLICT (scope) DO UPDATE SET policy = excluded.policy, \
     updated_at = excluded.updated_at";
pub(crate) const INSERT_LOCATION: &str = "INSERT INTO renewal_locations \
     (fingerprint, task_id, agent_id, spec, at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (fingerprint, task_id) DO NOTHING";
pub(crate) const LOCATIONS: &str = "SELECT fingerprint, task_id, agent_id, spec, at \
     FROM renewal_locations WHERE fingerprint = $1 ORDER BY at, task_id";
pub(crate) const CANDIDATES: &str = "SELECT i.fingerprint, i.not_before, i.not_after \
     FROM issued_certs i WHERE i.fingerprint > $1 \
     AND EXISTS (SELECT 1 FROM renewal_locations l WHERE l.fingerprint = i.fingerprint) \
     AND NOT EXISTS (SELECT 1 FROM cert_renewals r WHERE r.fingerprint = i.fingerprint) \
     AND NOT EXISTS (SELECT 1 FROM cert_deployments d WHERE d.old_fingerprint = i.fingerprint \
         AND d.state = 'deployed') \
     ORDER BY i.fingerprint LIMIT $2";
pub(crate) fn insert_renewal() -> String {
    format!(
        "INSERT INTO cert_renewals ({RENEWAL_COLUMNS}, open_fingerprint, wake_at) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20) ON CONFLICT (open_fingerprint) DO NOTHING"
    )
}
pub(crate) const UPDATE_RENEWAL: &str = "UPDATE cert_renewals SET state = $3, issuer = $4, \
     attempt = $5, failures = $6, ca_failures = $7, locations = $8, done = $9, tasks = $10, \
     new_fingerprint = $11, reason_code = $12, reason = $13, next_attempt_at = $14, forced = $15, \
     updated_at = $16, open_fingerprint = $17, wake_at = $18, version = version + 1 \
     WHERE id = $1 AND version = $2";
pub(crate) const INSERT_RENEWAL_TASK: &str = "INSERT INTO renewal_tasks \
     (task_id, renewal_id, attempt) VALUES ($1, $2, $3) ON CONFLICT (task_id) DO NOTHING";
pub(crate) fn renewal_by_id() -> String {
    format!("SELECT {RENEWAL_COLUMNS} FROM cert_renewals WHERE id = $1")
}
/// The renewals a tick must step: `wake_at` (`Renewal::wake_at`, NULL
/// once verified) has come. An index range scan, so renewals backing off
/// and verified ones cost the tick nothing.
pub(crate) fn due_renewals() -> String {
    format!(
        "SELECT {RENEWAL_COLUMNS} FROM cert_renewals WHERE wake_at <= $1 \
         ORDER BY wake_at, id LIMIT $2"
    )
}
pub(crate) fn list_renewals() -> String {
    format!("SELECT {RENEWAL_COLUMNS} FROM cert_renewals ORDER BY created_at DESC, id LIMIT $1")
}
pub(crate) fn renewals_of() -> String {
    format!(
        "SELECT {RENEWAL_COLUMNS} FROM cert_renewals WHERE fingerprint = $1 \
         ORDER BY created_at DESC, id LIMIT 100"
    )
}
pub(crate) fn renewal_of_task() -> String {
    format!(
        "SELECT {RENEWAL_COLUMNS} FROM cert_renewals WHERE id = \
         (SELECT renewal_id FROM renewal_tasks WHERE task_id = $1)"
    )
}
pub(crate) const TASK_ISSUED: &str = "SELECT fingerprint FROM renewal_tasks WHERE task_id = $1";
pub(crate) const CLAIM_ISSUE: &str =
    "UPDATE renewal_tasks SET request = $2 WHERE task_id = $1 AND request IS NULL";
pub(crate) const ISSUE_ROW: &str =
    "SELECT request, fingerprint, cert_pem, chain_pem FROM renewal_tasks WHERE task_id = $1";
pub(crate) const COMPLETE_ISSUE: &str = "UPDATE renewal_tasks SET fingerprint = $2, \
     cert_pem = $3, chain_pem = $4 WHERE task_id = $1";
pub(crate) const RELEASE_ISSUE: &str =
    "UPDATE renewal_tasks SET request = NULL WHERE task_id = $1 AND fingerprint IS NULL";

macro_rules! impl_renewal_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::RenewalStore for $store {
            async fn renewal_policy(
                &self,
                scope: &str,
            ) -> Result<Option<String>, tether_store::StoreError> {
                sqlx::query_scalar($crate::renewals::POLICY)
                    .bind(scope)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)
            }

            async fn set_renewal_policy(
                &self,
                scope: &str,
                policy: &str,
                at: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::renewals::SET_POLICY)
                    .bind(scope)
                    .bind(policy)
                    .bind($crate::row::to_ms(at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn record_renewal_location(
                &self,
                l: &tether_store::RenewalLocation,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::renewals::INSERT_LOCATION)
                    .bind(&l.fingerprint)
                    .bind(l.task_id.to_string())
                    .bind(l.agent_id.to_string())
                    .bind(&l.spec)
                    .bind($crate::row::to_ms(l.at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn renewal_locations(
                &self,
                fingerprint: &str,
            ) -> Result<Vec<tether_store::RenewalLocation>, tether_store::StoreError> {
                let rows = sqlx::query($crate::renewals::LOCATIONS)
                    .bind(fingerprint)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::renewal_location(r))
                    .collect()
            }

            async fn renewal_candidates(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<tether_store::RenewalCandidate>, tether_store::StoreError> {
                let rows = sqlx::query($crate::renewals::CANDIDATES)
                    .bind(after.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::renewal_candidate(r))
                    .collect()
            }

            async fn insert_renewal(
                &self,
                r: &tether_store::Renewal,
            ) -> Result<bool, tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                let open = (!r.state.is_final()).then(|| r.fingerprint.clone());
                let done = sqlx::query(&$crate::renewals::insert_renewal())
                    .bind(r.id.to_string())
                    .bind(&r.fingerprint)
                    .bind(r.state.as_str())
                    .bind(&r.issuer)
                    .bind(i64::from(r.attempt))
                    .bind(i64::from(r.failures))
                    .bind(i64::from(r.ca_failures))
                    .bind(i64::from(r.locations))
                    .bind(i64::from(r.done))
                    .bind(to_json(&r.tasks, "tasks")?)
                    .bind(&r.new_fingerprint)
                    .bind(r.reason_code.map(|c| c.as_str()))
                    .bind(&r.reason)
                    .bind(r.next_attempt_at.map(to_ms))
                    .bind(r.forced)
                    .bind(to_ms(r.created_at))
                    .bind(to_ms(r.updated_at))
                    .bind(r.version)
                    .bind(open)
                    .bind(r.wake_at().map(to_ms))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(done.rows_affected() == 1)
            }

            async fn update_renewal(
                &self,
                r: &tether_store::Renewal,
            ) -> Result<bool, tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                let open = (!r.state.is_final()).then(|| r.fingerprint.clone());
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let done = sqlx::query($crate::renewals::UPDATE_RENEWAL)
                    .bind(r.id.to_string())
                    .bind(r.version)
                    .bind(r.state.as_str())
                    .bind(&r.issuer)
                    .bind(i64::from(r.attempt))
                    .bind(i64::from(r.failures))
                    .bind(i64::from(r.ca_failures))
                    .bind(i64::from(r.locations))
                    .bind(i64::from(r.done))
                    .bind(to_json(&r.tasks, "tasks")?)
                    .bind(&r.new_fingerprint)
                    .bind(r.reason_code.map(|c| c.as_str()))
                    .bind(&r.reason)
                    .bind(r.next_attempt_at.map(to_ms))
                    .bind(r.forced)
                    .bind(to_ms(r.updated_at))
                    .bind(open)
                    .bind(r.wake_at().map(to_ms))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                for task in &r.tasks {
                    sqlx::query($crate::renewals::INSERT_RENEWAL_TASK)
                        .bind(task.to_string())
                        .bind(r.id.to_string())
                        .bind(i64::from(r.attempt))
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(true)
            }

            async fn renewal(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_store::Renewal>, tether_store::StoreError> {
                let row = sqlx::query(&$crate::renewals::renewal_by_id())
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::renewal(r)).transpose()
            }

            async fn due_renewals(
                &self,
                now: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_store::Renewal>, tether_store::StoreError> {
                let rows = sqlx::query(&$crate::renewals::due_renewals())
                    .bind($crate::row::to_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::renewal(r)).collect()
            }

            async fn list_renewals(
                &self,
                limit: u32,
            ) -> Result<Vec<tether_store::Renewal>, tether_store::StoreError> {
                let rows = sqlx::query(&$crate::renewals::list_renewals())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::renewal(r)).collect()
            }

            async fn renewals_of(
                &self,
                fingerprint: &str,
            ) -> Result<Vec<tether_store::Renewal>, tether_store::StoreError> {
                let rows = sqlx::query(&$crate::renewals::renewals_of())
                    .bind(fingerprint)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::renewal(r)).collect()
            }

            async fn renewal_of_task(
                &self,
                task_id: uuid::Uuid,
            ) -> Result<Option<tether_store::Renewal>, tether_store::StoreError> {
                let row = sqlx::query(&$crate::renewals::renewal_of_task())
                    .bind(task_id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::renewal(r)).transpose()
            }

            async fn renewal_task_issued(
                &self,
                task_id: uuid::Uuid,
            ) -> Result<Option<String>, tether_store::StoreError> {
                let fp: Option<Option<String>> = sqlx::query_scalar($crate::renewals::TASK_ISSUED)
                    .bind(task_id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(fp.flatten())
            }

            async fn claim_renewal_issue(
                &self,
                task_id: uuid::Uuid,
                request: &str,
            ) -> Result<tether_store::IssueClaim, tether_store::StoreError> {
                use sqlx::Row;
                let id = task_id.to_string();
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let claimed = sqlx::query($crate::renewals::CLAIM_ISSUE)
                    .bind(&id)
                    .bind(request)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                if claimed.rows_affected() == 1 {
                    tx.commit().await.map_err($crate::error::db)?;
                    return Ok(tether_store::IssueClaim::Claimed);
                }
                let row = sqlx::query($crate::renewals::ISSUE_ROW)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                let Some(row) = row else {
                    return Err(tether_store::StoreError::NotFound);
                };
                let get = |c: &str| -> Result<Option<String>, tether_store::StoreError> {
                    row.try_get::<Option<String>, _>(c)
                        .map_err($crate::error::db)
                };
                if get("request")?.as_deref() != Some(request) {
                    return Ok(tether_store::IssueClaim::Refused);
                }
                Ok(
                    match (get("fingerprint")?, get("cert_pem")?, get("chain_pem")?) {
                        (Some(fingerprint), Some(cert_pem), Some(chain_pem)) => {
                            tether_store::IssueClaim::Issued {
                                fingerprint,
                                cert_pem,
                                chain_pem,
                            }
                        }
                        _ => tether_store::IssueClaim::InFlight,
                    },
                )
            }

            async fn complete_renewal_issue(
                &self,
                task_id: uuid::Uuid,
                fingerprint: &str,
                cert_pem: &str,
                chain_pem: &str,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::renewals::COMPLETE_ISSUE)
                    .bind(task_id.to_string())
                    .bind(fingerprint)
                    .bind(cert_pem)
                    .bind(chain_pem)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn release_renewal_issue(
                &self,
                task_id: uuid::Uuid,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::renewals::RELEASE_ISSUE)
                    .bind(task_id.to_string())
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }
        }
    };
}
