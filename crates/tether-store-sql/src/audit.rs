//! The admin audit log ([`tether_store::AuditStore`]), written once for
//! both backends like `upgrades.rs`.

pub(crate) const RECORD_AUDIT: &str = "INSERT INTO admin_audit \
     (id, at, actor, actor_id, method, route, path, target, address, status, code) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(crate) const PRUNE_AUDIT: &str = "DELETE FROM admin_audit WHERE id IN \
     (SELECT id FROM admin_audit WHERE at < $1 ORDER BY at LIMIT $2)";

/// The page query: only placeholders are generated, values are always bound.
pub(crate) fn list_audit(actor: bool, since: bool, before: bool) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = String::from(
        "SELECT id, at, actor, actor_id, method, route, path, target, address, status, code \
         FROM admin_audit WHERE 1 = 1",
    );
    if actor {
        sql.push_str(&format!(" AND actor = {}", next()));
    }
    if since {
        sql.push_str(&format!(" AND at >= {}", next()));
    }
    if before {
        let (at, id) = (next(), next());
        sql.push_str(&format!(" AND (at, id) < ({at}, {id})"));
    }
    sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT {}", next()));
    sql
}

macro_rules! impl_audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::AuditStore for $store {
            async fn record_audit(
                &self,
                e: &tether_wire::AuditEntry,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::to_ms;
                sqlx::query($crate::audit::RECORD_AUDIT)
                    .bind(e.id.to_string())
                    .bind(to_ms(e.at))
                    .bind(e.actor.as_str())
                    .bind(e.actor_id.map(|id| id.to_string()))
                    .bind(e.method.as_str())
                    .bind(e.route.as_str())
                    .bind(e.path.as_str())
                    .bind(e.target.as_deref())
                    .bind(e.address.as_deref())
                    .bind(i64::from(e.status))
                    .bind(e.code.as_deref())
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn list_audit(
                &self,
                filter: &tether_store::AuditFilter,
                before: Option<&tether_store::Cursor>,
                limit: u32,
            ) -> Result<Vec<tether_wire::AuditEntry>, tether_store::StoreError> {
                use $crate::row::to_ms;
                let sql = $crate::audit::list_audit(
                    filter.actor.is_some(),
                    filter.since.is_some(),
                    before.is_some(),
                );
                let mut query = sqlx::query(&sql);
                if let Some(actor) = &filter.actor {
                    query = query.bind(actor.as_str());
                }
                if let Some(since) = filter.since {
                    query = query.bind(to_ms(since));
                }
                if let Some(c) = before {
                    query = query.bind(to_ms(c.at)).bind(c.id.to_string());
                }
                let rows = query
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::audit_entry(r)).collect()
            }

            async fn prune_audit(
                &self,
                before: time::OffsetDateTime,
                limit: u32,
            ) -> Result<u64, tether_store::StoreError> {
                Ok(sqlx::query($crate::audit::PRUNE_AUDIT)
                    .bind($crate::row::to_ms(before))
                    .bind(i64::from(limit))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected())
            }
        }
    };
}
