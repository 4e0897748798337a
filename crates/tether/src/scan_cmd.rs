//! `tether scan run`: a discovery scan from this machine, with a progress
//! bar on the terminal, results streamed as text or JSON (never held all at
//! once), and a summary that counts every outcome.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tether_scan::spec::{PortSpec, StarttlsSetting};
use tether_scan::{
    DiscoverSpec, EndpointResult, Outcome, Progress, Roots, Scanner, SniMode, Summary,
};
use tokio::sync::mpsc;

use crate::display::{safe, safe_cut};

#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// Scan targets for TLS endpoints and report their certificates.
    Run(ScanRunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ScanRunArgs {
    /// Targets, comma-separated: CIDRs (10.0.0.0/24), ranges (10.0.0.1-50),
    /// addresses and host names.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Ports, comma-separated: 443,8443,8000-8100.
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<String>,
    /// SNI: auto (a host name's own), reverse-dns, or none.
    #[arg(long, default_value = "auto")]
    pub sni: String,
    /// An explicit SNI name for an address: ADDR=NAME (repeatable).
    #[arg(long = "sni-name")]
    pub sni_names: Vec<String>,
    /// STARTTLS on a port: PORT=smtp|imap|pop3|ldap|postgres|none
    /// (repeatable; 25, 587, 143, 110, 389 and 5432 have defaults).
    #[arg(long)]
    pub starttls: Vec<String>,
    /// Probes in flight at once (default 64).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// New connections per second to one address (default 10).
    #[arg(long)]
    pub rate_per_host: Option<u32>,
    /// TCP connect limit; a silent port is filtered after it (default 3s).
    /// Once endpoints answer, the limit adapts to their round trips (a
    /// silent port then gets a second, longer try), never beyond this.
    #[arg(long)]
    pub connect_timeout: Option<humantime::Duration>,
    /// Wait the whole --connect-timeout on every silent port, without
    /// adapting to the round trips measured.
    #[arg(long)]
    pub fixed_connect_timeout: bool,
    /// STARTTLS plus TLS handshake limit (default 5s).
    #[arg(long)]
    pub handshake_timeout: Option<humantime::Duration>,
    /// The whole spec as a JSON file (the `discover` task's spec) instead
    /// of the flags above.
    #[arg(long, conflicts_with_all = ["targets", "ports"])]
    pub spec: Option<PathBuf>,
    /// Extra trusted CA certificates (PEM) besides the system's, for
    /// verdicts on a private PKI.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print every endpoint (text output lists only those that answered).
    #[arg(long)]
    pub all: bool,
    /// JSON output: {"results": [...], "summary": {...}}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: ScanCommand) -> anyhow::Result<()> {
    match cmd {
        ScanCommand::Run(args) => scan_run(args).await,
    }
}

fn ms(d: Option<humantime::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(Duration::from(d).as_millis()).unwrap_or(u64::MAX))
}

