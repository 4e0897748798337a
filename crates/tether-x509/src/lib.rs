//! Certificate facts and the chain classifier.
//!
//! [`CertFacts`] is what a person needs to know about one certificate
//! (names, validity, issuer, key, signature, fingerprint), read from DER
//! that may be hostile. [`classify`] turns a presented chain into
//! [`Finding`]s (expired, not yet valid, self-signed, unknown issuer,
//! incomplete chain, name mismatch, weak key, weak signature), so the
//! doctor and the discovery scanner give one verdict for one chain.
//!
//! This crate does no cryptography and opens no socket: whether a chain
//! verifies is rustls's answer (in `tether-transport`); this crate names
//! the shape of what was presented.

mod classify;
mod facts;

pub use classify::{Finding, Shape, classify, shape};
pub use facts::{CertFacts, KeyFacts, fingerprint, sha256};
