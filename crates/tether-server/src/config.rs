//! The server's configuration: one typed struct, layered by figment from
//! its defaults, then a TOML file, then `TETHER_*` environment variables,
//! then command-line flags ([`ServerConfig::load`]). figment remembers which
//! layer gave each value, which is what `tether config show` prints.
//!
//! A field is written once, in [`ServerConfig`] (with its doc comment), and
//! its default once, in `Default`. Its environment variable is derived from
//! its name (`TETHER_` and the name in capitals) and its bounds are checked
//! by [`ServerConfig::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

/// Where a configuration value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// The built-in default.
    Default,
    /// The TOML file given with `--config`.
    File,
    /// A `TETHER_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigSource::Default => "default",
            ConfigSource::File => "file",
            ConfigSource::Env => "env",
            ConfigSource::Flag => "flag",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A layer holds a value the struct cannot take: an unknown field, a
    /// wrong type, a value that does not parse.
    #[error("{key}{} ({source_name}): {problem}", value.as_ref().map(|v| format!("={v:?}")).unwrap_or_default())]
    Layer {
        /// The field, or its environment variable when the value came from there.
        key: String,
        value: Option<String>,
        /// "TOML file t.toml", "environment variable", "command-line flag".
        source_name: String,
        problem: String,
    },
    #[error("{key}={value:?} is not valid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
}

impl ConfigError {
    pub fn code(&self) -> tether_wire::ErrorCode {
        tether_wire::ErrorCode::ConfigInvalid
    }
}

