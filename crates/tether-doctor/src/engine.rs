//! The scheduler: runs tasks concurrently as soon as their prerequisites are
//! done, skips tasks whose prerequisites failed, and holds everything to one
//! global deadline.
//!
//! A task may emit several results (the DNS task emits `dns.system` and one
//! `dns.ns:IP` per name server); its *gate* says whether dependents may run,
//! and if not, which check blocked them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tether_wire::ErrorCode;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::report::CheckResult;

/// A boxed task future.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = TaskOutput> + Send + 'static>>;

/// What a task produced.
#[derive(Debug)]
pub(crate) struct TaskOutput {
    /// Its results, in display order.
    pub(crate) results: Vec<CheckResult>,
    /// `None`: dependents may run. `Some(id)`: they are skipped, blocked by
    /// the check `id`.
    pub(crate) blocked_by: Option<String>,
}

impl TaskOutput {
    /// Results whose gate is closed by the first failing result, if any.
    pub(crate) fn gated_by_failures(results: Vec<CheckResult>) -> TaskOutput {
        let blocked_by = results.iter().find(|r| r.is_fail()).map(|r| r.id.clone());
        TaskOutput {
            results,
            blocked_by,
        }
    }
}

/// One unit of scheduling.
pub(crate) struct Task {
    /// The task's key for dependencies; also the check id of its result when
    /// it is skipped or runs past the deadline.
    pub(crate) id: String,
    /// The title used for its skipped or timed-out result.
    pub(crate) title: String,
    /// Tasks that must finish with an open gate before this one runs.
    pub(crate) hard: Vec<String>,
    /// Tasks that must finish (whatever their outcome) before this one runs.
    pub(crate) soft: Vec<String>,
    /// The code reported if the task is still running at the deadline.
    pub(crate) timeout_code: ErrorCode,
    /// The task itself.
    pub(crate) run: Box<dyn FnOnce() -> TaskFuture + Send>,
}

impl Task {
    pub(crate) fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        timeout_code: ErrorCode,
        run: impl FnOnce() -> TaskFuture + Send + 'static,
    ) -> Task {
        Task {
            id: id.into(),
            title: title.into(),
            hard: Vec::new(),
            soft: Vec::new(),
            timeout_code,
            run: Box::new(run),
        }
    }

    pub(crate) fn after(mut self, hard: &str) -> Task {
        self.hard.push(hard.to_owned());
        self
    }

    pub(crate) fn after_any_outcome_of(mut self, soft: &str) -> Task {
        self.soft.push(soft.to_owned());
        self
    }
}

enum State {
    Waiting(Task),
    Running { title: String, code: ErrorCode },
    Done { blocked_by: Option<String> },
}

/// Runs every task and returns their results in plan order (each task's
/// results where the task was listed). Finishes by `deadline` at the latest:
/// tasks still running then are aborted and reported as failed.
pub(crate) async fn run(tasks: Vec<Task>, deadline: Instant) -> Vec<CheckResult> {
    let order: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let mut states: HashMap<String, State> = tasks
        .into_iter()
        .map(|t| (t.id.clone(), State::Waiting(t)))
        .collect();
    let mut results: HashMap<String, Vec<CheckResult>> = HashMap::new();
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut set: JoinSet<(String, TaskOutput)> = JoinSet::new();
    let mut task_ids: HashMap<tokio::task::Id, String> = HashMap::new();

    loop {
        schedule(
            &order,
            &mut states,
            &mut results,
            &mut set,
            &mut task_ids,
            &mut started,
        );
        if set.is_empty() {
            break;
        }
        match tokio::time::timeout_at(deadline, set.join_next_with_id()).await {
            Ok(Some(Ok((_, (id, output))))) => {
                let mut out = output.results;
                let took = started.get(&id).map(|s| s.elapsed()).unwrap_or_default();
                for r in &mut out {
                    if r.duration.is_zero() {
                        r.duration = took;
                    }
                }
                results.insert(id.clone(), out);
                states.insert(
                    id,
                    State::Done {
                        blocked_by: output.blocked_by,
                    },
                );
            }
            Ok(Some(Err(join_error))) => {
                // A check that panicked or was cancelled: report it instead of
                // losing it, and block its dependents.
                let Some(id) = task_ids.get(&join_error.id()).cloned() else {
                    continue;
                };
                let title = match states.get(&id) {
                    Some(State::Running { title, .. }) => title.clone(),
                    _ => id.clone(),
                };
                let r = CheckResult::pass(id.clone(), title)
                    .fail(
                        ErrorCode::Internal,
                        format!("The check {id} crashed: {join_error}."),
                    )
                    .with_action("Send this report to support: the doctor has a bug.");
                results.insert(id.clone(), vec![r]);
                states.insert(
                    id.clone(),
                    State::Done {
                        blocked_by: Some(id),
                    },
                );
            }
            Ok(None) => break,
            Err(_deadline) => {
                set.abort_all();
                let budget = deadline
                    .saturating_duration_since(started.values().min().copied().unwrap_or(deadline));
                let running: Vec<String> = states
                    .iter()
                    .filter(|(_, s)| matches!(s, State::Running { .. }))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in running {
                    let Some(State::Running { title, code }) = states.remove(&id) else {
                        continue;
                    };
                    let took = started.get(&id).map(|s| s.elapsed()).unwrap_or_default();
                    let r = CheckResult::pass(id.clone(), title)
                        .fail(
                            code,
                            format!(
                                "The check {id} did not finish within the doctor's {} deadline.",
                                humanize(budget)
                            ),
                        )
                        .took(took);
                    results.insert(id.clone(), vec![r]);
                    states.insert(
                        id.clone(),
                        State::Done {
                            blocked_by: Some(id),
                        },
                    );
                }
                // Whatever waits on a task that never finished is blocked by it.
                schedule_skips_only(&order, &mut states, &mut results);
                break;
            }
        }
    }
    order
        .iter()
        .flat_map(|id| results.remove(id).unwrap_or_default())
        .collect()
}

