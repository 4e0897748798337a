//! The certificate verifier: rustls's WebPKI verifier, plus CA pinning, plus
//! a record of what the server presented and why it was refused.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Capture, SharedCapture, TlsErrorKind, unix_to_datetime};
use crate::error::TransportError;
use crate::fingerprint::{fingerprint, sha256};
use tether_x509::CertFacts;

/// What every handshake of one transport shares: the provider, the roots
/// verifier, and the pin.
#[derive(Debug)]
pub(crate) struct VerifierCore {
    provider: Arc<CryptoProvider>,
    /// Verifies against the configured roots; `None` when there are none.
    roots: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<Pin>,
}

#[derive(Debug)]
struct Pin {
    sha256: [u8; 32],
    /// Whether `ca_pem` holds the pinned CA, so it may anchor chains that do
    /// not include it.
    from_ca_pem: bool,
    /// A verifier whose only root is the pinned CA. A fingerprint fixes the
    /// certificate's bytes, so whichever copy of the CA builds it (one from
    /// `ca_pem`, or one the server presented) builds the same verifier.
    verifier: OnceLock<Arc<WebPkiServerVerifier>>,
}

impl VerifierCore {
    pub(crate) fn new(
        provider: Arc<CryptoProvider>,
        roots: RootCertStore,
        pinned_ca_sha256: Option<[u8; 32]>,
        pinned_in_ca_pem: Option<CertificateDer<'static>>,
    ) -> Result<Self, TransportError> {
        let roots_verifier = if roots.is_empty() {
            None
        } else {
            let built =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TransportError::Config {
                        detail: format!("cannot build the certificate verifier: {e}"),
                    })?;
            Some(built)
        };
        let pin = match pinned_ca_sha256 {
            None => None,
            Some(sha256) => {
                let pin = Pin {
                    sha256,
                    from_ca_pem: pinned_in_ca_pem.is_some(),
                    verifier: OnceLock::new(),
                };
                if let Some(cert) = pinned_in_ca_pem {
                    let verifier =
                        anchored_verifier(&provider, cert).map_err(|e| TransportError::Config {
                            detail: format!("the pinned CA in ca_pem cannot anchor a chain: {e}"),
                        })?;
                    // The cell is new, so this set cannot fail.
                    let _ = pin.verifier.set(verifier);
                }
                Some(pin)
            }
        };
        Ok(VerifierCore {
            provider,
            roots: roots_verifier,
            pin,
        })
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, (rustls::Error, TlsErrorKind)> {
        let Some(pin) = &self.pin else {
            let Some(roots) = &self.roots else {
                let kind = self_signed_or(
                    TlsErrorKind::UnknownIssuer {
                        issuer: issuer_of(end_entity),
                    },
                    end_entity,
                );
                return Err((
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                    kind,
                ));
            };
            return roots
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map_err(|e| {
                    let kind =
                        self_signed_or(classify(&e, end_entity, server_name, now), end_entity);
                    (e, kind)
                });
        };

        let presented: Vec<&CertificateDer<'_>> = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .collect();
        let mismatch = || {
            let kind = TlsErrorKind::PinMismatch {
                expected: format!("sha256:{}", hex::encode(pin.sha256)),
                presented: presented.iter().map(|c| fingerprint(c)).collect(),
            };
            (
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
                kind,
            )
        };
        let in_chain = presented.iter().find(|c| sha256(c) == pin.sha256);
        let verifier = match (pin.verifier.get(), in_chain) {
            // A copy of the pinned CA came with the configuration, or an
            // earlier handshake built the verifier from a presented copy that
            // this chain presents again.
            (Some(v), _) if pin.from_ca_pem || in_chain.is_some() => v.clone(),
            (_, Some(cert)) => {
                let cert = CertificateDer::from(cert.to_vec());
                match anchored_verifier(&self.provider, cert) {
                    Ok(v) => pin.verifier.get_or_init(|| v).clone(),
                    Err(e) => {
                        let kind = TlsErrorKind::BadCertificate(format!(
                            "the pinned CA cannot anchor a chain: {e}"
                        ));
                        return Err((
                            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
                            kind,
                        ));
                    }
                }
            }
            _ => return Err(mismatch()),
        };
        // The pinned CA itself is the anchor, not an intermediate.
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| sha256(c) != pin.sha256)
            .cloned()
            .collect();
        verifier
            .verify_server_cert(end_entity, &others, server_name, ocsp, now)
            .map_err(|e| {
                let kind = match classify(&e, end_entity, server_name, now) {
                    // The pinned CA was presented but does not sign the chain.
                    TlsErrorKind::UnknownIssuer { .. } => mismatch().1,
                    other => other,
                };
                (e, kind)
            })
    }
}

