//! What runs a task: one [`Executor`] per kind. The worker hands each
//! attempt a [`Work`]: the lease, a progress cell the heartbeats read, and a
//! [`ResultSink`] that spools result chunks durably before they are sent.
//!
//! An executor's future runs on the task's own thread and runtime; dropping
//! it is how a cancelled task stops, so executors hold no state that must
//! outlive a drop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tether_client::ApiClient;
use tether_wire::{Progress, ResultChunk, TaskKind, TaskLease, TaskOutcome};
use tokio::sync::Notify;

use super::spool::Spool;
use crate::run::BoxFuture;

/// The largest result chunk an executor should emit, in bytes of JSON: well
/// under the server's default body limit (64 KiB).
pub const MAX_CHUNK_BYTES: usize = 48 * 1024;

/// Runs the attempts of one kind.
pub trait Executor: Send + Sync {
    fn kind(&self) -> TaskKind;
    /// Runs one attempt to its outcome. `None` means the work was handed to
    /// a component that reports the result itself (the definitions worker);
    /// the lease is then kept alive until the server says the task ended.
    fn run(&self, work: Work) -> BoxFuture<Option<TaskOutcome>>;
}

/// The progress the next heartbeat reports.
#[derive(Debug, Clone, Default)]
pub struct ProgressCell(Arc<Mutex<Option<Progress>>>);

impl ProgressCell {
    pub fn set(&self, progress: Progress) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress);
    }

    pub fn get(&self) -> Option<Progress> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Spools an attempt's result chunks, numbered in order.
#[derive(Debug, Clone)]
pub struct ResultSink {
    task_id: uuid::Uuid,
    epoch: u64,
    next: Arc<AtomicU32>,
    spool: Spool,
    wake: Arc<Notify>,
}

impl ResultSink {
    pub(crate) fn new(
        task_id: uuid::Uuid,
        epoch: u64,
        spool: Spool,
        wake: Arc<Notify>,
    ) -> ResultSink {
        ResultSink {
            task_id,
            epoch,
            next: Arc::new(AtomicU32::new(0)),
            spool,
            wake,
        }
    }

    /// Spools one chunk of items (durably) and wakes the sender. Keep each
    /// chunk under [`MAX_CHUNK_BYTES`].
    pub fn emit(&self, items: Value) -> std::io::Result<()> {
        self.put(Some(items), None)
    }

    pub(crate) fn end(&self, outcome: TaskOutcome) -> std::io::Result<()> {
        self.put(None, Some(outcome))
    }

    fn put(&self, items: Option<Value>, outcome: Option<TaskOutcome>) -> std::io::Result<()> {
        let chunk = ResultChunk {
            epoch: self.epoch,
            chunk: self.next.fetch_add(1, Ordering::AcqRel),
            items,
            outcome,
        };
        self.spool.put(self.task_id, &chunk)?;
        self.wake.notify_one();
        Ok(())
    }
}

/// One attempt's inputs.
#[derive(Clone)]
pub struct Work {
    pub lease: TaskLease<Value>,
    pub progress: ProgressCell,
    pub results: ResultSink,
    /// The agent's client (for executors that upload, like the doctor's bundle).
    pub client: ApiClient,
}

/// The executors this agent has, by kind.
#[derive(Default, Clone)]
pub struct Executors(BTreeMap<TaskKind, Arc<dyn Executor>>);

impl Executors {
    pub fn with(mut self, e: Arc<dyn Executor>) -> Executors {
        self.0.insert(e.kind(), e);
        self
    }

    pub fn get(&self, kind: TaskKind) -> Option<Arc<dyn Executor>> {
        self.0.get(&kind).cloned()
    }

    /// The kinds to ask the server for.
    pub fn kinds(&self) -> Vec<TaskKind> {
        self.0.keys().copied().collect()
    }
}
