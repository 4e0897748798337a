//! `tether agent doctor` (also `tether doctor`): builds the doctor's input
//! from the agent's own config, state and trust, or from flags before
//! enrollment, runs it and maps the verdict to the exit code (0 healthy,
//! 1 warnings, 2 failure; 3 when the doctor itself cannot run).
//!
//! The proxy environment of the installed service is read from its unit
//! file (and the private `service.env` it loads), or from `systemctl show`
//! when there is no unit file to read, so the doctor can flag the classic
//! trap: the shell and the service take different paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_doctor::{DefsInput, DoctorInput, Report};
use tether_transport::{ProxyConfig, ProxySetting, TransportConfig, TrustConfig};
use tether_wire::{DoctorSummary, ErrorCode};
use time::OffsetDateTime;
use url::Url;

use crate::config::ConfigLayer;
use crate::error::Failure;
use crate::service::{PROXY_VARS, UNIT_NAME};
use crate::state::StateStore;
use crate::world::World;

/// The exit code when the doctor itself could not run.
pub const EXIT_CANNOT_RUN: u8 = 3;

/// What the doctor is asked to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub state_dir: PathBuf,
    /// The server to check; overrides the config of an enrolled host and is
    /// required before enrollment.
    pub server: Option<Url>,
    pub proxy: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub extra_ca_file: Option<PathBuf>,
    /// An enrollment token to check before enrollment. Never printed.
    pub token: Option<String>,
    /// `HOST:PORT` targets to probe.
    pub targets: Vec<(String, u16)>,
    pub deadline: Duration,
    /// How long a target's probe waits for its answer.
    pub target_timeout: Duration,
    /// Where the service unit was installed.
    pub unit_dir: PathBuf,
    /// NTP servers (`host` or `host:port`); empty uses the host's own
    /// (chrony, timesyncd) or pool.ntp.org.
    pub ntp_servers: Vec<String>,
    /// An unpacked offline install bundle (`tether offline-bundle`) to
    /// check; before enrollment its server, CA pin and token stand in for
    /// the flags not given.
    pub offline_bundle: Option<PathBuf>,
}

impl DoctorOptions {
    /// Options for an enrolled agent checking itself (the queued action).
    pub fn for_state_dir(state_dir: &Path) -> DoctorOptions {
        DoctorOptions {
            state_dir: state_dir.to_owned(),
            server: None,
            proxy: None,
            ca_fingerprint: None,
            ca_file: None,
            extra_ca_file: None,
            token: None,
            targets: Vec::new(),
            deadline: DoctorInput::DEFAULT_DEADLINE,
            target_timeout: DoctorInput::DEFAULT_TARGET_TIMEOUT,
            unit_dir: PathBuf::from("/etc/systemd/system"),
            ntp_servers: Vec::new(),
            offline_bundle: None,
        }
    }
}

/// Parses `HOST:PORT` (also `[v6]:PORT`).
pub fn parse_target(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: the port {port:?} is not a number from 1 to 65535"))?;
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    Ok((host.to_owned(), port))
}

/// The `--target` flags followed by the targets of the last policy the
/// agent received, without duplicates (hosts compare case-insensitively).
/// A policy target that does not parse is skipped: the server validates
/// them, and one bad entry must not stop the doctor.
pub fn merge_targets(flags: &[(String, u16)], policy: &[String]) -> Vec<(String, u16)> {
    let mut merged: Vec<(String, u16)> = Vec::with_capacity(flags.len() + policy.len());
    let from_policy = policy.iter().filter_map(|t| parse_target(t).ok());
    for (host, port) in flags.iter().cloned().chain(from_policy) {
        if !merged
            .iter()
            .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(&host))
        {
            merged.push((host, port));
        }
    }
    merged
}

/// The proxy variables of the shell the doctor runs in.
pub fn shell_proxy_env(world: &World) -> BTreeMap<String, String> {
    PROXY_VARS
        .iter()
        .filter_map(|k| world.var(k).map(|v| ((*k).to_owned(), v)))
        .collect()
}

