//! `tether tasks …` and `tether sites …`: the task queue from the admin CLI.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::Value;
use tether_wire::{
    AgentKind, AllowedHours, NewTask, ScheduleRule, TaskInfo, TaskKind, TaskState, TaskTarget,
};
use uuid::Uuid;

use crate::admin::client;
use crate::cli::AdminConn;

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Create a task for one agent (--agent) or any eligible agent of a group
    /// and kind (--group, --agent-kind); with --every or --cron, a schedule.
    Create {
        #[command(flatten)]
        conn: AdminConn,
        /// discover, doctor or update_defs.
        #[arg(long)]
        kind: TaskKind,
        /// The spec as JSON (see the kind's documentation), default `{}`.
        #[arg(long, default_value = "{}")]
        spec: String,
        #[arg(long, conflicts_with_all = ["group", "agent_kind"])]
        agent: Option<Uuid>,
        #[arg(long, requires = "agent_kind")]
        group: Option<String>,
        #[arg(long, requires = "group")]
        agent_kind: Option<AgentKind>,
        /// Only agents of this site (with --group).
        #[arg(long, requires = "group")]
        site: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// The visibility timeout, e.g. 2m.
        #[arg(long)]
        lease: Option<humantime::Duration>,
        /// Dead-letter the task if it has not finished this long after creation, e.g. 6h.
        #[arg(long)]
        deadline: Option<humantime::Duration>,
        /// Local hours it may start in, `HH:MM-HH:MM` (site time).
        #[arg(long)]
        hours: Option<String>,
        /// Repeat at this interval, e.g. 1h.
        #[arg(long, conflicts_with = "cron")]
        every: Option<humantime::Duration>,
        /// Repeat on a five-field cron rule, weekdays by name ("0 2 * * Mon-Fri").
        #[arg(long)]
        cron: Option<String>,
        /// The cron rule's IANA zone (default: the site's, else UTC).
        #[arg(long, requires = "cron")]
        tz: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first, each with why it waits.
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        state: Option<TaskState>,
        #[arg(long)]
        kind: Option<TaskKind>,
        #[arg(long)]
        agent: Option<Uuid>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One task: state, attempts, lease, progress, reason and results.
    Show {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task; a running one stops at its agent's next heartbeat.
    Cancel {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Run a dead-lettered or cancelled task again.
    Retry {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Recurring tasks: rule, next run, missed runs.
    Schedules {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (the tasks it created are kept).
    Unschedule {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Create or update a site and its IANA time zone.
    Set {
        #[command(flatten)]
        conn: AdminConn,
        name: String,
        #[arg(long)]
        tz: String,
    },
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Label an agent with a site (or clear it with --clear).
    Assign {
        #[command(flatten)]
        conn: AdminConn,
        agent: Uuid,
        #[arg(required_unless_present = "clear")]
        site: Option<String>,
        #[arg(long)]
        clear: bool,
    },
}

pub(crate) fn hours(s: &str) -> anyhow::Result<AllowedHours> {
    let (from, to) = s
        .split_once('-')
        .with_context(|| format!("--hours {s:?}: expected HH:MM-HH:MM"))?;
    Ok(AllowedHours {
        from: from.trim().to_owned(),
        to: to.trim().to_owned(),
    })
}

fn hhmm(t: Option<time::OffsetDateTime>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
    )
}

/// The one-line table of tasks.
pub fn table(tasks: &[TaskInfo<Value>]) -> String {
    let mut out = format!(
        "{:<36}  {:<11}  {:<9}  {:<7}  {:<8}  {}\n",
        "ID", "KIND", "STATE", "ATTEMPT", "CREATED", "WHY / OUTCOME"
    );
    for t in tasks {
        let why = t
            .waiting
            .clone()
            .or_else(|| t.outcome.as_ref().map(|o| o.message.clone()))
            .or_else(|| t.reason.clone())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<36}  {:<11}  {:<9}  {:<7}  {:<8}  {}\n",
            t.id,
            t.kind.as_str(),
            t.state.as_str(),
            format!("{}/{}", t.attempt, t.max_attempts),
            hhmm(Some(t.created_at)),
            why
        ));
    }
    out
}

fn detail(d: &tether_wire::TaskDetail<Value>) -> String {
    let t = &d.task;
    let mut out = String::new();
    let target = match &t.target {
        TaskTarget::Agent { agent_id } => format!("agent {agent_id}"),
        TaskTarget::Group {
            group,
            agent_kind,
            site,
        } => format!(
            "any {agent_kind} agent of group {group}{}",
            site.as_deref()
                .map(|s| format!(" at site {s}"))
                .unwrap_or_default()
        ),
    };
    out.push_str(&format!("Task {} ({})\n", t.id, t.kind));
    out.push_str(&format!("  Target:    {target}\n"));
    out.push_str(&format!("  State:     {}\n", t.state));
    if let Some(w) = &t.waiting {
        out.push_str(&format!("  Waiting:   {w}\n"));
    }
    out.push_str(&format!(
        "  Attempt:   {}/{} (epoch {})\n",
        t.attempt, t.max_attempts, t.epoch
    ));
    if let Some(p) = &t.progress {
        let pc = p.percent().map(|p| format!(" ({p} %)")).unwrap_or_default();
        out.push_str(&format!(
            "  Progress:  {}/{}{pc} {}\n",
            p.done,
            p.total.map_or_else(|| "?".to_owned(), |t| t.to_string()),
            p.message
        ));
    }
    if let Some(a) = t.leased_to {
        out.push_str(&format!(
            "  Lease:     {a} until {} (heartbeat {})\n",
            hhmm(t.lease_expires_at),
            hhmm(t.heartbeat_at)
        ));
    }
    if let Some(a) = &t.approval {
        out.push_str(&format!(
            "  Approval:  {}{}{}\n",
            a.state.as_str(),
            a.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            a.at.map(|at| format!(" at {}", hhmm(Some(at))))
                .unwrap_or_default()
        ));
    }
    if let Some(r) = &t.reason {
        out.push_str(&format!("  Reason:    {r}\n"));
    }
    if let Some(e) = &t.last_error {
        out.push_str(&format!("  Last error: {e}\n"));
    }
    if let Some(o) = &t.outcome {
        out.push_str(&format!("  Outcome:   {:?}: {}\n", o.outcome, o.message));
    }
    out.push_str(&format!(
        "  Spec:      {}\n",
        serde_json::to_string(&t.spec).unwrap_or_default()
    ));
    out.push_str(&format!("  Results:   {} chunk(s)\n", d.results.len()));
    out
}

pub async fn run(cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TasksCommand::Create {
            conn,
            kind,
            spec,
            agent,
            group,
            agent_kind,
            site,
            max_attempts,
            lease,
            deadline,
            hours: window,
            every,
            cron,
            tz,
            json,
        } => {
            let spec: Value = serde_json::from_str(&spec)
                .with_context(|| format!("--spec {spec:?} is not JSON"))?;
            let target = match (agent, group, agent_kind) {
                (Some(agent_id), _, _) => TaskTarget::Agent { agent_id },
                (None, Some(group), Some(agent_kind)) => TaskTarget::Group {
                    group,
                    agent_kind,
                    site,
                },
                _ => bail!("give --agent ID, or --group G --agent-kind K"),
            };
            let schedule = match (every, cron) {
                (Some(e), _) => Some(ScheduleRule::Interval { secs: e.as_secs() }),
                (None, Some(expr)) => Some(ScheduleRule::Cron { expr, tz }),
                (None, None) => None,
            };
            let req = NewTask {
                kind,
                spec,
                target,
                max_attempts,
                lease_secs: lease.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
                deadline_secs: deadline.map(|d| d.as_secs()),
                allowed_hours: window.as_deref().map(hours).transpose()?,
                schedule,
                require_approval: false,
            };
            let created = client(&conn)?.create_task(&req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else if created.get("rule").is_some() {
                println!(
                    "schedule {} created; next run {}",
                    created["id"].as_str().unwrap_or("?"),
                    created["next_run_at"].as_str().unwrap_or("?")
                );
            } else {
                println!(
                    "task {} created: {}",
                    created["id"].as_str().unwrap_or("?"),
                    created["waiting"].as_str().unwrap_or("queued")
                );
            }
        }
        TasksCommand::List {
            conn,
            state,
            kind,
            agent,
            limit,
            json,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(k) = kind {
                q.push(format!("kind={k}"));
            }
            if let Some(a) = agent {
                q.push(format!("agent={a}"));
            }
            let tasks = client(&conn)?.list_tasks(&q.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                print!("{}", table(&tasks));
            }
        }
        TasksCommand::Show { conn, id, json } => {
            let d = client(&conn)?.task(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", detail(&d));
            }
        }
        TasksCommand::Cancel { conn, id, json } => {
            let t = client(&conn)?.cancel_task(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "task {id} is {}{}",
                    t.state,
                    t.waiting.map(|w| format!(": {w}")).unwrap_or_default()
                );
            }
        }
        TasksCommand::Retry { conn, id, json } => {
            let t = client(&conn)?.retry_task(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "task {id} is {} again{}",
                    t.state,
                    t.waiting.map(|w| format!(": {w}")).unwrap_or_default()
                );
            }
        }
        TasksCommand::Schedules { conn, json } => {
            let s = client(&conn)?.schedules().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for s in s {
                    let rule = match &s.rule {
                        ScheduleRule::Interval { secs } => format!("every {secs} s"),
                        ScheduleRule::Cron { expr, .. } => format!("cron \"{expr}\""),
                    };
                    println!(
                        "{}  {} {rule} ({})  next {}  last {}{}",
                        s.id,
                        s.template.kind,
                        s.tz,
                        s.next_run_at,
                        s.last_run_at
                            .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                        if s.missed.is_empty() {
                            String::new()
                        } else {
                            format!("  missed (run once): {}", s.missed.join(", "))
                        }
                    );
                }
            }
        }
        TasksCommand::Unschedule { conn, id } => {
            client(&conn)?.delete_schedule(id).await?;
            println!("schedule {id} deleted; its tasks are kept");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sites(cmd: SitesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SitesCommand::Set { conn, name, tz } => {
            let s = client(&conn)?.put_site(&name, &tz).await?;
            println!("site {} is in {}", s.name, s.tz);
        }
        SitesCommand::List { conn, json } => {
            let s = client(&conn)?.sites().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for s in s {
                    println!("{:<24}  {}", s.name, s.tz);
                }
            }
        }
        SitesCommand::Assign {
            conn,
            agent,
            site,
            clear,
        } => {
            let site = if clear { None } else { site };
            client(&conn)?
                .set_agent_site(agent, site.as_deref())
                .await?;
            println!(
                "agent {agent}: site {}",
                site.as_deref().unwrap_or("cleared")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
