//! The agent's updater: verify the signed metadata (`tough`, through the
//! agent's own transport), pick a delta or the full object, download it
//! resumably, check it against the signed hash and length, and install it
//! atomically, keeping the previous version.
//!
//! Under `state_dir/defs/`:
//!
//! ```text
//! root.json                     the root pinned at enrollment
//! tuf/                          tough's datastore: the newest trusted metadata (rollback protection)
//! cooldown.json                 Retry-After per update server
//! partial/<sha256>.part(.json)  downloads in progress, resumable
//! <channel>/installed.json      what is installed (the truth), and the previous version
//! <channel>/v<N>.<sha>.dat      installed content: current and previous
//! <channel>/current             symlink to the current .dat (what consumers read)
//! <channel>/state.json          the last attempt, reported at check-in
//! ```
//!
//! Expiry is checked here against the injected clock rather than by
//! `tough` (which reads the system clock), so tests control time.

mod error;
mod fetch;
mod probe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_transport::Transport;
use tether_wire::{ChannelState, Clock, LastError, UpdateMethod};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tough::{ExpirationEnforcement, RepositoryLoader};
use url::Url;

pub use error::UpdateError;
pub use probe::{ServerProbe, partial_downloads, probe_server, trusted_versions};

use crate::delta;
use crate::fsutil;
use crate::layout::{self, TargetKind, TargetMeta};
use error::disk_or_install;
use fetch::{FetchError, ToughTransport, Wanted};

/// Where the updater looks, and what it keeps.
#[derive(Debug, Clone)]
pub struct UpdaterConfig {
    /// The agent's state dir; the updater owns `state_dir/defs/`.
    pub state_dir: PathBuf,
    /// Update servers (base URLs of a definitions tree), in fallback order.
    pub servers: Vec<Url>,
}

/// The result of one channel's update.
#[derive(Debug)]
pub struct ChannelOutcome {
    pub channel: String,
    pub result: Result<Applied, UpdateError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    UpToDate {
        version: u64,
    },
    Installed {
        from: Option<u64>,
        version: u64,
        method: UpdateMethod,
        /// Bytes downloaded (or read from the bundle) for it.
        bytes: u64,
    },
}

/// What is installed for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub version: u64,
    pub sha256: String,
    pub length: u64,
    /// File name of the content, in the channel's directory.
    pub file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: OffsetDateTime,
    pub method: UpdateMethod,
    #[serde(default)]
    pub previous: Option<Box<Installed>>,
}

/// Retry settings within one cycle.
#[derive(Debug, Clone, Copy)]
struct Retry {
    rounds: u32,
    base: Duration,
    cap: Duration,
}

/// Called on the blocking thread right before a delta is applied. Tests
/// hold the apply there (a barrier) to show that check-ins go on meanwhile;
/// production passes none.
pub type ApplyHook = Arc<dyn Fn() + Send + Sync>;

/// The updater; clones share one lock, so updates never overlap.
///
/// Hashing, decompression, delta apply and the install's writes and fsyncs
/// run on tokio's blocking pool (`off_runtime`), never on the caller's
/// runtime thread: the agent runs one current-thread runtime, and a 100 MB
/// update must not delay its check-ins.
#[derive(Clone)]
pub struct Updater {
    cfg: UpdaterConfig,
    transport: Arc<Transport>,
    clock: Arc<dyn Clock>,
    retry: Retry,
    lock: Arc<Mutex<()>>,
    conns: fetch::ConnCache,
    apply_hook: Option<ApplyHook>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater").field("cfg", &self.cfg).finish()
    }
}

/// The signed view of the repository, once verified.
struct Verified {
    targets: Vec<(String, u64, String, TargetMeta)>,
}

/// Where a cycle gets its files.
enum Source<'a> {
    Server(&'a Url),
    Bundle(&'a Path),
}

impl Source<'_> {
    fn label(&self) -> String {
        match self {
            Source::Server(u) => u.to_string(),
            Source::Bundle(p) => p.display().to_string(),
        }
    }
}

impl Updater {
    pub fn new(cfg: UpdaterConfig, transport: Arc<Transport>, clock: Arc<dyn Clock>) -> Updater {
        Updater {
            cfg,
            transport,
            clock,
            retry: Retry {
                rounds: 3,
                base: Duration::from_secs(2),
                cap: Duration::from_secs(60),
            },
            lock: Arc::new(Mutex::new(())),
            conns: fetch::ConnCache::default(),
            apply_hook: None,
        }
    }

    /// See [`ApplyHook`].
    pub fn with_apply_hook(mut self, hook: Option<ApplyHook>) -> Updater {
        self.apply_hook = hook;
        self
    }

    /// Rounds over the server list within one cycle, and the full-jitter
    /// exponential backoff between them (base doubles up to `cap`).
    pub fn with_retry(mut self, rounds: u32, base: Duration, cap: Duration) -> Updater {
        self.retry = Retry {
            rounds: rounds.max(1),
            base,
            cap,
        };
        self
    }

