//! The `deploy` task's spec: the names to issue for, the PEM set, the
//! reload command and the endpoint that must serve the new certificate.
//!
//! Parsed from hostile JSON (an admin's typo, or a forged task): unknown
//! fields are refused, every path must be absolute and free of `..`, the
//! set's paths distinct, the key never world-readable, every number within
//! its bounds. A refusal names the field, what was seen and what is
//! accepted (TETHER-E8501).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most names one certificate may carry.
pub const MAX_NAMES: usize = 100;
/// The longest reload command, in arguments.
pub const MAX_RELOAD_ARGS: usize = 64;
pub const DEFAULT_RELOAD_SECS: u64 = 30;
pub const MAX_RELOAD_SECS: u64 = 600;
pub const DEFAULT_VERIFY_SECS: u64 = 15;
pub const MAX_VERIFY_SECS: u64 = 120;
pub const MAX_DAYS: u32 = 397;

/// A spec refused: the field, what was seen, what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deploy spec field {field}: got {observed}; expected {expected}")]
pub struct SpecError {
    pub field: String,
    pub observed: String,
    pub expected: String,
}

fn refuse(field: &str, observed: impl std::fmt::Display, expected: &str) -> SpecError {
    SpecError {
        field: field.to_owned(),
        observed: observed.to_string().chars().take(200).collect(),
        expected: expected.to_owned(),
    }
}

/// Issue from the control plane's built-in CA, then deploy to a PEM set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The names the certificate is for: DNS names or IP addresses. The CA
    /// signs only these.
    pub names: Vec<String>,
    /// Validity in days (default 90, at most 397).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    pub target: PemTarget,
    pub reload: ReloadSpec,
    pub verify: VerifySpec,
}

/// The PEM set: four files at most, each replaced atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemTarget {
    /// The leaf certificate alone.
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM), generated on this host.
    pub key: PathBuf,
    /// The intermediates alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<PathBuf>,
    /// The leaf followed by the intermediates (what nginx reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fullchain: Option<PathBuf>,
    /// Owner of every file (user name or uid); default: kept, or ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group of every file (group name or gid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Mode of the certificate files, octal text (default "0644").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Mode of the key, octal text (default "0600"); never world-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// The command and its arguments, run without a shell.
    pub command: Vec<String>,
    /// Default 30, at most 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// The address the service answers on.
    pub address: IpAddr,
    pub port: u16,
    /// The SNI to send (default: the first DNS name of `names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// How long the new certificate may take to appear after the reload
    /// (default 15, at most 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Which file of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cert,
    Key,
    Chain,
    Fullchain,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cert => "cert",
            Role::Key => "key",
            Role::Chain => "chain",
            Role::Fullchain => "fullchain",
        }
    }
}

impl DeploySpec {
    /// Parses and checks a spec.
    pub fn from_json(value: &Value) -> Result<DeploySpec, SpecError> {
        let spec: DeploySpec = serde_json::from_value(value.clone())
            .map_err(|e| refuse("spec", e, "a deploy spec (names, target, reload, verify)"))?;
        spec.check()?;
        Ok(spec)
    }

    /// Every rule the types do not already say.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.names.is_empty() || self.names.len() > MAX_NAMES {
            return Err(refuse(
                "names",
                format!("{} names", self.names.len()),
                "1 to 100 DNS names or IP addresses",
            ));
        }
        for n in &self.names {
            if n.parse::<IpAddr>().is_err() && !is_dns_name(n) {
                return Err(refuse(
                    "names",
                    format!("{n:?}"),
                    "DNS names (letters, digits, '-', dots, an optional leading '*.') or IP addresses",
                ));
            }
        }
        if let Some(d) = self.days
            && !(1..=MAX_DAYS).contains(&d)
        {
            return Err(refuse("days", d, "1 to 397"));
        }
        let files = self.target.files();
        for (role, path) in &files {
            check_path(&format!("target.{}", role.as_str()), path)?;
        }
        for (i, (ra, a)) in files.iter().enumerate() {
            if let Some((rb, _)) = files[i + 1..].iter().find(|(_, b)| b == a) {
                return Err(refuse(
                    &format!("target.{}", rb.as_str()),
                    a.display(),
                    &format!("a path other than target.{}'s", ra.as_str()),
                ));
            }
        }
        self.target.cert_mode()?;
        self.target.key_file_mode()?;
        for (field, v) in [
            ("target.owner", &self.target.owner),
            ("target.group", &self.target.group),
        ] {
            if let Some(v) = v
                && !is_account(v)
            {
                return Err(refuse(
                    field,
                    format!("{v:?}"),
                    "a user or group name, or a number",
                ));
            }
        }
        let cmd = &self.reload.command;
        if cmd.is_empty()
            || cmd.len() > MAX_RELOAD_ARGS
            || cmd[0].is_empty()
            || cmd.iter().any(|a| a.len() > 4096 || a.contains('\0'))
        {
            return Err(refuse(
                "reload.command",
                format!("{} arguments", cmd.len()),
                "1 to 64 arguments, the first a program, none with NUL or over 4096 bytes",
            ));
        }
        bounded(
            "reload.timeout_secs",
            self.reload.timeout_secs,
            MAX_RELOAD_SECS,
        )?;
        bounded(
            "verify.timeout_secs",
            self.verify.timeout_secs,
            MAX_VERIFY_SECS,
        )?;
        if self.verify.port == 0 {
            return Err(refuse("verify.port", 0, "1 to 65535"));
        }
        if let Some(s) = &self.verify.sni
            && !is_dns_name(s)
        {
            return Err(refuse("verify.sni", format!("{s:?}"), "a DNS name"));
        }
        Ok(())
    }

    pub fn reload_timeout(&self) -> Duration {
        Duration::from_secs(self.reload.timeout_secs.unwrap_or(DEFAULT_RELOAD_SECS))
    }

    pub fn verify_timeout(&self) -> Duration {
        Duration::from_secs(self.verify.timeout_secs.unwrap_or(DEFAULT_VERIFY_SECS))
    }

    /// The SNI the verification sends.
    pub fn sni(&self) -> Option<String> {
        self.verify.sni.clone().or_else(|| {
            self.names
                .iter()
                .find(|n| n.parse::<IpAddr>().is_err() && !n.starts_with("*."))
                .cloned()
        })
    }
}

