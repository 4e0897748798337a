//! Issuance through an ACME CA (RFC 8555), with instant-acme as the
//! protocol client and Tether's transport as its HTTP path.
//!
//! The steps are separate calls so the control plane can put the
//! provisioning agent between them (docs/pki.md, "ACME"):
//! 1. [`AcmeAccount::register`] once per issuer: a new account whose
//!    credentials (its P-256 key and URL) come back sealed with the KEK
//!    ([`SealedAccount`]); [`AcmeAccount::open`] opens them for each use.
//!    Neither the database nor any file ever holds the key in plaintext.
//! 2. [`AcmeAccount::order`]: a new order for the names, answered with
//!    each pending http-01 challenge (name, token, key authorization).
//! 3. The agent on the target host serves each key authorization at
//!    `http://NAME/.well-known/acme-challenge/TOKEN`.
//! 4. [`AcmeAccount::challenges_ready`] tells the CA to validate, and
//!    [`AcmeAccount::finalize`] waits (bounded) for the order to become
//!    ready, sends the agent's CSR and downloads the chain.
//!
//! Every failure is an [`AcmeError`] with a stable code; a CA's problem
//! document is kept whole ([`AcmeProblem`]), also when it came from a
//! failed challenge rather than the request itself.

pub mod ari;
mod client;
mod problem;

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tether_transport::{Transport, TransportConfig, TransportError, TrustConfig};
use tether_wire::ErrorCode;

use crate::ca::Issued;
use crate::csr::CsrRequest;
use crate::seal::{Kek, SealError};

pub use problem::{ACME_URN, AcmeProblem, AcmeSubproblem};
pub use tether_wire::Http01Challenge;

/// The sealing purpose of an ACME account's credentials (the AEAD's
/// associated data), so a sealed account cannot stand in for a CA key.
pub const SEAL_ACME_ACCOUNT: &str = "acme-account";

/// How long [`AcmeAccount::finalize`] waits by default for the CA to
/// validate and then to issue.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Where an ACME CA is and how to trust its API's TLS.
#[derive(Debug, Clone)]
pub struct AcmeDirectory {
    /// The directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub url: String,
    /// PEM of the CA(s) that sign the ACME API's own certificate, for a
    /// private ACME server; the system roots are trusted as well.
    pub ca_pem: Option<Vec<u8>>,
}

/// An account's credentials sealed with the KEK: the only form in which
/// they are stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedAccount(pub Vec<u8>);

impl std::fmt::Debug for SealedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedAccount({} bytes)", self.0.len())
    }
}

/// A new order and what must be provisioned before the CA validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOrder {
    /// The order's URL: the handle for the later steps.
    pub url: String,
    /// The challenges of authorizations still pending (an authorization
    /// the account already holds needs none).
    pub challenges: Vec<Http01Challenge>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    #[error("the ACME server could not be reached at {url}: {error} ({code})", code = error.code())]
    Unreachable {
        url: String,
        error: Box<TransportError>,
    },
    #[error("the ACME server's answer is not an ACME document: {0}")]
    NotAcme(String),
    #[error("the ACME CA answered with a problem: {0}")]
    Problem(AcmeProblem),
    #[error("the ACME order did not become {waiting_for} within {within:?}")]
    Timeout {
        waiting_for: &'static str,
        within: Duration,
    },
    #[error("the ACME account's sealed credentials: {0}")]
    Seal(#[from] SealError),
    #[error("the ACME account's credentials are not readable: {0}")]
    Credentials(String),
    #[error("the ACME CA offers no http-01 challenge for {0}")]
    NoHttp01(String),
    #[error("the ACME order ended {status} without a problem document")]
    OrderFailed { status: String },
    #[error("the ACME client failed: {0}")]
    Client(String),
    #[error("the ACME CA's certificate does not match the request: {0}")]
    BadChain(String),
}