/// The control plane's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address the HTTPS listener binds (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the server keeps its state: the SQLite database (by default),
    /// the generated PKI under `pki/`, the definitions repository and the
    /// bootstrap `admin.token`. Created mode 0700.
    pub data_dir: PathBuf,
    /// The store's URL: `sqlite:///abs/path.db`, `sqlite::memory:` or
    /// `postgres://…`. Unset means SQLite at `data_dir/tether.db`.
    #[serde(deserialize_with = "optional_text")]
    pub database_url: Option<String>,
    /// An operator-provided certificate chain (PEM, leaf first). Unset means
    /// a generated local CA and server certificate under `data_dir/pki`.
    #[serde(deserialize_with = "optional_path")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) matching `tls_cert`; required with it.
    #[serde(deserialize_with = "optional_path")]
    pub tls_key: Option<PathBuf>,
    /// The definitions repository's directory. Several servers on one
    /// PostgreSQL point it at one directory on storage they all reach (NFS,
    /// a cluster file system) and serve one repository
    /// (docs/deploy-multi-server.md). Unset: `data_dir/defs`.
    #[serde(deserialize_with = "optional_path")]
    pub defs_dir: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated server certificate
    /// (a list in the file, comma-separated in the environment).
    #[serde(deserialize_with = "text_list")]
    pub extra_sans: Vec<String>,
    /// The agent version the server considers current; older agents are
    /// flagged. Unset means this build's version.
    #[serde(deserialize_with = "optional_text")]
    pub current_agent_version: Option<String>,
    /// Seconds added to twice an agent's interval (plus jitter) before it is
    /// declared Inactive.
    pub inactive_grace_secs: u32,
    /// How often the sweeper looks for overdue agents, in milliseconds.
    pub sweep_interval_ms: u64,
    /// The largest JSON request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds an agent's definitions may lag beyond a channel's usual
    /// publish interval before the agent is out of policy.
    pub defs_grace_secs: u32,
    /// The largest definitions file a publish accepts, in bytes. It is held
    /// in memory while it is published, so keep it below the free RAM.
    pub defs_max_publish_bytes: u64,
    /// The most connections served at once. Beyond it, new connections wait
    /// in the kernel's accept queue until one closes. Keep it below the
    /// process's open-file limit (`ulimit -n`).
    pub max_connections: u32,
    /// Seconds a connection may go without sending a complete request
    /// header: a slow sender, or a keep-alive connection left idle.
    pub idle_timeout_secs: u32,
    /// Seconds a write to a client may make no progress (a client that
    /// stopped reading) before the connection is closed, freeing the file
    /// and the task of a streamed body.
    pub write_timeout_secs: u32,
    /// The slowest a streamed body (`/defs/`) may be read, in bytes per
    /// second, after a first minute: a reader that trickles is cut off at
    /// `60 s + size / rate`.
    pub stream_min_bytes_per_sec: u32,
    /// Seconds an agent's request (check-in, enrollment, shutdown) waits on
    /// the store before it is answered 503 with Retry-After.
    pub store_wait_secs: u32,
    /// Failed enrollments one source address may make per minute before its
    /// further failures are answered 429 (TETHER-E3405) with Retry-After.
    /// Enrollments that succeed are never counted nor refused, so a fleet
    /// behind one NAT enrolls freely. 0 turns the limit off.
    pub enroll_failures_per_minute: u32,
    /// Definitions downloads (`/defs/`) one source address may stream at
    /// once; more are answered 429 with Retry-After. Generous by default,
    /// because a NAT or a load balancer puts whole fleets behind one address.
    pub defs_streams_per_address: u32,
    /// Escalation bundle uploads served at once, server-wide; more are
    /// answered 429 with Retry-After.
    pub bundle_uploads_concurrent: u32,
    /// Escalation bundles one agent may upload per hour (each agent keeps its
    /// newest 10 anyway); more are answered 429 with Retry-After.
    pub bundle_uploads_per_agent_per_hour: u32,
    /// Days status transitions and control-plane outages are kept. An
    /// agent's newest transition is kept whatever its age. 0 keeps all.
    pub transitions_retention_days: u32,
    /// Days completed actions are kept. 0 keeps all.
    pub actions_retention_days: u32,
    /// Days admin audit log entries are kept. 0 keeps all.
    pub audit_retention_days: u32,
    /// The longest a task poll is held, in seconds. Below common
    /// load-balancer idle timeouts (60 s), so a held poll is never cut.
    pub task_poll_max_wait_secs: u32,
    /// The most task polls held at once; past it, polls are answered at once
    /// and agents fall back to check-in delivery of admin actions.
    pub max_task_pollers: usize,
    /// After a start, leases do not expire for this many seconds: agents
    /// could not heartbeat while the server was down.
    pub task_lease_grace_secs: u32,
    /// Seconds a server's lease on a singleton job (status sweeper, task
    /// sweeper, retention) lasts; it is renewed every third of it. When
    /// the holder dies another server takes the jobs over within
    /// `4/3 ×` this. Server clocks must agree to within a third of it.
    pub singleton_lease_secs: u32,
    /// The load balancers allowed to send a PROXY protocol header (v1 or
    /// v2), as addresses or CIDRs (a list in the file, comma-separated in
    /// the environment). Their header gives the real client address for
    /// external IPs, rate limits and logs. A connection from anyone else
    /// that sends a header is closed. Empty: no PROXY protocol.
    #[serde(deserialize_with = "text_list")]
    pub proxy_protocol_from: Vec<String>,
    /// Whether a connection from a `proxy_protocol_from` address must start
    /// with a PROXY header (it is closed without one). Off: such a
    /// connection may also come without one, and its own address is used.
    pub proxy_protocol_required: bool,
    /// TLS to PostgreSQL: `disable`, `prefer`, `require`, `verify-ca` or
    /// `verify-full`. Unset: the URL's `sslmode`, else `prefer`.
    #[serde(deserialize_with = "optional_text")]
    pub database_sslmode: Option<String>,
    /// A PEM file of the CA that signed PostgreSQL's certificate (for
    /// `verify-ca` and `verify-full`), trusted in addition to the system's
    /// roots. Unset: the URL's `sslrootcert`, else the system's roots only.
    #[serde(deserialize_with = "optional_path")]
    pub database_ca_file: Option<PathBuf>,
    /// The most connections to PostgreSQL this server opens. Every server
    /// on one database opens up to this many: keep their sum below
    /// PostgreSQL's `max_connections`. SQLite ignores it.
    pub database_pool_size: u32,
    /// The built-in CA's public base URL for revocation, `http://HOST[:PORT]`
    /// (no path): issued certificates name `…/pki/ca.crl` (CRL) and
    /// `…/pki/ocsp` (OCSP) under it. Plain HTTP on purpose (docs/pki.md).
    /// Unset: certificates carry no revocation pointers.
    #[serde(deserialize_with = "optional_text")]
    pub pki_public_url: Option<String>,
    /// An address for a plain-HTTP listener that serves only the CRL and
    /// the OCSP responder (`/pki/…`), e.g. `0.0.0.0:80`. Unset: they are
    /// served on the HTTPS listener only.
    #[serde(deserialize_with = "optional_text")]
    pub pki_http_listen: Option<String>,
    /// Where each value came from; not a config key.
    #[serde(skip)]
    pub sources: BTreeMap<String, ConfigSource>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from("./tether-data"),
            database_url: None,
            tls_cert: None,
            tls_key: None,
            defs_dir: None,
            extra_sans: Vec::new(),
            current_agent_version: None,
            inactive_grace_secs: 10,
            sweep_interval_ms: 1000,
            max_body_bytes: 64 * 1024,
            defs_grace_secs: DEFAULT_DEFS_GRACE_SECS,
            defs_max_publish_bytes: DEFAULT_DEFS_MAX_PUBLISH_BYTES,
            max_connections: 1024,
            idle_timeout_secs: 30,
            write_timeout_secs: 30,
            stream_min_bytes_per_sec: 1024,
            store_wait_secs: 10,
            enroll_failures_per_minute: 30,
            defs_streams_per_address: 256,
            bundle_uploads_concurrent: 4,
            bundle_uploads_per_agent_per_hour: 6,
            transitions_retention_days: 365,
            actions_retention_days: 90,
            audit_retention_days: 365,
            task_poll_max_wait_secs: DEFAULT_TASK_POLL_WAIT_SECS,
            max_task_pollers: DEFAULT_MAX_TASK_POLLERS,
            task_lease_grace_secs: DEFAULT_TASK_LEASE_GRACE_SECS,
            singleton_lease_secs: crate::singleton::DEFAULT_LEASE_SECS,
            proxy_protocol_from: Vec::new(),
            proxy_protocol_required: true,
            database_sslmode: None,
            database_ca_file: None,
            database_pool_size: tether_store_sql::DEFAULT_PG_POOL_SIZE,
            pki_public_url: None,
            pki_http_listen: None,
            sources: BTreeMap::new(),
        }
    }
}

