//! Command-line definitions and dispatch. Each subcommand's work lives in its
//! own module; this file only routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tether_wire::{AgentKind, AgentStatus};
use uuid::Uuid;

use crate::{admin, bench, defs, policy, quickstart, server_cmd};

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Tether: a self-hosted control plane for the agents that live inside enterprise networks."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the control plane, the local agent and print the fleet (the 5-minute tour).
    Quickstart(quickstart::QuickstartArgs),
    /// Run the control plane server.
    Server(ServerArgs),
    /// Manage enrollment tokens (admin API).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and manage agents (admin API).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Write a self-contained install bundle for an air-gapped host: the
    /// agent binary, the server URL and CA pin, a scoped enrollment token,
    /// the current definitions and an install script (admin API). Also
    /// `tether agent-bundle`.
    #[command(visible_alias = "agent-bundle")]
    OfflineBundle(crate::agent_bundle::AgentBundleArgs),
    /// Admin API credentials: create, list, revoke and rotate (admin API).
    #[command(subcommand)]
    AdminTokens(AdminTokensCommand),
    /// The admin audit log: every admin action, who, when, from where
    /// (admin API).
    #[command(subcommand)]
    Audit(crate::audit_cmd::AuditCommand),
    /// Inspect and set policies (admin API).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The task queue: create, list, show, cancel, retry (admin API).
    #[command(subcommand)]
    Tasks(crate::tasks_cmd::TasksCommand),
    /// The discovery inventory: certificates and where they were seen (admin API).
    #[command(subcommand)]
    Certs(crate::certs_cmd::CertsCommand),
    /// Sites and their time zones; an agent's site label (admin API).
    #[command(subcommand)]
    Sites(crate::tasks_cmd::SitesCommand),
    /// Fleet diagnosis: failing agents grouped by what they share, one
    /// verdict (network, configuration or server) per incident with its
    /// evidence, and best-practice hints (admin API).
    #[command(subcommand)]
    Fleet(crate::fleet_cmd::FleetCommand),
    /// Publish, inspect, export and mirror definitions channels.
    #[command(subcommand)]
    Defs(DefsCommand),
    /// Agent releases and per-group rollouts: publish a release, set the
    /// version a group runs (a canary share first), pause, resume, promote.
    #[command(subcommand)]
    Rollout(crate::rollout_cmd::RolloutCommand),
    /// TLS certificate discovery from this machine (`scan run --targets … --ports …`).
    #[command(subcommand)]
    Scan(crate::scan_cmd::ScanCommand),
    /// Agent commands (the same as the `tether-agent` endpoint binary; their
    /// man pages are that binary's, e.g. `man tether-agent-doctor`).
    #[command(subcommand)]
    Agent(tether_agent::cli::AgentCommand),
    /// Check the path to the control plane and name the root cause (the same
    /// as `tether agent doctor`). Exit code: 0 healthy, 1 warnings, 2
    /// failure, 3 the doctor could not run.
    Doctor(tether_agent::cli::DoctorArgs),
    /// Print the error catalog (`--markdown` writes docs/errors.md's content).
    Errors {
        #[arg(long)]
        markdown: bool,
    },
    /// Show configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write one file holding the server's database and every key (docs/backup.md).
    Backup(crate::backup_cmd::BackupArgs),
    /// Restore a `tether backup` file onto an empty data dir (and database).
    Restore(crate::backup_cmd::RestoreArgs),
    /// Load generators that print figures (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(tether_agent::clidoc::CompletionsArgs),
    /// Write the man pages (`tether.1` and one per subcommand) into a directory.
    Man(tether_agent::clidoc::ManArgs),
}

/// The server's flags. Each also has a `TETHER_*` variable, read by the
/// config layering (not by clap), so `tether config show` can tell a flag
/// from the environment.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on (default 127.0.0.1:8443; env TETHER_LISTEN).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory: SQLite database, PKI, admin credential (default ./tether-data; env TETHER_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite:///path/tether.db or postgres://user@host/db (default SQLite in the data dir; env TETHER_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// A TOML config file (fields of ServerConfig; unknown fields are refused).
    #[arg(long, env = "TETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Operator-provided TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Operator-provided TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// How admin commands find and authenticate to the server.