    fn defs_dir(&self) -> PathBuf {
        defs_dir(&self.cfg.state_dir)
    }

    /// Checks and updates each channel. Each outcome is also persisted in
    /// the channel's `state.json`.
    pub async fn update(&self, channels: &[String]) -> Vec<ChannelOutcome> {
        let _guard = self.lock.lock().await;
        let _file_lock = match self.file_lock().await {
            Ok(l) => l,
            Err(e) => {
                return channels
                    .iter()
                    .map(|ch| ChannelOutcome {
                        channel: ch.clone(),
                        result: Err(error::copy(&e)),
                    })
                    .collect();
            }
        };
        let mut last: BTreeMap<String, (UpdateError, String)> = BTreeMap::new();
        let mut done: Vec<ChannelOutcome> = Vec::new();
        // A name from the policy or an action is outside input: one that is
        // not a valid channel name never becomes a path, and has no state
        // file to record its failure in.
        let (mut pending, refused): (Vec<String>, Vec<String>) = channels
            .iter()
            .cloned()
            .partition(|c| layout::valid_channel(c));
        for ch in refused {
            done.push(ChannelOutcome {
                result: Err(UpdateError::channel_invalid(&ch)),
                channel: ch,
            });
        }
        if self.cfg.servers.is_empty() {
            for ch in pending {
                self.record(&ch, Some(&UpdateError::NoServer), None, None);
                done.push(ChannelOutcome {
                    channel: ch,
                    result: Err(UpdateError::NoServer),
                });
            }
            return done;
        }
        'rounds: for round in 0..self.retry.rounds {
            if round > 0 {
                if !last.values().any(|(e, _)| e.is_transient()) {
                    break;
                }
                let delay = full_jitter(self.retry.base, self.retry.cap, round);
                tokio::time::sleep(delay).await;
            }
            for server in &self.cfg.servers {
                if pending.is_empty() {
                    break 'rounds;
                }
                if let Some(wait) = cooldown_for(&self.cfg.state_dir, server, self.clock.now()) {
                    for ch in &pending {
                        last.insert(
                            ch.clone(),
                            (
                                UpdateError::CoolingDown {
                                    server: server.to_string(),
                                    status: None,
                                    wait,
                                },
                                server.to_string(),
                            ),
                        );
                    }
                    continue;
                }
                let verified = match self.load(&Source::Server(server)).await {
                    Ok(v) => v,
                    Err(e) => {
                        self.note_cooldown(server, &e);
                        let give_up = !e.try_next_server();
                        for ch in &pending {
                            last.insert(ch.clone(), (error::copy(&e), server.to_string()));
                        }
                        if give_up {
                            break 'rounds;
                        }
                        continue;
                    }
                };
                let mut still = Vec::new();
                for ch in pending.drain(..) {
                    match self.apply(&ch, &verified, &Source::Server(server)).await {
                        Ok(applied) => {
                            self.record(&ch, None, Some(server), None);
                            last.remove(&ch);
                            done.push(ChannelOutcome {
                                channel: ch,
                                result: Ok(applied),
                            });
                        }
                        Err(e) => {
                            self.note_cooldown(server, &e);
                            if e.try_next_server() {
                                still.push(ch.clone());
                                last.insert(ch, (e, server.to_string()));
                            } else {
                                self.record(&ch, Some(&e), Some(server), None);
                                done.push(ChannelOutcome {
                                    channel: ch,
                                    result: Err(e),
                                });
                            }
                        }
                    }
                }
                pending = still;
            }
        }
        for ch in pending {
            let (e, server) = last.remove(&ch).unwrap_or((
                UpdateError::NoServer,
                self.cfg
                    .servers
                    .first()
                    .map(Url::to_string)
                    .unwrap_or_default(),
            ));
            let url = Url::parse(&server).ok();
            self.record(&ch, Some(&e), url.as_ref(), None);
            done.push(ChannelOutcome {
                channel: ch,
                result: Err(e),
            });
        }
        // In the order asked, whatever order they finished in.
        done.sort_by_key(|o| channels.iter().position(|c| *c == o.channel));
        done
    }

    /// Verifies and installs an offline bundle (`tether defs export`)
    /// exactly like an online update: the same signed metadata, rollback
    /// protection, hashes and atomic install. Only the timestamp's one-day
    /// expiry is not enforced, since a bundle is carried by hand; the
    /// targets and snapshot expiry still are.
    pub async fn import_bundle(
        &self,
        bundle: &Path,
        channels: Option<&[String]>,
    ) -> Result<Vec<ChannelOutcome>, UpdateError> {
        let _guard = self.lock.lock().await;
        let _file_lock = self.file_lock().await?;
        let unpack = tempfile::Builder::new()
            .prefix("bundle-")
            .tempdir_in(self.defs_dir_created()?)
            .map_err(|e| disk_or_install("creating a directory in", self.defs_dir(), &e))?;
        unpack_bundle(bundle, unpack.path())?;
        let source = Source::Bundle(unpack.path());
        let verified = self.load(&source).await?;
        let wanted: Vec<String> = match channels {
            Some(c) => c.to_vec(),
            None => {
                let mut all: Vec<String> = verified
                    .targets
                    .iter()
                    .filter(|t| t.3.kind == TargetKind::Full)
                    .map(|t| t.3.channel.clone())
                    .collect();
                all.sort();
                all.dedup();
                all
            }
        };
        let mut out = Vec::new();
        for ch in wanted {
            let result = self.apply(&ch, &verified, &source).await;
            let result = result.map(|a| match a {
                Applied::Installed {
                    from,
                    version,
                    bytes,
                    ..
                } => Applied::Installed {
                    from,
                    version,
                    method: UpdateMethod::Bundle,
                    bytes,
                },
                other => other,
            });
            self.record(&ch, result.as_ref().err(), None, Some(bundle));
            out.push(ChannelOutcome {
                channel: ch,
                result,
            });
        }
        Ok(out)
    }

    /// Serializes updates across processes too (`update --now` while the
    /// service runs): an exclusive `flock` on `defs/update.lock`, released
    /// when the returned guard drops or the process dies.
    async fn file_lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, UpdateError> {
        let path = self.defs_dir_created()?.join("update.lock");
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| disk_or_install("opening", path.clone(), &e))?;
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
                |(_, errno)| UpdateError::Install {
                    what: "locking",
                    path: path.clone(),
                    detail: errno.desc().to_owned(),
                },
            )
        })
        .await
        .map_err(|e| UpdateError::Install {
            what: "locking",
            path: self.defs_dir().join("update.lock"),
            detail: e.to_string(),
        })?
    }

    fn defs_dir_created(&self) -> Result<PathBuf, UpdateError> {
        let d = self.defs_dir();
        std::fs::create_dir_all(&d).map_err(|e| disk_or_install("creating", d.clone(), &e))?;
        Ok(d)
    }

    /// Loads and verifies the metadata from a source with `tough`, then
    /// enforces expiry with our clock.
    async fn load(&self, source: &Source<'_>) -> Result<Verified, UpdateError> {
        let label = source.label();
        let root_path = self.defs_dir().join("root.json");
        let root = std::fs::read(&root_path).map_err(|e| UpdateError::NotTrusted {
            path: root_path.clone(),
            detail: e.to_string(),
        })?;
        let datastore = self.defs_dir_created()?.join("tuf");
        std::fs::create_dir_all(&datastore)
            .map_err(|e| disk_or_install("creating", datastore.clone(), &e))?;
        // tough remembers the newest system time it has seen and refuses to
        // load once the clock goes back (an NTP correction after a clock
        // that ran ahead would lock the agent out for good). Expiry is ours
        // to check, against the injected clock, so its memory is dropped.
        match std::fs::remove_file(datastore.join("latest_known_time.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(disk_or_install("resetting", datastore.clone(), &e));
            }
            _ => {}
        }
        let (meta_url, targets_url) = match source {
            Source::Server(u) => (
                join_dir(u, layout::METADATA_DIR)?,
                join_dir(u, layout::TARGETS_DIR)?,
            ),
            Source::Bundle(p) => {
                let file_url = |sub: &str| {
                    Url::from_directory_path(p.join(sub)).map_err(|()| UpdateError::BundleInvalid {
                        path: p.to_path_buf(),
                        detail: "the unpack directory is not an absolute path".into(),
                    })
                };
                (
                    file_url(layout::METADATA_DIR)?,
                    file_url(layout::TARGETS_DIR)?,
                )
            }
        };
        let loader = verifying_loader(&root, meta_url, targets_url, datastore);
        let loader = match source {
            Source::Server(_) => loader.transport(ToughTransport {
                transport: self.transport.clone(),
                clock: self.clock.clone(),
                conns: self.conns.clone(),
            }),
            Source::Bundle(_) => loader.transport(tough::FilesystemTransport),
        };
        let repo = loader
            .load()
            .await
            .map_err(|e| tough_error(&label, e, source))?;
        let now = self.clock.now();
        let with_timestamp = matches!(source, Source::Server(_));
        if let Some((role, expires)) = expired_role(&repo, now, with_timestamp) {
            return Err(UpdateError::Expired {
                server: label,
                role,
                expires: expires.to_string(),
                now: layout::rfc3339(now),
            });
        }
        Ok(Verified {
            targets: sane_targets(&repo),
        })
    }

    /// Brings one channel to the newest signed version.
    async fn apply(
        &self,
        channel: &str,
        v: &Verified,
        source: &Source<'_>,
    ) -> Result<Applied, UpdateError> {
        let label = source.label();
        channel_dir(&self.cfg.state_dir, channel)?;
        let full = v
            .targets
            .iter()
            .filter(|t| t.3.channel == channel && t.3.kind == TargetKind::Full)
            .max_by_key(|t| t.3.version)
            .ok_or_else(|| UpdateError::ChannelUnknown {
                server: label.clone(),
                channel: channel.to_owned(),
            })?;
        let newest = full.3.version;
        let installed = read_installed(&self.cfg.state_dir, channel);
        if let Some(inst) = &installed {
            if inst.version == newest && inst.sha256 == full.3.content_sha256 {
                return Ok(Applied::UpToDate { version: newest });
            }
            if inst.version >= newest {
                return Err(UpdateError::Rollback {
                    server: label,
                    detail: format!(
                        "it offers {channel} v{newest} while v{} is installed",
                        inst.version
                    ),
                });
            }
        }
        let partial = self.defs_dir_created()?.join("partial");
        // A delta from exactly what is installed, when one is signed.
        let mut delta_error = None;
        if let Some(inst) = &installed
            && let Some(d) = v.targets.iter().find(|t| {
                t.3.channel == channel
                    && t.3.kind == TargetKind::Delta
                    && t.3.version == newest
                    && t.3.base_version == Some(inst.version)
            })
        {
            match self.via_delta(channel, inst, d, source, &partial).await {
                Ok((content, bytes)) => {
                    self.install(channel, newest, &full.3, content, UpdateMethod::Delta)
                        .await?;
                    return Ok(Applied::Installed {
                        from: Some(inst.version),
                        version: newest,
                        method: UpdateMethod::Delta,
                        bytes,
                    });
                }
                // Network trouble is not the delta's fault: let the caller
                // move to the next server rather than fetch the full object.
                Err(
                    e @ (UpdateError::Transport { .. }
                    | UpdateError::Interrupted { .. }
                    | UpdateError::ProxyDownload { .. }
                    | UpdateError::CoolingDown { .. }
                    | UpdateError::DiskFull { .. }),
                ) => return Err(e),
                Err(e) => {
                    tracing::warn!(channel, error = %e, code = %e.code(), "delta failed; taking the full object");
                    delta_error = Some(e);
                }
            }
        }
        let path = self.fetch(full, source, &partial).await?;
        let (name, meta) = (full.0.clone(), full.3.clone());
        let (content, bytes) = off_runtime(move || {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let compressed =
                std::fs::read(&path).map_err(|e| disk_or_install("reading", path.clone(), &e))?;
            let content =
                delta::decompress_full(&compressed, meta.content_length).map_err(|e| {
                    UpdateError::HashMismatch {
                        server: label.clone(),
                        name: name.clone(),
                        expected: meta.content_sha256.clone(),
                        actual: format!("undecodable ({e})"),
                    }
                })?;
            check_content(&label, &name, &meta, &content)?;
            Ok((content, bytes, path))
        })
        .await
        .map(|(content, bytes, path)| {
            if matches!(source, Source::Server(_)) {
                let _ = std::fs::remove_file(&path);
            }
            (content, bytes)
        })?;
        self.install(channel, newest, &full.3, content, UpdateMethod::Full)
            .await?;
        if let Some(e) = delta_error {
            save_note(&self.cfg.state_dir, channel, &e, self.clock.now());
        }
        Ok(Applied::Installed {
            from: installed.map(|i| i.version),
            version: newest,
            method: UpdateMethod::Full,
            bytes,
        })
    }

    async fn via_delta(
        &self,
        channel: &str,
        inst: &Installed,
        d: &(String, u64, String, TargetMeta),
        source: &Source<'_>,
        partial: &Path,
    ) -> Result<(Vec<u8>, u64), UpdateError> {
        let label = source.label();
        if d.3.base_sha256.as_deref() != Some(inst.sha256.as_str()) {
            return Err(UpdateError::DeltaFailed {
                name: d.0.clone(),
                detail: format!(
                    "it applies to {} but the installed v{} is {}",
                    d.3.base_sha256.as_deref().unwrap_or("?"),
                    inst.version,
                    inst.sha256
                ),
            });
        }
        let path = self.fetch(d, source, partial).await?;
        let base_path = channel_dir(&self.cfg.state_dir, channel)?.join(&inst.file);
        let (name, meta) = (d.0.clone(), d.3.clone());
        let remove = matches!(source, Source::Server(_));
        let hook = self.apply_hook.clone();
        off_runtime(move || {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let patch =
                std::fs::read(&path).map_err(|e| disk_or_install("reading", path.clone(), &e))?;
            let base =
                std::fs::read(&base_path).map_err(|e| disk_or_install("reading", base_path, &e))?;
            if let Some(hook) = hook {
                hook();
            }
            let content = delta::apply_delta(&base, &patch, meta.content_length).map_err(|e| {
                UpdateError::DeltaFailed {
                    name: name.clone(),
                    detail: e.to_string(),
                }
            })?;
            if remove {
                let _ = std::fs::remove_file(&path);
            }
            check_content(&label, &name, &meta, &content).map_err(|e| {
                UpdateError::DeltaFailed {
                    name: name.clone(),
                    detail: e.to_string(),
                }
            })?;
            Ok((content, bytes))
        })
        .await
    }

    async fn fetch(
        &self,
        t: &(String, u64, String, TargetMeta),
        source: &Source<'_>,
        partial: &Path,
    ) -> Result<PathBuf, UpdateError> {
        let want = Wanted {
            name: &t.0,
            rel_path: layout::target_path(&t.2, &t.0),
            sha256: &t.2,
            length: t.1,
        };
        match source {
            Source::Server(server) => {
                fetch::download(
                    &self.transport,
                    &self.conns,
                    self.clock.as_ref(),
                    server,
                    &want,
                    partial,
                )
                .await
            }
            Source::Bundle(dir) => fetch::from_dir(dir, &want).await,
        }
    }

    /// Installs `content` as `version`: content file (fsync, rename),
    /// then `installed.json` (the truth), then the `current` symlink, then
    /// old files are removed. A kill between any two steps leaves a
    /// complete version installed: the old one until `installed.json`
    /// moves, the new one after.
    async fn install(
        &self,
        channel: &str,
        version: u64,
        meta: &TargetMeta,
        content: Vec<u8>,
        method: UpdateMethod,
    ) -> Result<(), UpdateError> {
        let dir = channel_dir(&self.cfg.state_dir, channel)?;
        let (state_dir, channel) = (self.cfg.state_dir.clone(), channel.to_owned());
        let (meta, now) = (meta.clone(), self.clock.now());
        off_runtime(move || {
            install_blocking(
                &state_dir, &channel, dir, version, &meta, &content, method, now,
            )
        })
        .await
    }
}

