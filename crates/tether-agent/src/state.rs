//! The agent's local state, `STATE_DIR/state.json`.
//!
//! Writes are atomic (temporary file, fsync, rename, fsync of the directory)
//! so a crash never leaves half a file. A file that does not parse is never
//! overwritten: loading refuses with [`ErrorCode::StateCorrupt`], and only an
//! explicit [`StateStore::move_aside`] (`tether agent run --reset-state`)
//! clears the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_wire::{AgentStatus, ErrorCode, LastError, Policy};
use time::OffsetDateTime;
use uuid::Uuid;

/// The file name of the state inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// The subsystems whose last error is recorded.
pub mod subsystem {
    pub const ENROLL: &str = "enroll";
    pub const CHECKIN: &str = "checkin";
    pub const TRANSPORT: &str = "transport";
    pub const DEFINITIONS: &str = "definitions";
}

/// Everything the agent remembers between runs, except the credential.
///
/// Fields this version does not know (written by a newer agent, before an
/// upgrade was rolled back) are kept as they are and written back, so a
/// downgrade neither refuses the file nor loses what the newer version
/// recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The identity the server assigned at enrollment.
    pub agent_id: Uuid,
    /// When this identity was enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When the agent was first installed on this host (kept across
    /// re-enrollments).
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: OffsetDateTime,
    /// The server this identity belongs to.
    pub server: String,
    /// The last time the server answered a check-in.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_successful_contact: Option<OffsetDateTime>,
    /// The status the server reported last.
    #[serde(default)]
    pub status: Option<AgentStatus>,
    /// The last policy received.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// The last error of each subsystem (see [`subsystem`]).
    #[serde(default)]
    pub last_errors: BTreeMap<String, LastError>,
    /// Debug logging stays on until this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub debug_until: Option<OffsetDateTime>,
    /// The version of the agent that made the last successful contact: the
    /// `launch` supervisor reads it to learn that a new version checked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_version: Option<String>,
    /// Fields of a newer agent's state, kept untouched.
    #[serde(flatten)]
    pub later: BTreeMap<String, serde_json::Value>,
}

impl AgentState {
    /// Records the last error of a subsystem.
    pub fn record_error(
        &mut self,
        subsystem: &str,
        code: ErrorCode,
        message: impl Into<String>,
        at: OffsetDateTime,
    ) {
        self.last_errors.insert(
            subsystem.to_owned(),
            LastError {
                code,
                message: message.into(),
                at,
            },
        );
    }

    /// Whether debug logging is on at `now`.
    pub fn debug_active(&self, now: OffsetDateTime) -> bool {
        self.debug_until.is_some_and(|until| until > now)
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "{path} is corrupt ({detail}). Fix: move it aside with `tether agent run --reset-state` (the credential is kept separately)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} does not exist: this agent is not enrolled")]
    Missing { path: PathBuf },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StateError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StateError::Corrupt { .. } => ErrorCode::StateCorrupt,
            StateError::Missing { .. } => ErrorCode::NotEnrolled,
            StateError::Io { .. } => ErrorCode::StateDirUnwritable,
        }
    }
}

/// Reads and writes `state.json` in one directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state; `Ok(None)` if there is none yet.
    pub fn load(&self) -> Result<Option<AgentState>, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Loads the state, failing if there is none.
    pub fn load_required(&self) -> Result<AgentState, StateError> {
        self.load()?
            .ok_or_else(|| StateError::Missing { path: self.path() })
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let mut json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
            op: "serialize",
            path: self.path(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        write_atomic(&self.path(), &json, 0o600)
    }

    /// Reads the current state, applies `f` and writes it back. Reading first
    /// keeps changes another process made meanwhile (`tether agent debug`
    /// writes `debug_until` while the agent runs).
    pub fn update<R>(&self, f: impl FnOnce(&mut AgentState) -> R) -> Result<R, StateError> {
        let mut state = self.load_required()?;
        let r = f(&mut state);
        self.save(&state)?;
        Ok(r)
    }

    /// Renames a (corrupt) state file to `state.json.corrupt-UNIXTIME` and
    /// returns the new path; `Ok(None)` if there was no file.
    pub fn move_aside(&self, now: OffsetDateTime) -> Result<Option<PathBuf>, StateError> {
        let path = self.path();
        if !path.exists() {
            return Ok(None);
        }
        let target = self
            .dir
            .join(format!("{STATE_FILE}.corrupt-{}", now.unix_timestamp()));
        std::fs::rename(&path, &target).map_err(|source| StateError::Io {
            op: "move aside",
            path,
            source,
        })?;
        Ok(Some(target))
    }
}

