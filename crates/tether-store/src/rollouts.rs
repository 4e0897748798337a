//! Agent rollouts (issue #13): per group, the version its agents should run.

use async_trait::async_trait;
use tether_wire::{RolloutProgress, RolloutStage, UpgradeReport};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;

/// One group's rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    pub group: String,
    pub version: String,
    pub stage: RolloutStage,
    /// 1–100.
    pub canary_percent: u8,
    /// `Some((when, why))` while paused.
    pub paused: Option<(OffsetDateTime, String)>,
    pub created_at: OffsetDateTime,
    /// The last change by an admin.
    pub updated_at: OffsetDateTime,
}

impl RolloutRecord {
    /// A new, running rollout: the canary stage below 100 percent, else
    /// every agent at once.
    pub fn new(group: &str, version: &str, canary_percent: u8, at: OffsetDateTime) -> Self {
        RolloutRecord {
            group: group.to_owned(),
            version: version.to_owned(),
            stage: if canary_percent < 100 {
                RolloutStage::Canary
            } else {
                RolloutStage::All
            },
            canary_percent,
            paused: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// An admin's change to an existing rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutChange {
    Pause {
        reason: String,
    },
    Resume,
    /// From the canary stage to every agent.
    Promote,
}

/// The rollouts' half of the store.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Starts or replaces `rollout.group`'s rollout (a replaced one starts
    /// over: its pause is cleared with it).
    async fn put_rollout(&self, rollout: &RolloutRecord) -> Result<(), StoreError>;

    /// Every group's rollout, by group.
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError>;

    /// Applies an admin's change and returns the rollout as it is now.
    /// `NotFound` when the group has no rollout.
    async fn change_rollout(
        &self,
        group: &str,
        change: &RolloutChange,
        at: OffsetDateTime,
    ) -> Result<RolloutRecord, StoreError>;

    /// Ends a group's rollout (its agents keep what they run). `NotFound`
    /// when the group has none.
    async fn delete_rollout(&self, group: &str) -> Result<(), StoreError>;

    /// Pauses `group`'s rollout because an agent reported at `reported_at`
    /// that `version` rolled back, unless it is already paused, targets
    /// another version, or an admin changed it after the report (a resume
    /// after the rollback must hold). Returns whether it paused.
    async fn pause_rollout_on_rollback(
        &self,
        group: &str,
        version: &str,
        reason: &str,
        reported_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// How many of `group`'s agents there are, run `version`, and report
    /// that `version` rolled back.
    async fn rollout_progress(
        &self,
        group: &str,
        version: &str,
    ) -> Result<RolloutProgress, StoreError>;

    /// The last upgrade report of each of `agents` that has one (one query,
    /// for a page of the fleet list).
    async fn agent_upgrades_of(
        &self,
        agents: &[Uuid],
    ) -> Result<Vec<(Uuid, UpgradeReport)>, StoreError>;
}
