//! `tls`: the handshake over the connection (or tunnel) the earlier checks
//! opened, the full presented chain even when verification fails, the
//! reason for a refusal, and TLS inspection named from the chain's issuer.

mod interceptors;

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{RootCertStore, crypto::ring};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use tether_transport::{TlsErrorKind, TransportError};
use tether_wire::ErrorCode;
use tether_x509::{CertFacts, Finding, Shape};

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::{CheckResult, rfc3339};

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let now = ctx.world.clock.now();
    let mut r = CheckResult::pass("tls", "TLS")
        .with("server_name", ctx.host.as_str())
        .with("clock", rfc3339(now))
        .with("trust", trust_source(&ctx));
    let io = {
        let mut found = ctx.found();
        found.tunnel.take().or_else(|| found.tcp.take())
    };
    let (Some(io), Ok(transport)) = (io, ctx.transport()) else {
        let r = r.fail(
            ErrorCode::TlsHandshakeFailed,
            "No connection to the server is open.",
        );
        return TaskOutput::gated_by_failures(vec![r]);
    };
    match transport.tls_handshake(io, &ctx.host).await {
        Ok((_stream, info, took)) => {
            r.set("protocol", info.protocol.as_str());
            r.set("cipher", info.cipher.as_str());
            r.set("chain", chain_json(&info.peer_chain_der));
            let summaries = summaries(&info.peer_chain_der);
            ctx.found().chain = info.peer_chain_der;
            if let Some((product, dn)) = interceptor_in(&summaries) {
                r.set("interceptor", product);
                // Deliberately trusted (an extra CA, or the system store) it
                // works, but a person should know the traffic is inspected.
                if ctx.input.transport.trust.extra_ca_pem.is_none() {
                    r = r.warn(
                        ErrorCode::TlsInspected,
                        format!("The connection works but is inspected by {product} (its CA \"{dn}\" is trusted by this host)."),
                    );
                }
            }
            TaskOutput::gated_by_failures(vec![r.took(took)])
        }
        Err(TransportError::Tls { kind, chain, .. }) => {
            r.set("chain", chain_json(&chain));
            r.set("error", kind.to_string());
            let summaries = summaries(&chain);
            let server_name = ctx.host.clone();
            ctx.found().chain = chain.clone();
            let (code, problem, action) =
                diagnose(&ctx, &kind, &chain, &summaries, &server_name, now);
            r.set("reason", reason_name(&kind));
            let mut r = r.fail(code, problem);
            if let Some(a) = action {
                r = r.with_action(a);
            }
            TaskOutput::gated_by_failures(vec![r])
        }
        Err(other) => {
            let r = r.fail(other.code(), format!("{other}."));
            TaskOutput::gated_by_failures(vec![r])
        }
    }
}

