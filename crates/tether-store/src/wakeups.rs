//! Task wake-ups between servers: a server that makes a task runnable says
//! so to every server sharing the database, so that a poll held by another
//! server is answered at once rather than when it times out.
//!
//! Only backends that several servers share carry them (PostgreSQL, with
//! LISTEN/NOTIFY). The defaults are for a backend that one server owns
//! (SQLite): publishing does nothing, and there is nothing to subscribe to,
//! because the server's own hub already woke its polls. A wake-up is a hint,
//! never a fact: the task is in the store before it is published, a lost
//! wake-up only delays a task until the poll returns, and a spurious one
//! costs one query.

use async_trait::async_trait;
use tether_wire::TaskTarget;

use crate::StoreError;

/// What a wake-up names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskWake {
    /// Whoever may run a task of this target.
    Target(TaskTarget),
    /// Every held poll: the wake-up could not be read (or did not fit), so
    /// its target is unknown.
    Everyone,
}

/// A live subscription to the wake-ups of every server on the database.
#[async_trait]
pub trait TaskWakeSubscription: Send {
    /// The next wake-up. An error means the subscription is over (its
    /// connection dropped): wake-ups published meanwhile are lost, and the
    /// caller subscribes again.
    async fn next(&mut self) -> Result<TaskWake, StoreError>;
}

/// The wake-ups' half of the store.
#[async_trait]
pub trait TaskWakeups: Send + Sync {
    /// Tells every server that a task of `target` may run now. Called after
    /// the task is stored.
    async fn publish_task_wake(&self, target: &TaskTarget) -> Result<(), StoreError> {
        let _ = target;
        Ok(())
    }

    /// Subscribes to every server's wake-ups (this one's included); `None`
    /// when the backend is one server's alone.
    async fn subscribe_task_wakes(
        &self,
    ) -> Result<Option<Box<dyn TaskWakeSubscription>>, StoreError> {
        Ok(None)
    }
}
