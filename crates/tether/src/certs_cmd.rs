//! `tether certs …`: the discovery inventory from the admin CLI, deploys
//! from the built-in CA (`deploy`, `history`) and the CA's ceremony
//! (`ca init`, `ca root-offline`, docs/pki.md). Every text a certificate or
//! a deploy report carries came from a host through an agent, so it is
//! printed through [`crate::display::safe`].

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tether_wire::{CertDetail, CertFacts, CertHistory, CertInfo, LocationState};
use time::format_description::well_known::Rfc3339;

use crate::admin::client;
use crate::cli::AdminConn;
use crate::display::{safe, safe_cut};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Every certificate discovery found, deduplicated by fingerprint.
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Only certificates whose validity ends within this many days
        /// (expired ones included), e.g. 30d.
        #[arg(long)]
        expiring: Option<String>,
        /// Only certificates with this verdict (expired, not_yet_valid,
        /// self_signed, unknown_issuer, incomplete_chain, name_mismatch,
        /// weak_key, weak_signature, unparsable, unverifiable).
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One certificate: its facts, chain and every location it was seen at.
    Show {
        #[command(flatten)]
        conn: AdminConn,
        /// `sha256:<hex>` as `certs list` shows it.
        fingerprint: String,
        #[arg(long)]
        json: bool,
    },
    /// Queue a deploy: the agent makes a key and CSR on its host, the
    /// built-in CA signs it, and the agent writes the PEM set, reloads and
    /// verifies (rolling back on any failure).
    Deploy(Box<DeployArgs>),
    /// One certificate's history: issuance, deploys (with each step) and
    /// where it is seen.
    History {
        #[command(flatten)]
        conn: AdminConn,
        /// `sha256:<hex>`.
        fingerprint: String,
        #[arg(long)]
        json: bool,
    },
    /// Renew a certificate now, whatever its policy says: a new key and
    /// certificate at every location it was deployed to (a failed renewal
    /// is retried at once).
    Renew {
        #[command(flatten)]
        conn: AdminConn,
        /// `sha256:<hex>`.
        fingerprint: String,
        #[arg(long)]
        json: bool,
    },
    /// Renewals, newest first: state, location K of N, and why each waits
    /// or failed (a code and a sentence).
    Renewals {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Set the renewal policy of every certificate (`--scope default`), of
    /// one certificate (`cert:sha256:…`) or of a group's locations
    /// (`group:NAME`).
    RenewalPolicy {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long, default_value = "default")]
        scope: String,
        /// Renew at this fraction of the lifetime (default 0.667).
        #[arg(long, conflicts_with = "days_before")]
        fraction: Option<f64>,
        /// Renew this many days before expiry.
        #[arg(long)]
        days_before: Option<u32>,
        /// `builtin` or `acme:NAME`.
        #[arg(long, default_value = "builtin")]
        issuer: String,
        /// Used after the issuer failed twice in a row.
        #[arg(long)]
        fallback_issuer: Option<String>,
        /// The change window of the renewal's deploys, HH:MM-HH:MM in the
        /// agent's site time zone.
        #[arg(long)]
        window: Option<String>,
        /// Hold each deploy a renewal creates until an admin approves it
        /// (`tether certs approve ID`); nothing on the host changes before.
        #[arg(long)]
        require_approval: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a deploy held for an admin's approval: its agent may run it
    /// from now on (within its window). Records who approved and when.
    Approve {
        #[command(flatten)]
        conn: AdminConn,
        /// The deploy task's id, as `tether certs deploy` printed it.
        id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Reject a deploy held for an admin's approval: it ends cancelled with
    /// the reason, and nothing on the host changes (a renewal's deploy
    /// fails the renewal with it).
    Reject {
        #[command(flatten)]
        conn: AdminConn,
        /// The deploy task's id.
        id: uuid::Uuid,
        /// Why, in one line.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate the built-in CA issued: the CRL lists it and
    /// the OCSP responder answers `revoked` (docs/pki.md). Revoking again
    /// keeps the first revocation.
    Revoke {
        #[command(flatten)]
        conn: AdminConn,
        /// `sha256:<hex>`.
        fingerprint: String,
        /// keyCompromise, superseded, cessationOfOperation,
        /// affiliationChanged, privilegeWithdrawn or unspecified.
        #[arg(long, value_parser = parse_reason)]
        reason: tether_wire::RevocationReason,
        #[arg(long)]
        json: bool,
    },
    /// The built-in CA's ceremony, on the server's host (docs/pki.md).
    #[command(subcommand)]
    Ca(CaCommand),
    /// ACME CAs the server orders from (`--issuer acme:NAME`).
    #[command(subcommand)]
    Acme(AcmeCommand),
}

/// What an approval or a rejection did, in one line.
fn approval_line(t: &tether_wire::TaskInfo<serde_json::Value>) -> String {
    let (verb, by, at) = match &t.approval {
        Some(a) => (
            a.state.as_str(),
            a.by.as_deref().unwrap_or("?"),
            a.at.and_then(|at| at.format(&Rfc3339).ok())
                .unwrap_or_default(),
        ),
        None => ("?", "?", String::new()),
    };
    format!(
        "deploy task {} {verb} by {} at {at}; it is {}: {}",
        t.id,
        safe(by),
        t.state,
        safe(
            t.waiting
                .as_deref()
                .or(t.reason.as_deref())
                .unwrap_or_default()
        )
    )
}

fn parse_reason(s: &str) -> Result<tether_wire::RevocationReason, String> {
    tether_wire::RevocationReason::parse(s).ok_or_else(|| {
        let all: Vec<&str> = tether_wire::RevocationReason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        format!(
            "{}: {s:?} is not a revocation reason; use one of {}",
            tether_wire::ErrorCode::RevokeReasonInvalid,
            all.join(", ")
        )
    })
}

/// `tether certs deploy`'s flags.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    conn: AdminConn,
    /// The provisioning agent that runs it.
    #[arg(long)]
    agent: uuid::Uuid,
    /// A name the certificate is for (DNS name or IP address); repeat.
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// The target's kind: a PEM set (default), a PKCS#12 file, or a Java
    /// keystore.
    #[arg(long, value_enum, default_value_t = TargetKind::Pem)]
    kind: TargetKind,
    /// PEM: certificate file (absolute path on the agent's host).
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    /// PEM: private key file.
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// PKCS#12 or Java keystore: the keystore file.
    #[arg(long)]
    path: Option<std::path::PathBuf>,
    /// PKCS#12 or Java keystore: the password's secret reference on the
    /// agent's host, env:NAME or file:/PATH (never the password itself).
    #[arg(long)]
    password_ref: Option<String>,
    /// PKCS#12 or Java keystore: the entry's alias (default "tether").
    #[arg(long)]
    alias: Option<String>,
    /// Java keystore: PKCS12 (default) or JKS (written by the host's own
    /// keytool; TETHER-E8540 when it has none).
    #[arg(long)]
    store_type: Option<String>,
    /// Intermediates file.
    #[arg(long)]
    chain: Option<std::path::PathBuf>,
    /// Certificate followed by the intermediates (what nginx reads).
    #[arg(long)]
    fullchain: Option<std::path::PathBuf>,
    /// Owner of the files (user name or uid).
    #[arg(long)]
    owner: Option<String>,
    /// Group of the files (group name or gid).
    #[arg(long = "file-group")]
    file_group: Option<String>,
    /// Mode of the certificate files (octal, default 0644).
    #[arg(long)]
    mode: Option<String>,
    /// Mode of the key (octal, default 0600; never world-readable).
    #[arg(long)]
    key_mode: Option<String>,
    /// The reload command, split on spaces and run without a shell,
    /// e.g. "nginx -s reload".
    #[arg(long)]
    reload: String,
    /// Seconds the reload may take (default 30).
    #[arg(long)]
    reload_timeout: Option<u64>,
    /// The endpoint that must serve the new certificate, ADDRESS:PORT.
    /// Required for a PEM set; optional for keystores.
    #[arg(long)]
    verify: Option<std::net::SocketAddr>,
    /// The SNI to send when verifying (default: the first DNS name).
    #[arg(long)]
    sni: Option<String>,
    /// Validity in days (default 90, at most 397).
    #[arg(long)]
    days: Option<u32>,
    /// Seconds the new certificate may take to appear after the reload
    /// (default 15).
    #[arg(long)]
    verify_timeout: Option<u64>,
    /// Attempts before the task is dead-lettered (default 3).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Who issues: `builtin` (the control plane's CA, the default) or
    /// `acme:NAME` (see `tether certs acme list`).
    #[arg(long)]
    issuer: Option<String>,
    /// For an ACME issuer: answer the http-01 challenge with files under
    /// this directory, the document root the web server serves the names
    /// from.
    #[arg(long, conflicts_with = "http01_port")]
    webroot: Option<std::path::PathBuf>,
    /// For an ACME issuer: answer the http-01 challenge with the agent's
    /// own listener on this port (80 in production; it must be free).
    #[arg(long)]
    http01_port: Option<u16>,
    /// A change window: the deploy starts only between these local hours,
    /// HH:MM-HH:MM in the agent's site time zone (22:00-04:00 spans
    /// midnight); outside it the task waits and says until when.
    #[arg(long)]
    window: Option<String>,
    #[command(flatten)]
    ssh: SshFlags,
    /// Hold the deploy until an admin approves it with `tether certs
    /// approve ID`: no key, file or reload on the host before that.
    #[arg(long)]
    require_approval: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AcmeCommand {
    /// Register an account with an ACME CA, from the server (which orders
    /// through it later). Its key is sealed with the server's KEK.
    Add {
        #[command(flatten)]
        conn: AdminConn,
        /// The name deploys use as `--issuer acme:NAME`.
        name: String,
        /// The CA's directory URL, e.g.
        /// https://acme-v02.api.letsencrypt.org/directory.
        #[arg(long)]
        directory: String,
        /// The account's contact address.
        #[arg(long)]
        email: Option<String>,
        /// PEM file of the CA(s) that sign the ACME API's own TLS
        /// certificate (a private ACME server); the system roots are
        /// trusted as well.
        #[arg(long)]
        acme_ca_file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The registered ACME issuers.
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Forget an ACME issuer (the account stays at the CA).
    Remove {
        #[command(flatten)]
        conn: AdminConn,
        name: String,
    },
}

/// A remote target's flags: with `--ssh HOST`, the target's paths, owner
/// and reload command are on that host, reached over SSH by the agent.
#[derive(Debug, Clone, clap::Args)]
pub struct SshFlags {
    /// Remote target: the SSH host (IP address or DNS name).
    #[arg(long = "ssh", value_name = "HOST")]
    ssh_host: Option<String>,
    /// Remote target: the SSH port (default 22).
    #[arg(long)]
    ssh_port: Option<u16>,
    /// Remote target: the user to log in as.
    #[arg(long)]
    ssh_user: Option<String>,
    /// Remote target: the private key's secret reference on the agent's
    /// host, env:NAME or file:/PATH.
    #[arg(long)]
    ssh_key_ref: Option<String>,
    /// Remote target: the key's passphrase reference, if it has one.
    #[arg(long)]
    ssh_passphrase_ref: Option<String>,
    /// Remote target: the password's secret reference, instead of a key.
    #[arg(long)]
    ssh_password_ref: Option<String>,
    /// Remote target: the host key, pinned: SHA256:… as `ssh-keygen -lf`
    /// prints it, or the OpenSSH public key line. Required with --ssh.
    #[arg(long)]
    ssh_host_key: Option<String>,
    /// Remote target: run every remote command through `sudo -n`.
    #[arg(long)]
    ssh_sudo: bool,
    /// Remote target: seconds to connect and authenticate (default 10).
    #[arg(long)]
    ssh_timeout: Option<u64>,
}

impl SshFlags {
    /// The spec's `ssh` section, `None` without `--ssh`.
    fn section(self) -> anyhow::Result<Option<tether_deploy::spec::SshSpec>> {
        let code = tether_wire::ErrorCode::DeploySpecInvalid.as_str();
        let Some(host) = self.ssh_host else {
            let stray = self.ssh_port.is_some()
                || self.ssh_user.is_some()
                || self.ssh_key_ref.is_some()
                || self.ssh_passphrase_ref.is_some()
                || self.ssh_password_ref.is_some()
                || self.ssh_host_key.is_some()
                || self.ssh_sudo
                || self.ssh_timeout.is_some();
            if stray {
                anyhow::bail!("{code}: the --ssh-* flags need --ssh HOST");
            }
            return Ok(None);
        };
        let (Some(user), Some(host_key)) = (self.ssh_user, self.ssh_host_key) else {
            anyhow::bail!(
                "{code}: --ssh needs --ssh-user and --ssh-host-key (the host key is pinned, never trusted on first use)"
            );
        };
        let secret = |r: Option<String>| r.map(tether_deploy::spec::SecretRef);
        Ok(Some(tether_deploy::spec::SshSpec {
            host,
            port: self.ssh_port,
            user,
            key: secret(self.ssh_key_ref),
            passphrase: secret(self.ssh_passphrase_ref),
            password: secret(self.ssh_password_ref),
            host_key,
            sudo: self.ssh_sudo,
            timeout_secs: self.ssh_timeout,
        }))
    }
}

/// `--kind` of `tether certs deploy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    Pem,
    Pkcs12,
    JavaKeystore,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the root and the online intermediate under DATA_DIR/ca. The
    /// intermediate's key is sealed with TETHER_CA_KEY, else with a new key
    /// file DATA_DIR/ca.kek.
    Init {
        /// The server's data dir (default ./tether-data; env TETHER_DATA_DIR).
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// Write the root's key here (removable media) and never into the
        /// data dir. Without it the root key stays online, sealed, and the
        /// server warns (TETHER-E8406) until `ca root-offline`.
        #[arg(long)]
        root_key_out: Option<std::path::PathBuf>,
        /// The CA's display name.
        #[arg(long, default_value = "Tether")]
        name: String,
    },
    /// Sign the root's CRL with the offline root key (during the ceremony,
    /// with the media mounted), optionally revoking the intermediate.
    RootCrl {
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// The root's key (PEM), from the offline media.
        #[arg(long)]
        root_key: std::path::PathBuf,
        /// Where to write the DER CRL (publish it over HTTP).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Days until its nextUpdate.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// List the intermediate as revoked, with this reason.
        #[arg(long, value_parser = parse_reason)]
        revoke_intermediate: Option<tether_wire::RevocationReason>,
    },
    /// Move an online root key out of the data dir to PATH.
    RootOffline {
        #[arg(long, env = "TETHER_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// The target flags of `tether certs deploy`, before their kind picks.
struct TargetFlags {
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    chain: Option<std::path::PathBuf>,
    fullchain: Option<std::path::PathBuf>,
    path: Option<std::path::PathBuf>,
    password_ref: Option<String>,
    alias: Option<String>,
    store_type: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<String>,
    key_mode: Option<String>,
}

/// The target from the flags; a flag of another kind is refused rather
/// than ignored.
fn deploy_target(kind: TargetKind, f: TargetFlags) -> anyhow::Result<tether_deploy::Target> {
    let code = tether_wire::ErrorCode::DeploySpecInvalid.as_str();
    let misplaced = |flags: &[(&str, bool)]| -> anyhow::Result<()> {
        match flags.iter().find(|(_, set)| *set) {
            Some((name, _)) => anyhow::bail!("{code}: {name} does not apply to --kind {kind:?}"),
            None => Ok(()),
        }
    };
    match kind {
        TargetKind::Pem => {
            misplaced(&[
                ("--path", f.path.is_some()),
                ("--password-ref", f.password_ref.is_some()),
                ("--alias", f.alias.is_some()),
                ("--store-type", f.store_type.is_some()),
            ])?;
            let (Some(cert), Some(key)) = (f.cert, f.key) else {
                anyhow::bail!("{code}: a PEM target needs --cert and --key");
            };
            Ok(tether_deploy::Target::Pem(tether_deploy::spec::PemTarget {
                cert,
                key,
                chain: f.chain,
                fullchain: f.fullchain,
                owner: f.owner,
                group: f.group,
                mode: f.mode,
                key_mode: f.key_mode,
            }))
        }
        TargetKind::Pkcs12 | TargetKind::JavaKeystore => {
            misplaced(&[
                ("--cert", f.cert.is_some()),
                ("--key", f.key.is_some()),
                ("--chain", f.chain.is_some()),
                ("--fullchain", f.fullchain.is_some()),
                ("--key-mode", f.key_mode.is_some()),
                (
                    "--store-type",
                    kind == TargetKind::Pkcs12 && f.store_type.is_some(),
                ),
            ])?;
            let (Some(path), Some(password)) = (f.path, f.password_ref) else {
                anyhow::bail!("{code}: a keystore target needs --path and --password-ref");
            };
            let k = tether_deploy::spec::KeystoreTarget {
                path,
                password: tether_deploy::spec::SecretRef(password),
                alias: f.alias,
                store_type: f.store_type,
                owner: f.owner,
                group: f.group,
                mode: f.mode,
            };
            Ok(if kind == TargetKind::Pkcs12 {
                tether_deploy::Target::Pkcs12(k)
            } else {
                tether_deploy::Target::JavaKeystore(k)
            })
        }
    }
}

/// `--webroot` or `--http01-port` as the spec's challenge.
fn challenge(
    webroot: Option<std::path::PathBuf>,
    port: Option<u16>,
) -> Option<tether_deploy::spec::ChallengeSpec> {
    match (webroot, port) {
        (Some(dir), _) => Some(tether_deploy::spec::ChallengeSpec::Webroot(dir)),
        (None, Some(p)) => Some(tether_deploy::spec::ChallengeSpec::Listener(p)),
        (None, None) => None,
    }
}

/// A deploy's spec, as the server and the agent read it.
#[allow(clippy::too_many_arguments)]
fn deploy_spec(
    names: Vec<String>,
    target: tether_deploy::Target,
    reload: &str,
    (reload_timeout, verify_timeout): (Option<u64>, Option<u64>),
    verify: Option<std::net::SocketAddr>,
    sni: Option<String>,
    days: Option<u32>,
    (issuer, challenge): (Option<String>, Option<tether_deploy::spec::ChallengeSpec>),
    ssh: Option<tether_deploy::spec::SshSpec>,
) -> anyhow::Result<serde_json::Value> {
    let spec = tether_deploy::DeploySpec {
        names,
        days,
        target,
        reload: tether_deploy::spec::ReloadSpec {
            command: reload.split_whitespace().map(str::to_owned).collect(),
            timeout_secs: reload_timeout,
        },
        verify: verify.map(|v| tether_deploy::spec::VerifySpec {
            address: v.ip(),
            port: v.port(),
            sni,
            timeout_secs: verify_timeout,
        }),
        issuer,
        challenge,
        ssh,
    };
    spec.check().map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}",
            tether_wire::ErrorCode::DeploySpecInvalid.as_str()
        )
    })?;
    Ok(serde_json::to_value(&spec)?)
}