/// The proxy variables of the installed service: from the unit file in
/// `unit_dir` and the environment file it loads, else from `systemctl show
/// -p Environment` when systemd knows the unit. `None` when no service is
/// installed (or nothing can be read about it).
pub fn service_proxy_env(
    unit_dir: &Path,
    systemctl: Option<&Path>,
) -> Option<BTreeMap<String, String>> {
    if let Ok(unit) = std::fs::read_to_string(unit_dir.join(UNIT_NAME)) {
        return Some(parse_unit_env(&unit, &|p| std::fs::read_to_string(p).ok()));
    }
    let systemctl = systemctl?;
    let out = std::process::Command::new(systemctl)
        .args([
            "show",
            "-p",
            "LoadState",
            "-p",
            "Environment",
            "tether-agent",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.lines().any(|l| l.trim() == "LoadState=loaded") {
        return None;
    }
    let mut env = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Environment=") {
            for word in split_systemd_words(rest) {
                insert_proxy_var(&mut env, &word);
            }
        }
    }
    Some(env)
}

/// Reads the proxy variables a unit sets with `Environment=` and
/// `EnvironmentFile=` (read through `read`).
pub fn parse_unit_env(
    unit: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Environment=") {
            for word in split_systemd_words(rest) {
                insert_proxy_var(&mut env, &word);
            }
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            let file = file.trim_start_matches('-');
            if let Some(text) = read(Path::new(file)) {
                for l in text.lines().map(str::trim) {
                    if l.starts_with('#') || l.is_empty() {
                        continue;
                    }
                    let unquoted = match l.split_once('=') {
                        Some((k, v)) => {
                            format!("{k}={}", v.trim_matches(|c| c == '\'' || c == '"'))
                        }
                        None => continue,
                    };
                    insert_proxy_var(&mut env, &unquoted);
                }
            }
        }
    }
    env
}

fn insert_proxy_var(env: &mut BTreeMap<String, String>, assignment: &str) {
    if let Some((k, v)) = assignment.split_once('=')
        && PROXY_VARS.contains(&k)
    {
        env.insert(k.to_owned(), v.to_owned());
    }
}

/// Splits a systemd value into words: double quotes group, `\` escapes,
/// `%%` and `$$` are literal `%` and `$`.
fn split_systemd_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                cur.push(c);
            }
            c if c.is_whitespace() && !in_quotes => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// `opts` with the offline bundle's server, CA pin and token (its
