//! `tether-agent`: the endpoint binary. Agent commands only; it carries no
//! server or database code (`tests/no_server_code.rs` keeps it that way).
//!
//! It runs on a current-thread runtime: the agent does one thing at a time
//! (a check-in every ~30 s), and one thread keeps the idle footprint small.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use tether_agent::cli::AgentCommand;
use tether_agent::clidoc;

/// The version this binary reports. `TETHER_AGENT_VERSION` at build time
/// overrides the workspace's: the upgrade tests build a second, real agent
/// that differs only in its version this way (scripts/test.sh), and only
/// this crate recompiles for it. Read here and nowhere else.
const VERSION: &str = match option_env!("TETHER_AGENT_VERSION") {
    Some(v) => v,
    None => tether_wire::VERSION,
};

/// The Tether agent.
#[derive(Debug, Parser)]
#[command(name = "tether-agent", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: BinCommand,
}

/// The agent's commands, plus what only the binary itself can describe.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; the small variants never sit in a collection"
)]
enum BinCommand {
    #[command(flatten)]
    Agent(AgentCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(clidoc::CompletionsArgs),
    /// Write the man pages (`tether-agent.1` and one per subcommand) into a directory.
    Man(clidoc::ManArgs),
}

fn main() -> ExitCode {
    tether_agent::set_version(VERSION);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            let args: Vec<String> = std::env::args().skip(1).collect();
            return tether_agent::cli::usage_exit(&error, &args);
        }
    };
    let command = match cli.command {
        BinCommand::Agent(command) => command,
        BinCommand::Completions(args) => {
            return match clidoc::completions(Cli::command(), args.shell, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: cannot write the completion script: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        BinCommand::Man(args) => {
            return match clidoc::man_pages(Cli::command(), &args.out) {
                Ok(pages) => {
                    println!(
                        "wrote {} man pages into {}",
                        pages.len(),
                        args.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(tether_agent::dispatch(command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
