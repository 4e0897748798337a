//! One endpoint, one outcome: TCP, then STARTTLS when the port speaks it,
//! then a rustls handshake that accepts any chain (verdicts are judged
//! afterwards, never by refusing the handshake) and notes a client
//! certificate request, then, when rustls cannot negotiate, a legacy hello
//! that still reads the chain.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::{AlertDescription, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tether_transport::{BoxedIo, ConnectErrorKind, Dial};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout};

use crate::facts::{Chain, Roots, judge};
use crate::legacy::{self, Answer, MAX_CHAIN_CERTS};
use crate::rtt::{self, RttTracker};
use crate::spec::Endpoint;
use crate::starttls::{self, UpgradeError, printable};

/// How an endpoint ended. Every probed endpoint has exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// No answer to the TCP handshake (dropped), or the host is unreachable.
    Filtered { detail: String },
    /// The port answered with a reset: nothing listens.
    Refused,
    /// The port is open but does not speak TLS (or will not upgrade to it).
    NotTls { detail: String },
    /// TLS was attempted and failed; `chain` holds what was presented.
    TlsFailed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chain: Option<Chain>,
    },
    /// A handshake rustls completed.
    TlsAccepted {
        protocol: String,
        cipher: String,
        chain: Chain,
        /// The server asked for a client certificate but went on without.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        client_cert_optional: bool,
    },
    /// The server insists on a client certificate; its chain is recorded.
    ClientCertRequired { chain: Chain },
    /// Only TLS 1.0/1.1 or ciphers rustls refuses; the chain was read from a
    /// legacy handshake.
    LegacyOnly {
        protocol: String,
        cipher: String,
        why: String,
        chain: Chain,
    },
    /// A host-name target with no address.
    Unresolved { detail: String },
    /// Never probed: the scan was cancelled or its allowed hours closed.
    NotScanned { reason: String },
}

impl Outcome {
    /// The stable name of the outcome, as in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Filtered { .. } => "filtered",
            Outcome::Refused => "refused",
            Outcome::NotTls { .. } => "not_tls",
            Outcome::TlsFailed { .. } => "tls_failed",
            Outcome::TlsAccepted { .. } => "tls_accepted",
            Outcome::ClientCertRequired { .. } => "client_cert_required",
            Outcome::LegacyOnly { .. } => "legacy_only",
            Outcome::Unresolved { .. } => "unresolved",
            Outcome::NotScanned { .. } => "not_scanned",
        }
    }

    /// The chain the endpoint presented, if any.
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            Outcome::TlsAccepted { chain, .. }
            | Outcome::ClientCertRequired { chain }
            | Outcome::LegacyOnly { chain, .. } => Some(chain),
            Outcome::TlsFailed { chain, .. } => chain.as_ref(),
            _ => None,
        }
    }
}

/// An endpoint and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointResult {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub elapsed_ms: u64,
    /// When the probe started, by the scanning host's clock: the inventory's
    /// first and last seen are this, not the time the result reached the
    /// server. Absent from agents that predate it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_at: Option<OffsetDateTime>,
}

/// How one TCP handshake ended.
enum Dialed {
    Done(Result<BoxedIo, Outcome>),
    /// No answer within this long.
    Silent(Duration),
}

/// The outcome of a port that answered neither handshake.
fn silent(first: Duration, second: Option<Duration>) -> Outcome {
    Outcome::Filtered {
        detail: match second {
            None => format!(
                "no answer to the TCP handshake within {} ms",
                first.as_millis()
            ),
            Some(second) => format!(
                "no answer to the TCP handshake within {} ms (the limit the scan's round trips give), nor to a second one within {} ms",
                first.as_millis(),
                second.as_millis()
            ),
        },
    }
}

/// One handshake to one endpoint, outside a scan: the same probe a scan
/// runs (TCP, STARTTLS when the endpoint names it, rustls accepting any
/// chain, the legacy hello as fallback). The deploy transaction verifies
/// with it which certificate a service serves, so a deploy and a scan see
/// one answer for one server. Verdicts are judged against no anchors: the
/// caller compares fingerprints, not trust.
pub async fn probe_once(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    handshake_timeout: Duration,
) -> Outcome {
    Prober::new(
        Arc::new(tether_transport::TcpDialer),
        Arc::new(Roots::default()),
        // One handshake has no round trips to learn from: the configured
        // limit, fixed.
        Arc::new(RttTracker::new(connect_timeout, false)),
        handshake_timeout,
    )
    .probe(endpoint)
    .await
}

