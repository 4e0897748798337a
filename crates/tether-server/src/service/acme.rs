//! ACME issuers and issuance through them (issue #10, docs/pki.md "ACME").
//!
//! - The registry: `add` registers an account with the CA (through the
//!   transport, from this server: the server is what orders later) and
//!   stores it sealed with the KEK; `list` and `remove`.
//! - `issue`: a leased `deploy` task whose spec names `acme:NAME`, in two
//!   calls from the provisioning agent. The first opens an order and answers
//!   202 with its http-01 challenges and an *order handle*: the order's URL,
//!   task, epoch and issuer sealed with the KEK, so an agent can only ever
//!   finalize the order this server opened for its own lease. The agent
//!   serves the challenges on the target host and calls again with the
//!   handle; the server tells the CA to validate, finalizes with the agent's
//!   CSR (the key never leaves the agent's host) and answers the chain. A
//!   CA slower than [`FINALIZE_WAIT`] gets another 202 with the same handle:
//!   the agent keeps serving and asks again, so no request is held longer
//!   than the agent's HTTP timeout.
//! - `refresh_windows`: the CA's suggested renewal windows (RFC 9773) for
//!   the certificates it issued, read at issuance and again once a day.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tether_pki::acme::{AcmeAccount, AcmeDirectory, AcmeError, SealedAccount};
use tether_pki::{Kek, csr};
use tether_store::{AcmeIssuer, AgentRecord};
use tether_wire::{
    AcmeIssuerAdd, AcmeIssuerInfo, ErrorCode, IssuePending, IssueRequest, IssueResponse,
    IssuedCert, RenewalWindowSeen,
};
use time::OffsetDateTime;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Ctx, ServiceError};

/// The longest the server waits for the CA within one issue call, before
/// answering "still validating" (202 with the same order).
pub const FINALIZE_WAIT: Duration = Duration::from_secs(20);
/// The sealing purpose of an order handle.
const SEAL_ORDER: &str = "acme-order";
/// The longest order handle accepted from an agent.
const MAX_HANDLE: usize = 4096;
/// The longest directory URL, contact and CA PEM accepted.
const MAX_URL: usize = 2048;
const MAX_CA_PEM: usize = 64 * 1024;
/// How often a certificate's renewal window is read again from its CA.
pub const WINDOW_REFRESH: time::Duration = time::Duration::hours(24);
/// The most renewal windows one scheduler tick reads.
pub const WINDOWS_PER_TICK: usize = 50;

/// The KEK that seals ACME accounts and order handles, when this server
/// has one: `TETHER_CA_KEY`, else `DATA_DIR/ca.kek` (the built-in CA's).
/// Registering the first issuer on a server without either creates the
/// file, as `tether certs ca init` does.
#[derive(Debug, Default)]
pub struct Acme {
    data_dir: Option<PathBuf>,
    kek: RwLock<Option<Arc<Kek>>>,
}

impl Acme {
    /// Loads the KEK if there is one; a server without it still starts and
    /// answers ACME requests with TETHER-E8435.
    pub fn load(data_dir: &Path) -> Acme {
        let env = std::env::var(tether_pki::seal::KEK_ENV).ok();
        let file = super::issuance::kek_file(data_dir);
        let kek = if env.is_some() || file.exists() {
            match Kek::load(env.as_deref(), &file) {
                Ok(k) => Some(Arc::new(k)),
                Err(error) => {
                    let code = ErrorCode::AcmeKekUnavailable;
                    warn!(code = %code, error = %error, action = code.action(), "ACME issuers cannot be used");
                    None
                }
            }
        } else {
            None
        };
        Acme {
            data_dir: Some(data_dir.to_owned()),
            kek: RwLock::new(kek),
        }
    }

