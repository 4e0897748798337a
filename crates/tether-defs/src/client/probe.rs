//! What one update server's signed metadata says, for the doctor: the same
//! verification as an update ([`super::verifying_loader`] from the pinned
//! root, through the same [`ToughTransport`] and transport), but into a
//! scratch datastore, so a probe never moves the agent's rollback
//! protection, and without installing anything. Expiry is reported rather
//! than refused, so a frozen mirror still shows its version and expiry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tether_transport::Transport;
use tether_wire::Clock;
use time::OffsetDateTime;
use url::Url;

use super::error::{UpdateError, disk_or_install};
use super::fetch::{ConnCache, ToughTransport};
use super::{
    Source, defs_dir, expired_role, join_dir, sane_targets, tough_error, verifying_loader,
};
use crate::layout::{self, TargetKind};

/// One update server's metadata, verified against the pinned root chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProbe {
    /// The newest root version the chain reached on this server.
    pub root_version: u64,
    /// The signed timestamp's version and expiry.
    pub timestamp_version: u64,
    pub timestamp_expires: OffsetDateTime,
    /// The snapshot's version (it changes with every publish).
    pub snapshot_version: u64,
    /// The first role whose expiry has passed by the clock, with its expiry.
    pub expired: Option<(&'static str, OffsetDateTime)>,
    /// The newest full version of each channel this server signs.
    pub channels: BTreeMap<String, u64>,
    /// The channel of each signed target, by the target's SHA-256 (how a
    /// partial download under `defs/partial/` is named).
    pub target_channels: BTreeMap<String, String>,
}

/// Fetches and verifies `server`'s metadata from the agent's pinned root
/// (`state_dir/defs/root.json`) through `transport`. Signature, rollback
/// within the chain and hash failures are the updater's own
/// [`UpdateError`]s; an expired role is reported in [`ServerProbe::expired`].
pub async fn probe_server(
    state_dir: &Path,
    server: &Url,
    transport: Arc<Transport>,
    clock: Arc<dyn Clock>,
) -> Result<ServerProbe, UpdateError> {
    let root_path = defs_dir(state_dir).join("root.json");
    let root = std::fs::read(&root_path).map_err(|e| UpdateError::NotTrusted {
        path: root_path.clone(),
        detail: e.to_string(),
    })?;
    let scratch = tempfile::Builder::new()
        .prefix("tether-defs-probe-")
        .tempdir()
        .map_err(|e| disk_or_install("creating", std::env::temp_dir(), &e))?;
    let datastore = scratch.path().join("tuf");
    std::fs::create_dir_all(&datastore)
        .map_err(|e| disk_or_install("creating", datastore.clone(), &e))?;
    let source = Source::Server(server);
    let label = source.label();
    let loader = verifying_loader(
        &root,
        join_dir(server, layout::METADATA_DIR)?,
        join_dir(server, layout::TARGETS_DIR)?,
        datastore,
    )
    .transport(ToughTransport {
        transport,
        clock: clock.clone(),
        conns: ConnCache::default(),
    });
    let repo = loader
        .load()
        .await
        .map_err(|e| tough_error(&label, e, &source))?;
    let at = |t: jiff::Timestamp| {
        OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let mut channels = BTreeMap::new();
    let mut target_channels = BTreeMap::new();
    for (_, _, sha256, meta) in sane_targets(&repo) {
        target_channels.insert(sha256, meta.channel.clone());
        if meta.kind == TargetKind::Full {
            let v = channels.entry(meta.channel.clone()).or_insert(meta.version);
            *v = (*v).max(meta.version);
        }
    }
    Ok(ServerProbe {
        root_version: repo.root().signed.version.get(),
        timestamp_version: repo.timestamp().signed.version.get(),
        timestamp_expires: at(repo.timestamp().signed.expires),
        snapshot_version: repo.snapshot().signed.version.get(),
        expired: expired_role(&repo, clock.now(), true).map(|(role, t)| (role, at(t))),
        channels,
        target_channels,
    })
}

/// The downloads in progress under `state_dir/defs/partial/`: each
/// target's SHA-256 (the file's name) and the bytes already there, by name.
pub fn partial_downloads(state_dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(defs_dir(state_dir).join("partial")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let sha = name.strip_suffix(".part")?;
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((sha.to_owned(), meta.len()))
        })
        .collect();
    out.sort();
    out
}

/// The timestamp and snapshot versions the agent already trusts (its
/// datastore, `state_dir/defs/tuf`): a server offering less is refused by
/// the updater as a rollback. `None` before the first successful load.
pub fn trusted_versions(state_dir: &Path) -> Option<(u64, u64)> {
    let dir = defs_dir(state_dir).join("tuf");
    let version = |file: &str| -> Option<u64> {
        let bytes = std::fs::read(dir.join(file)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.pointer("/signed/version")?.as_u64()
    };
    Some((version("timestamp.json")?, version("snapshot.json")?))
}
