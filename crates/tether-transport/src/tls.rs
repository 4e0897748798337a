//! The TLS phase: rustls with a verifier that records the presented chain
//! (even when verification fails) and supports CA pinning by fingerprint.

mod verify;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::Resumption;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::config::TrustConfig;
use crate::dial::BoxedIo;
use crate::error::TransportError;
use crate::fingerprint::fingerprint;

pub use tether_x509::CertFacts;

/// A client TLS stream over any [`crate::Io`].
pub type TlsStream = tokio_rustls::client::TlsStream<BoxedIo>;

/// What the TLS handshake negotiated and what the server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, e.g. `TLSv1.3`.
    pub protocol: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The certificates the server presented, end-entity first, as DER.
    /// Captured even when verification fails.
    pub peer_chain_der: Vec<Vec<u8>>,
    /// The name the certificate was checked against.
    pub server_name: String,
}

/// Why the TLS phase failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The certificate's validity ended before `now`.
    Expired {
        /// The end of the certificate's validity.
        not_after: OffsetDateTime,
        /// The time the check used.
        now: OffsetDateTime,
    },
    /// The certificate's validity starts after `now`.
    NotYetValid {
        /// The start of the certificate's validity.
        not_before: OffsetDateTime,
        /// The time the check used.
        now: OffsetDateTime,
    },
    /// The certificate does not name the host the client asked for.
    HostnameMismatch {
        /// The server name the client checked.
        expected: String,
        /// The names the certificate presents.
        presented: Vec<String>,
    },
    /// No trusted CA anchors the chain.
    UnknownIssuer {
        /// The end-entity certificate's issuer, as a distinguished name.
        issuer: String,
    },
    /// The end-entity certificate signs itself and nothing trusted vouches
    /// for it (whether or not it calls itself a CA).
    SelfSigned {
        /// Its subject, as a distinguished name.
        subject: String,
        /// Its fingerprint, `sha256:<hex>`: what a pin would name.
        fingerprint: String,
    },
    /// The pinned CA is not in the chain, or does not anchor it.
    PinMismatch {
        /// The pinned fingerprint, `sha256:<hex>`.
        expected: String,
        /// The fingerprints of the presented certificates, end-entity first.
        presented: Vec<String>,
    },
    /// The certificate has been revoked.
    Revoked,
    /// The certificate is unusable for another reason (bad signature,
    /// wrong key usage, malformed…).
    BadCertificate(String),
    /// The handshake did not finish within the time limit.
    Timeout {
        /// The time limit that ran out.
        elapsed: Duration,
    },
    /// The handshake failed before or after certificate verification
    /// (protocol mismatch, alert from the server, connection reset…).
    Handshake(String),
}

impl fmt::Display for TlsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsErrorKind::Expired { not_after, now } => {
                write!(f, "the certificate expired at {not_after} (now is {now})")
            }
            TlsErrorKind::NotYetValid { not_before, now } => {
                write!(
                    f,
                    "the certificate is valid from {not_before} (now is {now})"
                )
            }
            TlsErrorKind::HostnameMismatch {
                expected,
                presented,
            } => write!(
                f,
                "the certificate is for [{}], not {expected}",
                presented.join(", ")
            ),
            TlsErrorKind::UnknownIssuer { issuer } => {
                write!(f, "the certificate's issuer \"{issuer}\" is not trusted")
            }
            TlsErrorKind::SelfSigned {
                subject,
                fingerprint,
            } => write!(
                f,
                "the certificate \"{subject}\" ({fingerprint}) is self-signed and not trusted"
            ),
            TlsErrorKind::PinMismatch {
                expected,
                presented,
            } => write!(
                f,
                "no presented certificate is the pinned CA {expected} anchoring the chain; presented [{}]",
                presented.join(", ")
            ),
            TlsErrorKind::Revoked => f.write_str("the certificate has been revoked"),
            TlsErrorKind::BadCertificate(msg) => write!(f, "the certificate is invalid: {msg}"),
            TlsErrorKind::Timeout { elapsed } => {
                write!(f, "the handshake did not finish within {elapsed:?}")
            }
            TlsErrorKind::Handshake(msg) => write!(f, "the handshake failed: {msg}"),
        }
    }
}

