//! `tether defs …`: publish, summarize and export definitions channels over
//! the admin API, and the local repository chores (mirror, offline root key,
//! key rotation) that run next to the server's data dir. The text renderers
//! are pure functions of the wire types, tested below with fixed times.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use tether_wire::{
    AgentChannelView, AgentDetail, AgentStatus, ChannelSummary, DefsPolicy, DefsVersion, ErrorCode,
    SystemClock,
};

use crate::cli::{DefsCommand, KeyRole};
use crate::endpoint::DEFAULT_DATA_DIR;

/// The largest definitions file `publish` sends and `export` accepts. The
/// whole body is held in memory on both ends, so the cap is deliberate.
pub const DEFS_MAX_BYTES: usize = 1024 * 1024 * 1024;

/// The HTTP time limit of one bulk transfer (publish or export): a 1 GiB
/// body at a slow 2 MB/s still fits.
pub const DEFS_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub async fn run(cmd: DefsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DefsCommand::Publish {
            conn,
            channel,
            file,
            notes,
            json,
        } => {
            let content = read_defs_file(&file, DEFS_MAX_BYTES)?;
            let v = crate::admin::bulk_client(&conn)?
                .publish_defs(&channel, content, notes.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", published_text(&v));
            }
        }
        DefsCommand::Summary {
            conn,
            channel,
            json,
        } => {
            let summary = crate::admin::client(&conn)?
                .defs_summary(channel.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary_text(&summary));
            }
        }
        DefsCommand::Export { conn, channel, out } => {
            let bytes = crate::admin::bulk_client(&conn)?
                .export_defs(&channel)
                .await?;
            write_atomically(&out, &bytes)?;
            println!(
                "wrote {} ({}); on an offline agent: `tether agent defs import {}`",
                out.display(),
                human_bytes(bytes.len() as u64),
                out.display()
            );
        }
        DefsCommand::Mirror { to, data_dir } => {
            let repo = open_existing_repo(&data_dir).await?;
            let files = repo
                .mirror(&to)
                .await
                .map_err(repo_error)
                .with_context(|| {
                    format!("mirroring the definitions repository to {}", to.display())
                })?;
            println!("copied {files} files to {}", to.display());
            println!(
                "Serve {} over HTTPS and add its URL to the policy's update URLs \
                 (`tether policy set NAME … --update-url https://HOST/PATH`).",
                to.display()
            );
        }
        DefsCommand::Init { root_key, data_dir } => {
            let dir = defs_dir(&data_dir);
            if dir.join("state.json").exists() {
                bail!(
                    "{} already holds a definitions repository; move its root key offline with `tether defs rotate-key --role root` instead (docs/defs-keys.md)",
                    dir.display()
                );
            }
            tether_defs_publish::repo::Repo::open_with_root_key(
                &dir,
                Arc::new(SystemClock),
                Some(&root_key),
            )
            .await
            .map_err(repo_error)
            .with_context(|| format!("creating the definitions repository in {}", dir.display()))?;
            println!(
                "created the definitions repository in {} with its root signed by {}; only the online keys are on this host",
                dir.display(),
                root_key.display()
            );
            println!(
                "Put {} back offline; rotations need it again.",
                root_key.display()
            );
        }
        DefsCommand::Keygen { out } => {
            if out.exists() {
                bail!(
                    "{} already exists; choose a new path (a key file is never overwritten)",
                    out.display()
                );
            }
            let key_id = tether_defs_publish::repo::keygen(&out)
                .map_err(repo_error)
                .with_context(|| format!("writing a new root key to {}", out.display()))?;
            println!("wrote {} (mode 0600)", out.display());
            println!("key id {key_id}");
            println!(
                "Keep this file offline: it signs the trust root of every agent. Use it with \
                 `tether defs rotate-key --role root --new-key {} --root-key CURRENT`.",
                out.display()
            );
        }
        DefsCommand::RotateKey {
            role,
            new_key,
            root_keys,
            data_dir,
            defs_dir: shared,
        } => {
            let dir = shared.unwrap_or_else(|| defs_dir(&data_dir));
            if !dir.is_dir() {
                bail!(
                    "no definitions repository in {}: run this on the control plane's host, or pass --data-dir",
                    dir.display()
                );
            }
            let version = tether_defs_publish::repo::rotate_key(
                &dir,
                role.into(),
                new_key.as_deref(),
                &root_keys,
                Arc::new(SystemClock),
            )
            .await
            .map_err(repo_error)
            .with_context(|| format!("rotating the {} key", role.as_str()))?;
            println!(
                "rotated the {} key; the trust root is now at version {version}. Agents pick it up at their next update.",
                role.as_str()
            );
            // A running server re-reads the repository state before each
            // signing, so it signs with the new keys from its next publish
            // or refresh (at most 10 minutes) without a restart.
        }
        DefsCommand::Join {
            shared,
            root_keys,
            shared_root_keys,
            data_dir,
        } => {
            let own = defs_dir(&data_dir);
            for (dir, what) in [(&own, "this server's own"), (&shared, "the shared")] {
                if !dir.join("state.json").is_file() {
                    bail!(
                        "{}: no definitions repository in {} ({what} repository). Action: {}",
                        ErrorCode::DefsJoinNoRepository,
                        dir.display(),
                        ErrorCode::DefsJoinNoRepository.action()
                    );
                }
            }
            let keys_in = |dir: &Path| -> Vec<PathBuf> {
                let mut keys: Vec<PathBuf> = std::fs::read_dir(dir.join("keys"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "pem"))
                    .collect();
                keys.sort();
                keys
            };
            let root_keys = if root_keys.is_empty() {
                keys_in(&own)
            } else {
                root_keys
            };
            let shared_root_keys = if shared_root_keys.is_empty() {
                keys_in(&shared)
            } else {
                shared_root_keys
            };
            let joined = tether_defs_publish::repo::join(
                &shared,
                &own,
                &root_keys,
                &shared_root_keys,
                Arc::new(SystemClock),
            )
            .await
            .map_err(repo_error)
            .with_context(|| {
                format!(
                    "joining {} to the shared repository {}",
                    own.display(),
                    shared.display()
                )
            })?;
            print!("{}", joined_text(&joined, &shared));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `defs join` did, for the operator.
fn joined_text(j: &tether_defs_publish::repo::Joined, shared: &Path) -> String {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    if !j.bumped.is_empty() {
        let _ = writeln!(
            out,
            "extended the shared root chain with versions {} (no key change)",
            list(&j.bumped)
        );
    }
    if j.countersigned.is_empty() {
        let _ = writeln!(out, "the shared root was countersigned already");
    } else {
        let _ = writeln!(
            out,
            "countersigned shared root versions {} with this repository's root key",
            list(&j.countersigned)
        );
    }
    if !j.unreachable.is_empty() {
        let _ = writeln!(
            out,
            "warning: no key given signs this repository's root versions {}: agents that enrolled while one was current cannot follow; pass that root key too (--root-key), or re-enroll them",
            list(&j.unreachable)
        );
    }
    for (channel, version) in &j.raised {
        let _ = writeln!(
            out,
            "published {channel} v{version} in the shared repository (above this repository's)"
        );
    }
    let _ = writeln!(
        out,
        "The shared root is at version {}. Set `defs_dir = \"{}\"` in this server's config and restart it; its agents follow the chain at their next update.",
        j.root_version,
        shared.display()
    );
    out
}

impl From<KeyRole> for tether_defs_publish::repo::RoleName {
    fn from(role: KeyRole) -> Self {
        match role {
            KeyRole::Root => tether_defs_publish::repo::RoleName::Root,
            KeyRole::Targets => tether_defs_publish::repo::RoleName::Targets,
            KeyRole::Snapshot => tether_defs_publish::repo::RoleName::Snapshot,
            KeyRole::Timestamp => tether_defs_publish::repo::RoleName::Timestamp,
        }
    }
}

/// A repository error with its stable code and action, as the CLI prints it.
fn repo_error(e: tether_defs_publish::repo::RepoError) -> anyhow::Error {
    let code = e.code();
    anyhow::anyhow!("{code}: {e}. Action: {}", code.action())
}

fn defs_dir(data_dir: &Option<PathBuf>) -> PathBuf {
    data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join("defs")
}

/// Opens the repository only if it exists: `Repo::open` creates a fresh one
/// (new keys, root v1) on first use, and a mirror of a repository no agent
/// trusts would be worse than an error.
async fn open_existing_repo(
    data_dir: &Option<PathBuf>,
) -> anyhow::Result<tether_defs_publish::repo::Repo> {
    let dir = defs_dir(data_dir);
    if !dir.is_dir() {
        bail!(
            "no definitions repository in {}: run this on the control plane's host, or pass --data-dir",
            dir.display()
        );
    }
    tether_defs_publish::repo::Repo::open(&dir, Arc::new(SystemClock))
        .await
        .map_err(repo_error)
        .with_context(|| format!("opening the definitions repository in {}", dir.display()))
}

/// Reads a definitions file to publish, refusing an empty file (surely a
/// truncated copy) and one larger than `max` before reading it whole.
pub fn read_defs_file(path: &Path, max: usize) -> anyhow::Result<Bytes> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > max as u64 {
        bail!(
            "{}: {} is {}, more than the {} a publish accepts",
            ErrorCode::BodyTooLarge,
            path.display(),
            human_bytes(meta.len()),
            human_bytes(max as u64)
        );
    }
    let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if content.is_empty() {
        bail!(
            "{}: {} is empty. Action: {}",
            ErrorCode::DefsEmpty,
            path.display(),
            ErrorCode::DefsEmpty.action()
        );
    }
    // The file may have grown between the size check and the read.
    if content.len() > max {
        bail!(
            "{}: {} grew past {} while it was read",
            ErrorCode::BodyTooLarge,
            path.display(),
            human_bytes(max as u64)
        );
    }
    Ok(Bytes::from(content))
}

