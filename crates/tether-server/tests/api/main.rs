//! The control plane over real HTTPS against the real SQLite store.

mod support;

mod acme;
mod actions;
mod audit;
mod certs;
mod defs;
mod fleet;
mod hardening;
mod input;
mod lifecycle;
mod metrics;
mod outage;
mod revocation;
mod server;
mod tasks;
mod tokens;
mod upgrades;
