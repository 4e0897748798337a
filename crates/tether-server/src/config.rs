//! The server's configuration: one typed struct, loadable from a TOML file,
//! then `TETHER_*` environment variables, then command-line flags (the binary
//! does the layering through [`ServerConfig::apply_env`] and
//! [`ServerConfig::set`]). Every value remembers where it came from so that
//! `tether config show` can print it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    #[error("config file {path} is not valid: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{key}={value:?} is not valid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("unknown config field {field:?} (expected one of: {expected})")]
    UnknownField { field: String, expected: String },
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
    /// the generated PKI under `pki/` and the bootstrap `admin.token`.
    pub data_dir: PathBuf,
    /// The store's URL: `sqlite:///abs/path.db`, `sqlite::memory:` or
    /// `postgres://…`. Unset means SQLite at `data_dir/tether.db`.
    pub database_url: Option<String>,
    /// An operator-provided certificate chain (PEM, leaf first). Unset means
    /// a generated local CA and server certificate under `data_dir/pki`.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) matching `tls_cert`; required with it.
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated server certificate.
    pub extra_sans: Vec<String>,
    /// The agent version the server considers current; older agents are
    /// flagged. Unset means this build's version.
    pub current_agent_version: Option<String>,
    /// Seconds added to twice an agent's interval (plus jitter) before it is
    /// declared Inactive.
    pub inactive_grace_secs: u32,
    /// How often the sweeper looks for overdue agents, in milliseconds.
    pub sweep_interval_ms: u64,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds an agent's definitions may lag beyond a channel's usual
    /// publish interval before the agent is out of policy.
    pub defs_grace_secs: u32,
    /// The largest definitions file a publish accepts, in bytes. It is held
    /// in memory while it is published, so keep it below the free RAM.
    pub defs_max_publish_bytes: u64,
    /// Where each value came from; not a config key.
    /// The longest a task poll is held, in seconds. Below common
    /// load-balancer idle timeouts (60 s), so a held poll is never cut.
    pub task_poll_max_wait_secs: u32,
    /// The most task polls held at once; past it, polls are answered at once
    /// and agents fall back to check-in delivery of admin actions.
    pub max_task_pollers: usize,
    /// After a start, leases do not expire for this many seconds: agents
    /// could not heartbeat while the server was down.
    pub task_lease_grace_secs: u32,
    #[serde(skip)]
    pub sources: BTreeMap<&'static str, ConfigSource>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from("./tether-data"),
            database_url: None,
            tls_cert: None,
            tls_key: None,
            extra_sans: Vec::new(),
            current_agent_version: None,
            inactive_grace_secs: 10,
            sweep_interval_ms: 1000,
            max_body_bytes: 64 * 1024,
            defs_grace_secs: DEFAULT_DEFS_GRACE_SECS,
            defs_max_publish_bytes: DEFAULT_DEFS_MAX_PUBLISH_BYTES,
            task_poll_max_wait_secs: DEFAULT_TASK_POLL_WAIT_SECS,
            max_task_pollers: DEFAULT_MAX_TASK_POLLERS,
            task_lease_grace_secs: DEFAULT_TASK_LEASE_GRACE_SECS,
            sources: BTreeMap::new(),
        }
    }
}

/// Every field with its environment variable, in display order.
const FIELDS: [(&str, &str); 15] = [
    ("listen", "TETHER_LISTEN"),
    ("data_dir", "TETHER_DATA_DIR"),
    ("database_url", "TETHER_DATABASE_URL"),
    ("tls_cert", "TETHER_TLS_CERT"),
    ("tls_key", "TETHER_TLS_KEY"),
    ("extra_sans", "TETHER_EXTRA_SANS"),
    ("current_agent_version", "TETHER_CURRENT_AGENT_VERSION"),
    ("inactive_grace_secs", "TETHER_INACTIVE_GRACE_SECS"),
    ("sweep_interval_ms", "TETHER_SWEEP_INTERVAL_MS"),
    ("max_body_bytes", "TETHER_MAX_BODY_BYTES"),
    ("defs_grace_secs", "TETHER_DEFS_GRACE_SECS"),
    ("defs_max_publish_bytes", "TETHER_DEFS_MAX_PUBLISH_BYTES"),
    ("task_poll_max_wait_secs", "TETHER_TASK_POLL_MAX_WAIT_SECS"),
    ("max_task_pollers", "TETHER_MAX_TASK_POLLERS"),
    ("task_lease_grace_secs", "TETHER_TASK_LEASE_GRACE_SECS"),
];

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

