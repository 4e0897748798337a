//! Wire types shared by the control plane, the agent and the admin CLI.
//!
//! This crate is deliberately light: serde, uuid and time only. Anything that
//! crosses the network (API bodies, the error envelope, the error catalog) is
//! defined here, and every other crate converts at its edge.

pub mod api;
pub mod audit;
pub mod certs;
pub mod clock;
pub mod control;
pub mod defs;
pub mod error;
pub mod fleet;
pub mod renewal;
pub mod revocation;
pub mod rollout;
pub mod tasks;

pub use api::*;
pub use audit::*;
pub use certs::*;
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::*;
pub use defs::*;
pub use error::{ApiError, ErrorCode};
pub use fleet::*;
pub use renewal::*;
pub use revocation::{Revocation, RevocationReason, RevokeRequest, RevokeResponse};
pub use rollout::*;
pub use tasks::*;

/// The version of this build of Tether, shared by the server and the agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