    fn kek(&self) -> Result<Arc<Kek>, ServiceError> {
        self.kek
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                ServiceError::Acme(
                    ErrorCode::AcmeKekUnavailable,
                    "no TETHER_CA_KEY and no key file on this server".to_owned(),
                )
            })
    }

    /// The KEK, created as `DATA_DIR/ca.kek` (0600) when there is none.
    fn kek_or_create(&self) -> Result<Arc<Kek>, ServiceError> {
        let mut slot = self
            .kek
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let unavailable = |why: String| ServiceError::Acme(ErrorCode::AcmeKekUnavailable, why);
        let dir = self
            .data_dir
            .as_ref()
            .ok_or_else(|| unavailable("this server has no data dir".to_owned()))?;
        let file = super::issuance::kek_file(dir);
        let kek = if file.exists() {
            Kek::load(None, &file)
        } else {
            Kek::generate_file(&file)
        }
        .map_err(|e| unavailable(e.to_string()))?;
        warn!(file = %file.display(), "created the key-encryption key that seals ACME accounts; keep a copy apart from the database backups (or move it to TETHER_CA_KEY)");
        let kek = Arc::new(kek);
        *slot = Some(kek.clone());
        Ok(kek)
    }
}

fn acme_error(e: AcmeError) -> ServiceError {
    let code = e.code();
    ServiceError::Acme(code, e.to_string())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!("{} characters", value.chars().count()),
            format!("1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

fn info(i: &AcmeIssuer, account: Option<String>) -> AcmeIssuerInfo {
    AcmeIssuerInfo {
        name: i.name.clone(),
        directory: i.directory.clone(),
        contact: i.contact.clone(),
        private_ca: i.ca_pem.is_some(),
        account,
        created_at: i.created_at,
    }
}

fn directory_of(i: &AcmeIssuer) -> AcmeDirectory {
    AcmeDirectory {
        url: i.directory.clone(),
        ca_pem: i.ca_pem.as_ref().map(|p| p.as_bytes().to_vec()),
    }
}

/// Registers an account with the CA and stores the issuer.
pub async fn add(ctx: &Ctx, req: AcmeIssuerAdd) -> Result<AcmeIssuerInfo, ServiceError> {
    if !tether_deploy::spec::issuer_name_is_valid(&req.name) {
        return Err(ServiceError::invalid(
            "name",
            format!("{:?}", req.name),
            "1 to 63 of a-z, 0-9 and '-', not starting with '-'",
        ));
    }
    check_text("directory", &req.directory, MAX_URL)?;
    match url::Url::parse(&req.directory) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => {
            return Err(ServiceError::invalid(
                "directory",
                format!("{:?}", req.directory),
                "an https:// URL of the ACME directory",
            ));
        }
    }
    if let Some(email) = &req.email {
        check_text("email", email, 254)?;
        if !email.contains('@') || email.contains(char::is_whitespace) || email.contains(',') {
            return Err(ServiceError::invalid(
                "email",
                format!("{email:?}"),
                "one email address",
            ));
        }
    }
    if let Some(pem) = &req.ca_pem {
        let certs = if pem.len() > MAX_CA_PEM {
            0
        } else {
            pem::parse_many(pem)
                .map(|b| b.iter().filter(|p| p.tag() == "CERTIFICATE").count())
                .unwrap_or(0)
        };
        if certs == 0 {
            return Err(ServiceError::invalid(
                "ca_pem",
                format!("{} bytes", pem.len()),
                format!("PEM certificates, at most {MAX_CA_PEM} bytes"),
            ));
        }
    }
    if ctx.store.acme_issuer(&req.name).await?.is_some() {
        return Err(ServiceError::Conflict(format!(
            "an ACME issuer named {:?} exists; remove it first",
            req.name
        )));
    }
    let kek = ctx.acme.kek_or_create()?;
    let directory = AcmeDirectory {
        url: req.directory.clone(),
        ca_pem: req.ca_pem.as_ref().map(|p| p.as_bytes().to_vec()),
    };
    let (account, sealed) = AcmeAccount::register(&directory, req.email.as_deref(), &kek)
        .await
        .map_err(acme_error)?;
    let issuer = AcmeIssuer {
        name: req.name.clone(),
        directory: req.directory,
        ca_pem: req.ca_pem,
        contact: req.email,
        sealed_account: sealed.0,
        created_at: ctx.now(),
    };
    ctx.store.insert_acme_issuer(&issuer).await?;
    info!(issuer = %issuer.name, directory = %issuer.directory, account = %account.id(), "registered an ACME issuer");
    Ok(info(&issuer, Some(account.id().to_owned())))
}

pub async fn list(ctx: &Ctx) -> Result<Vec<AcmeIssuerInfo>, ServiceError> {
    Ok(ctx
        .store
        .acme_issuers()
        .await?
        .iter()
        .map(|i| info(i, None))
        .collect())
}

/// Removes an issuer. Renewals that name it fail with TETHER-E8432 and
/// say so, until their policy names another.
pub async fn remove(ctx: &Ctx, name: &str) -> Result<(), ServiceError> {
    if !ctx.store.remove_acme_issuer(name).await? {
        return Err(ServiceError::NotFound {
            what: "ACME issuer",
            id: name.to_owned(),
        });
    }
    info!(issuer = %name, "removed an ACME issuer");
    Ok(())
}

/// Whether `acme:NAME` can issue on this server; `None` when it can.
pub async fn problem(ctx: &Ctx, name: &str) -> Result<Option<(ErrorCode, String)>, ServiceError> {
    if ctx.store.acme_issuer(name).await?.is_none() {
        return Ok(Some((
            ErrorCode::AcmeIssuerUnknown,
            format!("no ACME issuer named {name:?} is registered"),
        )));
    }
    if let Err(e) = ctx.acme.kek() {
        return Ok(Some((e.code(), e.to_string())));
    }
    Ok(None)
}

async fn open(ctx: &Ctx, name: &str) -> Result<(AcmeIssuer, AcmeAccount, Arc<Kek>), ServiceError> {
    let issuer = ctx.store.acme_issuer(name).await?.ok_or_else(|| {
        ServiceError::Acme(
            ErrorCode::AcmeIssuerUnknown,
            format!("no ACME issuer named {name:?} is registered"),
        )
    })?;
    let kek = ctx.acme.kek()?;
    let account = AcmeAccount::open(
        &directory_of(&issuer),
        &SealedAccount(issuer.sealed_account.clone()),
        &kek,
    )
    .await
    .map_err(acme_error)?;
    Ok((issuer, account, kek))
}

/// What an order handle seals.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Handle {
    task: Uuid,
    epoch: u64,
    issuer: String,
    url: String,
}

