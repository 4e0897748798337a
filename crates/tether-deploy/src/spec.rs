//! The `deploy` task's spec: the names to issue for, the target (a PEM
//! set, a PKCS#12 file or a Java keystore), the reload command and the
//! endpoint that must serve the new certificate.
//!
//! A keystore's password is never in the spec: `password` is a secret
//! reference (`env:NAME` or `file:/PATH`) the agent reads on its host
//! ([`SecretRef::resolve`]), so the password is in no task, log or result.
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

/// The longest keystore alias.
pub const MAX_ALIAS: usize = 64;
/// The longest password a secret reference may yield.
pub const MAX_SECRET: usize = 1024;

/// Issue from the control plane's built-in CA, then deploy to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The names the certificate is for: DNS names or IP addresses. The CA
    /// signs only these.
    pub names: Vec<String>,
    /// Validity in days (default 90, at most 397).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    pub target: Target,
    pub reload: ReloadSpec,
    /// The endpoint that must serve the new certificate. Required for a
    /// PEM set; optional for keystores (without it the verify step records
    /// "no endpoint" and checks the written keystore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// Who issues: `builtin` (the default when absent, as in every spec
    /// written before ACME) or `acme:NAME`, a registered ACME issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// How the agent answers the ACME http-01 challenge. Required for an
    /// `acme:NAME` issuer, refused for the built-in CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeSpec>,
    /// A remote target: the target's paths, owner and reload command are
    /// on this host, reached over SSH. Absent: the agent's own host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
}

/// The longest SSH host name.
pub const MAX_SSH_HOST: usize = 253;
pub const DEFAULT_SSH_PORT: u16 = 22;
pub const DEFAULT_SSH_TIMEOUT_SECS: u64 = 10;
pub const MAX_SSH_TIMEOUT_SECS: u64 = 120;

/// The remote host of a remote target. JSON:
/// `{"host", "port"?, "user", "key"?, "passphrase"?, "password"?,
/// "host_key", "sudo"?, "timeout_secs"?}`, with exactly one of `key` and
/// `password`. Every secret is a reference read on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// The host: an IP address or a DNS name.
    pub host: String,
    /// Default 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The user the agent logs in as.
    pub user: String,
    /// The private key's secret reference (`file:/PATH` or `env:NAME`,
    /// the key in OpenSSH or PKCS#8 PEM form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// The key's passphrase, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<SecretRef>,
    /// The password's secret reference, instead of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The host's key, pinned: its SHA256 fingerprint as `ssh-keygen -lf`
    /// prints it (`SHA256:…`), or its OpenSSH public key line
    /// (`ssh-ed25519 AAAA… [comment]`). Required: an unknown host key is
    /// refused, never trusted on first use.
    pub host_key: String,
    /// Run every remote command through `sudo -n` (never a password
    /// prompt). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sudo: bool,
    /// Bound on connecting, the handshake and authentication (default 10,
    /// at most 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl SshSpec {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_SSH_PORT)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_SSH_TIMEOUT_SECS))
    }

    /// `user@host:port`, for steps and messages.
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port())
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port())
        }
    }

    /// The pinned host key's SHA256 fingerprint (`SHA256:…`), from either
    /// form of `host_key`.
    pub fn pinned_fingerprint(&self) -> Result<String, SpecError> {
        use russh::keys::ssh_key::{Fingerprint, HashAlg, PublicKey};
        let text = self.host_key.trim();
        let expected = "the host key's SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:…), or its OpenSSH public key line (ssh-ed25519 AAAA…)";
        if text.starts_with("SHA256:") {
            return text
                .parse::<Fingerprint>()
                .ok()
                .filter(|f| f.algorithm() == HashAlg::Sha256)
                .map(|f| f.to_string())
                .ok_or_else(|| refuse("ssh.host_key", format!("{text:?}"), expected));
        }
        if text.len() > 16 * 1024 || text.contains(['\n', '\r', '\0']) {
            return Err(refuse(
                "ssh.host_key",
                format!("{} bytes over several lines", text.len()),
                expected,
            ));
        }
        PublicKey::from_openssh(text)
            .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
            .map_err(|e| refuse("ssh.host_key", format!("{text:?} ({e})"), expected))
    }

    fn check(&self) -> Result<(), SpecError> {
        if self.host.parse::<IpAddr>().is_err()
            && (self.host.len() > MAX_SSH_HOST
                || !is_dns_name(&self.host)
                || self.host.starts_with("*."))
        {
            return Err(refuse(
                "ssh.host",
                format!("{:?}", self.host),
                "an IP address or a DNS name",
            ));
        }
        if self.port == Some(0) {
            return Err(refuse("ssh.port", 0, "1 to 65535"));
        }
        // A POSIX portable user name; never an option to ssh or sudo.
        if self.user.is_empty()
            || self.user.len() > 32
            || self.user.starts_with('-')
            || !self
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(refuse(
                "ssh.user",
                format!("{:?}", self.user),
                "a user name: 1 to 32 letters, digits, '_', '-' or '.', not starting with '-'",
            ));
        }
        match (&self.key, &self.password) {
            (Some(k), None) => k.check("ssh.key")?,
            (None, Some(p)) => {
                p.check("ssh.password")?;
                if self.passphrase.is_some() {
                    return Err(refuse(
                        "ssh.passphrase",
                        "a passphrase with a password",
                        "a passphrase only with ssh.key",
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(refuse(
                    "ssh.password",
                    "both a key and a password",
                    "exactly one of ssh.key and ssh.password",
                ));
            }
            (None, None) => {
                return Err(refuse(
                    "ssh.key",
                    "neither a key nor a password",
                    "exactly one of ssh.key (a secret reference to a private key) and ssh.password",
                ));
            }
        }
        if let Some(p) = &self.passphrase {
            p.check("ssh.passphrase")?;
        }
        self.pinned_fingerprint()?;
        bounded("ssh.timeout_secs", self.timeout_secs, MAX_SSH_TIMEOUT_SECS)
    }
}

/// The longest ACME issuer name.
pub const MAX_ISSUER_NAME: usize = 63;

/// The issuer a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// The control plane's built-in CA.
    Builtin,
    /// The registered ACME issuer of this name.
    Acme(String),
}

