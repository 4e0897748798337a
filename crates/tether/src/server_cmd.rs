//! `tether server` and `tether config show`: layer the configuration (file,
//! then TETHER_* env, then flags), start the control plane, wait for a signal.

use std::process::ExitCode;
use std::sync::Arc;

use tether_server::{Flags, RunningServer, ServerConfig};

use crate::cli::ServerArgs;
use crate::endpoint::Endpoint;

/// Builds the effective config: defaults, then the file, then `TETHER_*`
/// env, then flags (figment does the layering and remembers each source).
pub fn effective_config(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
    let flags = Flags {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    };
    Ok(ServerConfig::load(
        args.config.as_deref(),
        |k| std::env::var(k).ok(),
        &flags,
    )?)
}

pub fn show_config(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    for (field, value, source) in config.describe() {
        println!("{field:<34} {value:<40} ({source})");
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
    // The server creates the data dir itself, mode 0700.
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
    let server = match start(config).await {
        Ok(server) => server,
        Err(error) => {
            // A start the operator must fix names its catalog code and action.
            if let Some(failed) = error.downcast_ref::<tether_server::ServerError>() {
                let code = failed.code();
                eprintln!("error: {code}: {failed}");
                eprintln!("  action: {}", code.action());
                return Ok(ExitCode::FAILURE);
            }
            return Err(error);
        }
    };
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