/// The history, for a terminal.
/// The renewals table: one line per renewal, then its reason.
pub fn renewals(list: &[tether_wire::RenewalInfo]) -> String {
    if list.is_empty() {
        return "no renewals\n".to_owned();
    }
    let mut out = String::new();
    for r in list {
        out.push_str(&renewal_line(r));
    }
    out
}

fn renewal_line(r: &tether_wire::RenewalInfo) -> String {
    let place = match r.state {
        tether_wire::RenewalState::Deploying => {
            format!(" (location {} of {})", r.done + 1, r.locations)
        }
        _ if r.locations > 0 => format!(" ({} of {} deployed)", r.done, r.locations),
        _ => String::new(),
    };
    let mut out = format!(
        "{} {} {}{} attempt {} issuer {}{}\n      {}{}\n",
        r.id,
        safe(&r.fingerprint),
        r.state,
        place,
        r.attempt,
        safe(&r.issuer),
        r.new_fingerprint
            .as_deref()
            .map(|f| format!(" -> {}", safe(f)))
            .unwrap_or_default(),
        r.reason_code
            .as_deref()
            .map(|c| format!("{}: ", safe(c)))
            .unwrap_or_default(),
        safe_cut(&r.reason, 400)
    );
    if let Some(at) = r.next_attempt_at
        && r.state == tether_wire::RenewalState::Failed
    {
        out.push_str(&format!("      next attempt {}\n", when(at)));
    }
    out
}

