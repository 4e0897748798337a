//! Load generators that print figures (BENCHMARKS.md records them with the
//! command that reproduces them). Never timed tests: machines are noisy.
//!
//! `tether bench checkin` starts a real server process, enrolls N agents over
//! real HTTPS, then makes them check in on a schedule (open loop: latency is
//! measured from the moment a check-in was due, so a saturated server shows up
//! as latency instead of hiding behind a slower send rate).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use tether_transport::{Connection, ProxySetting, Transport, TransportConfig};
use tether_wire::{
    AgentKind, CheckinRequest, CreateTokenRequest, EnrollRequest, EnrollResponse, HostFacts,
};
use tokio::time::Instant;

mod defs_fleet;
mod renew;
mod tasks;
mod two_servers;

use crate::admin::trust_config;
use crate::endpoint::Endpoint;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N simulated agents checking in over real HTTPS on loopback.
    Checkin(CheckinArgs),
    /// Resident memory of an idle, enrolled `tether-agent run` process.
    AgentRss(AgentRssArgs),
    /// Server cost (bytes, CPU) of one definitions publish reaching N agents: deltas vs full.
    DefsFleet(defs_fleet::DefsFleetArgs),
    /// Task delivery: idle cost of N held long polls, queue-to-start latency, CPU per task.
    Tasks(tasks::TasksArgs),
    /// Issue, deploy and renew N certificates to PEM sets served by real
    /// nginx, through real `tether-agent` processes; the CA's signing rate.
    Renew(renew::RenewArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckinArgs {
    /// Simulated agents (each enrolled for real, with its own credential).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Each agent's check-in interval in seconds; 0 means closed loop (as fast as possible).
    #[arg(long, default_value_t = 30.0)]
    pub interval: f64,
    /// How long to measure.
    #[arg(long, default_value = "20s")]
    pub duration: humantime::Duration,
    /// Keep-alive HTTPS connections the simulated agents share.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Server database (default: SQLite in a fresh temporary data dir). Use an empty database.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// On PostgreSQL: one server, then two on the same database, behind a
    /// real HAProxy (TCP), same agents and rate; then kill -9 of one under
    /// load and the failover gap.
    #[arg(long, requires = "database_url")]
    pub two_servers: bool,
    /// On PostgreSQL: also report PostgreSQL's own CPU per check-in, read
    /// from /proc for this postmaster and its processes (the first line of
    /// the data dir's postmaster.pid). Meant for a throwaway cluster of the
    /// bench's own (scripts/bench-pg-hot.sh): every process of it counts.
    #[arg(long, requires = "database_url", conflicts_with = "two_servers")]
    pub postgres_pid: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct AgentRssArgs {
    /// How long the agent idles before its memory is read.
    #[arg(long, default_value = "10s")]
    pub idle: humantime::Duration,
    /// The endpoint binary to measure; default: `tether-agent` next to this
    /// `tether` (for example one built with `--profile endpoint`).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let work = async {
        match cmd {
            BenchCommand::Checkin(args) => checkin(args).await,
            BenchCommand::AgentRss(args) => agent_rss(args).await,
            BenchCommand::DefsFleet(args) => defs_fleet::run(args).await,
            BenchCommand::Tasks(args) => tasks::run(args).await,
            BenchCommand::Renew(args) => renew::run(args).await,
        }
    };
    // On Ctrl-C or SIGTERM (e.g. `timeout`), dropping `work` drops the server
    // and agent children, which kills them: no orphan keeps the CPU busy.
    tokio::select! {
        result = work => result,
        () = crate::server_cmd::wait_for_signal() => bail!("interrupted; the benchmark's processes were stopped"),
    }
}

/// A server process started for a benchmark, killed on drop.
struct ServerProcess {
    child: tokio::process::Child,
    endpoint: Endpoint,
    _dir: TempDir,
}

impl ServerProcess {
    async fn start(database_url: Option<&str>) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(database_url, None).await
    }

    /// With `connections`, the server serves that many connections at once
    /// (`max_connections`), for benches that hold one per simulated agent.
    async fn start_with(
        database_url: Option<&str>,
        connections: Option<u32>,
    ) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_in(TempDir::new("tether-bench")?, database_url, connections).await
    }

    /// With the built-in CA, created by the admin's ceremony
    /// (`tether certs ca init`) in the data dir before the server starts.
    async fn start_with_ca() -> anyhow::Result<ServerProcess> {
        let dir = TempDir::new("tether-bench")?;
        let status = tokio::process::Command::new(std::env::current_exe()?)
            .args(["certs", "ca", "init", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .await
            .context("running `tether certs ca init`")?;
        if !status.success() {
            bail!("`tether certs ca init` failed: {status}");
        }
        ServerProcess::start_in(dir, None, None).await
    }

    async fn start_in(
        dir: TempDir,
        database_url: Option<&str>,
        connections: Option<u32>,
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(n) = connections {
            cmd.env("TETHER_MAX_CONNECTIONS", n.to_string());
        }
        let child = cmd
            .env("TETHER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server process")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(endpoint) = Endpoint::read(dir.path())? {
                return Ok(ServerProcess {
                    child,
                    endpoint,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                bail!("the server did not start within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server process has exited")
    }

    fn transport(&self) -> anyhow::Result<Transport> {
        Ok(Transport::new(TransportConfig {
            proxy: ProxySetting::Direct,
            trust: trust_config(Some(&self.endpoint.ca_pem_path), None)?,
            user_agent: format!("tether-bench/{}", tether_wire::VERSION),
            ..Default::default()
        })?)
    }

    fn admin(&self) -> anyhow::Result<tether_client::ApiClient> {
        let token = std::fs::read_to_string(&self.endpoint.admin_token_path)?
            .trim()
            .to_owned();
        Ok(
            tether_client::ApiClient::new(self.transport()?, url::Url::parse(&self.endpoint.url)?)
                .with_bearer(token),
        )
    }
}

fn facts(i: usize) -> HostFacts {
    HostFacts {
        hostname: format!("bench-host-{i:06}"),
        os: "linux debian 12".into(),
        internal_ips: vec![format!(
            "10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )],
        uptime_secs: 3600,
        installed_at: None,
    }
}

fn post(path: &str, bearer: Option<&str>, body: Vec<u8>) -> anyhow::Result<http::Request<Bytes>> {
    let mut b = http::Request::post(path).header("content-type", "application/json");
    if let Some(secret) = bearer {
        b = b.header("authorization", format!("Bearer {secret}"));
    }
    Ok(b.body(Bytes::from(body))?)
}

/// Enrolls `n` agents (named `bench-i`) with `workers` keep-alive
/// connections; returns their credentials in that order.
async fn enroll_many(
    server: &ServerProcess,
    n: usize,
    workers: usize,
) -> anyhow::Result<Vec<String>> {
    let admin = server.admin()?;
    let token = admin
        .create_token(&CreateTokenRequest {
            kind: AgentKind::Connector,
            group: "bench".into(),
            valid_for_secs: 24 * 3600,
            not_before: None,
            max_uses: Some(u32::try_from(n).context("too many agents")?),
            require_approval: false,
            policy: None,
            site: None,
        })
        .await?;
    let transport = server.transport()?;
    let url = url::Url::parse(&server.endpoint.url)?;
    let token = Arc::new(token.token);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers.min(n).max(1) {
        let (transport, url, token) = (transport.clone(), url.clone(), token.clone());
        tasks.spawn(async move {
            let mut conn = transport.connect(&url).await?;
            let mut out = Vec::new();
            for i in (w..n).step_by(workers) {
                let body = serde_json::to_vec(&EnrollRequest {
                    token: token.to_string(),
                    name: format!("bench-{i:06}"),
                    kind: None,
                    agent_version: tether_wire::VERSION.into(),
                    facts: facts(i),
                    previous_credential: None,
                })?;
                let resp = conn.send(post("/v1/enroll", None, body)?).await?;
                if resp.status != 200 {
                    bail!(
                        "enrollment {i} failed: HTTP {} {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    );
                }
                let e: EnrollResponse = serde_json::from_slice(&resp.body)?;
                out.push((i, e.credential));
            }
            anyhow::Ok(out)
        });
    }
    let mut creds = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        creds.extend(r??);
    }
    // In enrollment order: credential i is agent `bench-i`.
    creds.sort_unstable_by_key(|(i, _)| *i);
    Ok(creds.into_iter().map(|(_, c)| c).collect())
}

/// One check-in per agent, as fast as the connections allow.
async fn warm_up(
    transport: &Transport,
    url: &url::Url,
    creds: &Arc<Vec<String>>,
    body: &Bytes,
    connections: usize,
) -> anyhow::Result<()> {
    let n = creds.len();
    let workers = connections.min(n).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (transport, url, creds, body) =
            (transport.clone(), url.clone(), creds.clone(), body.clone());
        tasks.spawn(async move {
            let mut conn = transport.connect(&url).await?;
            for i in (w..n).step_by(workers) {
                let req = post("/v1/agent/checkin", Some(&creds[i]), body.to_vec())?;
                let resp = conn.send(req).await?;
                if resp.status != 200 {
                    bail!(
                        "first check-in of agent {i} failed: HTTP {} {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The default policy's check-in interval for an open-loop run (the
/// server's minimum is 5 s); a closed loop (0) leaves the policy alone.
async fn set_interval(server: &ServerProcess, interval: f64) -> anyhow::Result<()> {
    if interval > 0.0 {
        let secs = interval.round().max(5.0) as u32;
        server
            .admin()?
            .put_policy(
                "default",
                &tether_wire::PolicyUpdate {
                    defs: Default::default(),
                    checkin_interval_secs: secs,
                    jitter_percent: 10,
                    targets: Vec::new(),
                    max_concurrent_tasks: None,
                    if_revision: None,
                },
            )
            .await?;
    }
    Ok(())
}

/// The body every simulated agent checks in with.
fn checkin_body() -> anyhow::Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(&CheckinRequest {
        defs: Vec::new(),
        agent_version: tether_wire::VERSION.into(),
        facts: facts(0),
        definitions: Default::default(),
        last_errors: Default::default(),
        proxy: None,
        upgrade: None,
    })?))
}

#[derive(Debug, Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// One check-in of the open-loop schedule: answered 200 this long after it
/// was due, or failed with this error.
pub(crate) enum Sent {
    Ok(Duration),
    Failed(String),
}

/// Load worker `w` of `workers`: each of its agents (every `workers`-th) is
/// due at its own offset within each `interval` (back to back when the
/// interval is 0), sent over one keep-alive connection opened again after
/// an error, until `end`. `on` sees every check-in's outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn checkin_worker(
    (w, workers): (usize, usize),
    transport: &Transport,
    url: &url::Url,
    creds: &[String],
    body: &bytes::Bytes,
    interval: f64,
    (started, end): (Instant, Instant),
    mut on: impl FnMut(Sent),
) {
    let n = creds.len();
    let mut conn: Option<Connection> = None;
    let mine: Vec<usize> = (w..n).step_by(workers).collect();
    let mut round = 0u64;
    'outer: loop {
        for &i in &mine {
            let due = if interval > 0.0 {
                let at = (round as f64 + i as f64 / n as f64) * interval;
                started + Duration::from_secs_f64(at)
            } else {
                Instant::now()
            };
            if due >= end {
                break 'outer;
            }
            tokio::time::sleep_until(due).await;
            if conn.as_ref().is_none_or(|c| !c.is_open()) {
                match transport.connect(url).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        on(Sent::Failed(e.to_string()));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let req = http::Request::post("/v1/agent/checkin")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", creds[i]))
                .body(body.clone());
            let Ok(req) = req else { continue };
            match c.send(req).await {
                Ok(r) if r.status == 200 => on(Sent::Ok(due.elapsed())),
                Ok(r) => on(Sent::Failed(format!(
                    "HTTP {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ))),
                Err(e) => {
                    on(Sent::Failed(e.to_string()));
                    conn = None;
                }
            }
            if Instant::now() >= end {
                break 'outer;
            }
        }
        round += 1;
    }
}

/// Microseconds, saturated, for the latency lists.
pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn checkin(args: CheckinArgs) -> anyhow::Result<ExitCode> {
    if args.two_servers {
        return two_servers::run(args).await;
    }
    let server = ServerProcess::start(args.database_url.as_deref()).await?;
    let backend = if args
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"))
    {
        "postgres"
    } else {
        "sqlite"
    };
    let pid = server.pid()?;

    set_interval(&server, args.interval).await?;

    let enroll_started = Instant::now();
    let creds = Arc::new(enroll_many(&server, args.agents, args.connections).await?);
    let enroll_secs = enroll_started.elapsed().as_secs_f64();

    let transport = server.transport()?;
    let url = url::Url::parse(&server.endpoint.url)?;
    let body = checkin_body()?;

    // Warm-up: every agent's first check-in moves it Pending → Active (a
    // transition, the transactional path). The fleet's steady state is
    // Active agents checking in, so that is what the measured phase sees.
    let warm_started = Instant::now();
    warm_up(&transport, &url, &creds, &body, args.connections).await?;
    let warm_secs = warm_started.elapsed().as_secs_f64();

    let cpu_before = process_cpu_ticks(pid)?;
    let pg_before = args.postgres_pid.map(cluster_cpu_ticks).transpose()?;
    let started = Instant::now();
    let duration = Duration::from(args.duration);
    let end = started + duration;
    let n = creds.len();
    let workers = args.connections.min(n).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (transport, url, creds, body) =
            (transport.clone(), url.clone(), creds.clone(), body.clone());
        let interval = args.interval;
        tasks.spawn(async move {
            let mut stats = WorkerStats::default();
            checkin_worker(
                (w, workers),
                &transport,
                &url,
                &creds,
                &body,
                interval,
                (started, end),
                |sent| match sent {
                    Sent::Ok(latency) => stats.latencies_us.push(micros(latency)),
                    Sent::Failed(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                    }
                },
            )
            .await;
            stats
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        let s = r?;
        latencies.extend(s.latencies_us);
        errors += s.errors;
        if first_error.is_none() {
            first_error = s.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = process_cpu_ticks(pid)?;
    let pg_after = args.postgres_pid.map(cluster_cpu_ticks).transpose()?;
    let (rss, hwm) = process_rss_kib(pid)?;
    let ticks = ticks_per_second();
    let cpu_pct = (cpu_after - cpu_before) as f64 / ticks / elapsed * 100.0;
    let ok_checkins = latencies.len().max(1) as f64;
    let server_us_per_checkin = (cpu_after - cpu_before) as f64 / ticks * 1e6 / ok_checkins;
    let pg_us_per_checkin = match (pg_before, pg_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / ticks * 1e6 / ok_checkins),
        _ => None,
    };

    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[idx]) / 1000.0
    };
    let ok = latencies.len();
    let rate = ok as f64 / elapsed;
    let offered = if args.interval > 0.0 {
        n as f64 / args.interval
    } else {
        f64::NAN
    };
    let report = serde_json::json!({
        "bench": "checkin",
        "backend": backend,
        "agents": n,
        "interval_s": args.interval,
        "connections": workers,
        "duration_s": elapsed,
        "enroll_per_s": n as f64 / enroll_secs,
        "first_checkins_per_s": n as f64 / warm_secs,
        "offered_per_s": offered,
        "checkins_ok": ok,
        "errors": errors,
        "first_error": first_error,
        "checkins_per_s": rate,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "server_cpu_percent": cpu_pct,
        "server_cpu_us_per_checkin": server_us_per_checkin,
        "postgres_cpu_us_per_checkin": pg_us_per_checkin,
        "server_rss_mib": rss as f64 / 1024.0,
        "server_peak_rss_mib": hwm as f64 / 1024.0,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("backend            {backend}");
        println!(
            "agents             {n} (enrolled at {:.0}/s; first check-ins, Pending → Active, at {:.0}/s)",
            n as f64 / enroll_secs,
            n as f64 / warm_secs
        );
        println!(
            "schedule           {} over {workers} keep-alive connections",
            if args.interval > 0.0 {
                format!(
                    "every {} s per agent (offered {offered:.0}/s)",
                    args.interval
                )
            } else {
                "closed loop".to_owned()
            }
        );
        println!("measured           {elapsed:.1} s");
        println!("check-ins/s        {rate:.0} ({ok} ok, {errors} errors)");
        println!(
            "latency p50 / p99  {:.2} ms / {:.2} ms (max {:.2} ms)",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        println!(
            "server CPU         {cpu_pct:.0} % of one core ({server_us_per_checkin:.0} µs per check-in)"
        );
        if let Some(us) = pg_us_per_checkin {
            println!("PostgreSQL CPU     {us:.0} µs per check-in (all its processes)");
        }
        println!(
            "server RSS         {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        if let Some(e) = first_error {
            println!("first error        {e}");
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn agent_rss(args: AgentRssArgs) -> anyhow::Result<ExitCode> {
    let server = ServerProcess::start(None).await?;
    let admin = server.admin()?;
    let token = admin
        .create_token(&CreateTokenRequest {
            kind: AgentKind::Connector,
            group: "bench".into(),
            valid_for_secs: 3600,
            not_before: None,
            max_uses: Some(1),
            require_approval: false,
            policy: None,
            site: None,
        })
        .await?;
    let agent_bin = match args.agent_bin {
        Some(p) => p,
        None => sibling_binary("tether-agent")?,
    };
    let state = TempDir::new("tether-bench-agent")?;
    let status = tokio::process::Command::new(&agent_bin)
        .args([
            "enroll",
            "--server",
            &server.endpoint.url,
            "--token",
            &token.token,
        ])
        .args([
            "--ca-fingerprint",
            &server.endpoint.ca_fingerprint,
            "--state-dir",
        ])
        .arg(state.path())
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("tether-agent enroll failed: {status}");
    }
    let mut agent = tokio::process::Command::new(&agent_bin)
        .args(["run", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from(args.idle)).await;
    let pid = agent.id().context("the agent exited early")?;
    let (rss, hwm) = process_rss_kib(pid)?;
    let size = std::fs::metadata(&agent_bin)?.len();
    println!(
        "tether-agent binary  {} ({:.1} MiB)",
        agent_bin.display(),
        size as f64 / 1_048_576.0
    );
    println!(
        "idle RSS             {:.1} MiB (peak {:.1} MiB) after {}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        args.idle
    );
    // Where it goes: heap and stacks (anonymous) against mapped code and
    // data (file-backed), and how many threads hold them.
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "  anonymous          {:.1} MiB (heap, stacks)",
        kib("Anonymous:") as f64 / 1024.0
    );
    println!(
        "  file-backed        {:.1} MiB (code and data mapped from the binary and libraries)",
        kib("Rss:").saturating_sub(kib("Anonymous:")) as f64 / 1024.0
    );
    println!("  threads            {threads}");
    let _ = agent.kill().await;
    Ok(ExitCode::SUCCESS)
}

/// Finds a binary built next to this one (target/<profile>/NAME).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p tether-agent-bin`",
            path.display()
        );
    }
    Ok(path)
}

/// utime + stime of a process, in clock ticks, from /proc/PID/stat.
fn process_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after ')' are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// CPU ticks of a PostgreSQL cluster: its postmaster's own and those of its
/// children that exited (cutime + cstime), plus every live child's (backends,
/// autovacuum workers, the WAL writer…), from /proc.
fn cluster_cpu_ticks(postmaster: u32) -> anyhow::Result<u64> {
    let fields = |pid: &str| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        // state, ppid, …: fields 3.. of proc(5); non-numbers (the state) as 0.
        Some(
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect(),
        )
    };
    let own = fields(&postmaster.to_string())
        .filter(|f| f.len() > 14)
        .with_context(|| format!("no postmaster with PID {postmaster}"))?;
    let mut total = own[11] + own[12] + own[13] + own[14];
    for entry in std::fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A child may exit between listing and reading: then it is skipped.
        if let Some(f) = fields(pid).filter(|f| f.len() > 12)
            && f[1] == u64::from(postmaster)
        {
            total += f[11] + f[12];
        }
    }
    Ok(total)
}

/// (VmRSS, VmHWM) in KiB.
pub fn process_rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