/// 50 s: under the 60 s idle timeout most load balancers default to.
pub const DEFAULT_TASK_POLL_WAIT_SECS: u32 = 50;
pub const MAX_TASK_POLL_WAIT_SECS: u32 = 300;
/// Room for a fleet of 10,000 with headroom (see BENCHMARKS.md for the cost).
pub const DEFAULT_MAX_TASK_POLLERS: usize = 20_000;
pub const DEFAULT_TASK_LEASE_GRACE_SECS: u32 = 60;

/// The bounds enforced by [`ServerConfig::validate`].
pub const MIN_BODY_BYTES: usize = 1024;
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const MIN_SWEEP_INTERVAL_MS: u64 = 10;
pub const MAX_SWEEP_INTERVAL_MS: u64 = 3_600_000;
pub const MAX_GRACE_SECS: u32 = 86_400;
/// Twelve hours: a missed publish or two is not yet a problem.
pub const DEFAULT_DEFS_GRACE_SECS: u32 = 12 * 3600;
/// Thirty days: beyond that, "in policy" would mean nothing.
pub const MAX_DEFS_GRACE_SECS: u32 = 30 * 86_400;
/// One GiB: far above real signature sets, low enough to hold in memory.
pub const DEFAULT_DEFS_MAX_PUBLISH_BYTES: u64 = 1024 * 1024 * 1024;
pub const MIN_DEFS_PUBLISH_BYTES: u64 = 1024;
pub const MAX_DEFS_PUBLISH_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The provider names figment records, mapped back to [`ConfigSource`].
const DEFAULTS: &str = "built-in default";
const ENV: &str = "environment variable";
const FLAGS: &str = "command-line flag";

