//! `tether offline-bundle --out FILE` (alias `tether agent-bundle`): a
//! self-contained install bundle for an air-gapped host. One tar.gz
//! holding, under `tether-agent-bundle/`:
//! - `tether-agent`, the endpoint binary (no server or database code);
//! - `enroll.env`: the server URL and the CA pin the agent enrolls with;
//! - `token`: a scoped enrollment token made for this bundle (its group,
//!   kind, window and uses), mode 0600;
//! - `defs/CHANNEL.tar`: the current signed definitions of each channel
//!   named, as `tether defs export` writes them (the agent verifies them
//!   against its pinned root exactly like an online update);
//! - `install.sh`: checks every file against `SHA256SUMS`, installs the
//!   binary, enrolls (the token through the environment, never argv),
//!   imports the definitions, installs the service where systemd runs, and
//!   deletes the token;
//! - `SHA256SUMS` and `MANIFEST.json` (what is inside, the token's window,
//!   each channel's version).
//!
//! The bundle holds a live enrollment token: it is written 0600, and the
//! token's window and uses bound what a lost copy can do.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tether_wire::{AgentKind, CreateTokenRequest};
use time::OffsetDateTime;

use crate::admin::{bulk_client, client, fmt_time};
use crate::cli::AdminConn;
use crate::endpoint::Endpoint;

/// The directory every member sits under.
pub const ROOT: &str = "tether-agent-bundle";
/// The version of `MANIFEST.json`.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, clap::Args)]
pub struct AgentBundleArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Where to write the bundle (tar.gz, mode 0600: it holds a token).
    #[arg(long)]
    pub out: PathBuf,
    /// The kind of agent the token enrolls.
    #[arg(long)]
    pub kind: AgentKind,
    #[arg(long, default_value = "default")]
    pub group: String,
    /// Policy for agents enrolled with the bundle's token.
    #[arg(long)]
    pub policy: Option<String>,
    /// Site label for agents enrolled with the bundle's token.
    #[arg(long)]
    pub site: Option<String>,
    /// How long the bundle's token stays valid, e.g. 7d.
    #[arg(long, default_value = "7d")]
    pub valid_for: humantime::Duration,
    /// How many hosts may enroll with the bundle's token.
    #[arg(long, default_value_t = 1)]
    pub max_uses: u32,
    /// A definitions channel to include (repeat for several).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// The tether-agent binary to ship (default: the one beside this
    /// `tether`).
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Manifest {
    manifest_version: u32,
    created_at: String,
    tether_version: &'static str,
    server: String,
    ca_fingerprint: String,
    token: TokenFacts,
    channels: Vec<String>,
    files: Vec<FileFact>,
}

#[derive(Debug, Serialize)]
struct TokenFacts {
    id: String,
    kind: String,
    group: String,
    not_before: String,
    expires_at: String,
    max_uses: u32,
}

#[derive(Debug, Serialize)]
struct FileFact {
    name: String,
    bytes: u64,
    sha256: String,
}

struct Member {
    name: String,
    mode: u32,
    data: Vec<u8>,
}

