//! The agent's configuration, `STATE_DIR/agent.toml`.
//!
//! Values are layered: the file first, then `TETHER_*` environment variables
//! (read through an injected lookup so tests never touch the process
//! environment), then CLI flags. [`Effective::report`] says where each value
//! came from, for `tether agent posture` and support tickets.
//!
//! figment does the layering and remembers which layer gave each value
//! ([`resolve`]). Each layer is a typed [`ConfigLayer`] before it gets
//! there: the file is parsed by `toml` itself, so an error names its line
//! and column, and each variable is parsed by [`env_layer`], so an error
//! names the variable. What remains here is the validation of the merged
//! values, with the source of the value that failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_wire::{AgentKind, ErrorCode};
use url::Url;

/// The file name of the agent's configuration inside the state directory.
pub const CONFIG_FILE: &str = "agent.toml";

/// The default size at which a log file is rotated: 10 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The default number of rotated files kept per log.
pub const DEFAULT_LOG_KEEP: usize = 5;

/// The smallest accepted rotation size; below this the logs would rotate on
/// almost every line.
pub const MIN_LOG_MAX_BYTES: u64 = 4096;

/// The most rotated files kept per log.
pub const MAX_LOG_KEEP: usize = 100;

/// A lookup of environment variables. Production passes `std::env::var`;
/// tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The resolved agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The control plane's base URL (`https://…`).
    pub server: Url,
    /// This agent's display name; defaults to the hostname.
    pub name: String,
    /// The kind of agent asked for at enrollment; `None` takes the token's kind.
    pub kind: Option<AgentKind>,
    /// The pinned server CA fingerprint (`sha256:HEX`), if any.
    pub ca_fingerprint: Option<String>,
    /// An operator-supplied CA bundle (PEM) that signs the server certificate.
    pub ca_file: Option<PathBuf>,
    /// An extra CA bundle (PEM), for TLS-inspecting middleboxes.
    pub extra_ca_file: Option<PathBuf>,
    /// Whether the operating system's root store is trusted too.
    pub system_roots: bool,
    /// An explicit HTTP proxy URL; may carry `user:pass@`.
    pub proxy: Option<String>,
    /// Whether `HTTPS_PROXY`/`NO_PROXY` from the environment are used when
    /// no explicit proxy is set.
    pub proxy_from_env: bool,
    /// Hosts that bypass the explicit proxy.
    pub no_proxy: Vec<String>,
    /// Where logs are written; defaults to `STATE_DIR/logs`.
    pub log_dir: Option<PathBuf>,
    /// The size at which a log file is rotated.
    pub log_max_bytes: u64,
    /// How many rotated files are kept per log.
    pub log_keep: usize,
}

/// One layer of configuration: the file, the environment or the flags.
/// `agent.toml` is parsed into this type, so unknown keys are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// The control plane's base URL, e.g. `https://tether.example.com:8443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Url>,
    /// This agent's display name; defaults to the hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The kind of agent asked for at enrollment: discovery, provisioning or
    /// connector. Absent takes the token's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AgentKind>,
    /// The pinned SHA-256 fingerprint of the server's CA, `sha256:HEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// A PEM file holding the operator CA that signs the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM file with an extra CA to trust, for TLS-inspecting proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_ca_file: Option<PathBuf>,
    /// Trust the operating system's root store as well (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_roots: Option<bool>,
    /// An explicit HTTP proxy URL, `http://[user:pass@]host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Use `HTTPS_PROXY`/`NO_PROXY` from the environment when no explicit
    /// proxy is set (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_from_env: Option<bool>,
    /// Hosts (or `.domain` suffixes) that bypass the explicit proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<Vec<String>>,
    /// The log directory; defaults to `STATE_DIR/logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// The size in bytes at which a log file is rotated (default 10 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    /// How many rotated files are kept per log (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<usize>,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "from", rename_all = "snake_case")]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag --{v}"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path} does not exist: this agent is not enrolled")]
    NotEnrolled { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: {message}. Fix: correct or remove that line (`tether agent enroll` rewrites the file)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid {field} from {origin}: got {observed:?}, expected {expected}")]
    Invalid {
        field: &'static str,
        origin: Source,
        observed: String,
        expected: String,
    },
    #[error("no value for {field}: set it in {path}, with {env} or with --{field}")]
    Missing {
        field: &'static str,
        path: PathBuf,
        env: String,
    },
}