/// The spec the flags describe.
pub fn spec_from_args(args: &ScanRunArgs) -> anyhow::Result<DiscoverSpec> {
    if let Some(path) = &args.spec {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        return DiscoverSpec::from_json(&value).map_err(spec_error);
    }
    let sni = match args.sni.as_str() {
        "auto" => SniMode::Auto,
        "reverse-dns" | "reverse_dns" => SniMode::ReverseDns,
        "none" => SniMode::None,
        other => bail!(
            "--sni {}: expected auto, reverse-dns or none",
            safe_cut(other, 40)
        ),
    };
    let mut sni_names = std::collections::BTreeMap::<String, Vec<String>>::new();
    for pair in &args.sni_names {
        let (addr, name) = pair
            .split_once('=')
            .with_context(|| format!("--sni-name {}: expected ADDR=NAME", safe_cut(pair, 60)))?;
        sni_names
            .entry(addr.to_owned())
            .or_default()
            .push(name.to_owned());
    }
    let mut starttls = std::collections::BTreeMap::new();
    for pair in &args.starttls {
        let (port, proto) = pair.split_once('=').with_context(|| {
            format!("--starttls {}: expected PORT=PROTOCOL", safe_cut(pair, 60))
        })?;
        let setting: StarttlsSetting =
            serde_json::from_value(serde_json::Value::String(proto.to_owned())).map_err(|_| {
                anyhow::anyhow!(
                    "--starttls {}: expected smtp, imap, pop3, ldap, postgres or none",
                    safe_cut(pair, 60)
                )
            })?;
        starttls.insert(port.to_owned(), setting);
    }
    Ok(DiscoverSpec {
        targets: args.targets.clone(),
        ports: args
            .ports
            .iter()
            .map(|p| PortSpec::Text(p.clone()))
            .collect(),
        sni,
        sni_names,
        starttls,
        concurrency: args.concurrency,
        rate_per_host: args.rate_per_host,
        connect_timeout_ms: ms(args.connect_timeout),
        handshake_timeout_ms: ms(args.handshake_timeout),
        fixed_connect_timeout: args.fixed_connect_timeout,
        allowed_hours: None,
        tz: None,
    })
}

fn spec_error(e: tether_scan::SpecError) -> anyhow::Error {
    anyhow::anyhow!("{}\n  action: {}", safe(&e.to_string()), e.code.action())
}

async fn scan_run(args: ScanRunArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(&args)?;
    let plan = spec.plan().map_err(spec_error)?;
    let extra: Vec<CertificateDer<'static>> = match &args.ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
            let certs = certs.with_context(|| format!("{} is not PEM", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no CERTIFICATE block", path.display());
            }
            certs
        }
        None => Vec::new(),
    };
    let scanner = Scanner {
        roots: Arc::new(Roots::system_and(&extra)),
        ..Scanner::default()
    };
    let progress = Arc::new(Progress::default());
    let total = plan.estimated_endpoints();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} endpoints ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (tx, mut rx) = mpsc::channel::<EndpointResult>(256);
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stopper.store(true, Ordering::Relaxed);
        }
    });
    let json = args.json;
    let all = args.all;
    let printer_bar = bar.clone();
    let printer = tokio::spawn(async move {
        let stdout = std::io::stdout();
        let mut first = true;
        if json {
            let mut out = stdout.lock();
            let _ = write!(out, "{{\"results\":[");
        }
        while let Some(r) = rx.recv().await {
            printer_bar.inc(1);
            if json {
                let mut out = stdout.lock();
                let sep = if first { "" } else { "," };
                first = false;
                let _ = write!(
                    out,
                    "{sep}{}",
                    serde_json::to_string(&r).unwrap_or_else(|_| "null".to_owned())
                );
            } else if all
                || !matches!(
                    r.outcome,
                    Outcome::Refused | Outcome::Filtered { .. } | Outcome::NotScanned { .. }
                )
            {
                printer_bar.suspend(|| println!("{}", text_line(&r)));
            }
        }
    });
    let summary = scanner.run(&plan, tx, progress, stop).await;
    printer.await.context("the output task failed")?;
    bar.finish_and_clear();
    if json {
        println!("],\"summary\":{}}}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary_text(&summary));
    }
    Ok(())
}

