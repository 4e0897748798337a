//! The definitions publisher: the control plane's side of `tether-defs`.
//!
//! - [`repo`]: the signed repository (TUF, signed with `tough`'s editor),
//!   publish with deltas, key generation and rotation, an offline root
//!   (`Repo::open_with_root_key`, `online_root_keys`), mirrors and offline
//!   bundles.
//!
//! A crate of its own so the endpoint binary carries no publisher or
//! key-management code: `tether-agent-bin` links `tether-defs` (layout,
//! deltas, the updater) and never this crate, which
//! `crates/tether-agent-bin/tests/no_server_code.rs` checks.

pub mod repo;