/// The client side of TLS, built once per transport.
#[derive(Debug)]
pub(crate) struct TlsClient {
    /// The config every handshake starts from; each handshake swaps in its
    /// own capturing verifier.
    base: ClientConfig,
    core: Arc<verify::VerifierCore>,
}

impl TlsClient {
    pub(crate) fn new(trust: &TrustConfig) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let mut pinned_in_ca_pem = None;
        if let Some(pem) = &trust.ca_pem {
            for cert in parse_pem_certs(pem, "ca_pem")? {
                if let Some(pin) = &trust.pinned_ca_sha256
                    && crate::fingerprint::sha256(&cert) == *pin
                {
                    pinned_in_ca_pem = Some(cert.clone());
                }
                add_root(&mut roots, cert, "ca_pem")?;
            }
        }
        if let Some(pem) = &trust.extra_ca_pem {
            for cert in parse_pem_certs(pem, "extra_ca_pem")? {
                add_root(&mut roots, cert, "extra_ca_pem")?;
            }
        }
        if trust.system_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(error = %error, "could not load some system root certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "loaded system root certificates");
        }
        if roots.is_empty() && trust.pinned_ca_sha256.is_none() {
            if trust.system_roots {
                tracing::warn!(
                    "no trusted root certificates were found; every server certificate will be refused"
                );
            } else {
                return Err(TransportError::Config {
                    detail: "no trust anchors: set ca_pem, extra_ca_pem, system_roots or a pinned CA fingerprint".to_owned(),
                });
            }
        }
        let core = Arc::new(verify::VerifierCore::new(
            provider.clone(),
            roots,
            trust.pinned_ca_sha256,
            pinned_in_ca_pem,
        )?);
        let placeholder = Arc::new(verify::CapturingVerifier::new(core.clone()));
        let mut base = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Config {
                detail: format!("TLS protocol versions: {e}"),
            })?
            .dangerous()
            .with_custom_certificate_verifier(placeholder)
            .with_no_client_auth();
        base.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Resumed sessions skip certificate verification, so the doctor would
        // not see the chain; the agent connects rarely enough that a full
        // handshake each time costs nothing that matters.
        base.resumption = Resumption::disabled();
        Ok(TlsClient { base, core })
    }

    /// The same client, checking certificate validity against `clock`.
    pub(crate) fn with_clock(&self, clock: Arc<dyn tether_wire::Clock>) -> TlsClient {
        let mut base = self.base.clone();
        base.time_provider = Arc::new(ClockTimeProvider(clock));
        TlsClient {
            base,
            core: self.core.clone(),
        }
    }

    /// The same client, writing each session's secrets to `log`.
    pub(crate) fn with_key_log(&self, log: Arc<dyn rustls::KeyLog>) -> TlsClient {
        let mut base = self.base.clone();
        base.key_log = log;
        TlsClient {
            base,
            core: self.core.clone(),
        }
    }

    /// Runs the handshake with a time limit.
    pub(crate) async fn handshake(
        &self,
        io: BoxedIo,
        server_name: &str,
        timeout: Duration,
    ) -> Result<(TlsStream, TlsInfo), TransportError> {
        let name = parse_server_name(server_name)?;
        let verifier = Arc::new(verify::CapturingVerifier::new(self.core.clone()));
        let capture = verifier.capture();
        let mut config = self.base.clone();
        config.dangerous().set_certificate_verifier(verifier);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let outcome = tokio::time::timeout(timeout, connector.connect(name, io)).await;
        let captured = {
            let mut guard = capture.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *guard)
        };
        let fail = |kind: TlsErrorKind, chain: Vec<Vec<u8>>| TransportError::Tls {
            server_name: server_name.to_owned(),
            kind,
            chain,
        };
        match outcome {
            Err(_) => Err(fail(
                TlsErrorKind::Timeout { elapsed: timeout },
                captured.chain,
            )),
            Ok(Err(io_err)) => {
                let kind = captured.error.unwrap_or_else(|| {
                    let msg = match io_err
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                    {
                        Some(tls_err) => tls_err.to_string(),
                        None => io_err.to_string(),
                    };
                    TlsErrorKind::Handshake(msg)
                });
                Err(fail(kind, captured.chain))
            }
            Ok(Ok(stream)) => {
                let (_, conn) = stream.get_ref();
                let chain = conn
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or(captured.chain);
                let info = TlsInfo {
                    protocol: conn
                        .protocol_version()
                        .map(protocol_name)
                        .unwrap_or_else(|| "unknown".to_owned()),
                    cipher: conn
                        .negotiated_cipher_suite()
                        .and_then(|s| s.suite().as_str())
                        .unwrap_or("unknown")
                        .to_owned(),
                    peer_chain_der: chain,
                    server_name: server_name.to_owned(),
                };
                Ok((stream, info))
            }
        }
    }
}

