//! Long-poll delivery: the agents whose poll this server holds, and how a
//! new or requeued task wakes them.
//!
//! Each held poll registers a [`Notify`] under its agent (and its group and
//! kind). Creating a task wakes the targeted agent, or up to
//! [`WAKE_PER_TASK`] waiting agents of the group. `Notify` keeps a permit for
//! a poll that is between its store query and its wait, so a wake-up is
//! never lost. The hub is per process: with several servers on PostgreSQL,
//! the other servers' wake-ups reach it through the store ([`super::wakeups`]);
//! one that is lost leaves a poll to learn of the task when it returns (at
//! most `task_poll_max_wait_secs` later) and asks again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tether_wire::{AgentKind, TaskTarget};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

/// How many waiting agents of a group one new task wakes: more than one,
/// so that a poll about to return anyway does not delay the task.
pub const WAKE_PER_TASK: usize = 2;

type GroupKey = (String, AgentKind);

#[derive(Debug)]
struct Waiter {
    notify: Arc<Notify>,
    group: GroupKey,
}

#[derive(Debug, Default)]
struct Inner {
    waiters: HashMap<Uuid, Waiter>,
    by_group: HashMap<GroupKey, HashSet<Uuid>>,
}

/// The polls this server holds.
#[derive(Debug)]
pub struct TaskHub {
    inner: Mutex<Inner>,
    held: AtomicUsize,
    /// The most polls held at once; past it, polls are answered at once with
    /// a Retry-After and agents rely on check-in delivery meanwhile.
    pub max_pollers: usize,
    /// The longest a poll is held: below common load-balancer idle timeouts.
    pub max_wait_secs: u32,
    /// Leases do not expire before this: a server that just started gives
    /// agents time to reach it again.
    pub grace_until: OffsetDateTime,
}

/// Removes its poll from the hub when dropped: when the poll returns, and
/// when the client goes away and the handler is dropped mid-wait.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<TaskHub>,
    agent: Uuid,
    pub notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.held.fetch_sub(1, Ordering::AcqRel);
        let mut inner = self.hub.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ours = inner
            .waiters
            .get(&self.agent)
            .is_some_and(|w| Arc::ptr_eq(&w.notify, &self.notify));
        if ours
            && let Some(w) = inner.waiters.remove(&self.agent)
            && let Some(set) = inner.by_group.get_mut(&w.group)
        {
            set.remove(&self.agent);
            if set.is_empty() {
                inner.by_group.remove(&w.group);
            }
        }
    }
}

impl TaskHub {
    pub fn new(max_pollers: usize, max_wait_secs: u32, grace_until: OffsetDateTime) -> TaskHub {
        TaskHub {
            inner: Mutex::default(),
            held: AtomicUsize::new(0),
            max_pollers,
            max_wait_secs,
            grace_until,
        }
    }

    /// How many polls are held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Registers a poll; `None` when the hub is full.
    pub fn register(
        self: &Arc<Self>,
        agent: Uuid,
        group: &str,
        kind: AgentKind,
    ) -> Option<Registration> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.max_pollers {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let notify = Arc::new(Notify::new());
        let key = (group.to_owned(), kind);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A second poll of the same agent replaces the first, which then
        // simply times out.
        inner.waiters.insert(
            agent,
            Waiter {
                notify: Arc::clone(&notify),
                group: key.clone(),
            },
        );
        inner.by_group.entry(key).or_default().insert(agent);
        Some(Registration {
            hub: Arc::clone(self),
            agent,
            notify,
        })
    }

    /// Whether this server holds a poll of the agent now.
    pub fn is_polling(&self, agent: Uuid) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiters
            .contains_key(&agent)
    }

    /// Wakes whoever may run a task of `target`.
    pub fn wake(&self, target: &TaskTarget) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match target {
            TaskTarget::Agent { agent_id } => {
                if let Some(w) = inner.waiters.get(agent_id) {
                    w.notify.notify_one();
                }
            }
            TaskTarget::Group {
                group, agent_kind, ..
            } => {
                let key = (group.clone(), *agent_kind);
                if let Some(set) = inner.by_group.get(&key) {
                    for agent in set.iter().take(WAKE_PER_TASK) {
                        if let Some(w) = inner.waiters.get(agent) {
                            w.notify.notify_one();
                        }
                    }
                }
            }
        }
    }

    /// Wakes every held poll: a wake-up from another server was unreadable,
    /// or some may have been missed (see [`super::wakeups`]).
    pub fn wake_all(&self) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for w in inner.waiters.values() {
            w.notify.notify_one();
        }
    }

    /// Wakes the target at `at` (a retry's back-off ending, a window
    /// opening). The timer lives in this process only; a poll returning on
    /// its own covers a restart.
    pub fn wake_at(self: &Arc<Self>, target: TaskTarget, at: OffsetDateTime, now: OffsetDateTime) {
        let Ok(delay) = std::time::Duration::try_from(at - now) else {
            self.wake(&target);
            return;
        };
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            hub.wake(&target);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn registrations_are_capped_and_removed_on_drop() {
        let hub = Arc::new(TaskHub::new(2, 50, datetime!(2026-05-17 10:00 UTC)));
        let a = hub
            .register(Uuid::from_u128(1), "g", AgentKind::Discovery)
            .expect("room");
        let b = hub
            .register(Uuid::from_u128(2), "g", AgentKind::Discovery)
            .expect("room");
        assert!(
            hub.register(Uuid::from_u128(3), "g", AgentKind::Discovery)
                .is_none()
        );
        assert_eq!(hub.held(), 2);
        assert!(hub.is_polling(Uuid::from_u128(1)));
        drop(a);
        assert!(!hub.is_polling(Uuid::from_u128(1)));
        assert_eq!(hub.held(), 1);
        drop(b);
        assert_eq!(hub.held(), 0);
        assert!(hub.inner.lock().expect("lock").by_group.is_empty());
    }

    #[tokio::test]
    async fn wake_all_wakes_every_held_poll_of_every_group() {
        let hub = Arc::new(TaskHub::new(10, 50, datetime!(2026-05-17 10:00 UTC)));
        let polls: Vec<_> = (0..3u128)
            .map(|n| {
                hub.register(Uuid::from_u128(n), &format!("g{n}"), AgentKind::Discovery)
                    .expect("room")
            })
            .collect();
        hub.wake_all();
        for r in &polls {
            tokio::time::timeout(std::time::Duration::from_secs(1), r.notify.notified())
                .await
                .expect("every poll is woken");
        }
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let hub = Arc::new(TaskHub::new(10, 50, datetime!(2026-05-17 10:00 UTC)));
        let r = hub
            .register(Uuid::from_u128(1), "g", AgentKind::Discovery)
            .expect("room");
        hub.wake(&TaskTarget::Group {
            group: "g".into(),
            agent_kind: AgentKind::Discovery,
            site: None,
        });
        tokio::time::timeout(std::time::Duration::from_secs(1), r.notify.notified())
            .await
            .expect("the stored permit wakes the later wait");
    }
}