fn seal_handle(kek: &Kek, h: &Handle) -> Result<String, ServiceError> {
    let plain = serde_json::to_vec(h)
        .map_err(|e| ServiceError::Acme(ErrorCode::AcmeServerError, e.to_string()))?;
    let sealed = kek
        .seal(SEAL_ORDER, &plain)
        .map_err(|e| ServiceError::Acme(ErrorCode::AcmeKekUnavailable, e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(sealed))
}

fn open_handle(kek: &Kek, text: &str, want: &Handle) -> Result<Handle, ServiceError> {
    let invalid = |why: &str| ServiceError::Acme(ErrorCode::AcmeOrderHandleInvalid, why.to_owned());
    if text.len() > MAX_HANDLE {
        return Err(invalid("the order handle is too long"));
    }
    let sealed = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid("the order handle is not base64url"))?;
    let plain = kek
        .open(SEAL_ORDER, &sealed)
        .map_err(|_| invalid("the order handle does not open with this server's KEK"))?;
    let h: Handle =
        serde_json::from_slice(&plain).map_err(|_| invalid("the order handle is malformed"))?;
    if h.task != want.task || h.epoch != want.epoch || h.issuer != want.issuer {
        return Err(invalid(&format!(
            "the order was opened for task {} at epoch {} through acme:{}, not this lease",
            h.task, h.epoch, h.issuer
        )));
    }
    Ok(h)
}

/// What an issue call answers: the certificate, or the challenges to
/// serve first.
#[derive(Debug)]
pub enum IssueReply {
    Issued(IssueResponse),
    Pending(IssuePending),
}