/// Starts every waiting task whose prerequisites are done, and skips those
/// whose hard prerequisite is blocked, until nothing changes.
fn schedule(
    order: &[String],
    states: &mut HashMap<String, State>,
    results: &mut HashMap<String, Vec<CheckResult>>,
    set: &mut JoinSet<(String, TaskOutput)>,
    task_ids: &mut HashMap<tokio::task::Id, String>,
    started: &mut HashMap<String, Instant>,
) {
    loop {
        let mut changed = false;
        for id in order {
            let Some(State::Waiting(task)) = states.get(id) else {
                continue;
            };
            match readiness(task, states) {
                Readiness::Wait => continue,
                Readiness::Blocked(by) => {
                    results.insert(
                        id.clone(),
                        vec![CheckResult::skipped(id.clone(), task.title.clone(), &by)],
                    );
                    states.insert(
                        id.clone(),
                        State::Done {
                            blocked_by: Some(by),
                        },
                    );
                }
                Readiness::Ready => {
                    let Some(State::Waiting(task)) = states.remove(id) else {
                        continue;
                    };
                    let fut = (task.run)();
                    let key = id.clone();
                    let handle = set.spawn(async move { (key, fut.await) });
                    task_ids.insert(handle.id(), id.clone());
                    started.insert(id.clone(), Instant::now());
                    states.insert(
                        id.clone(),
                        State::Running {
                            title: task.title,
                            code: task.timeout_code,
                        },
                    );
                }
            }
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

/// After the deadline: every task still waiting is skipped, blocked by the
/// first prerequisite that did not let it through.
fn schedule_skips_only(
    order: &[String],
    states: &mut HashMap<String, State>,
    results: &mut HashMap<String, Vec<CheckResult>>,
) {
    loop {
        let mut changed = false;
        for id in order {
            let Some(State::Waiting(task)) = states.get(id) else {
                continue;
            };
            let by = match readiness(task, states) {
                Readiness::Blocked(by) => by,
                // All prerequisites are done, but the time is up.
                Readiness::Ready => "deadline".to_owned(),
                Readiness::Wait => continue,
            };
            results.insert(
                id.clone(),
                vec![CheckResult::skipped(id.clone(), task.title.clone(), &by)],
            );
            states.insert(
                id.clone(),
                State::Done {
                    blocked_by: Some(by),
                },
            );
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

enum Readiness {
    Ready,
    Wait,
    Blocked(String),
}

fn readiness(task: &Task, states: &HashMap<String, State>) -> Readiness {
    let mut ready = true;
    for dep in &task.hard {
        match states.get(dep) {
            Some(State::Done {
                blocked_by: Some(by),
            }) => return Readiness::Blocked(by.clone()),
            Some(State::Done { blocked_by: None }) | None => {}
            Some(_) => ready = false,
        }
    }
    for dep in &task.soft {
        if matches!(
            states.get(dep),
            Some(State::Waiting(_) | State::Running { .. })
        ) {
            ready = false;
        }
    }
    if ready {
        Readiness::Ready
    } else {
        Readiness::Wait
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use std::sync::{Arc, Mutex};

    fn task(id: &str, outcome: Status, delay: Duration, log: Arc<Mutex<Vec<String>>>) -> Task {
        let key = id.to_owned();
        Task::new(id, id, ErrorCode::ConnectTimeout, move || {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(key.clone());
                let r = CheckResult::pass(key.clone(), key.clone());
                let r = match outcome {
                    Status::Fail => r.fail(ErrorCode::ConnectRefused, "refused."),
                    Status::Warn => r.warn(ErrorCode::NtpUnreachable, "no ntp."),
                    _ => r,
                };
                TaskOutput::gated_by_failures(vec![r])
            })
        })
    }

    fn status_of<'a>(results: &'a [CheckResult], id: &str) -> &'a Status {
        &results
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no result {id}"))
            .status
    }

    #[tokio::test(start_paused = true)]
    async fn dependents_of_a_failure_are_skipped_with_the_root_blocker() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let ms = Duration::from_millis;
        let tasks = vec![
            task("dns", Status::Pass, ms(10), log.clone()),
            task("tcp", Status::Fail, ms(10), log.clone()).after("dns"),
            task("tls", Status::Pass, ms(10), log.clone()).after("tcp"),
            task("http", Status::Pass, ms(10), log.clone()).after("tls"),
            task("clock", Status::Warn, ms(10), log.clone()).after_any_outcome_of("http"),
            task("logs", Status::Pass, ms(50), log.clone()),
        ];
        let results = run(tasks, Instant::now() + Duration::from_secs(10)).await;
        let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["dns", "tcp", "tls", "http", "clock", "logs"]);
        assert_eq!(status_of(&results, "tcp"), &Status::Fail);
        for id in ["tls", "http"] {
            assert_eq!(
                status_of(&results, id),
                &Status::Skipped {
                    blocked_by: "tcp".into()
                }
            );
        }
        // A soft dependency waits but is not skipped.
        assert_eq!(status_of(&results, "clock"), &Status::Warn);
        let ran = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(ran, ["dns", "tcp", "clock", "logs"]);
    }

    #[tokio::test(start_paused = true)]
    async fn independent_tasks_run_concurrently() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<Task> = (0..5)
            .map(|i| {
                task(
                    &format!("target:{i}"),
                    Status::Pass,
                    Duration::from_secs(1),
                    log.clone(),
                )
            })
            .collect();
        let started = Instant::now();
        let results = run(tasks, started + Duration::from_secs(10)).await;
        assert_eq!(results.len(), 5);
        // Five one-second tasks in well under five seconds.
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_hangs_forever_still_ends_at_the_deadline() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let hang = Task::new("tcp", "TCP", ErrorCode::ConnectTimeout, || {
            Box::pin(async {
                std::future::pending::<()>().await;
                TaskOutput::gated_by_failures(vec![])
            })
        });
        let tasks = vec![
            hang,
            task("tls", Status::Pass, Duration::ZERO, log.clone()).after("tcp"),
            task("logs", Status::Pass, Duration::ZERO, log.clone()),
        ];
        let started = Instant::now();
        let results = run(tasks, started + Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let tcp = &results[0];
        assert_eq!(tcp.status, Status::Fail);
        assert_eq!(tcp.code, Some(ErrorCode::ConnectTimeout));
        assert!(
            tcp.problem
                .as_deref()
                .unwrap_or("")
                .contains("3 s deadline"),
            "{tcp:?}"
        );
        assert_eq!(
            status_of(&results, "tls"),
            &Status::Skipped {
                blocked_by: "tcp".into()
            }
        );
        assert_eq!(status_of(&results, "logs"), &Status::Pass);
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_not_lost() {
        let boom = Task::new("logs", "Logs", ErrorCode::Internal, || {
            Box::pin(async {
                let v: Vec<u8> = Vec::new();
                // Deliberate out-of-bounds index: the panic under test.
                let _ = v[std::hint::black_box(1)];
                TaskOutput::gated_by_failures(vec![])
            })
        });
        let results = run(vec![boom], Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status, Status::Fail);
        assert!(
            results[0]
                .problem
                .as_deref()
                .unwrap_or("")
                .contains("crashed")
        );
    }
}
