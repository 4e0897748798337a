//! The built-in CA on the control plane, and what deploys report back.
//!
//! - `load`: at start, opens the intermediate under `DATA_DIR/ca` with the
//!   KEK (`TETHER_CA_KEY`, else `DATA_DIR/ca.kek`); warns when the root's
//!   key is still on this disk (TETHER-E8406). Without a CA, issuance
//!   answers TETHER-E8405 and nothing else changes.
//! - `issue`: the CSR of a leased `deploy` task, checked against the names
//!   the task allows, signed, and recorded (`issued_certs`).
//! - `record`: a deploy's report (a result chunk), kept per transaction
//!   (`cert_deployments`); a verified deploy's handshake goes into the
//!   inventory as a sighting, like a discovery scan's.
//! - `history`: one certificate's issuance, deploys and locations.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tether_pki::ca::{self, CaFiles};
use tether_pki::{IssuingCa, Kek, csr};
use tether_store::AgentRecord;
use tether_tasks::TaskSnapshot;
use tether_wire::{
    CertHistory, DeployReport, DeploymentRecord, ErrorCode, IssueRequest, IssueResponse,
    IssuedCert, MAX_CERT_LOCATIONS, TaskKind,
};
use tracing::{info, warn};
use uuid::Uuid;

pub use super::acme::IssueReply;
use super::tasks::{not_found, refused};
use super::{Ctx, ServiceError};

/// The most deploys a history lists.
pub const MAX_HISTORY: u32 = 200;
/// Validity when the spec names none, in days.
pub const DEFAULT_DAYS: u32 = 90;

/// The CA's files under the data dir.
pub fn files(data_dir: &Path) -> CaFiles {
    CaFiles::new(data_dir.join("ca"))
}

/// The KEK file used when `TETHER_CA_KEY` is not set.
pub fn kek_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("ca.kek")
}

/// Opens the CA if it was initialized; logs why not otherwise.
pub fn load(data_dir: &Path) -> Option<Arc<IssuingCa>> {
    let files = files(data_dir);
    if let Some(root) = files.root_key_online() {
        let code = ErrorCode::CaRootKeyOnline;
        warn!(code = %code, key = %root.display(), action = code.action(), "{}", code.problem());
    }
    if !files.is_initialized() {
        info!(dir = %files.dir.display(), "no built-in CA (run `tether certs ca init` to create one); deploy tasks cannot be issued");
        return None;
    }
    let env = std::env::var(tether_pki::seal::KEK_ENV).ok();
    let opened = Kek::load(env.as_deref(), &kek_file(data_dir))
        .map_err(tether_pki::CaError::from)
        .and_then(|kek| ca::open(&files, &kek));
    match opened {
        Ok(ca) => {
            info!(dir = %files.dir.display(), "the built-in CA's intermediate is open");
            Some(Arc::new(ca))
        }
        Err(error) => {
            let code = ErrorCode::CaNotInitialized;
            warn!(code = %code, error = %error, action = code.action(), "the built-in CA cannot be opened");
            None
        }
    }
}

/// Checks a deploy's issuer when the task is created: an `acme:NAME` must
/// be registered here (a typo is refused at once rather than at the
/// agent's first issue call).
pub(crate) async fn check_issuer(
    ctx: &Ctx,
    spec: &tether_deploy::DeploySpec,
) -> Result<(), ServiceError> {
    match spec.issuer().map_err(ServiceError::DeploySpec)? {
        tether_deploy::spec::Issuer::Builtin => Ok(()),
        tether_deploy::spec::Issuer::Acme(name) => {
            if ctx.store.acme_issuer(&name).await?.is_none() {
                return Err(ServiceError::Acme(
                    ErrorCode::AcmeIssuerUnknown,
                    format!("no ACME issuer named {name:?} is registered (tether certs acme list)"),
                ));
            }
            Ok(())
        }
    }
}

/// Issues for a `deploy` task leased to `agent` at `req.epoch`: the
/// built-in CA signs its CSR, or an ACME CA is ordered from (see
/// [`super::acme::issue`], which may first answer with challenges).
pub async fn issue(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    req: IssueRequest,
) -> Result<IssueReply, ServiceError> {
    let task = ctx.store.task(id).await?.ok_or_else(|| not_found(id))?;
    if task.kind != TaskKind::Deploy {
        return Err(ServiceError::invalid(
            "task",
            task.kind.as_str(),
            "a deploy task",
        ));
    }
    // The same fence as a result: leased to this agent, at this epoch.
    task.accept_result(agent.id, req.epoch)
        .map_err(refused(id))?;
    let spec =
        tether_deploy::DeploySpec::from_json(&task.spec).map_err(ServiceError::DeploySpec)?;
    if let tether_deploy::spec::Issuer::Acme(name) =
        spec.issuer().map_err(ServiceError::DeploySpec)?
    {
        return super::acme::issue(ctx, agent, id, &spec, &name, req).await;
    }
    builtin(ctx, agent, id, &spec, req)
        .await
        .map(IssueReply::Issued)
}