/// Whether `name` is a valid ACME issuer name: 1 to 63 lower-case letters,
/// digits and '-', starting with a letter or digit.
pub fn issuer_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ISSUER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// How the agent serves the http-01 challenge. JSON: `{"webroot": "/DIR"}`
/// (files under a web server's document root) or `{"listener": PORT}` (the
/// agent's own listener on that port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChallengeSpec {
    Webroot(PathBuf),
    Listener(u16),
}

/// Where the certificate goes. JSON: an object with `kind` (`pem`, the
/// default when absent, `pkcs12` or `java_keystore`) and that kind's
/// fields; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pem(PemTarget),
    /// A PKCS#12 file (`.p12`/`.pfx`).
    Pkcs12(KeystoreTarget),
    /// A Java keystore; `store_type` PKCS12 (default) or JKS (converted by
    /// the host's `keytool`, see docs/pki.md).
    JavaKeystore(KeystoreTarget),
}

/// A PKCS#12 file or a Java keystore: one file, replaced atomically,
/// holding the key and the chain under one alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreTarget {
    pub path: PathBuf,
    /// The store password's secret reference: `env:NAME` or `file:/PATH`.
    pub password: SecretRef,
    /// The entry's alias (PKCS#12 friendly name); default "tether".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Java keystores only: "PKCS12" (default) or "JKS".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_type: Option<String>,
    /// Owner of the file (user name or uid); default: kept, or ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Mode, octal text (default "0600"); never world-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A reference to a secret on the agent's host, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(pub String);

/// A secret read from its reference. Its `Debug` hides it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretRef {
    /// The reference's syntax: `env:NAME` (letters, digits, '_') or
    /// `file:` and an absolute path without `..`.
    pub fn check(&self, field: &str) -> Result<(), SpecError> {
        let expected = "env:NAME (letters, digits, '_') or file:/ABSOLUTE/PATH";
        if let Some(name) = self.0.strip_prefix("env:") {
            if name.is_empty()
                || name.len() > 128
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(refuse(field, format!("{:?}", self.0), expected));
            }
            Ok(())
        } else if let Some(path) = self.0.strip_prefix("file:") {
            check_path(field, Path::new(path))
                .map_err(|_| refuse(field, format!("{:?}", self.0), expected))
        } else {
            // Whatever it is, it may be a password pasted by mistake: the
            // refusal never echoes it.
            Err(refuse(
                field,
                format!(
                    "a value of {} characters that is not a reference",
                    self.0.chars().count()
                ),
                expected,
            ))
        }
    }

    /// Reads the secret on this host. A file's one trailing newline is
    /// dropped. The error names the reference, never a secret.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = if let Some(name) = self.0.strip_prefix("env:") {
            match std::env::var(name) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("{}: the agent's environment has no {name}", self.0));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("{}: the value is not UTF-8", self.0));
                }
            }
        } else if let Some(path) = self.0.strip_prefix("file:") {
            use std::io::Read;
            let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", self.0))?;
            let mut bytes = Vec::new();
            f.take(MAX_SECRET as u64 + 2)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", self.0))?;
            let mut text = String::from_utf8(bytes)
                .map_err(|_| format!("{}: the file is not UTF-8", self.0))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        } else {
            return Err("not a secret reference (env:NAME or file:/PATH)".to_owned());
        };
        if value.is_empty() {
            return Err(format!("{}: the secret is empty", self.0));
        }
        if value.len() > MAX_SECRET || value.contains(['\0', '\n']) {
            return Err(format!(
                "{}: the secret is over {MAX_SECRET} bytes or holds NUL or a line break",
                self.0
            ));
        }
        Ok(Secret(value))
    }
}

