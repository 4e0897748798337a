//! Result chunks on the agent's disk until the server has them.
//!
//! Every chunk is written durably (written, fsynced, renamed, directory
//! fsynced) before it is sent, and removed only when the server
//! acknowledged it (stored now, or already stored). A chunk computed while
//! the server is unreachable, or when the agent is killed before sending,
//! is sent after the next start; the server stores each (task, epoch,
//! chunk) once, so a resend is harmless.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tether_wire::ResultChunk;
use uuid::Uuid;

/// The most chunk files kept; past it the oldest attempt's chunks are the
/// server's problem to recompute (its lease expires and it retries).
pub const MAX_FILES: usize = 10_000;

/// One spooled chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub path: PathBuf,
    pub task_id: Uuid,
    pub chunk: ResultChunk<Value>,
}

/// The spool directory, `state_dir/tasks/spool`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(state_dir: &Path) -> Spool {
        Spool {
            dir: state_dir.join("tasks").join("spool"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a chunk durably. Names sort by task, epoch and chunk, so the
    /// chunk that ends an attempt is sent after the others.
    pub fn put(&self, task_id: Uuid, chunk: &ResultChunk<Value>) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let name = format!(
            "{}.{:020}.{:010}.json",
            task_id.simple(),
            chunk.epoch,
            chunk.chunk
        );
        let path = self.dir.join(name);
        let bytes = serde_json::to_vec(chunk).map_err(std::io::Error::other)?;
        crate::state::write_atomic(&path, &bytes, 0o600).map_err(std::io::Error::other)?;
        Ok(path)
    }

    /// The spooled chunks in send order. Unreadable files are removed (and
    /// logged): they can never be sent.
    pub fn list(&self) -> Vec<Spooled> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names.truncate(MAX_FILES);
        names
            .into_iter()
            .filter_map(|path| {
                let parsed = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .zip(
                        std::fs::read(&path)
                            .ok()
                            .and_then(|b| serde_json::from_slice::<ResultChunk<Value>>(&b).ok()),
                    );
                match parsed {
                    Some((task_id, chunk)) => Some(Spooled {
                        path,
                        task_id,
                        chunk,
                    }),
                    None => {
                        tracing::warn!(path = %path.display(), "dropping an unreadable spooled result");
                        let _ = std::fs::remove_file(&path);
                        None
                    }
                }
            })
            .collect()
    }

    pub fn remove(&self, s: &Spooled) {
        if let Err(error) = std::fs::remove_file(&s.path) {
            tracing::warn!(path = %s.path.display(), error = %error, "could not remove a sent result");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::{Outcome, TaskOutcome};

    #[test]
    fn chunks_survive_and_come_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = Spool::new(dir.path());
        let task = Uuid::from_u128(5);
        let end = ResultChunk {
            epoch: 2,
            chunk: 10,
            items: None,
            outcome: Some(TaskOutcome {
                outcome: Outcome::Ok,
                message: "done".into(),
            }),
        };
        let first = ResultChunk {
            epoch: 2,
            chunk: 9,
            items: Some(serde_json::json!([1, 2])),
            outcome: None,
        };
        spool.put(task, &end).expect("writes");
        spool.put(task, &first).expect("writes");
        std::fs::write(spool.dir().join("garbage.json"), b"{").expect("writes");
        let again = Spool::new(dir.path()).list();
        assert_eq!(again.len(), 2, "the garbage file is dropped");
        assert_eq!(again[0].chunk, first);
        assert_eq!(again[1].chunk, end);
        spool.remove(&again[0]);
        assert_eq!(spool.list().len(), 1);
    }
}
