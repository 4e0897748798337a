//! `tether`: the control plane, the admin CLI, the agent commands, the
//! quickstart and the load generator in one command. The endpoint binary is
//! `tether-agent` (crates/tether-agent-bin), which carries no server code.

mod admin;
mod bench;
mod cli;
mod defs;
mod endpoint;
mod policy;
mod quickstart;
mod server_cmd;
mod tasks_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `doctor` promises exit code 3 when it cannot run, bad arguments included.
            let doctor = std::env::args().skip(1).take(2).any(|a| a == "doctor");
            if doctor && error.use_stderr() {
                let _ = error.print();
                return ExitCode::from(3);
            }
            error.exit()
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
