//! Task wake-ups from the other servers on the database: one listener per
//! server feeds the store's wake-ups ([`tether_store::TaskWakeups`]) into
//! this server's [`TaskHub`], so that a task created through another server
//! answers a poll held here at once instead of when the poll times out.
//!
//! When the listener's connection drops, it subscribes again with back-off;
//! wake-ups published meanwhile are lost, so once subscribed again it wakes
//! every poll held here once: each asks the store again, and sees whatever
//! was created while nobody listened. A backend that one server owns
//! (SQLite) has nothing to subscribe to, and the listener ends at once.

use std::sync::Arc;
use std::time::Duration;

use tether_store::{Store, TaskWake};
use tether_transport::backoff;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::hub::TaskHub;

/// The first wait before subscribing again, and the longest.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// Feeds the other servers' wake-ups into `hub` until `stop`.
pub async fn run(store: Arc<dyn Store>, hub: Arc<TaskHub>, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut first = true;
    while !*stop.borrow() {
        let subscribed = tokio::select! {
            s = store.subscribe_task_wakes() => s,
            _ = stop.changed() => break,
        };
        match subscribed {
            Ok(None) => {
                debug!("one server on this store: no task wake-ups to listen for");
                return;
            }
            Ok(Some(mut subscription)) => {
                failures = 0;
                if first {
                    debug!("listening for the other servers' task wake-ups");
                } else {
                    // Wake-ups may have been published while nobody listened.
                    hub.wake_all();
                    info!(
                        held = hub.held(),
                        "task wake-up listener subscribed again; every held poll woken once"
                    );
                }
                loop {
                    tokio::select! {
                        next = subscription.next() => match next {
                            Ok(TaskWake::Target(target)) => hub.wake(&target),
                            Ok(_) => hub.wake_all(),
                            Err(error) => {
                                warn!(error = %error, "the task wake-up listener lost its connection; subscribing again");
                                break;
                            }
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(error) => {
                warn!(error = %error, attempt = failures + 1, "the task wake-up listener could not subscribe; retrying");
            }
        }
        first = false;
        let delay = backoff::ceiling(RETRY_BASE, RETRY_CAP, failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
    }
    debug!("task wake-up listener stopped");
}