/// `enroll.env` and `token`) for those the flags do not give: what the
/// bundle's `install.sh` would enroll with.
fn with_bundle_enrollment(opts: &DoctorOptions) -> Result<DoctorOptions, Failure> {
    let mut filled = opts.clone();
    let Some(dir) = &opts.offline_bundle else {
        return Ok(filled);
    };
    let env = std::fs::read_to_string(dir.join("enroll.env")).map_err(|e| {
        Failure::new(
            ErrorCode::OfflineBundleAltered,
            format!("{}: {e}", dir.join("enroll.env").display()),
        )
    })?;
    let value = |key: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
    };
    if filled.server.is_none()
        && let Some(url) = value("TETHER_SERVER")
    {
        filled.server = Some(Url::parse(&url).map_err(|e| {
            Failure::new(
                ErrorCode::OfflineBundleAltered,
                format!("enroll.env's TETHER_SERVER {url:?} is not a URL: {e}"),
            )
        })?);
    }
    if filled.ca_fingerprint.is_none() && filled.ca_file.is_none() {
        filled.ca_fingerprint = value("TETHER_CA_FINGERPRINT");
    }
    if filled.token.is_none() {
        filled.token = std::fs::read_to_string(dir.join("token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    Ok(filled)
}

/// Builds the doctor's input: from the agent's config and state when the
/// state dir holds one (flags override), else from the flags alone.
pub fn input(
    opts: &DoctorOptions,
    world: &World,
    systemctl: Option<&Path>,
) -> Result<DoctorInput, Failure> {
    let dir = &opts.state_dir;
    let flags = ConfigLayer {
        server: opts.server.clone(),
        proxy: opts.proxy.clone(),
        ca_fingerprint: opts.ca_fingerprint.clone(),
        ca_file: opts.ca_file.clone(),
        extra_ca_file: opts.extra_ca_file.clone(),
        ..ConfigLayer::default()
    };
    let env = |k: &str| world.var(k);
    let shell = shell_proxy_env(world);
    let service = service_proxy_env(&opts.unit_dir, systemctl);
    let mut policy_targets = Vec::new();
    let mut input = match crate::config::load(dir, &env, &flags) {
        Ok(effective) => {
            let config = &effective.config;
            let credential = crate::credential::load_ignoring_mode(dir).ok();
            let state = StateStore::new(dir).load().ok().flatten();
            if let Some(policy) = state.as_ref().and_then(|s| s.policy.as_ref()) {
                policy_targets.clone_from(&policy.targets);
            }
            let transport = crate::connect::transport_config(config, Some(dir), &env)?;
            let mut input = DoctorInput::new(config.server.clone());
            input.transport = transport;
            input.defs = defs_input(
                config,
                dir,
                state.as_ref().and_then(|s| s.policy.as_ref()),
                &env,
            )?;
            input.enrolled = credential.is_some() && state.is_some();
            input.agent_id = state.as_ref().map(|s| s.agent_id);
            input.credential = credential.map(|c| c.expose().to_owned());
            input.state_dir = Some(dir.clone());
            input.log_dir = Some(config.log_dir.clone().unwrap_or_else(|| dir.join("logs")));
            input.facts = crate::facts::collect(state.as_ref().map(|s| s.installed_at));
            input.config_sources = effective
                .report()
                .into_iter()
                .map(|v| (v.field.to_owned(), v.value, v.source.to_string()))
                .collect();
            input
        }
        Err(e) if e.code() == ErrorCode::NotEnrolled && opts.offline_bundle.is_some() => {
            let filled = with_bundle_enrollment(opts)?;
            let Some(server) = &filled.server else {
                return Err(Failure::new(
                    ErrorCode::OfflineBundleAltered,
                    "the offline bundle's enroll.env names no TETHER_SERVER and no --server was given",
                ));
            };
            let mut input = pre_enrollment(&filled, server, world)?;
            input.token = filled.token.clone();
            input
        }
        Err(e) if e.code() == ErrorCode::NotEnrolled => {
            let Some(server) = &opts.server else {
                return Err(Failure::new(
                    ErrorCode::NotEnrolled,
                    format!(
                        "{} holds no agent configuration and no --server was given; pass --server URL to check a server before enrollment",
                        dir.display()
                    ),
                ));
            };
            pre_enrollment(opts, server, world)?
        }
        Err(e) => return Err(e.into()),
    };
    if opts.token.is_some() || input.token.is_none() {
        input.token = opts.token.clone();
    }
    input.offline_bundle = opts.offline_bundle.clone();
    input.shell_proxy_env = shell;
    input.service_proxy_env = service;
    input.targets = merge_targets(&opts.targets, &policy_targets);
    input.deadline = opts.deadline;
    input.target_timeout = opts.target_timeout;
    input.ntp_servers = if opts.ntp_servers.is_empty() {
        tether_doctor::default_ntp_servers()
    } else {
        opts.ntp_servers.clone()
    };
    Ok(input)
}

/// The definitions path as the updater takes it, when the last policy
/// subscribes to a channel: the same server list
/// ([`crate::defs::update_servers`]) and transport settings
/// ([`crate::defs::transport_config`]) the updater is built from.
fn defs_input(
    config: &crate::config::AgentConfig,
    dir: &Path,
    policy: Option<&tether_wire::Policy>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<DefsInput>, Failure> {
    let Some(policy) = policy.filter(|p| !p.defs.channels.is_empty()) else {
        return Ok(None);
    };
    let servers = crate::defs::update_servers(&policy.defs, &config.server);
    let Some(control_plane) =
        crate::defs::update_servers(&tether_wire::DefsPolicy::default(), &config.server)
            .into_iter()
            .next()
    else {
        return Ok(None);
    };
    Ok(Some(DefsInput {
        servers,
        control_plane,
        transport: crate::defs::transport_config(config, dir, env)?,
        channels: policy.defs.channels.clone(),
        state_dir: dir.to_owned(),
    }))
}

fn pre_enrollment(
    opts: &DoctorOptions,
    server: &Url,
    world: &World,
) -> Result<DoctorInput, Failure> {
    if server.scheme() != "https" || server.host_str().is_none() {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            format!("--server {server} is not an https:// URL with a host"),
        ));
    }
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            Failure::new(
                ErrorCode::ConfigInvalid,
                format!("cannot read the {what} {}: {e}", p.display()),
            )
        })
    };
    let pinned_ca_sha256 = opts
        .ca_fingerprint
        .as_deref()
        .map(tether_transport::parse_fingerprint)
        .transpose()
        .map_err(Failure::from)?;
    let ca_pem = opts
        .ca_file
        .as_deref()
        .map(|p| read(p, "CA file"))
        .transpose()?;
    let extra_ca_pem = opts
        .extra_ca_file
        .as_deref()
        .map(|p| read(p, "extra CA file"))
        .transpose()?;
    let system_roots = pinned_ca_sha256.is_none() && ca_pem.is_none();
    let proxy = match &opts.proxy {
        Some(p) => ProxySetting::Explicit(ProxyConfig::parse(p).map_err(Failure::from)?),
        None => match ProxyConfig::from_env_with(|k: &str| world.var(k)).map_err(Failure::from)? {
            Some(p) => ProxySetting::Explicit(p),
            None => ProxySetting::Direct,
        },
    };
    let mut input = DoctorInput::new(server.clone());
    input.transport = TransportConfig {
        proxy,
        trust: TrustConfig {
            pinned_ca_sha256,
            ca_pem,
            extra_ca_pem,
            system_roots,
        },
        user_agent: crate::connect::user_agent(),
        ..TransportConfig::default()
    };
    input.facts = crate::facts::collect(None);
    let flag = |name: &str, v: String| {
        (
            name.to_owned(),
            v,
            format!("flag --{}", name.replace('_', "-")),
        )
    };
    input
        .config_sources
        .push(flag("server", server.to_string()));
    if let Some(p) = &opts.proxy {
        input
            .config_sources
            .push(flag("proxy", crate::config::redact_url(p)));
    }
    if let Some(f) = &opts.ca_fingerprint {
        input.config_sources.push(flag("ca_fingerprint", f.clone()));
    }
    if let Some(f) = &opts.ca_file {
        input
            .config_sources
            .push(flag("ca_file", f.display().to_string()));
    }
    Ok(input)
}

