//! Task wake-ups between servers on PostgreSQL: `NOTIFY` on a channel of
//! the database (and schema), one `LISTEN` connection per server (see
//! [`tether_store::TaskWakeups`]). SQLite keeps the trait's defaults: one
//! server owns the file, and its own hub wakes its polls.
//!
//! The payload is the target as JSON (a few dozen bytes). One that would
//! not fit PostgreSQL's
//! 8000-byte limit is sent as `*`, and one that cannot be read (a newer
//! server's, or anyone's with access to the database) wakes every poll: a
//! spurious wake-up costs one query, a lost one a whole poll's wait.

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tether_store::{StoreError, TaskWake, TaskWakeSubscription, TaskWakeups};
use tether_wire::TaskTarget;

use crate::error;
use crate::postgres::PostgresStore;

/// The channel of a store in the default schema.
const CHANNEL: &str = "tether_tasks";
/// The payload that wakes every poll.
const EVERYONE: &str = "*";
/// Below PostgreSQL's 8000-byte limit on a payload.
const MAX_PAYLOAD: usize = 7900;
/// PostgreSQL truncates identifiers to 63 bytes (`NAMEDATALEN - 1`).
const MAX_CHANNEL: usize = 63;

/// The channel of a store: one per schema, so that test stores sharing one
/// database do not wake each other's polls (a truncated name that two
/// schemas share only costs them spurious wake-ups).
pub(crate) fn channel(schema: Option<&str>) -> String {
    let mut name = match schema {
        None => CHANNEL.to_owned(),
        // Schema names are [a-z0-9_] (see `check_schema_name`): ASCII, so
        // truncating at any byte keeps the string valid.
        Some(s) => format!("{CHANNEL}_{s}"),
    };
    name.truncate(MAX_CHANNEL);
    name
}

fn payload(target: &TaskTarget) -> String {
    match serde_json::to_string(target) {
        Ok(json) if json.len() <= MAX_PAYLOAD => json,
        _ => EVERYONE.to_owned(),
    }
}

fn wake_of(payload: &str) -> TaskWake {
    match serde_json::from_str::<TaskTarget>(payload) {
        Ok(target) => TaskWake::Target(target),
        Err(_) => TaskWake::Everyone,
    }
}

#[async_trait]
impl TaskWakeups for PostgresStore {
    async fn publish_task_wake(&self, target: &TaskTarget) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel(self.schema()))
            .bind(payload(target))
            .execute(self.pool())
            .await
            .map_err(error::db)?;
        Ok(())
    }

    async fn subscribe_task_wakes(
        &self,
    ) -> Result<Option<Box<dyn TaskWakeSubscription>>, StoreError> {
        // A pool of its own, of one connection, so that the listener never
        // takes a connection from the store's pool (whose smallest size
        // leaves none to spare) and is never recycled by its timeouts.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with((*self.pool().connect_options()).clone());
        let mut listener = PgListener::connect_with(&pool).await.map_err(error::db)?;
        // A lost connection ends the subscription; the caller subscribes
        // again and knows that wake-ups were lost meanwhile.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener
            .listen(&channel(self.schema()))
            .await
            .map_err(error::db)?;
        Ok(Some(Box::new(Subscription { listener })))
    }
}

struct Subscription {
    listener: PgListener,
}

#[async_trait]
impl TaskWakeSubscription for Subscription {
    async fn next(&mut self) -> Result<TaskWake, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(wake_of(n.payload())),
            Ok(None) => Err(StoreError::Unavailable(
                "the task wake-up listener's connection was lost".into(),
            )),
            Err(e) => Err(error::db(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::AgentKind;

    #[test]
    fn payloads_round_trip_and_what_cannot_be_read_wakes_everyone() {
        let group = TaskTarget::Group {
            group: "lab".into(),
            agent_kind: AgentKind::Discovery,
            site: Some("paris".into()),
        };
        assert_eq!(wake_of(&payload(&group)), TaskWake::Target(group));
        let huge = TaskTarget::Group {
            group: "g".repeat(MAX_PAYLOAD),
            agent_kind: AgentKind::Discovery,
            site: None,
        };
        assert_eq!(payload(&huge), EVERYONE);
        assert_eq!(wake_of(EVERYONE), TaskWake::Everyone);
        assert_eq!(wake_of("{\"type\":\"future\"}"), TaskWake::Everyone);
    }

    #[test]
    fn channels_are_per_schema_and_fit_an_identifier() {
        assert_eq!(channel(None), "tether_tasks");
        assert_eq!(channel(Some("t1")), "tether_tasks_t1");
        assert_eq!(channel(Some(&"s".repeat(63))).len(), MAX_CHANNEL);
    }
}
