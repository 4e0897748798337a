//! The executors of the admin actions: the doctor and a definitions check.

use std::time::Duration;

use serde_json::Value;
use tether_wire::{Outcome, TaskKind, TaskOutcome};

use super::executor::{Executor, Work};
use crate::actions::DoctorActions;
use crate::run::{ActionHandler, BoxFuture};

/// `doctor`: with `upload`, the escalation bundle path (doctor, bundle,
/// upload); without, a doctor run with the spec's extra targets and limits.
/// The verdict is the result's one chunk.
pub struct DoctorExecutor(pub DoctorActions);

fn secs(spec: &Value, field: &str) -> Option<Duration> {
    spec.get(field)
        .and_then(Value::as_u64)
        .map(Duration::from_secs)
}

impl Executor for DoctorExecutor {
    fn kind(&self) -> TaskKind {
        TaskKind::Doctor
    }

    fn run(&self, work: Work) -> BoxFuture<Option<TaskOutcome>> {
        let actions = self.0.clone();
        Box::pin(async move {
            let spec = &work.lease.spec;
            let upload = spec.get("upload").and_then(Value::as_bool).unwrap_or(true);
            let (ok, message, summary) = if upload {
                let r = actions.doctor(work.client.clone(), true).await;
                (r.ok, r.message, r.doctor)
            } else {
                let mut opts = crate::doctor::DoctorOptions::for_state_dir(&actions.state_dir);
                opts.unit_dir = actions.unit_dir.clone();
                opts.deadline = secs(spec, "deadline_secs").unwrap_or(actions.deadline);
                if let Some(t) = secs(spec, "target_timeout_secs") {
                    opts.target_timeout = t;
                }
                opts.targets = spec
                    .get("targets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(|t| crate::doctor::parse_target(t).ok())
                    .collect();
                match crate::doctor::run(&opts, &actions.world).await {
                    Ok(report) => (
                        true,
                        format!("doctor verdict {}", report.verdict.status.as_str()),
                        Some(crate::doctor::summary(&report, None)),
                    ),
                    Err(f) => (
                        false,
                        format!("the doctor could not run: {}", f.message),
                        None,
                    ),
                }
            };
            if let Some(s) = summary
                && let Ok(v) = serde_json::to_value(&s)
                && let Err(e) = work.results.emit(v)
            {
                return Some(TaskOutcome {
                    outcome: Outcome::Failed,
                    message: format!("could not spool the verdict: {e}"),
                });
            }
            Some(TaskOutcome {
                outcome: if ok { Outcome::Ok } else { Outcome::Failed },
                message: message.chars().take(1000).collect(),
            })
        })
    }
}

/// `update_defs`: hands the check to the definitions worker, which runs one
/// update at a time and reports the result itself.
pub struct UpdateDefsExecutor(pub crate::defs::DefsHandle);

impl Executor for UpdateDefsExecutor {
    fn kind(&self) -> TaskKind {
        TaskKind::UpdateDefs
    }

    fn run(&self, work: Work) -> BoxFuture<Option<TaskOutcome>> {
        let handle = self.0.clone();
        Box::pin(async move {
            let channel = work
                .lease
                .spec
                .get("channel")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let queued = handle.trigger(crate::defs::Trigger {
                action_id: work.lease.task_id,
                channel,
            });
            if queued {
                None
            } else {
                Some(TaskOutcome {
                    outcome: Outcome::Failed,
                    message: "too many definitions checks are already queued".to_owned(),
                })
            }
        })
    }
}