pub async fn run(args: AgentBundleArgs) -> anyhow::Result<()> {
    if args.out.file_name().is_none() {
        bail!("--out {} names no file", args.out.display());
    }
    let agent_path = match &args.agent_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("finding this program's path")?
            .with_file_name("tether-agent"),
    };
    let agent = std::fs::read(&agent_path).with_context(|| {
        format!(
            "reading the agent binary {} (build it with `cargo build --release -p tether-agent-bin`, or pass --agent-binary)",
            agent_path.display()
        )
    })?;
    if !agent.starts_with(b"\x7fELF") {
        bail!(
            "{} is not an executable (no ELF header); pass the tether-agent binary with --agent-binary",
            agent_path.display()
        );
    }
    let (server, pin) = server_and_pin(&args.conn)?;

    // The definitions first: a channel that does not exist fails the
    // bundle before a token is made for it.
    let bulk = bulk_client(&args.conn)?;
    let mut members = Vec::new();
    for channel in &args.channels {
        let bytes = bulk
            .export_defs(channel)
            .await
            .with_context(|| format!("exporting channel {channel}"))?;
        members.push(Member {
            name: format!("defs/{channel}.tar"),
            mode: 0o644,
            data: bytes.to_vec(),
        });
    }

    let created = client(&args.conn)?
        .create_token(&CreateTokenRequest {
            kind: args.kind,
            group: args.group.clone(),
            valid_for_secs: args.valid_for.as_secs(),
            not_before: None,
            max_uses: Some(args.max_uses),
            require_approval: false,
            policy: args.policy.clone(),
            site: args.site.clone(),
        })
        .await
        .context("creating the bundle's enrollment token")?;
    let info = &created.info;

    members.push(Member {
        name: "tether-agent".into(),
        mode: 0o755,
        data: agent,
    });
    members.push(Member {
        name: "token".into(),
        mode: 0o600,
        data: format!("{}\n", created.token).into_bytes(),
    });
    members.push(Member {
        name: "enroll.env".into(),
        mode: 0o644,
        data: format!(
            "# Written by tether offline-bundle {}: where the agent enrolls.\nTETHER_SERVER={}\nTETHER_CA_FINGERPRINT={}\n",
            fmt_time(OffsetDateTime::now_utc()),
            shell_value(server.as_str())?,
            shell_value(&pin)?
        )
        .into_bytes(),
    });
    members.push(Member {
        name: "install.sh".into(),
        mode: 0o755,
        data: INSTALL_SH.as_bytes().to_vec(),
    });
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let sums: String = members
        .iter()
        .map(|m| format!("{}  {}\n", hex(&m.data), m.name))
        .collect();
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        created_at: fmt_time(OffsetDateTime::now_utc()),
        tether_version: tether_wire::VERSION,
        server: server.to_string(),
        ca_fingerprint: pin.clone(),
        token: TokenFacts {
            id: info.id.to_string(),
            kind: info.kind.as_str().to_owned(),
            group: info.group.clone(),
            not_before: fmt_time(info.not_before),
            expires_at: fmt_time(info.expires_at),
            max_uses: args.max_uses,
        },
        channels: args.channels.clone(),
        files: members
            .iter()
            .map(|m| FileFact {
                name: m.name.clone(),
                bytes: m.data.len() as u64,
                sha256: hex(&m.data),
            })
            .collect(),
    };
    members.push(Member {
        name: "SHA256SUMS".into(),
        mode: 0o644,
        data: sums.into_bytes(),
    });
    members.push(Member {
        name: "MANIFEST.json".into(),
        mode: 0o644,
        data: (serde_json::to_string_pretty(&manifest)? + "\n").into_bytes(),
    });

    let bytes = pack(&members)?;
    tether_fs::write_atomic(&args.out, &bytes, tether_fs::PRIVATE)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes, mode 0600: it holds enrollment token {} for {} host(s) of group {}, valid until {})",
        args.out.display(),
        bytes.len(),
        info.id,
        args.max_uses,
        info.group,
        fmt_time(info.expires_at)
    );
    println!(
        "On the air-gapped host: tar xzf {} && sudo ./{ROOT}/install.sh",
        args.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    Ok(())
}