pub fn history(h: &CertHistory) -> String {
    let mut out = format!("Certificate {}\n", safe(&h.fingerprint));
    match &h.issued {
        Some(i) => out.push_str(&format!(
            "  Issued:    {} by {}, serial {}, for {}, valid until {}{}\n",
            when(i.issued_at),
            match &i.issuer {
                Some(acme) => safe(acme),
                None => "the built-in CA".to_owned(),
            },
            safe(&i.serial),
            safe(&i.names.join(", ")),
            day(i.not_after),
            i.renewal_window
                .map(|w| format!(
                    "; the CA suggests renewing between {} and {}",
                    when(w.start),
                    when(w.end)
                ))
                .unwrap_or_default()
        )),
        None => out.push_str("  Issued:    not through this control plane (or not recorded)\n"),
    }
    if h.deployments.is_empty() {
        out.push_str("  Deploys:   none\n");
    }
    for d in &h.deployments {
        let r = &d.report;
        let role = if r.new_fingerprint == h.fingerprint {
            "to"
        } else {
            "replacing it at"
        };
        out.push_str(&format!(
            "  {} {} {} {} ({}) by agent {} in task {}{}\n",
            when(d.at),
            safe(&r.state),
            role,
            safe(&r.path),
            safe(&r.address),
            d.agent_id,
            d.task_id,
            if r.recovered { ", after a restart" } else { "" }
        ));
        if let Some(f) = &r.failure {
            out.push_str(&format!(
                "      {}: {}\n",
                safe(&f.code),
                safe_cut(&f.message, 300)
            ));
        }
        for s in &r.steps {
            out.push_str(&format!(
                "      {:<16} {:<4} {:>6} ms  {}\n",
                safe(&s.name),
                if s.ok { "ok" } else { "FAIL" },
                s.duration_ms,
                safe_cut(s.detail.lines().next().unwrap_or(""), 120)
            ));
        }
    }
    for r in &h.renewals {
        out.push_str(&format!("  Renewal:   {}", renewal_line(r)));
    }
    for l in &h.seen_at {
        out.push_str(&format!(
            "  Seen at:   {} sni={} agent {} ({:?}, last {})\n",
            safe(&l.address),
            safe(l.sni.as_deref().unwrap_or("-")),
            l.agent_id,
            l.state,
            when(l.last_seen)
        ));
    }
    out
}