/// The values given on the command line; `None` leaves the layers below.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// A provider under a name of ours, so each value's source can be told.
struct Named<P> {
    name: String,
    inner: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// `TETHER_*` variables, read through a function rather than from the
/// process, so tests need not touch the environment. A value for a numeric
/// or boolean field is parsed as figment's own `Env` provider parses it;
/// any other value stays text, so a version like `1.0` is not read as a
/// number.
struct EnvVars(Dict);

impl EnvVars {
    fn new(defaults: &Dict, get: impl Fn(&str) -> Option<String>) -> EnvVars {
        let mut dict = Dict::new();
        for (field, default) in defaults {
            if let Some(raw) = get(&env_var(field)) {
                let value = match default {
                    Value::Num(..) | Value::Bool(..) => {
                        raw.parse::<Value>().unwrap_or_else(|never| match never {})
                    }
                    _ => Value::from(raw),
                };
                dict.insert(field.clone(), value);
            }
        }
        EnvVars(dict)
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV).interpolater(|_profile, keys| env_var(&keys.join("_")))
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// The environment variable that sets a field.
pub fn env_var(field: &str) -> String {
    format!("TETHER_{}", field.to_ascii_uppercase())
}

impl ServerConfig {
    /// Every field's name, in the order `tether config show` prints them.
    pub fn fields() -> Vec<String> {
        Self::as_dict(&ServerConfig::default())
            .keys()
            .cloned()
            .collect()
    }

    fn as_dict(config: &ServerConfig) -> Dict {
        Serialized::defaults(config)
            .data()
            .ok()
            .and_then(|mut m| m.remove(&Profile::Default))
            .unwrap_or_default()
    }