/// The one way metadata is loaded: `tough` verifies the signatures from
/// the pinned `root` on (walking the root chain), keeps what it trusts in
/// `datastore` (rollback protection), and leaves expiry to us, checked
/// against the injected clock ([`expired_role`]).
fn verifying_loader<'a, R: AsRef<[u8]>>(
    root: &'a R,
    meta_url: Url,
    targets_url: Url,
    datastore: PathBuf,
) -> RepositoryLoader<'a> {
    RepositoryLoader::new(root, meta_url, targets_url)
        .datastore(datastore)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
}

/// The first role whose signed expiry has passed at `now` (the timestamp
/// only when asked: a hand-carried bundle's one-day timestamp is not
/// enforced).
fn expired_role(
    repo: &tough::Repository,
    now: OffsetDateTime,
    with_timestamp: bool,
) -> Option<(&'static str, jiff::Timestamp)> {
    let mut checks: Vec<(&'static str, jiff::Timestamp)> = vec![
        ("root", repo.root().signed.expires),
        ("snapshot", repo.snapshot().signed.expires),
        ("targets", repo.targets().signed.expires),
    ];
    if with_timestamp {
        checks.push(("timestamp", repo.timestamp().signed.expires));
    }
    checks
        .into_iter()
        .find(|(_, expires)| expires.as_second() < now.unix_timestamp())
}