/// What a probe needs from the scan.
pub(crate) struct Prober {
    pub dialer: Arc<dyn Dial>,
    pub roots: Arc<Roots>,
    /// The scan's round trips and the connect limit they give.
    pub rtt: Arc<RttTracker>,
    pub handshake_timeout: Duration,
    pub now: fn() -> OffsetDateTime,
    base: ClientConfig,
}

impl Prober {
    pub(crate) fn new(
        dialer: Arc<dyn Dial>,
        roots: Arc<Roots>,
        rtt: Arc<RttTracker>,
        handshake_timeout: Duration,
    ) -> Prober {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AcceptAny {
            provider: provider.clone(),
            chain: Arc::default(),
        });
        let base = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_client_cert_resolver(Arc::new(NoteRequest::default()))
            })
            // The ring provider supports its default versions: this branch
            // is only reached by a broken build of rustls.
            .unwrap_or_else(|_| unreachable_config());
        let mut base = base;
        // A resumed session shows no certificate.
        base.resumption = Resumption::disabled();
        Prober {
            dialer,
            roots,
            rtt,
            handshake_timeout,
            now: OffsetDateTime::now_utc,
            base,
        }
    }

    /// Connects within the scan's connect limit ([`crate::rtt`]): a port
    /// that stays silent past an adaptive limit shorter than the configured
    /// one gets a second handshake before it is called filtered.
    async fn connect(&self, ip: IpAddr, port: u16) -> Result<BoxedIo, Outcome> {
        let addr = SocketAddr::new(ip, port);
        let configured = self.rtt.configured();
        let first = match self.dial_within(addr, None).await {
            Dialed::Done(r) => return r,
            Dialed::Silent(waited) => waited,
        };
        if first >= configured {
            return Err(silent(first, None));
        }
        let second = rtt::retry_limit(first, configured);
        match self.dial_within(addr, Some(second)).await {
            Dialed::Done(r) => r,
            Dialed::Silent(_) => Err(silent(first, Some(second))),
        }
    }

    /// One TCP handshake: within `fixed`, or within the scan's moving limit.
    /// An answer (connected or reset) is a round-trip sample.
    async fn dial_within(&self, addr: SocketAddr, mut fixed: Option<Duration>) -> Dialed {
        let started = Instant::now();
        let dial = self.dialer.dial(addr);
        tokio::pin!(dial);
        let mut limit = self.rtt.limit();
        loop {
            let wait = fixed.unwrap_or_else(|| *limit.borrow_and_update());
            tokio::select! {
                res = &mut dial => {
                    let rtt = started.elapsed();
                    return Dialed::Done(match res {
                        Ok(io) => {
                            self.rtt.record(rtt);
                            Ok(io)
                        }
                        Err(e) => Err(match ConnectErrorKind::from_io(&e) {
                            ConnectErrorKind::Refused => {
                                self.rtt.record(rtt);
                                Outcome::Refused
                            }
                            ConnectErrorKind::Timeout => Outcome::Filtered {
                                detail: "no answer to the TCP handshake".to_owned(),
                            },
                            ConnectErrorKind::Unreachable => Outcome::Filtered {
                                detail: "network or host unreachable".to_owned(),
                            },
                            other => Outcome::Filtered {
                                detail: format!("connect failed: {other}"),
                            },
                        }),
                    });
                }
                () = tokio::time::sleep_until(started + wait) => {
                    // The limit may have grown while this timer ran.
                    if fixed.is_none() && *limit.borrow() > wait {
                        continue;
                    }
                    return Dialed::Silent(wait);
                }
                changed = limit.changed(), if fixed.is_none() => {
                    if changed.is_err() {
                        // The tracker is gone (it lives as long as the
                        // prober, so never): keep the last limit.
                        fixed = Some(wait);
                    }
                }
            }
        }
    }

    /// Connects and upgrades; the error is the endpoint's outcome.
    async fn open(&self, ep: &Endpoint) -> Result<BoxedIo, Outcome> {
        let mut io = self.connect(ep.ip, ep.port).await?;
        if let Some(proto) = ep.starttls {
            match timeout(self.handshake_timeout, starttls::upgrade(&mut io, proto)).await {
                Ok(Ok(())) => {}
                Ok(Err(UpgradeError::Declined(m))) => {
                    return Err(Outcome::NotTls {
                        detail: format!("{} STARTTLS declined: {m}", proto.as_str()),
                    });
                }
                Ok(Err(UpgradeError::NotProtocol(m))) => {
                    return Err(Outcome::NotTls {
                        detail: format!("not {}: the server said {m:?}", proto.as_str()),
                    });
                }
                Ok(Err(UpgradeError::Io(m))) => {
                    return Err(Outcome::TlsFailed {
                        reason: format!("{} STARTTLS exchange failed: {m}", proto.as_str()),
                        chain: None,
                    });
                }
                Err(_) => {
                    return Err(Outcome::TlsFailed {
                        reason: format!(
                            "{} STARTTLS exchange did not finish within {} ms",
                            proto.as_str(),
                            self.handshake_timeout.as_millis()
                        ),
                        chain: None,
                    });
                }
            }
        }
        Ok(io)
    }

    fn judge(&self, ders: &[Vec<u8>], presented: usize, ep: &Endpoint) -> Chain {
        let name = ep.sni.clone().unwrap_or_else(|| ep.ip.to_string());
        judge(ders, presented, &name, &self.roots, (self.now)())
    }

    /// Probes one endpoint to its outcome.
    pub(crate) async fn probe(&self, ep: &Endpoint) -> Outcome {
        let io = match self.open(ep).await {
            Ok(io) => io,
            Err(outcome) => return outcome,
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let io = Recording {
            inner: io,
            seen: seen.clone(),
        };
        let chain: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let asked = Arc::new(AtomicBool::new(false));
        let mut config = self.base.clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAny {
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                chain: chain.clone(),
            }));
        config.client_auth_cert_resolver = Arc::new(NoteRequest {
            asked: asked.clone(),
        });
        let name = match &ep.sni {
            Some(n) => {
                ServerName::try_from(n.clone()).unwrap_or(ServerName::IpAddress(ep.ip.into()))
            }
            None => ServerName::IpAddress(ep.ip.into()),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let outcome = timeout(self.handshake_timeout, connector.connect(name, io)).await;
        let captured = std::mem::take(&mut *chain.lock().unwrap_or_else(|p| p.into_inner()));
        let first_bytes = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let asked = asked.load(Ordering::Relaxed);
        let captured_chain =
            |p: &Prober| (!captured.is_empty()).then(|| p.judge(&captured, captured.len(), ep));
        match outcome {
            Err(_) => {
                let reason = if first_bytes.is_empty() {
                    format!(
                        "no TLS answer within {} ms",
                        self.handshake_timeout.as_millis()
                    )
                } else {
                    format!(
                        "the handshake did not finish within {} ms ({} bytes received)",
                        self.handshake_timeout.as_millis(),
                        first_bytes.len()
                    )
                };
                Outcome::TlsFailed {
                    reason,
                    chain: captured_chain(self),
                }
            }
            Ok(Ok(mut stream)) => {
                let (_, conn) = stream.get_ref();
                let protocol = conn
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
                    .replace("TLSv1_", "TLSv1.");
                let cipher = conn
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                let ders: Vec<Vec<u8>> = conn
                    .peer_certificates()
                    .map(|c| c.iter().take(MAX_CHAIN_CERTS).map(|c| c.to_vec()).collect())
                    .unwrap_or(captured.clone());
                let presented = conn.peer_certificates().map_or(ders.len(), <[_]>::len);
                let chain = self.judge(&ders, presented, ep);
                if asked {
                    // TLS 1.3 servers refuse a missing client certificate
                    // after the client's Finished: the refusal is the first
                    // thing to read.
                    let mut byte = [0u8; 1];
                    let wait = self.handshake_timeout.min(Duration::from_secs(1));
                    match timeout(wait, stream.read(&mut byte)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Outcome::ClientCertRequired { chain },
                        _ => {}
                    }
                }
                Outcome::TlsAccepted {
                    protocol,
                    cipher,
                    chain,
                    client_cert_optional: asked,
                }
            }
            Ok(Err(e)) => {
                if let Some(&b) = first_bytes.first()
                    && b != 0x15
                    && b != 0x16
                {
                    return Outcome::NotTls {
                        detail: format!("the server answered {:?}", printable(&first_bytes)),
                    };
                }
                if asked {
                    let chain = captured_chain(self).unwrap_or_default();
                    return Outcome::ClientCertRequired { chain };
                }
                let tls_error = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .cloned();
                let reason = match &tls_error {
                    Some(rustls::Error::InvalidMessage(
                        rustls::InvalidMessage::HandshakePayloadTooLarge
                        | rustls::InvalidMessage::MessageTooLarge,
                    )) => "the server's handshake message is larger than rustls accepts (64 KiB)"
                        .to_owned(),
                    Some(t) => t.to_string(),
                    None if e.kind() == io::ErrorKind::UnexpectedEof => {
                        if first_bytes.is_empty() {
                            "the server closed the connection without answering the ClientHello"
                                .to_owned()
                        } else {
                            format!(
                                "the server closed the connection mid-handshake after {} bytes",
                                first_bytes.len()
                            )
                        }
                    }
                    None => e.to_string(),
                };
                if worth_a_legacy_hello(tls_error.as_ref()) {
                    return self.legacy(ep, reason, captured_chain(self)).await;
                }
                Outcome::TlsFailed {
                    reason,
                    chain: captured_chain(self),
                }
            }
        }
    }

    /// A second connection with the legacy hello, after rustls could not
    /// negotiate.
    async fn legacy(&self, ep: &Endpoint, rustls_reason: String, chain: Option<Chain>) -> Outcome {
        let failed = |reason: String, chain: Option<Chain>| Outcome::TlsFailed { reason, chain };
        let mut io = match self.open(ep).await {
            Ok(io) => io,
            Err(_) => {
                return failed(
                    format!("{rustls_reason}; the legacy retry could not connect"),
                    chain,
                );
            }
        };
        let answer = match timeout(
            self.handshake_timeout,
            legacy::probe(&mut io, ep.sni.as_deref()),
        )
        .await
        {
            Ok(a) => a,
            Err(_) => {
                return failed(
                    format!("{rustls_reason}; no answer to a legacy hello"),
                    chain,
                );
            }
        };
        match answer {
            Answer::Hello {
                protocol,
                cipher,
                chain: ders,
                presented,
            } => {
                let judged = self.judge(&ders, presented, ep);
                let legacy_protocol = protocol != "TLSv1.2";
                if legacy_protocol || !legacy::rustls_supports(cipher) {
                    let why = if legacy_protocol {
                        format!("{protocol} only")
                    } else {
                        format!("only cipher suites rustls refuses (0x{cipher:04x})")
                    };
                    Outcome::LegacyOnly {
                        protocol,
                        cipher: format!("0x{cipher:04x}"),
                        why,
                        chain: judged,
                    }
                } else {
                    failed(rustls_reason, Some(judged))
                }
            }
            Answer::Alert(a) => failed(
                format!(
                    "{rustls_reason}; a legacy hello got alert {:?}",
                    AlertDescription::from(a)
                ),
                chain,
            ),
            Answer::NotTls(bytes) => Outcome::NotTls {
                detail: format!("the server answered {:?}", printable(&bytes)),
            },
            Answer::Broken(why) => failed(format!("{rustls_reason}; legacy hello: {why}"), chain),
        }
    }
}

