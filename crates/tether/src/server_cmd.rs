//! `tether server` and `tether config show`: layer the configuration (file,
//! then TETHER_* env, then flags), start the control plane, wait for a signal.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tether_server::{RunningServer, ServerConfig};

use crate::cli::ServerArgs;
use crate::endpoint::Endpoint;

/// Builds the effective config: defaults, then the file, then env, then flags.
pub fn effective_config(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_toml_file(path)?,
        None => ServerConfig::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(listen) = args.listen {
        config.set_from_cli_listen(listen);
    }
    if let Some(dir) = &args.data_dir {
        config.set_from_cli_data_dir(dir.clone());
    }
    if let Some(url) = &args.database_url {
        config.set_from_cli_database_url(url.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.set_from_cli_tls(cert.clone(), key.clone());
    }
    Ok(config)
}

pub fn show_config(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    for (field, value, source) in config.describe() {
        println!("{field:<24} {value:<40} ({source})");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (quickstart after server) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the server and records where it listens for local admin commands.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let server = tether_server::start(config, Arc::new(tether_wire::SystemClock)).await?;
    Endpoint {
        url: server.url.clone(),
        ca_fingerprint: server.ca_fingerprint.clone(),
        ca_pem_path: absolute(&server.ca_pem_path),
        admin_token_path: absolute(&server.admin_token_path),
    }
    .write(&data_dir)?;
    Ok(server)
}

fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let config = effective_config(&args)?;
    let server = start(config).await?;
    println!("Tether control plane listening on {}", server.url);
    println!("CA fingerprint:    {}", server.ca_fingerprint);
    println!("Admin credential:  {}", server.admin_token_path.display());
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
