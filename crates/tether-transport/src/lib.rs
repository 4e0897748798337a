//! Tether's one transport path: DNS → TCP → optional HTTP CONNECT proxy →
//! TLS → HTTP/1.1.
//!
//! The agent, the admin CLI and the connectivity doctor all go through this
//! crate. [`Transport::connect`] and [`Transport::request`] run the whole
//! path; [`Transport::resolve`], [`Transport::tcp_connect`],
//! [`Transport::proxy_tunnel`] and [`Transport::tls_handshake`] run one phase
//! each, with the same code the full path uses, so the doctor reports exactly
//! what the agent would meet.
//!
//! Every phase is timed ([`PhaseTimings`]) and fails with a typed
//! [`TransportError`] that names its [`Phase`] and maps to a stable
//! [`tether_wire::ErrorCode`].
//!
//! Architecture invariants:
//! - The world is injected: DNS through [`Resolve`], TCP through [`Dial`], and
//!   the wall clock for certificate checks through [`Transport::with_clock`].
//! - Trust is never on first use: a pinned CA fingerprint must be known in
//!   advance, and it replaces (never adds to) the configured roots.
//! - No secret is logged or printed: proxy passwords live only in
//!   [`ProxyConfig`], whose `Debug` and [`ProxyConfig::redacted`] omit them.

pub mod backoff;
mod config;
mod dial;
mod dns;
mod error;
mod fingerprint;
mod http;
mod keylog;
mod proxy;
mod tls;
mod transport;

pub use config::{Timeouts, TransportConfig, TrustConfig};
pub use dial::{BoxFuture, BoxedIo, ConnectAttempt, ConnectErrorKind, Dial, Io, TcpDialer};
pub use dns::{DnsError, DnsErrorKind, Resolve, StaticResolver, SystemResolver};
pub use error::{Phase, TransportError};
pub use fingerprint::{fingerprint, parse_fingerprint};
pub use http::{BodyStream, Connection, Response, StreamingResponse};
pub use keylog::{KeyLogSink, MAX_KEY_LOG_BYTES};
pub use proxy::{
    Answerer, ProxyConfig, ProxyReply, ProxySetting, Refusal, parse_reply as parse_proxy_reply,
    who_answered,
};
pub use tls::{CertFacts, TlsErrorKind, TlsInfo, TlsStream};
pub use transport::{PhaseTimings, Transport};

/// Deterministic pseudo-random inputs for the "hostile input never panics"
/// tests of each parser (a bounded stand-in for fuzzing in the unit suite).
#[cfg(test)]
pub(crate) mod hostile {
    /// `count` inputs of up to `max_len` bytes, mixing random bytes with
    /// fragments that parsers look for, from a fixed seed.
    pub(crate) fn inputs(count: usize, max_len: usize) -> Vec<Vec<u8>> {
        const FRAGMENTS: &[&[u8]] = &[
            b"HTTP/1.1 ",
            b"407 ",
            b"\r\n",
            b"\r\n\r\n",
            b"Proxy-Authenticate: ",
            b"Basic ",
            b"\"",
            b",",
            b"=",
            b":",
            b"/",
            b"%",
            b"[",
            b"]",
            b"::",
            b".",
            b"*",
            b"sha256:",
            b"GMT",
            b"Sun, ",
            b"-",
            b"0",
            b"9",
            b"\xff",
            b"\x00",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: good enough to spread inputs, and reproducible.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        (0..count)
            .map(|_| {
                let len = (next() as usize) % (max_len + 1);
                let mut v = Vec::with_capacity(len);
                while v.len() < len {
                    let r = next();
                    if r % 3 == 0 {
                        v.extend_from_slice(FRAGMENTS[(r as usize / 3) % FRAGMENTS.len()]);
                    } else {
                        v.push((r >> 8) as u8);
                    }
                }
                v
            })
            .collect()
    }
}
