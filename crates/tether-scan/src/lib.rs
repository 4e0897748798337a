//! TLS certificate discovery, run on an endpoint (the agent's `discover`
//! tasks and `tether scan run`).
//!
//! - [`spec`]: the discovery spec and its limits; a validated [`Plan`]
//!   walks its targets lazily.
//!
//! Architecture invariants:
//! - Endpoint code only: no server, store or database code, so the agent
//!   binary can ship it.

pub mod spec;

pub use spec::{DiscoverSpec, Endpoint, Plan, SniMode, SpecError, Starttls};
