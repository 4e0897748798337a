//! `tether-agent preseed`: the unattended enrollment a package install runs
//! (the Debian package's postinst, `packaging/deb/agent/postinst`).
//!
//! The server URL, the CA pin and the enrollment token come from a preseed
//! file (default `/etc/tether/agent.preseed`, TOML) and from the environment
//! (`TETHER_SERVER`, `TETHER_CA_PIN`, `TETHER_TOKEN`), the environment
//! winning as everywhere else (file, then env). An agent that is already
//! enrolled keeps its identity: an upgrade never re-enrolls. After a
//! successful enrollment the token is removed from the file (the line is
//! replaced by a comment; if that fails the file is deleted), so the secret
//! does not outlive its one use.
//!
//! A preseed file is hostile input on a host where only root may decide
//! which server the agent trusts: it must be a regular file that no one but
//! root (or the user running the command) owns or can write.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tether_wire::{AgentKind, ErrorCode};
use url::Url;

use crate::enroll::{EnrollOptions, Enrolled};
use crate::error::Failure;
use crate::world::World;

/// Where the Debian package looks for the preseed.
pub const DEFAULT_PRESEED_FILE: &str = "/etc/tether/agent.preseed";

/// The environment variables that override the file's values.
pub const ENV_SERVER: &str = "TETHER_SERVER";
pub const ENV_CA_PIN: &str = "TETHER_CA_PIN";
pub const ENV_TOKEN: &str = "TETHER_TOKEN";

/// The largest preseed file read (a few lines are expected).
const MAX_PRESEED_BYTES: u64 = 64 * 1024;

/// The preseed file as an operator writes it. Unknown keys are refused, so a
/// typo fails loudly instead of enrolling without the intended setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreseedFile {
    /// The control plane's URL, `https://host:port`.
    #[serde(default)]
    pub server: Option<String>,
    /// The server CA's SHA-256 fingerprint, `sha256:HEX` (`tether server`
    /// prints it).
    #[serde(default)]
    pub ca_pin: Option<String>,
    /// The enrollment token (`tether token create`); removed from the file
    /// after a successful enrollment.
    #[serde(default)]
    pub token: Option<String>,
    /// The agent's display name; defaults to the hostname.
    #[serde(default)]
    pub name: Option<String>,
    /// The agent kind asked for: discovery, provisioning or connector.
    #[serde(default)]
    pub kind: Option<AgentKind>,
    /// An HTTP proxy, `http://[user:pass@]host:port`.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// Where a preseed value came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Env(&'static str),
}

/// The validated preseed: enough to enroll.
#[derive(Debug, Clone)]
pub struct Preseed {
    pub server: Url,
    pub ca_pin: String,
    pub token: String,
    pub token_origin: Origin,
    pub name: Option<String>,
    pub kind: Option<AgentKind>,
    pub proxy: Option<String>,
}

/// What the command did.
#[derive(Debug)]
pub enum Outcome {
    /// The state directory already holds a credential: nothing was sent.
    AlreadyEnrolled,
    /// Neither the file nor the environment gave anything to enroll with.
    NothingToDo,
    /// Enrolled now; `redaction` says what became of the token in the file.
    Enrolled {
        enrolled: Box<Enrolled>,
        redaction: Redaction,
    },
}

/// What became of the token in the preseed file after enrollment.
#[derive(Debug, PartialEq, Eq)]
pub enum Redaction {
    /// The token came from the environment; the file had none.
    NotInFile,
    /// The token's line was replaced by a comment.
    Redacted,
    /// Rewriting failed, so the file was deleted.
    Deleted,
    /// Neither worked: the token is still in the file (TETHER-E8723).
    Left(String),
}

