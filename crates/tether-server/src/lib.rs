//! The Tether control plane as a library: the `tether` binary calls
//! [`start`] for `tether server` and `tether quickstart`.
//!
//! Layers point one way: [`api`] handlers parse and authenticate, then call
//! [`service`] functions, which call the [`tether_store::Store`] trait. The
//! clock is injected everywhere; the only exception is certificate validity
//! in [`pki`], which clients judge by their own wall clocks.
//!
//! Statuses shown to admins are the recorded ones. Check-ins, shutdown
//! notices and the [`sweeper`] record every change as a transition, so the
//! status is at most one `sweep_interval` behind the facts, and the history
//! always explains it.
//!
//! Architecture Invariant: no secret is stored or logged. Tokens, agent
//! credentials and admin tokens are kept as SHA-256 only; the bootstrap
//! admin token is written to a 0600 file in the 0700 data dir, and a
//! rotated one replaces it there.
//!
//! Architecture Invariant: silence the control plane caused is not an
//! agent's. After a start and after the store recovers, every Active agent
//! gets a full threshold before the sweeper may declare it Inactive
//! ([`service::outage`]).
//!
//! Architecture Invariant: no request is ever answered with a bare 500.
//! Extractors never reject on their own; handlers map every failure to an
//! [`tether_wire::ErrorCode`], and [`api::guard`] turns panics into 503
//! `Internal` JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_store::Store;
use tether_wire::Clock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub mod api;
pub mod backup;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod fleet;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod proxy_protocol;
pub mod secret;
pub mod service;
pub mod singleton;
pub mod status;
pub mod sweeper;

pub use config::{ConfigError, ConfigSource, Flags, ServerConfig};
pub use error::ServerError;
pub use service::{Ctx, Settings};

/// A started control plane. Prefer [`RunningServer::shutdown`]: dropping it
/// (and every [`ShutdownHandle`]) closes the stop channel, so the listener
/// and the sweeper stop too, but nothing waits for in-flight requests.
pub struct RunningServer {
    /// The bound address (the configured port may be 0).
    pub local_addr: SocketAddr,
    /// `https://HOST:PORT` for clients on this machine.
    pub url: String,
    /// `sha256:<hex>` of the CA certificate agents pin.
    pub ca_fingerprint: String,
    /// A PEM file with the CA certificate (for `curl --cacert`).
    pub ca_pem_path: PathBuf,
    /// `data_dir/admin.token` (0600).
    pub admin_token_path: PathBuf,
    /// Whether this start created the admin token (first start).
    pub admin_token_created: bool,
    pub store: Arc<dyn Store>,
    ctx: Ctx,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// Expires task leases, dead-letters late tasks, fires schedules.
    task_sweeper: JoinHandle<()>,
    /// Re-signs the definitions metadata before it expires.
    defs_refresh: JoinHandle<()>,
    defs_watch: JoinHandle<()>,
    /// Deletes history past its retention.
    retention: JoinHandle<()>,
    /// Renews due certificates (a singleton job).
    renewal: JoinHandle<()>,
    /// Claims and renews the singleton jobs' leases; releases them at stop.
    singletons: JoinHandle<()>,
    /// Feeds the other servers' task wake-ups into the hub.
    wakeups: JoinHandle<()>,
    /// The plain-HTTP listener for `/pki/…`, when `pki_http_listen` is set.
    pki_http: Option<JoinHandle<()>>,
    /// Its bound address.
    pub pki_http_addr: Option<SocketAddr>,
    /// The outage recorded at this start (the restart), with its grace.
    pub start_outage: tether_wire::ControlPlaneOutage,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("url", &self.url)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// A cloneable trigger for a graceful shutdown, for callers that hand the
/// server to another task.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        // send_replace never fails, even when every receiver is gone.
        self.0.send_replace(true);
    }
}

impl RunningServer {
    /// The services' context (store, clock, settings), for in-process callers.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Runs one sweep now, independently of the sweeper's timer. Returns how
    /// many agents became Inactive.
    pub async fn sweep_now(&self) -> Result<usize, ServerError> {
        Ok(sweeper::sweep_once(&self.ctx).await?)
    }