/// Runs the doctor in the real world.
pub async fn run(opts: &DoctorOptions, world: &World) -> Result<Report, Failure> {
    let mut doctor_world = tether_doctor::World::system();
    doctor_world.clock = world.clock.clone();
    doctor_world.systemctl = systemctl_if_booted(doctor_world.systemctl);
    let input = input(opts, world, doctor_world.systemctl.as_deref())?;
    Ok(tether_doctor::run(input, doctor_world).await)
}

/// `systemctl` only when systemd runs this host (`/run/systemd/system`
/// exists, as `sd_booted()` checks): in a container or under another init,
/// a missing service means nothing, and the service check is skipped.
pub fn systemctl_if_booted(systemctl: Option<PathBuf>) -> Option<PathBuf> {
    systemctl.filter(|_| Path::new("/run/systemd/system").is_dir())
}

/// The one-line summary the agent reports and the server stores.
pub fn summary(report: &Report, bundle_id: Option<uuid::Uuid>) -> DoctorSummary {
    let v = &report.verdict;
    DoctorSummary {
        status: v.status.as_str().to_owned(),
        code: v.code,
        root_cause: v.root_cause.clone(),
        action: v.action.clone(),
        check: v.check.clone(),
        at: report.started_at,
        bundle_id,
    }
}

