//! Why a task waits, in one sentence: every queued or leased task has one.

use tether_wire::{AgentKind, AgentStatus, TaskState, TaskTarget};
use time::OffsetDateTime;

use crate::lease::{TaskSnapshot, awaiting_approval, hhmm};
use crate::window::{Window, WindowState};

/// An agent as the reason needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub name: String,
    pub status: AgentStatus,
    /// When it entered that status (its last transition), if known.
    pub since: Option<OffsetDateTime>,
    pub last_seen: Option<OffsetDateTime>,
}

/// What the server knows about who could run the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligible {
    /// The targeted agent, or `None` when it does not exist (removed).
    Agent(Option<AgentView>),
    /// Agents of the group and kind: how many exist, and how many are Active.
    Group { total: u32, active: u32 },
}

fn since(at: Option<OffsetDateTime>) -> String {
    at.map(|t| format!(" since {}", hhmm(t)))
        .unwrap_or_default()
}

/// The reason a queued or leased task is not running, or `None` for a task
/// that ended. `holder` is the lease holder's name.
pub fn waiting(
    task: &TaskSnapshot,
    eligible: &Eligible,
    holder: Option<&str>,
    now: OffsetDateTime,
) -> Option<String> {
    match task.state {
        TaskState::Leased => {
            let who = holder.map_or_else(
                || task.leased_to.map(|a| a.to_string()).unwrap_or_default(),
                str::to_owned,
            );
            let until = task
                .lease_expires_at
                .map(|t| format!(" until {}", hhmm(t)))
                .unwrap_or_default();
            let progress = task
                .progress
                .as_ref()
                .map(|p| match (p.percent(), p.message.is_empty()) {
                    (Some(pc), true) => format!(", at {pc} %"),
                    (Some(pc), false) => format!(", at {pc} % ({})", p.message),
                    (None, true) => format!(", {} done", p.done),
                    (None, false) => format!(", {} done ({})", p.done, p.message),
                })
                .unwrap_or_default();
            let cancel = if task.cancel_requested {
                "; cancel requested, the agent stops at its next heartbeat"
            } else {
                ""
            };
            Some(format!("leased to {who}{until}{progress}{cancel}"))
        }
        TaskState::Queued => Some(queued(task, eligible, now)),
        _ => None,
    }
}

fn queued(task: &TaskSnapshot, eligible: &Eligible, now: OffsetDateTime) -> String {
    let mut parts = Vec::new();
    if task.held() {
        // The first thing to do about it, ahead of everything else that
        // would hold it once approved.
        parts.push(awaiting_approval(task.id));
    }
    if task.attempt > 0 {
        let after = task
            .last_error
            .as_deref()
            .map(|e| format!(" after \"{e}\""))
            .unwrap_or_default();
        parts.push(format!(
            "attempt {}/{}{after}",
            task.attempt + 1,
            task.max_attempts
        ));
    }
    if let Some(hours) = &task.allowed_hours
        && let Ok(w) = Window::parse(hours, &task.tz)
        && let WindowState::Closed { opens_at } = w.state(now)
    {
        parts.push(format!(
            "outside its allowed hours ({}); opens at {}",
            w.describe(),
            hhmm(opens_at)
        ));
    } else if task.not_before > now {
        parts.push(format!("backing off until {}", hhmm(task.not_before)));
    }
    parts.push(match (eligible, &task.target) {
        (Eligible::Agent(None), TaskTarget::Agent { agent_id }) => {
            format!("no eligible agent (agent {agent_id} does not exist or was removed)")
        }
        (Eligible::Agent(Some(a)), _) => match a.status {
            AgentStatus::Active => format!("waiting for agent {} to ask for work", a.name),
            AgentStatus::Inactive => format!(
                "the agent {} is Inactive{} (last seen {})",
                a.name,
                since(a.since),
                a.last_seen.map_or_else(|| "never".to_owned(), hhmm)
            ),
            AgentStatus::Stopped => format!("the agent {} is Stopped{}", a.name, since(a.since)),
            AgentStatus::Pending => {
                format!(
                    "the agent {} is Pending (awaiting approval or its first check-in)",
                    a.name
                )
            }
        },
        (
            Eligible::Group { total: 0, .. },
            TaskTarget::Group {
                group,
                agent_kind,
                site,
            },
        ) => {
            format!(
                "no eligible agent (none of kind {agent_kind} in group {group}{})",
                site.as_deref()
                    .map(|s| format!(" at site {s}"))
                    .unwrap_or_default()
            )
        }
        (
            Eligible::Group { total, active: 0 },
            TaskTarget::Group {
                group, agent_kind, ..
            },
        ) => {
            format!(
                "no eligible agent ({total} of kind {agent_kind} in group {group}, none Active)"
            )
        }
        (
            Eligible::Group { active, .. },
            TaskTarget::Group {
                group, agent_kind, ..
            },
        ) => {
            format!(
                "waiting for a free agent ({active} Active of kind {agent_kind} in group {group})"
            )
        }
        (Eligible::Group { .. }, TaskTarget::Agent { agent_id }) => {
            format!("waiting for agent {agent_id}")
        }
        (
            Eligible::Agent(None),
            TaskTarget::Group {
                group, agent_kind, ..
            },
        ) => {
            format!("no eligible agent (none of kind {agent_kind} in group {group})")
        }
    });
    parts.join("; ")
}