/// Writes `bytes` to `path` atomically with the given Unix mode: a temporary
/// file in the same directory, created with `mode` from the start, fsynced,
/// renamed over `path`, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    tether_fs::write_atomic(path, bytes, mode).map_err(|e| StateError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> AgentState {
        AgentState {
            agent_id: Uuid::from_u128(7),
            enrolled_at: datetime!(2026-05-01 10:00 UTC),
            installed_at: datetime!(2026-04-01 10:00 UTC),
            server: "https://s.example/".into(),
            last_successful_contact: None,
            status: Some(AgentStatus::Pending),
            policy: Some(Policy {
                defs: Default::default(),
                name: "default".into(),
                revision: 1,
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: vec!["ldap.corp:389".into()],
                max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
            }),
            last_errors: BTreeMap::new(),
            debug_until: None,
            contact_version: None,
            later: Default::default(),
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("empty ok"), None);
        let mut s = sample();
        s.record_error(
            subsystem::CHECKIN,
            ErrorCode::RateLimited,
            "slow down",
            datetime!(2026-05-02 0:00 UTC),
        );
        store.save(&s).expect("saves");
        assert_eq!(store.load().expect("loads"), Some(s.clone()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_owned()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "state is private: {mode:o}");
        }
        // Overwriting replaces the whole file.
        s.debug_until = Some(datetime!(2026-05-03 0:00 UTC));
        store.save(&s).expect("saves again");
        assert_eq!(
            store.load_required().expect("loads").debug_until,
            s.debug_until
        );
    }

    #[test]
    fn corrupt_file_is_refused_not_overwritten_and_moved_aside_only_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), b"{\"agent_id\": \"not-a-uuid\"").expect("writes");
        let err = store.load().expect_err("corrupt");
        assert_eq!(err.code(), ErrorCode::StateCorrupt);
        let text = err.to_string();
        assert!(text.contains(&store.path().display().to_string()), "{text}");
        assert!(text.contains("--reset-state"), "{text}");
        // update() refuses too, and the file is untouched.
        assert!(store.update(|s| s.debug_until = None).is_err());
        assert_eq!(
            std::fs::read(store.path()).expect("reads"),
            b"{\"agent_id\": \"not-a-uuid\""
        );
        let moved = store
            .move_aside(datetime!(2026-05-01 0:00 UTC))
            .expect("moves")
            .expect("there was a file");
        assert!(moved.exists());
        assert_eq!(store.load().expect("now empty"), None);
    }

    #[test]
    fn a_newer_agents_fields_are_kept_through_a_load_and_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        let mut v = serde_json::to_value(sample()).expect("json");
        v["upgrade"] = serde_json::json!({"target": "1.4.0", "attempts": 2});
        std::fs::write(store.path(), v.to_string()).expect("writes");
        let loaded = store
            .load()
            .expect("a newer agent's state loads")
            .expect("some");
        assert_eq!(loaded.agent_id, sample().agent_id);
        store
            .update(|s| s.debug_until = Some(datetime!(2026-05-02 0:00 UTC)))
            .expect("updates");
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).expect("reads")).expect("json");
        assert_eq!(
            back["upgrade"],
            serde_json::json!({"target": "1.4.0", "attempts": 2})
        );
        assert_eq!(back["debug_until"], "2026-05-02T00:00:00Z");
    }

    #[test]
    fn a_known_field_of_the_wrong_type_is_still_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        let mut v = serde_json::to_value(sample()).expect("json");
        v["server"] = serde_json::json!(1);
        std::fs::write(store.path(), v.to_string()).expect("writes");
        assert_eq!(
            store.load().expect_err("wrong type").code(),
            ErrorCode::StateCorrupt
        );
    }

    #[test]
    fn missing_state_means_not_enrolled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = StateStore::new(dir.path())
            .load_required()
            .expect_err("missing");
        assert_eq!(err.code(), ErrorCode::NotEnrolled);
    }

    #[test]
    fn debug_window_is_compared_with_now() {
        let mut s = sample();
        let now = datetime!(2026-05-01 12:00 UTC);
        assert!(!s.debug_active(now));
        s.debug_until = Some(now + time::Duration::minutes(1));
        assert!(s.debug_active(now));
        assert!(!s.debug_active(now + time::Duration::minutes(2)));
    }
}