/// Writes next to `out` and renames, so an interrupted export never leaves a
/// truncated bundle under the name an operator would carry to an agent.
fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    out.file_name()
        .with_context(|| format!("--out {} names no file", out.display()))?;
    tether_fs::write_atomic(out, bytes, tether_fs::PUBLIC)
        .with_context(|| format!("writing {}", out.display()))
}

/// Checks the definitions flags of `policy set` and builds the policy part.
pub fn defs_policy(
    channels: Vec<String>,
    update_urls: Vec<String>,
    interval: Option<std::time::Duration>,
    allow_user_update: bool,
) -> anyhow::Result<DefsPolicy> {
    for u in &update_urls {
        let parsed = url::Url::parse(u).with_context(|| {
            format!(
                "{}: --update-url {u:?} is not a URL",
                ErrorCode::InvalidField
            )
        })?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            bail!(
                "{}: --update-url {u:?} must be an https:// URL with a host (agents verify the server's certificate)",
                ErrorCode::InvalidField
            );
        }
    }
    let interval_secs = match interval {
        None => tether_wire::DEFAULT_UPDATE_INTERVAL_SECS,
        Some(d) => {
            let secs = u32::try_from(d.as_secs()).ok().filter(|s| *s > 0);
            secs.with_context(|| {
                format!(
                    "{}: --defs-interval {} must be at least 1 s and at most {} s",
                    ErrorCode::InvalidField,
                    humantime::format_duration(d),
                    u32::MAX
                )
            })?
        }
    };
    Ok(DefsPolicy {
        channels,
        update_urls,
        interval_secs,
        allow_user_update,
    })
}