/// One issue call of a deploy task whose issuer is `acme:NAME`.
pub async fn issue(
    ctx: &Ctx,
    agent: &AgentRecord,
    task_id: Uuid,
    spec: &tether_deploy::DeploySpec,
    name: &str,
    req: IssueRequest,
) -> Result<IssueReply, ServiceError> {
    if !req.http01 {
        return Err(ServiceError::Acme(
            ErrorCode::AcmeAgentCannotAnswer,
            format!(
                "agent {} (version {}) does not answer ACME http-01 challenges",
                agent.id, agent.version
            ),
        ));
    }
    if spec.challenge.is_none() {
        return Err(ServiceError::Acme(
            ErrorCode::AcmeAgentCannotAnswer,
            "the deploy spec names no challenge (webroot or listener)".to_owned(),
        ));
    }
    // The CSR is checked before the CA hears of it, at both calls.
    let checked = csr::check(req.csr_pem.as_bytes(), &spec.names).map_err(ServiceError::Csr)?;
    let (issuer, account, kek) = open(ctx, name).await?;
    let want = Handle {
        task: task_id,
        epoch: req.epoch,
        issuer: name.to_owned(),
        url: String::new(),
    };
    let Some(text) = req.order.as_deref() else {
        let order = account.order(&spec.names).await.map_err(acme_error)?;
        info!(task_id = %task_id, agent_id = %agent.id, issuer = %name, order = %order.url, challenges = order.challenges.len(), "opened an ACME order");
        let handle = seal_handle(
            &kek,
            &Handle {
                url: order.url,
                ..want
            },
        )?;
        return Ok(IssueReply::Pending(IssuePending {
            order: handle,
            challenges: order.challenges,
        }));
    };
    let handle = open_handle(&kek, text, &want)?;
    let gate = super::renewal::gate_issue(ctx, task_id, &checked.der).await?;
    if let super::renewal::Gate::Again(response) = gate {
        return Ok(IssueReply::Issued(response));
    }
    let claimed = matches!(gate, super::renewal::Gate::Claimed);
    let release = |e: ServiceError| async move {
        if claimed {
            super::renewal::issue_failed(ctx, task_id).await;
        }
        e
    };
    if let Err(e) = account.challenges_ready(&handle.url).await {
        return Err(release(acme_error(e)).await);
    }
    let chain = match account
        .finalize(&handle.url, &checked.der, FINALIZE_WAIT)
        .await
    {
        Ok(chain) => chain,
        Err(AcmeError::Timeout { waiting_for, .. }) => {
            if claimed {
                super::renewal::issue_failed(ctx, task_id).await;
            }
            info!(task_id = %task_id, issuer = %name, waiting_for, "the ACME CA is still validating; the agent asks again");
            return Ok(IssueReply::Pending(IssuePending {
                order: text.to_owned(),
                challenges: Vec::new(),
            }));
        }
        Err(e) => return Err(release(acme_error(e)).await),
    };
    let issued = match tether_pki::acme::issued_from_chain(&chain, &checked) {
        Ok(i) => i,
        Err(e) => return Err(release(acme_error(e)).await),
    };
    // The CA's suggested window, when it offers one; a failure to read it
    // only means the policy decides until the next refresh.
    let window = read_window(&account, &issued.cert_der, &issued.fingerprint, ctx.now()).await;
    info!(task_id = %task_id, issuer = %name, directory = %issuer.directory, key = %checked.key, "an ACME CA issued for a CSR");
    let response = super::issuance::record_and_answer(
        ctx,
        super::issuance::Issuance {
            task_id,
            agent_id: agent.id,
            issued,
            issuer: Some(format!("acme:{name}")),
            renewal_window: window,
            claimed,
        },
    )
    .await?;
    Ok(IssueReply::Issued(response))
}

/// The CA's suggested renewal window for a certificate it issued, read
/// now; `None` when it offers none or cannot be asked (logged).
async fn read_window(
    account: &AcmeAccount,
    der: &[u8],
    fingerprint: &str,
    now: OffsetDateTime,
) -> Option<RenewalWindowSeen> {
    match account.renewal_info(der).await {
        Ok(Some(ari)) => Some(RenewalWindowSeen {
            start: ari.window.start,
            end: ari.window.end,
            checked_at: now,
        }),
        Ok(None) => None,
        Err(error) => {
            warn!(fingerprint = %fingerprint, error = %error, code = %error.code(), "could not read the ACME CA's renewal window");
            None
        }
    }
}

