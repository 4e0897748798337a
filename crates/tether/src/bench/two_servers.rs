//! `tether bench checkin --two-servers`: one server, then two, on one
//! PostgreSQL database, behind a real HAProxy in TCP passthrough, with the
//! same agents and the same offered rate in one run (issue #12, "Two servers
//! on PostgreSQL against one"); then a kill -9 of one server under load and
//! the failover gap.
//!
//! HAProxy's config is written here, not taken from `tether-testlab`, which
//! never ships in the `tether` binary (like `renew.rs` and its nginx). The
//! two servers keep their own generated CAs; the simulated agents trust
//! both, which is what changes nothing in the cost measured here (a real
//! deployment shares one certificate: docs/deploy-multi-server.md).

use std::net::TcpListener;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tether_transport::{ProxySetting, Transport, TransportConfig};
use tokio::time::Instant;

use super::{
    CheckinArgs, Sent, ServerProcess, TempDir, checkin_body, checkin_worker, enroll_many, micros,
    process_cpu_ticks, set_interval, ticks_per_second, warm_up,
};
use crate::admin::trust_config;

/// A HAProxy process in TCP mode in front of `servers`, killed on drop.
struct Balancer {
    port: u16,
    _child: tokio::process::Child,
    _dir: TempDir,
}

impl Balancer {
    async fn start(servers: &[&ServerProcess]) -> anyhow::Result<Balancer> {
        let dir = TempDir::new("tether-bench-haproxy")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let backends: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = s
                    .endpoint
                    .url
                    .trim_start_matches("https://")
                    .trim_end_matches('/');
                // A TCP check every 200 ms marks a dead server down; until
                // then a refused connection is redispatched to the other.
                format!("  server s{i} {addr} check inter 200ms fall 1 rise 2\n")
            })
            .collect();
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 4096\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 75s\n  timeout server 75s\n  \
                 retries 2\n  option redispatch\n\
                 frontend tether\n  bind 127.0.0.1:{port}\n  default_backend servers\n\
                 backend servers\n  balance roundrobin\n{backends}"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let mut child = tokio::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Balancer {
                    port,
                    _child: child,
                    _dir: dir,
                });
            }
            if let Some(status) = child.try_wait()? {
                let said = std::fs::read_to_string(dir.path().join("haproxy.log"))?;
                bail!("haproxy exited ({status}): {said}");
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen on 127.0.0.1:{port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse(&format!(
            "https://127.0.0.1:{}",
            self.port
        ))?)
    }
}

/// A transport that trusts every server's CA (they are reached through one
/// balancer address).
fn transport_for(servers: &[&ServerProcess]) -> anyhow::Result<Transport> {
    let (first, rest) = servers.split_first().context("no server")?;
    let mut trust = trust_config(Some(&first.endpoint.ca_pem_path), None)?;
    let mut extra = Vec::new();
    for s in rest {
        extra.extend(std::fs::read(&s.endpoint.ca_pem_path)?);
    }
    if !extra.is_empty() {
        trust.extra_ca_pem = Some(extra);
    }
    Ok(Transport::new(TransportConfig {
        proxy: ProxySetting::Direct,
        trust,
        user_agent: format!("tether-bench/{}", tether_wire::VERSION),
        ..Default::default()
    })?)
}

#[derive(Debug, Default)]
struct Worker {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    /// The first failure at or after the kill, and the first success after it.
    failed_at: Option<Instant>,
    recovered_at: Option<Instant>,
}

/// What one measured phase saw.
struct Phase {
    ok: usize,
    errors: u64,
    first_error: Option<String>,
    elapsed: f64,
    p50: f64,
    p99: f64,
    /// Server CPU (all servers' sum) per check-in, in µs; NaN after a kill.
    cpu_us: f64,
    /// For a kill: (connections broken, first recovery, last recovery, not recovered).
    failover: Option<(usize, Option<Duration>, Option<Duration>, usize)>,
}