impl Target {
    /// The file the report names: the certificate, or the keystore.
    pub fn primary(&self) -> &Path {
        match self {
            Target::Pem(p) => &p.cert,
            Target::Pkcs12(k) | Target::JavaKeystore(k) => &k.path,
        }
    }

    /// The files written, in order.
    pub fn files(&self) -> Vec<(Role, PathBuf)> {
        match self {
            Target::Pem(p) => p.files(),
            Target::Pkcs12(k) | Target::JavaKeystore(k) => vec![(Role::Keystore, k.path.clone())],
        }
    }

    pub fn owner(&self) -> Option<&str> {
        match self {
            Target::Pem(p) => p.owner.as_deref(),
            Target::Pkcs12(k) | Target::JavaKeystore(k) => k.owner.as_deref(),
        }
    }

    pub fn group(&self) -> Option<&str> {
        match self {
            Target::Pem(p) => p.group.as_deref(),
            Target::Pkcs12(k) | Target::JavaKeystore(k) => k.group.as_deref(),
        }
    }

    /// A keystore target, if this is one.
    pub fn keystore(&self) -> Option<&KeystoreTarget> {
        match self {
            Target::Pem(_) => None,
            Target::Pkcs12(k) | Target::JavaKeystore(k) => Some(k),
        }
    }

