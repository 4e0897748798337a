//! The `deploy` executor: a key and CSR made here (the key never leaves
//! this host), the certificate from the control plane's built-in CA, then
//! the deploy transaction (`tether-deploy`). Its one result chunk holds the
//! report (steps, durations, redacted output, the code of a failure) and
//! the handshake that verified it, as the scanner's endpoint result, which the
//! server records in the inventory like a discovery scan's.

use serde_json::{Value, json};
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
            // This agent does not answer ACME challenges through the
            // task yet (`tether_deploy::challenge` is the building block):
            // it says so, and the server gives it none.
            let req = IssueRequest {
                epoch: work.lease.epoch,
                csr_pem: kc.csr_pem.clone(),
                http01: false,
                order: None,
            };
            let issued = match work.client.issue_cert(work.lease.task_id, &req).await {
                Ok(i) => i,
                Err(e) => return failed(ErrorCode::DeployIssueFailed, e),
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
