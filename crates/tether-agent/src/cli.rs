//! The agent's subcommands, shared by the endpoint binary (`tether-agent
//! <cmd>`) and the full command (`tether agent <cmd>`), so both parse and
//! behave the same.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use tether_client::ApiClient;
use tether_wire::{AgentKind, ErrorCode};
use tracing_subscriber::filter::LevelFilter;
use url::Url;

use crate::config::ConfigLayer;
use crate::error::Failure;
use crate::logs::{LogOptions, MAX_DEBUG};
use crate::run::{RunContext, TokioSleeper};
use crate::state::{AgentState, StateStore};
use crate::world::World;

/// The agent's subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Enroll this host with a control plane, using an enrollment token.
    Enroll(EnrollArgs),
    /// Enroll unattended from a preseed file and the environment, as a
    /// package install does; an agent already enrolled is left as it is.
    Preseed(PreseedArgs),
    /// Run the agent: check in at the policy's interval until stopped.
    Run(RunArgs),
    /// Print this agent's posture (identity, connectivity, last errors) as JSON.
    Posture(PostureArgs),
    /// Install a systemd unit that runs the agent.
    InstallService(InstallServiceArgs),
    /// Turn debug logging on for a bounded time (at most 24 h), or off.
    Debug(DebugArgs),
    /// Check the whole path to the control plane and name the root cause.
    /// Exit code: 0 healthy, 1 warnings, 2 failure, 3 the doctor could not run.
    Doctor(DoctorArgs),
    /// Write the escalation bundle (tar.gz, secrets redacted), optionally
    /// uploading it to the control plane.
    Bundle(BundleArgs),
    /// Capture the agent's own traffic (tcpdump) with debug logging for a
    /// window, running one check-in and one definitions update in it, and
    /// write the escalation bundle with the pcap.
    Capture(CaptureArgs),
    /// Rotate this agent's credential in place: the control plane issues the
    /// next one, and the current one stops working once the agent presents
    /// the new one (the running service re-reads it before each check-in).
    RotateCredential(RotateCredentialArgs),
    /// Update the definitions channels now, in this process (not through the
    /// running agent). Exit code: 0 all channels current, 2 a channel
    /// failed, 3 refused or could not run (TETHER-E6009 when the policy does
    /// not allow user updates).
    Update(UpdateArgs),
    /// Definitions: status and offline import.
    #[command(subcommand)]
    Defs(DefsCommand),
    /// The supervisor the service starts: runs the chosen agent version
    /// (STATE_DIR/bin/current, else this packaged binary) and, when a new
    /// version exits or has not checked in within a bound, falls back to
    /// the previous one by itself.
    Launch(LaunchArgs),
    /// Agent upgrades on this host: status, and installing a binary by hand.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
}

/// `upgrade` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Show the chosen version, the previous one and the last upgrade.
    Status(UpgradeStatusArgs),
    /// Install an agent binary under STATE_DIR/bin and switch to it; a
    /// running `launch` restarts into it and rolls it back if it does not
    /// check in. For hosts without a control plane path; the control plane
    /// delivers upgrades itself, verified through the signed repository.
    Install(UpgradeInstallArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// How long a new version has to check in before it is rolled back.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub check_in_within: Duration,
    /// The packaged binary, the last fallback (default: this executable).
    #[arg(long)]
    pub packaged: Option<PathBuf>,
    /// Arguments passed on to `run`, after `--`.
    #[arg(last = true)]
    pub run_args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeStatusArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// The packaged binary (default: this executable).
    #[arg(long)]
    pub packaged: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeInstallArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// The new tether-agent binary.
    #[arg(long)]
    pub file: PathBuf,
    /// Its version, as `FILE --version` prints it (checked).
    #[arg(long)]
    pub version: String,
}

/// `defs` subcommands.
#[derive(Debug, Subcommand)]
pub enum DefsCommand {
    /// Show each subscribed channel: installed version, last attempt and
    /// result (code and action), update server, cool-down.
    Status(DefsStatusArgs),
    /// Verify and install an offline bundle written by `tether defs export`,
    /// exactly like an online update. Exit code: 0 installed or current,
    /// 2 a channel (or the bundle) failed, 3 could not run.
    Import(DefsImportArgs),
}