struct Load<'a> {
    transport: &'a Transport,
    url: &'a url::Url,
    creds: &'a Arc<Vec<String>>,
    body: &'a Bytes,
    interval: f64,
    duration: Duration,
    connections: usize,
}

/// Runs the open-loop schedule of `bench checkin` for `load.duration`; with
/// `kill`, kills that server (SIGKILL) `after` into the run.
async fn measure(
    load: &Load<'_>,
    pids: &[u32],
    kill: Option<(Duration, &mut ServerProcess)>,
) -> anyhow::Result<Phase> {
    let n = load.creds.len();
    let workers = load.connections.min(n).max(1);
    let killed_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let cpu_before: u64 = pids
        .iter()
        .map(|p| process_cpu_ticks(*p))
        .sum::<anyhow::Result<u64>>()?;
    let started = Instant::now();
    let end = started + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (transport, url, creds, body, killed_at) = (
            load.transport.clone(),
            load.url.clone(),
            load.creds.clone(),
            load.body.clone(),
            killed_at.clone(),
        );
        let interval = load.interval;
        tasks.spawn(async move {
            let mut stats = Worker::default();
            checkin_worker(
                (w, workers),
                &transport,
                &url,
                &creds,
                &body,
                interval,
                (started, end),
                |sent| match sent {
                    Sent::Ok(latency) => {
                        stats.latencies_us.push(micros(latency));
                        if stats.failed_at.is_some() && stats.recovered_at.is_none() {
                            stats.recovered_at = Some(Instant::now());
                        }
                    }
                    Sent::Failed(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                        if let Some(k) = killed_at.get()
                            && stats.failed_at.is_none()
                        {
                            stats.failed_at = Some(Instant::now().max(*k));
                        }
                    }
                },
            )
            .await;
            stats
        });
    }
    let killed = kill.is_some();
    if let Some((after, server)) = kill {
        tokio::time::sleep_until(started + after).await;
        server.child.start_kill().context("kill -9 of a server")?;
        let _ = killed_at.set(Instant::now());
        server.child.wait().await?;
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut recoveries = Vec::new();
    let (mut broken, mut unrecovered) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let s = r?;
        latencies.extend(s.latencies_us);
        errors += s.errors;
        if first_error.is_none() {
            first_error = s.first_error;
        }
        if s.failed_at.is_some() {
            broken += 1;
            match (s.recovered_at, killed_at.get()) {
                (Some(at), Some(k)) => recoveries.push(at.duration_since(*k)),
                _ => unrecovered += 1,
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_us = if killed {
        f64::NAN
    } else {
        let after: u64 = pids
            .iter()
            .map(|p| process_cpu_ticks(*p))
            .sum::<anyhow::Result<u64>>()?;
        (after - cpu_before) as f64 / ticks_per_second() * 1e6 / latencies.len().max(1) as f64
    };
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[idx]) / 1000.0
    };
    Ok(Phase {
        ok: latencies.len(),
        errors,
        first_error,
        elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        cpu_us,
        failover: killed.then(|| {
            (
                broken,
                recoveries.iter().min().copied(),
                recoveries.iter().max().copied(),
                unrecovered,
            )
        }),
    })
}

fn row(label: &str, p: &Phase) {
    println!(
        "{label:<34} {:>8.0} {:>9.2} {:>9.2} {:>10.0} {:>7}",
        p.ok as f64 / p.elapsed,
        p.p50,
        p.p99,
        p.cpu_us,
        p.errors
    );
}

