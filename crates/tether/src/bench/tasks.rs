//! `tether bench tasks`: the task queue's delivery, measured.
//!
//! A real server process; N agents enrolled for real, each holding its long
//! poll on its own HTTPS connection (as `tether-agent` does). First the idle
//! cost of N held polls (open sockets and the server's memory, before and
//! after). Then T tasks are created one by one through the admin API, each
//! for a different agent; the latency is from the moment the create request
//! is sent to the moment the lease reaches the simulated agent. The server's
//! CPU per task is its CPU time over that phase, less the idle rate measured
//! just before.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use tether_wire::{NewTask, TaskKind, TaskPoll, TaskPollReply, TaskTarget};
use tokio::time::Instant;

use super::{
    ServerProcess, enroll_many, post, process_cpu_ticks, process_rss_kib, ticks_per_second,
};

#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Agents, each holding one long poll on its own connection.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Tasks to create (each for a different agent; at most --agents). 0
    /// measures only the idle cost.
    #[arg(long, default_value_t = 500)]
    pub tasks: usize,
    /// Tasks created per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long polls are held before the idle cost is read.
    #[arg(long, default_value = "15s")]
    pub settle: humantime::Duration,
    /// Server database (default: SQLite in a fresh temporary data dir).
    #[arg(long)]
    pub database_url: Option<String>,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: TasksArgs) -> anyhow::Result<ExitCode> {
    if args.tasks > args.agents {
        bail!("--tasks must be at most --agents (one task per agent)");
    }
    // One connection per agent's held poll, which may take three quarters
    // of `max_connections`; the rest stays for the admin and the results.
    let connections = u32::try_from(args.agents)
        .unwrap_or(u32::MAX)
        .saturating_mul(4)
        / 3
        + 64;
    let server = ServerProcess::start_with(args.database_url.as_deref(), Some(connections)).await?;
    let pid = server.pid()?;
    let creds = Arc::new(enroll_many(&server, args.agents, 64).await?);
    let (rss_before, _) = process_rss_kib(pid)?;
    let fds_before = open_fds(pid);

    let mut config = tether_transport::TransportConfig {
        proxy: tether_transport::ProxySetting::Direct,
        trust: crate::admin::trust_config(Some(&server.endpoint.ca_pem_path), None)?,
        user_agent: format!("tether-bench/{}", tether_wire::VERSION),
        ..Default::default()
    };
    config.timeouts.http = Duration::from_secs(80);
    config.timeouts.connect = Duration::from_secs(30);
    config.timeouts.tls = Duration::from_secs(30);
    let transport = tether_transport::Transport::new(config)?;
    let url = url::Url::parse(&server.endpoint.url)?;
    let origin = Instant::now();
    // When the task for agent i was sent, in µs since `origin` (0: none yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..args.agents).map(|_| AtomicU64::new(0)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let poll_body = Bytes::from(serde_json::to_vec(&TaskPoll {
        wait_secs: 50,
        capacity: 1,
        kinds: vec![TaskKind::Doctor],
    })?);
    let mut pollers: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    let reconnects = Arc::new(AtomicU64::new(0));
    for i in 0..args.agents {
        let (transport, url, creds, sent, tx, body) = (
            transport.clone(),
            url.clone(),
            creds.clone(),
            sent.clone(),
            tx.clone(),
            poll_body.clone(),
        );
        let reconnects = reconnects.clone();
        pollers.spawn(async move {
            let mut conn = transport.connect(&url).await?;
            // Bounded: the benchmark aborts the pollers when it is done.
            loop {
                let request = post("/v1/agent/tasks/poll", Some(&creds[i]), body.to_vec())?;
                let resp = match conn.send(request).await {
                    Ok(r) => r,
                    Err(_) => {
                        // As the agent does: a new connection, and poll again.
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        conn = transport.connect(&url).await?;
                        continue;
                    }
                };
                if resp.status != 200 {
                    bail!(
                        "poll of agent {i}: HTTP {} {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    );
                }
                let reply: TaskPollReply<serde_json::Value> = serde_json::from_slice(&resp.body)?;
                for lease in reply.leases {
                    let at = origin.elapsed().as_micros() as u64;
                    let _ = tx.send(at.saturating_sub(sent[i].load(Ordering::Acquire)));
                    let end = serde_json::json!({"epoch": lease.epoch, "chunk": 0,
                        "outcome": {"outcome": "ok", "message": "bench"}});
                    let path = format!("/v1/agent/tasks/{}/results", lease.task_id);
                    let r = conn
                        .send(post(&path, Some(&creds[i]), serde_json::to_vec(&end)?)?)
                        .await?;
                    if r.status != 200 {
                        bail!("result of agent {i}: HTTP {}", r.status);
                    }
                }
            }
        });
        if i % 200 == 199 {
            // Let the server keep up with the TLS handshakes.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(tx);
    tokio::time::sleep(Duration::from(args.settle)).await;
    if let Some(Ok(Err(e))) = pollers.try_join_next() {
        bail!("a poller failed: {e:#}");
    }
    let (rss_idle, _) = process_rss_kib(pid)?;
    let fds_idle = open_fds(pid);
    let tps = ticks_per_second();
    let idle_ticks_0 = process_cpu_ticks(pid)?;
    let idle_window = Duration::from_secs(5);
    tokio::time::sleep(idle_window).await;
    let idle_cpu_per_s =
        (process_cpu_ticks(pid)? - idle_ticks_0) as f64 / tps / idle_window.as_secs_f64();
    println!(
        "tether bench tasks: {} agents holding a long poll each, {} tasks",
        args.agents, args.tasks
    );
    println!(
        "idle, {} polls held:   server RSS {:.1} MiB → {:.1} MiB (+{:.1} KiB per poll), open fds {} → {}, CPU {:.3} s/s, {} reconnects",
        args.agents,
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss_idle.saturating_sub(rss_before)) as f64 / args.agents as f64,
        fds_before,
        fds_idle,
        idle_cpu_per_s,
        reconnects.load(Ordering::Relaxed)
    );

    if args.tasks > 0 {
        let admin = server.admin()?;
        let agents = admin.list_agents(None).await?;
        // Map credentials to agent ids: enroll_many names agents bench-NNNNNN.
        let mut ids = vec![uuid::Uuid::nil(); args.agents];
        for a in &agents {
            if let Some(i) = a
                .name
                .strip_prefix("bench-")
                .and_then(|n| n.parse::<usize>().ok())
                && i < ids.len()
            {
                ids[i] = a.id;
            }
        }
        let cpu0 = process_cpu_ticks(pid)?;
        let phase = Instant::now();
        let gap = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
        for (n, i) in (0..args.agents)
            .step_by(args.agents.checked_div(args.tasks).unwrap_or(1).max(1))
            .take(args.tasks)
            .enumerate()
        {
            let due = phase + gap * n as u32;
            tokio::time::sleep_until(due).await;
            sent[i].store(origin.elapsed().as_micros() as u64, Ordering::Release);
            admin
                .create_task(&NewTask {
                    kind: TaskKind::Doctor,
                    spec: serde_json::json!({"upload": false}),
                    target: TaskTarget::Agent { agent_id: ids[i] },
                    max_attempts: None,
                    lease_secs: None,
                    deadline_secs: None,
                    allowed_hours: None,
                    schedule: None,
                    require_approval: false,
                })
                .await
                .with_context(|| format!("creating task {n}"))?;
        }
        let mut lat = Vec::with_capacity(args.tasks);
        let deadline = Instant::now() + Duration::from_secs(30);
        while lat.len() < args.tasks {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(us)) => lat.push(us),
                _ => break,
            }
        }
        let elapsed = phase.elapsed().as_secs_f64();
        let cpu = (process_cpu_ticks(pid)? - cpu0) as f64 / tps;
        let per_task_ms = ((cpu - idle_cpu_per_s * elapsed).max(0.0) / args.tasks as f64) * 1000.0;
        lat.sort_unstable();
        let (rss_after, hwm) = process_rss_kib(pid)?;
        println!(
            "queue → start latency:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} delivered)",
            percentile(&lat, 0.50) as f64 / 1000.0,
            percentile(&lat, 0.99) as f64 / 1000.0,
            lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            lat.len(),
            args.tasks
        );
        println!(
            "server cost per task:   {per_task_ms:.2} ms CPU (create, lease, result; idle rate subtracted); RSS {:.1} MiB, peak {:.1} MiB",
            rss_after as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        if lat.len() < args.tasks {
            bail!(
                "{} tasks were not delivered within 30 s",
                args.tasks - lat.len()
            );
        }
    }
    pollers.abort_all();
    Ok(ExitCode::SUCCESS)
}