/// "512 B", "12.3 KiB", "1.2 MiB", "3.4 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `2026-05-17 19:16 UTC`.
pub use tether_wire::clock::utc_minute;

/// A delta's size as a share of the compressed full object.
fn percent_of(size: u64, full: u64) -> String {
    if full == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", size as f64 * 100.0 / full as f64)
}

/// The median of `sizes` (the mean of the middle two for an even count).
fn median(sizes: &mut [u64]) -> Option<u64> {
    if sizes.is_empty() {
        return None;
    }
    sizes.sort_unstable();
    let mid = sizes.len() / 2;
    Some(if sizes.len().is_multiple_of(2) {
        sizes[mid - 1] / 2 + sizes[mid] / 2 + (sizes[mid - 1] % 2 + sizes[mid] % 2) / 2
    } else {
        sizes[mid]
    })
}

/// What `tether defs publish` prints.
pub fn published_text(v: &DefsVersion) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "published {} v{}", printable(&v.channel), v.version);
    let _ = writeln!(out, "  sha256   {}", printable(&v.sha256));
    let _ = writeln!(
        out,
        "  size     {} ({} bytes, {})",
        human_bytes(v.length),
        v.length,
        printable(&v.content)
    );
    let _ = writeln!(out, "  full     {} compressed", human_bytes(v.full_size));
    if v.deltas.is_empty() {
        let _ = writeln!(
            out,
            "  deltas   none (first version, or no earlier version worth a delta)"
        );
    }
    for (i, d) in v.deltas.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:<8} from v{} → {} ({} of full, {})",
            if i == 0 { "deltas" } else { "" },
            d.from_version,
            human_bytes(d.size),
            percent_of(d.size, v.full_size),
            printable(&d.kind)
        );
    }
    if let Some(notes) = &v.notes {
        let _ = writeln!(out, "  notes    {}", printable(notes));
    }
    out
}