    /// Runs one tick of the sweeper as its timer would: the heartbeat, the
    /// store probe and the outage's grace after a store failure, then the
    /// sweep (none while the store fails). Returns how many agents became
    /// Inactive.
    pub async fn sweeper_tick(&self) -> usize {
        if !service::outage::before_sweep(&self.ctx).await {
            return 0;
        }
        match sweeper::sweep_once(&self.ctx).await {
            Ok(n) => n,
            Err(error) => {
                service::outage::observe(&self.ctx, &error);
                0
            }
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Stops accepting, lets in-flight requests finish (up to
    /// [`http::SHUTDOWN_GRACE`]) and stops the sweeper.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        self.wait().await;
    }

    /// Waits until a [`ShutdownHandle`] (or [`RunningServer::shutdown`])
    /// stops the server and its tasks have finished. Signals are the
    /// caller's business.
    pub async fn wait(self) {
        let _ = self.http.await;
        if let Some(pki) = self.pki_http {
            let _ = pki.await;
        }
        let _ = self.sweeper.await;
        let _ = self.task_sweeper.await;
        let _ = self.defs_refresh.await;
        let _ = self.defs_watch.await;
        let _ = self.retention.await;
        let _ = self.renewal.await;
        let _ = self.wakeups.await;
        // After the jobs stopped, so nothing runs once the leases are free.
        let _ = self.singletons.await;
        info!("control plane stopped");
    }
}

/// The default database URL: SQLite in the data dir.
pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("tether.db").display())
}

/// Starts the control plane: data dir, store, admin token, TLS identity,
/// listener, sweeper.
pub async fn start(
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let data_dir = prepare_data_dir(&config.data_dir)?;
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| default_database_url(&data_dir));
    let pg = tether_store_sql::PgSettings {
        ssl_mode: config
            .database_sslmode
            .as_deref()
            .and_then(tether_store_sql::SslMode::parse),
        ca_file: config.database_ca_file.clone(),
        pool_size: Some(config.database_pool_size),
    };
    let store = tether_store_sql::connect_with(&url, &pg)
        .await
        .map_err(|error| ServerError::StoreOpen {
            url: config::redact_url(&url),
            error,
        })?;
    start_with_store(config, store, clock).await
}

/// Creates the data dir mode 0700 (it holds the CA key, the definitions
/// signing keys, the admin token and, with SQLite, every agent's record).
/// An existing directory open to others is used, with a warning.
fn prepare_data_dir(dir: &std::path::Path) -> Result<PathBuf, ServerError> {
    let err = |error| ServerError::DataDir {
        path: dir.to_owned(),
        error,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data dir is open to other users; `chmod 700` it"
            );
        }
    }
    std::path::absolute(dir).map_err(err)
}

