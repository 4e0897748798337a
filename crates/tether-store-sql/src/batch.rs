//! Group commit for check-ins, the store's hot path.
//!
//! A check-in that changes no status is one row update. Written one by one,
//! each costs a round trip to the database (for SQLite, to sqlx's worker
//! thread), and at thousands per second those hand-offs, not SQL, dominate
//! the server's CPU. So check-ins go through one writer task: it takes the
//! first waiting check-in, drains whatever else is already queued (up to
//! [`MAX_BATCH`]), and writes them all with one multi-row `UPDATE … FROM
//! (VALUES …)`. Nothing waits on a timer: a lone check-in is written at once,
//! and batches grow only when check-ins arrive faster than they are written.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tether_store::{AgentRecord, Checkin, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

/// Rows per statement: 64 × 12 parameters stays far below both databases'
/// limits, and larger batches gained nothing measurable.
pub(crate) const MAX_BATCH: usize = 64;

/// How many check-ins may wait for the writer before callers wait to queue.
const QUEUE: usize = 4096;

/// What a batch write returns: each updated row by agent id. An agent absent
/// from the map was not updated (removed or unknown).
pub(crate) type BatchResult = Result<HashMap<Uuid, Result<AgentRecord, StoreError>>, StoreError>;

pub(crate) type WriteBatch =
    Box<dyn Fn(Vec<Checkin>) -> Pin<Box<dyn Future<Output = BatchResult> + Send>> + Send + Sync>;

type Job = (Checkin, oneshot::Sender<Result<AgentRecord, StoreError>>);

/// The sending side; the writer task ends when every clone is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
    observer: Arc<std::sync::OnceLock<tether_store::BatchObserver>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Spawns `writers` writer tasks on the current tokio runtime. SQLite
    /// takes one (it has one writer anyway); PostgreSQL takes several, so one
    /// batch's commit (an fsync) overlaps the next batch's update.
    pub(crate) fn spawn(write: WriteBatch, writers: usize) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        let observer = Arc::new(std::sync::OnceLock::new());
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(rx.clone(), write.clone(), observer.clone()));
        }
        Batcher { tx, observer }
    }

    /// Reports each batch's size to `observer` from now on (the first
    /// observer set stays).
    pub(crate) fn observe(&self, observer: tether_store::BatchObserver) {
        let _ = self.observer.set(observer);
    }

    /// Queues one check-in and waits for its row.
    pub(crate) async fn submit(&self, checkin: Checkin) -> Result<AgentRecord, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((checkin, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the check-in writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the check-in writer has stopped".into()))?
    }
}

async fn writer(
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    write: Arc<WriteBatch>,
    observer: Arc<std::sync::OnceLock<tether_store::BatchObserver>>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        // Writers take turns receiving; the lock is released before writing.
        let received = rx.lock().await.recv_many(&mut jobs, MAX_BATCH).await;
        if received == 0 {
            break;
        }
        if let Some(observe) = observer.get() {
            observe(jobs.len());
        }
        let mut checkins = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for (checkin, reply) in jobs.drain(..) {
            replies.push((checkin.agent_id, reply));
            checkins.push(checkin);
        }
        match write(checkins).await {
            Ok(mut rows) => {
                for (id, reply) in replies {
                    // The same agent twice in one batch gets the same row twice.
                    let result = match rows.get(&id) {
                        Some(Ok(record)) => Ok(record.clone()),
                        Some(Err(e)) => Err(copy(e)),
                        None => Err(StoreError::NotFound),
                    };
                    let _ = reply.send(result);
                }
                rows.clear();
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(copy(&e)));
                }
            }
        }
    }
}

/// `StoreError` is not `Clone` (it is `non_exhaustive` and may carry
/// sources later); every caller in a failed batch gets an equal error.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::TokenUnavailable(t) => StoreError::TokenUnavailable(*t),
        StoreError::Conflict(s) => StoreError::Conflict(s.clone()),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        StoreError::InvalidUrl(s) => StoreError::InvalidUrl(s.clone()),
        StoreError::Tls(s) => StoreError::Tls(s.clone()),
        StoreError::SchemaTooNew(s) => StoreError::SchemaTooNew(s.clone()),
        StoreError::MigrationAltered(s) => StoreError::MigrationAltered(s.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