/// What `tether defs summary` prints: per channel, a table of versions
/// (newest first) and the fleet's counts.
pub fn summary_text(channels: &[ChannelSummary]) -> String {
    let mut out = String::new();
    if channels.is_empty() {
        out.push_str(
            "(no channels: publish one with `tether defs publish --channel NAME --file PATH`)\n",
        );
        return out;
    }
    for (i, c) in channels.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Channel {}", printable(&c.channel));
        let _ = writeln!(
            out,
            "  {:>7}  {:<20}  {:>10}  {:>10}  {:<18}  {:>6}",
            "VERSION", "PUBLISHED (UTC)", "SIZE", "FULL", "DELTAS", "AGENTS"
        );
        for v in &c.versions {
            let mut sizes: Vec<u64> = v.deltas.iter().map(|d| d.size).collect();
            let deltas = match median(&mut sizes) {
                None => "-".to_owned(),
                Some(m) => format!("{}, median {}", sizes.len(), human_bytes(m)),
            };
            let published = utc_minute(v.published_at);
            let _ = writeln!(
                out,
                "  {:>7}  {:<20}  {:>10}  {:>10}  {:<18}  {:>6}",
                format!("v{}", v.version),
                published.trim_end_matches(" UTC"),
                human_bytes(v.length),
                human_bytes(v.full_size),
                deltas,
                v.agents
            );
        }
        if c.versions.is_empty() {
            out.push_str("  (no versions published)\n");
        }
        let _ = writeln!(
            out,
            "  subscribed {}, in policy {}, download-path problems {}, never installed {}",
            c.agents_subscribed,
            c.agents_in_policy,
            c.agents_download_problem,
            c.agents_never_installed
        );
    }
    out
}

