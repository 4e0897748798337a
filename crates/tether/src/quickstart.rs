//! `tether quickstart`: the 5-minute tour. Starts the control plane on
//! 127.0.0.1 with embedded SQLite, enrolls and starts one local agent as a
//! real child process (`tether agent run`), and prints what an admin needs.
//! Running it again reuses the same data dir and the same agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tether_wire::{AgentKind, AgentStatus, CreateTokenRequest};
use time::OffsetDateTime;

use crate::admin::{agent_table, trust_config};
use crate::cli::ServerArgs;
use crate::endpoint::DEFAULT_DATA_DIR;
use crate::policy::PolicyEdit;
use crate::server_cmd;

#[derive(Debug, Clone, Args)]
pub struct QuickstartArgs {
    /// Where everything lives: database, PKI, admin credential, the local agent's state.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address for the control plane.
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Check-in interval of the default policy, in seconds (10 on the first
    /// run; a resumed run keeps the policy as the admin left it unless this
    /// is given).
    #[arg(long)]
    pub checkin_interval: Option<u32>,
}

/// The tour's check-in interval: short, so status changes show within seconds.
const TOUR_CHECKIN_SECS: u32 = 10;

pub async fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    server_cmd::init_tracing();
    // Listen for SIGTERM and SIGINT before anything starts: a signal that
    // arrives while the tour is still setting up (a `timeout`, a service
    // manager) must stop the agent child too, not kill this process by the
    // default action and leave the agent orphaned.
    let stop = stop_requested().context("listening for SIGTERM")?;
    tokio::pin!(stop);
    let data_dir = std::path::absolute(&args.data_dir).unwrap_or(args.data_dir.clone());
    let server_args = ServerArgs {
        listen: Some(args.listen),
        data_dir: Some(data_dir.clone()),
        database_url: None,
        config: None,
        tls_cert: None,
        tls_key: None,
    };
    let config = server_cmd::effective_config(&server_args)?;
    let server = server_cmd::start(config)
        .await
        .context("starting the control plane")?;

    let admin_token = std::fs::read_to_string(&server.admin_token_path)
        .with_context(|| format!("reading {}", server.admin_token_path.display()))?
        .trim()
        .to_owned();
    let transport = tether_transport::Transport::new(tether_transport::TransportConfig {
        proxy: tether_transport::ProxySetting::Direct,
        trust: trust_config(Some(&server.ca_pem_path), None)?,
        user_agent: format!("tether-quickstart/{}", tether_wire::VERSION),
        ..Default::default()
    })?;
    let base = url::Url::parse(&server.url)?;
    let admin = tether_client::ApiClient::new(transport, base).with_bearer(admin_token);

    configure_policy(&admin, args.checkin_interval).await?;
    publish_sample(&admin).await?;

    let agent_dir = data_dir.join("agent");
    let exe = std::env::current_exe().context("locating the tether executable")?;
    if !agent_dir.join("credential").exists() {
        let token = admin
            .create_token(&CreateTokenRequest {
                kind: AgentKind::Discovery,
                group: "quickstart".into(),
                valid_for_secs: 600,
                not_before: None,
                max_uses: Some(1),
                require_approval: false,
                policy: None,
                site: None,
            })
            .await
            .context("creating the local agent's enrollment token")?;
        let status = tokio::process::Command::new(&exe)
            .args([
                "agent",
                "enroll",
                "--server",
                &server.url,
                "--token",
                &token.token,
            ])
            .args([
                "--ca-fingerprint",
                &server.ca_fingerprint,
                "--name",
                "quickstart-agent",
            ])
            .arg("--state-dir")
            .arg(&agent_dir)
            .stdin(Stdio::null())
            // Its advice ("start it with…") does not apply here: quickstart starts it.
            .stdout(Stdio::null())
            .status()
            .await
            .context("running `tether agent enroll`")?;
        if !status.success() {
            bail!(
                "enrolling the local agent failed ({status}); see {}",
                agent_dir.join("logs").display()
            );
        }
    }

    let mut agent = spawn_agent(&exe, &agent_dir)?;
    let tour = tour(&args, &admin, &server, &data_dir, &agent_dir);
    let interrupted = tokio::select! {
        done = tour => {
            // On an error the agent is killed when `agent` is dropped.
            done?;
            false
        }
        () = &mut stop => true,
    };
    if !interrupted {
        tokio::select! {
            () = &mut stop => {}
            status = agent.wait() => {
                eprintln!("the local agent exited ({}); see {}", status.map(|s| s.to_string()).unwrap_or_default(), agent_dir.join("logs").display());
            }
        }
    }
    stop_agent(&mut agent).await;
    server.shutdown().await;
    println!("Stopped. Run `tether quickstart` again to resume with the same data.");
    Ok(ExitCode::SUCCESS)
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when it is first polled.
fn stop_requested() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The tour once the agent runs: a token for the next agent, the first
/// check-in, the sample definitions, and what an admin needs printed.
async fn tour(
    args: &QuickstartArgs,
    admin: &tether_client::ApiClient,
    server: &tether_server::RunningServer,
    data_dir: &Path,
    agent_dir: &Path,
) -> anyhow::Result<()> {
    // A token for the next agent, so the printed command works as is.
    let next = admin
        .create_token(&CreateTokenRequest {
            kind: AgentKind::Discovery,
            group: "default".into(),
            valid_for_secs: 24 * 3600,
            not_before: None,
            max_uses: Some(10),
            require_approval: false,
            policy: None,
            site: None,
        })
        .await?;

    // Wait (bounded) for the agent's first check-in so the table shows it Active.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut agents = admin.list_agents(None).await?;
    while tokio::time::Instant::now() < deadline
        && !agents.iter().any(|a| a.status == AgentStatus::Active)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        agents = admin.list_agents(None).await?;
    }