impl ConfigError {
    /// The stable error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConfigError::NotEnrolled { .. } => ErrorCode::NotEnrolled,
            _ => ErrorCode::ConfigInvalid,
        }
    }
}

/// The resolved configuration and the source of each value set by a layer
/// (a field absent here has its default).
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: AgentConfig,
    pub sources: BTreeMap<String, Source>,
}

/// One row of the effective-configuration report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveValue {
    pub field: &'static str,
    /// The value as text; proxy credentials are redacted.
    pub value: String,
    pub source: Source,
}

impl Effective {
    /// Every field with its value and source, in a stable order. Secrets in
    /// the proxy URL are redacted.
    pub fn report(&self) -> Vec<EffectiveValue> {
        let c = &self.config;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        let path = |v: &Option<PathBuf>| {
            v.as_ref()
                .map_or_else(|| "(none)".to_owned(), |p| p.display().to_string())
        };
        let rows: Vec<(&'static str, String)> = vec![
            ("server", c.server.to_string()),
            ("name", c.name.clone()),
            (
                "kind",
                c.kind
                    .map_or_else(|| "(token's kind)".to_owned(), |k| k.to_string()),
            ),
            ("ca_fingerprint", opt(&c.ca_fingerprint)),
            ("ca_file", path(&c.ca_file)),
            ("extra_ca_file", path(&c.extra_ca_file)),
            ("system_roots", c.system_roots.to_string()),
            (
                "proxy",
                c.proxy
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), redact_url),
            ),
            ("proxy_from_env", c.proxy_from_env.to_string()),
            ("no_proxy", c.no_proxy.join(",")),
            ("log_dir", path(&c.log_dir)),
            ("log_max_bytes", c.log_max_bytes.to_string()),
            ("log_keep", c.log_keep.to_string()),
        ];
        rows.into_iter()
            .map(|(field, value)| EffectiveValue {
                field,
                value,
                source: self.sources.get(field).cloned().unwrap_or(Source::Default),
            })
            .collect()
    }
}

/// Replaces any `user:pass@` in a URL-like string with `***@`, without
/// trusting the string to be a valid URL.
pub fn redact_url(s: &str) -> String {
    let (scheme, rest) = match s.find("://") {
        Some(i) => (&s[..i + 3], &s[i + 3..]),
        None => ("", s),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => s.to_owned(),
    }
}

/// Reads `STATE_DIR/agent.toml` into a layer. A missing file is
/// [`ConfigError::NotEnrolled`].
pub fn read_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotEnrolled {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_file(path, &text)
}

/// Parses the text of a configuration file; errors name the line and column.
pub fn parse_file(path: &Path, text: &str) -> Result<ConfigLayer, ConfigError> {
    toml::from_str::<ConfigLayer>(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim_end_matches('.').to_owned(),
        }
    })
}

/// Renders a layer as the text of `agent.toml`.
pub fn render_file(layer: &ConfigLayer) -> String {
    let body =
        toml::to_string_pretty(layer).unwrap_or_else(|e| format!("# could not render: {e}\n"));
    format!(
        "# Tether agent configuration, written by `tether agent enroll`.\n# Keys: see `tether agent posture` for the effective values.\n{body}"
    )
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The environment variable that sets `field`.
pub fn env_var(field: &str) -> String {
    format!("TETHER_{}", field.to_ascii_uppercase())
}

/// Reads the `TETHER_*` variables into a layer. Bad values are errors that
/// name the variable.
pub fn env_layer(env: EnvLookup<'_>) -> Result<ConfigLayer, ConfigError> {
    let get = |field: &'static str| env(&env_var(field)).filter(|v| !v.is_empty());
    let invalid = |field: &'static str, observed: String, expected: &str| ConfigError::Invalid {
        field,
        origin: Source::Env(env_var(field)),
        observed,
        expected: expected.to_owned(),
    };
    let bool_of = |field: &'static str| -> Result<Option<bool>, ConfigError> {
        get(field)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(invalid(field, v, "true or false")),
            })
            .transpose()
    };
    let server = get("server")
        .map(|v| Url::parse(&v).map_err(|e| invalid("server", v, &format!("an https URL ({e})"))))
        .transpose()?;
    let kind = get("kind")
        .map(|v| v.parse::<AgentKind>().map_err(|e| invalid("kind", v, &e)))
        .transpose()?;
    let log_max_bytes = get("log_max_bytes")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| invalid("log_max_bytes", v, "a number of bytes"))
        })
        .transpose()?;
    let log_keep = get("log_keep")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| invalid("log_keep", v, "a count of files"))
        })
        .transpose()?;
    Ok(ConfigLayer {
        server,
        name: get("name"),
        kind,
        ca_fingerprint: get("ca_fingerprint"),
        ca_file: get("ca_file").map(PathBuf::from),
        extra_ca_file: get("extra_ca_file").map(PathBuf::from),
        system_roots: bool_of("system_roots")?,
        proxy: get("proxy"),
        proxy_from_env: bool_of("proxy_from_env")?,
        no_proxy: get("no_proxy").map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        log_dir: get("log_dir").map(PathBuf::from),
        log_max_bytes,
        log_keep,
    })
}

