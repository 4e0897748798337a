//! Agent upgrades ([`tether_store::UpgradeStore`]), written once for both
//! backends like `leases.rs`: one portable upsert that leaves an unchanged
//! report alone.

pub(crate) const RECORD_UPGRADE: &str = "INSERT INTO agent_upgrades \
     (agent_id, state, version, from_version, reason, at, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (agent_id) DO UPDATE SET \
     state = excluded.state, version = excluded.version, \
     from_version = excluded.from_version, reason = excluded.reason, \
     at = excluded.at, recorded_at = excluded.recorded_at \
     WHERE agent_upgrades.state <> excluded.state \
        OR agent_upgrades.version <> excluded.version \
        OR agent_upgrades.at <> excluded.at";
pub(crate) const AGENT_UPGRADE: &str = "SELECT agent_id, state, version, from_version, reason, at \
     FROM agent_upgrades WHERE agent_id = $1";
pub(crate) const AGENT_UPGRADES: &str = "SELECT agent_id, state, version, from_version, reason, at \
     FROM agent_upgrades ORDER BY agent_id";

macro_rules! impl_upgrade_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::UpgradeStore for $store {
            async fn record_agent_upgrade(
                &self,
                agent: uuid::Uuid,
                report: &tether_wire::UpgradeReport,
                now: time::OffsetDateTime,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::to_ms;
                sqlx::query($crate::upgrades::RECORD_UPGRADE)
                    .bind(agent.to_string())
                    .bind(report.state.as_str())
                    .bind(report.version.as_str())
                    .bind(report.from.as_deref())
                    .bind(report.reason.as_deref())
                    .bind(to_ms(report.at))
                    .bind(to_ms(now))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn agent_upgrade(
                &self,
                agent: uuid::Uuid,
            ) -> Result<Option<tether_wire::UpgradeReport>, tether_store::StoreError> {
                let row = sqlx::query($crate::upgrades::AGENT_UPGRADE)
                    .bind(agent.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::agent_upgrade(r).map(|(_, u)| u))
                    .transpose()
            }

            async fn agent_upgrades(
                &self,
            ) -> Result<Vec<(uuid::Uuid, tether_wire::UpgradeReport)>, tether_store::StoreError>
            {
                let rows = sqlx::query($crate::upgrades::AGENT_UPGRADES)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::agent_upgrade(r)).collect()
            }
        }
    };
}