/// The signed targets that are also sane: a name or hash that could become
/// a path outside the state dir is dropped (and the channel then reads as
/// unknown).
fn sane_targets(repo: &tough::Repository) -> Vec<(String, u64, String, TargetMeta)> {
    repo.all_targets()
        .filter_map(|(name, t)| {
            let meta = TargetMeta::from_custom(&t.custom)?;
            if !layout::target_is_sane(name.raw(), &meta) {
                tracing::warn!(target = ?name.raw().chars().take(100).collect::<String>(), "ignoring a signed target whose name or hashes are not valid");
                return None;
            }
            Some((
                name.raw().to_owned(),
                t.length,
                hex::encode(t.hashes.sha256.clone().into_vec()),
                meta,
            ))
        })
        .collect()
}

/// Runs disk- and CPU-heavy work (hashing, decompression, delta apply,
/// writes and fsyncs) on tokio's blocking pool, so the caller's runtime
/// thread stays free for check-ins.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, UpdateError> + Send + 'static,
) -> Result<T, UpdateError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(UpdateError::Install {
            what: "running the install worker for",
            path: PathBuf::from("defs"),
            detail: e.to_string(),
        })
    })
}

/// The blocking half of [`Updater::install`].
#[allow(clippy::too_many_arguments)]
fn install_blocking(
    state_dir: &Path,
    channel: &str,
    dir: PathBuf,
    version: u64,
    meta: &TargetMeta,
    content: &[u8],
    method: UpdateMethod,
    now: OffsetDateTime,
) -> Result<(), UpdateError> {
    {
        std::fs::create_dir_all(&dir).map_err(|e| disk_or_install("creating", dir.clone(), &e))?;
        let sha = &meta.content_sha256;
        let file = format!("v{version}.{}.dat", &sha[..sha.len().min(16)]);
        let path = dir.join(&file);
        fsutil::write_atomic(&path, content).map_err(|(what, p, e)| {
            // Leave no half-written temporary behind on a full disk.
            let _ = std::fs::remove_file(fsutil::tmp_path(&path));
            disk_or_install(what, p, &e)
        })?;
        let previous = read_installed(state_dir, channel).map(|mut p| {
            p.previous = None;
            Box::new(p)
        });
        let record = Installed {
            version,
            sha256: sha.clone(),
            length: content.len() as u64,
            file: file.clone(),
            installed_at: now,
            method,
            previous,
        };
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        fsutil::write_atomic(&dir.join("installed.json"), &bytes)
            .map_err(|(what, p, e)| disk_or_install(what, p, &e))?;
        point_current(&dir, &file)?;
        // Keep the current and the previous content, nothing else.
        let keep: Vec<String> = std::iter::once(file)
            .chain(record.previous.as_ref().map(|p| p.file.clone()))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".dat") && !keep.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

impl Updater {
    fn note_cooldown(&self, server: &Url, e: &UpdateError) {
        if let Some(wait) = e.retry_after() {
            set_cooldown(&self.cfg.state_dir, server, self.clock.now(), wait);
        }
    }

    /// Persists the channel's last attempt for check-in.
    fn record(
        &self,
        channel: &str,
        error: Option<&UpdateError>,
        server: Option<&Url>,
        bundle: Option<&Path>,
    ) {
        let now = self.clock.now();
        let mut st = read_state(&self.cfg.state_dir, channel);
        st.state.channel = channel.to_owned();
        st.state.last_attempt_at = Some(now);
        st.state.server = server
            .map(Url::to_string)
            .or_else(|| bundle.map(|b| format!("bundle {}", b.display())));
        st.state.via_proxy = server.and_then(|s| {
            s.host_str()
                .and_then(|h| self.transport.proxy_for(h))
                .map(|p| p.redacted())
        });
        match error {
            None => {
                st.state.last_error = None;
                st.state.consecutive_failures = 0;
            }
            Some(e) => {
                st.state.last_error = Some(LastError {
                    code: e.code(),
                    message: e.to_string(),
                    at: now,
                });
                st.state.consecutive_failures = st.state.consecutive_failures.saturating_add(1);
            }
        }
        if let Some(inst) = read_installed(&self.cfg.state_dir, channel) {
            st.state.version = Some(inst.version);
            st.state.sha256 = Some(inst.sha256);
            st.state.updated_at = Some(inst.installed_at);
            st.state.method = Some(inst.method);
        }
        write_state(&self.cfg.state_dir, channel, &st);
    }
}

/// `state.json`: the wire state plus local notes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalState {
    #[serde(flatten)]
    state: ChannelState,
    /// The last delta that failed and was replaced by the full object.
    #[serde(default)]
    last_delta_error: Option<LastError>,
}