/// The server URL and the CA pin the agent enrolls with: `--ca-fingerprint`,
/// else the local server's record, else the fingerprint of `--ca-file`'s
/// first certificate.
fn server_and_pin(conn: &AdminConn) -> anyhow::Result<(url::Url, String)> {
    let data_dir = conn
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::endpoint::DEFAULT_DATA_DIR));
    let local = Endpoint::read(&data_dir)?;
    let server = match (&conn.server, &local) {
        (Some(s), _) => s.clone(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => bail!("no server given: pass --server URL or set TETHER_SERVER"),
    };
    let url =
        url::Url::parse(&server).with_context(|| format!("--server {server:?} is not a URL"))?;
    if let Some(pin) = &conn.ca_fingerprint {
        tether_transport::parse_fingerprint(pin)?;
        return Ok((url, pin.clone()));
    }
    if let Some(file) = &conn.ca_file {
        return Ok((url, fingerprint_of_file(file)?));
    }
    match local.filter(|e| e.url == server) {
        Some(e) => Ok((url, e.ca_fingerprint)),
        None => bail!(
            "no CA pin for {server}: pass --ca-fingerprint sha256:… or --ca-file (the agent pins the control plane's CA when it enrolls)"
        ),
    }
}

fn fingerprint_of_file(file: &Path) -> anyhow::Result<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let first = CertificateDer::pem_slice_iter(&pem)
        .next()
        .with_context(|| format!("{} holds no PEM certificate", file.display()))?
        .with_context(|| format!("{} holds no readable PEM certificate", file.display()))?;
    Ok(format!("sha256:{}", hex(&first)))
}

/// A value safe to source from `enroll.env`: URLs and fingerprints need no
/// quoting, and anything that would need it is refused.
fn shell_value(v: &str) -> anyhow::Result<&str> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || ":/._-[]@%+=~,".contains(c))
    {
        Ok(v)
    } else {
        bail!("{v:?} cannot be written to enroll.env safely")
    }
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pack(members: &[Member]) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(mtime);
    dir.set_cksum();
    tar.append_data(&mut dir, format!("{ROOT}/"), std::io::empty())?;
    for m in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(m.data.len() as u64);
        header.set_mode(m.mode);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, format!("{ROOT}/{}", m.name), &m.data[..])?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// The installer: POSIX sh, every step checked, nothing fetched.
const INSTALL_SH: &str = r#"#!/bin/sh
# Installs the Tether agent from this offline bundle (tether offline-bundle).
#   PREFIX                  where the binary goes (default /usr/local: PREFIX/bin)
#   TETHER_AGENT_STATE_DIR  the agent's state directory (default /var/lib/tether-agent)
#   TETHER_AGENT_NAME       the name to enroll with (default: the hostname)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-/usr/local}
STATE_DIR=${TETHER_AGENT_STATE_DIR:-/var/lib/tether-agent}

cd "$here"
echo "checking the bundle's files against SHA256SUMS"
if ! sha256sum --quiet -c SHA256SUMS; then
    echo "install.sh: a file of the bundle is missing or altered; get a fresh bundle (tether offline-bundle)" >&2
    exit 2
fi
. ./enroll.env

mkdir -p "$PREFIX/bin"
install -m 0755 tether-agent "$PREFIX/bin/tether-agent.new"
mv -f "$PREFIX/bin/tether-agent.new" "$PREFIX/bin/tether-agent"
agent="$PREFIX/bin/tether-agent"

if [ -s "$STATE_DIR/credential" ]; then
    echo "already enrolled ($STATE_DIR/credential exists): keeping the enrollment"
else
    set -- --server "$TETHER_SERVER" --ca-fingerprint "$TETHER_CA_FINGERPRINT" --state-dir "$STATE_DIR"
    if [ -n "${TETHER_AGENT_NAME:-}" ]; then
        set -- "$@" --name "$TETHER_AGENT_NAME"
    fi
    # The token goes through the environment, never the command line.
    TETHER_ENROLL_TOKEN=$(cat token) "$agent" enroll "$@"
fi

for defs in defs/*.tar; do
    [ -e "$defs" ] || continue
    echo "importing the definitions $defs"
    "$agent" defs import "$defs" --state-dir "$STATE_DIR"
done

rm -f token
echo "deleted the bundle's enrollment token"

if [ -d /run/systemd/system ]; then
    "$agent" install-service --state-dir "$STATE_DIR"
else
    echo "systemd is not running here: start the agent with: $agent run --state-dir $STATE_DIR"
fi
"#;
