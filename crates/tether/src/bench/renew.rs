//! `tether bench renew`: issue, deploy and renew N certificates end to end,
//! through the real processes an installation runs.
//!
//! First the CA alone: a throwaway built-in CA signs checked CSRs in this
//! process, one at a time, which gives its signatures per second. Then a
//! real `tether server` (SQLite, its built-in CA made by `tether certs ca
//! init`), A real `tether-agent` processes of kind provisioning and one
//! real nginx per agent (master and worker, as in production) serving
//! that agent's share of the N PEM sets, one SNI server block each. With
//! `--issuer acme:NAME` the server registers an account with the ACME CA
//! at `--acme-directory` under NAME, and one more nginx serves the agents'
//! shared webroot on `--http01-listen`, where the CA validates http-01 (one
//! validation port for every agent: the agents write their tokens there).
//! Two measured phases:
//! 1. deploy: N `deploy` tasks through the admin API (what `tether certs
//!    deploy` sends); each agent makes the key and CSR, the CA signs (or
//!    the ACME CA, once the agent has put the challenge in the webroot),
//!    the agent writes the set, reloads nginx and verifies by a handshake;
//! 2. renew: `tether certs renew FP` (the admin API's renew) for each
//!    certificate; the server's renewal job creates a deploy task per
//!    location and follows it to `verified`.
//!
//! Each phase reports its wall time, the server process's CPU (utime +
//! stime from /proc) and the agents' CPU, per certificate. The end is
//! found with cheap queries (is any task still queued or leased?) so the
//! watching costs the server little; the full listing is read once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tether_client::ApiClient;
use tether_wire::{
    AgentKind, AgentStatus, CreateTokenRequest, NewTask, RenewalState, TaskKind, TaskTarget,
};
use tokio::time::Instant;

use super::{ServerProcess, TempDir, process_cpu_ticks, sibling_binary, ticks_per_second};