    /// Layers the defaults, the TOML `file`, the `TETHER_*` variables `env`
    /// returns, then `flags`, and checks the result.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Flags,
    ) -> Result<ServerConfig, ConfigError> {
        let defaults = Self::as_dict(&ServerConfig::default());
        let mut figment = Figment::from(Named {
            name: DEFAULTS.to_owned(),
            inner: Serialized::defaults(ServerConfig::default()),
        });
        if let Some(path) = file {
            // Read first, so a missing file is its own clear error rather
            // than figment's silent "no such file, no values".
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
            figment = figment.merge(Named {
                name: format!("TOML file {}", path.display()),
                inner: Toml::string(&text),
            });
        }
        let env_vars = EnvVars::new(&defaults, &env);
        figment = figment.merge(env_vars).merge(Named {
            name: FLAGS.to_owned(),
            inner: Serialized::defaults(flags),
        });
        let mut config: ServerConfig = figment.extract().map_err(|e| layer_error(e, &env, file))?;
        for field in defaults.into_keys() {
            let source = match figment.find_metadata(&field).map(|m| m.name.as_ref()) {
                Some(ENV) => ConfigSource::Env,
                Some(FLAGS) => ConfigSource::Flag,
                Some(DEFAULTS) | None => ConfigSource::Default,
                Some(_) => ConfigSource::File,
            };
            config.sources.insert(field, source);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, expected: String| ConfigError::Invalid {
            key: key.to_owned(),
            value,
            expected,
        };
        let within = |key: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(invalid(key, value.to_string(), format!("{min}..={max}")))
            }
        };
        within(
            "max_body_bytes",
            self.max_body_bytes as u64,
            MIN_BODY_BYTES as u64,
            MAX_BODY_BYTES as u64,
        )?;
        within(
            "sweep_interval_ms",
            self.sweep_interval_ms,
            MIN_SWEEP_INTERVAL_MS,
            MAX_SWEEP_INTERVAL_MS,
        )?;
        within(
            "inactive_grace_secs",
            self.inactive_grace_secs.into(),
            0,
            MAX_GRACE_SECS.into(),
        )?;
        within(
            "defs_grace_secs",
            self.defs_grace_secs.into(),
            0,
            MAX_DEFS_GRACE_SECS.into(),
        )?;
        within(
            "defs_max_publish_bytes",
            self.defs_max_publish_bytes,
            MIN_DEFS_PUBLISH_BYTES,
            MAX_DEFS_PUBLISH_BYTES,
        )?;
        within("max_connections", self.max_connections.into(), 1, 1_000_000)?;
        within("idle_timeout_secs", self.idle_timeout_secs.into(), 1, 3600)?;
        within(
            "write_timeout_secs",
            self.write_timeout_secs.into(),
            1,
            3600,
        )?;
        within(
            "stream_min_bytes_per_sec",
            self.stream_min_bytes_per_sec.into(),
            1,
            u32::MAX.into(),
        )?;
        within("store_wait_secs", self.store_wait_secs.into(), 1, 600)?;
        within(
            "singleton_lease_secs",
            self.singleton_lease_secs.into(),
            3,
            300,
        )?;
        within(
            "database_pool_size",
            self.database_pool_size.into(),
            tether_store_sql::MIN_PG_POOL_SIZE.into(),
            1000,
        )?;
        if let Some(url) = &self.pki_public_url
            && let Err(problem) = tether_pki::revoke::PkiUrls::new(url)
        {
            return Err(invalid("pki_public_url", url.clone(), problem));
        }
        if let Some(addr) = &self.pki_http_listen
            && addr.parse::<SocketAddr>().is_err()
        {
            return Err(invalid(
                "pki_http_listen",
                addr.clone(),
                "an address and port such as 0.0.0.0:80".to_owned(),
            ));
        }
        for cidr in &self.proxy_protocol_from {
            if let Err(problem) = crate::proxy_protocol::Cidr::parse(cidr) {
                return Err(invalid(
                    "proxy_protocol_from",
                    cidr.clone(),
                    format!("an IP address or a CIDR such as 10.0.0.0/8 ({problem})"),
                ));
            }
        }
        if let Some(mode) = &self.database_sslmode
            && tether_store_sql::SslMode::parse(mode).is_none()
        {
            return Err(invalid(
                "database_sslmode",
                mode.clone(),
                tether_store_sql::SslMode::ACCEPTED.to_owned(),
            ));
        }
        within(
            "enroll_failures_per_minute",
            self.enroll_failures_per_minute.into(),
            0,
            1_000_000,
        )?;
        within(
            "defs_streams_per_address",
            self.defs_streams_per_address.into(),
            1,
            1_000_000,
        )?;
        within(
            "bundle_uploads_concurrent",
            self.bundle_uploads_concurrent.into(),
            1,
            1024,
        )?;
        within(
            "bundle_uploads_per_agent_per_hour",
            self.bundle_uploads_per_agent_per_hour.into(),
            1,
            3600,
        )?;
        within(
            "transitions_retention_days",
            self.transitions_retention_days.into(),
            0,
            36_500,
        )?;
        within(
            "actions_retention_days",
            self.actions_retention_days.into(),
            0,
            36_500,
        )?;
        within(
            "audit_retention_days",
            self.audit_retention_days.into(),
            0,
            36_500,
        )?;
        within(
            "task_poll_max_wait_secs",
            self.task_poll_max_wait_secs.into(),
            1,
            MAX_TASK_POLL_WAIT_SECS.into(),
        )?;
        within(
            "max_task_pollers",
            self.max_task_pollers as u64,
            0,
            1_000_000,
        )?;
        within(
            "task_lease_grace_secs",
            self.task_lease_grace_secs.into(),
            0,
            MAX_GRACE_SECS.into(),
        )?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert/tls_key",
                format!("cert={:?} key={:?}", self.tls_cert, self.tls_key),
                "both set or both unset".to_owned(),
            ));
        }
        Ok(())
    }

    /// The effective configuration, one `(field, value, source)` per field,
    /// for `tether config show`. Database passwords are hidden.
    pub fn describe(&self) -> Vec<(String, String, ConfigSource)> {
        Self::as_dict(self)
            .into_iter()
            .map(|(field, value)| {
                let shown = match field.as_str() {
                    "database_url" => match &self.database_url {
                        Some(url) => redact_url(url),
                        None => {
                            format!("(sqlite at {})", self.data_dir.join("tether.db").display())
                        }
                    },
                    "defs_dir" => self.effective_defs_dir().display().to_string(),
                    "current_agent_version" => self
                        .current_agent_version
                        .clone()
                        .unwrap_or_else(|| format!("(this build: {})", tether_wire::VERSION)),
                    _ => show(&value),
                };
                let source = self.source(&field);
                (field, shown, source)
            })
            .collect()
    }

    /// Where a field's value came from.
    pub fn source(&self, field: &str) -> ConfigSource {
        self.sources
            .get(field)
            .copied()
            .unwrap_or(ConfigSource::Default)
    }

    /// The definitions repository's directory (`defs_dir`, else
    /// `data_dir/defs`).
    pub fn effective_defs_dir(&self) -> PathBuf {
        self.defs_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("defs"))
    }

    /// The agent version the server considers current.
    pub fn effective_agent_version(&self) -> String {
        self.current_agent_version
            .clone()
            .unwrap_or_else(|| tether_wire::VERSION.to_owned())
    }

    /// How many task polls this server holds at once. Each held poll is an
    /// open connection, so polls may take at most three quarters of
    /// `max_connections`: the last quarter stays for check-ins, enrollments
    /// and admin calls, which held polls must never starve.
    pub fn effective_task_pollers(&self) -> usize {
        let cap =
            usize::try_from(self.max_connections - self.max_connections / 4).unwrap_or(usize::MAX);
        self.max_task_pollers.min(cap)
    }
}

