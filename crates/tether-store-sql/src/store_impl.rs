//! The one implementation of [`tether_store::Store`], instantiated for each
//! backend by [`impl_store!`].
//!
//! sqlx's generic executor bounds make a truly generic implementation harder
//! to read than the SQL it runs, so the body is written once as a macro over
//! the backend type. It relies on each backend providing:
//!
//! - `fn writer(&self) -> &Pool<DB>` and `fn reader(&self) -> &Pool<DB>`;
//! - `async fn begin_write(&self) -> Result<Transaction<'static, DB>, sqlx::Error>`;
//! - `const LOCK_AGENT_STATUS: &str`, the one statement whose text differs
//!   (row locking, see each backend).
//!
//! Row decoding is shared through [`crate::row`], SQL text through
//! [`crate::sql`].

/// Records one transition inside an open transaction.
macro_rules! insert_transition {
    ($tx:expr, $agent_id:expr, $from:expr, $to:expr, $reason:expr, $at:expr) => {
        sqlx::query($crate::sql::INSERT_TRANSITION)
            .bind($agent_id)
            .bind($from.map(|s: tether_wire::AgentStatus| s.as_str()))
            .bind($to.as_str())
            .bind($reason)
            .bind($at)
            .execute(&mut *$tx)
            .await
            .map_err($crate::error::db)?
    };
}

/// Runs `$body` as one transaction on the backend's durable connection
/// (`synchronous=FULL` on SQLite, see sqlite.rs), then hands the connection
/// back. `$body` is an async block's content that commits `$tx` and returns
/// a `Result`; `return` and `?` inside it leave only the block, so the
/// connection is always handed back.
macro_rules! durably {
    ($self:ident, $tx:ident, $body:block) => {{
        let mut conn = $self.durable_conn().await.map_err($crate::error::db)?;
        let result = async {
            #[allow(unused_mut)]
            let mut $tx = sqlx::Connection::begin_with(&mut *conn, Self::BEGIN_WRITE)
                .await
                .map_err($crate::error::db)?;
            $body
        }
        .await;
        $self.release_durable(&mut conn).await;
        result
    }};
}

