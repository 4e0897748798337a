//! The task queue's model as pure functions, the way `status.rs` is for
//! agents: no I/O, no clock (callers pass `now`), no store.
//!
//! - [`kind`]: per kind, the spec check (a hook each kind fills), default
//!   lease and attempts, and which agent kinds may run it;
//! - [`lease`]: the lease, epoch and attempt state machine: lease, heartbeat,
//!   result, finish, expiry, deadline, cancel and retry;
//! - [`reason`]: why a task waits, in one sentence;
//! - [`schedule`]: intervals and cron rules in a time zone, DST and missed runs;
//! - [`window`]: allowed hours;
//! - [`renewal`]: a certificate renewal's states, due time, back-off and
//!   issuer choice.
//!
//! Architecture Invariant: every task has an owner (an agent, or a group and
//! agent kind), a state and a reason. The functions here are the only place
//! that decides a task's next state; the store applies their decisions with
//! compare-and-set, and the server only routes.

pub mod kind;
pub mod lease;
pub mod reason;
pub mod renewal;
pub mod schedule;
pub mod window;

pub use kind::{KindRules, SpecError, rules};
pub use lease::{Refusal, TaskSnapshot, Transition};