#[derive(Debug, Clone, Args)]
pub struct RenewArgs {
    /// Certificates: each its own PEM set and nginx server block (at most
    /// 1,000, the most renewals the server's listing returns).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub certs: u32,
    /// Provisioning agents (`tether-agent run` processes), each with its
    /// own nginx; certificate i goes to agent i mod A.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub agents: u32,
    /// Deploys each agent runs at once (the policy's
    /// `max_concurrent_tasks`, 1 to 32).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub concurrency: u32,
    /// The deploy spec's issuer: `builtin` (the control plane's CA) or
    /// `acme:NAME`, an ACME CA the bench registers on its server under
    /// NAME (with `--acme-directory` and `--http01-listen`).
    #[arg(long, default_value = "builtin")]
    pub issuer: String,
    /// With `--issuer acme:NAME`: the ACME CA's directory URL.
    #[arg(long)]
    pub acme_directory: Option<String>,
    /// With `--issuer acme:NAME`: the CA certificate (PEM) that signs the
    /// ACME API's TLS certificate, for a private ACME server.
    #[arg(long)]
    pub acme_ca_file: Option<PathBuf>,
    /// With `--issuer acme:NAME`: the address and port the ACME CA
    /// validates http-01 on (ADDRESS:PORT), where the bench serves the
    /// agents' shared webroot with one nginx.
    #[arg(long)]
    pub http01_listen: Option<std::net::SocketAddr>,
    /// CSRs the in-process CA signs to measure its signatures per second.
    #[arg(long, default_value_t = 2000)]
    pub sign_samples: u32,
    /// A phase that has not finished after this long fails the bench.
    #[arg(long, default_value = "30m")]
    pub phase_timeout: humantime::Duration,
    /// The endpoint binary; default: `tether-agent` next to this `tether`.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// The nginx binary (searched in PATH, then /usr/sbin).
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Admin API calls in flight while the bench creates tasks or renewals.
const ADMIN_WORKERS: usize = 8;

pub async fn run(args: RenewArgs) -> anyhow::Result<ExitCode> {
    let issuer = Issuer::from_args(&args)?;
    let agent_bin = match &args.agent_bin {
        Some(p) => p.clone(),
        None => sibling_binary("tether-agent")?,
    };
    let nginx_bin = find_program(&args.nginx)?;
    let n = args.certs as usize;
    let a = args.agents as usize;
    let ticks = ticks_per_second();
    let work = TempDir::new("tether-bench-renew")?;

    progress(&args, "the CA alone: signing checked CSRs in this process");
    let sign = sign_rate(&work.path().join("sign"), args.sign_samples)?;

    progress(&args, "starting the server, agents and nginx");
    let server = ServerProcess::start_with_ca().await?;
    let server_pid = server.pid()?;
    let admin = server.admin()?;
    admin
        .put_policy(
            "default",
            &tether_wire::PolicyUpdate {
                defs: Default::default(),
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: Vec::new(),
                max_concurrent_tasks: Some(args.concurrency),
                if_revision: None,
            },
        )
        .await?;
    let agents = start_agents(&server, &admin, &agent_bin, a, work.path()).await?;
    // An ACME issuer: its account, and the webroot every agent answers in.
    let mut webroot = None;
    if let Issuer::Acme {
        name,
        directory,
        ca_pem,
        http01,
    } = &issuer
    {
        progress(&args, &format!("registering acme:{name} at {directory}"));
        admin
            .add_acme_issuer(&tether_wire::AcmeIssuerAdd {
                name: name.clone(),
                directory: directory.clone(),
                ca_pem: ca_pem.clone(),
                email: None,
            })
            .await
            .context("registering the ACME issuer")?;
        let root = work.path().join("webroot");
        std::fs::create_dir_all(&root)?;
        webroot = Some((
            NginxProcess::start_webroot(
                &nginx_bin,
                &work.path().join("nginx-http01"),
                &root,
                *http01,
            )
            .await?,
            root,
        ));
    }
    let challenge = webroot
        .as_ref()
        .map(|(_, root)| tether_deploy::spec::ChallengeSpec::Webroot(root.clone()));

    // The sites: certificate i is served by nginx i mod A under its own
    // name, from its own PEM set, first a placeholder the CA never issued.
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        let dir = work.path().join(format!("site-{i:04}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), &sign.placeholder_cert)?;
        std::fs::write(dir.join("fullchain.pem"), &sign.placeholder_cert)?;
        std::fs::write(dir.join("key.pem"), &sign.placeholder_key)?;
        sites.push(Site {
            name: format!("cert-{i:04}.bench.test"),
            dir,
        });
    }
    let mut nginxes = Vec::with_capacity(a);
    for j in 0..a {
        let mine: Vec<&Site> = sites.iter().skip(j).step_by(a).collect();
        nginxes.push(
            NginxProcess::start(&nginx_bin, &work.path().join(format!("nginx-{j}")), &mine).await?,
        );
    }
    let placeholder_fp = fingerprint_of(&sites[0].dir.join("cert.pem"))?;

    // Phase 1: issue and deploy.
    progress(&args, &format!("phase 1: {n} deploy tasks"));
    let before = Cpu::read(server_pid, &agents)?;
    let started = Instant::now();
    let specs: Vec<(uuid::Uuid, serde_json::Value)> = sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let nginx = &nginxes[i % a];
            let spec = deploy_spec(
                site,
                nginx.port,
                &nginx.reload_command(),
                issuer.spec(),
                challenge.clone(),
            )?;
            Ok((agents[i % a].id, spec))
        })
        .collect::<anyhow::Result<_>>()?;
    let created_in = create_tasks(&server, specs).await?;
    wait_queue_empty(&admin, args.phase_timeout.into(), &args, "deploy").await?;
    let deploy_secs = started.elapsed().as_secs_f64();
    let after = Cpu::read(server_pid, &agents)?;
    let succeeded = admin
        .list_tasks("kind=deploy&state=succeeded&limit=1000")
        .await?
        .len();
    let dead = admin
        .list_tasks("kind=deploy&state=dead&limit=1000")
        .await?;
    let deployed = Phase::new(n, succeeded, deploy_secs, &before, &after, ticks);
    let first_error = dead.first().and_then(|t| t.last_error.clone());
    if succeeded != n {
        bail!(
            "phase 1: {succeeded} of {n} deploys succeeded, {} dead; first error: {}",
            dead.len(),
            first_error.unwrap_or_default()
        );
    }
    let mut first_fps = Vec::with_capacity(n);
    for site in &sites {
        let fp = fingerprint_of(&site.dir.join("cert.pem"))?;
        if fp == placeholder_fp {
            bail!(
                "{}: still the placeholder after its deploy succeeded",
                site.name
            );
        }
        first_fps.push(fp);
    }