/// The `IN POLICY` cell of `agents list`.
pub fn in_policy_cell(in_policy: Option<bool>) -> &'static str {
    match in_policy {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// The definitions part of `agents show`: one block per channel, then the
/// agent's in-policy verdict with its reason.
pub fn agent_defs_text(d: &AgentDetail) -> String {
    let mut out = String::new();
    for c in &d.defs {
        out.push_str(&channel_text(c));
    }
    let verdict = match d.in_policy {
        None => "- (subscribes to no channel)".to_owned(),
        Some(true) => "yes".to_owned(),
        Some(false) => format!("no ({})", not_in_policy_reason(d)),
    };
    let _ = writeln!(out, "{:<18} {verdict}", "In policy");
    out
}

fn channel_text(c: &AgentChannelView) -> String {
    let mut parts = Vec::new();
    parts.push(match (c.version, c.newest_version) {
        (_, None) => format!(
            "{}, nothing published yet",
            c.version
                .map_or("not installed".to_owned(), |v| format!("v{v}"))
        ),
        (Some(v), Some(_)) if c.versions_behind == 0 => format!("v{v}, current"),
        (installed, Some(newest)) => format!(
            "{}, {} behind v{newest} ({})",
            installed.map_or("not installed".to_owned(), |v| format!("v{v}")),
            c.versions_behind,
            lag(c.hours_behind)
        ),
    });
    parts.push(match c.updated_at {
        Some(t) => format!("last updated {}", utc_minute(t)),
        None => "never updated".to_owned(),
    });
    match &c.last_error {
        Some(e) => parts.push(format!(
            "Failed{}: {}: {}. Action: {}",
            if c.consecutive_failures > 1 {
                format!(" ({} times in a row)", c.consecutive_failures)
            } else {
                String::new()
            },
            e.code,
            printable(e.message.trim_end_matches('.')),
            e.code.action()
        )),
        None => {
            if let Some(t) = c.last_attempt_at {
                parts.push(format!("last check {} OK", utc_minute(t)));
            }
        }
    }
    let mut out = format!(
        "{:<18} {}\n",
        format!("Definitions {}", printable(&c.channel)),
        parts.join(" — ")
    );
    if let Some(server) = &c.server {
        let via = match &c.via_proxy {
            Some(p) => format!("via proxy {}", printable(p)),
            None => "direct".to_owned(),
        };
        let _ = writeln!(out, "{:<18} update server {}, {via}", "", printable(server));
    }
    if c.download_path_problem {
        let _ = writeln!(
            out,
            "{:<18} seen recently but updates keep failing: a download-path problem, not an offline agent",
            ""
        );
    }
    if c.never_installed {
        let _ = writeln!(
            out,
            "{:<18} never installed, though enrolled for more than one definitions interval",
            ""
        );
    }
    out
}

/// How long a channel has lagged: minutes under an hour (a fresh publish
/// reads "12 min", not "0.2 h"), hours with one decimal after that.
fn lag(hours: f64) -> String {
    if !hours.is_finite() || hours < 0.0 {
        return "unknown".to_owned();
    }
    if hours < 1.0 {
        format!("{} min", (hours * 60.0).round())
    } else {
        format!("{hours:.1} h")
    }
}

/// Why an agent is out of policy: the channels too far behind, and a status
/// other than Active (it has not checked in recently).
fn not_in_policy_reason(d: &AgentDetail) -> String {
    let mut reasons: Vec<String> = d
        .defs
        .iter()
        .filter(|c| !c.in_policy)
        .map(|c| {
            if c.never_installed {
                return format!("{} was never installed", printable(&c.channel));
            }
            format!(
                "{} is {} version{} / {} behind",
                printable(&c.channel),
                c.versions_behind,
                if c.versions_behind == 1 { "" } else { "s" },
                lag(c.hours_behind)
            )
        })
        .collect();
    if d.summary.status != AgentStatus::Active {
        reasons.push(format!(
            "status {}: it has not checked in recently",
            d.summary.status.as_str().to_uppercase()
        ));
    }
    if reasons.is_empty() {
        "the server gave no reason".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// Text an agent (or anyone) reported, safe for one terminal line: control
/// characters are escaped (see [`crate::display`]) and very long values cut.
fn printable(s: &str) -> String {
    crate::display::safe_cut(s, 300)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tether_wire::{AgentKind, AgentSummary, DeltaInfo, HostFacts, LastError, Policy};
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;

    use time::OffsetDateTime;
    const NOW: OffsetDateTime = datetime!(2026-05-17 19:16 UTC);

    fn version(n: u64, deltas: &[(u64, u64)]) -> DefsVersion {
        DefsVersion {
            channel: "main".into(),
            version: n,
            sha256: "e3b0c442".into(),
            length: 3 * 1024 * 1024,
            content: "text".into(),
            published_at: NOW - time::Duration::hours(2 * (20 - n as i64)),
            notes: None,
            full_size: 1024 * 1024,
            deltas: deltas
                .iter()
                .map(|&(from_version, size)| DeltaInfo {
                    from_version,
                    kind: "line".into(),
                    size,
                })
                .collect(),
            agents: n % 3,
        }
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(12_595), "12.3 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn medians_of_odd_even_and_huge_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), Some(u64::MAX));
    }

    #[test]
    fn publish_output_names_version_hash_sizes_and_deltas() {
        let mut v = version(12, &[(11, 10_486), (10, 52_429)]);
        v.notes = Some("weekly\x1b[31m".into());
        assert_eq!(
            published_text(&v),
            "published main v12\n\
             \x20 sha256   e3b0c442\n\
             \x20 size     3.0 MiB (3145728 bytes, text)\n\
             \x20 full     1.0 MiB compressed\n\
             \x20 deltas   from v11 → 10.2 KiB (1.0% of full, line)\n\
             \x20          from v10 → 51.2 KiB (5.0% of full, line)\n\
             \x20 notes    weekly\\u{1b}[31m\n"
        );
        let mut first = version(1, &[]);
        first.full_size = 0;
        assert!(published_text(&first).contains("deltas   none"));
    }

    #[test]
    fn summary_is_a_table_per_channel_with_fleet_counts() {
        let main = ChannelSummary {
            channel: "main".into(),
            versions: vec![
                version(12, &[(11, 1000), (10, 3000), (9, 2048)]),
                version(11, &[]),
            ],
            agents_subscribed: 40,
            agents_in_policy: 37,
            agents_download_problem: 2,
            agents_never_installed: 1,
        };
        let empty = ChannelSummary {
            channel: "beta".into(),
            versions: Vec::new(),
            agents_subscribed: 0,
            agents_in_policy: 0,
            agents_download_problem: 0,
            agents_never_installed: 0,
        };
        assert_eq!(
            summary_text(&[main, empty]),
            "Channel main\n\
             \x20 VERSION  PUBLISHED (UTC)             SIZE        FULL  DELTAS              AGENTS\n\
             \x20     v12  2026-05-17 03:16         3.0 MiB     1.0 MiB  3, median 2.0 KiB        0\n\
             \x20     v11  2026-05-17 01:16         3.0 MiB     1.0 MiB  -                        2\n\
             \x20 subscribed 40, in policy 37, download-path problems 2, never installed 1\n\
             \n\
             Channel beta\n\
             \x20 VERSION  PUBLISHED (UTC)             SIZE        FULL  DELTAS              AGENTS\n\
             \x20 (no versions published)\n\
             \x20 subscribed 0, in policy 0, download-path problems 0, never installed 0\n"
        );
        assert!(summary_text(&[]).starts_with("(no channels"));
    }

    fn detail(
        status: AgentStatus,
        defs: Vec<AgentChannelView>,
        in_policy: Option<bool>,
    ) -> AgentDetail {
        AgentDetail {
            summary: AgentSummary {
                id: Uuid::nil(),
                name: "web-1".into(),
                kind: AgentKind::Discovery,
                group: "default".into(),
                status,
                flags: Vec::new(),
                hostname: "web-1".into(),
                version: "0.1.0".into(),
                last_seen: Some(NOW),
                external_ip: None,
                enrolled_at: NOW,
                in_policy,
                upgrade: None,
                rollout: None,
            },
            facts: HostFacts {
                hostname: "web-1".into(),
                os: "linux".into(),
                internal_ips: Vec::new(),
                uptime_secs: 60,
                installed_at: None,
            },
            policy: Policy {
                name: "default".into(),
                revision: 1,
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: Vec::new(),
                defs: DefsPolicy::default(),
                max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
            },
            definitions: BTreeMap::new(),
            last_errors: BTreeMap::new(),
            proxy: None,
            checkin_interval_secs: 30,
            inactive_after_secs: 90,
            transitions: Vec::new(),
            last_doctor: None,
            defs,
            in_policy,
            outages: Vec::new(),
            site: None,
        }
    }

    fn failing_channel() -> AgentChannelView {
        AgentChannelView {
            channel: "main".into(),
            version: Some(12),
            newest_version: Some(14),
            versions_behind: 2,
            hours_behind: 9.5,
            updated_at: Some(NOW),
            last_attempt_at: Some(NOW),
            last_error: Some(LastError {
                code: ErrorCode::DefsProxyDownloadFailed,
                message: "the proxy answered 403.".into(),
                at: NOW,
            }),
            consecutive_failures: 3,
            server: Some("https://defs.example.com/tether".into()),
            via_proxy: Some("proxy.corp:3128".into()),
            in_policy: false,
            download_path_problem: true,
            never_installed: false,
        }
    }

    #[test]
    fn agents_show_names_version_lag_failure_path_and_policy() {
        let d = detail(AgentStatus::Active, vec![failing_channel()], Some(false));
        let text = agent_defs_text(&d);
        let expected = format!(
            "Definitions main   v12, 2 behind v14 (9.5 h) — last updated 2026-05-17 19:16 UTC — \
             Failed (3 times in a row): {code}: the proxy answered 403. Action: {action}\n\
             \x20                  update server https://defs.example.com/tether, via proxy proxy.corp:3128\n\
             \x20                  seen recently but updates keep failing: a download-path problem, not an offline agent\n\
             In policy          no (main is 2 versions / 9.5 h behind)\n",
            code = ErrorCode::DefsProxyDownloadFailed,
            action = ErrorCode::DefsProxyDownloadFailed.action()
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn agents_show_current_unpublished_and_inactive_channels() {
        let current = AgentChannelView {
            channel: "rules".into(),
            version: Some(3),
            newest_version: Some(3),
            versions_behind: 0,
            hours_behind: 0.0,
            updated_at: Some(NOW),
            last_attempt_at: Some(NOW),
            last_error: None,
            consecutive_failures: 0,
            server: None,
            via_proxy: None,
            in_policy: true,
            download_path_problem: false,
            never_installed: false,
        };
        let unpublished = AgentChannelView {
            channel: "beta".into(),
            version: None,
            newest_version: None,
            updated_at: None,
            last_attempt_at: None,
            ..current.clone()
        };
        let d = detail(
            AgentStatus::Inactive,
            vec![current, unpublished],
            Some(false),
        );
        assert_eq!(
            agent_defs_text(&d),
            "Definitions rules  v3, current — last updated 2026-05-17 19:16 UTC — last check 2026-05-17 19:16 UTC OK\n\
             Definitions beta   not installed, nothing published yet — never updated\n\
             In policy          no (status INACTIVE: it has not checked in recently)\n"
        );
        let none = detail(AgentStatus::Active, Vec::new(), None);
        assert_eq!(
            agent_defs_text(&none),
            "In policy          - (subscribes to no channel)\n"
        );
        assert_eq!(in_policy_cell(Some(true)), "yes");
        assert_eq!(in_policy_cell(Some(false)), "no");
        assert_eq!(in_policy_cell(None), "-");
    }

    #[test]
    fn agents_show_names_a_channel_never_installed() {
        let never = AgentChannelView {
            channel: "main".into(),
            version: None,
            newest_version: Some(2),
            versions_behind: 2,
            hours_behind: 30.0,
            updated_at: None,
            last_attempt_at: None,
            last_error: None,
            consecutive_failures: 0,
            server: None,
            via_proxy: None,
            in_policy: false,
            download_path_problem: false,
            never_installed: true,
        };
        let d = detail(AgentStatus::Active, vec![never], Some(false));
        assert_eq!(
            agent_defs_text(&d),
            "Definitions main   not installed, 2 behind v2 (30.0 h) — never updated\n\
             \x20                  never installed, though enrolled for more than one definitions interval\n\
             In policy          no (main was never installed)\n"
        );
    }

    #[test]
    fn policy_flags_are_checked() {
        let p = defs_policy(
            vec!["main".into()],
            vec!["https://mirror.corp/defs".into()],
            Some(std::time::Duration::from_secs(3600)),
            false,
        )
        .expect("valid");
        assert_eq!(p.interval_secs, 3600);
        assert!(!p.allow_user_update);
        assert_eq!(
            defs_policy(Vec::new(), Vec::new(), None, true)
                .expect("defaults")
                .interval_secs,
            tether_wire::DEFAULT_UPDATE_INTERVAL_SECS
        );
        for bad in [
            "http://mirror.corp/defs",
            "file:///srv/defs",
            "mirror.corp",
            "https://",
        ] {
            let err = defs_policy(Vec::new(), vec![bad.into()], None, true)
                .expect_err("refused")
                .to_string();
            assert!(err.contains("TETHER-E4003"), "{bad}: {err}");
        }
        for bad in [0, u64::from(u32::MAX) + 1] {
            let err = defs_policy(
                Vec::new(),
                Vec::new(),
                Some(std::time::Duration::from_secs(bad)),
                true,
            )
            .expect_err("refused")
            .to_string();
            assert!(err.contains("TETHER-E4003"), "{bad}: {err}");
        }
    }

    #[test]
    fn publish_refuses_missing_empty_oversized_and_non_files() {
        let dir = std::env::temp_dir().join(format!("tether-defs-cli-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.txt");
        assert!(read_defs_file(&missing, 100).is_err());
        assert!(
            read_defs_file(&dir, 100)
                .expect_err("a dir")
                .to_string()
                .contains("not a regular file")
        );
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, b"").expect("write");
        let err = read_defs_file(&empty, 100).expect_err("empty").to_string();
        assert!(err.contains("TETHER-E4011"), "{err}");
        let big = dir.join("big.txt");
        std::fs::write(&big, [b'x'; 101]).expect("write");
        let err = read_defs_file(&big, 100).expect_err("too big").to_string();
        assert!(err.contains("TETHER-E4002"), "{err}");
        assert_eq!(
            &read_defs_file(&big, 101).expect("fits")[..],
            &[b'x'; 101][..]
        );
        let out = dir.join("bundle.tar");
        write_atomically(&out, b"tar").expect("writes");
        assert_eq!(std::fs::read(&out).expect("read"), b"tar");
        assert!(!dir.join("bundle.tar.partial").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn lag_reads_in_minutes_then_hours() {
        assert_eq!(lag(0.0), "0 min");
        assert_eq!(lag(0.2), "12 min");
        assert_eq!(lag(9.5), "9.5 h");
        assert_eq!(lag(f64::NAN), "unknown");
        assert_eq!(lag(-1.0), "unknown");
    }

    #[test]
    fn hostile_text_stays_on_one_line() {
        assert_eq!(printable("a\nb\rc\x1b"), "a\\nb\\rc\\u{1b}");
        let long = "x".repeat(1000);
        assert_eq!(printable(&long).chars().count(), 301);
        assert_eq!(
            utc_minute(datetime!(2026-05-17 21:16 +2)),
            "2026-05-17 19:16 UTC"
        );
    }
}