/// Loads `STATE_DIR/agent.toml`, then the environment, then `flags`.
pub fn load(
    state_dir: &Path,
    env: EnvLookup<'_>,
    flags: &ConfigLayer,
) -> Result<Effective, ConfigError> {
    let path = state_dir.join(CONFIG_FILE);
    let file = read_file(&path)?;
    resolve(
        &[
            (file, Some(path)),
            (env_layer(env)?, None),
            (flags.clone(), None),
        ],
        &|| crate::facts::hostname(),
    )
}

/// One layer as a figment provider, named by its index so figment's
/// metadata leads back to the layer that set a value.
struct Layer<'a> {
    index: usize,
    layer: &'a ConfigLayer,
}

impl figment::Provider for Layer<'_> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("layer {}", self.index))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        // Unset fields are not serialized, so they do not hide lower layers.
        figment::providers::Serialized::defaults(self.layer).data()
    }
}

/// Merges layers (lowest priority first) with figment and validates the
/// result. The path of a layer marks it as the file layer; of the others,
/// the first is the environment and the second the flags, and the source
/// names the variable or the flag.
pub fn resolve(
    layers: &[(ConfigLayer, Option<PathBuf>)],
    default_name: &dyn Fn() -> String,
) -> Result<Effective, ConfigError> {
    let file_path = layers
        .iter()
        .find_map(|(_, p)| p.clone())
        .unwrap_or_else(|| PathBuf::from(CONFIG_FILE));
    let figment = layers
        .iter()
        .enumerate()
        .fold(figment::Figment::new(), |f, (index, (layer, _))| {
            f.merge(Layer { index, layer })
        });
    // Every layer is a typed ConfigLayer already, so the merge of them is
    // one too; a failure here would be a bug in this file, reported as such.
    let merged: ConfigLayer = figment.extract().map_err(|e| ConfigError::Invalid {
        field: "configuration",
        origin: Source::Default,
        observed: e.to_string(),
        expected: "layers that merge".to_owned(),
    })?;
    let source_of = |i: usize, field: &str| -> Source {
        match &layers[i].1 {
            Some(p) => Source::File(p.clone()),
            None if layers[..i].iter().all(|(_, p)| p.is_some()) => Source::Env(env_var(field)),
            None => Source::Flag(field.replace('_', "-")),
        }
    };
    use figment::Provider as _;
    let set: Vec<String> = figment
        .data()
        .ok()
        .and_then(|mut d| d.remove(&figment::Profile::Default))
        .map(|d| d.into_keys().collect())
        .unwrap_or_default();
    let sources: BTreeMap<String, Source> = set
        .into_iter()
        .filter_map(|field| {
            let index = figment
                .find_metadata(&field)?
                .name
                .strip_prefix("layer ")?
                .parse::<usize>()
                .ok()?;
            let source = source_of(index, &field);
            Some((field, source))
        })
        .collect();
    let ConfigLayer {
        server,
        name,
        kind,
        ca_fingerprint,
        ca_file,
        extra_ca_file,
        system_roots,
        proxy,
        proxy_from_env,
        no_proxy,
        log_dir,
        log_max_bytes,
        log_keep,
    } = merged;
    let server = server.ok_or_else(|| ConfigError::Missing {
        field: "server",
        path: file_path.clone(),
        env: env_var("server"),
    })?;
    fn invalid_in(
        sources: &BTreeMap<String, Source>,
        field: &'static str,
        observed: String,
        expected: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            field,
            origin: sources.get(field).cloned().unwrap_or(Source::Default),
            observed,
            expected: expected.to_owned(),
        }
    }
    macro_rules! invalid {
        ($field:expr, $observed:expr, $expected:expr $(,)?) => {
            invalid_in(&sources, $field, $observed, $expected)
        };
    }
    if server.scheme() != "https" || server.host_str().is_none() {
        return Err(invalid!(
            "server",
            server.to_string(),
            "an https:// URL with a host"
        ));
    }
    let name = match name {
        Some(n) if n.trim().is_empty() || n.len() > 200 || n.chars().any(char::is_control) => {
            return Err(invalid!("name", n, "1 to 200 printable characters"));
        }
        Some(n) => n,
        None => default_name(),
    };
    if let Some(fp) = &ca_fingerprint
        && tether_transport::parse_fingerprint(fp).is_err()
    {
        return Err(invalid!(
            "ca_fingerprint",
            fp.clone(),
            "sha256: followed by 64 hex digits"
        ));
    }
    if let Some(p) = &proxy
        && let Err(e) = tether_transport::ProxyConfig::parse(p)
    {
        return Err(invalid!(
            "proxy",
            redact_url(p),
            &format!("an http://[user:pass@]host:port URL ({e})")
        ));
    }
    let log_max_bytes = log_max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES);
    if log_max_bytes < MIN_LOG_MAX_BYTES || usize::try_from(log_max_bytes).is_err() {
        return Err(invalid!(
            "log_max_bytes",
            log_max_bytes.to_string(),
            &format!("at least {MIN_LOG_MAX_BYTES} bytes"),
        ));
    }
    let log_keep = log_keep.unwrap_or(DEFAULT_LOG_KEEP);
    if !(1..=MAX_LOG_KEEP).contains(&log_keep) {
        return Err(invalid!(
            "log_keep",
            log_keep.to_string(),
            &format!("1 to {MAX_LOG_KEEP}")
        ));
    }
    Ok(Effective {
        config: AgentConfig {
            server,
            name,
            kind,
            ca_fingerprint,
            ca_file,
            extra_ca_file,
            system_roots: system_roots.unwrap_or(false),
            proxy,
            proxy_from_env: proxy_from_env.unwrap_or(true),
            no_proxy: no_proxy.unwrap_or_default(),
            log_dir,
            log_max_bytes,
            log_keep,
        },
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigLayer {
        parse_file(Path::new("/s/agent.toml"), text).expect("parses")
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn resolve3(
        f: ConfigLayer,
        e: ConfigLayer,
        flags: ConfigLayer,
    ) -> Result<Effective, ConfigError> {
        resolve(
            &[
                (f, Some(PathBuf::from("/s/agent.toml"))),
                (e, None),
                (flags, None),
            ],
            &|| "host-1".to_owned(),
        )
    }

    #[test]
    fn layers_apply_file_then_env_then_flags_and_report_sources() {
        let f = file("server = \"https://file.example\"\nname = \"from-file\"\nlog_keep = 3\n");
        let e = env_layer(&env_of(&[
            ("TETHER_NAME", "from-env"),
            ("TETHER_LOG_KEEP", "7"),
        ]))
        .expect("env ok");
        let flags = ConfigLayer {
            log_keep: Some(9),
            ..ConfigLayer::default()
        };
        let eff = resolve3(f, e, flags).expect("resolves");
        assert_eq!(eff.config.server.as_str(), "https://file.example/");
        assert_eq!(eff.config.name, "from-env");
        assert_eq!(eff.config.log_keep, 9);
        assert_eq!(eff.config.log_max_bytes, DEFAULT_LOG_MAX_BYTES);
        assert!(eff.config.proxy_from_env);
        let report = eff.report();
        let src = |f: &str| {
            report
                .iter()
                .find(|r| r.field == f)
                .map(|r| r.source.clone())
        };
        assert_eq!(
            src("server"),
            Some(Source::File(PathBuf::from("/s/agent.toml")))
        );
        assert_eq!(src("name"), Some(Source::Env("TETHER_NAME".into())));
        assert_eq!(src("log_keep"), Some(Source::Flag("log-keep".into())));
        assert_eq!(src("log_max_bytes"), Some(Source::Default));
    }

    #[test]
    fn name_defaults_to_hostname() {
        let eff = resolve3(
            file("server = \"https://s.example\"\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect("resolves");
        assert_eq!(eff.config.name, "host-1");
    }

    #[test]
    fn unknown_field_is_rejected_with_line_and_column() {
        let err = parse_file(
            Path::new("/s/agent.toml"),
            "server = \"https://s.example\"\n\nprxy = \"http://p:1\"\n",
        )
        .expect_err("unknown key");
        match &err {
            ConfigError::Parse {
                line,
                column,
                message,
                ..
            } => {
                assert_eq!((*line, *column), (3, 1));
                assert!(message.contains("prxy"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::ConfigInvalid);
        let text = err.to_string();
        assert!(text.contains("/s/agent.toml:3:1"), "{text}");
        assert!(text.contains("Fix:"), "{text}");
    }

    #[test]
    fn garbage_file_names_position() {
        let err = parse_file(
            Path::new("/s/agent.toml"),
            "server = \"https://s\"\nlog_keep = \"five\"\n",
        )
        .expect_err("wrong type");
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn missing_file_means_not_enrolled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(dir.path(), &|_| None, &ConfigLayer::default()).expect_err("no file");
        assert_eq!(err.code(), ErrorCode::NotEnrolled);
    }

    #[test]
    fn bad_values_are_rejected_naming_their_source() {
        let base = || file("server = \"https://s.example\"\n");
        let err = resolve3(
            file("server = \"http://s.example\"\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect_err("http");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "server",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = resolve3(
            base(),
            ConfigLayer::default(),
            ConfigLayer {
                log_keep: Some(0),
                ..Default::default()
            },
        )
        .expect_err("keep 0");
        assert!(err.to_string().contains("--log-keep"), "{err}");
        let err = resolve3(
            file("server = \"https://s\"\nlog_max_bytes = 10\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect_err("tiny");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "log_max_bytes",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = resolve3(
            file("server = \"https://s\"\nca_fingerprint = \"md5:00\"\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect_err("bad pin");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "ca_fingerprint",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = env_layer(&env_of(&[("TETHER_SYSTEM_ROOTS", "maybe")])).expect_err("bad bool");
        assert!(err.to_string().contains("TETHER_SYSTEM_ROOTS"), "{err}");
        let err = resolve3(
            ConfigLayer::default(),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect_err("no server");
        assert!(
            matches!(
                err,
                ConfigError::Missing {
                    field: "server",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn proxy_credentials_never_reach_errors_or_reports() {
        let err = resolve3(
            file("server = \"https://s\"\nproxy = \"ftp://alice:s3cret@p:1\"\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        );
        if let Err(e) = err {
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let eff = resolve3(
            file("server = \"https://s\"\nproxy = \"http://alice:s3cret@proxy.corp:3128\"\n"),
            ConfigLayer::default(),
            ConfigLayer::default(),
        )
        .expect("valid proxy");
        let report = serde_json::to_string(&eff.report()).expect("json");
        assert!(
            !report.contains("s3cret") && !report.contains("alice"),
            "{report}"
        );
        assert!(report.contains("***@proxy.corp:3128"), "{report}");
    }

    #[test]
    fn rendered_file_round_trips() {
        let layer = ConfigLayer {
            server: Some(Url::parse("https://s.example:8443").expect("url")),
            name: Some("n".into()),
            kind: Some(AgentKind::Connector),
            no_proxy: Some(vec![".corp".into()]),
            ..Default::default()
        };
        assert_eq!(file(&render_file(&layer)), layer);
    }

    #[test]
    fn redact_url_handles_odd_input() {
        assert_eq!(redact_url("http://u:p@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(redact_url("h:1"), "h:1");
        assert_eq!(redact_url("u@h"), "***@h");
    }
}