/// Reads every CERTIFICATE block of a PEM file; other blocks are ignored.
fn parse_pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|e| TransportError::Config {
            detail: format!("{what}: cannot read PEM: {e}"),
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(TransportError::Config {
            detail: format!(
                "{what}: no CERTIFICATE block found in {} bytes of PEM",
                pem.len()
            ),
        });
    }
    Ok(certs)
}

fn add_root(
    roots: &mut RootCertStore,
    cert: CertificateDer<'static>,
    what: &str,
) -> Result<(), TransportError> {
    let fp = fingerprint(&cert);
    roots.add(cert).map_err(|e| TransportError::Config {
        detail: format!("{what}: certificate {fp} cannot be a trust anchor: {e}"),
    })
}

/// A host name or IP literal (with or without brackets) as a TLS server name.
fn parse_server_name(name: &str) -> Result<ServerName<'static>, TransportError> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_owned()).map_err(|e| TransportError::InvalidUrl {
        url: name.to_owned(),
        detail: format!("not a valid TLS server name: {e}"),
    })
}

fn protocol_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Converts rustls's time to a date, saturating on nonsense values.
fn unix_to_datetime(t: UnixTime) -> OffsetDateTime {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The chain and verification error of one handshake, shared between the
/// verifier (which rustls owns) and the code awaiting the handshake.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) error: Option<TlsErrorKind>,
}

pub(crate) type SharedCapture = Arc<Mutex<Capture>>;

/// Adapts the injected wall clock to rustls's time provider, so certificate
/// validity is checked against the same "now" as the rest of Tether.
#[derive(Debug)]
pub(crate) struct ClockTimeProvider(pub(crate) Arc<dyn tether_wire::Clock>);

impl TimeProvider for ClockTimeProvider {
    fn current_time(&self) -> Option<UnixTime> {
        let secs = u64::try_from(self.0.now().unix_timestamp()).ok()?;
        Some(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_accept_hosts_and_ip_literals() {
        assert!(matches!(
            parse_server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            parse_server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse_server_name("[::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(parse_server_name("bad name!").is_err());
    }

    #[test]
    fn pem_without_certificates_is_a_config_error() {
        let err = parse_pem_certs(b"not pem at all", "ca_pem").expect_err("no certs");
        assert_eq!(err.code(), tether_wire::ErrorCode::ConfigInvalid);
        assert!(err.to_string().contains("ca_pem"), "{err}");
    }

    #[test]
    fn nothing_to_trust_is_a_config_error() {
        let trust = TrustConfig {
            system_roots: false,
            ..TrustConfig::default()
        };
        let err = TlsClient::new(&trust).expect_err("no anchors");
        assert!(err.to_string().contains("no trust anchors"), "{err}");
    }

    #[test]
    fn clock_time_provider_reads_the_injected_clock() {
        let at = time::macros::datetime!(2030-01-02 03:04:05 UTC);
        let clock = tether_wire::ManualClock::new(at);
        let tp = ClockTimeProvider(Arc::new(clock));
        let now = tp.current_time().expect("after 1970");
        assert_eq!(unix_to_datetime(now), at);
    }
}
