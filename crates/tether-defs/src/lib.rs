//! Definitions: content channels (detection signatures, scan rules) that
//! agents keep current, signed with TUF metadata.
//!
//! - [`layout`]: how channels map onto TUF targets (names, signed custom data).
//! - [`delta`]: record-level (line) and zstd patch-from deltas, and the
//!   compressed full objects.
//!
//! This crate ships in the endpoint binary. The publisher (the signed
//! repository, publish, key generation and rotation, mirrors, exports) is
//! `tether-defs-publish`, which the endpoint binary never links.
//! - [`client`]: the agent's side: verify, download (resumable), apply,
//!   install atomically.

pub mod client;
pub mod delta;
mod fsutil;
pub mod layout;