fn read_state(state_dir: &Path, channel: &str) -> LocalState {
    channel_dir(state_dir, channel)
        .ok()
        .and_then(|d| std::fs::read(d.join("state.json")).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_state(state_dir: &Path, channel: &str, st: &LocalState) {
    let Ok(dir) = channel_dir(state_dir, channel) else {
        return;
    };
    let path = dir.join("state.json");
    let bytes = serde_json::to_vec_pretty(st).unwrap_or_default();
    if let Err((what, p, e)) = fsutil::write_atomic(&path, &bytes) {
        tracing::warn!(path = %p.display(), error = %e, "{what} the definitions state failed");
    }
}

fn save_note(state_dir: &Path, channel: &str, e: &UpdateError, now: OffsetDateTime) {
    let mut st = read_state(state_dir, channel);
    st.last_delta_error = Some(LastError {
        code: e.code(),
        message: e.to_string(),
        at: now,
    });
    write_state(state_dir, channel, &st);
}

/// The last delta failure of a channel (replaced by the full object), if any.
pub fn last_delta_error(state_dir: &Path, channel: &str) -> Option<LastError> {
    read_state(state_dir, channel).last_delta_error
}

fn check_content(
    server: &str,
    name: &str,
    meta: &TargetMeta,
    content: &[u8],
) -> Result<(), UpdateError> {
    let actual = delta::sha256_hex(content);
    if actual != meta.content_sha256 || content.len() as u64 != meta.content_length {
        return Err(UpdateError::HashMismatch {
            server: server.to_owned(),
            name: name.to_owned(),
            expected: meta.content_sha256.clone(),
            actual,
        });
    }
    Ok(())
}

fn point_current(dir: &Path, file: &str) -> Result<(), UpdateError> {
    let link = dir.join("current");
    let tmp = dir.join(format!(".current.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(file, &tmp)
        .map_err(|e| disk_or_install("linking", tmp.clone(), &e))?;
    fsutil::rename_durable(&tmp, &link).map_err(|(what, p, e)| disk_or_install(what, p, &e))
}

fn defs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("defs")
}

/// A channel's directory. The name is checked every time it becomes a path
/// ([`layout::valid_channel`]: no `/`, no `..`, no NUL, at most 64
/// characters), whichever way it arrived: policy, action, signed metadata,
/// command line.
fn channel_dir(state_dir: &Path, channel: &str) -> Result<PathBuf, UpdateError> {
    if layout::valid_channel(channel) {
        Ok(defs_dir(state_dir).join(channel))
    } else {
        Err(UpdateError::channel_invalid(channel))
    }
}

/// What consumers read: `state_dir/defs/<channel>/current`; `None` for a
/// name that is not a valid channel name.
pub fn installed_path(state_dir: &Path, channel: &str) -> Option<PathBuf> {
    channel_dir(state_dir, channel)
        .ok()
        .map(|d| d.join("current"))
}

/// What is installed for a channel, if anything valid is. A record naming a
/// content file outside the channel's directory is not valid.
pub fn read_installed(state_dir: &Path, channel: &str) -> Option<Installed> {
    let dir = channel_dir(state_dir, channel).ok()?;
    let bytes = std::fs::read(dir.join("installed.json")).ok()?;
    let installed: Installed = serde_json::from_slice(&bytes).ok()?;
    let plain = |f: &str| layout::plain_file_name(f) && f.ends_with(".dat");
    let previous_ok = installed.previous.as_ref().is_none_or(|p| plain(&p.file));
    (plain(&installed.file) && previous_ok).then_some(installed)
}

/// Each channel's state, for check-in.
///
/// Names that are not valid channel names are left out: they never had a
/// state, and reporting them back would only echo hostile input.
pub fn channel_states(state_dir: &Path, channels: &[String]) -> Vec<ChannelState> {
    channels
        .iter()
        .filter(|ch| layout::valid_channel(ch))
        .map(|ch| {
            let mut st = read_state(state_dir, ch).state;
            st.channel = ch.clone();
            if let Some(inst) = read_installed(state_dir, ch) {
                st.version = Some(inst.version);
                st.sha256 = Some(inst.sha256);
                st.updated_at = Some(inst.installed_at);
                st.method = Some(inst.method);
            }
            st
        })
        .collect()
}

/// Pins the repository root at enrollment. It must parse as signed TUF
/// root metadata; the signature chain is checked at every update.
pub fn pin_root(state_dir: &Path, root_json: &str) -> Result<(), UpdateError> {
    let path = defs_dir(state_dir).join("root.json");
    serde_json::from_str::<tough::schema::Signed<tough::schema::Root>>(root_json).map_err(|e| {
        UpdateError::NotTrusted {
            path: path.clone(),
            detail: format!("the server's root metadata does not parse: {e}"),
        }
    })?;
    fsutil::write_atomic(&path, root_json.as_bytes())
        .map_err(|(what, p, e)| disk_or_install(what, p, &e))?;
    // A new root (re-enrollment) starts a new chain of trust.
    let _ = std::fs::remove_dir_all(defs_dir(state_dir).join("tuf"));
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cooldowns(BTreeMap<String, i64>);

fn cooldown_path(state_dir: &Path) -> PathBuf {
    defs_dir(state_dir).join("cooldown.json")
}

fn read_cooldowns(state_dir: &Path) -> Cooldowns {
    std::fs::read(cooldown_path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn set_cooldown(state_dir: &Path, server: &Url, now: OffsetDateTime, wait: Duration) {
    // A server may not park the fleet for more than a day.
    let wait = wait.min(Duration::from_secs(86_400));
    let mut c = read_cooldowns(state_dir);
    c.0.insert(
        server.to_string(),
        now.unix_timestamp() + wait.as_secs() as i64,
    );
    let bytes = serde_json::to_vec(&c).unwrap_or_default();
    let _ = fsutil::write_atomic(&cooldown_path(state_dir), &bytes);
}

fn cooldown_for(state_dir: &Path, server: &Url, now: OffsetDateTime) -> Option<Duration> {
    let until = *read_cooldowns(state_dir).0.get(server.as_str())?;
    let left = until - now.unix_timestamp();
    (left > 0).then(|| Duration::from_secs(left as u64))
}

/// The longest cool-down still running across update servers, if any.
pub fn cooldown_remaining(state_dir: &Path, now: OffsetDateTime) -> Option<Duration> {
    read_cooldowns(state_dir)
        .0
        .values()
        .map(|until| until - now.unix_timestamp())
        .filter(|left| *left > 0)
        .max()
        .map(|left| Duration::from_secs(left as u64))
}

/// The pause between rounds: the shared full-jitter backoff with a fresh
/// random sample (the arithmetic is `tether_transport::backoff`'s, tested
/// there).
fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    tether_transport::backoff::retry_delay(
        base,
        cap,
        attempt,
        tether_transport::backoff::Jitter::Full,
        rand::rng().random::<f64>(),
    )
}

fn join_dir(base: &Url, sub: &str) -> Result<Url, UpdateError> {
    let mut s = base.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Url::parse(&format!("{s}{sub}/")).map_err(|e| UpdateError::BadUrl {
        server: base.to_string(),
        path: format!("{sub}/"),
        detail: e.to_string(),
    })
}

/// Maps `tough`'s errors onto ours, finding our transport's error inside.
fn tough_error(label: &str, e: tough::error::Error, source: &Source<'_>) -> UpdateError {
    use tough::error::Error as T;
    let server = label.to_owned();
    if let Some(f) = fetch::find_fetch_error(&e) {
        return match f {
            FetchError::Transport(t) => UpdateError::Copied {
                code: t.code(),
                message: format!("update server {server}: {t}"),
                transient: t.is_retriable(),
                next_server: true,
            },
            FetchError::Status {
                status,
                retry_after: Some(wait),
            } if *status == 429 || *status == 503 => UpdateError::CoolingDown {
                server,
                status: Some(*status),
                wait: *wait,
            },
            FetchError::Status { status, .. } => UpdateError::Status {
                server,
                path: "metadata".into(),
                status: *status,
            },
        };
    }
    let detail = e.to_string();
    match e {
        T::OlderMetadata { .. }
        | T::SnapshotRoleRollback { .. }
        | T::OlderSnapshotInTimestamp { .. } => UpdateError::Rollback { server, detail },
        T::MaxSizeExceeded {
            max_size,
            specifier,
            ..
        } => UpdateError::MetadataTooLarge {
            server,
            specifier: specifier.to_owned(),
            limit: max_size,
        },
        // A file that is missing: the server or bundle is incomplete.
        T::Transport { source: ref t, .. }
            if t.kind() == tough::TransportErrorKind::FileNotFound =>
        {
            match source {
                Source::Server(_) => UpdateError::Status {
                    server,
                    path: format!("metadata ({detail})"),
                    status: 404,
                },
                Source::Bundle(_) => UpdateError::BundleInvalid {
                    path: PathBuf::from(label),
                    detail,
                },
            }
        }
        // Anything else tough reports while reading a file is a file that
        // does not match the length or hash signed for it.
        T::Transport { .. } => UpdateError::SignatureInvalid { server, detail },
        T::DatastoreCreate { .. }
        | T::DatastoreInit { .. }
        | T::DatastoreOpen { .. }
        | T::DatastoreRemove { .. }
        | T::DatastoreSerialize { .. } => UpdateError::Install {
            what: "using the trusted metadata store",
            path: PathBuf::from("defs/tuf"),
            detail,
        },
        _ => UpdateError::SignatureInvalid { server, detail },
    }
}

/// Unpacks a bundle: plain files under `metadata/` and `targets/` only,
/// with safe names, bounded in count and size. Hostile input (a bundle is
/// carried by hand): public so the fuzz target calls this very function.
pub fn unpack_bundle(bundle: &Path, into: &Path) -> Result<(), UpdateError> {
    const MAX_ENTRIES: usize = 10_000;
    const MAX_BYTES: u64 = 8 * 1024 * 1024 * 1024;
    let bad = |detail: String| UpdateError::BundleInvalid {
        path: bundle.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(bundle).map_err(|e| bad(e.to_string()))?;
    let mut ar = tar::Archive::new(file);
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let (mut count, mut total) = (0usize, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("a damaged entry: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry name is not valid: {e}")))?
            .into_owned();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("{} is not a plain file", path.display())));
        }
        let parts: Vec<String> = path
            .components()
            .map(|c| match c {
                std::path::Component::Normal(s) => Ok(s.to_string_lossy().into_owned()),
                _ => Err(bad(format!(
                    "{} is not a safe relative name",
                    path.display()
                ))),
            })
            .collect::<Result<_, _>>()?;
        let ok = parts.len() == 2
            && (parts[0] == layout::METADATA_DIR || parts[0] == layout::TARGETS_DIR)
            && !parts[1].starts_with('.');
        if !ok {
            return Err(bad(format!(
                "{} is outside metadata/ and targets/",
                path.display()
            )));
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_BYTES {
            return Err(bad("larger than 8 GiB".into()));
        }
        let dest = into.join(&parts[0]).join(&parts[1]);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| disk_or_install("creating", parent.to_path_buf(), &e))?;
        }
        let mut out = std::fs::File::create(&dest)
            .map_err(|e| disk_or_install("creating", dest.clone(), &e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| {
            if fsutil::is_disk_full(&e) {
                disk_or_install("writing", dest.clone(), &e)
            } else {
                bad(format!("{} is truncated: {e}", path.display()))
            }
        })?;
    }
    if !into
        .join(layout::METADATA_DIR)
        .join("timestamp.json")
        .exists()
    {
        return Err(bad("it holds no metadata/timestamp.json".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
