//! `tether agent posture`: what this endpoint knows about itself, as JSON.
//! It reads local files only (no network), so it answers even when the
//! server is unreachable, and it never prints a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tether_wire::{AgentStatus, LastError, Policy};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{ConfigLayer, EffectiveValue};
use crate::run::DEFAULT_INTERVAL;
use crate::state::StateStore;
use crate::world::World;

/// The posture report.
#[derive(Debug, Clone, Serialize)]
pub struct Posture {
    pub enrolled: bool,
    pub agent_id: Option<Uuid>,
    pub name: Option<String>,
    /// The last successful contact is within twice the check-in interval.
    pub connected: bool,
    pub status: Option<AgentStatus>,
    pub version: &'static str,
    pub server: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_contact: Option<OffsetDateTime>,
    pub policy: Option<Policy>,
    pub last_errors: BTreeMap<String, LastError>,
    /// The proxy in use as host:port; never credentials.
    pub proxy: Option<String>,
    pub state_dir: PathBuf,
    #[serde(with = "time::serde::rfc3339::option")]
    pub enrolled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub debug_until: Option<OffsetDateTime>,
    /// The effective configuration with the source of each value.
    pub config: Vec<EffectiveValue>,
    /// Local problems found while reading the files, each with its code.
    pub problems: Vec<String>,
}

/// Whether `last_contact` is recent enough to call the agent connected.
pub fn is_connected(
    last_contact: Option<OffsetDateTime>,
    interval: Duration,
    now: OffsetDateTime,
) -> bool {
    let Some(last) = last_contact else {
        return false;
    };
    let limit = interval.saturating_mul(2);
    let age = now - last;
    // A contact "in the future" (clock stepped back) still counts as recent.
    age.is_negative() || Duration::try_from(age).is_ok_and(|a| a <= limit)
}

/// Builds the report from the files in `state_dir`.
pub fn posture(state_dir: &Path, world: &World, flags: &ConfigLayer) -> Posture {
    let mut problems = Vec::new();
    let effective = crate::config::load(state_dir, &|k| world.var(k), flags)
        .map_err(|e| problems.push(format!("{}: {e}", e.code())))
        .ok();
    let state = StateStore::new(state_dir)
        .load()
        .map_err(|e| problems.push(format!("{}: {e}", e.code())))
        .ok()
        .flatten();
    if let Err(e) = crate::credential::load(state_dir) {
        problems.push(format!("{}: {e}", e.code()));
    }
    let interval = state
        .as_ref()
        .and_then(|s| s.policy.as_ref())
        .map_or(DEFAULT_INTERVAL, |p| {
            Duration::from_secs(u64::from(p.checkin_interval_secs))
        });
    let now = world.clock.now();
    let last_contact = state.as_ref().and_then(|s| s.last_successful_contact);
    Posture {
        enrolled: state.is_some() && effective.is_some(),
        agent_id: state.as_ref().map(|s| s.agent_id),
        name: effective.as_ref().map(|e| e.config.name.clone()),
        connected: is_connected(last_contact, interval, now),
        status: state.as_ref().and_then(|s| s.status),
        version: crate::version(),
        server: effective
            .as_ref()
            .map(|e| e.config.server.to_string())
            .or_else(|| state.as_ref().map(|s| s.server.clone())),
        last_contact,
        policy: state.as_ref().and_then(|s| s.policy.clone()),
        last_errors: state
            .as_ref()
            .map(|s| s.last_errors.clone())
            .unwrap_or_default(),
        proxy: effective
            .as_ref()
            .and_then(|e| crate::connect::proxy_in_use(&e.config, &|k| world.var(k))),
        state_dir: state_dir.to_owned(),
        enrolled_at: state.as_ref().map(|s| s.enrolled_at),
        debug_until: state
            .as_ref()
            .and_then(|s| s.debug_until)
            .filter(|u| *u > now),
        config: effective.as_ref().map(|e| e.report()).unwrap_or_default(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::AgentState;
    use tether_wire::ManualClock;
    use time::macros::datetime;

    #[test]
    fn connected_means_contact_within_two_intervals() {
        let now = datetime!(2026-05-01 12:00 UTC);
        let i = Duration::from_secs(30);
        assert!(!is_connected(None, i, now));
        assert!(is_connected(
            Some(now - time::Duration::seconds(59)),
            i,
            now
        ));
        assert!(is_connected(
            Some(now - time::Duration::seconds(60)),
            i,
            now
        ));
        assert!(!is_connected(
            Some(now - time::Duration::seconds(61)),
            i,
            now
        ));
        assert!(is_connected(Some(now + time::Duration::seconds(5)), i, now));
    }

    #[test]
    fn posture_reports_state_and_never_proxy_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = datetime!(2026-05-01 12:00 UTC);
        std::fs::write(
            dir.path().join("agent.toml"),
            "server = \"https://s.example\"\nname = \"edge-1\"\nca_fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nproxy = \"http://alice:s3cret@proxy.corp:3128\"\n",
        )
        .expect("writes");
        crate::credential::save(
            dir.path(),
            &crate::credential::Credential::new("agent-secret"),
        )
        .expect("saves");
        let state = AgentState {
            agent_id: Uuid::from_u128(42),
            enrolled_at: now - time::Duration::days(1),
            installed_at: now - time::Duration::days(1),
            server: "https://s.example/".into(),
            last_successful_contact: Some(now - time::Duration::seconds(20)),
            status: Some(AgentStatus::Active),
            policy: Some(Policy {
                defs: Default::default(),
                name: "default".into(),
                revision: 2,
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: Vec::new(),
                max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
            }),
            last_errors: BTreeMap::new(),
            debug_until: None,
            contact_version: None,
            later: Default::default(),
        };
        StateStore::new(dir.path()).save(&state).expect("saves");
        let world = World::fixed(
            Arc::new(ManualClock::new(now)),
            &[("HTTPS_PROXY", "http://bob:pw2@envproxy:1")],
        );
        let p = posture(dir.path(), &world, &ConfigLayer::default());
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["agent_id"], Uuid::from_u128(42).to_string());
        assert_eq!(json["connected"], true);
        assert_eq!(json["name"], "edge-1");
        assert_eq!(json["proxy"], "proxy.corp:3128");
        assert_eq!(json["version"], tether_wire::VERSION);
        assert_eq!(json["last_contact"], "2026-05-01T11:59:40Z");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let text = json.to_string();
        for secret in ["s3cret", "alice", "agent-secret", "pw2"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn posture_of_an_unenrolled_dir_lists_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::fixed(
            Arc::new(ManualClock::new(datetime!(2026-05-01 12:00 UTC))),
            &[],
        );
        let p = posture(dir.path(), &world, &ConfigLayer::default());
        assert!(!p.enrolled && !p.connected);
        assert!(
            p.problems.iter().any(|s| s.starts_with("TETHER-E1003")),
            "{:?}",
            p.problems
        );
    }
}
