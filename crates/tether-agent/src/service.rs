//! `tether agent install-service`: a systemd unit that runs the agent.
//!
//! Proxy variables of the installing shell are copied into the unit so the
//! service reaches the server the same way the operator's shell did. Unit
//! files are world-readable (0644) and `systemctl show` prints their
//! environment to any user, so a proxy URL that carries credentials is never
//! written there: such variables go to `STATE_DIR/service.env` (mode 0600),
//! which the unit loads with `EnvironmentFile=`.

use std::path::{Path, PathBuf};

use tether_wire::ErrorCode;

use crate::state::{StateError, write_atomic};

/// The unit's file name.
pub const UNIT_NAME: &str = "tether-agent.service";

/// The private environment file for proxy variables that carry credentials.
pub const SERVICE_ENV_FILE: &str = "service.env";

/// The proxy variables copied from the installing shell, in this order.
pub const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// What the unit is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// The agent executable.
    pub exe: PathBuf,
    /// Arguments before `--state-dir` (`run`, or `agent run` for `tether`).
    pub run_args: Vec<String>,
    pub state_dir: PathBuf,
    /// The service user; `None` runs as root.
    pub user: Option<String>,
    /// Proxy variables without credentials, written inline.
    pub environment: Vec<(String, String)>,
    /// The private environment file, if some variables carry credentials.
    pub environment_file: Option<PathBuf>,
}

/// Why the unit could not be rendered or installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error(
        "{what} contains a control character or quote systemd cannot carry safely: {observed:?}"
    )]
    Unquotable { what: String, observed: String },
    #[error(transparent)]
    Write(#[from] StateError),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Unquotable { .. } => ErrorCode::ConfigInvalid,
            ServiceError::Write(e) => e.code(),
        }
    }
}

/// Environment variables as (name, value) pairs.
pub type EnvPairs = Vec<(String, String)>;

/// Splits the proxy variables found through `env` into the ones that can be
/// written inline and the ones that carry credentials.
pub fn split_proxy_env(env: &dyn Fn(&str) -> Option<String>) -> (EnvPairs, EnvPairs) {
    let mut inline = Vec::new();
    let mut private = Vec::new();
    for var in PROXY_VARS {
        let Some(value) = env(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let has_credentials = !var.eq_ignore_ascii_case("no_proxy")
            && (tether_transport::ProxyConfig::parse(&value)
                .map(|p| p.username.is_some() || p.password.is_some())
                // An unparseable value may still hold a secret: keep it private.
                .unwrap_or(true));
        let target = if has_credentials {
            &mut private
        } else {
            &mut inline
        };
        target.push((var.to_owned(), value));
    }
    (inline, private)
}

/// Quotes one word for a systemd command line or `Environment=` value.
fn systemd_quote(what: &str, s: &str) -> Result<String, ServiceError> {
    if s.chars().any(char::is_control) {
        return Err(ServiceError::Unquotable {
            what: what.to_owned(),
            observed: s.to_owned(),
        });
    }
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    Ok(format!("\"{escaped}\""))
}

/// Renders the unit file.
pub fn render_unit(spec: &UnitSpec) -> Result<String, ServiceError> {
    let mut exec = vec![systemd_quote(
        "executable path",
        &spec.exe.to_string_lossy(),
    )?];
    for a in &spec.run_args {
        exec.push(systemd_quote("argument", a)?);
    }
    exec.push("\"--state-dir\"".to_owned());
    exec.push(systemd_quote(
        "state directory",
        &spec.state_dir.to_string_lossy(),
    )?);
    let mut out = String::new();
    out.push_str("# Written by `tether agent install-service`. Re-run it to update this file.\n");
    out.push_str("[Unit]\nDescription=Tether agent\n");
    out.push_str("Wants=network-online.target\nAfter=network-online.target\n\n");
    out.push_str("[Service]\nType=simple\n");
    out.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    out.push_str("Restart=on-failure\nRestartSec=5s\n");
    // The agent sends its shutdown notice within about 3 s of SIGTERM.
    out.push_str("KillSignal=SIGTERM\nTimeoutStopSec=10s\n");
    if let Some(user) = &spec.user {
        if user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(ServiceError::Unquotable {
                what: "user name".into(),
                observed: user.clone(),
            });
        }
        out.push_str(&format!("User={user}\n"));
    }
    for (k, v) in &spec.environment {
        out.push_str(&format!(
            "Environment={}\n",
            systemd_quote("environment value", &format!("{k}={v}"))?
        ));
    }
    if let Some(file) = &spec.environment_file {
        // The leading '-' lets the unit start if the file was removed.
        out.push_str(&format!("EnvironmentFile=-{}\n", file.display()));
    }
    out.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    Ok(out)
}