fn data_dir(d: Option<std::path::PathBuf>) -> std::path::PathBuf {
    d.unwrap_or_else(|| std::path::PathBuf::from("tether-data"))
}

fn day(t: time::OffsetDateTime) -> String {
    t.date().to_string()
}

fn when(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

fn verdicts(v: &[String]) -> String {
    if v.is_empty() {
        "ok".to_owned()
    } else {
        safe(&v.join(","))
    }
}

/// The one-line table of certificates.
pub fn table(certs: &[CertInfo]) -> String {
    let mut out = format!(
        "{:<71}  {:<10}  {:<5}  {:<24}  {}\n",
        "FINGERPRINT", "NOT AFTER", "SEEN", "VERDICTS", "SUBJECT"
    );
    for c in certs {
        out.push_str(&format!(
            "{:<71}  {:<10}  {:<5}  {:<24}  {}\n",
            safe(&c.fingerprint),
            day(c.cert.not_after),
            c.locations,
            verdicts(&c.verdicts),
            safe_cut(&c.cert.subject, 80)
        ));
    }
    out
}

fn facts(out: &mut String, indent: &str, c: &CertFacts) {
    out.push_str(&format!("{indent}subject:    {}\n", safe(&c.subject)));
    out.push_str(&format!("{indent}issuer:     {}\n", safe(&c.issuer)));
    out.push_str(&format!("{indent}serial:     {}\n", safe(&c.serial)));
    out.push_str(&format!(
        "{indent}validity:   {} to {}\n",
        when(c.not_before),
        when(c.not_after)
    ));
    out.push_str(&format!(
        "{indent}key:        {} {} bits, signed {}\n",
        safe(&c.key_type),
        c.key_bits,
        safe(&c.signature_algorithm)
    ));
    out.push_str(&format!("{indent}fingerprint: {}\n", safe(&c.fingerprint)));
}

/// The detail of one certificate.
pub fn detail(d: &CertDetail) -> String {
    let c = &d.info;
    let mut out = String::new();
    facts(&mut out, "", &c.cert);
    let sans: Vec<String> = c.cert.sans.iter().map(|s| safe(s)).collect();
    out.push_str(&format!(
        "names:      {}{}\n",
        sans.join(", "),
        if c.cert.sans_total > c.cert.sans.len() {
            format!(" (and {} more)", c.cert.sans_total - c.cert.sans.len())
        } else {
            String::new()
        }
    ));
    for u in &c.cert.aia_urls {
        out.push_str(&format!("aia:        {}\n", safe(u)));
    }
    for u in &c.cert.cdp_urls {
        out.push_str(&format!("cdp:        {}\n", safe(u)));
    }
    out.push_str(&format!("verdicts:   {}\n", verdicts(&c.verdicts)));
    out.push_str(&format!(
        "seen:       first {}, last {}\n",
        when(c.first_seen),
        when(c.last_seen)
    ));
    if d.chain.len() > 1 {
        out.push_str(&format!("chain ({} certificates):\n", d.chain.len()));
        for (i, cert) in d.chain.iter().enumerate().skip(1) {
            out.push_str(&format!("  [{i}]\n"));
            facts(&mut out, "    ", cert);
        }
    }
    out.push_str(&format!(
        "locations ({}{}):\n",
        c.locations,
        if (d.seen_at.len() as u64) < c.locations {
            format!(", the newest {} shown", d.seen_at.len())
        } else {
            String::new()
        }
    ));
    for l in &d.seen_at {
        let state = match l.state {
            LocationState::Current => "current".to_owned(),
            LocationState::Changed => format!(
                "CHANGED{} to {}",
                l.state_since
                    .map(|t| format!(" at {}", when(t)))
                    .unwrap_or_default(),
                safe(l.replaced_by.as_deref().unwrap_or("?"))
            ),
            LocationState::Gone => format!(
                "GONE (no TLS{})",
                l.state_since
                    .map(|t| format!(" at {}", when(t)))
                    .unwrap_or_default()
            ),
        };
        out.push_str(&format!(
            "  {} sni={} agent={} first {} last {} {}{}\n",
            safe(&l.address),
            safe(l.sni.as_deref().unwrap_or("-")),
            l.agent_id,
            when(l.first_seen),
            when(l.last_seen),
            state,
            l.previous
                .as_deref()
                .map(|p| format!(" (was {})", safe(p)))
                .unwrap_or_default()
        ));
    }
    out
}

/// `a=b` query text, each value percent-encoded.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.map(|v| {
                let enc: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                format!("{k}={enc}")
            })
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub async fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::List {
            conn,
            expiring,
            verdict,
            json,
        } => {
            let q = query(&[
                ("expiring", expiring.as_deref()),
                ("verdict", verdict.as_deref()),
            ]);
            let certs = client(&conn)?.list_certs(&q).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                print!("{}", table(&certs));
            }
        }
        CertsCommand::Show {
            conn,
            fingerprint,
            json,
        } => {
            let d = client(&conn)?.cert(&fingerprint).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", detail(&d));
            }
        }
        CertsCommand::Deploy(args) => {
            let DeployArgs {
                conn,
                agent,
                names,
                kind,
                cert,
                key,
                path,
                password_ref,
                alias,
                store_type,
                chain,
                fullchain,
                owner,
                file_group,
                mode,
                key_mode,
                reload,
                reload_timeout,
                verify,
                sni,
                days,
                verify_timeout,
                max_attempts,
                window,
                issuer,
                webroot,
                http01_port,
                ssh,
                require_approval,
                json,
            } = *args;
            let target = deploy_target(
                kind,
                TargetFlags {
                    cert,
                    key,
                    chain,
                    fullchain,
                    path,
                    password_ref,
                    alias,
                    store_type,
                    owner,
                    group: file_group,
                    mode,
                    key_mode,
                },
            )?;
            let spec = deploy_spec(
                names,
                target,
                &reload,
                (reload_timeout, verify_timeout),
                verify,
                sni,
                days,
                (issuer, challenge(webroot, http01_port)),
                ssh.section()?,
            )?;
            let req = tether_wire::NewTask {
                kind: tether_wire::TaskKind::Deploy,
                spec,
                target: tether_wire::TaskTarget::Agent { agent_id: agent },
                max_attempts,
                lease_secs: None,
                deadline_secs: None,
                allowed_hours: window.as_deref().map(crate::tasks_cmd::hours).transpose()?,
                schedule: None,
                require_approval,
            };
            let created = client(&conn)?.create_task(&req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let id = safe(created.get("id").and_then(|v| v.as_str()).unwrap_or("ID"));
                if require_approval {
                    println!(
                        "deploy task {id} for agent {agent} is awaiting an admin's approval: \
                         `tether certs approve {id}` runs it, `tether certs reject {id} --reason …` ends it"
                    );
                } else {
                    println!(
                        "deploy task {id} queued for agent {agent}; follow it with `tether tasks show {id}`"
                    );
                }
            }
        }
        CertsCommand::Acme(AcmeCommand::Add {
            conn,
            name,
            directory,
            email,
            acme_ca_file,
            json,
        }) => {
            let ca_pem = match &acme_ca_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => None,
            };
            let added = client(&conn)?
                .add_acme_issuer(&tether_wire::AcmeIssuerAdd {
                    name,
                    directory,
                    ca_pem,
                    email,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                println!(
                    "ACME issuer {} registered at {} (account {}); deploy with `--issuer acme:{}`",
                    safe(&added.name),
                    safe(&added.directory),
                    safe(added.account.as_deref().unwrap_or("?")),
                    safe(&added.name)
                );
            }
        }
        CertsCommand::Acme(AcmeCommand::List { conn, json }) => {
            let list = client(&conn)?.acme_issuers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.issuers.is_empty() {
                println!(
                    "no ACME issuers (add one with `tether certs acme add NAME --directory URL`)"
                );
            } else {
                for i in &list.issuers {
                    println!(
                        "acme:{}  {}{}{}  since {}",
                        safe(&i.name),
                        safe(&i.directory),
                        i.contact
                            .as_deref()
                            .map(|c| format!("  contact {}", safe(c)))
                            .unwrap_or_default(),
                        if i.private_ca { "  (private CA)" } else { "" },
                        i.created_at.format(&Rfc3339)?
                    );
                }
            }
        }
        CertsCommand::Acme(AcmeCommand::Remove { conn, name }) => {
            client(&conn)?.remove_acme_issuer(&name).await?;
            println!("ACME issuer {} removed", safe(&name));
        }
        CertsCommand::History {
            conn,
            fingerprint,
            json,
        } => {
            let h = client(&conn)?.cert_history(&fingerprint).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!("{}", history(&h));
            }
        }
        CertsCommand::Renew {
            conn,
            fingerprint,
            json,
        } => {
            let r = client(&conn)?.renew_cert(&fingerprint).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "renewal {} of {} is {}: {}; follow it with `tether certs renewals`",
                    r.id,
                    safe(&r.fingerprint),
                    r.state,
                    safe(&r.reason)
                );
            }
        }
        CertsCommand::Renewals { conn, json } => {
            let list = client(&conn)?.renewals().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", renewals(&list));
            }
        }
        CertsCommand::RenewalPolicy {
            conn,
            scope,
            fraction,
            days_before,
            issuer,
            fallback_issuer,
            window,
            require_approval,
            json,
        } => {
            let trigger = match days_before {
                Some(days) => tether_wire::RenewalTrigger::DaysBefore { days },
                None => tether_wire::RenewalTrigger::Fraction {
                    fraction: fraction.unwrap_or(2.0 / 3.0),
                },
            };
            let update = tether_wire::RenewalPolicyUpdate {
                scope: scope.clone(),
                policy: tether_wire::RenewalPolicy {
                    trigger,
                    issuer,
                    fallback_issuer,
                    allowed_hours: window.as_deref().map(crate::tasks_cmd::hours).transpose()?,
                    require_approval,
                },
            };
            let p = client(&conn)?.set_renewal_policy(&update).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!("renewal policy of {} set", safe(&scope));
            }
        }
        CertsCommand::Approve { conn, id, json } => {
            let t = client(&conn)?.approve_task(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", approval_line(&t));
            }
        }
        CertsCommand::Reject {
            conn,
            id,
            reason,
            json,
        } => {
            let t = client(&conn)?.reject_task(id, &reason).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", approval_line(&t));
            }
        }
        CertsCommand::Revoke {
            conn,
            fingerprint,
            reason,
            json,
        } => {
            let r = client(&conn)?.revoke_cert(&fingerprint, reason).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let v = &r.revocation;
                println!(
                    "{} {} (serial {}): {} at {} by {}",
                    safe(&v.fingerprint),
                    if r.newly_revoked {
                        "revoked"
                    } else {
                        "was already revoked"
                    },
                    safe(&v.serial),
                    v.reason,
                    v.revoked_at.format(&Rfc3339)?,
                    safe(&v.revoked_by)
                );
            }
        }
        CertsCommand::Ca(CaCommand::Init {
            data_dir: dir,
            root_key_out,
            name,
        }) => {
            let dir = data_dir(dir);
            let files = tether_pki::CaFiles::new(dir.join("ca"));
            let kek = match std::env::var(tether_pki::seal::KEK_ENV) {
                Ok(text) => tether_pki::Kek::from_base64(&text)?,
                Err(_) => {
                    let file = dir.join("ca.kek");
                    if file.exists() {
                        tether_pki::Kek::load(None, &file)?
                    } else {
                        tether_pki::Kek::generate_file(&file)?
                    }
                }
            };
            let place = match &root_key_out {
                Some(p) => tether_pki::ca::RootKeyPlace::Offline(p),
                None => tether_pki::ca::RootKeyPlace::Online,
            };
            tether_pki::ca::init(&files, &kek, &name, place, time::OffsetDateTime::now_utc())
                .with_context(|| format!("creating the CA in {}", files.dir.display()))?;
            println!("built-in CA created in {}", files.dir.display());
            println!(
                "  root certificate (give it to clients): {}",
                files.root_cert().display()
            );
            match root_key_out {
                Some(p) => println!(
                    "  root key: {} (keep it offline; it is not in the data dir)",
                    p.display()
                ),
                None => println!(
                    "  root key: online, sealed in {}; move it offline with `tether certs ca root-offline --out PATH`",
                    files.root_key().display()
                ),
            }
            if std::env::var(tether_pki::seal::KEK_ENV).is_err() {
                println!(
                    "  the intermediate's key is sealed with {}; keep a copy of it apart from the database backups",
                    dir.join("ca.kek").display()
                );
            }
            println!("restart the server to open the CA");
        }
        CertsCommand::Ca(CaCommand::RootCrl {
            data_dir: dir,
            root_key,
            out,
            days,
            revoke_intermediate,
        }) => {
            let dir = data_dir(dir);
            let files = tether_pki::CaFiles::new(dir.join("ca"));
            let key = std::fs::read_to_string(&root_key)
                .with_context(|| format!("reading the root key {}", root_key.display()))?;
            let now = time::OffsetDateTime::now_utc();
            let number = u64::try_from(now.unix_timestamp()).unwrap_or(0);
            let der =
                tether_pki::ca::root_crl(&files, &key, number, days, revoke_intermediate, now)?;
            tether_fs::write_atomic(&out, &der, tether_fs::PUBLIC)
                .map_err(|e| anyhow::anyhow!("writing {}: {}", e.path.display(), e.source))?;
            println!(
                "root CRL (number {number}, valid {days} days{}) written to {}",
                if revoke_intermediate.is_some() {
                    ", listing the intermediate"
                } else {
                    ""
                },
                out.display()
            );
        }
        CertsCommand::Ca(CaCommand::RootOffline { data_dir: dir, out }) => {
            let dir = data_dir(dir);
            let files = tether_pki::CaFiles::new(dir.join("ca"));
            let kek = tether_pki::Kek::load(
                std::env::var(tether_pki::seal::KEK_ENV).ok().as_deref(),
                &dir.join("ca.kek"),
            )?;
            if out.starts_with(&dir) {
                bail!(
                    "--out {} is inside the data dir; name removable media",
                    out.display()
                );
            }
            tether_pki::ca::move_root_offline(&files, &kek, &out)?;
            println!(
                "root key written to {} and removed from {}",
                out.display(),
                files.dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_certificate_text_is_escaped() {
        let at = time::macros::datetime!(2026-05-17 19:16:00 UTC);
        let facts = CertFacts {
            subject: "CN=evil\u{1b}]0;pwned\u{7}\nFAKE LINE\u{202e}".into(),
            issuer: "CN=x\r".into(),
            serial: "01".into(),
            sans: vec!["a\u{1b}[2J".into()],
            sans_total: 1,
            key_type: "ec".into(),
            key_bits: 256,
            signature_algorithm: "sha256".into(),
            not_before: at,
            not_after: at,
            fingerprint: format!("sha256:{}", "ab".repeat(32)),
            aia_urls: vec![],
            cdp_urls: vec!["http://x/\u{1b}c".into()],
            is_ca: false,
            verdicts: vec![],
        };
        let info = CertInfo {
            fingerprint: facts.fingerprint.clone(),
            cert: facts.clone(),
            verdicts: vec!["self_signed".into()],
            first_seen: at,
            last_seen: at,
            locations: 1,
        };
        let d = CertDetail {
            info: info.clone(),
            chain: vec![facts],
            seen_at: vec![tether_wire::CertLocation {
                address: "10.0.0.1:443".into(),
                sni: Some("n\u{1b}[31m".into()),
                agent_id: uuid::Uuid::nil(),
                first_seen: at,
                last_seen: at,
                state: LocationState::Changed,
                state_since: Some(at),
                previous: None,
                replaced_by: Some("sha256:00".into()),
            }],
        };
        for text in [table(&[info]), detail(&d)] {
            assert!(!text.contains('\u{1b}'), "{text}");
            assert!(!text.contains('\u{7}') && !text.contains('\r'), "{text}");
            assert!(!text.contains('\u{202e}'), "{text}");
            assert!(!text.contains("\nFAKE LINE"), "{text}");
        }
        assert!(detail(&d).contains("CHANGED"));
    }

    fn no_ssh() -> SshFlags {
        SshFlags {
            ssh_host: None,
            ssh_port: None,
            ssh_user: None,
            ssh_key_ref: None,
            ssh_passphrase_ref: None,
            ssh_password_ref: None,
            ssh_host_key: None,
            ssh_sudo: false,
            ssh_timeout: None,
        }
    }

    #[test]
    fn ssh_flags_make_a_checked_section_or_are_refused() {
        assert_eq!(no_ssh().section().expect("none"), None);
        let stray = SshFlags {
            ssh_sudo: true,
            ..no_ssh()
        };
        let e = stray.section().expect_err("--ssh-sudo alone");
        assert!(e.to_string().contains("--ssh HOST"), "{e}");
        let unpinned = SshFlags {
            ssh_host: Some("10.0.0.5".into()),
            ssh_user: Some("deploy".into()),
            ssh_key_ref: Some("file:/etc/tether/key".into()),
            ..no_ssh()
        };
        let e = unpinned.clone().section().expect_err("no host key");
        assert!(e.to_string().contains("TETHER-E8501"), "{e}");
        let pinned = SshFlags {
            ssh_host_key: Some("SHA256:RSdxYYQxUUs0U1rT61W0GMX00XiKmJOZdpmdmWB4jfg".into()),
            ssh_sudo: true,
            ..unpinned
        };
        let ssh = pinned.section().expect("section");
        let target = tether_deploy::Target::Pem(tether_deploy::spec::PemTarget {
            cert: "/etc/ssl/web/cert.pem".into(),
            key: "/etc/ssl/web/key.pem".into(),
            chain: None,
            fullchain: None,
            owner: None,
            group: None,
            mode: None,
            key_mode: None,
        });
        let v = deploy_spec(
            vec!["web.test".into()],
            target,
            "nginx -s reload",
            (None, None),
            Some("10.0.0.5:443".parse().expect("addr")),
            None,
            None,
            (None, None),
            ssh,
        )
        .expect("spec");
        assert_eq!(v["ssh"]["user"], "deploy");
        assert_eq!(v["ssh"]["sudo"], true);
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            query(&[("expiring", Some("30d")), ("verdict", Some("a&b=c"))]),
            "expiring=30d&verdict=a%26b%3Dc"
        );
        assert_eq!(query(&[("expiring", None)]), "");
    }
}