/// A figment value as `config show` prints it.
fn show(value: &Value) -> String {
    match value {
        Value::String(_, s) => s.clone(),
        Value::Array(_, items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        Value::Empty(..) => "-".to_owned(),
        other => other
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| other.to_bool().map(|b| b.to_string()))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

/// The first problem figment found, with the key in the form the user wrote
/// it (the environment variable for an env value) and, for an env value,
/// what was given.
fn layer_error(
    error: figment::Error,
    env: &impl Fn(&str) -> Option<String>,
    file: Option<&Path>,
) -> ConfigError {
    let field = error.path.join(".");
    let source_name = error
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| match file {
            Some(p) => format!("TOML file {}", p.display()),
            None => "configuration".to_owned(),
        });
    let from_env = source_name == ENV;
    let key = if from_env {
        env_var(&field)
    } else if field.is_empty() {
        "(top level)".to_owned()
    } else {
        field
    };
    let value = if from_env { env(&key) } else { None };
    ConfigError::Layer {
        key,
        value,
        source_name,
        problem: error.kind.to_string(),
    }
}

/// An optional text value: empty means unset, and a number or a boolean
/// (as an environment variable like `1.0` parses) is taken as its text.
fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    let value: Option<Text> = Option::deserialize(d)?;
    Ok(match value {
        None => None,
        Some(Text::S(s)) => Some(s),
        Some(Text::U(n)) => Some(n.to_string()),
        Some(Text::I(n)) => Some(n.to_string()),
        Some(Text::F(n)) => Some(n.to_string()),
        Some(Text::B(b)) => Some(b.to_string()),
    }
    .filter(|s| !s.is_empty()))
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional_text(d)?.map(PathBuf::from))
}