impl PemTarget {
    /// The set's files, in the order they are written.
    pub fn files(&self) -> Vec<(Role, PathBuf)> {
        let mut v = vec![
            (Role::Cert, self.cert.clone()),
            (Role::Key, self.key.clone()),
        ];
        if let Some(p) = &self.chain {
            v.push((Role::Chain, p.clone()));
        }
        if let Some(p) = &self.fullchain {
            v.push((Role::Fullchain, p.clone()));
        }
        v
    }

    pub fn cert_mode(&self) -> Result<u32, SpecError> {
        mode("target.mode", self.mode.as_deref(), 0o644)
    }

    pub fn key_file_mode(&self) -> Result<u32, SpecError> {
        let m = mode("target.key_mode", self.key_mode.as_deref(), 0o600)?;
        if m & 0o007 != 0 {
            return Err(refuse(
                "target.key_mode",
                format!("{m:04o}"),
                "a mode others cannot read or write (e.g. 0600 or 0640)",
            ));
        }
        Ok(m)
    }
}

fn mode(field: &str, text: Option<&str>, default: u32) -> Result<u32, SpecError> {
    let Some(t) = text else { return Ok(default) };
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.is_empty() && t.len() <= 4 => Ok(m),
        _ => Err(refuse(
            field,
            format!("{t:?}"),
            "an octal mode such as \"0644\", at most 0777",
        )),
    }
}

fn bounded(field: &str, v: Option<u64>, max: u64) -> Result<(), SpecError> {
    match v {
        Some(s) if s == 0 || s > max => Err(refuse(field, s, &format!("1 to {max}"))),
        _ => Ok(()),
    }
}

fn check_path(field: &str, p: &Path) -> Result<(), SpecError> {
    let text = p.to_string_lossy();
    if !p.is_absolute()
        || text.len() > 4096
        || text.contains('\0')
        || p.file_name().is_none()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse(
            field,
            format!("{text:?}"),
            "an absolute path to a file, without '..'",
        ));
    }
    Ok(())
}

fn is_dns_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    let n = n.strip_suffix('.').unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_account(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "names": ["web.test", "127.0.0.1"],
            "target": {"cert": "/etc/t/cert.pem", "key": "/etc/t/key.pem", "fullchain": "/etc/t/full.pem"},
            "reload": {"command": ["nginx", "-s", "reload"]},
            "verify": {"address": "127.0.0.1", "port": 443}
        })
    }

    fn refused(mutate: impl FnOnce(&mut Value)) -> SpecError {
        let mut v = good();
        mutate(&mut v);
        DeploySpec::from_json(&v).expect_err("refused")
    }

    #[test]
    fn a_good_spec_reads_with_defaults() {
        let s = DeploySpec::from_json(&good()).expect("good");
        assert_eq!(s.target.cert_mode(), Ok(0o644));
        assert_eq!(s.target.key_file_mode(), Ok(0o600));
        assert_eq!(s.reload_timeout(), Duration::from_secs(30));
        assert_eq!(s.sni().as_deref(), Some("web.test"));
        assert_eq!(s.target.files().len(), 3);
    }

    #[test]
    fn hostile_specs_name_their_field() {
        assert_eq!(refused(|v| v["names"] = json!([])).field, "names");
        assert_eq!(refused(|v| v["names"] = json!(["a b"])).field, "names");
        assert_eq!(
            refused(|v| v["names"] = json!(["\u{1b}[31m"])).field,
            "names"
        );
        assert_eq!(
            refused(|v| v["target"]["cert"] = json!("rel/cert.pem")).field,
            "target.cert"
        );
        assert_eq!(
            refused(|v| v["target"]["key"] = json!("/etc/../etc/shadow")).field,
            "target.key"
        );
        assert_eq!(
            refused(|v| v["target"]["key"] = json!("/etc/t/cert.pem")).field,
            "target.key"
        );
        assert_eq!(
            refused(|v| v["target"]["key_mode"] = json!("0644")).field,
            "target.key_mode"
        );
        assert_eq!(
            refused(|v| v["target"]["mode"] = json!("9999")).field,
            "target.mode"
        );
        assert_eq!(
            refused(|v| v["target"]["owner"] = json!("root;rm")).field,
            "target.owner"
        );
        assert_eq!(
            refused(|v| v["reload"]["command"] = json!([])).field,
            "reload.command"
        );
        assert_eq!(
            refused(|v| v["reload"]["timeout_secs"] = json!(0)).field,
            "reload.timeout_secs"
        );
        assert_eq!(
            refused(|v| v["verify"]["timeout_secs"] = json!(100000)).field,
            "verify.timeout_secs"
        );
        assert_eq!(
            refused(|v| v["verify"]["port"] = json!(0)).field,
            "verify.port"
        );
        assert_eq!(refused(|v| v["days"] = json!(5000)).field, "days");
        assert_eq!(refused(|v| v["surprise"] = json!(1)).field, "spec");
        assert_eq!(
            refused(|v| v["verify"]["address"] = json!("not-an-ip")).field,
            "spec"
        );
        assert_eq!(refused(|v| *v = json!([1, 2])).field, "spec");
    }
}
