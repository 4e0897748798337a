//! Command-line definitions and dispatch. Each subcommand's work lives in its
//! own module; this file only routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tether_wire::{AgentKind, AgentStatus};
use uuid::Uuid;

use crate::{admin, bench, quickstart, server_cmd};

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
    /// Inspect and set policies (admin API).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Agent commands (the same as the `tether-agent` endpoint binary).
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
    /// Load generators that print figures (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long, env = "TETHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory: SQLite database, PKI, admin credential (default ./tether-data).
    #[arg(long, env = "TETHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite:///path/tether.db or postgres://user@host/db (default SQLite in the data dir).
    #[arg(long, env = "TETHER_DATABASE_URL")]
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
    /// List an agent's uploaded escalation bundles, newest first.
    Bundles {
        #[command(flatten)]
        conn: AdminConn,
        id: Uuid,
        #[arg(long)]
        json: bool,
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
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Create or update a policy (its revision goes up).
    Set {
        #[command(flatten)]
        conn: AdminConn,
        name: String,
        /// Check-in interval, e.g. 30s, 5m.
        #[arg(long)]
        checkin_interval: humantime::Duration,
        #[arg(long, default_value_t = 10)]
        jitter_percent: u8,
        /// A `HOST:PORT` the connectivity doctor checks on every agent of
        /// this policy (repeatable; at most 64). Replaces the policy's list.
        #[arg(long = "target", value_name = "HOST:PORT")]
        targets: Vec<String>,
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
        Command::Policy(cmd) => admin::policy(cmd).await,
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
        Command::Bench(cmd) => bench::run(cmd).await,
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
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