#[derive(Debug, Clone, Args)]
pub struct AdminConn {
    /// Server URL (default: the one recorded in the local data dir).
    #[arg(long, env = "TETHER_SERVER")]
    pub server: Option<String>,
    /// File holding the admin credential.
    #[arg(long, env = "TETHER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Local data dir of a server on this host (default ./tether-data).
    #[arg(long, env = "TETHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Trust this CA file (PEM) for the server's certificate.
    #[arg(long, env = "TETHER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Pin the server's CA by fingerprint (sha256:HEX).
    #[arg(long, env = "TETHER_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token; its secret is shown once.
    Create {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        kind: AgentKind,
        #[arg(long, default_value = "default")]
        group: String,
        /// How long the token stays valid after --not-before, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        valid_for: humantime::Duration,
        /// Start of the activation window (RFC 3339), default now.
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long)]
        max_uses: Option<u32>,
        #[arg(long)]
        require_approval: bool,
        /// Policy for agents enrolled with this token (default "default").
        #[arg(long)]
        policy: Option<String>,
        /// Site label for agents enrolled with this token (an existing site).
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (secrets are never shown again).
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: agents can no longer enroll with it.
    Revoke {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokensCommand {
    /// Create a named admin credential; its secret is printed once.
    Create {
        #[command(flatten)]
        conn: AdminConn,
        /// 1-64 characters of A-Z a-z 0-9 . _ - (not "bootstrap").
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List admin credentials, revoked ones included (secrets are never shown).
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin credential (by ID, or by the name of one not revoked);
    /// it stops working at once. The last working one cannot be revoked.
    Revoke {
        #[command(flatten)]
        conn: AdminConn,
        id_or_name: String,
    },
    /// Replace an admin credential by a new one of the same name; the old
    /// one stops working at once. The new secret is printed, or written to
    /// --out (mode 0600), e.g. the server's admin.token for "bootstrap".
    Rotate {
        #[command(flatten)]
        conn: AdminConn,
        id_or_name: String,
        /// Write the new secret to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// The fleet's status table.
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        status: Option<AgentStatus>,
        #[arg(long)]
        json: bool,
    },
    /// One agent: facts, last errors, status history.
    Show {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Approve a Pending agent in a group that requires approval.
    Approve {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
    },
    /// Remove an agent: its credential stops working at once.
    Remove {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
    },
    /// Queue "run the doctor and upload the bundle" for an agent; it runs at
    /// the agent's next check-in and its verdict shows in `agents show`.
    Doctor {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        /// Run the doctor but do not upload a bundle.
        #[arg(long)]
        no_upload: bool,
        #[arg(long)]
        json: bool,
    },
    /// Queue the escalation capture on an agent (`tether-agent capture
    /// --upload` there): debug logging and a packet capture of its own
    /// traffic for the window, one check-in and one definitions update
    /// inside, then the bundle is uploaded. Starts at the agent's next
    /// check-in; the result names the bundle.
    Capture {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        /// The window, 2s to 1h (default: the agent's policy's definitions
        /// interval, held to those bounds).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Also capture the TLS key log of the agent's sessions, so
        /// Wireshark decrypts the capture; the agent's credential is
        /// rotated after the upload.
        #[arg(long)]
        tls_keylog: bool,
        /// Wait for the result (at most the window plus 10 minutes).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// List an agent's uploaded escalation bundles, newest first.
    Bundles {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Write the escalation report the support guides ask for: name, IPs,
    /// last update, status timeline, errors with codes, the doctor's
    /// verdict, the network path and the bundle's ID, as Markdown or as a
    /// self-contained HTML page.
    Escalate {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        /// The bundle to quote (default: the last doctor run's, else the
        /// newest).
        #[arg(long)]
        bundle: Option<Uuid>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: crate::escalate::Format,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Download one escalation bundle (tar.gz).
    BundleDownload {
        #[command(flatten)]
        conn: AdminConn,
        bundle_id: Uuid,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Queue "check the definitions now" for one agent (ID) or every agent of
    /// a group (--group); it runs at each agent's next check-in.
    UpdateNow {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        id: Option<Uuid>,
        /// Every agent of this group instead of one agent.
        #[arg(long)]
        group: Option<String>,
        /// Only this channel (default: every subscribed channel).
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Create a policy, or change the settings given and keep the others;
    /// prints what changed (its revision goes up).
    Set {
        #[command(flatten)]
        conn: AdminConn,
        name: String,
        #[command(flatten)]
        edit: Box<crate::policy::PolicyEdit>,
        /// Print the saved policy as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A TUF role whose key `tether defs rotate-key` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyRole {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Root => "root",
            KeyRole::Targets => "targets",
            KeyRole::Snapshot => "snapshot",
            KeyRole::Timestamp => "timestamp",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DefsCommand {
    /// Publish a file as a channel's next version (admin API); deltas from
    /// earlier versions are computed by the server.
    Publish {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        channel: String,
        /// The definitions file (at most 1 GiB).
        #[arg(long)]
        file: PathBuf,
        /// A note kept with the version.
        #[arg(long)]
        notes: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Per channel: versions, sizes, deltas and how many agents are in policy.
    Summary {
        #[command(flatten)]
        conn: AdminConn,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write an offline bundle of a channel for `tether agent defs import`.
    Export {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        channel: String,
        /// Where to write the bundle (tar).
        #[arg(long)]
        out: PathBuf,
    },
    /// Copy the signed repository to a directory a web server can serve
    /// (runs on the server's host, reading its data dir).
    Mirror {
        /// The directory to copy the served tree into.
        #[arg(long)]
        to: PathBuf,
        /// The server's data dir (default ./tether-data).
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Create the definitions repository before the server's first start,
    /// with its root signed by an offline key (`tether defs keygen`) that is
    /// read and never copied: only the online keys are written to the data
    /// dir (docs/defs-keys.md).
    Init {
        /// The offline root key (for example on removable media).
        #[arg(long = "root-key", value_name = "FILE")]
        root_key: PathBuf,
        /// The server's data dir (default ./tether-data).
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Generate a root signing key (ed25519, PKCS#8 PEM, mode 0600) to keep offline.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace a role's signing key and sign a new trust root with the
    /// current root key(s) (runs on the server's host; restart the server
    /// afterwards so it loads the new keys).
    RotateKey {
        #[arg(long, value_enum)]
        role: KeyRole,
        /// The new key (from `tether defs keygen`); default: a new online key.
        #[arg(long)]
        new_key: Option<PathBuf>,
        /// A current root key file (repeatable), needed to sign the new root.
        #[arg(long = "root-key", value_name = "FILE", required = true)]
        root_keys: Vec<PathBuf>,
        /// The server's data dir (default ./tether-data).
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The repository's directory when the server's `defs_dir` names
        /// one (a shared repository); default DATA_DIR/defs.
        #[arg(long, env = "TETHER_DEFS_DIR")]
        defs_dir: Option<PathBuf>,
    },
    /// Join this server's own definitions repository (DATA_DIR/defs) to the
    /// repository shared by several servers, before pointing its `defs_dir`
    /// there: the shared root is countersigned by this repository's root
    /// key, so agents that pinned it walk the chain to the shared root, and
    /// its channels are raised above what they installed
    /// (docs/deploy-multi-server.md).
    Join {
        /// The shared repository's directory (the other servers' `defs_dir`).
        #[arg(long, value_name = "DIR")]
        shared: PathBuf,
        /// A current root key of this server's own repository (repeatable);
        /// default: the key files in DATA_DIR/defs/keys.
        #[arg(long = "root-key", value_name = "FILE")]
        root_keys: Vec<PathBuf>,
        /// A current root key of the shared repository (repeatable), needed
        /// only when its root version is behind this one's; default: the key
        /// files in its keys/.
        #[arg(long = "shared-root-key", value_name = "FILE")]
        shared_root_keys: Vec<PathBuf>,
        /// This server's data dir (default ./tether-data).
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The server's effective configuration, with the source of each value.
    Show(ServerArgs),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Server(args) => server_cmd::run(args).await,
        Command::Token(cmd) => admin::token(cmd).await,
        Command::Agents(cmd) => admin::agents(cmd).await,
        Command::OfflineBundle(args) => {
            crate::agent_bundle::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminTokens(cmd) => admin::admin_tokens(cmd).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Tasks(cmd) => crate::tasks_cmd::run(cmd).await,
        Command::Sites(cmd) => crate::tasks_cmd::sites(cmd).await,
        Command::Fleet(cmd) => crate::fleet_cmd::run(cmd).await,
        Command::Certs(cmd) => crate::certs_cmd::run(cmd).await,
        Command::Defs(cmd) => defs::run(cmd).await,
        Command::Rollout(cmd) => crate::rollout_cmd::run(cmd).await,
        Command::Audit(cmd) => crate::audit_cmd::run(cmd).await,
        Command::Scan(cmd) => crate::scan_cmd::run(cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Agent(cmd) => tether_agent::cli::dispatch(cmd).await,
        Command::Doctor(args) => {
            tether_agent::cli::dispatch(tether_agent::cli::AgentCommand::Doctor(args)).await
        }
        Command::Errors { markdown } => {
            print!(
                "{}",
                if markdown {
                    errors_markdown()
                } else {
                    errors_text()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show(args)) => server_cmd::show_config(args),
        Command::Backup(args) => crate::backup_cmd::backup(args).await,
        Command::Restore(args) => crate::backup_cmd::restore(args).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            tether_agent::clidoc::completions(Cli::command(), args.shell, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            use clap::CommandFactory as _;
            // `tether agent …` is the endpoint binary's commands, whose own
            // pages (`tether-agent-doctor.1`, …) the same names would
            // overwrite; `tether.1` points there instead.
            let cmd = Cli::command().mut_subcommand("agent", |agent| agent.hide(true));
            let pages = tether_agent::clidoc::man_pages(cmd, &args.out)?;
            println!(
                "wrote {} man pages into {}",
                pages.len(),
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The content of docs/errors.md, generated from the catalog in tether-wire.
pub fn errors_markdown() -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# Tether error catalog\n\n\
         Generated by `tether errors --markdown` from `crates/tether-wire/src/error.rs`; do not edit by hand.\n\
         Every error a user can meet carries one of these codes: in API replies (`code`), in the agent's\n\
         state file and posture, at check-in, and in the doctor's verdict.\n\n\
         | code | HTTP | problem | action |\n|---|---|---|---|\n",
    );
    for code in tether_wire::ErrorCode::ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            code.as_str(),
            code.http_status(),
            code.problem().replace('|', "\\|"),
            code.action().replace('|', "\\|")
        );
    }
    out
}

fn errors_text() -> String {
    let mut out = String::new();
    for code in tether_wire::ErrorCode::ALL {
        out.push_str(&format!(
            "{}  {}\n    action: {}\n",
            code.as_str(),
            code.problem(),
            code.action()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_errors_md_is_generated_from_the_catalog() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == errors_markdown(),
            "docs/errors.md is stale: run `cargo run -- errors --markdown > docs/errors.md`"
        );
    }

    #[test]
    fn doctor_is_also_a_top_level_command_with_the_same_args() {
        let top = Cli::try_parse_from([
            "tether",
            "doctor",
            "--server",
            "https://s:8443",
            "--target",
            "h:22",
            "--json",
        ])
        .expect("parses");
        let nested = Cli::try_parse_from([
            "tether",
            "agent",
            "doctor",
            "--server",
            "https://s:8443",
            "--target",
            "h:22",
            "--json",
        ])
        .expect("parses");
        let (Command::Doctor(a), Command::Agent(tether_agent::cli::AgentCommand::Doctor(b))) =
            (top.command, nested.command)
        else {
            panic!("doctor did not parse as doctor");
        };
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn defs_commands_parse() {
        let cli = Cli::try_parse_from([
            "tether",
            "defs",
            "rotate-key",
            "--role",
            "targets",
            "--root-key",
            "a.pem",
            "--root-key",
            "b.pem",
        ])
        .expect("parses");
        let Command::Defs(DefsCommand::RotateKey {
            role,
            root_keys,
            new_key,
            ..
        }) = cli.command
        else {
            panic!("not rotate-key");
        };
        assert_eq!(role, KeyRole::Targets);
        assert_eq!(root_keys.len(), 2);
        assert_eq!(new_key, None);
        // A root key is required: rotating without one cannot be signed.
        assert!(Cli::try_parse_from(["tether", "defs", "rotate-key", "--role", "root"]).is_err());
        assert!(
            Cli::try_parse_from([
                "tether",
                "defs",
                "rotate-key",
                "--role",
                "admin",
                "--root-key",
                "a"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from([
            "tether",
            "defs",
            "join",
            "--shared",
            "/srv/defs",
            "--root-key",
            "b.pem",
        ])
        .expect("parses");
        let Command::Defs(DefsCommand::Join {
            shared,
            root_keys,
            shared_root_keys,
            ..
        }) = cli.command
        else {
            panic!("not join");
        };
        assert_eq!(shared, PathBuf::from("/srv/defs"));
        assert_eq!(root_keys, [PathBuf::from("b.pem")]);
        assert!(shared_root_keys.is_empty());
        // The shared directory is required.
        assert!(Cli::try_parse_from(["tether", "defs", "join"]).is_err());
    }

    #[test]
    fn update_now_takes_an_id_or_a_group_not_both() {
        let id = "7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e";
        assert!(Cli::try_parse_from(["tether", "agents", "update-now", id]).is_ok());
        let g = Cli::try_parse_from([
            "tether",
            "agents",
            "update-now",
            "--group",
            "lab",
            "--channel",
            "main",
        ])
        .expect("parses");
        let Command::Agents(AgentsCommand::UpdateNow {
            id: None,
            group: Some(group),
            channel: Some(channel),
            ..
        }) = g.command
        else {
            panic!("not a group update");
        };
        assert_eq!((group.as_str(), channel.as_str()), ("lab", "main"));
        assert!(Cli::try_parse_from(["tether", "agents", "update-now"]).is_err());
        assert!(
            Cli::try_parse_from(["tether", "agents", "update-now", id, "--group", "lab"]).is_err()
        );
    }

    #[test]
    fn admin_tokens_commands_parse() {
        let cli = Cli::try_parse_from([
            "tether",
            "admin-tokens",
            "rotate",
            "bootstrap",
            "--out",
            "tether-data/admin.token",
        ])
        .expect("parses");
        let Command::AdminTokens(AdminTokensCommand::Rotate {
            id_or_name, out, ..
        }) = cli.command
        else {
            panic!("not rotate");
        };
        assert_eq!(id_or_name, "bootstrap");
        assert_eq!(out, Some(PathBuf::from("tether-data/admin.token")));
        assert!(Cli::try_parse_from(["tether", "admin-tokens", "create"]).is_err());
        assert!(Cli::try_parse_from(["tether", "admin-tokens", "create", "--name", "ci"]).is_ok());
        assert!(Cli::try_parse_from(["tether", "admin-tokens", "list", "--json"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "tether", "audit", "list", "--actor", "ci", "--since", "2h", "--limit", "20",
                "--json"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["tether", "audit", "list", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["tether", "admin-tokens", "revoke", "ci"]).is_ok());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