/// One endpoint, one line (plus one per certificate of its chain).
pub fn text_line(r: &EndpointResult) -> String {
    let ep = &r.endpoint;
    let mut where_ = format!("{}:{}", ep.ip, ep.port);
    if let Some(n) = &ep.name {
        where_ = format!("{} ({where_})", safe_cut(n, 80));
    }
    if let Some(s) = &ep.sni {
        where_.push_str(&format!(" sni={}", safe_cut(s, 80)));
    }
    if let Some(p) = ep.starttls {
        where_.push_str(&format!(" starttls={}", p.as_str()));
    }
    let what = match &r.outcome {
        Outcome::Filtered { detail } => format!("filtered: {}", safe_cut(detail, 200)),
        Outcome::Refused => "refused".to_owned(),
        Outcome::NotTls { detail } => format!("not TLS: {}", safe_cut(detail, 200)),
        Outcome::TlsFailed { reason, .. } => format!("TLS failed: {}", safe_cut(reason, 200)),
        Outcome::TlsAccepted {
            protocol,
            cipher,
            client_cert_optional,
            ..
        } => format!(
            "TLS {protocol} {cipher}{}",
            if *client_cert_optional {
                " (client certificate optional)"
            } else {
                ""
            }
        ),
        Outcome::ClientCertRequired { .. } => "client certificate required".to_owned(),
        Outcome::LegacyOnly { why, cipher, .. } => {
            format!("legacy only: {} (cipher {cipher})", safe_cut(why, 100))
        }
        Outcome::Unresolved { detail } => format!("unresolved: {}", safe_cut(detail, 200)),
        Outcome::NotScanned { reason } => format!("not scanned: {}", safe_cut(reason, 200)),
    };
    let mut line = format!("{where_}  {what}");
    if let Some(chain) = r.outcome.chain() {
        let verdicts: Vec<&str> = chain.verdicts.iter().map(|v| v.as_str()).collect();
        line.push_str(&format!(
            "  [{}]",
            if verdicts.is_empty() {
                "ok".to_owned()
            } else {
                verdicts.join(", ")
            }
        ));
        for (i, c) in chain.certs.iter().enumerate() {
            line.push_str(&format!(
                "\n    {i}: {}  issuer {}  until {}  {} {}-bit  {}",
                safe_cut(&c.subject, 120),
                safe_cut(&c.issuer, 120),
                c.not_after.date(),
                safe(&c.key_type),
                c.key_bits,
                c.fingerprint
            ));
        }
        if chain.presented > chain.certs.len() {
            line.push_str(&format!(
                "\n    … {} more presented",
                chain.presented - chain.certs.len()
            ));
        }
    }
    line
}

/// The counts of every outcome.
pub fn summary_text(s: &Summary) -> String {
    let mut out = format!(
        "Scanned {} endpoints: {} chains recorded, {} with problems.\n",
        s.total, s.chains, s.chains_with_problems
    );
    for (name, n) in &s.outcomes {
        out.push_str(&format!("  {name:<22}{n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: ScanCommand,
    }

    fn args(line: &[&str]) -> ScanRunArgs {
        let t =
            T::try_parse_from(std::iter::once("t").chain(line.iter().copied())).expect("parses");
        match t.cmd {
            ScanCommand::Run(a) => a,
        }
    }

    #[test]
    fn flags_become_the_spec() {
        let a = args(&[
            "run",
            "--targets",
            "10.0.0.0/30,mail.example",
            "--ports",
            "443,8000-8002",
            "--sni",
            "reverse-dns",
            "--sni-name",
            "10.0.0.1=a.example",
            "--starttls",
            "8000=smtp",
            "--connect-timeout",
            "750ms",
        ]);
        let spec = spec_from_args(&a).expect("spec");
        let plan = spec.plan().expect("valid");
        assert_eq!(plan.ports(), &[443, 8000, 8001, 8002]);
        assert_eq!(plan.starttls(8000), Some(tether_scan::Starttls::Smtp));
        assert_eq!(plan.connect_timeout, Duration::from_millis(750));
        assert_eq!(spec.sni, SniMode::ReverseDns);
    }

    #[test]
    fn a_hostile_spec_is_refused_with_its_code_and_action() {
        let a = args(&["run", "--targets", "0.0.0.0/0", "--ports", "443"]);
        let e = spec_from_args(&a)
            .expect("spec")
            .plan()
            .map_err(spec_error)
            .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("TETHER-E8102") && text.contains("action: Split"),
            "{text}"
        );
        let a = args(&[
            "run",
            "--targets",
            "10.0.0.1",
            "--ports",
            "443",
            "--starttls",
            "443=gopher",
        ]);
        assert!(spec_from_args(&a).is_err());
    }
}