    /// Whether the target is a Java keystore of type JKS.
    pub fn is_jks(&self) -> bool {
        matches!(self, Target::JavaKeystore(k)
            if k.store_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("jks")))
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::Pem(_) => "pem",
            Target::Pkcs12(_) => "pkcs12",
            Target::JavaKeystore(_) => "java_keystore",
        }
    }

    /// The mode of the file a role names.
    pub fn mode_of(&self, role: Role) -> Result<u32, SpecError> {
        match self {
            Target::Pem(p) if role == Role::Key => p.key_file_mode(),
            Target::Pem(p) => p.cert_mode(),
            Target::Pkcs12(k) | Target::JavaKeystore(k) => {
                private_mode("target.mode", k.mode.as_deref())
            }
        }
    }

    fn check(&self) -> Result<(), SpecError> {
        let files = self.files();
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
        for (role, _) in &files {
            self.mode_of(*role)?;
        }
        for (field, v) in [
            ("target.owner", self.owner()),
            ("target.group", self.group()),
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
        if let Some(k) = self.keystore() {
            k.password.check("target.password")?;
            if let Some(a) = &k.alias
                && (a.is_empty()
                    || a.len() > MAX_ALIAS
                    || !a
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)))
            {
                return Err(refuse(
                    "target.alias",
                    format!("{a:?}"),
                    "1 to 64 letters, digits, '_', '-' or '.'",
                ));
            }
            match (self, k.store_type.as_deref()) {
                (_, None) => {}
                (Target::JavaKeystore(_), Some(t)) if t.eq_ignore_ascii_case("pkcs12") => {}
                (Target::JavaKeystore(_), Some(t)) if t.eq_ignore_ascii_case("jks") => {}
                (Target::JavaKeystore(_), Some(t)) => {
                    return Err(refuse(
                        "target.store_type",
                        format!("{t:?}"),
                        "\"PKCS12\" or \"JKS\"",
                    ));
                }
                (_, Some(_)) => {
                    return Err(refuse(
                        "target.store_type",
                        "a store type on a pkcs12 target",
                        "no store_type (it is for java_keystore targets)",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl KeystoreTarget {
    pub fn alias(&self) -> &str {
        self.alias.as_deref().unwrap_or("tether")
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut v = match self {
            // A PEM set is written without `kind`, as before keystores.
            Target::Pem(p) => return p.serialize(s),
            Target::Pkcs12(k) | Target::JavaKeystore(k) => {
                serde_json::to_value(k).map_err(S::Error::custom)?
            }
        };
        if let Value::Object(m) = &mut v {
            m.insert("kind".to_owned(), Value::String(self.kind().to_owned()));
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        use serde::de::Error;
        let mut m = serde_json::Map::<String, Value>::deserialize(d)?;
        let kind = match m.remove("kind") {
            None => "pem".to_owned(),
            Some(Value::String(k)) => k,
            Some(_) => return Err(D::Error::custom("target.kind must be a string")),
        };
        let v = Value::Object(m);
        match kind.as_str() {
            "pem" => serde_json::from_value(v).map(Target::Pem),
            "pkcs12" => serde_json::from_value(v).map(Target::Pkcs12),
            "java_keystore" => serde_json::from_value(v).map(Target::JavaKeystore),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown target kind {:?}; expected pem, pkcs12 or java_keystore",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
        .map_err(|e| D::Error::custom(format!("target ({kind}): {e}")))
    }
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
    /// The one file of a PKCS#12 or Java keystore target.
    Keystore,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cert => "cert",
            Role::Key => "key",
            Role::Chain => "chain",
            Role::Fullchain => "fullchain",
            Role::Keystore => "keystore",
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
        self.target.check()?;
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
        let issuer = self.issuer()?;
        match (&issuer, &self.challenge) {
            (Issuer::Builtin, Some(_)) => {
                return Err(refuse(
                    "challenge",
                    "a challenge for the built-in CA",
                    "no challenge unless issuer is acme:NAME",
                ));
            }
            (Issuer::Acme(_), None) => {
                return Err(refuse(
                    "challenge",
                    "none",
                    "{\"webroot\": \"/DIR\"} or {\"listener\": PORT} for an ACME issuer",
                ));
            }
            (_, Some(ChallengeSpec::Webroot(dir))) => check_path("challenge.webroot", dir)?,
            (_, Some(ChallengeSpec::Listener(0))) => {
                return Err(refuse("challenge.listener", 0, "1 to 65535"));
            }
            _ => {}
        }
        bounded(
            "reload.timeout_secs",
            self.reload.timeout_secs,
            MAX_RELOAD_SECS,
        )?;
        if let Some(ssh) = &self.ssh {
            ssh.check()?;
            // The http-01 challenge is served on the agent's own host,
            // which is not the remote target's.
            if self.challenge.is_some() {
                return Err(refuse(
                    "challenge",
                    "an ACME challenge for a remote (ssh) target",
                    "no challenge: remote targets take the built-in CA",
                ));
            }
        }
        let Some(verify) = &self.verify else {
            if let Target::Pem(_) = self.target {
                return Err(refuse(
                    "verify",
                    "none",
                    "the endpoint that serves the PEM set (address, port)",
                ));
            }
            return Ok(());
        };
        bounded("verify.timeout_secs", verify.timeout_secs, MAX_VERIFY_SECS)?;
        if verify.port == 0 {
            return Err(refuse("verify.port", 0, "1 to 65535"));
        }
        if let Some(s) = &verify.sni
            && !is_dns_name(s)
        {
            return Err(refuse("verify.sni", format!("{s:?}"), "a DNS name"));
        }
        Ok(())
    }

    /// The issuer named, `Builtin` when absent. Refused when neither
    /// `builtin` nor `acme:` and a valid name.
    pub fn issuer(&self) -> Result<Issuer, SpecError> {
        match self.issuer.as_deref() {
            None | Some("builtin") => Ok(Issuer::Builtin),
            Some(other) => match other.strip_prefix("acme:") {
                Some(name) if issuer_name_is_valid(name) => Ok(Issuer::Acme(name.to_owned())),
                _ => Err(refuse(
                    "issuer",
                    format!("{other:?}"),
                    "builtin or acme:NAME (NAME: 1 to 63 of a-z, 0-9, '-', not starting with '-')",
                )),
            },
        }
    }

    pub fn reload_timeout(&self) -> Duration {
        Duration::from_secs(self.reload.timeout_secs.unwrap_or(DEFAULT_RELOAD_SECS))
    }

    pub fn verify_timeout(&self) -> Duration {
        Duration::from_secs(
            self.verify
                .as_ref()
                .and_then(|v| v.timeout_secs)
                .unwrap_or(DEFAULT_VERIFY_SECS),
        )
    }

    /// The SNI the verification sends.
    pub fn sni(&self) -> Option<String> {
        let verify = self.verify.as_ref()?;
        verify.sni.clone().or_else(|| {
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
        private_mode("target.key_mode", self.key_mode.as_deref())
    }
}

/// A file that holds a private key: default 0600, never world-readable.
fn private_mode(field: &str, text: Option<&str>) -> Result<u32, SpecError> {
    let m = mode(field, text, 0o600)?;
    if m & 0o007 != 0 {
        return Err(refuse(
            field,
            format!("{m:04o}"),
            "a mode others cannot read or write (e.g. 0600 or 0640)",
        ));
    }
    Ok(m)
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
    fn issuer_and_challenge_are_optional_and_checked() {
        // A spec written before ACME (no issuer, no challenge) is the
        // built-in CA's (invariant 6).
        let old = DeploySpec::from_json(&good()).expect("an old spec parses");
        assert_eq!(old.issuer(), Ok(Issuer::Builtin));
        let mut b = good();
        b["issuer"] = json!("builtin");
        assert_eq!(
            DeploySpec::from_json(&b).expect("builtin").issuer(),
            Ok(Issuer::Builtin)
        );
        let mut web = good();
        web["issuer"] = json!("acme:pebble");
        web["challenge"] = json!({"webroot": "/var/www/html"});
        let s = DeploySpec::from_json(&web).expect("acme with a webroot");
        assert_eq!(s.issuer(), Ok(Issuer::Acme("pebble".into())));
        assert_eq!(
            s.challenge,
            Some(ChallengeSpec::Webroot("/var/www/html".into()))
        );
        // It round-trips through the task's JSON.
        let again = DeploySpec::from_json(&serde_json::to_value(&s).expect("json"));
        assert_eq!(again, Ok(s));
        let mut lis = good();
        lis["issuer"] = json!("acme:le-staging");
        lis["challenge"] = json!({"listener": 8080});
        assert_eq!(
            DeploySpec::from_json(&lis).expect("listener").challenge,
            Some(ChallengeSpec::Listener(8080))
        );
    }

    #[test]
    fn hostile_issuers_and_challenges_name_their_field() {
        let acme = |v: &mut Value| {
            v["issuer"] = json!("acme:pebble");
            v["challenge"] = json!({"listener": 80});
        };
        for bad in [
            "acme:",
            "acme:Pebble",
            "acme:-x",
            "acme:a b",
            "acme:\u{1b}[31m",
            "letsencrypt",
            "acme:pebble/../x",
        ] {
            let e = refused(|v| {
                acme(v);
                v["issuer"] = json!(bad);
            });
            assert_eq!(e.field, "issuer", "{bad:?}");
        }
        let long = format!("acme:{}", "a".repeat(MAX_ISSUER_NAME + 1));
        assert_eq!(
            refused(|v| {
                acme(v);
                v["issuer"] = json!(long);
            })
            .field,
            "issuer"
        );
        assert_eq!(
            refused(|v| v["issuer"] = json!(7)).field,
            "spec",
            "not a string"
        );
        // An ACME issuer needs a challenge; the built-in CA takes none.
        assert_eq!(
            refused(|v| v["issuer"] = json!("acme:pebble")).field,
            "challenge"
        );
        assert_eq!(
            refused(|v| v["challenge"] = json!({"listener": 80})).field,
            "challenge"
        );
        for (challenge, field) in [
            (json!({"listener": 0}), "challenge.listener"),
            (json!({"listener": 70000}), "spec"),
            (json!({"webroot": "rel/dir"}), "challenge.webroot"),
            (json!({"webroot": "/var/../etc"}), "challenge.webroot"),
            (json!({"dns": "x"}), "spec"),
            (json!({"webroot": "/a", "listener": 80}), "spec"),
            (json!("webroot"), "spec"),
        ] {
            let e = refused(|v| {
                acme(v);
                v["challenge"] = challenge.clone();
            });
            assert_eq!(e.field, field, "{challenge}");
        }
    }

    // A real key and its fingerprint as `ssh-keygen -lf` printed it.
    const HOST_FP: &str = "SHA256:RSdxYYQxUUs0U1rT61W0GMX00XiKmJOZdpmdmWB4jfg";
    const HOST_LINE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAP9D3wNnZ/kzWxiCgzkAqFzrWXk2j+KzGZKwtJufS2Y tether@lab";

    fn remote() -> Value {
        let mut v = good();
        v["ssh"] = json!({
            "host": "10.0.0.5",
            "user": "deploy",
            "key": "file:/etc/tether/id_ed25519",
            "host_key": HOST_FP,
        });
        v
    }

    fn remote_refused(mutate: impl FnOnce(&mut Value)) -> SpecError {
        let mut v = remote();
        mutate(&mut v);
        DeploySpec::from_json(&v).expect_err("refused")
    }

    #[test]
    fn an_ssh_section_is_optional_and_round_trips() {
        // A spec written before remote targets is a local one.
        assert_eq!(DeploySpec::from_json(&good()).expect("old").ssh, None);
        let s = DeploySpec::from_json(&remote()).expect("remote");
        let ssh = s.ssh.as_ref().expect("ssh");
        assert_eq!(ssh.port(), 22);
        assert!(!ssh.sudo);
        assert_eq!(ssh.pinned_fingerprint().as_deref(), Ok(HOST_FP));
        assert_eq!(ssh.display(), "deploy@10.0.0.5:22");
        let again = serde_json::to_value(&s).expect("ser");
        assert!(again["ssh"].get("sudo").is_none(), "{again}");
        assert_eq!(DeploySpec::from_json(&again), Ok(s));
        // Password, sudo, a DNS name, a port, and the key line as the pin.
        let mut v = remote();
        v["ssh"] = json!({
            "host": "web-1.example.net", "port": 2222, "user": "ops",
            "password": "env:SSH_PASS", "host_key": HOST_LINE, "sudo": true,
            "timeout_secs": 30,
        });
        let s = DeploySpec::from_json(&v).expect("password");
        let ssh = s.ssh.as_ref().expect("ssh");
        assert!(ssh.sudo && ssh.port() == 2222);
        // Both forms of the pin name the same key.
        assert_eq!(ssh.pinned_fingerprint().as_deref(), Ok(HOST_FP));
    }

    #[test]
    fn hostile_ssh_sections_name_their_field() {
        for (mutate, field) in [
            (
                (|v: &mut Value| v["ssh"]["host"] = json!("a b")) as fn(&mut Value),
                "ssh.host",
            ),
            (|v| v["ssh"]["host"] = json!("-oProxyCommand=x"), "ssh.host"),
            (|v| v["ssh"]["host"] = json!("*.example.com"), "ssh.host"),
            (|v| v["ssh"]["port"] = json!(0), "ssh.port"),
            (|v| v["ssh"]["port"] = json!(70000), "spec"),
            (|v| v["ssh"]["user"] = json!(""), "ssh.user"),
            (|v| v["ssh"]["user"] = json!("-oX"), "ssh.user"),
            (|v| v["ssh"]["user"] = json!("root;id"), "ssh.user"),
            (|v| v["ssh"]["user"] = json!("a".repeat(33)), "ssh.user"),
            (
                |v| v["ssh"]["key"] = json!("-----BEGIN OPENSSH PRIVATE KEY-----"),
                "ssh.key",
            ),
            (|v| v["ssh"]["password"] = json!("env:P"), "ssh.password"),
            (
                |v| {
                    v["ssh"].as_object_mut().expect("o").remove("key");
                },
                "ssh.key",
            ),
            (
                |v| {
                    v["ssh"].as_object_mut().expect("o").remove("host_key");
                },
                "spec",
            ),
            (|v| v["ssh"]["host_key"] = json!(""), "ssh.host_key"),
            (
                |v| v["ssh"]["host_key"] = json!("SHA256:short"),
                "ssh.host_key",
            ),
            (
                |v| v["ssh"]["host_key"] = json!("MD5:aa:bb"),
                "ssh.host_key",
            ),
            (
                |v| v["ssh"]["host_key"] = json!("ssh-ed25519 notbase64!"),
                "ssh.host_key",
            ),
            (
                |v| v["ssh"]["host_key"] = json!("ssh-ed25519 AAAA\nssh-rsa AAAA"),
                "ssh.host_key",
            ),
            (
                |v| v["ssh"]["passphrase"] = json!("hunter2"),
                "ssh.passphrase",
            ),
            (|v| v["ssh"]["timeout_secs"] = json!(0), "ssh.timeout_secs"),
            (
                |v| v["ssh"]["timeout_secs"] = json!(1000),
                "ssh.timeout_secs",
            ),
            (|v| v["ssh"]["sudo"] = json!("yes"), "spec"),
            (|v| v["ssh"]["surprise"] = json!(1), "spec"),
            (|v| v["ssh"] = json!("root@host"), "spec"),
            (
                |v| {
                    v["issuer"] = json!("acme:pebble");
                    v["challenge"] = json!({"webroot": "/var/www"});
                },
                "challenge",
            ),
        ] {
            let e = remote_refused(mutate);
            assert_eq!(e.field, field, "{e}");
        }
        // A password or key pasted where its reference goes is never
        // echoed back.
        let e = remote_refused(|v| {
            v["ssh"]["key"] = json!("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaA")
        });
        assert!(!e.to_string().contains("b3BlbnNzaA"), "{e}");
        let e = remote_refused(|v| {
            v["ssh"].as_object_mut().expect("o").remove("key");
            v["ssh"]["password"] = json!("hunter2-S3cret");
        });
        assert_eq!(e.field, "ssh.password");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    proptest::proptest! {
        /// Any text in the ssh section's fields: a spec or a refusal naming
        /// a field, never a panic.
        #[test]
        fn any_ssh_section_is_read_or_refused(
            host in ".{0,40}",
            user in ".{0,40}",
            host_key in proptest::prop_oneof![
                proptest::strategy::Just(HOST_FP.to_owned()),
                proptest::strategy::Just(HOST_LINE.to_owned()),
                "SHA256:[A-Za-z0-9+/]{0,50}",
                "ssh-[a-z0-9]{0,10} [A-Za-z0-9+/=]{0,80}",
                ".{0,60}",
            ],
            port in proptest::option::of(0u16..),
        ) {
            let mut v = remote();
            v["ssh"]["host"] = json!(host);
            v["ssh"]["user"] = json!(user);
            v["ssh"]["host_key"] = json!(host_key);
            if let Some(p) = port { v["ssh"]["port"] = json!(p); }
            match DeploySpec::from_json(&v) {
                Ok(s) => {
                    let ssh = s.ssh.clone().expect("ssh");
                    proptest::prop_assert!(ssh.pinned_fingerprint().is_ok());
                    proptest::prop_assert!(!ssh.user.starts_with('-') && !ssh.host.starts_with('-'));
                    proptest::prop_assert_eq!(DeploySpec::from_json(&serde_json::to_value(&s).expect("ser")), Ok(s.clone()));
                }
                Err(e) => proptest::prop_assert!(!e.field.is_empty()),
            }
        }
    }

    #[test]
    fn issuer_names() {
        assert!(issuer_name_is_valid("pebble"));
        assert!(issuer_name_is_valid("le-staging-2"));
        for bad in ["", "-a", "A", "a_b", "a.b", "é"] {
            assert!(!issuer_name_is_valid(bad), "{bad:?}");
        }
        assert!(issuer_name_is_valid(&"a".repeat(MAX_ISSUER_NAME)));
        assert!(!issuer_name_is_valid(&"a".repeat(MAX_ISSUER_NAME + 1)));
    }

    #[test]
    fn a_good_spec_reads_with_defaults() {
        let s = DeploySpec::from_json(&good()).expect("good");
        assert_eq!(s.target.mode_of(Role::Cert), Ok(0o644));
        assert_eq!(s.target.mode_of(Role::Key), Ok(0o600));
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

    fn keystore(kind: &str) -> Value {
        json!({
            "names": ["app.test"],
            "target": {"kind": kind, "path": "/etc/app/keystore.p12", "password": "env:APP_STORE_PASS", "alias": "app"},
            "reload": {"command": ["systemctl", "restart", "app"]}
        })
    }

    fn keystore_refused(kind: &str, mutate: impl FnOnce(&mut Value)) -> SpecError {
        let mut v = keystore(kind);
        mutate(&mut v);
        DeploySpec::from_json(&v).expect_err("refused")
    }

    #[test]
    fn keystore_targets_read_with_defaults_and_round_trip() {
        let s = DeploySpec::from_json(&keystore("pkcs12")).expect("pkcs12");
        let Target::Pkcs12(k) = &s.target else {
            panic!("not pkcs12: {:?}", s.target)
        };
        assert_eq!(k.alias(), "app");
        assert_eq!(s.target.mode_of(Role::Keystore), Ok(0o600));
        assert_eq!(
            s.target.files(),
            vec![(Role::Keystore, PathBuf::from("/etc/app/keystore.p12"))]
        );
        assert_eq!(s.verify, None);
        assert_eq!(s.sni(), None);
        let again = serde_json::to_value(&s).expect("serialize");
        assert_eq!(again["target"]["kind"], "pkcs12");
        assert_eq!(DeploySpec::from_json(&again), Ok(s));

        let mut v = keystore("java_keystore");
        v["target"]["store_type"] = json!("PKCS12");
        let s = DeploySpec::from_json(&v).expect("java keystore");
        assert!(matches!(s.target, Target::JavaKeystore(_)));
        assert_eq!(
            DeploySpec::from_json(&serde_json::to_value(&s).expect("ser")),
            Ok(s)
        );

        // A PEM set is still written without `kind`, as before keystores.
        let pem = DeploySpec::from_json(&good()).expect("pem");
        let v = serde_json::to_value(&pem).expect("ser");
        assert!(v["target"].get("kind").is_none());
        let mut with_kind = good();
        with_kind["target"]["kind"] = json!("pem");
        assert_eq!(DeploySpec::from_json(&with_kind), Ok(pem));
    }

    #[test]
    fn hostile_keystore_specs_name_their_field() {
        let jceks = keystore_refused("java_keystore", |v| {
            v["target"]["store_type"] = json!("JCEKS")
        });
        assert_eq!(jceks.field, "target.store_type");
        assert!(
            jceks.expected.contains("PKCS12") && jceks.expected.contains("JKS"),
            "{jceks}"
        );
        assert_eq!(
            keystore_refused("java_keystore", |v| v["target"]["store_type"] =
                json!("BKS"))
            .field,
            "target.store_type"
        );
        assert_eq!(
            keystore_refused("pkcs12", |v| v["target"]["store_type"] = json!("PKCS12")).field,
            "target.store_type"
        );
        // A password pasted where its reference goes is refused and never
        // echoed back.
        let pasted = keystore_refused("pkcs12", |v| {
            v["target"]["password"] = json!("hunter2-S3cret")
        });
        assert_eq!(pasted.field, "target.password");
        assert!(!pasted.to_string().contains("hunter2"), "{pasted}");
        for bad in [
            "env:",
            "env:A B",
            "env:$(id)",
            "file:relative/p",
            "file:/a/../etc/shadow",
            "file:",
            "vault:x",
        ] {
            assert_eq!(
                keystore_refused("pkcs12", |v| v["target"]["password"] = json!(bad)).field,
                "target.password",
                "{bad}"
            );
        }
        assert_eq!(
            keystore_refused("pkcs12", |v| v["target"]["password"] = json!(7)).field,
            "spec"
        );
        for bad in ["", "a b", "x/../y", "\u{1b}[31m", &"a".repeat(65)] {
            assert_eq!(
                keystore_refused("pkcs12", |v| v["target"]["alias"] = json!(bad)).field,
                "target.alias",
                "{bad:?}"
            );
        }
        assert_eq!(
            keystore_refused("pkcs12", |v| v["target"]["mode"] = json!("0644")).field,
            "target.mode"
        );
        assert_eq!(
            keystore_refused("pkcs12", |v| v["target"]["path"] = json!("ks.p12")).field,
            "target.keystore"
        );
        assert_eq!(
            keystore_refused("pkcs12", |v| v["target"]["owner"] = json!("a;b")).field,
            "target.owner"
        );
        // Fields of another kind, unknown kinds and a kind that is not a
        // string are refused, not ignored.
        for mutate in [
            (|v: &mut Value| v["target"]["cert"] = json!("/etc/c.pem")) as fn(&mut Value),
            |v| v["target"]["kind"] = json!("jks"),
            |v| v["target"]["kind"] = json!(1),
            |v| v["target"]["surprise"] = json!(true),
            |v| {
                v["target"]
                    .as_object_mut()
                    .expect("object")
                    .remove("password");
            },
        ] {
            assert_eq!(keystore_refused("pkcs12", mutate).field, "spec");
        }
        // A PEM set needs its verify endpoint; a keystore's is optional.
        let mut v = good();
        v.as_object_mut().expect("object").remove("verify");
        assert_eq!(
            DeploySpec::from_json(&v).expect_err("refused").field,
            "verify"
        );
        let mut v = keystore("pkcs12");
        v["verify"] = json!({"address": "127.0.0.1", "port": 0});
        assert_eq!(
            DeploySpec::from_json(&v).expect_err("refused").field,
            "verify.port"
        );
    }

    #[test]
    fn secret_references_resolve_on_the_host_and_never_echo_the_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pass");
        std::fs::write(&file, "s3cret-value\n").expect("write");
        let r = SecretRef(format!("file:{}", file.display()));
        let s = r.resolve().expect("resolves");
        assert_eq!(s.expose(), "s3cret-value");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");

        std::fs::write(&file, "").expect("write");
        assert!(r.resolve().expect_err("empty").contains("empty"));
        std::fs::write(&file, "two\nlines\n").expect("write");
        let e = r.resolve().expect_err("two lines");
        assert!(!e.contains("two") && !e.contains("lines"), "{e}");
        std::fs::write(&file, vec![b'x'; MAX_SECRET + 10]).expect("write");
        assert!(r.resolve().is_err());
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        assert!(r.resolve().is_err());

        let missing = SecretRef(format!("file:{}", dir.path().join("nope").display()));
        assert!(missing.resolve().expect_err("missing").contains("nope"));
        let unset = SecretRef("env:TETHER_TEST_NO_SUCH_VARIABLE_8510".into());
        assert!(
            unset
                .resolve()
                .expect_err("unset")
                .contains("TETHER_TEST_NO_SUCH_VARIABLE_8510")
        );
    }

    proptest::proptest! {
        /// Any text in a keystore target's fields, its kind or its
        /// password: a spec or a refusal naming a field, never a panic, and
        /// a refusal never repeats what was put where a reference goes.
        #[test]
        fn any_keystore_target_text_is_read_or_refused(
            kind in proptest::prop_oneof![
                proptest::strategy::Just("pkcs12".to_owned()),
                proptest::strategy::Just("java_keystore".to_owned()),
                proptest::strategy::Just("pem".to_owned()),
                ".{0,12}",
            ],
            path in ".{0,40}",
            password in "[a-z]{0,5}:?.{0,30}",
            alias in proptest::option::of(".{0,70}"),
            store_type in proptest::option::of(".{0,8}"),
            mode in proptest::option::of("[0-9]{0,5}"),
        ) {
            let mut target = json!({"kind": kind, "path": path, "password": password});
            if let Some(a) = alias { target["alias"] = json!(a); }
            if let Some(t) = store_type { target["store_type"] = json!(t); }
            if let Some(m) = mode { target["mode"] = json!(m); }
            let v = json!({"names": ["app.test"], "target": target, "reload": {"command": ["true"]}});
            match DeploySpec::from_json(&v) {
                Ok(s) => {
                    let k = s.target.keystore().expect("a keystore target");
                    proptest::prop_assert!(k.password.check("p").is_ok());
                    proptest::prop_assert!(k.path.is_absolute());
                    proptest::prop_assert_eq!(DeploySpec::from_json(&serde_json::to_value(&s).expect("ser")), Ok(s.clone()));
                }
                Err(e) => {
                    proptest::prop_assert!(!e.field.is_empty());
                    if e.field == "target.password" && !password.starts_with("env:") && !password.starts_with("file:") {
                        proptest::prop_assert!(password.len() < 4 || !e.to_string().contains(&password), "{}", e);
                    }
                }
            }
        }
    }
}