/// Reads the preseed file (if present) and checks who may have written it.
/// `Ok(None)` when the file does not exist.
pub fn read_file(path: &Path, euid: u32) -> Result<Option<(PreseedFile, String)>, Failure> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                ErrorCode::PreseedUnreadable,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    check_owner(path, &meta, euid)?;
    if meta.len() > MAX_PRESEED_BYTES {
        return Err(Failure::new(
            ErrorCode::PreseedInvalid,
            format!(
                "{} is {} bytes; a preseed holds a few lines (at most {MAX_PRESEED_BYTES} bytes)",
                path.display(),
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            ErrorCode::PreseedUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let file: PreseedFile = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        Failure::new(
            ErrorCode::PreseedInvalid,
            format!(
                "{}{at}: {}; expected TOML keys server, ca_pin, token and optionally name, kind, proxy",
                path.display(),
                e.message()
            ),
        )
    })?;
    Ok(Some((file, text)))
}

#[cfg(unix)]
fn check_owner(path: &Path, meta: &std::fs::Metadata, euid: u32) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    if !meta.file_type().is_file() {
        return Err(Failure::new(
            ErrorCode::PreseedInsecure,
            format!(
                "{} is not a regular file (a symbolic link or a directory is refused)",
                path.display()
            ),
        ));
    }
    let owner_ok = meta.uid() == 0 || meta.uid() == euid;
    let mode = meta.mode() & 0o7777;
    if !owner_ok || mode & 0o022 != 0 {
        return Err(Failure::new(
            ErrorCode::PreseedInsecure,
            format!(
                "{} is owned by uid {} with mode {mode:04o}; expected owner root, writable by its owner only",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner(_path: &Path, _meta: &std::fs::Metadata, _euid: u32) -> Result<(), Failure> {
    Ok(())
}

/// Layers the file and the environment and validates the result.
/// `Ok(None)` when neither gives any value.
pub fn resolve(
    file: Option<&PreseedFile>,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Preseed>, Failure> {
    let empty = PreseedFile::default();
    let file = file.unwrap_or(&empty);
    let pick = |var: &'static str, from_file: &Option<String>| -> Option<(String, Origin)> {
        env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v, Origin::Env(var)))
            .or_else(|| from_file.clone().map(|v| (v, Origin::File)))
    };
    let server = pick(ENV_SERVER, &file.server);
    let pin = pick(ENV_CA_PIN, &file.ca_pin);
    let token = pick(ENV_TOKEN, &file.token);
    if server.is_none() && pin.is_none() && token.is_none() {
        return Ok(None);
    }
    let missing: Vec<String> = [
        ("server", ENV_SERVER, server.is_none()),
        ("ca_pin", ENV_CA_PIN, pin.is_none()),
        ("token", ENV_TOKEN, token.is_none()),
    ]
    .into_iter()
    .filter(|(_, _, missing)| *missing)
    .map(|(key, var, _)| format!("{key} (or {var})"))
    .collect();
    let (Some((server, server_origin)), Some((pin, pin_origin)), Some((token, token_origin))) =
        (server, pin, token)
    else {
        return Err(Failure::new(
            ErrorCode::PreseedIncomplete,
            format!(
                "the preseed ({} and the environment) lacks {}",
                path.display(),
                missing.join(", ")
            ),
        ));
    };
    let named = |origin: Origin, key: &str| match origin {
        Origin::File => format!("{key} in {}", path.display()),
        Origin::Env(var) => var.to_owned(),
    };
    let server_url = Url::parse(server.trim())
        .ok()
        .filter(|u| u.scheme() == "https" && u.host().is_some())
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::PreseedInvalid,
                format!(
                    "{} is {server:?}; expected the control plane's https:// URL",
                    named(server_origin, "server")
                ),
            )
        })?;
    if let Err(e) = tether_transport::parse_fingerprint(pin.trim()) {
        return Err(Failure::new(
            ErrorCode::PreseedInvalid,
            format!(
                "{} is {pin:?}: {e}; expected sha256:HEX as `tether server` prints it",
                named(pin_origin, "ca_pin")
            ),
        ));
    }
    let token = token.trim().to_owned();
    if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The value is a secret: never echo it.
        return Err(Failure::new(
            ErrorCode::PreseedInvalid,
            format!(
                "{} is empty or holds spaces or control characters; expected the token `tether token create` printed",
                named(token_origin, "token")
            ),
        ));
    }
    if let Some(p) = &file.proxy
        && let Err(e) = tether_transport::ProxyConfig::parse(p)
    {
        return Err(Failure::new(
            ErrorCode::PreseedInvalid,
            format!("proxy in {} is invalid: {e}", path.display()),
        ));
    }
    Ok(Some(Preseed {
        server: server_url,
        ca_pin: pin.trim().to_owned(),
        token,
        token_origin,
        name: file.name.clone(),
        kind: file.kind,
        proxy: file.proxy.clone(),
    }))
}

