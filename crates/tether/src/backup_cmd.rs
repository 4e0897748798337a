//! `tether backup` and `tether restore` (docs/backup.md): the arguments and
//! what is printed; the work is `tether_server::backup`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tether_server::backup::{self, BackupError, KekPlace, PgSettings, SslMode};
use tether_server::{Flags, ServerConfig};

/// `tether backup`: the server's own configuration says where its state is.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The backup file to write (0600; replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// The server's data dir (default ./tether-data; env TETHER_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server's database URL (default SQLite in the data dir; env TETHER_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The server's TOML config file.
    #[arg(long, env = "TETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seal the backup with the passphrase in this file (its first line).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// `tether restore FILE --data-dir DIR`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file `tether backup` wrote.
    pub file: PathBuf,
    /// The data dir to create; it must be missing or empty unless --force.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The database to restore into: postgres://… for a PostgreSQL backup
    /// (an empty database), default SQLite in the data dir.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Replace a data dir or database that is not empty.
    #[arg(long)]
    pub force: bool,
    /// The file holding the passphrase a sealed backup was written with.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// The passphrase: the file's first line, which must not be empty.
fn passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the passphrase file {}: {e}", file.display()))?;
    let line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(
        !line.is_empty(),
        "the passphrase file {} holds no passphrase on its first line",
        file.display()
    );
    Ok(Some(line.as_bytes().to_vec()))
}

fn pg_settings(config: &ServerConfig) -> PgSettings {
    PgSettings {
        ssl_mode: config.database_sslmode.as_deref().and_then(SslMode::parse),
        ca_file: config.database_ca_file.clone(),
        pool_size: None,
    }
}

fn coded(error: BackupError) -> anyhow::Error {
    let code = error.code();
    anyhow::anyhow!(
        "{code}: {error}\n  {}\n  action: {}",
        code.problem(),
        code.action()
    )
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        listen: None,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        tls_cert: None,
        tls_key: None,
    };
    let config = ServerConfig::load(args.config.as_deref(), |k| std::env::var(k).ok(), &flags)?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| tether_server::default_database_url(&config.data_dir));
    let req = backup::BackupRequest {
        data_dir: config.data_dir.clone(),
        database_url,
        pg: pg_settings(&config),
        out: args.out.clone(),
        now: time::OffsetDateTime::now_utc(),
        kek_in_env: std::env::var_os(tether_pki::seal::KEK_ENV).is_some(),
        passphrase: passphrase(args.passphrase_file.as_deref())?,
    };
    let report = backup::create(&req).await.map_err(coded)?;
    let m = &report.manifest;
    println!(
        "wrote {} ({} bytes): {} database, {} members, format version {}",
        args.out.display(),
        report.size,
        m.backend,
        m.members.len(),
        m.version
    );
    if req.passphrase.is_none() {
        eprintln!(
            "warning: the backup is not encrypted: it holds the server's private keys, the definitions signing keys and the admin token; keep it like the data dir itself (mode 0600, encrypted storage), or write it with --passphrase-file"
        );
    }
    match m.kek {
        KekPlace::Included => eprintln!(
            "warning: the KEK (ca.kek) is in this backup, so whoever holds the file can open the built-in CA's key and the ACME accounts"
        ),
        KekPlace::Environment => eprintln!(
            "warning: the KEK is in TETHER_CA_KEY and NOT in this backup: a restored server needs the same TETHER_CA_KEY to issue with the built-in CA and to use its ACME accounts"
        ),
        KekPlace::None => {}
    }
    if config.tls_cert.is_some() {
        eprintln!(
            "warning: the operator's TLS certificate and key ({}) are outside the data dir and NOT in this backup",
            config
                .tls_cert
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    for path in &report.skipped {
        eprintln!(
            "warning: {} is not a plain file and was not backed up",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let req = backup::RestoreRequest {
        file: args.file.clone(),
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        pg: PgSettings::default(),
        force: args.force,
        passphrase: passphrase(args.passphrase_file.as_deref())?,
    };
    let report = backup::restore(&req).await.map_err(coded)?;
    let m = &report.manifest;
    println!(
        "restored {} ({} database, {} members, taken {}) into {}",
        args.file.display(),
        m.backend,
        m.members.len(),
        m.created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        args.data_dir.display()
    );
    if m.kek == KekPlace::Environment {
        eprintln!(
            "warning: the backup's server kept its KEK in TETHER_CA_KEY: start this server with the same TETHER_CA_KEY, or the built-in CA and the ACME accounts cannot be opened"
        );
    }
    Ok(ExitCode::SUCCESS)
}
