//! `tether-agent`: the endpoint binary. Agent commands only; it carries no
//! server or database code (`tests/no_server_code.rs` keeps it that way).
//!
//! It runs on a current-thread runtime: the agent does one thing at a time
//! (a check-in every ~30 s), and one thread keeps the idle footprint small.

use std::process::ExitCode;

use clap::Parser;
use tether_agent::cli::AgentCommand;

/// The Tether agent.
#[derive(Debug, Parser)]
#[command(name = "tether-agent", version = tether_wire::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: AgentCommand,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            let args: Vec<String> = std::env::args().skip(1).collect();
            return tether_agent::cli::usage_exit(&error, &args);
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
    match runtime.block_on(tether_agent::dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