fn anchored_verifier(
    provider: &Arc<CryptoProvider>,
    cert: CertificateDer<'static>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).map_err(|e| e.to_string())?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())
}

/// Maps rustls's verification error to the catalog's kinds, filling in
/// context from the certificate when rustls gives none.
fn classify(
    err: &rustls::Error,
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> TlsErrorKind {
    let summary = || CertFacts::from_der(end_entity);
    let now_dt = unix_to_datetime(now);
    let rustls::Error::InvalidCertificate(cert_err) = err else {
        return TlsErrorKind::Handshake(err.to_string());
    };
    match cert_err {
        CertificateError::ExpiredContext { time, not_after } => TlsErrorKind::Expired {
            not_after: unix_to_datetime(*not_after),
            now: unix_to_datetime(*time),
        },
        CertificateError::Expired => TlsErrorKind::Expired {
            not_after: summary().map(|s| s.not_after).unwrap_or(now_dt),
            now: now_dt,
        },
        CertificateError::NotValidYetContext { time, not_before } => TlsErrorKind::NotYetValid {
            not_before: unix_to_datetime(*not_before),
            now: unix_to_datetime(*time),
        },
        CertificateError::NotValidYet => TlsErrorKind::NotYetValid {
            not_before: summary().map(|s| s.not_before).unwrap_or(now_dt),
            now: now_dt,
        },
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => TlsErrorKind::HostnameMismatch {
            expected: server_name_string(expected),
            presented: presented.clone(),
        },
        CertificateError::NotValidForName => TlsErrorKind::HostnameMismatch {
            expected: server_name_string(server_name),
            presented: summary().map(|s| s.names()).unwrap_or_default(),
        },
        CertificateError::UnknownIssuer => TlsErrorKind::UnknownIssuer {
            issuer: issuer_of(end_entity),
        },
        CertificateError::Revoked => TlsErrorKind::Revoked,
        _ => TlsErrorKind::BadCertificate(err.to_string()),
    }
}

/// A refusal for want of a trusted issuer (or of a CA used as its own end
/// entity, as `openssl req -x509` makes it) is named for what it is when
/// the end-entity certificate signs itself.
fn self_signed_or(kind: TlsErrorKind, end_entity: &CertificateDer<'_>) -> TlsErrorKind {
    if !matches!(
        kind,
        TlsErrorKind::UnknownIssuer { .. } | TlsErrorKind::BadCertificate(_)
    ) {
        return kind;
    }
    match CertFacts::from_der(end_entity) {
        Some(f) if f.self_issued => TlsErrorKind::SelfSigned {
            subject: f.subject,
            fingerprint: f.fingerprint,
        },
        _ => kind,
    }
}

fn issuer_of(cert: &CertificateDer<'_>) -> String {
    CertFacts::from_der(cert)
        .map(|s| s.issuer)
        .unwrap_or_else(|| "<unparseable certificate>".to_owned())
}

fn server_name_string(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The verifier one handshake uses: it records the presented chain and the
/// classified failure into its [`Capture`] before answering rustls.
#[derive(Debug)]
pub(crate) struct CapturingVerifier {
    core: Arc<VerifierCore>,
    capture: SharedCapture,
}

impl CapturingVerifier {
    pub(crate) fn new(core: Arc<VerifierCore>) -> Self {
        CapturingVerifier {
            core,
            capture: SharedCapture::default(),
        }
    }

    pub(crate) fn capture(&self) -> SharedCapture {
        self.capture.clone()
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .map(|c| c.to_vec())
            .collect();
        let result = self
            .core
            .verify(end_entity, intermediates, server_name, ocsp_response, now);
        let mut guard = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(ok) => {
                *guard = Capture { chain, error: None };
                Ok(ok)
            }
            Err((err, kind)) => {
                tracing::debug!(error = %kind, "server certificate refused");
                *guard = Capture {
                    chain,
                    error: Some(kind),
                };
                Err(err)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.core.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.core.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