impl AcmeError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AcmeError::Unreachable { .. } => ErrorCode::AcmeUnreachable,
            AcmeError::NotAcme(_) => ErrorCode::AcmeNotAcme,
            AcmeError::Problem(p) => p.code(),
            AcmeError::Timeout { .. } => ErrorCode::AcmeTimeout,
            AcmeError::Seal(_) | AcmeError::Credentials(_) => ErrorCode::AcmeAccountKeyUnavailable,
            AcmeError::NoHttp01(_) => ErrorCode::AcmeIdentifierRejected,
            AcmeError::OrderFailed { .. } | AcmeError::Client(_) => ErrorCode::AcmeServerError,
            AcmeError::BadChain(_) => ErrorCode::AcmeChainInvalid,
        }
    }

    /// Whether the CA refused a request's anti-replay nonce (RFC 8555
    /// §6.5): the request was not processed, so it is safe to send again.
    pub fn is_bad_nonce(&self) -> bool {
        self.problem().and_then(AcmeProblem::short_type) == Some("badNonce")
    }

    /// The CA's problem document, when the CA sent one.
    pub fn problem(&self) -> Option<&AcmeProblem> {
        match self {
            AcmeError::Problem(p) => Some(p),
            _ => None,
        }
    }

    fn from_lib(error: instant_acme::Error) -> AcmeError {
        match error {
            instant_acme::Error::Api(p) => AcmeError::Problem(AcmeProblem::from_lib(&p)),
            instant_acme::Error::Other(inner) => {
                match inner.downcast::<client::TransportFailure>() {
                    Ok(failure) => AcmeError::Unreachable {
                        url: failure.url,
                        error: Box::new(failure.error),
                    },
                    Err(other) => AcmeError::Client(other.to_string()),
                }
            }
            instant_acme::Error::Json(e) => AcmeError::NotAcme(e.to_string()),
            instant_acme::Error::InvalidUri(e) => AcmeError::NotAcme(e.to_string()),
            instant_acme::Error::Timeout(_) => AcmeError::Timeout {
                waiting_for: "ready",
                within: DEFAULT_WAIT,
            },
            other => AcmeError::Client(other.to_string()),
        }
    }
}

/// An open ACME account.
#[derive(Clone)]
pub struct AcmeAccount {
    account: Account,
}

impl std::fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("id", &self.account.id())
            .finish_non_exhaustive()
    }
}

impl AcmeAccount {
    /// Registers a new account with the CA (agreeing to its terms, with
    /// `email` as contact when given) and returns it with its sealed
    /// credentials, which are what the caller stores.
    pub async fn register(
        directory: &AcmeDirectory,
        email: Option<&str>,
        kek: &Kek,
    ) -> Result<(AcmeAccount, SealedAccount), AcmeError> {
        fresh_nonce_retry(|| Self::register_once(directory, email, kek)).await
    }