/// The code, the specific problem, and an action when the catalog's is not
/// specific enough.
fn diagnose(
    ctx: &Ctx,
    kind: &TlsErrorKind,
    chain: &[Vec<u8>],
    summaries: &[CertFacts],
    server_name: &str,
    now: time::OffsetDateTime,
) -> (ErrorCode, String, Option<String>) {
    let leaf = summaries.first();
    let leaf_subject = leaf
        .map(|s| s.subject.clone())
        .unwrap_or_else(|| "(none)".into());
    match kind {
        TlsErrorKind::Expired { not_after, now } => (
            ErrorCode::TlsCertExpired,
            format!(
                "The server's certificate \"{leaf_subject}\" expired at {}; this host's clock reads {}.",
                rfc3339(*not_after),
                rfc3339(*now)
            ),
            None,
        ),
        TlsErrorKind::NotYetValid { not_before, now } => (
            ErrorCode::TlsCertNotYetValid,
            format!(
                "The server's certificate \"{leaf_subject}\" is valid only from {}; this host's clock reads {}.",
                rfc3339(*not_before),
                rfc3339(*now)
            ),
            None,
        ),
        TlsErrorKind::HostnameMismatch {
            expected,
            presented,
        } => (
            ErrorCode::TlsHostnameMismatch,
            format!(
                "The server's certificate names [{}], not {expected}.",
                presented.join(", ")
            ),
            None,
        ),
        TlsErrorKind::SelfSigned {
            subject,
            fingerprint,
        } => self_signed(subject, fingerprint),
        TlsErrorKind::UnknownIssuer { .. } | TlsErrorKind::PinMismatch { .. } => {
            let top = summaries.last();
            let top_issuer = top.map(|s| s.issuer.clone()).unwrap_or_default();
            if let Some((product, dn)) = interceptor_in(summaries) {
                return (
                    ErrorCode::TlsInspected,
                    format!(
                        "The connection is intercepted by {product}: the chain is issued by \"{dn}\", not by the platform's CA."
                    ),
                    Some(format!(
                        "Trust the {product} CA \"{dn}\" with `extra_ca_file`, or ask the proxy admin to exempt {server_name} from inspection."
                    )),
                );
            }
            let configured_anchor = ctx.input.transport.trust.pinned_ca_sha256.is_some()
                || ctx.input.transport.trust.ca_pem.is_some();
            if configured_anchor && verifies_with_system_roots(chain, server_name, now) {
                return (
                    ErrorCode::TlsInspected,
                    format!(
                        "The chain is not the platform's but verifies against this host's system roots: an inspecting proxy whose CA is \"{top_issuer}\" intercepts the connection."
                    ),
                    Some(format!(
                        "Trust the CA \"{top_issuer}\" with `extra_ca_file`, or ask the proxy admin to exempt {server_name} from inspection."
                    )),
                );
            }
            if let TlsErrorKind::PinMismatch { expected, .. } = kind {
                return (
                    ErrorCode::ServerCaPinMismatch,
                    format!(
                        "No certificate in the presented chain is the pinned CA {expected}; the chain is issued by \"{top_issuer}\"."
                    ),
                    None,
                );
            }
            untrusted(tether_x509::shape(summaries))
                .unwrap_or_else(|| (ErrorCode::TlsUnknownIssuer, format!("{kind}."), None))
        }
        other => weak(chain, now).unwrap_or_else(|| {
            (
                ErrorCode::TlsHandshakeFailed,
                format!("The TLS handshake with {server_name} failed: {other}."),
                None,
            )
        }),
    }
}

/// A refusal the classifier explains by a weak key or signature in the
/// presented chain (webpki refuses both without saying which).
fn weak(
    chain: &[Vec<u8>],
    now: time::OffsetDateTime,
) -> Option<(ErrorCode, String, Option<String>)> {
    let what: Vec<String> = tether_x509::classify(chain, None, now, &[])
        .into_iter()
        .filter_map(|f| match f {
            Finding::WeakKey {
                subject,
                algorithm,
                bits,
            } => Some(match bits {
                Some(b) => format!("\"{subject}\" has a {b}-bit {algorithm} key"),
                None => format!("\"{subject}\" has a {algorithm} key"),
            }),
            Finding::WeakSignature { subject, algorithm } => {
                Some(format!("\"{subject}\" is signed with {algorithm}"))
            }
            _ => None,
        })
        .collect();
    (!what.is_empty()).then(|| {
        (
            ErrorCode::TlsWeakCertificate,
            format!(
                "The server's chain is refused as too weak: {}.",
                what.join("; ")
            ),
            None,
        )
    })
}

/// A self-signed server certificate, named with what a pin would need.
fn self_signed(subject: &str, fingerprint: &str) -> (ErrorCode, String, Option<String>) {
    (
        ErrorCode::TlsSelfSigned,
        format!(
            "The server presents a self-signed certificate \"{subject}\" (fingerprint {fingerprint}) that no trusted CA vouches for."
        ),
        Some(format!(
            "If this is the server's own certificate, pin it (`--ca-fingerprint {fingerprint}`); otherwise install a certificate from the platform's CA on the server."
        )),
    )
}

