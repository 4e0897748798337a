//! `tether`: the control plane, the admin CLI, the agent commands, the
//! quickstart and the load generator in one command. The endpoint binary is
//! `tether-agent` (crates/tether-agent-bin), which carries no server code.

mod admin;
mod agent_bundle;
mod audit_cmd;
mod backup_cmd;
mod bench;
mod certs_cmd;
mod cli;
mod defs;
mod display;
mod endpoint;
mod escalate;
mod fleet_cmd;
mod policy;
mod quickstart;
mod rollout_cmd;
mod scan_cmd;
mod server_cmd;
mod tasks_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `tether agent X` and `tether doctor` exit as `tether-agent X`
            // does (one function decides for both binaries).
            let _ = error.print();
            let args: Vec<String> = std::env::args().skip(1).collect();
            return match args
                .iter()
                .find(|a| !a.starts_with('-'))
                .map(String::as_str)
            {
                Some("agent") => {
                    let at = args.iter().position(|a| a == "agent").unwrap_or(0);
                    tether_agent::cli::usage_exit(&error, &args[at + 1..])
                }
                Some("doctor") => tether_agent::cli::usage_exit(&error, &args),
                _ => ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2)),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