    // Ask the agent to fetch the sample definitions at its next check-in
    // rather than at its first scheduled check (up to 10 minutes away), and
    // wait (bounded) until it has the newest version.
    if let Some(id) = agents
        .iter()
        .find(|a| a.name == "quickstart-agent")
        .map(|a| a.id)
    {
        admin
            .queue_action(id, &tether_wire::ActionKind::UpdateDefs { channel: None })
            .await
            .context("queueing the sample definitions update")?;
        let interval = args.checkin_interval.unwrap_or(TOUR_CHECKIN_SECS);
        let wait = Duration::from_secs(u64::from(interval) * 2 + 5).min(Duration::from_secs(30));
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            let detail = admin.agent(id).await?;
            if !detail.defs.is_empty()
                && detail
                    .defs
                    .iter()
                    .all(|c| c.version.is_some() && c.version == c.newest_version)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        agents = admin.list_agents(None).await?;
    }

    println!();
    println!("Tether is running.");
    println!("  API / console:     {}", server.url);
    println!(
        "  Health:            curl --cacert {} {}/health",
        server.ca_pem_path.display(),
        server.url
    );
    println!("  CA fingerprint:    {}", server.ca_fingerprint);
    println!(
        "  Admin credential:  {} (mode 0600)",
        server.admin_token_path.display()
    );
    println!(
        "  Data dir:          {} (SQLite: tether.db)",
        data_dir.display()
    );
    println!("  Local agent state: {}", agent_dir.display());
    println!();
    println!("Enroll another agent (token valid 24 h, 10 uses):");
    println!(
        "  tether-agent enroll --server {} --token {} --ca-fingerprint {} --state-dir /var/lib/tether-agent",
        server.url, next.token, server.ca_fingerprint
    );
    println!();
    println!("Fleet:");
    print!("{}", agent_table(&agents, OffsetDateTime::now_utc()));
    println!();
    println!(
        "Try: tether agents list   |   tether agents show ID   |   tether agent posture --state-dir {}",
        agent_dir.display()
    );
    println!(
        "Definitions: tether defs summary   |   tether defs publish --channel {SAMPLE_CHANNEL} --file FILE   |   tether agent defs status --state-dir {}",
        agent_dir.display()
    );
    println!("Ctrl-C stops everything.");
    Ok(())
}

/// Sets up the default policy for the tour on the first run: a short
/// check-in interval and the sample channel. Later runs keep whatever the
/// admin changed since (a resumed tour must not undo `tether policy set`),
/// except for an interval passed explicitly.
async fn configure_policy(
    admin: &tether_client::ApiClient,
    checkin_interval: Option<u32>,
) -> anyhow::Result<()> {
    let policies = admin
        .list_policies()
        .await
        .context("reading the policies")?;
    let current = policies.iter().find(|p| p.name == DEFAULT_POLICY);
    // Revision 1 is the policy as the server seeded it: nobody changed it yet.
    let first_run = current.is_none_or(|p| p.revision <= 1);
    let mut edit = PolicyEdit {
        checkin_interval: checkin_interval
            .or(first_run.then_some(TOUR_CHECKIN_SECS))
            .map(|s| Duration::from_secs(u64::from(s)).into()),
        ..Default::default()
    };
    if first_run {
        // The tour's agent follows a sample definitions channel.
        edit.channels.add = vec![SAMPLE_CHANNEL.to_owned()];
    }
    let (update, changes) = crate::policy::plan(DEFAULT_POLICY, current, &edit)?;
    if current.is_some() && changes.is_empty() {
        return Ok(());
    }
    admin
        .put_policy(DEFAULT_POLICY, &update)
        .await
        .context("setting the quickstart policy")?;
    Ok(())
}

const DEFAULT_POLICY: &str = "default";

/// The channel the tour publishes and subscribes its agent to.
const SAMPLE_CHANNEL: &str = "sample";

/// Publishes a small generated signature file as the sample channel's
/// first version, unless the channel already has one (a resumed tour).
async fn publish_sample(admin: &tether_client::ApiClient) -> anyhow::Result<()> {
    let summary = admin
        .defs_summary(Some(SAMPLE_CHANNEL))
        .await
        .context("reading the definitions summary")?;
    if summary.iter().any(|c| !c.versions.is_empty()) {
        return Ok(());
    }
    let content: String = (0..2000u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!(
                "Sample.Test-{i}:0:*:{x:016x}{:016x}:73\n",
                x.rotate_left(23)
            )
        })
        .collect();
    admin
        .publish_defs(
            SAMPLE_CHANNEL,
            bytes::Bytes::from(content),
            Some("quickstart sample"),
        )
        .await
        .context("publishing the sample definitions")?;
    Ok(())
}

/// Starts `tether agent run` as a child tied to this process: with
/// `--exit-with-parent` (given through `TETHER_EXIT_WITH_PARENT`, so the
/// command line stays the one the README shows) the agent asks the kernel
/// for SIGTERM when this process dies, so even a SIGKILL of the quickstart
/// stops it.
fn spawn_agent(exe: &Path, agent_dir: &Path) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(exe)
        .args(["agent", "run", "--state-dir"])
        .arg(agent_dir)
        .env("TETHER_EXIT_WITH_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `tether agent run`")
}

/// SIGTERM, so the agent tells the server it is Stopped; SIGKILL after 5 s.
async fn stop_agent(agent: &mut tokio::process::Child) {
    if let Some(pid) = agent.id() {
        // The `kill` command sends SIGTERM without unsafe code (the workspace denies it).
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(5), agent.wait())
        .await
        .is_err()
    {
        let _ = agent.kill().await;
    }
}