/// Renders the private environment file (`KEY='value'` lines).
pub fn render_env_file(vars: &[(String, String)]) -> Result<String, ServiceError> {
    let mut out =
        String::from("# Proxy settings with credentials for tether-agent.service (mode 0600).\n");
    for (k, v) in vars {
        if v.chars().any(|c| c.is_control() || c == '\'') {
            return Err(ServiceError::Unquotable {
                what: k.clone(),
                observed: "(value withheld)".into(),
            });
        }
        out.push_str(&format!("{k}='{v}'\n"));
    }
    Ok(out)
}

/// What [`install`] did, step by step, for the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub steps: Vec<String>,
}

/// Options of `install-service`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub unit_dir: PathBuf,
    pub state_dir: PathBuf,
    pub exe: PathBuf,
    pub user: Option<String>,
    pub enable: bool,
}

/// The arguments that start the agent with this executable: `tether-agent
/// run`, or `tether agent run` for the full command.
pub fn run_args_for(exe: &Path) -> Vec<String> {
    let name = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "tether" {
        vec!["agent".into(), "run".into()]
    } else {
        vec!["run".into()]
    }
}

/// Writes the unit (and the private environment file if needed), then runs
/// `systemctl daemon-reload` and `systemctl enable --now` when asked and
/// available.
pub fn install(
    opts: &InstallOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<InstallReport, ServiceError> {
    let mut report = InstallReport::default();
    let (inline, private) = split_proxy_env(env);
    let environment_file = if private.is_empty() {
        None
    } else {
        let path = opts.state_dir.join(SERVICE_ENV_FILE);
        write_atomic(&path, render_env_file(&private)?.as_bytes(), 0o600)?;
        let names: Vec<&str> = private.iter().map(|(k, _)| k.as_str()).collect();
        report.steps.push(format!(
            "wrote {} (mode 0600) with {} because they carry proxy credentials",
            path.display(),
            names.join(", ")
        ));
        Some(path)
    };
    let spec = UnitSpec {
        exe: opts.exe.clone(),
        run_args: run_args_for(&opts.exe),
        state_dir: opts.state_dir.clone(),
        user: opts.user.clone(),
        environment: inline,
        environment_file,
    };
    let unit = render_unit(&spec)?;
    let unit_path = opts.unit_dir.join(UNIT_NAME);
    if let Err(source) = std::fs::create_dir_all(&opts.unit_dir) {
        return Err(StateError::Io {
            op: "create",
            path: opts.unit_dir.clone(),
            source,
        }
        .into());
    }
    write_atomic(&unit_path, unit.as_bytes(), 0o644)?;
    report.steps.push(format!("wrote {}", unit_path.display()));
    tracing::info!(target: "tether::install", unit = %unit_path.display(), "service unit written");
    if !opts.enable {
        report.steps.push(format!(
            "did not enable it (--no-enable): run `systemctl daemon-reload && systemctl enable --now {UNIT_NAME}`"
        ));
        return Ok(report);
    }
    let Some(systemctl) = find_in_path("systemctl", env) else {
        report.steps.push(format!(
            "systemctl was not found in PATH, so nothing was enabled: start `{}` with your init system",
            spec.exe.display()
        ));
        tracing::warn!(target: "tether::install", "systemctl not found; service not enabled");
        return Ok(report);
    };
    for args in [vec!["daemon-reload"], vec!["enable", "--now", UNIT_NAME]] {
        let shown = format!("systemctl {}", args.join(" "));
        match std::process::Command::new(&systemctl).args(&args).status() {
            Ok(s) if s.success() => report.steps.push(format!("ran `{shown}`")),
            Ok(s) => {
                report.steps.push(format!(
                    "`{shown}` failed ({s}); fix the cause and run it again"
                ));
                tracing::error!(target: "tether::install", command = %shown, status = %s, "systemctl failed");
                break;
            }
            Err(e) => {
                report.steps.push(format!("could not run `{shown}`: {e}"));
                tracing::error!(target: "tether::install", command = %shown, error = %e, "systemctl failed");
                break;
            }
        }
    }
    Ok(report)
}

fn find_in_path(program: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let path = env("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            exe: PathBuf::from("/usr/local/bin/tether-agent"),
            run_args: vec!["run".into()],
            state_dir: PathBuf::from("/var/lib/tether-agent"),
            user: Some("tether".into()),
            environment: vec![("HTTPS_PROXY".into(), "http://proxy.corp:3128".into())],
            environment_file: Some(PathBuf::from("/var/lib/tether-agent/service.env")),
        }
    }

    #[test]
    fn unit_renders_exec_restart_user_and_environment() {
        let unit = render_unit(&spec()).expect("renders");
        let expected = "\
# Written by `tether agent install-service`. Re-run it to update this file.
[Unit]
Description=Tether agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=\"/usr/local/bin/tether-agent\" \"run\" \"--state-dir\" \"/var/lib/tether-agent\"
Restart=on-failure
RestartSec=5s
KillSignal=SIGTERM
TimeoutStopSec=10s
User=tether
Environment=\"HTTPS_PROXY=http://proxy.corp:3128\"
EnvironmentFile=-/var/lib/tether-agent/service.env

[Install]
WantedBy=multi-user.target
";
        assert_eq!(unit, expected);
    }

    #[test]
    fn unit_escapes_specifiers_and_quotes_and_refuses_newlines() {
        let mut s = spec();
        s.state_dir = PathBuf::from("/srv/50% \"odd\" $dir");
        s.user = None;
        s.environment.clear();
        s.environment_file = None;
        let unit = render_unit(&s).expect("renders");
        assert!(unit.contains(r#""/srv/50%% \"odd\" $$dir""#), "{unit}");
        assert!(!unit.contains("User="));
        s.state_dir = PathBuf::from("/srv/a\nExecStartPre=/bin/evil");
        assert!(render_unit(&s).is_err());
        let mut s = spec();
        s.user = Some("root\nExecStartPre=x".into());
        assert!(render_unit(&s).is_err());
    }

    #[test]
    fn proxy_credentials_go_to_the_private_file_only() {
        let env = |k: &str| match k {
            "HTTPS_PROXY" => Some("http://alice:s3cret@proxy.corp:3128".to_owned()),
            "NO_PROXY" => Some("localhost,.corp".to_owned()),
            "http_proxy" => Some("http://ignored:1".to_owned()),
            _ => None,
        };
        let (inline, private) = split_proxy_env(&env);
        assert_eq!(
            inline,
            vec![("NO_PROXY".to_owned(), "localhost,.corp".to_owned())]
        );
        assert_eq!(
            private,
            vec![(
                "HTTPS_PROXY".to_owned(),
                "http://alice:s3cret@proxy.corp:3128".to_owned()
            )]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InstallOptions {
            unit_dir: dir.path().join("units"),
            state_dir: dir.path().join("state"),
            exe: PathBuf::from("/opt/tether/bin/tether"),
            user: None,
            enable: false,
        };
        std::fs::create_dir_all(&opts.state_dir).expect("mkdir");
        let report = install(&opts, &env).expect("installs");
        let unit = std::fs::read_to_string(opts.unit_dir.join(UNIT_NAME)).expect("unit");
        assert!(
            !unit.contains("s3cret") && !unit.contains("alice"),
            "{unit}"
        );
        assert!(
            unit.contains("\"agent\" \"run\""),
            "the full binary runs `tether agent run`: {unit}"
        );
        assert!(
            unit.contains("Environment=\"NO_PROXY=localhost,.corp\""),
            "{unit}"
        );
        let env_file = opts.state_dir.join(SERVICE_ENV_FILE);
        assert!(
            unit.contains(&format!("EnvironmentFile=-{}", env_file.display())),
            "{unit}"
        );
        assert_eq!(
            std::fs::read_to_string(&env_file)
                .expect("env file")
                .lines()
                .last(),
            Some("HTTPS_PROXY='http://alice:s3cret@proxy.corp:3128'")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&env_file)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            report.steps.iter().any(|s| s.contains("--no-enable")),
            "{report:?}"
        );
        assert!(
            report.steps.iter().all(|s| !s.contains("s3cret")),
            "{report:?}"
        );
    }

    #[test]
    fn no_proxy_in_the_shell_means_no_environment_lines() {
        let (inline, private) = split_proxy_env(&|_| None);
        assert!(inline.is_empty() && private.is_empty());
    }
}
