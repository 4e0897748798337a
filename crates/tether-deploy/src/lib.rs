//! The deploy transaction, on the endpoint (issue #10).
//!
//! - [`keygen`]: the key and CSR, made on the host; the key never leaves it.
//! - [`spec`]: the `deploy` task's spec, checked as hostile input.
//! - [`transaction`]: back up, write (temporary, fsync, rename), reload
//!   with a timeout, verify by a TLS handshake, roll back on any failure;
//!   a journal makes the multi-file set crash-safe.
//! - [`challenge`]: the ACME http-01 challenge answered on the host, from
//!   the web server's webroot or the agent's own listener.
//! - [`redact`]: command output kept in step records, without secrets.
//! - [`remote`]: a remote target's host over SSH (russh): the pinned host
//!   key, key or password authentication, `sudo -n`, and the same file
//!   steps run there as POSIX `sh` scripts.
//!
//! Architecture invariant: endpoint code only (no server, store, database
//! or CA code), so the agent binary ships it; its verification goes
//! through `tether-scan`'s probe, not a TLS stack of its own.

pub mod challenge;
pub mod keygen;
pub mod keystore;
pub mod redact;
pub mod remote;
pub mod spec;
pub mod transaction;

pub use spec::{DeploySpec, SpecError, Target};
pub use transaction::{CrashHook, Crashed, Deployer, Failure, Material, Report, Step};