macro_rules! impl_store {
    ($store:ty, $backend:literal, $pool:ty) => {
        impl $store {
            /// Runs raw SQL for the conformance story, which corrupts rows on purpose.
            #[cfg(feature = "conformance")]
            pub(crate) async fn execute_raw(
                &self,
                sql: &str,
            ) -> Result<u64, tether_store::StoreError> {
                Ok(sqlx::raw_sql(sql)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected())
            }

            /// Reads one text value with raw SQL, for the conformance story.
            #[cfg(feature = "conformance")]
            pub(crate) async fn fetch_text_raw(
                &self,
                sql: &str,
            ) -> Result<Option<String>, tether_store::StoreError> {
                let value: Option<Option<String>> = sqlx::query_scalar(sql)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(value.flatten())
            }

            /// The writer task's side of [`crate::batch`]: one multi-row
            /// UPDATE per batch, on the writer pool.
            fn batch_writer(pool: $pool) -> $crate::batch::WriteBatch {
                Box::new(move |batch| {
                    let pool = pool.clone();
                    Box::pin(async move { Self::write_checkin_batch(&pool, batch).await })
                })
            }

            async fn write_checkin_batch(
                pool: &$pool,
                batch: Vec<tether_store::Checkin>,
            ) -> $crate::batch::BatchResult {
                use $crate::row::{RawRow, to_json, to_ms};
                // One lock order for every batch, so concurrent batch writers
                // (PostgreSQL) that share an agent wait instead of deadlocking.
                let mut batch = batch;
                batch.sort_by_key(|c| c.agent_id);
                let sql = $crate::sql::record_checkins(batch.len());
                // Encode first: the query borrows these strings.
                let mut encoded = Vec::with_capacity(batch.len());
                for c in &batch {
                    let at = to_ms(c.at);
                    encoded.push((
                        c.agent_id.to_string(),
                        at,
                        at.saturating_add(i64::from(c.inactive_after_secs) * 1000),
                        to_json(&c.facts, "facts")?,
                        to_json(&c.definitions, "definitions")?,
                        to_json(&c.last_errors, "last_errors")?,
                        to_json(&c.defs, "defs")?,
                    ));
                }
                let mut query = sqlx::query(&sql);
                for (c, (id, at, deadline, facts, definitions, last_errors, defs)) in
                    batch.iter().zip(&encoded)
                {
                    query = query
                        .bind(id)
                        .bind(*at)
                        .bind(*deadline)
                        .bind(i64::from(c.checkin_interval_secs))
                        .bind(i64::from(c.inactive_after_secs))
                        .bind(&c.external_ip)
                        .bind(&c.version)
                        .bind(facts)
                        .bind(definitions)
                        .bind(last_errors)
                        .bind(&c.proxy)
                        .bind(defs);
                }
                let rows = query.fetch_all(pool).await.map_err($crate::error::db)?;
                let mut out = std::collections::HashMap::with_capacity(rows.len());
                for row in &rows {
                    let id = row
                        .text("id")
                        .ok()
                        .flatten()
                        .and_then(|s| s.parse::<uuid::Uuid>().ok())
                        .ok_or_else(|| {
                            tether_store::StoreError::Corrupt(
                                "agents.id of an updated row is not a UUID".into(),
                            )
                        })?;
                    out.insert(id, $crate::row::agent(row));
                }
                Ok(out)
            }
        }

        #[async_trait::async_trait]
        impl tether_store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::sql::PING)
                    .execute(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn insert_admin_credential(
                &self,
                hash: &tether_store::SecretHash,
                label: &str,
                at: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                self.create_admin_credential(&tether_store::NewAdminCredential {
                    id: uuid::Uuid::new_v4(),
                    hash: *hash,
                    name: label.to_owned(),
                    bootstrap_instance: None,
                    created_at: at,
                })
                .await
                .map(|_| ())
            }

            async fn admin_credential_valid(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<bool, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::ADMIN_CREDENTIAL_EXISTS)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                Ok(row.is_some())
            }

            async fn admin_credential_count(&self) -> Result<u64, tether_store::StoreError> {
                let n: i64 = sqlx::query_scalar($crate::sql::ADMIN_CREDENTIAL_COUNT)
                    .fetch_one(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                u64::try_from(n).map_err(|_| {
                    tether_store::StoreError::Corrupt(format!(
                        "admin_credentials: negative count {n}"
                    ))
                })
            }

            async fn create_admin_credential(
                &self,
                c: &tether_store::NewAdminCredential,
            ) -> Result<tether_store::AdminCredentialRecord, tether_store::StoreError> {
                durably!(self, tx, {
                    let row = sqlx::query($crate::sql::INSERT_ADMIN_CREDENTIAL)
                        .bind(&c.hash[..])
                        .bind(&c.name)
                        .bind($crate::row::to_ms(c.created_at))
                        .bind(c.id.to_string())
                        .bind(&c.bootstrap_instance)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    let record = $crate::row::admin_credential(&row)?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(record)
                })
            }

            async fn admin_credential_by_hash(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<Option<tether_store::AdminCredentialRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::ADMIN_CREDENTIAL_BY_HASH)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::admin_credential(r))
                    .transpose()
            }

            async fn list_admin_credentials(
                &self,
                after: Option<&tether_store::Cursor>,
                limit: u32,
            ) -> Result<Vec<tether_store::AdminCredentialRecord>, tether_store::StoreError> {
                let query = match after {
                    None => sqlx::query($crate::sql::LIST_ADMIN_CREDENTIALS),
                    Some(c) => sqlx::query($crate::sql::LIST_ADMIN_CREDENTIALS_AFTER)
                        .bind($crate::row::to_ms(c.at))
                        .bind(c.id.to_string()),
                };
                let rows = query
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::admin_credential(r))
                    .collect()
            }

            async fn revoke_admin_credential(
                &self,
                id: uuid::Uuid,
                at: time::OffsetDateTime,
            ) -> Result<tether_store::AdminCredentialRecord, tether_store::StoreError> {
                let key = id.to_string();
                durably!(self, tx, {
                    let active = sqlx::query(Self::LOCK_ACTIVE_ADMIN_CREDENTIALS)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    let current = sqlx::query($crate::sql::ADMIN_CREDENTIAL_BY_ID)
                        .bind(&key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .ok_or(tether_store::StoreError::NotFound)?;
                    let current = $crate::row::admin_credential(&current)?;
                    if current.revoked_at.is_some() {
                        // Revoking twice keeps the first time.
                        return Ok(current);
                    }
                    if active.len() <= 1 {
                        return Err(tether_store::StoreError::Conflict(format!(
                            "admin credential {id} is the last one not revoked"
                        )));
                    }
                    let row = sqlx::query($crate::sql::REVOKE_ADMIN_CREDENTIAL)
                        .bind(&key)
                        .bind($crate::row::to_ms(at))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    let record = $crate::row::admin_credential(&row)?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(record)
                })
            }

            async fn replace_admin_credential(
                &self,
                replaced: &tether_store::Replaced,
                c: &tether_store::NewAdminCredential,
                at: time::OffsetDateTime,
            ) -> Result<(tether_store::AdminCredentialRecord, u64), tether_store::StoreError> {
                let at = $crate::row::to_ms(at);
                durably!(self, tx, {
                    let mut revoked = 0;
                    match replaced {
                        tether_store::Replaced::Id(old) => {
                            revoked = sqlx::query($crate::sql::REVOKE_ACTIVE_ADMIN_CREDENTIAL)
                                .bind(old.to_string())
                                .bind(at)
                                .execute(&mut *tx)
                                .await
                                .map_err($crate::error::db)?
                                .rows_affected();
                            if revoked == 0 {
                                return Err(tether_store::StoreError::NotFound);
                            }
                        }
                        tether_store::Replaced::BootstrapOf(instances) => {
                            for instance in instances {
                                revoked +=
                                    sqlx::query($crate::sql::REVOKE_BOOTSTRAP_ADMIN_CREDENTIALS)
                                        .bind(instance)
                                        .bind(at)
                                        .execute(&mut *tx)
                                        .await
                                        .map_err($crate::error::db)?
                                        .rows_affected();
                            }
                        }
                    }
                    let row = sqlx::query($crate::sql::INSERT_ADMIN_CREDENTIAL)
                        .bind(&c.hash[..])
                        .bind(&c.name)
                        .bind($crate::row::to_ms(c.created_at))
                        .bind(c.id.to_string())
                        .bind(&c.bootstrap_instance)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    let record = $crate::row::admin_credential(&row)?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok((record, revoked))
                })
            }

            async fn insert_token(
                &self,
                token: &tether_store::NewToken,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::to_ms;
                durably!(self, tx, {
                    sqlx::query($crate::sql::INSERT_TOKEN)
                        .bind(token.id.to_string())
                        .bind(&token.hash[..])
                        .bind(token.kind.as_str())
                        .bind(&token.group)
                        .bind(&token.policy)
                        .bind(to_ms(token.not_before))
                        .bind(to_ms(token.expires_at))
                        .bind(token.max_uses.map(i64::from))
                        .bind(token.require_approval)
                        .bind(to_ms(token.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(())
                })
            }

            async fn token_by_hash(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<Option<tether_store::TokenRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::TOKEN_BY_HASH)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::token(r)).transpose()
            }

            async fn token(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_store::TokenRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::TOKEN_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::token(r)).transpose()
            }

            async fn list_tokens(
                &self,
            ) -> Result<Vec<tether_store::TokenRecord>, tether_store::StoreError> {
                let rows = sqlx::query($crate::sql::LIST_TOKENS)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::token(r)).collect()
            }

            async fn revoke_token(
                &self,
                id: uuid::Uuid,
                at: time::OffsetDateTime,
            ) -> Result<tether_store::TokenRecord, tether_store::StoreError> {
                durably!(self, tx, {
                    let row = sqlx::query($crate::sql::REVOKE_TOKEN)
                        .bind(id.to_string())
                        .bind($crate::row::to_ms(at))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .ok_or(tether_store::StoreError::NotFound)?;
                    let record = $crate::row::token(&row)?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(record)
                })
            }

            async fn list_tokens_page(
                &self,
                after: Option<&tether_store::Cursor>,
                limit: u32,
            ) -> Result<Vec<tether_store::TokenRecord>, tether_store::StoreError> {
                let query = match after {
                    None => sqlx::query($crate::sql::LIST_TOKENS_PAGE),
                    Some(c) => sqlx::query($crate::sql::LIST_TOKENS_PAGE_AFTER)
                        .bind($crate::row::to_ms(c.at))
                        .bind(c.id.to_string()),
                };
                let rows = query
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::token(r)).collect()
            }

            async fn enroll(
                &self,
                e: &tether_store::Enrollment,
            ) -> Result<tether_store::AgentRecord, tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                if let Some(replaced) = e.replaces {
                    if replaced != e.agent_id {
                        return Err(tether_store::StoreError::Conflict(format!(
                            "re-registration of agent {replaced} must keep its id, got agent_id {}",
                            e.agent_id
                        )));
                    }
                }
                let token_id = e.token_id.to_string();
                let agent_id = e.agent_id.to_string();
                let at = to_ms(e.at);
                let facts = to_json(&e.facts, "facts")?;

                // An enrollment and its token use must survive power loss:
                // the agent leaves holding a credential.
                durably!(self, tx, {
                    let consumed = sqlx::query($crate::sql::CONSUME_TOKEN_USE)
                        .bind(&token_id)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected();
                    if consumed == 0 {
                        let state = sqlx::query($crate::sql::TOKEN_USE_STATE)
                            .bind(&token_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err($crate::error::db)?;
                        return Err($crate::row::token_unavailable(
                            state.as_ref().map(|r| r as &dyn $crate::row::RawRow),
                            &token_id,
                        ));
                    }

                    let (row, from) = match e.replaces {
                        None => {
                            let row = sqlx::query($crate::sql::INSERT_AGENT)
                                .bind(&agent_id)
                                .bind(&e.name)
                                .bind(e.kind.as_str())
                                .bind(&e.group)
                                .bind(&e.policy)
                                .bind(e.status.as_str())
                                .bind(e.requires_approval)
                                .bind(at)
                                .bind(&token_id)
                                .bind(&e.credential_hash[..])
                                .bind(&e.external_ip)
                                .bind(&e.version)
                                .bind(&facts)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err($crate::error::db)?;
                            (row, None)
                        }
                        Some(_) => {
                            let previous = sqlx::query(Self::LOCK_AGENT_STATUS)
                                .bind(&agent_id)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err($crate::error::db)?
                                .ok_or(tether_store::StoreError::NotFound)?;
                            let from = $crate::row::agent_status(&previous, &agent_id)?;
                            let row = sqlx::query($crate::sql::REREGISTER_AGENT)
                                .bind(&agent_id)
                                .bind(&e.credential_hash[..])
                                .bind(&e.name)
                                .bind(e.kind.as_str())
                                .bind(&e.group)
                                .bind(&e.policy)
                                .bind(e.status.as_str())
                                .bind(e.requires_approval)
                                .bind(&token_id)
                                .bind(&e.external_ip)
                                .bind(&e.version)
                                .bind(&facts)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err($crate::error::db)?
                                .ok_or(tether_store::StoreError::NotFound)?;
                            (row, Some(from))
                        }
                    };
                    // Decoded before commit: a corrupt row rolls the enrollment back.
                    let record = $crate::row::agent(&row)?;
                    insert_transition!(tx, &agent_id, from, e.status, &e.reason, at);
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(record)
                })
            }

            async fn agent(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_store::AgentRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::AGENT_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::agent(r)).transpose()
            }

            async fn agent_by_credential(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<Option<tether_store::AgentRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::AGENT_BY_CREDENTIAL)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::agent(r)).transpose()
            }

            async fn set_pending_credential(
                &self,
                id: uuid::Uuid,
                hash: &tether_store::SecretHash,
            ) -> Result<(), tether_store::StoreError> {
                durably!(self, tx, {
                    let n = sqlx::query($crate::sql::SET_PENDING_CREDENTIAL)
                        .bind(id.to_string())
                        .bind(&hash[..])
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected();
                    if n == 0 {
                        return Err(tether_store::StoreError::NotFound);
                    }
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(())
                })
            }

            async fn promote_pending_credential(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<Option<tether_store::AgentRecord>, tether_store::StoreError> {
                // Every refused credential comes here: a read first, so only a
                // real rotation takes the durable writer.
                let pending = sqlx::query($crate::sql::AGENT_BY_PENDING_CREDENTIAL)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                if pending.is_none() {
                    return Ok(None);
                }
                durably!(self, tx, {
                    let row = sqlx::query($crate::sql::PROMOTE_PENDING_CREDENTIAL)
                        .bind(&hash[..])
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    let record = row.as_ref().map(|r| $crate::row::agent(r)).transpose()?;
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(record)
                })
            }

            async fn agent_by_previous_credential(
                &self,
                hash: &tether_store::SecretHash,
            ) -> Result<Option<uuid::Uuid>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::AGENT_BY_PREVIOUS_CREDENTIAL)
                    .bind(&hash[..])
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::agent_id(r)).transpose()
            }

            async fn flag_credential_rejected(
                &self,
                id: uuid::Uuid,
                at: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                let n = sqlx::query($crate::sql::FLAG_CREDENTIAL_REJECTED)
                    .bind(id.to_string())
                    .bind($crate::row::to_ms(at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if n == 0 {
                    Err(tether_store::StoreError::NotFound)
                } else {
                    Ok(())
                }
            }

            async fn list_agents(
                &self,
                status: Option<tether_wire::AgentStatus>,
                limit: u32,
            ) -> Result<Vec<tether_store::AgentRecord>, tether_store::StoreError> {
                let query = match status {
                    None => sqlx::query($crate::sql::LIST_AGENTS),
                    Some(s) => sqlx::query($crate::sql::LIST_AGENTS_WITH_STATUS).bind(s.as_str()),
                };
                let rows = query
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::agent(r)).collect()
            }

            async fn list_agents_page(
                &self,
                filter: &tether_store::AgentFilter,
                after: Option<&tether_store::Cursor>,
                limit: u32,
            ) -> Result<Vec<tether_store::AgentRecord>, tether_store::StoreError> {
                let sql = $crate::sql::list_agents_page(
                    filter.status.is_some(),
                    filter.group.is_some(),
                    after.is_some(),
                );
                let mut query = sqlx::query(&sql);
                if let Some(status) = filter.status {
                    query = query.bind(status.as_str());
                }
                if let Some(group) = &filter.group {
                    query = query.bind(group);
                }
                if let Some(c) = after {
                    query = query.bind($crate::row::to_ms(c.at)).bind(c.id.to_string());
                }
                let rows = query
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::agent(r)).collect()
            }

            async fn record_checkin(
                &self,
                c: &tether_store::Checkin,
            ) -> Result<tether_store::AgentRecord, tether_store::StoreError> {
                let Some(change) = &c.status_change else {
                    // The hot path: group-committed with other check-ins (batch.rs).
                    return self.checkins.submit(c.clone()).await;
                };
                use $crate::row::{to_json, to_ms};
                let agent_id = c.agent_id.to_string();
                let at = to_ms(c.at);
                let deadline = at.saturating_add(i64::from(c.inactive_after_secs) * 1000);
                let facts = to_json(&c.facts, "facts")?;
                let definitions = to_json(&c.definitions, "definitions")?;
                let last_errors = to_json(&c.last_errors, "last_errors")?;
                let defs = to_json(&c.defs, "defs")?;
                let update = sqlx::query($crate::sql::RECORD_CHECKIN)
                    .bind(&agent_id)
                    .bind(at)
                    .bind(deadline)
                    .bind(i64::from(c.checkin_interval_secs))
                    .bind(i64::from(c.inactive_after_secs))
                    .bind(&c.external_ip)
                    .bind(&c.version)
                    .bind(&facts)
                    .bind(&definitions)
                    .bind(&last_errors)
                    .bind(&c.proxy)
                    .bind(&defs);

                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let row = update
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .ok_or(tether_store::StoreError::NotFound)?;
                // The UPDATE holds the row (PostgreSQL) or the database
                // (SQLite) until commit, so the status read here is current.
                let mut record = $crate::row::agent(&row)?;
                if record.status == change.from {
                    let applied = sqlx::query($crate::sql::CHANGE_STATUS)
                        .bind(&agent_id)
                        .bind(change.to.as_str())
                        .bind(change.from.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected()
                        == 1;
                    if applied {
                        insert_transition!(
                            tx,
                            &agent_id,
                            Some(change.from),
                            change.to,
                            &change.reason,
                            at
                        );
                        record.status = change.to;
                    }
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(record)
            }

            async fn change_status(
                &self,
                id: uuid::Uuid,
                change: &tether_store::StatusChange,
                at: time::OffsetDateTime,
            ) -> Result<bool, tether_store::StoreError> {
                let agent_id = id.to_string();
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let applied = sqlx::query($crate::sql::CHANGE_STATUS)
                    .bind(&agent_id)
                    .bind(change.to.as_str())
                    .bind(change.from.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected()
                    == 1;
                if !applied {
                    let exists = sqlx::query($crate::sql::AGENT_EXISTS)
                        .bind(&agent_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .is_some();
                    return if exists {
                        Ok(false)
                    } else {
                        Err(tether_store::StoreError::NotFound)
                    };
                }
                insert_transition!(
                    tx,
                    &agent_id,
                    Some(change.from),
                    change.to,
                    &change.reason,
                    $crate::row::to_ms(at)
                );
                tx.commit().await.map_err($crate::error::db)?;
                Ok(true)
            }

            async fn record_shutdown(
                &self,
                id: uuid::Uuid,
                reason: &str,
                at: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                let agent_id = id.to_string();
                let at = $crate::row::to_ms(at);
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let previous = sqlx::query(Self::LOCK_AGENT_STATUS)
                    .bind(&agent_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .ok_or(tether_store::StoreError::NotFound)?;
                let from = $crate::row::agent_status(&previous, &agent_id)?;
                if from == tether_wire::AgentStatus::Stopped {
                    // A repeated notice: the first stop stands.
                    return Ok(());
                }
                let applied = sqlx::query($crate::sql::RECORD_SHUTDOWN)
                    .bind(&agent_id)
                    .bind(at)
                    .bind(from.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected()
                    == 1;
                if applied {
                    insert_transition!(
                        tx,
                        &agent_id,
                        Some(from),
                        tether_wire::AgentStatus::Stopped,
                        reason,
                        at
                    );
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(())
            }

            async fn approve_agent(
                &self,
                id: uuid::Uuid,
                at: time::OffsetDateTime,
            ) -> Result<tether_store::AgentRecord, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::APPROVE_AGENT)
                    .bind(id.to_string())
                    .bind($crate::row::to_ms(at))
                    .fetch_optional(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .ok_or(tether_store::StoreError::NotFound)?;
                $crate::row::agent(&row)
            }

            async fn remove_agent(
                &self,
                id: uuid::Uuid,
                at: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                // A removed agent's credential must not come back after a
                // power loss.
                durably!(self, tx, {
                    let n = sqlx::query($crate::sql::REMOVE_AGENT)
                        .bind(id.to_string())
                        .bind($crate::row::to_ms(at))
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected();
                    if n == 0 {
                        return Err(tether_store::StoreError::NotFound);
                    }
                    tx.commit().await.map_err($crate::error::db)?;
                    Ok(())
                })
            }

            async fn transitions(
                &self,
                id: uuid::Uuid,
                limit: u32,
            ) -> Result<Vec<tether_wire::Transition>, tether_store::StoreError> {
                let agent_id = id.to_string();
                let rows = sqlx::query($crate::sql::TRANSITIONS)
                    .bind(&agent_id)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::transition(r, &agent_id))
                    .collect()
            }

            async fn overdue_agents(
                &self,
                now: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_store::Overdue>, tether_store::StoreError> {
                let now = $crate::row::to_ms(now);
                // Candidates not overdue yet leave the index's past part, so
                // the query below reads (nearly) only the overdue. Ten times
                // the batch: a sweep raises at most that many per call.
                sqlx::query($crate::sql::RAISE_SWEEP_AT)
                    .bind(now)
                    .bind(i64::from(limit).saturating_mul(10))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                let rows = sqlx::query($crate::sql::OVERDUE_AGENTS)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::overdue(r)).collect()
            }

            async fn heartbeat(
                &self,
                instance: &str,
                at: time::OffsetDateTime,
            ) -> Result<Option<time::OffsetDateTime>, tether_store::StoreError> {
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let before = sqlx::query($crate::sql::HEARTBEAT_BEFORE)
                    .bind(instance)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .map(|r| $crate::row::alive_at(&r, instance))
                    .transpose()?;
                sqlx::query($crate::sql::UPSERT_HEARTBEAT)
                    .bind(instance)
                    .bind($crate::row::to_ms(at))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(before)
            }

            async fn record_outage(
                &self,
                o: &tether_store::NewOutage,
            ) -> Result<tether_wire::ControlPlaneOutage, tether_store::StoreError> {
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let given = sqlx::query($crate::sql::GRACE_ACTIVE_AGENTS)
                    .bind($crate::row::to_ms(o.ended_at))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                sqlx::query($crate::sql::INSERT_OUTAGE)
                    .bind(o.id.to_string())
                    .bind(o.kind.as_str())
                    .bind(&o.instance)
                    .bind($crate::row::to_ms(o.started_at))
                    .bind($crate::row::to_ms(o.ended_at))
                    .bind($crate::row::to_i64(given, "agents_given_grace")?)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(tether_wire::ControlPlaneOutage {
                    kind: o.kind,
                    started_at: o.started_at,
                    ended_at: o.ended_at,
                    agents_given_grace: given,
                })
            }

            async fn outages(
                &self,
                since: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_wire::ControlPlaneOutage>, tether_store::StoreError> {
                let rows = sqlx::query($crate::sql::OUTAGES)
                    .bind($crate::row::to_ms(since))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::outage(r)).collect()
            }

            async fn prune_transitions(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<u64, tether_store::StoreError> {
                Ok(sqlx::query($crate::sql::PRUNE_TRANSITIONS)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected())
            }

            async fn prune_completed_actions(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<u64, tether_store::StoreError> {
                Ok(sqlx::query($crate::sql::PRUNE_COMPLETED_ACTIONS)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected())
            }

            async fn prune_outages(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<u64, tether_store::StoreError> {
                Ok(sqlx::query($crate::sql::PRUNE_OUTAGES)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected())
            }

            fn observe_checkin_batches(&self, observer: tether_store::BatchObserver) {
                self.checkins.observe(observer);
            }

            async fn count_by_status(
                &self,
            ) -> Result<
                std::collections::BTreeMap<tether_wire::AgentStatus, u64>,
                tether_store::StoreError,
            > {
                let rows = sqlx::query($crate::sql::COUNT_BY_STATUS)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                // Every status is present, with zero when no agent has it, so
                // callers can export the map as gauges without gaps.
                let mut counts: std::collections::BTreeMap<_, _> = tether_wire::AgentStatus::ALL
                    .into_iter()
                    .map(|s| (s, 0))
                    .collect();
                for row in &rows {
                    let (status, n) = $crate::row::status_count(row)?;
                    counts.insert(status, n);
                }
                Ok(counts)
            }

            async fn policy(
                &self,
                name: &str,
            ) -> Result<Option<tether_store::PolicyRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::POLICY)
                    .bind(name)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::policy(r)).transpose()
            }

            async fn list_policies(
                &self,
            ) -> Result<Vec<tether_store::PolicyRecord>, tether_store::StoreError> {
                let rows = sqlx::query($crate::sql::LIST_POLICIES)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::policy(r)).collect()
            }

            async fn upsert_policy(
                &self,
                name: &str,
                settings: &tether_store::PolicySettings,
                if_revision: Option<i64>,
                at: time::OffsetDateTime,
            ) -> Result<tether_store::PolicyRecord, tether_store::StoreError> {
                let targets = $crate::row::to_json(&settings.targets, "targets")?;
                let defs = $crate::row::to_json(&settings.defs, "defs")?;
                let row = sqlx::query($crate::sql::UPSERT_POLICY)
                    .bind(name)
                    .bind(i64::from(settings.checkin_interval_secs))
                    .bind(i64::from(settings.jitter_percent))
                    .bind(targets)
                    .bind(defs)
                    .bind($crate::row::to_ms(at))
                    .bind(if_revision)
                    .bind(settings.max_concurrent_tasks.map(i64::from))
                    .fetch_optional(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                match row {
                    Some(row) => $crate::row::policy(&row),
                    // The guarded update touched nothing: someone else saved
                    // a newer revision since the caller read it.
                    None => {
                        let stored = self.policy(name).await?.map(|p| p.revision);
                        Err(tether_store::StoreError::Conflict(format!(
                            "policy {name:?} is at revision {}, not {} as expected: it was changed meanwhile",
                            stored.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                            if_revision.unwrap_or_default()
                        )))
                    }
                }
            }

            async fn queue_action(
                &self,
                id: uuid::Uuid,
                agent_id: uuid::Uuid,
                kind: &tether_wire::ActionKind,
                at: time::OffsetDateTime,
            ) -> Result<tether_wire::ActionInfo, tether_store::StoreError> {
                let agent = agent_id.to_string();
                let kind = $crate::row::to_json(kind, "kind")?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let bumped = sqlx::query($crate::sql::BUMP_PENDING_ACTIONS)
                    .bind(&agent)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if bumped == 0 {
                    return Err(tether_store::StoreError::NotFound);
                }
                let row = sqlx::query($crate::sql::INSERT_ACTION)
                    .bind(id.to_string())
                    .bind(&agent)
                    .bind(&kind)
                    .bind($crate::row::to_ms(at))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let action = $crate::row::action(&row)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(action)
            }

            async fn take_actions(
                &self,
                agent_id: uuid::Uuid,
                at: time::OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<tether_wire::ActionInfo>, tether_store::StoreError> {
                let agent = agent_id.to_string();
                let at = $crate::row::to_ms(at);
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let queued = sqlx::query($crate::sql::QUEUED_ACTIONS)
                    .bind(&agent)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let mut delivered = Vec::with_capacity(queued.len());
                for row in &queued {
                    let id = $crate::row::action(row)?.id;
                    // A concurrent delivery that won the row leaves nothing here.
                    if let Some(row) = sqlx::query($crate::sql::DELIVER_ACTION)
                        .bind(id.to_string())
                        .bind(at)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                    {
                        delivered.push($crate::row::action(&row)?);
                    }
                }
                sqlx::query($crate::sql::RESET_PENDING_ACTIONS)
                    .bind(&agent)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(delivered)
            }

            async fn complete_action(
                &self,
                agent_id: uuid::Uuid,
                action_id: uuid::Uuid,
                result: &tether_wire::ActionResult,
                at: time::OffsetDateTime,
            ) -> Result<tether_wire::ActionInfo, tether_store::StoreError> {
                let agent = agent_id.to_string();
                let id = action_id.to_string();
                let json = $crate::row::to_json(result, "result")?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let row = sqlx::query($crate::sql::COMPLETE_ACTION)
                    .bind(&id)
                    .bind(&agent)
                    .bind($crate::row::to_ms(at))
                    .bind(&json)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let Some(row) = row else {
                    let state = sqlx::query($crate::sql::ACTION_STATE)
                        .bind(&id)
                        .bind(&agent)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    return match state {
                        None => Err(tether_store::StoreError::NotFound),
                        Some(r) => {
                            let state = $crate::row::action_state(&r, &id)?;
                            Err(tether_store::StoreError::Conflict(format!(
                                "action {id} is {}; only a delivered action can be completed",
                                state.as_str()
                            )))
                        }
                    };
                };
                let action = $crate::row::action(&row)?;
                if let Some(doctor) = &result.doctor {
                    sqlx::query($crate::sql::SET_LAST_DOCTOR)
                        .bind(&agent)
                        .bind($crate::row::to_json(doctor, "last_doctor")?)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(action)
            }

            async fn list_actions(
                &self,
                agent_id: uuid::Uuid,
                limit: u32,
            ) -> Result<Vec<tether_wire::ActionInfo>, tether_store::StoreError> {
                let rows = sqlx::query($crate::sql::LIST_ACTIONS)
                    .bind(agent_id.to_string())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::action(r)).collect()
            }

            async fn insert_bundle(
                &self,
                b: &tether_store::NewBundle,
                keep: u32,
            ) -> Result<tether_wire::BundleInfo, tether_store::StoreError> {
                let agent = b.agent_id.to_string();
                let size = i64::try_from(b.data.len()).map_err(|_| {
                    tether_store::StoreError::Conflict(format!(
                        "a bundle of {} bytes is too large",
                        b.data.len()
                    ))
                })?;
                let verdict = b
                    .verdict
                    .as_ref()
                    .map(|v| $crate::row::to_json(v, "verdict"))
                    .transpose()?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let exists = sqlx::query($crate::sql::AGENT_EXISTS)
                    .bind(&agent)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .is_some();
                if !exists {
                    return Err(tether_store::StoreError::NotFound);
                }
                let row = sqlx::query($crate::sql::INSERT_BUNDLE)
                    .bind(b.id.to_string())
                    .bind(&agent)
                    .bind(size)
                    .bind(&b.sha256)
                    .bind(&verdict)
                    .bind($crate::row::to_ms(b.at))
                    .bind(&b.data[..])
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let info = $crate::row::bundle(&row)?;
                if let Some(verdict) = &verdict {
                    sqlx::query($crate::sql::SET_LAST_DOCTOR)
                        .bind(&agent)
                        .bind(verdict)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                sqlx::query($crate::sql::PRUNE_BUNDLES)
                    .bind(&agent)
                    .bind(i64::from(keep.max(1)))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(info)
            }

            async fn list_bundles(
                &self,
                agent_id: uuid::Uuid,
                limit: u32,
            ) -> Result<Vec<tether_wire::BundleInfo>, tether_store::StoreError> {
                let rows = sqlx::query($crate::sql::LIST_BUNDLES)
                    .bind(agent_id.to_string())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::bundle(r)).collect()
            }

            async fn bundle_info(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<tether_wire::BundleInfo>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::BUNDLE_INFO)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::bundle(r)).transpose()
            }

            async fn bundle(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<(tether_wire::BundleInfo, Vec<u8>)>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::BUNDLE)
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let info = $crate::row::bundle(&row)?;
                let data: Vec<u8> = sqlx::Row::try_get(&row, "data").map_err(|e| {
                    tether_store::StoreError::Corrupt(format!(
                        "bundles.data of row {:?}: {e}",
                        id.to_string()
                    ))
                })?;
                Ok(Some((info, data)))
            }

            async fn last_doctor(
                &self,
                agent_id: uuid::Uuid,
            ) -> Result<Option<tether_wire::DoctorSummary>, tether_store::StoreError> {
                let row = sqlx::query($crate::sql::LAST_DOCTOR)
                    .bind(agent_id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?
                    .ok_or(tether_store::StoreError::NotFound)?;
                $crate::row::last_doctor(&row)
            }

            async fn insert_defs_version(
                &self,
                v: &tether_wire::DefsVersion,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::{to_i64, to_json, to_ms};
                let inserted = sqlx::query($crate::sql::INSERT_DEFS_VERSION)
                    .bind(&v.channel)
                    .bind(to_i64(v.version, "version")?)
                    .bind(&v.sha256)
                    .bind(to_i64(v.length, "length")?)
                    .bind(&v.content)
                    .bind(to_ms(v.published_at))
                    .bind(&v.notes)
                    .bind(to_i64(v.full_size, "full_size")?)
                    .bind(to_json(&v.deltas, "deltas")?)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                if inserted == 0 {
                    return Err(tether_store::StoreError::Conflict(format!(
                        "version {} of channel {:?} is already recorded",
                        v.version, v.channel
                    )));
                }
                Ok(())
            }

            async fn list_defs_versions(
                &self,
                channel: Option<&str>,
            ) -> Result<Vec<tether_wire::DefsVersion>, tether_store::StoreError> {
                let query = match channel {
                    None => sqlx::query($crate::sql::LIST_DEFS_VERSIONS),
                    Some(c) => sqlx::query($crate::sql::LIST_DEFS_VERSIONS_OF_CHANNEL).bind(c),
                };
                let rows = query
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::defs_version(r)).collect()
            }
        }
    };
}