    async fn register_once(
        directory: &AcmeDirectory,
        email: Option<&str>,
        kek: &Kek,
    ) -> Result<(AcmeAccount, SealedAccount), AcmeError> {
        let contact = email.map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(http_client(directory)?)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.url.clone(),
                None,
            )
            .await
            .map_err(AcmeError::from_lib)?;
        let plain =
            serde_json::to_vec(&credentials).map_err(|e| AcmeError::Credentials(e.to_string()))?;
        let sealed = kek.seal(SEAL_ACME_ACCOUNT, &plain)?;
        Ok((AcmeAccount { account }, SealedAccount(sealed)))
    }

    /// Opens sealed credentials (no request to the CA but its directory).
    pub async fn open(
        directory: &AcmeDirectory,
        sealed: &SealedAccount,
        kek: &Kek,
    ) -> Result<AcmeAccount, AcmeError> {
        let plain = kek.open(SEAL_ACME_ACCOUNT, &sealed.0)?;
        let credentials: AccountCredentials =
            serde_json::from_slice(&plain).map_err(|e| AcmeError::Credentials(e.to_string()))?;
        let account = Account::builder_with_http(http_client(directory)?)
            .from_credentials(credentials)
            .await
            .map_err(AcmeError::from_lib)?;
        Ok(AcmeAccount { account })
    }

    /// The account's URL at the CA.
    pub fn id(&self) -> &str {
        self.account.id()
    }

    /// A new order for `names`, with the http-01 challenges to provision.
    pub async fn order(&self, names: &[String]) -> Result<PendingOrder, AcmeError> {
        fresh_nonce_retry(|| self.order_once(names)).await
    }

    async fn order_once(&self, names: &[String]) -> Result<PendingOrder, AcmeError> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(AcmeError::from_lib)?;
        let mut challenges = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::from_lib)?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::OrderFailed {
                        status: format!("with the authorization for {name} {other:?}"),
                    });
                }
            }
            let challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::NoHttp01(name.clone()))?;
            challenges.push(Http01Challenge {
                name,
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_owned(),
            });
        }
        Ok(PendingOrder {
            url: order.url().to_owned(),
            challenges,
        })
    }

    /// Tells the CA that every pending http-01 challenge of the order is
    /// provisioned, so it validates them.
    pub async fn challenges_ready(&self, order_url: &str) -> Result<(), AcmeError> {
        fresh_nonce_retry(|| self.challenges_ready_once(order_url)).await
    }

    async fn challenges_ready_once(&self, order_url: &str) -> Result<(), AcmeError> {
        let mut order = self
            .account
            .order(order_url.to_owned())
            .await
            .map_err(AcmeError::from_lib)?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::from_lib)?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or(AcmeError::NoHttp01(name))?;
            challenge.set_ready().await.map_err(AcmeError::from_lib)?;
        }
        Ok(())
    }

    /// Waits (at most `wait` in all) for the CA to validate, sends the CSR
    /// (DER) and returns the issued chain (PEM, leaf first). A failed
    /// validation comes back as the challenge's own problem document.
    pub async fn finalize(
        &self,
        order_url: &str,
        csr_der: &[u8],
        wait: Duration,
    ) -> Result<String, AcmeError> {
        fresh_nonce_retry(|| self.finalize_once(order_url, csr_der, wait)).await
    }

    async fn finalize_once(
        &self,
        order_url: &str,
        csr_der: &[u8],
        wait: Duration,
    ) -> Result<String, AcmeError> {
        let mut order = self
            .account
            .order(order_url.to_owned())
            .await
            .map_err(AcmeError::from_lib)?;
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(wait);
        // A second call for an order already finalized (its answer was
        // lost, or the wait ran out while the CA issued) only downloads.
        if matches!(
            order.state().status,
            OrderStatus::Processing | OrderStatus::Valid
        ) {
            return match order.poll_certificate(&retries).await {
                Ok(chain) => Ok(chain),
                Err(instant_acme::Error::Timeout(_)) => Err(AcmeError::Timeout {
                    waiting_for: "valid",
                    within: wait,
                }),
                Err(e) => Err(AcmeError::from_lib(e)),
            };
        }
        let status = match order.poll_ready(&retries).await {
            Ok(status) => status,
            Err(instant_acme::Error::Timeout(_)) => {
                return Err(AcmeError::Timeout {
                    waiting_for: "ready",
                    within: wait,
                });
            }
            Err(instant_acme::Error::Api(p)) => {
                return Err(self
                    .why_invalid(order_url, Some(AcmeProblem::from_lib(&p)))
                    .await);
            }
            Err(e) => return Err(AcmeError::from_lib(e)),
        };
        if status != OrderStatus::Ready {
            return Err(self.why_invalid(order_url, None).await);
        }
        order
            .finalize_csr(csr_der)
            .await
            .map_err(AcmeError::from_lib)?;
        match order.poll_certificate(&retries).await {
            Ok(chain) => Ok(chain),
            Err(instant_acme::Error::Timeout(_)) => Err(AcmeError::Timeout {
                waiting_for: "valid",
                within: wait,
            }),
            Err(e) => Err(AcmeError::from_lib(e)),
        }
    }

    /// The problem of an invalid order: its own (or `given`), with each
    /// failed challenge's problem added as a subproblem naming its
    /// identifier (pebble and Boulder put the validator's words there);
    /// without an order problem, the first challenge's stands for it.
    async fn why_invalid(&self, order_url: &str, given: Option<AcmeProblem>) -> AcmeError {
        let mut order = match self.account.order(order_url.to_owned()).await {
            Ok(order) => order,
            Err(e) => return given.map_or_else(|| AcmeError::from_lib(e), AcmeError::Problem),
        };
        let mut top = given.or_else(|| order.state().error.as_ref().map(AcmeProblem::from_lib));
        let mut failed = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let Ok(authz) = authz else { break };
            let name = authz.identifier().to_string();
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    let problem = AcmeProblem::from_lib(problem);
                    failed.push(AcmeSubproblem {
                        identifier: Some(name.clone()),
                        kind: problem.kind.clone(),
                        detail: problem.detail.clone(),
                    });
                    if top.is_none() {
                        top = Some(problem);
                    }
                }
            }
        }
        match top {
            Some(mut problem) => {
                if problem.subproblems.is_empty() {
                    problem.subproblems = failed;
                }
                AcmeError::Problem(problem)
            }
            None => AcmeError::OrderFailed {
                status: "invalid".to_owned(),
            },
        }
    }

    /// Asks the CA to revoke a certificate this account ordered (RFC 8555
    /// §7.6), with an RFC 5280 reason code. `Ok(false)` when the CA says
    /// it is revoked already.
    pub async fn revoke(&self, cert_der: &[u8], reason: u8) -> Result<bool, AcmeError> {
        fresh_nonce_retry(|| self.revoke_once(cert_der, reason)).await
    }

    async fn revoke_once(&self, cert_der: &[u8], reason: u8) -> Result<bool, AcmeError> {
        use instant_acme::RevocationReason as R;
        let reason = match reason {
            1 => R::KeyCompromise,
            3 => R::AffiliationChanged,
            4 => R::Superseded,
            5 => R::CessationOfOperation,
            9 => R::PrivilegeWithdrawn,
            _ => R::Unspecified,
        };
        let der = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        match self
            .account
            .revoke(&instant_acme::RevocationRequest {
                certificate: &der,
                reason: Some(reason),
            })
            .await
        {
            Ok(()) => Ok(true),
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:alreadyRevoked") =>
            {
                Ok(false)
            }
            Err(e) => Err(AcmeError::from_lib(e)),
        }
    }

    /// The CA's renewal information for a certificate it issued (RFC
    /// 9773), or `None` when its directory offers no `renewalInfo`.
    pub async fn renewal_info(
        &self,
        cert_der: &[u8],
    ) -> Result<Option<ari::RenewalInfo>, AcmeError> {
        fresh_nonce_retry(|| self.renewal_info_once(cert_der)).await
    }

    async fn renewal_info_once(
        &self,
        cert_der: &[u8],
    ) -> Result<Option<ari::RenewalInfo>, AcmeError> {
        let id = ari::cert_id(cert_der).map_err(|e| AcmeError::Client(e.to_string()))?;
        let parsed = instant_acme::CertificateIdentifier {
            authority_key_identifier: id.aki.into(),
            serial: id.serial.into(),
        };
        match self.account.renewal_info(&parsed).await {
            Ok((info, _retry_after)) => Ok(Some(ari::RenewalInfo {
                window: ari::Window {
                    start: info.suggested_window.start,
                    end: info.suggested_window.end,
                },
                explanation_url: info.explanation_url,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(AcmeError::from_lib(e)),
        }
    }
}

/// How many times a step is sent again after the CA refused its nonce,
/// on top of the three sends instant-acme makes per request. RFC 8555
/// §6.5 tells clients to retry `badNonce`; CAs reject nonces under load or
/// after a restart (pebble rejects 5% of good nonces on purpose).
const BAD_NONCE_RETRIES: usize = 4;

/// Runs one ACME step, sending it again (with fresh nonces) while the CA
/// answers `badNonce`, at most [`BAD_NONCE_RETRIES`] more times. Every
/// step is safe to repeat: a refused request was not processed, and each
/// step re-reads the order's state before it acts.
async fn fresh_nonce_retry<T, F, Fut>(mut step: F) -> Result<T, AcmeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AcmeError>>,
{
    let mut left = BAD_NONCE_RETRIES;
    loop {
        match step().await {
            Err(e) if e.is_bad_nonce() && left > 0 => {
                left -= 1;
            }
            other => return other,
        }
    }
}

/// Reads the chain an ACME CA returned (hostile until checked) as the
/// certificate for `csr`: PEM certificates, leaf first, at most
/// [`MAX_CHAIN_CERTS`]; the leaf must carry exactly the CSR's names and
/// its public key. A CA that answers anything else gets
/// [`AcmeError::BadChain`] and nothing is deployed.
pub fn issued_from_chain(chain_pem: &str, csr: &CsrRequest) -> Result<Issued, AcmeError> {
    let bad = |why: String| AcmeError::BadChain(why);
    if chain_pem.len() > MAX_CHAIN_BYTES {
        return Err(bad(format!(
            "{} bytes of chain (at most {MAX_CHAIN_BYTES})",
            chain_pem.len()
        )));
    }
    let blocks = pem::parse_many(chain_pem).map_err(|e| bad(format!("not PEM: {e}")))?;
    let certs: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
    if certs.is_empty() || certs.len() > MAX_CHAIN_CERTS {
        return Err(bad(format!(
            "{} certificates (expected 1 to {MAX_CHAIN_CERTS})",
            certs.len()
        )));
    }
    let leaf_der = certs[0].contents().to_vec();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der)
        .map_err(|e| bad(format!("the leaf is not X.509: {e}")))?;
    for (i, c) in certs.iter().enumerate().skip(1) {
        x509_parser::parse_x509_certificate(c.contents())
            .map_err(|e| bad(format!("certificate {i} of the chain is not X.509: {e}")))?;
    }
    use x509_parser::prelude::FromDer as _;
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr.der)
            .map_err(|e| bad(format!("the CSR no longer parses: {e}")))?;
    if leaf.public_key().raw != request.certification_request_info.subject_pki.raw {
        return Err(bad("the leaf's key is not the CSR's".to_owned()));
    }
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => return Err(bad("an IP address name of odd length".to_owned())),
                },
                other => return Err(bad(format!("an unexpected name {other}"))),
            }
        }
    }
    let mut got = names.clone();
    got.sort();
    got.dedup();
    let mut want = csr.names.clone();
    want.sort();
    if got != want {
        return Err(bad(format!("names {got:?}, the order asked for {want:?}")));
    }
    let chain_pem: String = certs[1..].iter().map(|c| pem::encode(c)).collect();
    Ok(Issued {
        cert_pem: pem::encode(certs[0]),
        fingerprint: tether_x509::fingerprint(&leaf_der),
        serial: crate::ca::hex_lower(leaf.raw_serial()),
        names,
        not_before: leaf.validity().not_before.to_datetime(),
        not_after: leaf.validity().not_after.to_datetime(),
        cert_der: leaf_der,
        chain_pem,
    })
}

/// The longest chain an ACME CA may return, in bytes and certificates.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;
pub const MAX_CHAIN_CERTS: usize = 8;

fn http_client(directory: &AcmeDirectory) -> Result<Box<client::TransportHttp>, AcmeError> {
    let config = TransportConfig {
        trust: TrustConfig {
            ca_pem: directory.ca_pem.clone(),
            ..TrustConfig::default()
        },
        ..TransportConfig::default()
    };
    let transport = Transport::new(config).map_err(|error| AcmeError::Unreachable {
        url: directory.url.clone(),
        error: Box::new(error),
    })?;
    Ok(Box::new(client::TransportHttp { transport }))
}