/// The state directory, on every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StateDirArg {
    /// The agent's state directory (config, credential, state, logs).
    #[arg(long, env = "TETHER_AGENT_STATE_DIR", default_value = crate::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct EnrollArgs {
    /// The control plane's URL, e.g. https://tether.example.com:8443.
    #[arg(long)]
    pub server: Url,
    /// The enrollment token from `tether token create`.
    #[arg(long, env = "TETHER_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Pin the server's CA by its SHA-256 fingerprint (sha256:HEX).
    #[arg(long, conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<String>,
    /// Trust the server CA in this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Also trust this PEM CA (for TLS-inspecting proxies).
    #[arg(long)]
    pub extra_ca_file: Option<PathBuf>,
    /// The display name; defaults to the hostname.
    #[arg(long)]
    pub name: Option<String>,
    /// The agent kind: discovery, provisioning or connector.
    #[arg(long)]
    pub kind: Option<AgentKind>,
    /// An HTTP proxy URL (http://[user:pass@]host:port).
    #[arg(long)]
    pub proxy: Option<String>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct PreseedArgs {
    /// The preseed file (TOML: server, ca_pin, token; optionally name, kind,
    /// proxy). TETHER_SERVER, TETHER_CA_PIN and TETHER_TOKEN override it.
    /// The token is removed from it after a successful enrollment.
    #[arg(long = "preseed", default_value = crate::preseed::DEFAULT_PRESEED_FILE)]
    pub file: PathBuf,
    /// Where `install.log` goes (default STATE_DIR/logs); the package gives
    /// the directory its service logs to.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Move a corrupt state.json aside (to state.json.corrupt-TIME) and rebuild it.
    #[arg(long)]
    pub reset_state: bool,
    /// Override the proxy from agent.toml.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Override the log directory.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Stop (as on SIGTERM) when the process with this PID, which must be
    /// this agent's parent, dies, even by SIGKILL (Linux: the kernel's
    /// parent-death signal). For supervisors such as `tether quickstart`,
    /// which set it through the environment.
    #[arg(long, value_name = "PID", env = "TETHER_EXIT_WITH_PARENT")]
    pub exit_with_parent: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct PostureArgs {
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct InstallServiceArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Where the unit file is written.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Run the service as this user (default root).
    #[arg(long)]
    pub user: Option<String>,
    /// Write the unit but do not run systemctl.
    #[arg(long)]
    pub no_enable: bool,
    /// The executable the unit starts; defaults to this one.
    #[arg(long)]
    pub exe: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DebugArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// How long debug logging stays on, e.g. 30m or 2h (at most 24h).
    #[arg(long = "for", default_value = "30m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Turn debug logging off now.
    #[arg(long, conflicts_with = "duration")]
    pub off: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// The server to check. Required before enrollment; on an enrolled host
    /// it overrides the configured server.
    #[arg(long)]
    pub server: Option<Url>,
    /// An HTTP proxy URL (http://[user:pass@]host:port) to check through.
    #[arg(long)]
    pub proxy: Option<String>,
    /// The server CA's SHA-256 fingerprint (sha256:HEX).
    #[arg(long)]
    pub ca_fingerprint: Option<String>,
    /// Trust the server CA in this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Also trust this PEM CA (for TLS-inspecting proxies).
    #[arg(long)]
    pub extra_ca_file: Option<PathBuf>,
    /// An enrollment token whose window to check (before enrollment).
    #[arg(long, env = "TETHER_ENROLL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A HOST:PORT to probe from this host (repeatable).
    #[arg(long = "target", value_parser = crate::doctor::parse_target)]
    pub targets: Vec<(String, u16)>,
    /// Print the versioned JSON report (docs/doctor-schema.md).
    #[arg(long)]
    pub json: bool,
    /// The global deadline, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Where `install-service` wrote the unit (its proxy environment is
    /// compared with the shell's).
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// An NTP server to compare the clock with, HOST[:PORT] (repeatable;
    /// default: the host's chrony/timesyncd servers, else pool.ntp.org).
    #[arg(long = "ntp-server")]
    pub ntp_servers: Vec<String>,
    /// Also check an unpacked offline install bundle (`tether
    /// offline-bundle`): its files against SHA256SUMS, its CA pin, its
    /// token's window and its definitions' age. Before enrollment its
    /// server, pin and token stand in for flags not given.
    #[arg(long, value_name = "DIR")]
    pub offline_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Where to write the tar.gz (default tether-bundle-HOST-TIME.tar.gz here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also upload it to the control plane.
    #[arg(long)]
    pub upload: bool,
    /// Lines kept from the end of each log.
    #[arg(long, default_value_t = crate::bundle::DEFAULT_LOG_LINES)]
    pub log_lines: usize,
    /// The doctor's global deadline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Where `install-service` wrote the unit.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// The capture window, 2s to 1h (default: the policy's definitions
    /// interval, held to those bounds).
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Where to write the tar.gz (default tether-capture-HOST-TIME.tar.gz here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also upload it to the control plane.
    #[arg(long)]
    pub upload: bool,
    /// Also put the TLS key log of the capture's own sessions in the bundle,
    /// so Wireshark can decrypt them (the credential too: with --upload it
    /// is rotated after the upload; otherwise run rotate-credential once the
    /// bundle is shared).
    #[arg(long)]
    pub tls_keylog: bool,
    /// Print one JSON line (where the bundle is, its upload, the rotation)
    /// instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Where `install-service` wrote the unit.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RotateCredentialArgs {
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Check now (required: without it the running agent updates on its
    /// policy's schedule).
    #[arg(long, required = true)]
    pub now: bool,
    /// Only this channel (repeatable); default: every subscribed channel.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DefsStatusArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DefsImportArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// The bundle file (`tether defs export --out FILE`).
    pub bundle: PathBuf,
    /// Only this channel of the bundle (repeatable); default: all it holds.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
}

/// Exit code of `update` and `defs import`: every channel is current.
pub const EXIT_DEFS_OK: u8 = 0;
/// Exit code of `update` and `defs import`: at least one channel failed.
pub const EXIT_DEFS_FAILED: u8 = 2;
/// Exit code of `update` and `defs import`: refused, or could not run.
pub const EXIT_DEFS_REFUSED: u8 = 3;

/// The longest doctor deadline accepted.
pub const MAX_DOCTOR_DEADLINE: Duration = Duration::from_secs(300);

/// The exit code for a command line clap refused, shared by
/// `tether-agent X`, `tether agent X` and `tether doctor`, so the binaries
/// cannot drift apart. `doctor`, `update` and `defs` promise 3 when they
/// cannot run, bad arguments included (2 means a check or a channel
/// failed); every other command keeps clap's code (2 for a usage error, 0
/// for `--help` and `--version`). `args` are the words after the binary
/// (and after `agent` for `tether`).
pub fn usage_exit(error: &clap::Error, args: &[String]) -> ExitCode {
    let first = args.iter().find(|a| !a.starts_with('-'));
    let promises_three = first.is_some_and(|a| matches!(a.as_str(), "doctor" | "update" | "defs"));
    if promises_three && error.use_stderr() {
        ExitCode::from(3)
    } else {
        ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
    }
}

/// Runs a subcommand in the real world (system clock, process environment).
pub async fn dispatch(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    dispatch_with(cmd, World::real()).await
}

/// Runs a subcommand in the given world.
pub async fn dispatch_with(cmd: AgentCommand, world: World) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        AgentCommand::Enroll(args) => enroll(args, &world).await,
        AgentCommand::Preseed(args) => preseed(args, &world).await,
        AgentCommand::Run(args) => run(args, &world).await,
        AgentCommand::Posture(args) => posture(&args, &world),
        AgentCommand::InstallService(args) => install_service(&args, &world),
        AgentCommand::Debug(args) => debug(&args, &world),
        AgentCommand::Doctor(args) => return Ok(doctor(&args, &world).await),
        AgentCommand::Bundle(args) => bundle(&args, &world).await,
        AgentCommand::Capture(args) => capture(&args, &world).await,
        AgentCommand::RotateCredential(args) => rotate_credential(&args, &world).await,
        AgentCommand::Update(args) => return Ok(defs_exit(update_now(&args, &world).await)),
        AgentCommand::Defs(DefsCommand::Import(args)) => {
            return Ok(defs_exit(defs_import(&args, &world).await));
        }
        AgentCommand::Defs(DefsCommand::Status(args)) => {
            return Ok(defs_exit(defs_status(&args, &world)));
        }
        AgentCommand::Launch(args) => launch(args, &world).await,
        AgentCommand::Upgrade(UpgradeCommand::Status(args)) => upgrade_status(&args),
        AgentCommand::Upgrade(UpgradeCommand::Install(args)) => {
            upgrade_install(&args, &world).await
        }
    };
    result.map_err(anyhow::Error::new)
}

/// File logging only: the command prints its own outcome, so repeating
/// it on stderr would only add noise.
fn file_log_options(dir: PathBuf) -> LogOptions {
    LogOptions {
        dir: Some(dir),
        max_bytes: crate::config::DEFAULT_LOG_MAX_BYTES,
        keep: crate::config::DEFAULT_LOG_KEEP,
        debug: false,
        stderr: None,
    }
}

async fn enroll(args: EnrollArgs, world: &World) -> Result<ExitCode, Failure> {
    let dir = &args.state.state_dir;
    crate::enroll::create_private_dir(dir)?;
    let _logs = crate::logs::init(&file_log_options(dir.join("logs")))?;
    let opts = crate::enroll::EnrollOptions {
        state_dir: dir.clone(),
        server: args.server,
        token: args.token,
        ca_fingerprint: args.ca_fingerprint,
        ca_file: args.ca_file,
        extra_ca_file: args.extra_ca_file,
        name: args.name,
        kind: args.kind,
        proxy: args.proxy,
    };
    let enrolled = crate::enroll::enroll(&opts, world).await?;
    print!("{}", enrolled.summary(dir));
    Ok(ExitCode::SUCCESS)
}

async fn preseed(args: PreseedArgs, world: &World) -> Result<ExitCode, Failure> {
    use crate::preseed::{Outcome, Redaction};
    let dir = &args.state.state_dir;
    crate::enroll::create_private_dir(dir)?;
    let log_dir = args.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
    let _logs = crate::logs::init(&file_log_options(log_dir))?;
    let euid = nix::unistd::geteuid().as_raw();
    match crate::preseed::run(&args.file, dir, euid, world).await {
        Ok(Outcome::AlreadyEnrolled) => println!(
            "Already enrolled ({} exists): the enrollment is kept and the preseed is not used.",
            dir.join(crate::credential::CREDENTIAL_FILE).display()
        ),
        Ok(Outcome::NothingToDo) => println!(
            "Not enrolled: no preseed ({} is absent, and {}, {} and {} are unset). Write the file and run `dpkg-reconfigure tether-agent`, or run `tether-agent enroll`.",
            args.file.display(),
            crate::preseed::ENV_SERVER,
            crate::preseed::ENV_CA_PIN,
            crate::preseed::ENV_TOKEN
        ),
        Ok(Outcome::Enrolled {
            enrolled,
            redaction,
        }) => {
            print!("{}", enrolled.summary(dir));
            match redaction {
                Redaction::NotInFile => {}
                Redaction::Redacted => {
                    println!("The token was removed from {}.", args.file.display())
                }
                Redaction::Deleted => println!(
                    "{} was deleted: the token could not be removed from it otherwise.",
                    args.file.display()
                ),
                Redaction::Left(why) => {
                    let failure = Failure::new(ErrorCode::PreseedTokenLeft, why);
                    tracing::error!(target: crate::logs::INSTALL_TARGET, code = %failure.code, "{}", failure.message);
                    eprintln!("warning: {failure}");
                }
            }
        }
        Err(failure) => {
            tracing::error!(target: crate::logs::INSTALL_TARGET, code = %failure.code, error = %failure.message, "preseed enrollment failed");
            return Err(failure);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn packaged_binary(given: Option<&PathBuf>) -> Result<PathBuf, Failure> {
    match given {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(|e| {
            Failure::new(
                ErrorCode::UpgradeNoBinary,
                format!("cannot tell which binary this is: {e}"),
            )
        }),
    }
}

async fn launch(args: LaunchArgs, world: &World) -> Result<ExitCode, Failure> {
    // stderr only (the journal): the agent it starts owns the log files.
    let _logs = crate::logs::init(&LogOptions {
        dir: None,
        max_bytes: crate::config::DEFAULT_LOG_MAX_BYTES,
        keep: crate::config::DEFAULT_LOG_KEEP,
        debug: false,
        stderr: Some(LevelFilter::INFO),
    })?;
    let opts = crate::upgrade::LaunchOptions {
        packaged: packaged_binary(args.packaged.as_ref())?,
        state_dir: args.state.state_dir,
        check_in_within: args.check_in_within,
        run_args: args.run_args,
    };
    crate::upgrade::launch(&opts, world.clock.as_ref()).await
}

fn upgrade_status(args: &UpgradeStatusArgs) -> Result<ExitCode, Failure> {
    let dir = &args.state.state_dir;
    let layout = crate::upgrade::Layout::new(dir);
    let packaged = packaged_binary(args.packaged.as_ref())?;
    let chosen = crate::upgrade::peek(dir, &packaged)?;
    let previous = layout.previous();
    let last = crate::upgrade::last_upgrade(dir);
    if args.json {
        let body = serde_json::json!({
            "current": chosen.version,
            "path": chosen.path,
            "trial": chosen.trial,
            "previous": previous,
            "last_upgrade": last,
        });
        println!("{body:#}");
    } else {
        println!(
            "current: {} ({})",
            chosen.version.as_deref().unwrap_or("packaged"),
            chosen.path.display()
        );
        println!("previous: {}", previous.as_deref().unwrap_or("packaged"));
        match last {
            Some(r) => println!(
                "last upgrade: {} to {} at {}{}",
                r.state,
                r.version,
                r.at,
                r.reason.map(|w| format!(": {w}")).unwrap_or_default()
            ),
            None => println!("last upgrade: none"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn upgrade_install(args: &UpgradeInstallArgs, world: &World) -> Result<ExitCode, Failure> {
    let dir = &args.state.state_dir;
    match crate::upgrade::install(dir, &args.version, &args.file, world.clock.now()).await? {
        crate::upgrade::Installed::AlreadyCurrent => {
            println!("{} is already the chosen version", args.version);
        }
        crate::upgrade::Installed::Switched { from } => println!(
            "switched from {} to {}; a running `tether-agent launch` restarts into it",
            from.as_deref().unwrap_or("the packaged binary"),
            args.version
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs, world: &World) -> Result<ExitCode, Failure> {
    if let Some(parent) = args.exit_with_parent
        && !crate::parent::exit_with_parent(parent)?
    {
        eprintln!("the parent process {parent} is already gone; not starting");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = &args.state.state_dir;
    let store = StateStore::new(dir);
    let now = world.clock.now();
    if args.reset_state {
        match store.load() {
            Err(e) if e.code() == ErrorCode::StateCorrupt => {
                if let Some(moved) = store.move_aside(now)? {
                    eprintln!(
                        "moved the corrupt state file to {}; it is rebuilt at the next check-in",
                        moved.display()
                    );
                }
            }
            _ => eprintln!("the state file is not corrupt; --reset-state left it alone"),
        }
    }
    let flags = ConfigLayer {
        proxy: args.proxy.clone(),
        log_dir: args.log_dir.clone(),
        ..ConfigLayer::default()
    };
    let effective = crate::config::load(dir, &|k| world.var(k), &flags)?;
    let config = effective.config;
    let credential = crate::credential::load(dir)?;
    let state = match store.load()? {
        Some(s) => s,
        None => {
            // The credential is the identity; the rest is rebuilt from the
            // server's answer at the first check-in.
            let s = AgentState {
                agent_id: uuid::Uuid::nil(),
                enrolled_at: now,
                installed_at: now,
                server: config.server.to_string(),
                last_successful_contact: None,
                status: None,
                policy: None,
                last_errors: Default::default(),
                debug_until: None,
                contact_version: None,
                later: Default::default(),
            };
            store.save(&s)?;
            s
        }
    };
    let log_dir = config.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
    let logs = crate::logs::init(&LogOptions {
        dir: Some(log_dir),
        max_bytes: config.log_max_bytes,
        keep: config.log_keep,
        debug: state.debug_active(now),
        stderr: Some(LevelFilter::TRACE),
    })?;
    let transport = crate::connect::transport(&config, Some(dir), &|k| world.var(k))?;
    let client = ApiClient::new(transport, config.server.clone())
        .with_bearer(credential.expose())
        .with_clock(world.clock.clone());
    let proxy = crate::connect::proxy_in_use(&config, &|k| world.var(k));
    tracing::info!(
        agent_id = %state.agent_id,
        server = %config.server,
        proxy = proxy.as_deref().unwrap_or("none"),
        version = crate::version(),
        "agent starting"
    );
    let installed_at = state.installed_at;
    // One update transport for the definitions worker and the upgrade
    // worker: both fetch from the same update servers.
    let updates = match updater_factory(&config, dir, world) {
        Ok(f) => Some(f),
        Err(f) => {
            tracing::error!(code = %f.code, error = %f.message, "definitions updates and upgrades are off: no update transport");
            let now = world.clock.now();
            let _ = store.update(|s| {
                s.record_error(
                    crate::state::subsystem::DEFINITIONS,
                    f.code,
                    f.message.clone(),
                    now,
                )
            });
            None
        }
    };
    let defs = updates
        .clone()
        .map(|f| start_defs_worker(f, &store, &client, state.policy.as_ref()));
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let doctor_actions = crate::actions::DoctorActions {
        state_dir: dir.clone(),
        unit_dir: PathBuf::from("/etc/systemd/system"),
        deadline: tether_doctor::DoctorInput::DEFAULT_DEADLINE,
        world: world.clone(),
    };
    let mut ctx = RunContext {
        client,
        store,
        clock: world.clock.clone(),
        sleeper: Arc::new(TokioSleeper),
        jitter: Box::new(move || rng.random::<f64>()),
        logs: Some(Arc::new(logs)),
        facts: Arc::new(move || crate::facts::collect(Some(installed_at))),
        proxy,
        actions: Some(Arc::new(doctor_actions.clone())),
        actions_doctor: Some(doctor_actions),
        defs: defs.as_ref().map(|(handle, _)| handle.clone()),
        task_limit: Some(crate::tasks::TaskLimit::from_policy(state.policy.as_ref())),
        upgrades: None,
    };
    let restart = Arc::new(tokio::sync::Notify::new());
    let upgrades = updates.map(|f| start_offer_worker(f, &ctx.store, world, restart.clone()));
    ctx.upgrades = upgrades.as_ref().map(|(handle, _)| handle.clone());
    let tasks = start_task_worker(&config, dir, &ctx, world);
    let restarting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let restarting = restarting.clone();
        async move {
            tokio::select! {
                () = crate::run::stop_signal() => {}
                () = restart.notified() => restarting.store(true, std::sync::atomic::Ordering::SeqCst),
            }
        }
    };
    let summary = crate::run::run_loop(&mut ctx, stop).await;
    if let Some(task) = tasks {
        task.abort();
    }
    if let Some((_, task)) = upgrades {
        task.abort();
    }
    // An update cut off here resumes at the next start; installs are atomic.
    if let Some((_, task)) = defs {
        task.abort();
    }
    tracing::info!(
        checkins = summary.steps.len(),
        notice_acknowledged = summary.shutdown_acknowledged,
        "agent stopped"
    );
    if restarting.load(std::sync::atomic::Ordering::SeqCst) {
        tracing::info!("exiting so that `tether-agent launch` starts the new version");
        return Ok(ExitCode::from(crate::upgrade::EXIT_RESTART));
    }
    Ok(ExitCode::SUCCESS)
}

/// The definitions updaters of a running agent: its update transport, its
/// server, the world's clock. The definitions worker and the upgrade worker
/// both fetch through it.
fn updater_factory(
    config: &crate::config::AgentConfig,
    dir: &Path,
    world: &World,
) -> Result<crate::defs::UpdaterFactory, Failure> {
    Ok(crate::defs::UpdaterFactory {
        state_dir: dir.to_owned(),
        server: config.server.clone(),
        transport: Arc::new(crate::defs::transport(config, dir, &|k| world.var(k))?),
        clock: world.clock.clone(),
        apply_hook: None,
    })
}

/// Starts the worker that takes the versions rollouts offer, through the
/// update transport it shares with the definitions worker. Without one
/// (`run` logs and records why), offers are ignored.
fn start_offer_worker(
    factory: crate::defs::UpdaterFactory,
    store: &StateStore,
    world: &World,
    restart: Arc<tokio::sync::Notify>,
) -> (
    crate::upgrade::offer::OfferHandle,
    tokio::task::JoinHandle<()>,
) {
    let supervised = world
        .var(crate::upgrade::offer::SUPERVISED_ENV)
        .is_some_and(|v| v == "1");
    let (worker, handle) =
        crate::upgrade::offer::OfferWorker::new(factory, store.clone(), supervised, restart);
    (handle, tokio::spawn(worker.run()))
}

/// Starts the task worker: the long poll and the result spool. Work
/// threads start only when a task arrives.
fn start_task_worker(
    config: &crate::config::AgentConfig,
    dir: &Path,
    ctx: &crate::run::RunContext,
    world: &World,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut transport_config = match crate::connect::transport_config(config, Some(dir), &|k| {
        world.var(k)
    }) {
        Ok(c) => c,
        Err(f) => {
            tracing::error!(code = %f.code, error = %f.message, "tasks are off: no transport for the poll");
            return None;
        }
    };
    transport_config.timeouts.http =
        Duration::from_secs(u64::from(crate::tasks::POLL_WAIT_SECS)) + crate::tasks::POLL_MARGIN;
    let poll_transport = match tether_transport::Transport::new(transport_config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "tasks are off: no transport for the poll");
            return None;
        }
    };
    let mut poll_client =
        ApiClient::new(poll_transport, config.server.clone()).with_clock(world.clock.clone());
    // The check-in's own bearer: a rotated credential reaches the poll too.
    if let Some(bearer) = ctx.client.shared_bearer() {
        poll_client = poll_client.with_shared_bearer(bearer.clone());
    }
    let deploy = Arc::new(crate::tasks::deploy::DeployExecutor::new(dir));
    // A deploy a kill interrupted is finished or rolled back at start, so
    // its PEM set is whole again; a new deploy waits for it (one lock).
    let recovering = deploy.clone();
    tokio::spawn(async move { recovering.recover().await });
    let mut executors = crate::tasks::executor::Executors::default()
        .with(Arc::new(crate::tasks::kinds::DiscoverExecutor))
        .with(deploy);
    if let Some(doctor) = &ctx.actions_doctor {
        executors = executors.with(Arc::new(crate::tasks::kinds::DoctorExecutor(
            doctor.clone(),
        )));
    }
    if let Some(defs) = &ctx.defs {
        executors = executors.with(Arc::new(crate::tasks::kinds::UpdateDefsExecutor(
            defs.clone(),
        )));
    }
    let worker = crate::tasks::TaskWorker {
        poll_client,
        client: ctx.client.clone(),
        spool: crate::tasks::spool::Spool::new(dir),
        executors,
        max_concurrent: ctx
            .task_limit
            .clone()
            .unwrap_or_else(|| crate::tasks::TaskLimit::from_policy(None)),
        poll_wait_secs: crate::tasks::POLL_WAIT_SECS,
    };
    tracing::info!(kinds = %crate::tasks::describe(&worker.executors), "task worker started");
    Some(worker.spawn())
}

/// Starts the definitions worker in its own task. Without a usable update
/// transport (`run` logs and records why) the agent still checks in.
fn start_defs_worker(
    factory: crate::defs::UpdaterFactory,
    store: &StateStore,
    client: &ApiClient,
    policy: Option<&tether_wire::Policy>,
) -> (crate::defs::DefsHandle, tokio::task::JoinHandle<()>) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let (worker, handle) = crate::defs::DefsWorker::new(
        factory,
        store.clone(),
        client.clone(),
        Box::new(move || rng.random::<f64>()),
        policy.map(|p| p.defs.clone()),
    );
    let task = tokio::spawn(worker.run(|event| {
        tracing::debug!(event = ?event, "definitions worker");
    }));
    (handle, task)
}

fn posture(args: &PostureArgs, world: &World) -> Result<ExitCode, Failure> {
    let p = crate::posture::posture(&args.state.state_dir, world, &ConfigLayer::default());
    let json = serde_json::to_string_pretty(&p).map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("cannot render the posture: {e}"),
        )
    })?;
    println!("{json}");
    Ok(if p.enrolled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn install_service(args: &InstallServiceArgs, world: &World) -> Result<ExitCode, Failure> {
    let state_dir = absolute(&args.state.state_dir);
    // Logging to install.log is best effort: the unit can be written before
    // the agent is enrolled.
    let _logs = crate::logs::init(&file_log_options(state_dir.join("logs"))).ok();
    if !state_dir.join(crate::credential::CREDENTIAL_FILE).exists() {
        eprintln!(
            "note: {} is not enrolled yet; the service will fail until you run `tether-agent enroll --state-dir {}`",
            state_dir.display(),
            state_dir.display()
        );
    }
    let exe = match &args.exe {
        Some(e) => absolute(e),
        None => std::env::current_exe().map_err(|e| {
            Failure::new(
                ErrorCode::ConfigInvalid,
                format!("cannot locate this executable ({e}); pass --exe"),
            )
        })?,
    };
    let opts = crate::service::InstallOptions {
        unit_dir: args.unit_dir.clone(),
        state_dir,
        exe,
        user: args.user.clone(),
        enable: !args.no_enable,
    };
    let report = crate::service::install(&opts, &|k| world.var(k))?;
    for step in &report.steps {
        println!("{step}");
    }
    Ok(ExitCode::SUCCESS)
}

fn debug(args: &DebugArgs, world: &World) -> Result<ExitCode, Failure> {
    if !args.off && args.duration > MAX_DEBUG {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            format!(
                "--for {} is longer than the 24h limit",
                humantime::format_duration(args.duration)
            ),
        ));
    }
    let now = world.clock.now();
    let until = (!args.off).then(|| now + args.duration);
    StateStore::new(&args.state.state_dir).update(|s| s.debug_until = until)?;
    match until {
        Some(t) => println!(
            "Debug logging is on until {t}. A running agent switches at its next check-in and turns it off by itself."
        ),
        None => println!("Debug logging is off. A running agent switches at its next check-in."),
    }
    Ok(ExitCode::SUCCESS)
}

/// `doctor`: prints the report and exits 0/1/2 by verdict; anything that
/// stops the doctor from running exits 3 with the reason.
async fn doctor(args: &DoctorArgs, world: &World) -> ExitCode {
    let cannot_run = |f: Failure| {
        eprintln!("error: the doctor could not run: {f}");
        ExitCode::from(crate::doctor::EXIT_CANNOT_RUN)
    };
    if args.deadline.is_zero() || args.deadline > MAX_DOCTOR_DEADLINE {
        return cannot_run(Failure::new(
            ErrorCode::ConfigInvalid,
            format!(
                "--deadline {} is outside 1ms..{}",
                humantime::format_duration(args.deadline),
                humantime::format_duration(MAX_DOCTOR_DEADLINE)
            ),
        ));
    }
    let opts = crate::doctor::DoctorOptions {
        state_dir: args.state.state_dir.clone(),
        server: args.server.clone(),
        proxy: args.proxy.clone(),
        ca_fingerprint: args.ca_fingerprint.clone(),
        ca_file: args.ca_file.clone(),
        extra_ca_file: args.extra_ca_file.clone(),
        token: args.token.clone(),
        targets: args.targets.clone(),
        deadline: args.deadline,
        target_timeout: tether_doctor::DoctorInput::DEFAULT_TARGET_TIMEOUT,
        unit_dir: args.unit_dir.clone(),
        ntp_servers: args.ntp_servers.clone(),
        offline_bundle: args.offline_bundle.clone(),
    };
    let report = match crate::doctor::run(&opts, world).await {
        Ok(r) => r,
        Err(f) => return cannot_run(f),
    };
    if args.json {
        match serde_json::to_string_pretty(&report.to_json()) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                return cannot_run(Failure::new(
                    ErrorCode::Internal,
                    format!("cannot render the report: {e}"),
                ));
            }
        }
    } else {
        // The report may not end with a newline; the next prompt must not join it.
        println!("{}", report.to_text().trim_end());
    }
    ExitCode::from(report.exit_code())
}

async fn bundle(args: &BundleArgs, world: &World) -> Result<ExitCode, Failure> {
    let dir = &args.state.state_dir;
    let opts = crate::bundle::CollectOptions {
        state_dir: dir.clone(),
        unit_dir: args.unit_dir.clone(),
        log_lines: args.log_lines,
        deadline: args.deadline,
        run_commands: true,
    };
    let (built, report) = crate::bundle::collect(&opts, world).await?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "tether-bundle-{}-{}.tar.gz",
            crate::facts::hostname(),
            crate::doctor::stamp(world.clock.now())
        ))
    });
    crate::state::write_atomic(&out, &built.bytes, 0o600)?;
    println!(
        "wrote {} ({} bytes, {} files, {} redactions listed in REDACTIONS.json)",
        out.display(),
        built.bytes.len(),
        built.manifest.files.len() + 1,
        built.redactions.len()
    );
    match &report {
        Some(r) => println!(
            "doctor verdict: {}{}: {}",
            r.verdict.status.as_str(),
            r.verdict.code.map(|c| format!(" {c}")).unwrap_or_default(),
            r.verdict.root_cause
        ),
        None => println!("the doctor could not run; the bundle's doctor/error.txt says why"),
    }
    if args.upload {
        let (_, info) = upload_bundle(dir, world, built.bytes).await?;
        print_uploaded(&info);
    }
    Ok(ExitCode::SUCCESS)
}

