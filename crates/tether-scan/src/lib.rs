//! TLS certificate discovery, run on an endpoint (the agent's `discover`
//! tasks and `tether scan run`).
//!
//! - [`spec`]: the discovery spec and its limits; a validated [`Plan`]
//!   walks its targets lazily.
//! - [`scan`]: the [`Scanner`] runs a plan with bounded concurrency and
//!   per-host pacing, streams one [`EndpointResult`] per endpoint and
//!   returns a [`Summary`] that counts every outcome.
//! - `probe`: one endpoint to one [`Outcome`] (TCP, STARTTLS, rustls, and
//!   a legacy hello when rustls cannot negotiate).
//! - [`starttls`]: SMTP, IMAP, POP3, LDAP and PostgreSQL upgrades.
//! - [`legacy`]: a hand-built TLS 1.0–1.2 ClientHello and a bounded reader
//!   of the plaintext ServerHello and Certificate messages.
//! - [`facts`]: per-certificate facts and chain verdicts, the one place
//!   that reads X.509 (the seam to `tether-x509`).
//!
//! Architecture invariants:
//! - Endpoint code only: no server, store or database code, so the agent
//!   binary can ship it.
//! - Every endpoint ends in exactly one outcome, and the summary counts
//!   them all: a scan never reports "0 certificates" over silent failures.
//! - Memory does not grow with the scan: targets are walked lazily, probes
//!   in flight are bounded by `concurrency`, results leave through a
//!   bounded channel, and every read from the network has a byte limit.

pub mod facts;
pub mod legacy;
mod probe;
pub mod rtt;
pub mod scan;
pub mod spec;
pub mod starttls;

pub use facts::{CertFacts, Chain, Roots, Verdict};
pub use probe::{EndpointResult, Outcome, probe_once};
pub use scan::{Progress, Scanner, Summary};
pub use spec::{DiscoverSpec, Endpoint, Plan, SniMode, SpecError, Starttls};