impl ServerConfig {
    /// Parses TOML text; every field present is marked as coming from the file.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        let mut config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        for (field, _) in FIELDS {
            if table.contains_key(field) {
                config.sources.insert(field, ConfigSource::File);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Applies `TETHER_*` variables read through `get` (so tests need not
    /// touch the process environment). Cross-field rules are checked by
    /// [`ServerConfig::validate`] once all layers are applied ([`crate::start`]
    /// calls it).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (field, env) in FIELDS {
            if let Some(value) = get(env) {
                self.set_from(field, &value, ConfigSource::Env, env)?;
            }
        }
        Ok(())
    }

    /// Sets one field from its string form (a command-line flag, typically).
    pub fn set(
        &mut self,
        field: &str,
        value: &str,
        source: ConfigSource,
    ) -> Result<(), ConfigError> {
        self.set_from(field, value, source, field)
    }

    fn set_from(
        &mut self,
        field: &str,
        value: &str,
        source: ConfigSource,
        key: &str,
    ) -> Result<(), ConfigError> {
        let invalid = |expected: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        };
        let optional = |v: &str| {
            if v.is_empty() {
                None
            } else {
                Some(v.to_owned())
            }
        };
        let name: &'static str = match field {
            "listen" => {
                self.listen = value
                    .parse()
                    .map_err(|_| invalid("an address such as 127.0.0.1:8443 or [::]:8443"))?;
                "listen"
            }
            "data_dir" => {
                if value.is_empty() {
                    return Err(invalid("a directory path"));
                }
                self.data_dir = PathBuf::from(value);
                "data_dir"
            }
            "database_url" => {
                self.database_url = optional(value);
                "database_url"
            }
            "tls_cert" => {
                self.tls_cert = optional(value).map(PathBuf::from);
                "tls_cert"
            }
            "tls_key" => {
                self.tls_key = optional(value).map(PathBuf::from);
                "tls_key"
            }
            "extra_sans" => {
                self.extra_sans = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                "extra_sans"
            }
            "current_agent_version" => {
                self.current_agent_version = optional(value);
                "current_agent_version"
            }
            "inactive_grace_secs" => {
                self.inactive_grace_secs = value
                    .parse()
                    .map_err(|_| invalid("a whole number of seconds"))?;
                "inactive_grace_secs"
            }
            "sweep_interval_ms" => {
                self.sweep_interval_ms = value
                    .parse()
                    .map_err(|_| invalid("a whole number of milliseconds"))?;
                "sweep_interval_ms"
            }
            "max_body_bytes" => {
                self.max_body_bytes = value
                    .parse()
                    .map_err(|_| invalid("a whole number of bytes"))?;
                "max_body_bytes"
            }
            "defs_grace_secs" => {
                self.defs_grace_secs = value
                    .parse()
                    .map_err(|_| invalid("a whole number of seconds"))?;
                "defs_grace_secs"
            }
            "defs_max_publish_bytes" => {
                self.defs_max_publish_bytes = value
                    .parse()
                    .map_err(|_| invalid("a whole number of bytes"))?;
                "defs_max_publish_bytes"
            }
            "task_poll_max_wait_secs" => {
                self.task_poll_max_wait_secs = value
                    .parse()
                    .map_err(|_| invalid("a whole number of seconds"))?;
                "task_poll_max_wait_secs"
            }
            "max_task_pollers" => {
                self.max_task_pollers = value
                    .parse()
                    .map_err(|_| invalid("a whole number of polls"))?;
                "max_task_pollers"
            }
            "task_lease_grace_secs" => {
                self.task_lease_grace_secs = value
                    .parse()
                    .map_err(|_| invalid("a whole number of seconds"))?;
                "task_lease_grace_secs"
            }
            other => {
                return Err(ConfigError::UnknownField {
                    field: other.to_owned(),
                    expected: FIELDS
                        .iter()
                        .map(|(f, _)| *f)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        self.sources.insert(name, source);
        Ok(())
    }

    /// Checks the bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, expected: String| ConfigError::Invalid {
            key: key.to_owned(),
            value,
            expected,
        };
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                self.max_body_bytes.to_string(),
                format!("{MIN_BODY_BYTES}..={MAX_BODY_BYTES}"),
            ));
        }
        if !(1..=MAX_TASK_POLL_WAIT_SECS).contains(&self.task_poll_max_wait_secs) {
            return Err(invalid(
                "task_poll_max_wait_secs",
                self.task_poll_max_wait_secs.to_string(),
                format!("1..={MAX_TASK_POLL_WAIT_SECS}"),
            ));
        }
        if self.task_lease_grace_secs > MAX_GRACE_SECS {
            return Err(invalid(
                "task_lease_grace_secs",
                self.task_lease_grace_secs.to_string(),
                format!("0..={MAX_GRACE_SECS}"),
            ));
        }
        if !(MIN_SWEEP_INTERVAL_MS..=MAX_SWEEP_INTERVAL_MS).contains(&self.sweep_interval_ms) {
            return Err(invalid(
                "sweep_interval_ms",
                self.sweep_interval_ms.to_string(),
                format!("{MIN_SWEEP_INTERVAL_MS}..={MAX_SWEEP_INTERVAL_MS}"),
            ));
        }
        if self.inactive_grace_secs > MAX_GRACE_SECS {
            return Err(invalid(
                "inactive_grace_secs",
                self.inactive_grace_secs.to_string(),
                format!("0..={MAX_GRACE_SECS}"),
            ));
        }
        if self.defs_grace_secs > MAX_DEFS_GRACE_SECS {
            return Err(invalid(
                "defs_grace_secs",
                self.defs_grace_secs.to_string(),
                format!("0..={MAX_DEFS_GRACE_SECS}"),
            ));
        }
        if !(MIN_DEFS_PUBLISH_BYTES..=MAX_DEFS_PUBLISH_BYTES).contains(&self.defs_max_publish_bytes)
        {
            return Err(invalid(
                "defs_max_publish_bytes",
                self.defs_max_publish_bytes.to_string(),
                format!("{MIN_DEFS_PUBLISH_BYTES}..={MAX_DEFS_PUBLISH_BYTES}"),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert/tls_key",
                format!("cert={:?} key={:?}", self.tls_cert, self.tls_key),
                "both set or both unset".to_owned(),
            ));
        }
        Ok(())
    }

    /// The effective configuration, one `(field, value, source)` per field
    /// in file order, for `tether config show`. Database passwords are hidden.
    pub fn describe(&self) -> Vec<(&'static str, String, ConfigSource)> {
        let show_path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
        };
        FIELDS
            .iter()
            .map(|&(field, _env)| {
                let value = match field {
                    "listen" => self.listen.to_string(),
                    "data_dir" => self.data_dir.display().to_string(),
                    "database_url" => match &self.database_url {
                        Some(url) => redact_url(url),
                        None => {
                            format!("(sqlite at {})", self.data_dir.join("tether.db").display())
                        }
                    },
                    "tls_cert" => show_path(&self.tls_cert),
                    "tls_key" => show_path(&self.tls_key),
                    "extra_sans" => self.extra_sans.join(","),
                    "current_agent_version" => self
                        .current_agent_version
                        .clone()
                        .unwrap_or_else(|| format!("(this build: {})", tether_wire::VERSION)),
                    "inactive_grace_secs" => self.inactive_grace_secs.to_string(),
                    "sweep_interval_ms" => self.sweep_interval_ms.to_string(),
                    "defs_grace_secs" => self.defs_grace_secs.to_string(),
                    "defs_max_publish_bytes" => self.defs_max_publish_bytes.to_string(),
                    _ => self.max_body_bytes.to_string(),
                };
                (field, value, self.source(field))
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

    /// The environment variable that sets a field.
    pub fn env_var(field: &str) -> Option<&'static str> {
        FIELDS.iter().find(|(f, _)| *f == field).map(|(_, e)| *e)
    }

    /// `--listen` on the command line.
    pub fn set_from_cli_listen(&mut self, listen: SocketAddr) {
        self.listen = listen;
        self.sources.insert("listen", ConfigSource::Flag);
    }

    /// `--data-dir` on the command line.
    pub fn set_from_cli_data_dir(&mut self, dir: PathBuf) {
        self.data_dir = dir;
        self.sources.insert("data_dir", ConfigSource::Flag);
    }

    /// `--database-url` on the command line.
    pub fn set_from_cli_database_url(&mut self, url: String) {
        self.database_url = Some(url);
        self.sources.insert("database_url", ConfigSource::Flag);
    }

    /// `--tls-cert` and `--tls-key` on the command line (they come together).
    pub fn set_from_cli_tls(&mut self, cert: PathBuf, key: PathBuf) {
        self.tls_cert = Some(cert);
        self.tls_key = Some(key);
        self.sources.insert("tls_cert", ConfigSource::Flag);
        self.sources.insert("tls_key", ConfigSource::Flag);
    }

    /// The agent version the server considers current.
    pub fn effective_agent_version(&self) -> String {
        self.current_agent_version
            .clone()
            .unwrap_or_else(|| tether_wire::VERSION.to_owned())
    }
}

