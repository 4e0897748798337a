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
pub mod world;

pub use cli::{AgentCommand, dispatch, dispatch_with};
pub use config::AgentConfig;
pub use world::World;

/// The default state directory of a system-wide agent.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tether-agent";
