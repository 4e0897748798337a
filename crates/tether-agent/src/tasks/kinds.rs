//! The executors: discovery scans, and the admin actions (the doctor and a
//! definitions check).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_wire::{Outcome, Progress, TaskKind, TaskOutcome};

use super::executor::{Executor, MAX_CHUNK_BYTES, Work};
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

/// `discover`: the scan of the task's spec (checked again here with the
/// scanner's own parser), its endpoint results streamed as result chunks of
/// at most [`MAX_CHUNK_BYTES`], then one last chunk with the summary. The
/// executor's future already runs on the task's own thread and runtime, off
/// the check-in path; dropping it (a cancel) drops the results' receiver,
/// and the scanner stops starting probes.
pub struct DiscoverExecutor;

/// A result small enough for one chunk: the chain cut to its first 8
/// certificates with 64 names each, saying so.
fn fit(r: &tether_scan::EndpointResult) -> Value {
    let v = serde_json::to_value(r).unwrap_or(Value::Null);
    if serde_json::to_vec(&v).map_or(0, |b| b.len()) + 1 < MAX_CHUNK_BYTES - 2 {
        return v;
    }
    let mut small = r.clone();
    let chain = match &mut small.outcome {
        tether_scan::Outcome::TlsAccepted { chain, .. }
        | tether_scan::Outcome::ClientCertRequired { chain }
        | tether_scan::Outcome::LegacyOnly { chain, .. } => Some(chain),
        tether_scan::Outcome::TlsFailed { chain, .. } => chain.as_mut(),
        _ => None,
    };
    if let Some(chain) = chain {
        chain.certs.truncate(8);
        for c in &mut chain.certs {
            c.sans.truncate(64);
        }
    }
    let mut v = serde_json::to_value(&small).unwrap_or(Value::Null);
    v["truncated"] = Value::Bool(true);
    v
}

impl Executor for DiscoverExecutor {
    fn kind(&self) -> TaskKind {
        TaskKind::Discover
    }

    fn run(&self, work: Work) -> BoxFuture<Option<TaskOutcome>> {
        Box::pin(async move {
            let failed = |message: String| {
                Some(TaskOutcome {
                    outcome: Outcome::Failed,
                    message: message.chars().take(1000).collect(),
                })
            };
            let plan = match tether_scan::DiscoverSpec::from_json(&work.lease.spec)
                .and_then(|s| s.plan())
            {
                Ok(p) => p,
                Err(e) => return failed(e.to_string()),
            };
            let total = plan.estimated_endpoints();
            let scanner = tether_scan::Scanner::default();
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, mut rx) = tokio::sync::mpsc::channel::<tether_scan::EndpointResult>(64);
            let scan = scanner.run(
                &plan,
                tx,
                Arc::new(tether_scan::Progress::default()),
                stop.clone(),
            );
            let consume = async {
                let mut batch: Vec<Value> = Vec::new();
                let mut bytes = 2;
                let mut done = 0u64;
                while let Some(r) = rx.recv().await {
                    done += 1;
                    let v = fit(&r);
                    let size = serde_json::to_vec(&v).map_or(0, |b| b.len()) + 1;
                    if bytes + size > MAX_CHUNK_BYTES && !batch.is_empty() {
                        if let Err(e) = work.results.emit(Value::Array(std::mem::take(&mut batch)))
                        {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        bytes = 2;
                    }
                    bytes += size;
                    batch.push(v);
                    work.progress.set(Progress {
                        done,
                        total: Some(total.max(done)),
                        message: format!("{done} endpoints scanned"),
                    });
                }
                if !batch.is_empty() {
                    work.results.emit(Value::Array(batch))?;
                }
                Ok::<(), std::io::Error>(())
            };
            let (summary, consumed) = tokio::join!(scan, consume);
            if let Err(e) = consumed {
                return failed(format!("could not spool the scan's results: {e}"));
            }
            if let Err(e) = work.results.emit(serde_json::json!({ "summary": summary })) {
                return failed(format!("could not spool the scan's summary: {e}"));
            }
            let counts: Vec<String> = summary
                .outcomes
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            Some(TaskOutcome {
                outcome: Outcome::Ok,
                message: format!(
                    "{} endpoints, {} chains ({} with problems): {}",
                    summary.total,
                    summary.chains,
                    summary.chains_with_problems,
                    counts.join(", ")
                ),
            })
        })
    }
}
