//! The Tether agent: the program that runs on endpoints.
//!
//! Architecture invariant: this crate holds no server or database code. It
//! talks to the control plane only through `tether-client` over the one
//! transport path in `tether-transport`; `tether-agent-bin` has a test that
//! fails if tether-server, tether-store, sqlx or axum ever enter its
//! dependency tree.
//!
//! Code map:
//! - [`config`]: `agent.toml`, layered with `TETHER_*` env and CLI flags.
//! - [`state`]: `state.json`, written atomically; corrupt files are refused.
//! - [`credential`]: the agent's secret (mode 0600) and the saved server CA.
//! - [`enroll`], [`run`], [`posture`], [`service`]: the subcommands' logic.
//! - [`preseed`]: the unattended enrollment a package install runs.
//! - [`backoff`]: pure retry and jitter arithmetic.
//! - [`defs`]: definitions updates: servers, schedule, worker, commands.
//! - [`logs`]: install/agent/error logs with rotation and timed debug mode.
//! - [`tasks`]: the task queue on the agent: long poll, one thread per
//!   attempt, heartbeats, executors per kind, the result spool.
//! - [`upgrade`]: agent upgrades on the host: binaries under `STATE_DIR/bin`,
//!   the atomic switch and the `launch` supervisor.
//! - [`cli`]: clap definitions shared by `tether-agent` and `tether agent`.

pub mod actions;
pub mod backoff;
pub mod bundle;
pub mod capture;
pub mod cli;
pub mod clidoc;
pub mod config;
pub mod connect;
pub mod credential;
pub mod defs;
pub mod doctor;
pub mod enroll;
pub mod error;
pub mod facts;
pub mod logs;
pub mod parent;
pub mod posture;
pub mod preseed;
pub mod run;
pub mod service;
pub mod state;
pub mod tasks;
pub mod upgrade;
pub mod world;

pub use cli::{AgentCommand, dispatch, dispatch_with};
pub use config::AgentConfig;
pub use world::World;

/// The default state directory of a system-wide agent.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tether-agent";

static VERSION_OVERRIDE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Sets the version this agent reports (at check-in, enrollment, in its
/// user agent, posture and bundles). Only the endpoint binary calls it,
/// once at start, with its build-time version (`TETHER_AGENT_VERSION`, see
/// `tether-agent-bin`), so a second build of the agent that differs only in
/// its version recompiles that one small crate.
pub fn set_version(version: &'static str) {
    let _ = VERSION_OVERRIDE.set(version);
}

/// The version this agent reports: the endpoint binary's build-time version,
/// else the workspace's.
pub fn version() -> &'static str {
    VERSION_OVERRIDE
        .get()
        .copied()
        .unwrap_or(tether_wire::VERSION)
}
