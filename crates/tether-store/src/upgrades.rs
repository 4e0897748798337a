//! Agent upgrades (issue #13): each agent's last upgrade as its host
//! reported it at check-in.

use async_trait::async_trait;
use tether_wire::UpgradeReport;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;

/// The agent upgrades' half of the store.
#[async_trait]
pub trait UpgradeStore: Send + Sync {
    /// Keeps `report` as `agent`'s last upgrade. A report equal to the
    /// stored one (the same state, version and time) changes nothing.
    async fn record_agent_upgrade(
        &self,
        agent: Uuid,
        report: &UpgradeReport,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// One agent's last upgrade, if it reported one.
    async fn agent_upgrade(&self, agent: Uuid) -> Result<Option<UpgradeReport>, StoreError>;

    /// Every agent's last upgrade.
    async fn agent_upgrades(&self) -> Result<Vec<(Uuid, UpgradeReport)>, StoreError>;
}