pub(super) async fn run(args: CheckinArgs) -> anyhow::Result<ExitCode> {
    let Some(db) = args
        .database_url
        .as_deref()
        .filter(|u| u.starts_with("postgres"))
    else {
        bail!("--two-servers needs --database-url postgres://… (an empty database)");
    };
    let a = ServerProcess::start(Some(db)).await?;
    set_interval(&a, args.interval).await?;
    let creds = Arc::new(enroll_many(&a, args.agents, args.connections).await?);
    let body = checkin_body()?;
    let duration = Duration::from(args.duration);

    // One server behind the balancer.
    let one = Balancer::start(&[&a]).await?;
    let transport = transport_for(&[&a])?;
    let url = one.url()?;
    warm_up(&transport, &url, &creds, &body, args.connections).await?;
    let load = Load {
        transport: &transport,
        url: &url,
        creds: &creds,
        body: &body,
        interval: args.interval,
        duration,
        connections: args.connections,
    };
    let single = measure(&load, &[a.pid()?], None).await?;
    drop(one);

    // Two servers behind the balancer, on the same database.
    let mut b = ServerProcess::start(Some(db)).await?;
    let two = Balancer::start(&[&a, &b]).await?;
    let transport = transport_for(&[&a, &b])?;
    let url = two.url()?;
    let load = Load {
        transport: &transport,
        url: &url,
        creds: &creds,
        body: &body,
        ..load
    };
    let double = measure(&load, &[a.pid()?, b.pid()?], None).await?;

    // The same two, and a kill -9 of one a third into the run.
    let failover = measure(&load, &[a.pid()?], Some((duration / 3, &mut b))).await?;

    let offered = if args.interval > 0.0 {
        format!(
            "every {} s per agent ({:.0}/s offered)",
            args.interval,
            creds.len() as f64 / args.interval
        )
    } else {
        "closed loop".to_owned()
    };
    let ratio = double.cpu_us / single.cpu_us;
    if args.json {
        let phase = |p: &Phase| {
            serde_json::json!({
                "checkins_ok": p.ok, "errors": p.errors, "first_error": p.first_error,
                "duration_s": p.elapsed, "checkins_per_s": p.ok as f64 / p.elapsed,
                "p50_ms": p.p50, "p99_ms": p.p99, "server_cpu_us_per_checkin": p.cpu_us,
            })
        };
        let (broken, first, last, unrecovered) = failover.failover.unwrap_or_default();
        println!(
            "{}",
            serde_json::json!({
                "bench": "checkin-two-servers", "agents": creds.len(), "interval_s": args.interval,
                "connections": args.connections, "one_server": phase(&single),
                "two_servers": phase(&double), "cpu_ratio": ratio,
                "failover": {
                    "during": phase(&failover), "connections_broken": broken,
                    "first_recovery_ms": first.map(|d| d.as_secs_f64() * 1000.0),
                    "last_recovery_ms": last.map(|d| d.as_secs_f64() * 1000.0),
                    "not_recovered": unrecovered,
                },
            })
        );
    } else {
        println!(
            "PostgreSQL, {} agents, {offered}, {} connections through HAProxy (TCP), {:.0} s per phase",
            creds.len(),
            args.connections,
            duration.as_secs_f64()
        );
        println!(
            "{:<34} {:>8} {:>9} {:>9} {:>10} {:>7}",
            "", "ckin/s", "p50 ms", "p99 ms", "CPU µs/ck", "errors"
        );
        row("one server", &single);
        row("two servers", &double);
        row("two, one killed a third in", &failover);
        println!("server CPU per check-in, two / one: {ratio:.2}× (target ≤ 1.2×)");
        if let Some((broken, first, last, unrecovered)) = failover.failover {
            println!(
                "failover: {broken} connections broken by the kill; first check-in served by the survivor {} after the kill, last of them {}{}",
                first.map_or("never".to_owned(), |d| format!(
                    "{:.0} ms",
                    d.as_secs_f64() * 1000.0
                )),
                last.map_or("never".to_owned(), |d| format!(
                    "{:.0} ms",
                    d.as_secs_f64() * 1000.0
                )),
                if unrecovered > 0 {
                    format!(", {unrecovered} never recovered")
                } else {
                    String::new()
                }
            );
        }
        for (label, p) in [("one", &single), ("two", &double), ("failover", &failover)] {
            if let Some(e) = &p.first_error {
                println!("first error ({label}): {e}");
            }
        }
    }
    drop(two);
    let clean = single.errors == 0
        && double.errors == 0
        && failover
            .failover
            .is_some_and(|(_, first, _, unrecovered)| first.is_some() && unrecovered == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