    // Phase 2: renew every certificate now (`tether certs renew FP`).
    progress(&args, &format!("phase 2: {n} renewals"));
    let before = Cpu::read(server_pid, &agents)?;
    let started = Instant::now();
    renew_all(&server, &first_fps).await?;
    let deadline = Instant::now() + Duration::from(args.phase_timeout);
    let wanted: HashSet<&str> = first_fps.iter().map(String::as_str).collect();
    let renewals = loop {
        // Renewals step on the server's tick (their tasks appear on the
        // next one, and they turn verified after their tasks end): read
        // the list only when nothing is queued or leased.
        wait_queue_empty(&admin, args.phase_timeout.into(), &args, "renewal").await?;
        let list = admin.renewals().await?;
        let mine: HashMap<&str, &tether_wire::RenewalInfo> = list
            .iter()
            .filter(|r| wanted.contains(r.fingerprint.as_str()))
            .map(|r| (r.fingerprint.as_str(), r))
            .collect();
        let open = mine
            .values()
            .filter(|r| !matches!(r.state, RenewalState::Verified | RenewalState::Failed))
            .count();
        if mine.len() == n && open == 0 {
            break list;
        }
        if Instant::now() > deadline {
            bail!(
                "phase 2: {open} renewals still open after {}",
                args.phase_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let renew_secs = started.elapsed().as_secs_f64();
    let after = Cpu::read(server_pid, &agents)?;
    let by_fp: HashMap<&str, &tether_wire::RenewalInfo> = renewals
        .iter()
        .map(|r| (r.fingerprint.as_str(), r))
        .collect();
    let mut verified = 0;
    let mut failures = Vec::new();
    for (site, fp) in sites.iter().zip(&first_fps) {
        let Some(r) = by_fp.get(fp.as_str()) else {
            failures.push(format!("{}: no renewal", site.name));
            continue;
        };
        let on_disk = fingerprint_of(&site.dir.join("cert.pem"))?;
        match (&r.state, &r.new_fingerprint) {
            (RenewalState::Verified, Some(new)) if *new == on_disk && on_disk != *fp => {
                verified += 1
            }
            _ => failures.push(format!("{}: {} ({})", site.name, r.state, r.reason)),
        }
    }
    let renewed = Phase::new(n, verified, renew_secs, &before, &after, ticks);

    let report = serde_json::json!({
        "bench": "renew",
        "certs": n,
        "agents": a,
        "concurrency_per_agent": args.concurrency,
        "issuer": args.issuer,
        "ca_sign": {
            "samples": sign.samples,
            "signatures_per_s": sign.per_sec(),
            "csr_checks_per_s": sign.samples as f64 / sign.check_secs,
        },
        "deploy": deployed.json(),
        "deploy_tasks_created_s": created_in,
        "renew": renewed.json(),
        "failures": failures,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "certificates       {n} PEM sets, {a} tether-agent processes ({} deploys at once each), {a} nginx",
            args.concurrency
        );
        println!(
            "CA alone           {:.0} signatures/s ({} CSRs, one thread; CSR checks {:.0}/s)",
            sign.per_sec(),
            sign.samples,
            sign.samples as f64 / sign.check_secs
        );
        for (name, p) in [("issue + deploy", &deployed), ("renew", &renewed)] {
            println!(
                "{name:<18} {}/{n} ok in {:.1} s: {:.1} ms per certificate, {:.1} certificates/s",
                p.ok,
                p.wall_secs,
                p.wall_secs * 1000.0 / n as f64,
                n as f64 / p.wall_secs
            );
            println!(
                "{:<18} server CPU {:.2} ms per certificate ({:.1} s), agents' CPU {:.2} ms per certificate",
                "",
                p.server_cpu_secs * 1000.0 / n as f64,
                p.server_cpu_secs,
                p.agents_cpu_secs * 1000.0 / n as f64
            );
        }
        for f in failures.iter().take(5) {
            println!("failed             {}", crate::display::safe(f));
        }
    }
    drop(nginxes);
    drop(webroot);
    drop(agents);
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Who issues the bench's certificates.
#[derive(Debug, PartialEq, Eq)]
enum Issuer {
    Builtin,
    Acme {
        name: String,
        directory: String,
        ca_pem: Option<String>,
        http01: std::net::SocketAddr,
    },
}

impl Issuer {
    /// `--issuer` with the ACME flags, which go together.
    fn from_args(args: &RenewArgs) -> anyhow::Result<Issuer> {
        let acme_flags = args.acme_directory.is_some()
            || args.acme_ca_file.is_some()
            || args.http01_listen.is_some();
        match args.issuer.as_str() {
            "builtin" if acme_flags => bail!(
                "--acme-directory, --acme-ca-file and --http01-listen go with --issuer acme:NAME"
            ),
            "builtin" => Ok(Issuer::Builtin),
            acme if acme.starts_with("acme:") => {
                let name = acme["acme:".len()..].to_owned();
                let (Some(directory), Some(http01)) = (&args.acme_directory, args.http01_listen)
                else {
                    bail!(
                        "--issuer {acme} needs --acme-directory URL and --http01-listen ADDRESS:PORT (where the CA validates http-01)"
                    );
                };
                let ca_pem = match &args.acme_ca_file {
                    Some(path) => Some(
                        std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    ),
                    None => None,
                };
                Ok(Issuer::Acme {
                    name,
                    directory: directory.clone(),
                    ca_pem,
                    http01,
                })
            }
            other => bail!("--issuer {other:?}: expected builtin or acme:NAME"),
        }
    }

    /// The deploy spec's `issuer`.
    fn spec(&self) -> Option<String> {
        match self {
            Issuer::Builtin => None,
            Issuer::Acme { name, .. } => Some(format!("acme:{name}")),
        }
    }
}

/// A progress line on stderr (the figures go to stdout).
fn progress(_args: &RenewArgs, what: &str) {
    eprintln!("bench renew: {what}");
}

/// One measured phase.
struct Phase {
    ok: usize,
    wall_secs: f64,
    server_cpu_secs: f64,
    agents_cpu_secs: f64,
    certs: usize,
}

impl Phase {
    fn new(
        certs: usize,
        ok: usize,
        wall_secs: f64,
        before: &Cpu,
        after: &Cpu,
        ticks: f64,
    ) -> Phase {
        Phase {
            ok,
            wall_secs,
            server_cpu_secs: after.server.saturating_sub(before.server) as f64 / ticks,
            agents_cpu_secs: after.agents.saturating_sub(before.agents) as f64 / ticks,
            certs,
        }
    }

    fn json(&self) -> serde_json::Value {
        let per = |x: f64| x * 1000.0 / self.certs as f64;
        serde_json::json!({
            "ok": self.ok,
            "wall_s": self.wall_secs,
            "per_cert_ms": per(self.wall_secs),
            "certs_per_s": self.certs as f64 / self.wall_secs,
            "server_cpu_s": self.server_cpu_secs,
            "server_cpu_per_cert_ms": per(self.server_cpu_secs),
            "agents_cpu_s": self.agents_cpu_secs,
            "agents_cpu_per_cert_ms": per(self.agents_cpu_secs),
        })
    }
}

/// CPU ticks of the server and of all agents together.
struct Cpu {
    server: u64,
    agents: u64,
}

impl Cpu {
    fn read(server: u32, agents: &[AgentProcess]) -> anyhow::Result<Cpu> {
        let mut sum = 0;
        for a in agents {
            sum += process_cpu_ticks(a.child.id().context("an agent exited")?)?;
        }
        Ok(Cpu {
            server: process_cpu_ticks(server)?,
            agents: sum,
        })
    }
}

/// The in-process CA's signing rate, and a placeholder set for the sites.
struct SignFigures {
    samples: u32,
    sign_secs: f64,
    check_secs: f64,
    placeholder_cert: String,
    placeholder_key: String,
}

impl SignFigures {
    fn per_sec(&self) -> f64 {
        f64::from(self.samples) / self.sign_secs
    }
}

/// Signs `samples` checked CSRs (each its own P-256 key, one name) with a
/// throwaway built-in CA, one at a time as the server's issue call does.
fn sign_rate(dir: &Path, samples: u32) -> anyhow::Result<SignFigures> {
    let samples = samples.max(1);
    std::fs::create_dir_all(dir)?;
    let files = tether_pki::CaFiles::new(dir.join("ca"));
    let kek = tether_pki::Kek::generate_file(&dir.join("ca.kek"))?;
    let now = time::OffsetDateTime::now_utc();
    let ca = tether_pki::ca::init(
        &files,
        &kek,
        "Tether bench",
        tether_pki::ca::RootKeyPlace::Online,
        now,
    )?;
    let mut csrs = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        let names = vec![format!("sign-{i:05}.bench.test")];
        let made = tether_deploy::keygen::generate(&names)?;
        csrs.push((names, made));
    }
    let started = Instant::now();
    let mut checked = Vec::with_capacity(csrs.len());
    for (names, made) in &csrs {
        checked.push(tether_pki::csr::check(made.csr_pem.as_bytes(), names)?);
    }
    let check_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut first = None;
    for c in &checked {
        let issued = ca.sign(c, 90, now)?;
        first.get_or_insert(issued);
    }
    let sign_secs = started.elapsed().as_secs_f64();
    let first = first.context("no certificate signed")?;
    Ok(SignFigures {
        samples,
        sign_secs,
        check_secs,
        placeholder_cert: format!("{}\n{}", first.cert_pem.trim_end(), first.chain_pem),
        placeholder_key: csrs[0].1.key_pem().to_owned(),
    })
}

struct Site {
    name: String,
    dir: PathBuf,
}

/// A deploy task's spec for one site, as `tether certs deploy` builds it.
fn deploy_spec(
    site: &Site,
    port: u16,
    reload: &[String],
    issuer: Option<String>,
    challenge: Option<tether_deploy::spec::ChallengeSpec>,
) -> anyhow::Result<serde_json::Value> {
    let spec = tether_deploy::DeploySpec {
        names: vec![site.name.clone()],
        days: Some(90),
        target: tether_deploy::Target::Pem(tether_deploy::spec::PemTarget {
            cert: site.dir.join("cert.pem"),
            key: site.dir.join("key.pem"),
            chain: None,
            fullchain: Some(site.dir.join("fullchain.pem")),
            owner: None,
            group: None,
            mode: None,
            key_mode: None,
        }),
        reload: tether_deploy::spec::ReloadSpec {
            command: reload.to_vec(),
            timeout_secs: None,
        },
        verify: Some(tether_deploy::spec::VerifySpec {
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            sni: Some(site.name.clone()),
            timeout_secs: None,
        }),
        issuer,
        challenge,
        ssh: None,
    };
    spec.check()
        .map_err(|e| anyhow::anyhow!("the bench's deploy spec: {e}"))?;
    Ok(serde_json::to_value(&spec)?)
}

/// Creates the deploy tasks, `ADMIN_WORKERS` calls at a time; returns the
/// seconds it took.
async fn create_tasks(
    server: &ServerProcess,
    specs: Vec<(uuid::Uuid, serde_json::Value)>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let specs = std::sync::Arc::new(specs);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..ADMIN_WORKERS {
        let (admin, specs) = (server.admin()?, specs.clone());
        workers.spawn(async move {
            for (agent_id, spec) in specs.iter().skip(w).step_by(ADMIN_WORKERS) {
                admin
                    .create_task(&NewTask {
                        kind: TaskKind::Deploy,
                        spec: spec.clone(),
                        target: TaskTarget::Agent {
                            agent_id: *agent_id,
                        },
                        max_attempts: Some(1),
                        lease_secs: None,
                        deadline_secs: None,
                        allowed_hours: None,
                        schedule: None,
                        require_approval: false,
                    })
                    .await
                    .context("creating a deploy task")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `tether certs renew FP` for each certificate, `ADMIN_WORKERS` at a time.
async fn renew_all(server: &ServerProcess, fps: &[String]) -> anyhow::Result<()> {
    let fps = std::sync::Arc::new(fps.to_vec());
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..ADMIN_WORKERS {
        let (admin, fps) = (server.admin()?, fps.clone());
        workers.spawn(async move {
            for fp in fps.iter().skip(w).step_by(ADMIN_WORKERS) {
                admin
                    .renew_cert(fp)
                    .await
                    .with_context(|| format!("renewing {fp}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(())
}

/// Waits until no task is queued or leased, asking for one task of each
/// state (cheap for the server) every 200 ms.
async fn wait_queue_empty(
    admin: &ApiClient,
    timeout: Duration,
    args: &RenewArgs,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut said = Instant::now();
    loop {
        let queued = admin.list_tasks("state=queued&limit=1").await?.len();
        let leased = admin.list_tasks("state=leased&limit=1").await?.len();
        if queued + leased == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: tasks still queued or leased after {timeout:?}");
        }
        if said.elapsed() > Duration::from_secs(10) {
            let mut left = 0;
            for state in ["queued", "leased"] {
                left += admin
                    .list_tasks(&format!("state={state}&limit=1000"))
                    .await
                    .map_or(0, |l| l.len());
            }
            progress(args, &format!("{what}: {left} tasks queued or leased"));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `tether-agent run` process, killed on drop.
struct AgentProcess {
    id: uuid::Uuid,
    child: tokio::process::Child,
}

/// Enrolls `count` provisioning agents with the real endpoint binary and
/// runs them; returns once all are Active.
async fn start_agents(
    server: &ServerProcess,
    admin: &ApiClient,
    agent_bin: &Path,
    count: usize,
    work: &Path,
) -> anyhow::Result<Vec<AgentProcess>> {
    let token = admin
        .create_token(&CreateTokenRequest {
            kind: AgentKind::Provisioning,
            group: "bench".into(),
            valid_for_secs: 3600,
            not_before: None,
            max_uses: Some(u32::try_from(count)?),
            require_approval: false,
            policy: None,
            site: None,
        })
        .await?;
    let me = std::process::id().to_string();
    let mut children = Vec::with_capacity(count);
    for j in 0..count {
        let state = work.join(format!("agent-{j}"));
        std::fs::create_dir_all(&state)?;
        let out = tokio::process::Command::new(agent_bin)
            .args(["enroll", "--server", &server.endpoint.url, "--token"])
            .arg(&token.token)
            .args(["--ca-fingerprint", &server.endpoint.ca_fingerprint])
            .args([
                "--kind",
                "provisioning",
                "--name",
                &format!("bench-agent-{j}"),
            ])
            .arg("--state-dir")
            .arg(&state)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "tether-agent enroll failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(state.join("agent.out"))?;
        let child = tokio::process::Command::new(agent_bin)
            .arg("run")
            .arg("--state-dir")
            .arg(&state)
            .arg("--log-dir")
            .arg(state.join("logs"))
            .args(["--exit-with-parent", &me])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting tether-agent run")?;
        children.push((format!("bench-agent-{j}"), child));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = admin.list_agents(Some(AgentStatus::Active)).await?;
        let ids: HashMap<&str, uuid::Uuid> =
            active.iter().map(|a| (a.name.as_str(), a.id)).collect();
        if children
            .iter()
            .all(|(name, _)| ids.contains_key(name.as_str()))
        {
            return children
                .into_iter()
                .map(|(name, child)| {
                    Ok(AgentProcess {
                        id: ids[name.as_str()],
                        child,
                    })
                })
                .collect();
        }
        if Instant::now() > deadline {
            bail!("the agents were not all Active within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One nginx (a master and a worker) serving its sites on one TLS port by
/// SNI; stopped on drop (SIGTERM to the master stops its worker).
struct NginxProcess {
    child: tokio::process::Child,
    port: u16,
    bin: PathBuf,
    conf: PathBuf,
}

impl NginxProcess {
    async fn start(bin: &Path, dir: &Path, sites: &[&Site]) -> anyhow::Result<NginxProcess> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut servers = String::new();
        for (k, s) in sites.iter().enumerate() {
            servers.push_str(&format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl{};\n    server_name {};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    return 204;\n  }}\n",
                if k == 0 { " default_server" } else { "" },
                s.name,
                s.dir.join("fullchain.pem").display(),
                s.dir.join("key.pem").display(),
            ));
        }
        NginxProcess::run(bin, dir, true, &servers, ([127, 0, 0, 1], port).into()).await
    }

    /// One nginx process (no worker: it runs as this user, so it reads the
    /// files the agents write) serving `root` over plain HTTP on `listen`:
    /// the shared webroot the ACME CA validates http-01 in.
    async fn start_webroot(
        bin: &Path,
        dir: &Path,
        root: &Path,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<NginxProcess> {
        std::fs::create_dir_all(dir)?;
        let servers = format!(
            "  server {{\n    listen {listen};\n    root {};\n  }}\n",
            root.display()
        );
        NginxProcess::run(bin, dir, false, &servers, listen).await
    }

    /// Writes the config around `servers` and starts nginx, returning once
    /// it accepts on `ready`.
    async fn run(
        bin: &Path,
        dir: &Path,
        master: bool,
        servers: &str,
        ready: std::net::SocketAddr,
    ) -> anyhow::Result<NginxProcess> {
        let d = dir.display();
        let master = if master { "on" } else { "off" };
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process {master};\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/client_body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{servers}}}\n"
            ),
        )?;
        let out = std::fs::File::create(dir.join("nginx.out"))?;
        let mut child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(ready).await.is_err() {
            if child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "nginx did not start: {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(NginxProcess {
            child,
            port: ready.port(),
            bin: bin.to_owned(),
            conf,
        })
    }

    fn reload_command(&self) -> Vec<String> {
        reload_command(&self.bin, &self.conf)
    }
}

/// `nginx … -s reload` for the nginx whose config is `conf` (its prefix
/// and logs beside it). The agent splits a reload command on spaces, so no
/// argument holds one: the globals are in the file, not in `-g`.
fn reload_command(bin: &Path, conf: &Path) -> Vec<String> {
    let dir = conf.parent().unwrap_or(Path::new("/"));
    vec![
        bin.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-p".into(),
        dir.display().to_string(),
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-s".into(),
        "reload".into(),
    ]
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        // SIGKILL would leave the worker running: SIGTERM the master,
        // which stops its worker, wait (bounded) until it has exited, and
        // only then kill what is left.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..100 {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next());
                if matches!(state, None | Some("Z")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let _ = self.child.start_kill();
    }
}

/// The `sha256:…` fingerprint of a PEM file's first certificate.
fn fingerprint_of(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem)
        .with_context(|| format!("no certificate in {}", path.display()))?;
    Ok(tether_transport::fingerprint(&der))
}

/// `name` as given if it holds a '/', else found in PATH or /usr/sbin.
fn find_program(name: &Path) -> anyhow::Result<PathBuf> {
    if name.components().count() > 1 {
        return Ok(name.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} not found in PATH or /usr/sbin; install it",
                name.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_spec_is_what_the_agent_reads() {
        let site = Site {
            name: "cert-0007.bench.test".into(),
            dir: PathBuf::from("/tmp/bench/site-0007"),
        };
        let conf = PathBuf::from("/tmp/bench/nginx-7/nginx.conf");
        let reload = [
            "/usr/sbin/nginx",
            "-c",
            "/tmp/bench/nginx-7/nginx.conf",
            "-p",
            "/tmp/bench/nginx-7",
            "-e",
            "/tmp/bench/nginx-7/error.log",
            "-s",
            "reload",
        ];
        let spec = deploy_spec(
            &site,
            8443,
            &reload_command(Path::new(reload[0]), &conf),
            None,
            None,
        )
        .expect("spec");
        let read = tether_deploy::DeploySpec::from_json(&spec).expect("the agent's parser");
        assert_eq!(read.names, vec!["cert-0007.bench.test".to_owned()]);
        assert_eq!(read.issuer(), Ok(tether_deploy::spec::Issuer::Builtin));
        assert_eq!(read.reload.command, reload);
        let verify = read.verify.expect("verify");
        assert_eq!(
            (verify.port, verify.sni.as_deref()),
            (8443, Some("cert-0007.bench.test"))
        );
    }

    #[test]
    fn an_acme_deploy_spec_answers_in_the_shared_webroot() {
        let site = Site {
            name: "cert-0003.bench.test".into(),
            dir: PathBuf::from("/tmp/bench/site-0003"),
        };
        let spec = deploy_spec(
            &site,
            8443,
            &["/bin/true".to_owned()],
            Some("acme:pebble".into()),
            Some(tether_deploy::spec::ChallengeSpec::Webroot(
                "/tmp/bench/webroot".into(),
            )),
        )
        .expect("spec");
        let read = tether_deploy::DeploySpec::from_json(&spec).expect("the agent's parser");
        assert_eq!(
            read.issuer(),
            Ok(tether_deploy::spec::Issuer::Acme("pebble".into()))
        );
        assert_eq!(
            read.challenge,
            Some(tether_deploy::spec::ChallengeSpec::Webroot(
                "/tmp/bench/webroot".into()
            ))
        );
    }

    fn args(line: &[&str]) -> RenewArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            renew: RenewArgs,
        }
        let mut argv = vec!["bench-renew"];
        argv.extend_from_slice(line);
        Cli::try_parse_from(argv).expect("parses").renew
    }

    #[test]
    fn the_acme_flags_go_with_an_acme_issuer() {
        assert_eq!(
            Issuer::from_args(&args(&[])).expect("builtin"),
            Issuer::Builtin
        );
        let acme = Issuer::from_args(&args(&[
            "--issuer",
            "acme:pebble",
            "--acme-directory",
            "https://10.200.250.2:14000/dir",
            "--http01-listen",
            "10.200.250.1:5002",
        ]))
        .expect("acme");
        assert_eq!(acme.spec().as_deref(), Some("acme:pebble"));
        assert_eq!(
            acme,
            Issuer::Acme {
                name: "pebble".into(),
                directory: "https://10.200.250.2:14000/dir".into(),
                ca_pem: None,
                http01: "10.200.250.1:5002".parse().expect("addr"),
            }
        );
        // Without where to validate, or ACME flags without ACME: refused.
        let e = Issuer::from_args(&args(&["--issuer", "acme:pebble"])).expect_err("refused");
        assert!(e.to_string().contains("--http01-listen"), "{e}");
        let e =
            Issuer::from_args(&args(&["--http01-listen", "127.0.0.1:80"])).expect_err("refused");
        assert!(e.to_string().contains("acme:NAME"), "{e}");
        assert!(Issuer::from_args(&args(&["--issuer", "letsencrypt"])).is_err());
        // An unreadable CA file is named.
        let e = Issuer::from_args(&args(&[
            "--issuer",
            "acme:p",
            "--acme-directory",
            "https://ca.example/dir",
            "--http01-listen",
            "127.0.0.1:80",
            "--acme-ca-file",
            "/nonexistent/ca.pem",
        ]))
        .expect_err("refused");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