/// Revokes an ACME CA's certificate at that CA; whether this call did.
pub async fn revoke(
    ctx: &Ctx,
    cert: &IssuedCert,
    reason: tether_wire::RevocationReason,
) -> Result<bool, ServiceError> {
    let name = cert
        .issuer
        .as_deref()
        .and_then(|i| i.strip_prefix("acme:"))
        .unwrap_or_default();
    let (_, account, _) = open(ctx, name).await?;
    let pem = ctx
        .store
        .issued_cert_pem(&cert.fingerprint)
        .await?
        .unwrap_or_default();
    let der = pem::parse(pem)
        .map_err(|e| {
            ServiceError::Store(tether_store::StoreError::Corrupt(format!(
                "issued_certs.cert_pem of {}: {e}",
                cert.fingerprint
            )))
        })?
        .into_contents();
    account
        .revoke(&der, reason.code())
        .await
        .map_err(acme_error)
}

/// The renewal window to use for `cert`: the CA's (RFC 9773) as last read,
/// re-read when older than [`WINDOW_REFRESH`] and `budget` allows (each
/// read is a request to the CA). `None` for the built-in CA's certificates
/// and for a CA that offers none.
pub async fn window(
    ctx: &Ctx,
    cert: &IssuedCert,
    now: OffsetDateTime,
    budget: &mut usize,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let name = cert.issuer.as_deref()?.strip_prefix("acme:")?;
    let stale = cert
        .renewal_window
        .is_none_or(|w| now - w.checked_at >= WINDOW_REFRESH);
    if !stale || *budget == 0 {
        return cert.renewal_window.map(|w| (w.start, w.end));
    }
    *budget -= 1;
    let fresh = async {
        let (_, account, _) = open(ctx, name).await.ok()?;
        let pem = ctx.store.issued_cert_pem(&cert.fingerprint).await.ok()??;
        let der = pem::parse(pem).ok()?.into_contents();
        read_window(&account, &der, &cert.fingerprint, now).await
    }
    .await;
    match fresh {
        Some(w) => {
            if let Err(error) = ctx.store.set_renewal_window(&cert.fingerprint, &w).await {
                warn!(fingerprint = %cert.fingerprint, error = %error, "could not record the renewal window");
            }
            Some((w.start, w.end))
        }
        None => cert.renewal_window.map(|w| (w.start, w.end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(n: u8) -> Kek {
        Kek::from_base64(&base64::engine::general_purpose::STANDARD.encode([n; 32])).expect("kek")
    }

    fn handle() -> Handle {
        Handle {
            task: Uuid::from_u128(7),
            epoch: 3,
            issuer: "pebble".into(),
            url: "https://ca.test/order/1".into(),
        }
    }

    #[test]
    fn an_order_handle_opens_only_for_its_own_task_epoch_and_issuer() {
        let k = kek(1);
        let text = seal_handle(&k, &handle()).expect("seal");
        let want = Handle {
            url: String::new(),
            ..handle()
        };
        assert_eq!(open_handle(&k, &text, &want).expect("opens"), handle());
        for other in [
            Handle {
                task: Uuid::from_u128(8),
                ..handle()
            },
            Handle {
                epoch: 4,
                ..handle()
            },
            Handle {
                issuer: "other".into(),
                ..handle()
            },
        ] {
            let e = open_handle(&k, &text, &other).expect_err("another lease");
            assert_eq!(e.code(), ErrorCode::AcmeOrderHandleInvalid);
        }
    }

    #[test]
    fn an_altered_foreign_or_oversized_handle_is_refused_with_its_code() {
        let k = kek(1);
        let text = seal_handle(&k, &handle()).expect("seal");
        let want = handle();
        let mut altered = text.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        for bad in [
            altered.as_str(),
            "not base64 !",
            "",
            &"A".repeat(MAX_HANDLE + 1),
            // A handle sealed by a server with another KEK.
            &seal_handle(&kek(2), &handle()).expect("seal"),
            // The raw order URL an older agent or an attacker might send.
            "https://ca.test/order/1",
        ] {
            let e = open_handle(&k, bad, &want).expect_err("refused");
            assert_eq!(e.code(), ErrorCode::AcmeOrderHandleInvalid, "{bad}");
        }
    }
}
