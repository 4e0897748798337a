//! The built-in private CA of a control plane (issue #10).
//!
//! - [`seal`]: private keys encrypted at rest (ChaCha20-Poly1305 from ring)
//!   with a key-encryption key kept outside the database and outside the
//!   CA's directory: `TETHER_CA_KEY` or a 0600 key file.
//! - [`ca`]: the CA's files. A root (which can live offline: `init` writes
//!   its key to removable media and never into the data dir) and an online
//!   intermediate that signs. The server opens only the intermediate.
//! - [`revoke`]: the CRL and OCSP pointers issued certificates carry, the
//!   intermediate's CRL and the OCSP responder's request reading and
//!   signed answers.
//! - [`csr`]: a CSR, read as hostile input: size, syntax, its own
//!   signature, the key's type and size, and its names against the names
//!   the task allows. Each refusal has its stable code (TETHER-E840x).
//! - [`acme`]: issuance through an ACME CA (RFC 8555) with instant-acme
//!   over Tether's transport, the account sealed with the same KEK, the
//!   CA's problem documents kept with a stable code (TETHER-E842x), and
//!   the renewal window from ARI (RFC 9773) or the policy
//!   ([`acme::ari::renewal_window`]).
//!
//! Architecture invariants:
//! - Server and CLI code: the endpoint binary never links this crate (the
//!   agent makes its key and CSR with `tether-deploy`).
//! - No private key of the CA is ever written in plaintext to the data dir;
//!   the root's key is written in plaintext only to the path the operator
//!   names for offline keeping.

pub mod acme;
pub mod ca;
pub mod csr;
pub mod revoke;
pub mod seal;

pub use ca::{CaError, CaFiles, Issued, IssuingCa};
pub use csr::{CsrError, CsrRequest};
pub use seal::{Kek, SealError};