/// A list of strings, or one string of comma-separated items.
fn text_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let items = match List::deserialize(d)? {
        List::One(s) => s.split(',').map(str::to_owned).collect(),
        List::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Hides the passwords in a database URL (`postgres://user:secret@host` →
/// `postgres://user:***@host`, and `password=` or `sslpassword=` parameters
/// alike), so printed config and logs never show them.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password")
                        || key.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}://{}:***{}",
        &url[..scheme_end],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).expect("writes");
        (dir, path)
    }

    fn get<'a>(d: &'a [(String, String, ConfigSource)], f: &str) -> (&'a str, ConfigSource) {
        d.iter()
            .find(|e| e.0 == f)
            .map(|e| (e.1.as_str(), e.2))
            .expect("field listed")
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = ServerConfig::load(None, no_env, &Flags::default()).expect("loads");
        assert_eq!(
            c,
            ServerConfig {
                sources: c.sources.clone(),
                ..ServerConfig::default()
            }
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.inactive_grace_secs, 10);
        assert_eq!(c.sweep_interval_ms, 1000);
        assert_eq!(c.max_body_bytes, 65536);
        let d = c.describe();
        assert!(
            d.iter()
                .all(|(_, _, source)| *source == ConfigSource::Default)
        );
        assert_eq!(d.len(), ServerConfig::fields().len());
        assert!(d.iter().any(|(f, _, _)| f == "enroll_failures_per_minute"));
    }

    #[test]
    fn file_then_env_then_flag_each_win_and_are_reported() {
        let (_dir, path) = file(
            "listen = \"0.0.0.0:9000\"\ninactive_grace_secs = 20\nmax_connections = 50\nextra_sans = [\"a.example\"]\n",
        );
        let env = |k: &str| match k {
            "TETHER_INACTIVE_GRACE_SECS" => Some("30".to_owned()),
            "TETHER_EXTRA_SANS" => Some("tether.example, 10.0.0.5".to_owned()),
            // A number by figment's rules, but this field is text.
            "TETHER_CURRENT_AGENT_VERSION" => Some("1.0".to_owned()),
            // Not a config field: ignored, never refused.
            "TETHER_LOG" => Some("debug".to_owned()),
            _ => None,
        };
        let flags = Flags {
            data_dir: Some(PathBuf::from("/srv/tether")),
            ..Flags::default()
        };
        let c = ServerConfig::load(Some(&path), env, &flags).expect("loads");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.current_agent_version.as_deref(), Some("1.0"));
        let d = c.describe();
        assert_eq!(get(&d, "listen"), ("0.0.0.0:9000", ConfigSource::File));
        assert_eq!(get(&d, "max_connections"), ("50", ConfigSource::File));
        assert_eq!(get(&d, "inactive_grace_secs"), ("30", ConfigSource::Env));
        assert_eq!(
            get(&d, "extra_sans"),
            ("tether.example,10.0.0.5", ConfigSource::Env)
        );
        assert_eq!(get(&d, "data_dir"), ("/srv/tether", ConfigSource::Flag));
        assert_eq!(get(&d, "max_body_bytes").1, ConfigSource::Default);
        assert_eq!(env_var("listen"), "TETHER_LISTEN");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_what_was_expected() {
        let (_dir, path) = file("listn = \"x\"\n");
        let e =
            ServerConfig::load(Some(&path), no_env, &Flags::default()).expect_err("unknown field");
        assert!(e.to_string().contains("listn"), "{e}");
        assert!(e.to_string().contains("t.toml"), "{e}");
        let (_dir, path) = file("sources = 1\n");
        let e = ServerConfig::load(Some(&path), no_env, &Flags::default()).expect_err("not a key");
        assert!(e.to_string().contains("sources"), "{e}");
        let e = ServerConfig::load(
            None,
            |k| (k == "TETHER_LISTEN").then(|| "nowhere".to_owned()),
            &Flags::default(),
        )
        .expect_err("bad addr");
        assert!(e.to_string().contains("TETHER_LISTEN=\"nowhere\""), "{e}");
        let e = ServerConfig::load(
            None,
            |k| (k == "TETHER_MAX_BODY_BYTES").then(|| "10".to_owned()),
            &Flags::default(),
        )
        .expect_err("too small");
        assert!(e.to_string().contains("1024..="), "{e}");
        let e = ServerConfig::load(
            None,
            no_env,
            &Flags {
                tls_cert: Some("/x.pem".into()),
                ..Flags::default()
            },
        )
        .expect_err("cert without key");
        assert!(e.to_string().contains("both set"), "{e}");
        let e = ServerConfig::load(
            None,
            |k| (k == "TETHER_DEFS_GRACE_SECS").then(|| "-1".to_owned()),
            &Flags::default(),
        )
        .expect_err("negative");
        assert!(e.to_string().contains("TETHER_DEFS_GRACE_SECS"), "{e}");
        let missing = Path::new("/nonexistent/tether.toml");
        assert!(matches!(
            ServerConfig::load(Some(missing), no_env, &Flags::default()),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn defs_and_limit_settings_are_layered_and_bounded() {
        let (_dir, path) = file("defs_grace_secs = 3600\ndefs_max_publish_bytes = 4096\n");
        let c = ServerConfig::load(
            Some(&path),
            |k| (k == "TETHER_DEFS_STREAMS_PER_ADDRESS").then(|| "8".to_owned()),
            &Flags::default(),
        )
        .expect("loads");
        assert_eq!(c.source("defs_grace_secs"), ConfigSource::File);
        assert_eq!(
            (
                c.defs_streams_per_address,
                c.source("defs_streams_per_address")
            ),
            (8, ConfigSource::Env)
        );
        for (var, value) in [
            ("TETHER_DEFS_GRACE_SECS", "99999999"),
            ("TETHER_DEFS_MAX_PUBLISH_BYTES", "10"),
            ("TETHER_MAX_CONNECTIONS", "0"),
            ("TETHER_STORE_WAIT_SECS", "0"),
            ("TETHER_BUNDLE_UPLOADS_CONCURRENT", "0"),
        ] {
            let field = var.trim_start_matches("TETHER_").to_ascii_lowercase();
            let e = ServerConfig::load(
                None,
                |k| (k == var).then(|| value.to_owned()),
                &Flags::default(),
            )
            .expect_err("out of bounds");
            assert!(e.to_string().contains(&field), "{var}: {e}");
        }
    }

    #[test]
    fn docs_server_config_md_names_every_field_and_variable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/server-config.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        for field in ServerConfig::fields() {
            let row = format!("| `{field}` | `{}` |", env_var(&field));
            assert!(
                doc.contains(&row),
                "docs/server-config.md has no row for {field}: add `{row} default | meaning |`"
            );
        }
    }

    #[test]
    fn scale_out_settings_are_layered_and_bounded() {
        let (_dir, path) = file(
            "proxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\ndatabase_sslmode = \"verify-full\"\n",
        );
        let c = ServerConfig::load(
            Some(&path),
            |k| match k {
                "TETHER_PROXY_PROTOCOL_REQUIRED" => Some("false".to_owned()),
                "TETHER_DATABASE_POOL_SIZE" => Some("16".to_owned()),
                "TETHER_SINGLETON_LEASE_SECS" => Some("30".to_owned()),
                _ => None,
            },
            &Flags::default(),
        )
        .expect("loads");
        assert_eq!(c.proxy_protocol_from, ["10.0.0.0/8", "192.0.2.7"]);
        assert!(!c.proxy_protocol_required);
        assert_eq!(c.database_sslmode.as_deref(), Some("verify-full"));
        assert_eq!((c.database_pool_size, c.singleton_lease_secs), (16, 30));
        assert_eq!(c.source("proxy_protocol_required"), ConfigSource::Env);
        let policy = crate::proxy_protocol::Policy::from_config(&c);
        assert_eq!(policy.trusted.len(), 2);
        for (var, value, field) in [
            (
                "TETHER_PROXY_PROTOCOL_FROM",
                "10.0.0.0/33",
                "proxy_protocol_from",
            ),
            (
                "TETHER_PROXY_PROTOCOL_FROM",
                "balancer.example",
                "proxy_protocol_from",
            ),
            (
                "TETHER_DATABASE_SSLMODE",
                "allow-anything",
                "database_sslmode",
            ),
            ("TETHER_DATABASE_POOL_SIZE", "1", "database_pool_size"),
            ("TETHER_SINGLETON_LEASE_SECS", "1", "singleton_lease_secs"),
            (
                "TETHER_SINGLETON_LEASE_SECS",
                "100000",
                "singleton_lease_secs",
            ),
            (
                "TETHER_PROXY_PROTOCOL_REQUIRED",
                "maybe",
                "PROXY_PROTOCOL_REQUIRED",
            ),
        ] {
            let e = ServerConfig::load(
                None,
                |k| (k == var).then(|| value.to_owned()),
                &Flags::default(),
            )
            .expect_err("refused");
            assert!(e.to_string().contains(field), "{var}={value}: {e}");
            assert_eq!(e.code(), tether_wire::ErrorCode::ConfigInvalid);
        }
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://tether:s3cret@db:5432/t"),
            "postgres://tether:***@db:5432/t"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/t.db"),
            "sqlite:///var/lib/t.db"
        );
        assert_eq!(
            redact_url("postgres://db/t?user=u&password=s3cret&sslmode=verify-full"),
            "postgres://db/t?user=u&password=***&sslmode=verify-full"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@db/t?sslpassword=k3y"),
            "postgresql://u:***@db/t?sslpassword=***"
        );
        let c = ServerConfig::load(
            None,
            |k| (k == "TETHER_DATABASE_URL").then(|| "postgres://u:pw@h/d".to_owned()),
            &Flags::default(),
        )
        .expect("loads");
        assert!(
            c.describe()
                .iter()
                .all(|(_, value, _)| !value.contains("pw@"))
        );
        assert_eq!(c.source("database_url"), ConfigSource::Env);
    }

    #[test]
    fn held_polls_leave_a_quarter_of_the_connections_to_check_ins() {
        let mut c = ServerConfig {
            max_connections: 1024,
            max_task_pollers: 20_000,
            ..Default::default()
        };
        assert_eq!(c.effective_task_pollers(), 768);
        c.max_task_pollers = 100;
        assert_eq!(c.effective_task_pollers(), 100, "a lower setting stands");
        c.max_connections = 1;
        c.max_task_pollers = 20_000;
        assert_eq!(c.effective_task_pollers(), 1);
    }
}