async fn capture(args: &CaptureArgs, world: &World) -> Result<ExitCode, Failure> {
    let dir = &args.state.state_dir;
    let opts = crate::capture::CaptureOptions {
        state_dir: dir.clone(),
        unit_dir: args.unit_dir.clone(),
        window: args.duration,
        deadline: Duration::from_secs(10),
        log_lines: crate::bundle::DEFAULT_LOG_LINES,
        tls_keylog: args.tls_keylog,
    };
    let captured = crate::capture::capture(&opts, world).await?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "tether-capture-{}-{}.tar.gz",
            crate::facts::hostname(),
            crate::doctor::stamp(world.clock.now())
        ))
    });
    crate::state::write_atomic(&out, &captured.bundle.bytes, 0o600)?;
    let mut report = CaptureReport {
        out,
        bytes: captured.bundle.bytes.len(),
        window_secs: captured.window.as_secs(),
        filter: captured.filter.clone(),
        notes: captured.notes.clone(),
        bundle_id: None,
        rotated: false,
    };
    if !args.json {
        println!(
            "wrote {} ({} bytes): a {} capture with filter `{}`",
            report.out.display(),
            report.bytes,
            humantime::format_duration(captured.window),
            report.filter
        );
        for note in &report.notes {
            println!("  {note}");
        }
        println!(
            "warning: {} is not redacted (MANIFEST.json, `unredacted`); share the bundle only with support",
            crate::capture::PCAP_NAME
        );
        if args.tls_keylog {
            println!(
                "warning: {} decrypts the capture's TLS sessions, including this agent's credential{}",
                crate::capture::KEY_LOG_NAME,
                if args.upload {
                    " (rotated after the upload)"
                } else {
                    "; run `tether-agent rotate-credential` once you have shared it"
                }
            );
        }
    }
    if args.upload {
        let (client, info) = upload_bundle(dir, world, captured.bundle.bytes).await?;
        report.bundle_id = Some(info.id);
        if !args.json {
            print_uploaded(&info);
        }
        if args.tls_keylog {
            // The key log decrypts this agent's credential in the capture.
            crate::credential::rotate(dir, &client).await?;
            report.rotated = true;
            if !args.json {
                println!(
                    "rotated this agent's credential: the one in the capture stops working at the agent's next check-in"
                );
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Failure::new(
                ErrorCode::ConfigInvalid,
                format!("the capture report does not serialize: {e}")
            ))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tether-agent capture --json`: one line, what the capture action reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaptureReport {
    pub out: PathBuf,
    pub bytes: usize,
    pub window_secs: u64,
    pub filter: String,
    pub notes: Vec<String>,
    #[serde(default)]
    pub bundle_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub rotated: bool,
}

async fn rotate_credential(
    args: &RotateCredentialArgs,
    world: &World,
) -> Result<ExitCode, Failure> {
    let client = agent_client(&args.state.state_dir, world)?;
    crate::credential::rotate(&args.state.state_dir, &client).await?;
    println!(
        "rotated: {} holds the new credential; the old one stops working at the agent's next check-in",
        crate::credential::credential_path(&args.state.state_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A client of the control plane with the agent's own credential.
fn agent_client(dir: &Path, world: &World) -> Result<ApiClient, Failure> {
    let env = |k: &str| world.var(k);
    let config = crate::config::load(dir, &env, &ConfigLayer::default())?.config;
    let credential = crate::credential::load(dir)?;
    let transport = crate::connect::transport(&config, Some(dir), &env)?;
    Ok(ApiClient::new(transport, config.server.clone())
        .with_bearer(credential.expose())
        .with_clock(world.clock.clone()))
}

/// Uploads a bundle to the control plane with the agent's own credential
/// and says where an admin finds it.
async fn upload_bundle(
    dir: &Path,
    world: &World,
    bytes: Vec<u8>,
) -> Result<(ApiClient, tether_wire::BundleInfo), Failure> {
    let client = agent_client(dir, world)?;
    let info = client.upload_bundle(bytes).await?;
    Ok((client, info))
}

/// Says where an admin finds an uploaded bundle.
fn print_uploaded(info: &tether_wire::BundleInfo) {
    println!(
        "uploaded as bundle {} ({} bytes); an admin can fetch it with `tether agents bundle-download {} --out FILE`",
        info.id, info.size_bytes, info.id
    );
}

/// The exit code of a definitions command; a failure to run at all is
/// printed with its code and action and exits [`EXIT_DEFS_REFUSED`].
fn defs_exit(result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {f}");
            ExitCode::from(EXIT_DEFS_REFUSED)
        }
    }
}

async fn update_now(args: &UpdateArgs, world: &World) -> Result<u8, Failure> {
    let dir = &args.state.state_dir;
    let _logs = crate::logs::init(&file_log_options(dir.join("logs"))).ok();
    let local = crate::defs::command::Local::load(dir, world)?;
    let outcomes = local.update_now(&args.channels).await?;
    Ok(print_outcomes(&outcomes))
}

async fn defs_import(args: &DefsImportArgs, world: &World) -> Result<u8, Failure> {
    let dir = &args.state.state_dir;
    let _logs = crate::logs::init(&file_log_options(dir.join("logs"))).ok();
    let local = crate::defs::command::Local::load(dir, world)?;
    match local.import(&args.bundle, &args.channels).await? {
        Ok(outcomes) => Ok(print_outcomes(&outcomes)),
        Err(error) => {
            println!(
                "{}: FAILED {}: {error} Action: {}",
                args.bundle.display(),
                error.code(),
                error.action()
            );
            Ok(EXIT_DEFS_FAILED)
        }
    }
}

/// One line per channel; the exit code says whether any failed.
fn print_outcomes(outcomes: &[tether_defs::client::ChannelOutcome]) -> u8 {
    if outcomes.is_empty() {
        println!("no definitions channel to update");
    }
    for o in outcomes {
        println!("{}", crate::defs::outcome_line(o));
    }
    if outcomes.iter().any(|o| o.result.is_err()) {
        EXIT_DEFS_FAILED
    } else {
        EXIT_DEFS_OK
    }
}

fn defs_status(args: &DefsStatusArgs, world: &World) -> Result<u8, Failure> {
    let status = crate::defs::command::status(&args.state.state_dir, world)?;
    if args.json {
        let json = serde_json::to_string_pretty(&status).map_err(|e| {
            Failure::new(
                ErrorCode::Internal,
                format!("cannot render the status: {e}"),
            )
        })?;
        println!("{json}");
    } else {
        print!("{}", status.to_text());
    }
    Ok(EXIT_DEFS_OK)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AgentCommand,
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_takes_state_dir() {
        for args in [
            vec!["x", "run", "--state-dir", "/d"],
            vec!["x", "posture", "--state-dir", "/d"],
            vec!["x", "install-service", "--state-dir", "/d", "--no-enable"],
            vec!["x", "debug", "--state-dir", "/d", "--for", "15m"],
            vec![
                "x",
                "doctor",
                "--state-dir",
                "/d",
                "--target",
                "db:5985",
                "--json",
            ],
            vec!["x", "bundle", "--state-dir", "/d", "--upload"],
            vec!["x", "rotate-credential", "--state-dir", "/d"],
            vec![
                "x",
                "update",
                "--now",
                "--state-dir",
                "/d",
                "--channel",
                "sigs",
            ],
            vec!["x", "defs", "status", "--state-dir", "/d", "--json"],
            vec!["x", "defs", "import", "--state-dir", "/d", "b.tar"],
            vec!["x", "preseed", "--state-dir", "/d"],
            vec![
                "x",
                "launch",
                "--state-dir",
                "/d",
                "--check-in-within",
                "30s",
                "--",
                "--log-dir",
                "/l",
            ],
            vec!["x", "upgrade", "status", "--state-dir", "/d", "--json"],
            vec![
                "x",
                "upgrade",
                "install",
                "--state-dir",
                "/d",
                "--file",
                "f",
                "--version",
                "1.2.3",
            ],
            vec![
                "x",
                "capture",
                "--state-dir",
                "/d",
                "--for",
                "5s",
                "--upload",
                "--tls-keylog",
            ],
            vec![
                "x",
                "enroll",
                "--state-dir",
                "/d",
                "--server",
                "https://s",
                "--token",
                "t",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).expect("parses");
            let dir = match cli.cmd {
                AgentCommand::Run(a) => a.state.state_dir,
                AgentCommand::RotateCredential(a) => a.state.state_dir,
                AgentCommand::Posture(a) => a.state.state_dir,
                AgentCommand::InstallService(a) => a.state.state_dir,
                AgentCommand::Debug(a) => {
                    assert_eq!(a.duration, Duration::from_secs(900));
                    a.state.state_dir
                }
                AgentCommand::Enroll(a) => a.state.state_dir,
                AgentCommand::Preseed(a) => {
                    assert_eq!(a.file, crate::preseed::default_path());
                    a.state.state_dir
                }
                AgentCommand::Doctor(a) => {
                    assert_eq!(a.targets, vec![("db".to_owned(), 5985)]);
                    assert_eq!(a.deadline, Duration::from_secs(10));
                    a.state.state_dir
                }
                AgentCommand::Bundle(a) => {
                    assert!(a.upload);
                    assert_eq!(a.log_lines, 500);
                    a.state.state_dir
                }
                AgentCommand::Capture(a) => {
                    assert!(a.upload && a.tls_keylog);
                    assert_eq!(a.duration, Some(Duration::from_secs(5)));
                    a.state.state_dir
                }
                AgentCommand::Update(a) => {
                    assert!(a.now);
                    assert_eq!(a.channels, vec!["sigs".to_owned()]);
                    a.state.state_dir
                }
                AgentCommand::Defs(DefsCommand::Status(a)) => {
                    assert!(a.json);
                    a.state.state_dir
                }
                AgentCommand::Defs(DefsCommand::Import(a)) => {
                    assert_eq!(a.bundle, PathBuf::from("b.tar"));
                    assert!(a.channels.is_empty());
                    a.state.state_dir
                }
                AgentCommand::Launch(a) => {
                    assert_eq!(a.check_in_within, Duration::from_secs(30));
                    assert_eq!(a.run_args, ["--log-dir", "/l"]);
                    a.state.state_dir
                }
                AgentCommand::Upgrade(UpgradeCommand::Status(a)) => {
                    assert!(a.json);
                    a.state.state_dir
                }
                AgentCommand::Upgrade(UpgradeCommand::Install(a)) => {
                    assert_eq!(
                        (a.file.as_path(), a.version.as_str()),
                        (Path::new("f"), "1.2.3")
                    );
                    a.state.state_dir
                }
            };
            assert_eq!(dir, PathBuf::from("/d"), "{args:?}");
        }
    }

    #[test]
    fn update_requires_now_and_defs_needs_a_subcommand() {
        for args in [
            vec!["x", "update", "--state-dir", "/d"],
            vec!["x", "defs", "--state-dir", "/d"],
            vec!["x", "defs", "import", "--state-dir", "/d"],
            vec!["x", "defs", "status", "--state-dir", "/d", "--channel", "a"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn debug_is_bounded_and_written_to_state() {
        use tether_wire::ManualClock;
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::macros::datetime!(2026-05-01 12:00 UTC);
        let world = World::fixed(Arc::new(ManualClock::new(now)), &[]);
        let store = StateStore::new(dir.path());
        store
            .save(&AgentState {
                agent_id: uuid::Uuid::nil(),
                enrolled_at: now,
                installed_at: now,
                server: "https://s/".into(),
                last_successful_contact: None,
                status: None,
                policy: None,
                last_errors: Default::default(),
                debug_until: None,
                contact_version: None,
                later: Default::default(),
            })
            .expect("saves");
        let parse = |extra: &[&str]| {
            let mut v = vec!["x", "debug", "--state-dir"];
            let d = dir.path().to_str().expect("utf-8 temp path");
            v.push(d);
            v.extend_from_slice(extra);
            match Cli::try_parse_from(v).expect("parses").cmd {
                AgentCommand::Debug(a) => a,
                other => panic!("unexpected {other:?}"),
            }
        };
        let err = debug(&parse(&["--for", "25h"]), &world).expect_err("too long");
        assert_eq!(err.code, ErrorCode::ConfigInvalid);
        debug(&parse(&["--for", "2h"]), &world).expect("sets");
        assert_eq!(
            store.load_required().expect("loads").debug_until,
            Some(now + time::Duration::hours(2))
        );
        debug(&parse(&["--off"]), &world).expect("clears");
        assert_eq!(store.load_required().expect("loads").debug_until, None);
    }
}