/// Failures where the server may still show its chain to an older or
/// broader hello.
fn worth_a_legacy_hello(e: Option<&rustls::Error>) -> bool {
    use rustls::Error as E;
    use rustls::InvalidMessage as M;
    match e {
        Some(E::AlertReceived(a)) => matches!(
            a,
            AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::InsufficientSecurity
                | AlertDescription::IllegalParameter
                | AlertDescription::DecodeError
        ),
        Some(E::PeerIncompatible(_)) | Some(E::PeerMisbehaved(_)) => true,
        Some(E::InvalidMessage(M::MessageTooLarge | M::HandshakePayloadTooLarge)) => true,
        _ => false,
    }
}

fn unreachable_config() -> ClientConfig {
    // Only reached if rustls's ring provider rejected its own defaults.
    ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Accepts every chain and keeps it: the scanner judges chains itself and
/// must see servers whose certificates no one trusts.
#[derive(Debug)]
struct AcceptAny {
    provider: Arc<CryptoProvider>,
    chain: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        *chain = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .take(MAX_CHAIN_CERTS)
            .map(|c| c.to_vec())
            .collect();
        Ok(ServerCertVerified::assertion())
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes that the server asked for a client certificate, and offers none.
#[derive(Debug, Default)]
struct NoteRequest {
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for NoteRequest {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        // "Might have": keeps rustls's transcript ready for a request.
        true
    }
}

/// The first bytes a server sends, to tell TLS from a banner.
struct Recording {
    inner: BoxedIo,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let mut seen = this.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() < 64 {
                let new = &buf.filled()[before..];
                let room = 64 - seen.len();
                seen.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        r
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
