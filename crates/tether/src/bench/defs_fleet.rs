//! `tether bench defs-fleet`: the server's cost of one publish reaching a
//! fleet, with deltas against full downloads.
//!
//! A real server process publishes v1 and v2 of a generated signature
//! database (`--changed` percent of records differ). Then `--agents`
//! simulated agents each make exactly the requests the real updater makes
//! for v2 (timestamp.json, the snapshot, the targets metadata, then the
//! delta from v1 or the full object), over one kept-alive HTTPS connection
//! per agent, as the updater does. The simulated agents do not verify signatures or
//! apply anything: only the server's side is measured, as bytes served and
//! the server process's CPU time (/proc/PID/stat), once with deltas and
//! once with full objects, side by side in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use tether_transport::{Transport, TransportConfig};
use tokio::time::Instant;
use url::Url;

use super::{ServerProcess, process_cpu_ticks, ticks_per_second};

#[derive(Debug, Clone, Args)]
pub struct DefsFleetArgs {
    /// Simulated agents updating from v1 to v2, per mode.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Records (lines) in the generated database.
    #[arg(long, default_value_t = 20_000)]
    pub records: usize,
    /// Percent of records changed between v1 and v2.
    #[arg(long, default_value_t = 0.5)]
    pub changed: f64,
    /// Agents updating at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one mode cost the server.
#[derive(Debug, serde::Serialize)]
struct ModeCost {
    mode: &'static str,
    agents: usize,
    bytes_served: u64,
    bytes_per_agent: u64,
    server_cpu_s: f64,
    server_cpu_ms_per_agent: f64,
    wall_s: f64,
    failures: u64,
}

pub async fn run(args: DefsFleetArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.agents == 0 || args.records == 0 || args.concurrency == 0 {
        bail!("--agents, --records and --concurrency must be at least 1");
    }
    let server = ServerProcess::start(None).await?;
    let admin = server.admin()?;
    let bulk = Transport::new(TransportConfig {
        max_body_bytes: 1 << 30,
        ..server.transport()?.config().clone()
    })?;
    let admin = admin.with_bulk_transport(bulk);
    let (v1, v2) = databases(args.records, args.changed);
    admin
        .publish_defs("bench", Bytes::from(v1), Some("v1"))
        .await
        .context("publishing v1")?;
    let published = admin
        .publish_defs("bench", Bytes::from(v2), Some("v2"))
        .await
        .context("publishing v2")?;
    let delta = published
        .deltas
        .iter()
        .find(|d| d.from_version == 1)
        .context("the server published no delta from v1")?;

    let base = Url::parse(&server.endpoint.url)?.join("/defs/")?;
    let transport = Arc::new(server.transport()?);
    let plan = Plan::read(&transport, &base).await?;
    let pid = server.pid()?;
    let mut costs = Vec::new();
    for (mode, object) in [("delta", &plan.delta_path), ("full", &plan.full_path)] {
        costs.push(
            fleet(
                mode,
                &transport,
                &base,
                &plan.metadata,
                object,
                pid,
                args.agents,
                args.concurrency,
            )
            .await?,
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": args.records,
                "content_bytes": published.length,
                "full_bytes": published.full_size,
                "delta_bytes": delta.size,
                "delta_kind": delta.kind,
                "modes": costs,
            })
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!(
        "defs-fleet: {} records, content {} B, full object {} B, {} delta {} B ({:.2} % of full)",
        args.records,
        published.length,
        published.full_size,
        delta.kind,
        delta.size,
        delta.size as f64 * 100.0 / published.full_size as f64
    );
    println!(
        "{:<6} {:>7} {:>14} {:>12} {:>10} {:>12} {:>8} {:>8}",
        "mode", "agents", "bytes served", "B/agent", "cpu s", "cpu ms/agent", "wall s", "failed"
    );
    for c in &costs {
        println!(
            "{:<6} {:>7} {:>14} {:>12} {:>10.2} {:>12.3} {:>8.1} {:>8}",
            c.mode,
            c.agents,
            c.bytes_served,
            c.bytes_per_agent,
            c.server_cpu_s,
            c.server_cpu_ms_per_agent,
            c.wall_s,
            c.failures
        );
    }
    if let [d, f] = &costs[..] {
        println!(
            "full / delta: {:.1}× the bytes, {:.1}× the server CPU",
            f.bytes_served as f64 / d.bytes_served.max(1) as f64,
            f.server_cpu_s / d.server_cpu_s.max(1e-9)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The files an updater fetches for v2.
struct Plan {
    metadata: Vec<String>,
    delta_path: String,
    full_path: String,
}

impl Plan {
    async fn read(transport: &Transport, base: &Url) -> anyhow::Result<Plan> {
        let get = |path: String| async move {
            let url = base.join(&path)?;
            let req = http::Request::get(url.as_str()).body(Bytes::new())?;
            let resp = transport.request(&url, req).await?;
            if resp.status != 200 {
                bail!("GET {path}: HTTP {}", resp.status);
            }
            Ok::<_, anyhow::Error>(serde_json::from_slice::<serde_json::Value>(&resp.body)?)
        };
        let ts = get("metadata/timestamp.json".into()).await?;
        let snap_v = ts["signed"]["meta"]["snapshot.json"]["version"]
            .as_u64()
            .context("timestamp without a snapshot version")?;
        let snap = get(format!("metadata/{snap_v}.snapshot.json")).await?;
        let targets_v = snap["signed"]["meta"]["targets.json"]["version"]
            .as_u64()
            .context("snapshot without a targets version")?;
        let targets = get(format!("metadata/{targets_v}.targets.json")).await?;
        let listed = targets["signed"]["targets"]
            .as_object()
            .context("targets metadata without targets")?;
        let path_of = |name: &str| -> anyhow::Result<String> {
            let t = listed
                .get(name)
                .with_context(|| format!("no target {name}"))?;
            let sha = t["hashes"]["sha256"].as_str().context("no sha256")?;
            Ok(tether_defs::layout::target_path(sha, name))
        };
        let delta_name = listed
            .keys()
            .find(|k| k.starts_with("bench.v1-v2."))
            .context("no delta target from v1")?
            .clone();
        Ok(Plan {
            metadata: vec![
                "metadata/timestamp.json".into(),
                format!("metadata/{snap_v}.snapshot.json"),
                format!("metadata/{targets_v}.targets.json"),
            ],
            delta_path: path_of(&delta_name)?,
            full_path: path_of(&tether_defs::layout::full_name("bench", 2))?,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn fleet(
    mode: &'static str,
    transport: &Arc<Transport>,
    base: &Url,
    metadata: &[String],
    object: &str,
    pid: u32,
    agents: usize,
    concurrency: usize,
) -> anyhow::Result<ModeCost> {
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut paths: Vec<Url> = metadata
        .iter()
        .map(|p| base.join(p))
        .collect::<Result<_, _>>()?;
    paths.push(base.join(object)?);
    let paths = Arc::new(paths);
    let cpu0 = process_cpu_ticks(pid)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(agents) {
        let (transport, paths, bytes, failures, next) = (
            transport.clone(),
            paths.clone(),
            bytes.clone(),
            failures.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < agents as u64 {
                // One agent's update: one connection for its four files, as
                // the updater does.
                match update(&transport, &paths).await {
                    Ok(n) => {
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a simulated update failed");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.context("a simulated agent panicked")?;
    }
    let wall = started.elapsed();
    // Let the server finish accounting for the last responses.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_s = (process_cpu_ticks(pid)? - cpu0) as f64 / ticks_per_second();
    let served = bytes.load(Ordering::Relaxed);
    Ok(ModeCost {
        mode,
        agents,
        bytes_served: served,
        bytes_per_agent: served / agents as u64,
        server_cpu_s: cpu_s,
        server_cpu_ms_per_agent: cpu_s * 1000.0 / agents as f64,
        wall_s: wall.as_secs_f64(),
        failures: failures.load(Ordering::Relaxed),
    })
}

async fn update(transport: &Transport, urls: &[Url]) -> anyhow::Result<u64> {
    let first = urls.first().context("nothing to fetch")?;
    let mut conn = transport.connect(first).await?;
    let mut n = 0u64;
    for url in urls {
        let req = http::Request::get(url.as_str()).body(Bytes::new())?;
        let mut resp = conn.send_streaming(req).await?;
        if resp.status != 200 {
            bail!("GET {url}: HTTP {}", resp.status);
        }
        while let Some(chunk) = resp.body.chunk().await? {
            n += chunk.len() as u64;
        }
    }
    Ok(n)
}

/// A deterministic signature-like database and its next version with
/// `changed` percent of records modified.
fn databases(records: usize, changed: f64) -> (Vec<u8>, Vec<u8>) {
    let line = |i: usize, generation: u32| {
        // A cheap deterministic hash so signatures look random.
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(generation);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        format!(
            "Win.Trojan.Agent-{i}-{generation}:0:*:{x:016x}{:016x}{:016x}:73\n",
            x.rotate_left(17),
            x.rotate_left(41)
        )
    };
    let every = if changed > 0.0 {
        (100.0 / changed).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let mut v1 = String::new();
    let mut v2 = String::new();
    for i in 0..records {
        v1.push_str(&line(i, 0));
        v2.push_str(&line(i, u32::from(i % every == 0)));
    }
    (v1.into_bytes(), v2.into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_databases_differ_by_the_asked_share_of_records() {
        let (a, b) = super::databases(10_000, 0.5);
        let (a, b) = (
            String::from_utf8(a).expect("utf-8"),
            String::from_utf8(b).expect("utf-8"),
        );
        let diff = a.lines().zip(b.lines()).filter(|(x, y)| x != y).count();
        assert_eq!(diff, 50);
        assert_eq!(a.lines().count(), 10_000);
    }
}
