//! A stand-alone entry point to the doctor for the lab and the benchmark
//! (`scripts/bench-doctor.sh`): builds a pre-enrollment [`DoctorInput`] from
//! flags, runs it against the real world, prints the report and exits with
//! its code (0 healthy, 1 warnings, 2 failure, 3 the doctor could not run).
//! The product's `tether doctor` command lives in the CLI crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tether_doctor::{DoctorInput, World};
use tether_transport::{ProxyConfig, ProxySetting, TrustConfig};

/// Run the connectivity doctor against a Tether server.
#[derive(Debug, Parser)]
#[command(name = "doctor")]
struct Args {
    /// The control plane's base URL (https://host:port).
    #[arg(long)]
    server: url::Url,
    /// A PEM file of the CA to trust (the server's, as pinned at enrollment).
    /// Without it, the system roots are trusted.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// An HTTP proxy URL (http://[user:pass@]host:port).
    #[arg(long)]
    proxy: Option<String>,
    /// An enrollment token to check (never printed).
    #[arg(long)]
    token: Option<String>,
    /// Extra HOST:PORT targets to probe (repeatable).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// NTP servers to ask (repeatable); none by default, the lab is offline.
    #[arg(long = "ntp")]
    ntp: Vec<String>,
    /// The global deadline in seconds.
    #[arg(long, default_value_t = 10.0)]
    deadline: f64,
    /// Print the versioned JSON report instead of text.
    #[arg(long)]
    json: bool,
}

fn input(args: Args) -> Result<DoctorInput, String> {
    let mut i = DoctorInput::new(args.server);
    if let Some(path) = &args.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        i.transport.trust = TrustConfig {
            ca_pem: Some(pem),
            system_roots: false,
            ..TrustConfig::default()
        };
    }
    if let Some(p) = &args.proxy {
        let proxy = ProxyConfig::parse(p).map_err(|e| format!("--proxy: {e}"))?;
        i.transport.proxy = ProxySetting::Explicit(proxy);
    }
    i.token = args.token;
    for t in &args.targets {
        let (host, port) = t
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
            .ok_or_else(|| format!("--target {t}: expected HOST:PORT"))?;
        i.targets.push((host, port));
    }
    i.ntp_servers = args.ntp;
    if !(args.deadline.is_finite() && args.deadline > 0.0 && args.deadline <= 600.0) {
        return Err(format!(
            "--deadline {}: expected seconds in (0, 600]",
            args.deadline
        ));
    }
    i.deadline = Duration::from_secs_f64(args.deadline);
    Ok(i)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let input = match input(args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("doctor: {e}");
            return ExitCode::from(3);
        }
    };
    let report = tether_doctor::run(input, World::system()).await;
    if json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(report.exit_code())
}