/// The file's text with every `token = …` line replaced by a comment.
pub fn redacted_text(text: &str, note: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line.trim_start();
        let is_token = key
            .strip_prefix("token")
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_token {
            out.push_str(&format!("# token removed {note}\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Removes the token from the file: rewrite without it (checked by parsing
/// the result again), else delete the file.
fn redact(path: &Path, text: &str, note: &str) -> Redaction {
    let new = redacted_text(text, note);
    let still_there = toml::from_str::<PreseedFile>(&new)
        .map(|f| f.token.is_some())
        .unwrap_or(true);
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777)
    };
    #[cfg(not(unix))]
    let mode = 0o600;
    if !still_there && tether_fs::write_atomic(path, new.as_bytes(), mode).is_ok() {
        return Redaction::Redacted;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Redaction::Deleted,
        Err(e) => Redaction::Left(format!(
            "{} still holds the token and could not be rewritten or deleted: {e}",
            path.display()
        )),
    }
}

/// Enrolls from the preseed unless the agent is already enrolled.
pub async fn run(
    path: &Path,
    state_dir: &Path,
    euid: u32,
    world: &World,
) -> Result<Outcome, Failure> {
    if state_dir.join(crate::credential::CREDENTIAL_FILE).exists() {
        return Ok(Outcome::AlreadyEnrolled);
    }
    let read = read_file(path, euid)?;
    let Some(preseed) = resolve(read.as_ref().map(|(f, _)| f), path, &|k| world.var(k))? else {
        return Ok(Outcome::NothingToDo);
    };
    let opts = EnrollOptions {
        state_dir: state_dir.to_path_buf(),
        server: preseed.server.clone(),
        token: preseed.token.clone(),
        ca_fingerprint: Some(preseed.ca_pin.clone()),
        ca_file: None,
        extra_ca_file: None,
        name: preseed.name.clone(),
        kind: preseed.kind,
        proxy: preseed.proxy.clone(),
    };
    let enrolled = crate::enroll::enroll(&opts, world).await?;
    let token_in_file = read.as_ref().is_some_and(|(f, _)| {
        f.token
            .as_deref()
            .is_some_and(|t| t.trim() == preseed.token)
    });
    let redaction = match (&read, token_in_file) {
        (Some((_, text)), true) => {
            let note = format!(
                "after agent {} enrolled at {}",
                enrolled.agent_id,
                world
                    .clock
                    .now()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            );
            redact(path, text, &note)
        }
        // A token in the file that the environment overrode is just as
        // secret: take it out as well.
        (Some((f, text)), false) if f.token.is_some() => redact(path, text, "(unused)"),
        _ => Redaction::NotInFile,
    };
    Ok(Outcome::Enrolled {
        enrolled: Box::new(enrolled),
        redaction,
    })
}

/// The default preseed path as a `PathBuf`, for clap.
pub fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_PRESEED_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn file(text: &str) -> PreseedFile {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn file_and_environment_layer_with_the_environment_winning() {
        let f = file(&format!(
            "server = \"https://cp.example:8443\"\nca_pin = \"{PIN}\"\ntoken = \"tet_file\"\n"
        ));
        let env = |k: &str| (k == ENV_TOKEN).then(|| "tet_env".to_owned());
        let p = resolve(Some(&f), Path::new("/p"), &env)
            .expect("valid")
            .expect("something to do");
        assert_eq!(p.token, "tet_env");
        assert_eq!(p.token_origin, Origin::Env(ENV_TOKEN));
        assert_eq!(p.server.as_str(), "https://cp.example:8443/");
    }

    #[test]
    fn nothing_given_is_nothing_to_do_and_a_partial_preseed_names_what_lacks() {
        assert!(
            resolve(None, Path::new("/p"), &|_| None)
                .expect("ok")
                .is_none()
        );
        let f = file("server = \"https://cp.example:8443\"\n");
        let err = resolve(Some(&f), Path::new("/p"), &|_| None).expect_err("incomplete");
        assert_eq!(err.code, ErrorCode::PreseedIncomplete);
        assert!(err.message.contains("ca_pin (or TETHER_CA_PIN)"), "{err}");
        assert!(err.message.contains("token (or TETHER_TOKEN)"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_source_and_the_token_never_echoed() {
        let f = file(&format!(
            "server = \"http://cp.example\"\nca_pin = \"{PIN}\"\ntoken = \"t\"\n"
        ));
        let err = resolve(Some(&f), Path::new("/p"), &|_| None).expect_err("http");
        assert_eq!(err.code, ErrorCode::PreseedInvalid);
        assert!(err.message.contains("server in /p"), "{err}");
        let f = file(&format!(
            "server = \"https://cp\"\nca_pin = \"{PIN}\"\ntoken = \"tet secret\"\n"
        ));
        let err = resolve(Some(&f), Path::new("/p"), &|_| None).expect_err("space");
        assert!(!err.message.contains("secret"), "{err}");
        let f = file("server = \"https://cp\"\nca_pin = \"md5:00\"\ntoken = \"t\"\n");
        let err = resolve(Some(&f), Path::new("/p"), &|_| None).expect_err("pin");
        assert!(err.message.contains("ca_pin in /p"), "{err}");
    }

    #[test]
    fn unknown_keys_and_broken_toml_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.preseed");
        std::fs::write(&path, "server = \"https://cp\"\ntokn = \"x\"\n").expect("write");
        let euid = nix::unistd::geteuid().as_raw();
        let err = read_file(&path, euid).expect_err("unknown key");
        assert_eq!(err.code, ErrorCode::PreseedInvalid);
        assert!(err.message.contains("line 2"), "{err}");
        assert!(
            read_file(&dir.path().join("absent"), euid)
                .expect("ok")
                .is_none()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_preseed_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.preseed");
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let euid = nix::unistd::geteuid().as_raw();
        let err = read_file(&path, euid).expect_err("world-writable");
        assert_eq!(err.code, ErrorCode::PreseedInsecure);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(read_file(&path, euid).expect("ok").is_some());
    }

    #[test]
    fn redaction_removes_every_token_line_and_keeps_the_rest() {
        let text = "# fleet preseed\nserver = \"https://cp\"\n  token = \"tet_x\"\ntoken=\"tet_y\"\ntokens_note = 1\n";
        let out = redacted_text(text, "after enrollment");
        assert!(!out.contains("tet_x") && !out.contains("tet_y"), "{out}");
        assert!(
            out.contains("# fleet preseed\nserver = \"https://cp\"\n"),
            "{out}"
        );
        assert!(out.contains("tokens_note = 1"), "{out}");
        assert_eq!(out.matches("# token removed after enrollment").count(), 2);
    }
}