/// The verdict for a chain no trust anchor vouches for, by where it stops.
fn untrusted(shape: Shape) -> Option<(ErrorCode, String, Option<String>)> {
    match shape {
        Shape::SelfSigned {
            subject,
            fingerprint,
        } => Some(self_signed(&subject, &fingerprint)),
        Shape::EndsInRoot { root } => Some((
            ErrorCode::TlsUnknownIssuer,
            format!(
                "The server's chain ends in the root \"{root}\", which this agent does not trust."
            ),
            None,
        )),
        Shape::StopsShort { subject, issuer } => Some((
            ErrorCode::TlsChainIncomplete,
            format!(
                "The server's chain stops at \"{subject}\" without its issuer \"{issuer}\": the server does not send the intermediate CA, or that CA is not trusted here."
            ),
            None,
        )),
        _ => None,
    }
}

fn reason_name(kind: &TlsErrorKind) -> &'static str {
    match kind {
        TlsErrorKind::Expired { .. } => "expired",
        TlsErrorKind::NotYetValid { .. } => "not_yet_valid",
        TlsErrorKind::HostnameMismatch { .. } => "hostname_mismatch",
        TlsErrorKind::UnknownIssuer { .. } => "unknown_issuer",
        TlsErrorKind::SelfSigned { .. } => "self_signed",
        TlsErrorKind::PinMismatch { .. } => "pin_mismatch",
        TlsErrorKind::Revoked => "revoked",
        TlsErrorKind::BadCertificate(_) => "bad_certificate",
        TlsErrorKind::Timeout { .. } => "timeout",
        _ => "handshake",
    }
}

fn trust_source(ctx: &Ctx) -> &'static str {
    let t = &ctx.input.transport.trust;
    if t.pinned_ca_sha256.is_some() {
        "pinned CA"
    } else if t.ca_pem.is_some() && t.extra_ca_pem.is_some() && t.system_roots {
        // The updater's trust for update servers: every anchor the agent has.
        "CA file, extra CA file and system roots"
    } else if t.ca_pem.is_some() && t.extra_ca_pem.is_some() {
        "CA file and extra CA file"
    } else if t.ca_pem.is_some() && t.system_roots {
        "CA file and system roots"
    } else if t.ca_pem.is_some() {
        "CA file"
    } else if t.extra_ca_pem.is_some() {
        "extra CA file and system roots"
    } else {
        "system roots"
    }
}

fn summaries(chain: &[Vec<u8>]) -> Vec<CertFacts> {
    chain
        .iter()
        .filter_map(|der| CertFacts::from_der(der))
        .collect()
}

pub(crate) fn chain_json(chain: &[Vec<u8>]) -> Value {
    let certs: Vec<Value> = chain
        .iter()
        .map(|der| match CertFacts::from_der(der) {
            Some(s) => json!({
                "subject": s.subject,
                "issuer": s.issuer,
                "not_before": rfc3339(s.not_before),
                "not_after": rfc3339(s.not_after),
                "names": s.names(),
                "is_ca": s.is_ca,
                "fingerprint": s.fingerprint,
            }),
            None => json!({ "unparsable": true, "bytes": der.len() }),
        })
        .collect();
    Value::Array(certs)
}

/// The first known interceptor named by an issuer or subject in the chain.
fn interceptor_in(summaries: &[CertFacts]) -> Option<(&'static str, String)> {
    summaries.iter().rev().find_map(|s| {
        interceptors::recognise(&s.issuer)
            .map(|p| (p, s.issuer.clone()))
            .or_else(|| interceptors::recognise(&s.subject).map(|p| (p, s.subject.clone())))
    })
}

/// Whether the presented chain verifies against the operating system's
/// roots alone (an inspecting proxy's CA is usually installed there).
fn verifies_with_system_roots(
    chain: &[Vec<u8>],
    server_name: &str,
    now: time::OffsetDateTime,
) -> bool {
    let Some((leaf, rest)) = chain.split_first() else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        return false;
    }
    let Ok(verifier) = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(ring::default_provider()),
    )
    .build() else {
        return false;
    };
    let bare = server_name.trim_start_matches('[').trim_end_matches(']');
    let name = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => match ServerName::try_from(bare.to_owned()) {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        )
        .is_ok()
}