/// The built-in CA signs the checked CSR.
async fn builtin(
    ctx: &Ctx,
    agent: &AgentRecord,
    id: Uuid,
    spec: &tether_deploy::DeploySpec,
    req: IssueRequest,
) -> Result<IssueResponse, ServiceError> {
    let Some(ca) = ctx.ca.as_ref() else {
        return Err(ServiceError::CaUnavailable(
            "no built-in CA is open on this server".to_owned(),
        ));
    };
    let checked = csr::check(req.csr_pem.as_bytes(), &spec.names).map_err(ServiceError::Csr)?;
    // A renewal's task is issued once (see `renewal::gate_issue`).
    let gate = super::renewal::gate_issue(ctx, id, &checked.der).await?;
    if let super::renewal::Gate::Again(response) = gate {
        return Ok(response);
    }
    let claimed = matches!(gate, super::renewal::Gate::Claimed);
    // Certificates are judged by clients against their own wall clocks, so
    // validity comes from the real time (as the server's TLS identity's).
    let now = time::OffsetDateTime::now_utc();
    let issued = match ca.sign(&checked, spec.days.unwrap_or(DEFAULT_DAYS), now) {
        Ok(issued) => issued,
        Err(e) => {
            if claimed {
                super::renewal::issue_failed(ctx, id).await;
            }
            return Err(ServiceError::CaUnavailable(e.to_string()));
        }
    };
    info!(task_id = %id, agent_id = %agent.id, key = %checked.key, "the built-in CA signed a CSR");
    record_and_answer(
        ctx,
        Issuance {
            task_id: id,
            agent_id: agent.id,
            issued,
            issuer: None,
            renewal_window: None,
            claimed,
        },
    )
    .await
}

/// A certificate a CA (the built-in one or an ACME CA) issued for a task.
pub(crate) struct Issuance {
    pub task_id: Uuid,
    pub agent_id: Uuid,
    pub issued: tether_pki::Issued,
    /// `acme:NAME`; `None` for the built-in CA.
    pub issuer: Option<String>,
    pub renewal_window: Option<tether_wire::RenewalWindowSeen>,
    /// Whether the call holds a renewal's issue claim.
    pub claimed: bool,
}

/// Records the certificate (`issued_certs`) and answers with it; completes
/// a renewal's claim, or releases it when the store fails.
pub(crate) async fn record_and_answer(
    ctx: &Ctx,
    i: Issuance,
) -> Result<IssueResponse, ServiceError> {
    let issued = i.issued;
    let record = IssuedCert {
        fingerprint: issued.fingerprint.clone(),
        serial: issued.serial.clone(),
        names: issued.names.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        issued_at: ctx.now(),
        task_id: Some(i.task_id),
        agent_id: Some(i.agent_id),
        issuer: i.issuer,
        renewal_window: i.renewal_window,
    };
    if let Err(e) = ctx.store.record_issued(&record, &issued.cert_pem).await {
        if i.claimed {
            super::renewal::issue_failed(ctx, i.task_id).await;
        }
        return Err(e.into());
    }
    info!(task_id = %i.task_id, agent_id = %i.agent_id, issuer = record.issuer.as_deref().unwrap_or("builtin"), fingerprint = %issued.fingerprint, serial = %issued.serial, names = ?issued.names, "issued a certificate");
    let response = IssueResponse {
        cert_pem: issued.cert_pem,
        chain_pem: issued.chain_pem,
        fingerprint: issued.fingerprint,
        serial: issued.serial,
        not_after: issued.not_after,
    };
    if i.claimed {
        super::renewal::issued(ctx, i.task_id, &response).await?;
    }
    Ok(response)
}

/// A deploy task's result chunk: `{"report": DeployReport, "seen": [...]}`.
/// The report is kept once per transaction; `seen` (the scanner's endpoint
/// results of the verifying handshake) feeds the inventory.
pub async fn record(
    ctx: &Ctx,
    agent: &AgentRecord,
    task: &TaskSnapshot,
    epoch: u64,
    items: &Value,
) -> Result<(), ServiceError> {
    let task_id = task.id;
    if let Some(seen) = items.get("seen") {
        super::certs::ingest(ctx, agent, task, epoch, seen).await?;
    }
    let Some(report) = items.get("report") else {
        return Ok(());
    };
    let report: DeployReport = match serde_json::from_value(report.clone()) {
        Ok(r) => r,
        Err(error) => {
            warn!(task_id = %task_id, agent_id = %agent.id, error = %error, "a deploy report the server could not read");
            return Ok(());
        }
    };
    // Where a verified deploy put a certificate is where it is renewed.
    super::renewal::remember(ctx, task, agent.id, &report).await?;
    ctx.store
        .record_deployment(&DeploymentRecord {
            task_id,
            agent_id: agent.id,
            at: ctx.now(),
            report,
        })
        .await?;
    Ok(())
}

/// One certificate's issuance, deploys and locations.
pub async fn history(ctx: &Ctx, text: &str) -> Result<CertHistory, ServiceError> {
    let fp = super::certs::fingerprint(text)?;
    let issued = ctx.store.issued_cert(&fp).await?;
    let deployments = ctx.store.deployments(&fp, MAX_HISTORY).await?;
    let seen_at = ctx.store.cert_locations(&fp, MAX_CERT_LOCATIONS).await?;
    let renewals = super::renewal::of(ctx, &fp).await?;
    if issued.is_none() && deployments.is_empty() && seen_at.is_empty() && renewals.is_empty() {
        return Err(ServiceError::NotFound {
            what: "certificate",
            id: fp,
        });
    }
    Ok(CertHistory {
        fingerprint: fp,
        issued,
        deployments,
        seen_at,
        renewals,
    })
}