/// The time a report was made, for file names.
pub fn stamp(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SERVICE_ENV_FILE;

    #[test]
    fn targets_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_target("db.corp:5985"), Ok(("db.corp".into(), 5985)));
        assert_eq!(parse_target("[::1]:22"), Ok(("::1".into(), 22)));
        for bad in ["db.corp", "db.corp:0", "db.corp:99999", ":22", "a b:22"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_targets_join_the_flags_without_duplicates() {
        let flags = vec![("db.corp".to_owned(), 5985), ("::1".to_owned(), 22)];
        let policy = [
            "DB.corp:5985".to_owned(),
            "ldap.corp:389".to_owned(),
            "[::1]:22".to_owned(),
            "not a target".to_owned(),
            "ldap.corp:389".to_owned(),
            "ldap.corp:636".to_owned(),
        ];
        assert_eq!(
            merge_targets(&flags, &policy),
            vec![
                ("db.corp".to_owned(), 5985),
                ("::1".to_owned(), 22),
                ("ldap.corp".to_owned(), 389),
                ("ldap.corp".to_owned(), 636),
            ]
        );
        assert_eq!(merge_targets(&[], &[]), Vec::new());
        assert_eq!(merge_targets(&flags, &[]), flags);
    }

    #[test]
    fn the_unit_and_its_env_file_give_the_service_proxy_env() {
        let unit = "[Service]\nExecStart=\"/usr/bin/tether-agent\" \"run\"\n\
            Environment=\"NO_PROXY=localhost,.corp\"\n\
            Environment=\"HTTPS_PROXY=http://p.corp:3128\" \"PATH=/bin\"\n\
            EnvironmentFile=-/var/lib/tether-agent/service.env\n";
        let env = parse_unit_env(unit, &|p| {
            (p == Path::new("/var/lib/tether-agent/service.env"))
                .then(|| "# comment\nall_proxy='http://u:pw@q.corp:8080'\n".to_owned())
        });
        assert_eq!(
            env,
            BTreeMap::from([
                ("HTTPS_PROXY".to_owned(), "http://p.corp:3128".to_owned()),
                ("NO_PROXY".to_owned(), "localhost,.corp".to_owned()),
                ("all_proxy".to_owned(), "http://u:pw@q.corp:8080".to_owned()),
            ])
        );
        assert_eq!(
            split_systemd_words(r#""A=1 2" B=3 "C=100%% $$x \"q\"""#),
            vec!["A=1 2", "B=3", "C=100% $x \"q\""]
        );
    }

    #[test]
    fn an_installed_unit_is_read_from_the_unit_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            service_proxy_env(dir.path(), None),
            None,
            "no unit, no systemctl"
        );
        let spec = crate::service::UnitSpec {
            exe: PathBuf::from("/usr/bin/tether-agent"),
            run_args: vec!["run".into()],
            state_dir: dir.path().to_owned(),
            user: None,
            environment: vec![("HTTPS_PROXY".into(), "http://p:3128".into())],
            environment_file: Some(dir.path().join(SERVICE_ENV_FILE)),
        };
        std::fs::write(
            dir.path().join(UNIT_NAME),
            crate::service::render_unit(&spec).expect("renders"),
        )
        .expect("writes");
        std::fs::write(
            dir.path().join(SERVICE_ENV_FILE),
            crate::service::render_env_file(&[("ALL_PROXY".into(), "http://a:b@q:1".into())])
                .expect("renders"),
        )
        .expect("writes");
        let env = service_proxy_env(dir.path(), None).expect("unit found");
        assert_eq!(
            env.get("HTTPS_PROXY").map(String::as_str),
            Some("http://p:3128")
        );
        assert_eq!(
            env.get("ALL_PROXY").map(String::as_str),
            Some("http://a:b@q:1")
        );
    }
}