/// Whether an agent of `kind` may run tasks of this target at all.
pub fn kind_matches(target: &TaskTarget, kind: AgentKind) -> bool {
    match target {
        TaskTarget::Agent { .. } => true,
        TaskTarget::Group { agent_kind, .. } => *agent_kind == kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::tests::queued as task;
    use tether_wire::{AllowedHours, Progress};
    use time::macros::datetime;
    use uuid::Uuid;

    #[test]
    fn every_waiting_state_has_its_sentence() {
        let now = datetime!(2026-05-17 10:00 UTC);
        let mut g = task(5);
        g.target = TaskTarget::Group {
            group: "lab".into(),
            agent_kind: AgentKind::Discovery,
            site: None,
        };
        assert_eq!(
            waiting(
                &g,
                &Eligible::Group {
                    total: 0,
                    active: 0
                },
                None,
                now
            )
            .as_deref(),
            Some("no eligible agent (none of kind discovery in group lab)")
        );
        let inactive = AgentView {
            name: "bot-1".into(),
            status: AgentStatus::Inactive,
            since: Some(datetime!(2026-05-17 09:12 UTC)),
            last_seen: Some(datetime!(2026-05-17 09:10 UTC)),
        };
        assert_eq!(
            waiting(&task(5), &Eligible::Agent(Some(inactive)), None, now).as_deref(),
            Some("the agent bot-1 is Inactive since 09:12 UTC (last seen 09:10 UTC)")
        );
        let mut leased = task(5).lease(Uuid::from_u128(7), now, true);
        leased.progress = Some(Progress {
            done: 40,
            total: Some(100),
            message: String::new(),
        });
        assert_eq!(
            waiting(
                &leased,
                &Eligible::Group {
                    total: 1,
                    active: 1
                },
                Some("bot-1"),
                now
            )
            .as_deref(),
            Some("leased to bot-1 until 10:01 UTC, at 40 %")
        );
        let mut retrying = task(5);
        retrying.attempt = 1;
        retrying.last_error = Some("connection reset".into());
        let active = AgentView {
            name: "bot-1".into(),
            status: AgentStatus::Active,
            since: None,
            last_seen: Some(now),
        };
        assert_eq!(
            waiting(&retrying, &Eligible::Agent(Some(active.clone())), None, now).as_deref(),
            Some("attempt 2/5 after \"connection reset\"; waiting for agent bot-1 to ask for work")
        );
        let mut night = task(5);
        night.allowed_hours = Some(AllowedHours {
            from: "22:00".into(),
            to: "04:00".into(),
        });
        let r = waiting(&night, &Eligible::Agent(Some(active.clone())), None, now).expect("reason");
        assert!(
            r.starts_with("outside its allowed hours (22:00–04:00 UTC); opens at 22:00 UTC"),
            "{r}"
        );
        let mut held = task(5);
        held.kind = tether_wire::TaskKind::Deploy;
        held.approval = Some(tether_wire::Approval::awaiting());
        assert_eq!(
            waiting(&held, &Eligible::Agent(Some(active.clone())), None, now).as_deref(),
            Some(
                "awaiting an admin's approval (tether certs approve 00000000-0000-0000-0000-000000000001); waiting for agent bot-1 to ask for work"
            )
        );
        let approved = held.approve("ops", now).expect("approved");
        assert_eq!(
            waiting(&approved, &Eligible::Agent(Some(active)), None, now).as_deref(),
            Some("waiting for agent bot-1 to ask for work")
        );
    }
}