/// Hides a password in a database URL (`postgres://user:secret@host` →
/// `postgres://user:***@host`), so printed config never leaks it.
pub fn redact_url(url: &str) -> String {
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

    #[test]
    fn defaults_match_the_documented_values() {
        let c = ServerConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.inactive_grace_secs, 10);
        assert_eq!(c.sweep_interval_ms, 1000);
        assert_eq!(c.max_body_bytes, 65536);
        assert!(
            c.describe()
                .iter()
                .all(|(_, _, source)| *source == ConfigSource::Default)
        );
    }

    #[test]
    fn file_then_env_then_flag_each_win_and_are_reported() {
        let mut c = ServerConfig::from_toml_str(
            "listen = \"0.0.0.0:9000\"\ninactive_grace_secs = 20\n",
            Path::new("t.toml"),
        )
        .expect("valid toml");
        assert_eq!(c.listen.port(), 9000);
        c.apply_env(|k| (k == "TETHER_INACTIVE_GRACE_SECS").then(|| "30".to_owned()))
            .expect("valid env");
        c.set("extra_sans", "tether.example, 10.0.0.5", ConfigSource::Flag)
            .expect("valid flag");
        c.set_from_cli_data_dir(PathBuf::from("/srv/tether"));
        let d = c.describe();
        let get = |f: &str| {
            d.iter()
                .find(|e| e.0 == f)
                .map(|e| (e.1.clone(), e.2))
                .expect("field listed")
        };
        assert_eq!(get("listen").1, ConfigSource::File);
        assert_eq!(
            get("inactive_grace_secs"),
            ("30".to_owned(), ConfigSource::Env)
        );
        assert_eq!(
            get("extra_sans"),
            ("tether.example,10.0.0.5".to_owned(), ConfigSource::Flag)
        );
        assert_eq!(
            get("data_dir"),
            ("/srv/tether".to_owned(), ConfigSource::Flag)
        );
        assert_eq!(get("max_body_bytes").1, ConfigSource::Default);
        assert_eq!(ServerConfig::env_var("listen"), Some("TETHER_LISTEN"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_what_was_expected() {
        let e = ServerConfig::from_toml_str("listn = \"x\"\n", Path::new("t.toml"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("listn"), "{e}");
        let e = ServerConfig::from_toml_str("sources = 1\n", Path::new("t.toml"))
            .expect_err("not a key");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let mut c = ServerConfig::default();
        let e = c
            .apply_env(|k| (k == "TETHER_LISTEN").then(|| "nowhere".to_owned()))
            .expect_err("bad addr");
        assert!(e.to_string().contains("TETHER_LISTEN=\"nowhere\""), "{e}");
        c.set("max_body_bytes", "10", ConfigSource::Flag)
            .expect("parses");
        let e = c.validate().expect_err("too small");
        assert!(e.to_string().contains("1024..="), "{e}");
        let mut c = ServerConfig::default();
        c.set("tls_cert", "/x.pem", ConfigSource::Flag)
            .expect("parses");
        let e = c.validate().expect_err("cert without key");
        assert!(e.to_string().contains("both set"), "{e}");
        assert!(c.set("colour", "blue", ConfigSource::Flag).is_err());
    }

    #[test]
    fn defs_settings_are_layered_and_bounded() {
        let c = ServerConfig::default();
        assert_eq!(c.defs_grace_secs, 43_200);
        assert_eq!(c.defs_max_publish_bytes, 1 << 30);
        let mut c = ServerConfig::from_toml_str(
            "defs_grace_secs = 3600\ndefs_max_publish_bytes = 4096\n",
            Path::new("t.toml"),
        )
        .expect("valid toml");
        assert_eq!(c.source("defs_grace_secs"), ConfigSource::File);
        c.apply_env(|k| (k == "TETHER_DEFS_GRACE_SECS").then(|| "7200".to_owned()))
            .expect("valid env");
        c.set("defs_max_publish_bytes", "8192", ConfigSource::Flag)
            .expect("valid flag");
        let d = c.describe();
        let get = |f: &str| {
            d.iter()
                .find(|e| e.0 == f)
                .map(|e| (e.1.clone(), e.2))
                .expect("field listed")
        };
        assert_eq!(
            get("defs_grace_secs"),
            ("7200".to_owned(), ConfigSource::Env)
        );
        assert_eq!(
            get("defs_max_publish_bytes"),
            ("8192".to_owned(), ConfigSource::Flag)
        );
        assert!(c.set("defs_grace_secs", "-1", ConfigSource::Flag).is_err());
        c.set("defs_grace_secs", "99999999", ConfigSource::Flag)
            .expect("parses");
        let e = c.validate().expect_err("too long a grace");
        assert!(e.to_string().contains("defs_grace_secs"), "{e}");
        let mut c = ServerConfig::default();
        c.set("defs_max_publish_bytes", "10", ConfigSource::Flag)
            .expect("parses");
        let e = c.validate().expect_err("too small");
        assert!(e.to_string().contains("defs_max_publish_bytes"), "{e}");
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
        let c = ServerConfig {
            database_url: Some("postgres://u:pw@h/d".into()),
            ..Default::default()
        };
        assert!(
            c.describe()
                .iter()
                .all(|(_, value, _)| !value.contains("pw@"))
        );
    }
}
