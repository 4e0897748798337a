//! The `deploy` executor: a key and CSR made here (the key never leaves
//! this host), the certificate from the control plane's built-in CA or an
//! ACME CA (this agent serving the http-01 challenges on the target), then
//! the deploy transaction (`tether-deploy`). Its one result chunk holds the
//! report (steps, durations, redacted output, the code of a failure) and
//! the handshake that verified it, as the scanner's endpoint result, which the
//! server records in the inventory like a discovery scan's.

use serde_json::{Value, json};
use tether_client::IssueReply;
use tether_deploy::challenge::{self, Provisioned, Solver};
use tether_deploy::spec::ChallengeSpec;
use tether_deploy::{DeploySpec, Deployer, Material, keygen};
use tether_wire::{ErrorCode, IssueRequest, Outcome, TaskKind, TaskOutcome};

use super::executor::{Executor, Work};
use crate::run::BoxFuture;

pub struct DeployExecutor {
    deployer: Deployer,
}

impl DeployExecutor {
    /// Deploys journal under `state_dir/deploy`.
    pub fn new(state_dir: &std::path::Path) -> DeployExecutor {
        DeployExecutor {
            deployer: Deployer::new(state_dir),
        }
    }

    /// Finishes or rolls back a deploy a kill interrupted, so the PEM set
    /// is whole before anything else runs. Called once at start.
    pub async fn recover(&self) {
        match self.deployer.recover().await {
            Ok(reports) => {
                for r in reports {
                    tracing::warn!(id = %r.id, state = %r.state, code = ?r.failure.as_ref().map(|f| f.code.clone()), "finished a deploy interrupted by a restart");
                }
            }
            Err(crashed) => tracing::error!(point = %crashed.0, "deploy recovery stopped"),
        }
    }
}

fn failed(code: ErrorCode, message: impl std::fmt::Display) -> Option<TaskOutcome> {
    Some(TaskOutcome {
        outcome: Outcome::Failed,
        message: format!("{}: {message}", code.as_str())
            .chars()
            .take(1000)
            .collect(),
    })
}

/// The most issue calls of one ACME issuance: the order, then one per
/// "still validating" answer (each waits up to 20 s on the server).
const MAX_ACME_ROUNDS: usize = 12;

/// The certificate for this task's CSR: from the built-in CA in one call,
/// or from an ACME CA in several, serving the order's http-01 challenges
/// on this host (`tether_deploy::challenge`) until the CA has validated
/// them. The challenges are taken down however this ends.
async fn issue(
    work: &Work,
    spec: &DeploySpec,
    csr_pem: &str,
) -> Result<tether_wire::IssueResponse, (ErrorCode, String)> {
    let solver = match &spec.challenge {
        Some(ChallengeSpec::Webroot(dir)) => Some(Solver::Webroot(dir.clone())),
        Some(ChallengeSpec::Listener(port)) => Some(Solver::Listen(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            *port,
        )))),
        None => None,
    };
    let mut req = IssueRequest {
        epoch: work.lease.epoch,
        csr_pem: csr_pem.to_owned(),
        // This agent answers challenges when the spec says how.
        http01: solver.is_some(),
        order: None,
    };
    let mut served: Option<Provisioned> = None;
    for _ in 0..MAX_ACME_ROUNDS {
        let reply = work
            .client
            .issue_cert_reply(work.lease.task_id, &req)
            .await
            .map_err(|e| (issue_code(&e), e.to_string()))?;
        let pending = match reply {
            IssueReply::Issued(cert) => {
                if let Some(s) = served.take() {
                    s.remove();
                }
                return Ok(cert);
            }
            IssueReply::Pending(p) => p,
        };
        let Some(solver) = &solver else {
            return Err((
                ErrorCode::AcmeAgentCannotAnswer,
                "the server sent ACME challenges, but the deploy names no challenge".to_owned(),
            ));
        };
        let same_order = req.order.as_deref() == Some(pending.order.as_str());
        if !same_order || !pending.challenges.is_empty() {
            // A new order (or new challenges): serve exactly these.
            if let Some(s) = served.take() {
                s.remove();
            }
            match challenge::provision(solver, &pending.challenges).await {
                Ok(p) => served = Some(p),
                Err(e) => return Err((e.code(), e.to_string())),
            }
            tracing::info!(task_id = %work.lease.task_id, challenges = pending.challenges.len(), "serving the ACME http-01 challenges");
        }
        req.order = Some(pending.order);
    }
    Err((
        ErrorCode::AcmeTimeout,
        format!("the ACME CA had not validated after {MAX_ACME_ROUNDS} rounds"),
    ))
}

/// The code a failed issue call reports: the server's own (an ACME
/// problem, a refused CSR…), else that issuance failed.
fn issue_code(e: &tether_client::ClientError) -> ErrorCode {
    match e {
        tether_client::ClientError::Api { error, .. } => error.code,
        _ => ErrorCode::DeployIssueFailed,
    }
}

impl Executor for DeployExecutor {
    fn kind(&self) -> TaskKind {
        TaskKind::Deploy
    }

    fn run(&self, work: Work) -> BoxFuture<Option<TaskOutcome>> {
        let deployer = self.deployer.clone();
        Box::pin(async move {
            // The agent checks the spec itself before touching a file: the
            // server that created the task may be older, or not ours.
            let spec = match DeploySpec::from_json(&work.lease.spec) {
                Ok(s) => s,
                Err(e) => return failed(ErrorCode::DeploySpecInvalid, e),
            };
            let kc = match keygen::generate(&spec.names) {
                Ok(k) => k,
                Err(e) => {
                    return failed(
                        ErrorCode::DeploySpecInvalid,
                        format!("cannot make a CSR for these names: {e}"),
                    );
                }
            };
            let issued = match issue(&work, &spec, &kc.csr_pem).await {
                Ok(i) => i,
                Err((code, message)) => return failed(code, message),
            };
            let material = Material {
                cert_pem: issued.cert_pem,
                chain_pem: issued.chain_pem,
                key_pem: kc.key_pem().to_owned(),
            };
            let (report, seen) = match deployer.deploy_observed(&spec, &material).await {
                Ok(r) => r,
                // Only a test's crash hook stops a transaction this way.
                Err(crashed) => {
                    return failed(
                        ErrorCode::DeployInterrupted,
                        format!("stopped at {}", crashed.0),
                    );
                }
            };
            // The handshake that verified the deploy, for the inventory.
            let seen: Vec<Value> = seen
                .and_then(|r| serde_json::to_value(&r).ok())
                .into_iter()
                .collect();
            let chunk = json!({ "report": report, "seen": seen });
            if let Err(e) = work.results.emit(chunk) {
                return failed(
                    ErrorCode::DeployWriteFailed,
                    format!("could not spool the deploy report: {e}"),
                );
            }
            match &report.failure {
                None => Some(TaskOutcome {
                    outcome: Outcome::Ok,
                    message: format!(
                        "deployed {} to {} ({})",
                        report.new_fingerprint, report.path, report.address
                    ),
                }),
                Some(f) => Some(TaskOutcome {
                    outcome: Outcome::Failed,
                    message: format!("{}: {} ({})", f.code, f.message, report.state)
                        .chars()
                        .take(1000)
                        .collect(),
                }),
            }
        })
    }
}