/// Like [`start`], with a store the caller opened.
pub async fn start_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let data_dir = prepare_data_dir(&config.data_dir)?;
    store.ping().await?;

    let instance = bootstrap::instance_id(&data_dir)?;
    let admin_token_path = data_dir.join("admin.token");
    let admin_token_created =
        bootstrap::ensure_admin_token(store.as_ref(), &admin_token_path, &instance, clock.now())
            .await?;

    let identity = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => pki::load_operator(cert, key, &data_dir)?,
        // Certificates are judged by clients against their real clocks, so
        // the generated ones are dated by the real clock too.
        _ => pki::load_or_generate(
            &data_dir,
            &config.extra_sans,
            time::OffsetDateTime::now_utc(),
        )?,
    };
    let tls = pki::tls_config(&identity)?;

    let defs_dir = config.effective_defs_dir();
    let defs_open = |error| ServerError::DefsOpen {
        path: defs_dir.clone(),
        error,
    };
    let defs = tether_defs_publish::repo::Repo::open(&defs_dir, clock.clone())
        .await
        .map_err(defs_open)?;
    // Said only when someone asked for more polls than the cap allows; the
    // default (docs/server-config.md) is capped quietly.
    if config.effective_task_pollers() < config.max_task_pollers
        && config.max_task_pollers != config::DEFAULT_MAX_TASK_POLLERS
    {
        tracing::warn!(
            max_task_pollers = config.max_task_pollers,
            max_connections = config.max_connections,
            held = config.effective_task_pollers(),
            "task polls are capped at three quarters of max_connections, so check-ins keep a quarter; raise max_connections (and `ulimit -n`) to hold more"
        );
    }
    // The root key signs every agent's trust root; on this host it is one
    // break-in away. docs/defs-keys.md moves it offline.
    match tether_defs_publish::repo::online_root_keys(&defs_dir) {
        Ok(keys) if !keys.is_empty() => {
            let code = tether_wire::ErrorCode::DefsRootKeyOnline;
            tracing::warn!(
                code = %code,
                keys = ?keys,
                action = code.action(),
                "the definitions root key is online: {}",
                code.problem()
            );
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(error = %error, "could not check whether the definitions root key is online")
        }
    }
    let ctx = Ctx::new(
        store.clone(),
        defs,
        clock,
        Settings::from_config(&config),
        limits::LimitSettings::from_config(&config),
        &instance,
    )
    .await
    .map_err(|e| match e {
        service::ServiceError::Defs(error) => defs_open(error),
        other => ServerError::DefsReconcile(other.to_string()),
    })?;
    let mut ctx = ctx;
    let pki_urls = match &config.pki_public_url {
        // Checked by `validate`; an error here would be a bug, so say so.
        Some(url) => Some(tether_pki::revoke::PkiUrls::new(url).map_err(|problem| {
            ServerError::Config(ConfigError::Invalid {
                key: "pki_public_url".to_owned(),
                value: url.clone(),
                expected: problem,
            })
        })?),
        None => None,
    };
    ctx.ca = service::revocation::with_urls(service::issuance::load(&data_dir), pki_urls);
    ctx.acme = Arc::new(service::acme::Acme::load(&data_dir));
    // Before the sweeper runs: the time this server was down was not the
    // agents' silence.
    let start_outage = service::outage::on_start(&ctx).await?;
    // Versions published while the store was failing are recorded now.
    service::defs::reconcile(&ctx)
        .await
        .map_err(|e| ServerError::DefsReconcile(e.to_string()))?;

    // Claimed before the jobs start, so a lone server runs them from their
    // first tick.
    let held = ctx
        .singletons
        .claim_all(store.as_ref(), ctx.clock.as_ref())
        .await;
    info!(jobs = ?held, holder = ctx.singletons.holder(), "singleton jobs held at start");

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| ServerError::Bind {
            addr: config.listen,
            error,
        })?;
    let local_addr = listener.local_addr().map_err(|error| ServerError::Bind {
        addr: config.listen,
        error,
    })?;
    // The optional plain-HTTP listener for the CRL and OCSP (docs/pki.md).
    let pki_listener = match &config.pki_http_listen {
        Some(addr) => {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                ServerError::Config(ConfigError::Invalid {
                    key: "pki_http_listen".to_owned(),
                    value: addr.clone(),
                    expected: "an address and port such as 0.0.0.0:80".to_owned(),
                })
            })?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|error| ServerError::Bind { addr, error })?;
            Some(listener)
        }
        None => None,
    };
    let pki_http_addr = pki_listener.as_ref().and_then(|l| l.local_addr().ok());
    let (stop, stop_rx) = watch::channel(false);
    let pki_http = pki_listener.map(|listener| {
        tokio::spawn(http::serve_plain(
            listener,
            api::pki::router(ctx.clone()),
            http::Limits::from_config(&config),
            stop_rx.clone(),
        ))
    });
    let http = tokio::spawn(http::serve(
        listener,
        tls,
        api::router(ctx.clone()),
        http::Limits::from_config(&config),
        proxy_protocol::Policy::from_config(&config),
        stop_rx.clone(),
    ));
    let sweeper = tokio::spawn(sweeper::run(
        ctx.clone(),
        Duration::from_millis(config.sweep_interval_ms),
        stop_rx.clone(),
    ));
    let task_sweeper = tokio::spawn(service::tasks::run_sweeper(
        ctx.clone(),
        Duration::from_millis(config.sweep_interval_ms),
        stop_rx.clone(),
    ));
    let defs_refresh = tokio::spawn(service::defs::refresh_loop(ctx.clone(), stop_rx.clone()));
    let defs_watch = tokio::spawn(service::defs::watch_loop(ctx.clone(), stop_rx.clone()));
    let retention = tokio::spawn(service::retention::run(ctx.clone(), stop_rx.clone()));
    let renewal = tokio::spawn(service::renewal::run(
        ctx.clone(),
        Duration::from_millis(config.sweep_interval_ms),
        stop_rx.clone(),
    ));
    let wakeups = tokio::spawn(service::tasks::wakeups::run(
        store.clone(),
        ctx.tasks.clone(),
        stop_rx.clone(),
    ));
    let singletons = tokio::spawn(singleton::run(
        ctx.singletons.clone(),
        store.clone(),
        ctx.clock.clone(),
        stop_rx,
    ));
    let url = http::url_for(local_addr);
    info!(
        url = %url,
        backend = store.backend(),
        ca_fingerprint = %identity.ca_fingerprint,
        admin_token = %admin_token_path.display(),
        "control plane started"
    );
    Ok(RunningServer {
        local_addr,
        url,
        ca_fingerprint: identity.ca_fingerprint,
        ca_pem_path: identity.ca_pem_path,
        admin_token_path,
        admin_token_created,
        store,
        ctx,
        stop,
        http,
        sweeper,
        task_sweeper,
        defs_refresh,
        defs_watch,
        retention,
        renewal,
        singletons,
        wakeups,
        pki_http,
        pki_http_addr,
        start_outage,
    })
}
