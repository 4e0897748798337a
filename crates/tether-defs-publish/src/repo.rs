//! The control plane's definitions repository: a TUF repository (signed
//! with `tough`'s editor) whose targets are each channel's newest full
//! object plus deltas from every recent version to it.
//!
//! On disk, under the repository directory (the server's `data_dir/defs`):
//!
//! ```text
//! keys/{root,targets,snapshot,timestamp}.pem   ed25519 PKCS#8, 0600
//! objects/<sha256>                             every published content, by hash (the history)
//! state.json                                   versions published, metadata versions
//! repo/metadata/N.root.json, timestamp.json, N.snapshot.json, N.targets.json
//! repo/targets/<sha256>.<name>                 immutable, hash-named objects
//! ```
//!
//! `repo/` is the tree served at `/defs/` and copied by `mirror`. The root
//! key signs only root metadata, so it can live offline after the first
//! start: `rotate_key` takes it from wherever the admin keeps it.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{Hashes, KeyHolder, RoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;

use tether_wire::{Clock, DefsVersion, DeltaInfo, ErrorCode};

use tether_defs::delta::{self, ContentKind, DeltaKind};
use tether_defs::layout::rfc3339;
use tether_defs::layout::{self, TargetKind, TargetMeta};

/// Deltas are built from every version published this recently…
const DELTA_WINDOW: time::Duration = time::Duration::days(31);
/// …but from at most this many of them, so a channel published every
/// 10 minutes does not make a publish quadratic.
const MAX_DELTAS: usize = 180;
/// Root metadata lives a year; rotate before that.
const ROOT_LIFETIME: time::Duration = time::Duration::days(365);
/// Targets and snapshot: re-signed at every publish and by `refresh`.
const TARGETS_LIFETIME: time::Duration = time::Duration::days(30);
/// Timestamp: short, so a frozen mirror is noticed within a day.
const TIMESTAMP_LIFETIME: time::Duration = time::Duration::days(1);

/// The roles of a TUF repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl RoleName {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Root => "root",
            RoleName::Targets => "targets",
            RoleName::Snapshot => "snapshot",
            RoleName::Timestamp => "timestamp",
        }
    }

    fn role_type(self) -> RoleType {
        match self {
            RoleName::Root => RoleType::Root,
            RoleName::Targets => RoleType::Targets,
            RoleName::Snapshot => RoleType::Snapshot,
            RoleName::Timestamp => RoleType::Timestamp,
        }
    }
}

impl std::str::FromStr for RoleName {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, RepoError> {
        match s {
            "root" => Ok(RoleName::Root),
            "targets" => Ok(RoleName::Targets),
            "snapshot" => Ok(RoleName::Snapshot),
            "timestamp" => Ok(RoleName::Timestamp),
            other => Err(RepoError::BadRole {
                role: other.to_owned(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    #[error(
        "the channel name {name:?} is not valid (1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"
    )]
    ChannelInvalid { name: String },
    #[error("the definitions file is empty")]
    Empty,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the repository state {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the key {path} is not usable: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("signing the {role} metadata failed: {detail}")]
    Sign { role: &'static str, detail: String },
    #[error("{role:?} is not a role (root, targets, snapshot, timestamp)")]
    BadRole { role: String },
    #[error("none of the given root keys is a current root key: {detail}")]
    NotARootKey { detail: String },
    #[error("no definitions repository in {path} to join")]
    JoinNoRepository { path: PathBuf },
    #[error("the keys given cannot sign the join: {detail}")]
    JoinKeys { detail: String },
    #[error("{path} is the shared repository itself")]
    JoinSame { path: PathBuf },
    #[error("building a delta failed: {0}")]
    Delta(#[from] delta::DeltaError),
}

impl RepoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RepoError::ChannelInvalid { .. } => ErrorCode::ChannelInvalid,
            RepoError::Empty => ErrorCode::DefsEmpty,
            RepoError::BadRole { .. } | RepoError::NotARootKey { .. } | RepoError::Key { .. } => {
                ErrorCode::InvalidField
            }
            RepoError::JoinNoRepository { .. } => ErrorCode::DefsJoinNoRepository,
            RepoError::JoinKeys { .. } => ErrorCode::DefsJoinKeys,
            RepoError::JoinSame { .. } => ErrorCode::DefsJoinSame,
            _ => ErrorCode::Internal,
        }
    }
}

/// Checks a channel name (see [`layout::valid_channel`]).
pub fn validate_channel(name: &str) -> Result<(), RepoError> {
    if layout::valid_channel(name) {
        Ok(())
    } else {
        Err(RepoError::ChannelInvalid {
            name: name.to_owned(),
        })
    }
}

/// One target listed in the current targets metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ListedTarget {
    name: String,
    length: u64,
    sha256: String,
    meta: TargetMeta,
}

/// The repository's own record, rewritten atomically after each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    root_version: u64,
    targets_version: u64,
    snapshot_version: u64,
    timestamp_version: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    targets_expires: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    timestamp_expires: Option<OffsetDateTime>,
    /// Every version ever published, oldest first.
    versions: Vec<DefsVersion>,
    /// What the current targets metadata lists, per channel.
    listed: BTreeMap<String, Vec<ListedTarget>>,
}

/// A handle on the repository; clones share it. Changes are serialized.
#[derive(Clone)]
pub struct Repo {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Repo {
    /// Opens the repository under `dir`, creating keys, root v1 and empty
    /// signed metadata on first use.
    pub async fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Repo, RepoError> {
        Repo::open_with_root_key(dir, clock, None).await
    }

    /// Like [`Repo::open`], but a new repository's root is signed by
    /// `offline_root` (from `tether defs keygen`, on removable media), which
    /// is read and never copied: only the online roles' keys (targets,
    /// snapshot, timestamp) are written under `keys/`. An existing
    /// repository ignores it.
    pub async fn open_with_root_key(
        dir: &Path,
        clock: Arc<dyn Clock>,
        offline_root: Option<&Path>,
    ) -> Result<Repo, RepoError> {
        for sub in ["keys", "objects", "repo/metadata", "repo/targets"] {
            let p = dir.join(sub);
            tokio::fs::create_dir_all(&p)
                .await
                .map_err(|source| RepoError::Io {
                    what: "creating",
                    path: p.clone(),
                    source,
                })?;
        }
        // Servers sharing the directory may start at once: the first
        // creates the repository, the others wait and read it.
        let _dir_lock = dir_lock(dir).await?;
        let state = load_state(dir).await?;
        let repo = Repo {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                clock,
                state: Mutex::new(state),
            }),
        };
        {
            let mut st = repo.inner.state.lock().await;
            if st.root_version == 0 {
                let root_key = match offline_root {
                    Some(p) => p.to_path_buf(),
                    None => repo.key_path(RoleName::Root),
                };
                for role in [
                    RoleName::Root,
                    RoleName::Targets,
                    RoleName::Snapshot,
                    RoleName::Timestamp,
                ] {
                    let path = match role {
                        RoleName::Root => root_key.clone(),
                        _ => repo.key_path(role),
                    };
                    if !path.exists() {
                        if role == RoleName::Root && offline_root.is_some() {
                            return Err(RepoError::Key {
                                path,
                                detail: "the offline root key is not there (is the media mounted?)"
                                    .into(),
                            });
                        }
                        write_new_key(&path)?;
                    }
                }
                let keys = [
                    root_key.clone(),
                    repo.key_path(RoleName::Targets),
                    repo.key_path(RoleName::Snapshot),
                    repo.key_path(RoleName::Timestamp),
                ];
                let root = new_root(1, repo.now(), &keys).await?;
                let signed = sign_root(root, &[root_key]).await?;
                repo.write_root(1, signed.buffer()).await?;
                st.root_version = 1;
                repo.resign(&mut st).await?;
            }
        }
        Ok(repo)
    }

    /// The tree served at `/defs/` (and copied by [`Repo::mirror`]).
    pub fn serve_dir(&self) -> PathBuf {
        self.inner.dir.join("repo")
    }

    /// The newest signed root metadata, for agents to pin.
    pub async fn root_json(&self) -> Result<String, RepoError> {
        let v = self.locked().await?.root_version;
        let path = self.metadata_dir().join(format!("{v}.root.json"));
        tokio::fs::read_to_string(&path)
            .await
            .map_err(|source| RepoError::Io {
                what: "reading",
                path,
                source,
            })
    }

    /// Every version ever published, oldest first.
    pub async fn history(&self) -> Result<Vec<DefsVersion>, RepoError> {
        Ok(self.locked().await?.versions.clone())
    }

    /// Publishes the next version of `channel`: stores the content by hash,
    /// builds the compressed full object and deltas from each recent version,
    /// and re-signs targets, snapshot and timestamp.
    pub async fn publish(
        &self,
        channel: &str,
        content: Vec<u8>,
        notes: Option<String>,
    ) -> Result<DefsVersion, RepoError> {
        self.publish_at_least(channel, content, notes, 1).await
    }

    /// [`Repo::publish`], numbering the version at least `min_version` (a
    /// join raises a channel above what the joining repository's agents
    /// installed; the versions skipped are never published).
    async fn publish_at_least(
        &self,
        channel: &str,
        content: Vec<u8>,
        notes: Option<String>,
        min_version: u64,
    ) -> Result<DefsVersion, RepoError> {
        validate_channel(channel)?;
        if content.is_empty() {
            return Err(RepoError::Empty);
        }
        let (mut st, _dir_lock) = self.locked_mut().await?;
        let now = self.now();
        let version = (st
            .versions
            .iter()
            .filter(|v| v.channel == channel)
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1)
        .max(min_version);
        let sha = delta::sha256_hex(&content);
        let kind = delta::content_kind(&content);
        let object = self.inner.dir.join("objects").join(&sha);
        if !object.exists() {
            write_atomic(&object, &content).await?;
        }
        // The bases: recent versions of this channel, newest first.
        let bases: Vec<DefsVersion> = st
            .versions
            .iter()
            .rev()
            .filter(|v| v.channel == channel && now - v.published_at <= DELTA_WINDOW)
            .filter(|v| v.sha256 != sha || v.version != version)
            .take(MAX_DELTAS)
            .cloned()
            .collect();
        let objects = self.inner.dir.join("objects");
        let published_at = rfc3339(now);
        let built = tokio::task::spawn_blocking({
            let content = content.clone();
            move || build_objects(&objects, &content, kind, &bases)
        })
        .await
        .map_err(|e| RepoError::Sign {
            role: "targets",
            detail: format!("the delta builder stopped: {e}"),
        })??;
        let mut listed = Vec::new();
        let full_sha = delta::sha256_hex(&built.full);
        let full_name = layout::full_name(channel, version);
        self.write_target(&full_sha, &full_name, &built.full)
            .await?;
        listed.push(ListedTarget {
            name: full_name,
            length: built.full.len() as u64,
            sha256: full_sha,
            meta: TargetMeta {
                channel: channel.to_owned(),
                version,
                kind: TargetKind::Full,
                delta_kind: None,
                base_version: None,
                base_sha256: None,
                content_sha256: sha.clone(),
                content_length: content.len() as u64,
                content: kind.as_str().to_owned(),
                published_at: published_at.clone(),
            },
        });
        let mut deltas = Vec::new();
        for (base, bytes) in &built.deltas {
            let dkind = built.delta_kind.as_str();
            let name = layout::delta_name(channel, base.version, version, dkind);
            let dsha = delta::sha256_hex(bytes);
            self.write_target(&dsha, &name, bytes).await?;
            deltas.push(DeltaInfo {
                from_version: base.version,
                kind: dkind.to_owned(),
                size: bytes.len() as u64,
            });
            listed.push(ListedTarget {
                name,
                length: bytes.len() as u64,
                sha256: dsha,
                meta: TargetMeta {
                    channel: channel.to_owned(),
                    version,
                    kind: TargetKind::Delta,
                    delta_kind: Some(dkind.to_owned()),
                    base_version: Some(base.version),
                    base_sha256: Some(base.sha256.clone()),
                    content_sha256: sha.clone(),
                    content_length: content.len() as u64,
                    content: kind.as_str().to_owned(),
                    published_at: published_at.clone(),
                },
            });
        }
        let record = DefsVersion {
            channel: channel.to_owned(),
            version,
            sha256: sha,
            length: content.len() as u64,
            content: kind.as_str().to_owned(),
            published_at: now,
            notes,
            full_size: built.full.len() as u64,
            deltas,
            agents: 0,
        };
        let mut next = st.clone();
        next.versions.push(record.clone());
        next.listed.insert(channel.to_owned(), listed);
        self.resign(&mut next).await?;
        *st = next;
        tracing::info!(channel, version, "definitions published");
        Ok(record)
    }

    /// Re-signs the timestamp (and targets and snapshot) once past half
    /// their lifetime, so a live repository never looks frozen. Returns
    /// whether it signed.
    pub async fn refresh(&self) -> Result<bool, RepoError> {
        let (mut st, _dir_lock) = self.locked_mut().await?;
        let now = self.now();
        let due = |expires: Option<OffsetDateTime>, life: time::Duration| {
            expires.is_none_or(|e| e - now < life / 2)
        };
        if due(st.timestamp_expires, TIMESTAMP_LIFETIME)
            || due(st.targets_expires, TARGETS_LIFETIME)
        {
            let mut next = st.clone();
            self.resign(&mut next).await?;
            *st = next;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes an offline bundle for `channel`: a tar of the whole served
    /// metadata plus that channel's full object. The agent verifies it
    /// exactly like an online update (the metadata is the signed TUF set).
    pub async fn export(&self, channel: &str, out: &Path) -> Result<u64, RepoError> {
        validate_channel(channel)?;
        let st = self.locked().await?;
        let listed = st
            .listed
            .get(channel)
            .ok_or_else(|| RepoError::ChannelInvalid {
                name: format!("{channel} (never published)"),
            })?
            .clone();
        let serve = self.serve_dir();
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u64, RepoError> {
            let tmp = out.with_extension("tmp");
            let file = std::fs::File::create(&tmp).map_err(|source| RepoError::Io {
                what: "creating",
                path: tmp.clone(),
                source,
            })?;
            let mut tar = tar::Builder::new(file);
            let io = |source, path: &Path| RepoError::Io {
                what: "writing the bundle from",
                path: path.to_path_buf(),
                source,
            };
            let meta = serve.join(layout::METADATA_DIR);
            tar.append_dir_all(layout::METADATA_DIR, &meta)
                .map_err(|e| io(e, &meta))?;
            for t in listed.iter().filter(|t| t.meta.kind == TargetKind::Full) {
                let rel = layout::target_path(&t.sha256, &t.name);
                let p = serve.join(&rel);
                tar.append_path_with_name(&p, &rel).map_err(|e| io(e, &p))?;
            }
            let file = tar.into_inner().map_err(|e| io(e, &tmp))?;
            file.sync_all().map_err(|e| io(e, &tmp))?;
            let len = file.metadata().map_err(|e| io(e, &tmp))?.len();
            tether_fs::rename_durable(&tmp, &out).map_err(|e| io(e.source, &e.path))?;
            Ok(len)
        })
        .await
        .map_err(|e| RepoError::Sign {
            role: "targets",
            detail: format!("the exporter stopped: {e}"),
        })?
    }

    /// Copies the served tree to `to` (a static mirror). Hash-named objects
    /// already present are skipped; metadata is copied last, so a mirror
    /// being refreshed never names an object it lacks.
    pub async fn mirror(&self, to: &Path) -> Result<u64, RepoError> {
        let _st = self.inner.state.lock().await;
        let from = self.serve_dir();
        let to = to.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u64, RepoError> {
            let mut copied = 0;
            for sub in [layout::TARGETS_DIR, layout::METADATA_DIR] {
                let (src, dst) = (from.join(sub), to.join(sub));
                std::fs::create_dir_all(&dst).map_err(|source| RepoError::Io {
                    what: "creating",
                    path: dst.clone(),
                    source,
                })?;
                let entries = std::fs::read_dir(&src).map_err(|source| RepoError::Io {
                    what: "listing",
                    path: src.clone(),
                    source,
                })?;
                for entry in entries {
                    let entry = entry.map_err(|source| RepoError::Io {
                        what: "listing",
                        path: src.clone(),
                        source,
                    })?;
                    let target = dst.join(entry.file_name());
                    if sub == layout::TARGETS_DIR && target.exists() {
                        continue;
                    }
                    tether_fs::copy_atomic(&entry.path(), &target, tether_fs::PUBLIC).map_err(
                        |e| RepoError::Io {
                            what: e.op,
                            path: e.path,
                            source: e.source,
                        },
                    )?;
                    copied += 1;
                }
            }
            Ok(copied)
        })
        .await
        .map_err(|e| RepoError::Sign {
            role: "mirror",
            detail: format!("the copier stopped: {e}"),
        })?
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// Takes the lock and re-reads the state from disk, so a change made by
    /// another process (`tether defs rotate-key` while the server runs) is
    /// seen by the next publish or refresh.
    async fn locked(&self) -> Result<tokio::sync::MutexGuard<'_, State>, RepoError> {
        let mut st = self.inner.state.lock().await;
        let on_disk = load_state(&self.inner.dir).await?;
        if on_disk.root_version != 0 {
            *st = on_disk;
        }
        Ok(st)
    }

    /// [`Repo::locked`] for a change: also takes the directory's lock, so
    /// processes on other hosts sharing the directory (several servers, a
    /// `tether defs` command) change it one at a time, then reads the
    /// state they left.
    async fn locked_mut(&self) -> Result<(tokio::sync::MutexGuard<'_, State>, DirLock), RepoError> {
        let mut st = self.inner.state.lock().await;
        let lock = dir_lock(&self.inner.dir).await?;
        let on_disk = load_state(&self.inner.dir).await?;
        if on_disk.root_version != 0 {
            *st = on_disk;
        }
        Ok((st, lock))
    }

    /// The repository's identity: the first 16 hex digits of the SHA-256 of
    /// its root version 1, which never changes. Servers sharing the
    /// directory share it; the re-signing job's lease is keyed by it.
    pub async fn id(&self) -> Result<String, RepoError> {
        let path = self.metadata_dir().join("1.root.json");
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| RepoError::Io {
                what: "reading",
                path,
                source,
            })?;
        Ok(delta::sha256_hex(&bytes)[..16].to_owned())
    }

    /// What changes whenever a process (this one or another sharing the
    /// directory) publishes, re-signs or rotates: the identity and time of
    /// `state.json`, which every change replaces by a rename. Cheap (one
    /// `stat`), so servers poll it to notice changes made elsewhere.
    pub fn change_token(&self) -> Option<ChangeToken> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.inner.dir.join("state.json")).ok()?;
        Some(ChangeToken {
            ino: m.ino(),
            dev: m.dev(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            len: m.len(),
        })
    }

    fn metadata_dir(&self) -> PathBuf {
        self.serve_dir().join(layout::METADATA_DIR)
    }

    fn key_path(&self, role: RoleName) -> PathBuf {
        self.inner
            .dir
            .join("keys")
            .join(format!("{}.pem", role.as_str()))
    }

    async fn write_root(&self, version: u64, buffer: &[u8]) -> Result<(), RepoError> {
        write_atomic(
            &self.metadata_dir().join(format!("{version}.root.json")),
            buffer,
        )
        .await
    }

    async fn write_target(&self, sha: &str, name: &str, bytes: &[u8]) -> Result<(), RepoError> {
        let path = self.serve_dir().join(layout::target_path(sha, name));
        if !path.exists() {
            write_atomic(&path, bytes).await?;
        }
        Ok(())
    }

    /// Signs targets, snapshot and timestamp for what `st.listed` says, with
    /// the next versions, writes them, then saves the state.
    async fn resign(&self, st: &mut State) -> Result<(), RepoError> {
        let now = self.now();
        let root_path = self
            .metadata_dir()
            .join(format!("{}.root.json", st.root_version));
        let mut editor = RepositoryEditor::new(&root_path)
            .await
            .map_err(|e| sign_err("root", e))?;
        for t in st.listed.values().flatten() {
            let sha = hex::decode(&t.sha256).map_err(|e| RepoError::Corrupt {
                path: self.inner.dir.join("state.json"),
                detail: format!("target {} has a bad hash: {e}", t.name),
            })?;
            editor
                .add_target(
                    t.name.as_str(),
                    Target {
                        length: t.length,
                        hashes: Hashes {
                            sha256: Decoded::<Hex>::from(sha),
                            _extra: HashMap::new(),
                        },
                        custom: t.meta.to_custom(),
                        _extra: HashMap::new(),
                    },
                )
                .map_err(|e| sign_err("targets", e))?;
        }
        st.targets_version += 1;
        st.snapshot_version += 1;
        st.timestamp_version += 1;
        let targets_expires = now + TARGETS_LIFETIME;
        let timestamp_expires = now + TIMESTAMP_LIFETIME;
        editor
            .targets_version(nz(st.targets_version))
            .map_err(|e| sign_err("targets", e))?
            .targets_expires(jiff_ts(targets_expires))
            .map_err(|e| sign_err("targets", e))?
            .snapshot_version(nz(st.snapshot_version))
            .snapshot_expires(jiff_ts(targets_expires))
            .timestamp_version(nz(st.timestamp_version))
            .timestamp_expires(jiff_ts(timestamp_expires));
        let keys: Vec<Box<dyn KeySource>> =
            [RoleName::Targets, RoleName::Snapshot, RoleName::Timestamp]
                .into_iter()
                .map(|r| Box::new(PemKey(self.key_path(r))) as Box<dyn KeySource>)
                .collect();
        let signed = editor
            .sign(&keys)
            .await
            .map_err(|e| sign_err("timestamp", e))?;
        // Targets and snapshot are version-named, so writing them first
        // never changes what the live timestamp.json points at.
        signed
            .write(self.metadata_dir())
            .await
            .map_err(|e| sign_err("timestamp", e))?;
        st.targets_expires = Some(targets_expires);
        st.timestamp_expires = Some(timestamp_expires);
        let bytes = serde_json::to_vec_pretty(&*st).map_err(|e| RepoError::Corrupt {
            path: self.inner.dir.join("state.json"),
            detail: e.to_string(),
        })?;
        write_atomic(&self.inner.dir.join("state.json"), &bytes).await
    }
}

/// See [`Repo::change_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken {
    ino: u64,
    dev: u64,
    mtime_ns: i64,
    len: u64,
}

/// An exclusive lock on a repository directory (`lock` in it), held until
/// dropped. It is `flock`: it serialises processes on one host and, on
/// Linux, NFS clients too (the kernel maps it to NFS byte-range locks).
#[derive(Debug)]
struct DirLock {
    _file: std::fs::File,
}

async fn dir_lock(dir: &Path) -> Result<DirLock, RepoError> {
    let path = dir.join("lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|source| RepoError::Io {
                what: "locking",
                path,
                source,
            })?;
        Ok(DirLock { _file: file })
    })
    .await
    .map_err(|e| RepoError::Sign {
        role: "state",
        detail: format!("the locker stopped: {e}"),
    })?
}

struct Built {
    full: Vec<u8>,
    delta_kind: DeltaKind,
    deltas: Vec<(DefsVersion, Vec<u8>)>,
}

fn build_objects(
    objects: &Path,
    content: &[u8],
    kind: ContentKind,
    bases: &[DefsVersion],
) -> Result<Built, RepoError> {
    let full = delta::compress_full(content);
    let delta_kind = match kind {
        ContentKind::Text => DeltaKind::Line,
        // zstd patch-from works on any bytes, so it is also the fallback.
        _ => DeltaKind::Zstd,
    };
    let mut deltas = Vec::new();
    for base in bases {
        let path = objects.join(&base.sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // A lost base only costs its delta; agents on it take the full object.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "delta base missing");
                continue;
            }
        };
        let d = delta::make_delta(delta_kind, &bytes, content)?;
        // A delta bigger than the full object is never worth serving.
        if d.len() < full.len() {
            deltas.push((base.clone(), d));
        }
    }
    Ok(Built {
        full,
        delta_kind,
        deltas,
    })
}

async fn load_state(dir: &Path) -> Result<State, RepoError> {
    let state_path = dir.join("state.json");
    match tokio::fs::read(&state_path).await {
        Ok(bytes) => serde_json::from_slice::<State>(&bytes).map_err(|e| RepoError::Corrupt {
            path: state_path.clone(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(source) => Err(RepoError::Io {
            what: "reading",
            path: state_path,
            source,
        }),
    }
}

/// The key files under the repository's `keys/` that are current root
/// keys: the root key is online while this is not empty. The server warns
/// at start; the ceremony in docs/defs-keys.md empties it. Files that do not
/// parse as keys are skipped (they sign nothing).
pub fn online_root_keys(dir: &Path) -> Result<Vec<PathBuf>, RepoError> {
    let state_path = dir.join("state.json");
    let st: State = match std::fs::read(&state_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RepoError::Corrupt {
            path: state_path.clone(),
            detail: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RepoError::Io {
                what: "reading",
                path: state_path,
                source,
            });
        }
    };
    let root_path = dir
        .join("repo")
        .join(layout::METADATA_DIR)
        .join(format!("{}.root.json", st.root_version));
    let root: Signed<Root> = match std::fs::read(&root_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RepoError::Corrupt {
            path: root_path.clone(),
            detail: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RepoError::Io {
                what: "reading",
                path: root_path,
                source,
            });
        }
    };
    let root_ids = root
        .signed
        .roles
        .get(&RoleType::Root)
        .map(|r| r.keyids.clone())
        .unwrap_or_default();
    let mut online = Vec::new();
    for entry in std::fs::read_dir(dir.join("keys"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        let Ok(key) = load_key(&path) else { continue };
        if key
            .tuf_key()
            .key_id()
            .is_ok_and(|id| root_ids.contains(&id))
        {
            online.push(path);
        }
    }
    online.sort();
    Ok(online)
}

/// The key files among `keys` whose TUF key id is one of `ids`, in order.
fn keys_among(keys: &[PathBuf], ids: &[Decoded<Hex>]) -> Result<Vec<PathBuf>, RepoError> {
    let mut among = Vec::new();
    for path in keys {
        let id = load_key(path)?
            .tuf_key()
            .key_id()
            .map_err(|e| RepoError::Key {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if ids.contains(&id) {
            among.push(path.clone());
        }
    }
    Ok(among)
}

/// Generates a new ed25519 key (PKCS#8 PEM, mode 0600) at `out`, which
/// must not exist. Returns its TUF key id.
pub fn keygen(out: &Path) -> Result<String, RepoError> {
    if out.exists() {
        return Err(RepoError::Key {
            path: out.to_path_buf(),
            detail: "the file exists; refusing to overwrite a key".into(),
        });
    }
    write_new_key(out)?;
    let key = load_key(out)?;
    key.tuf_key()
        .key_id()
        .map(|id| hex::encode(id.into_vec()))
        .map_err(|e| RepoError::Key {
            path: out.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Replaces the key of `role` and writes the next root version, signed by
/// the current root keys given in `root_keys` (and the new root key when
/// the root itself rotates, so agents can verify the chain). With no
/// `new_key`, a fresh key is generated in the repository's `keys/`.
/// Returns the new root version; agents pick it up at their next update.
pub async fn rotate_key(
    dir: &Path,
    role: RoleName,
    new_key: Option<&Path>,
    root_keys: &[PathBuf],
    clock: Arc<dyn Clock>,
) -> Result<u64, RepoError> {
    let repo = Repo::open(dir, clock).await?;
    let (mut st, _dir_lock) = repo.locked_mut().await?;
    let current_path = repo
        .metadata_dir()
        .join(format!("{}.root.json", st.root_version));
    let current: Signed<Root> = read_json(&current_path).await?;
    // The given root keys must include current root keys.
    let current_ids = &current
        .signed
        .roles
        .get(&RoleType::Root)
        .map(|r| r.keyids.clone())
        .unwrap_or_default();
    let mut signing = keys_among(root_keys, current_ids)?;
    if signing.is_empty() {
        return Err(RepoError::NotARootKey {
            detail: format!(
                "root {} is signed by {}",
                st.root_version,
                current_ids
                    .iter()
                    .map(|i| hex::encode(i.clone().into_vec()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let new_path = match new_key {
        Some(p) => p.to_path_buf(),
        None => {
            let p = dir
                .join("keys")
                .join(format!("{}-{}.pem", role.as_str(), st.root_version + 1));
            write_new_key(&p)?;
            p
        }
    };
    let new = load_key(&new_path)?.tuf_key();
    let new_id = new.key_id().map_err(|e| RepoError::Key {
        path: new_path.clone(),
        detail: e.to_string(),
    })?;
    let mut root = current.signed.clone();
    root.version = nz(st.root_version + 1);
    root.expires = jiff_ts(repo.now() + ROOT_LIFETIME);
    root.keys.insert(new_id.clone(), new);
    if let Some(rk) = root.roles.get_mut(&role.role_type()) {
        rk.keyids = vec![new_id];
    }
    // Drop keys no role uses any more.
    let used: Vec<Decoded<Hex>> = root.roles.values().flat_map(|r| r.keyids.clone()).collect();
    root.keys.retain(|id, _| used.contains(id));
    if role == RoleName::Root {
        signing.push(new_path.clone());
    }
    let signed = sign_root(root, &signing).await?;
    let version = st.root_version + 1;
    repo.write_root(version, signed.buffer()).await?;
    st.root_version = version;
    if role != RoleName::Root {
        // The online key the repository signs with is the new one.
        std::fs::copy(&new_path, repo.key_path(role)).map_err(|source| RepoError::Io {
            what: "installing the new key at",
            path: repo.key_path(role),
            source,
        })?;
    }
    let mut next = st.clone();
    repo.resign(&mut next).await?;
    *st = next;
    Ok(version)
}

/// What [`join`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The shared repository's root versions now also signed by the joining
    /// repository's root keys (`k + 1` for each of its root versions `k`
    /// those keys signed).
    pub countersigned: Vec<u64>,
    /// Root versions added to the shared repository (no key change) so its
    /// chain reaches one past the joining repository's newest root.
    pub bumped: Vec<u64>,
    /// Channels published again in the shared repository above the joining
    /// repository's newest version: (channel, new version).
    pub raised: Vec<(String, u64)>,
    /// The joining repository's root versions the keys given do not sign
    /// (its root key rotated since, and the old one is gone): agents that
    /// enrolled while one of these was current cannot follow (agents walk
    /// from the root they pinned at enrollment).
    pub unreachable: Vec<u64>,
    /// The shared repository's root version afterwards.
    pub root_version: u64,
}

/// Joins the repository in `own` (a server's own, whose agents pinned its
/// root) to the repository in `shared`, which that server serves from now
/// on. An agent pinned at `own`'s root version `k` asks the shared
/// repository for `(k + 1).root.json`, so for every such `k` whose root
/// `own_root_keys` can sign, the shared `(k + 1).root.json` gets their
/// signature too: the agent verifies it with the keys it trusts and with
/// the new ones, then walks the shared chain. If the shared chain is
/// shorter, it is first extended with root versions that change no key,
/// signed by `shared_root_keys` (the shared repository's current root
/// keys; not needed otherwise). Channels `own` published whose shared
/// version is not newer are published again in the shared repository (its
/// newest content, or `own`'s where it has none) at one above `own`'s
/// newest, so no agent is offered a version below what it installed (which
/// it refuses as a rollback). `own` is not changed. Repeating a join changes
/// nothing more.
pub async fn join(
    shared: &Path,
    own: &Path,
    own_root_keys: &[PathBuf],
    shared_root_keys: &[PathBuf],
    clock: Arc<dyn Clock>,
) -> Result<Joined, RepoError> {
    let own_state = load_state(own).await?;
    if own_state.root_version == 0 {
        return Err(RepoError::JoinNoRepository {
            path: own.to_path_buf(),
        });
    }
    let own_meta = own.join("repo").join(layout::METADATA_DIR);
    // Which of own's root versions the given keys can sign for.
    let mut signable: Vec<(u64, Vec<PathBuf>)> = Vec::new();
    let mut unreachable = Vec::new();
    for k in 1..=own_state.root_version {
        let root: Signed<Root> = read_json(&own_meta.join(format!("{k}.root.json"))).await?;
        let Some(role) = root.signed.roles.get(&RoleType::Root) else {
            unreachable.push(k);
            continue;
        };
        let keys = keys_among(own_root_keys, &role.keyids)?;
        if keys.len() as u64 >= role.threshold.get() {
            signable.push((k, keys));
        } else {
            unreachable.push(k);
        }
    }
    let newest = own_state.root_version;
    if signable.last().map(|(k, _)| *k) != Some(newest) {
        return Err(RepoError::JoinKeys {
            detail: format!(
                "none signs root {newest} of {}, the version its agents pinned last (--root-key)",
                own.display()
            ),
        });
    }
    // Opening creates a repository where there is none: never the shared one.
    if load_state(shared).await?.root_version == 0 {
        return Err(RepoError::JoinNoRepository {
            path: shared.to_path_buf(),
        });
    }
    let repo = Repo::open(shared, clock).await?;
    let own_id = {
        let bytes = tokio::fs::read(own_meta.join("1.root.json"))
            .await
            .map_err(|source| RepoError::Io {
                what: "reading",
                path: own_meta.join("1.root.json"),
                source,
            })?;
        delta::sha256_hex(&bytes)[..16].to_owned()
    };
    if own_id == repo.id().await? {
        return Err(RepoError::JoinSame {
            path: own.to_path_buf(),
        });
    }
    let mut joined = Joined {
        countersigned: Vec::new(),
        bumped: Vec::new(),
        raised: Vec::new(),
        unreachable,
        root_version: 0,
    };
    {
        let (mut st, _dir_lock) = repo.locked_mut().await?;
        let mut next = st.clone();
        // Extend the shared chain to newest + 1 with no key change.
        while next.root_version < newest + 1 {
            let current_path = repo
                .metadata_dir()
                .join(format!("{}.root.json", next.root_version));
            let current: Signed<Root> = read_json(&current_path).await?;
            let ids = current
                .signed
                .roles
                .get(&RoleType::Root)
                .map(|r| r.keyids.clone())
                .unwrap_or_default();
            let signing = keys_among(shared_root_keys, &ids)?;
            if signing.is_empty() {
                return Err(RepoError::JoinKeys {
                    detail: format!(
                        "the shared repository's root is at version {} and must reach {}: pass its current root key (--shared-root-key)",
                        next.root_version,
                        newest + 1
                    ),
                });
            }
            let mut root = current.signed.clone();
            root.version = nz(next.root_version + 1);
            root.expires = jiff_ts(repo.now() + ROOT_LIFETIME);
            let signed = sign_root(root, &signing).await?;
            repo.write_root(next.root_version + 1, signed.buffer())
                .await?;
            next.root_version += 1;
            joined.bumped.push(next.root_version);
        }
        for (k, keys) in &signable {
            let path = repo.metadata_dir().join(format!("{}.root.json", k + 1));
            let mut target: Signed<Root> = read_json(&path).await?;
            let extra = sign_root(target.signed.clone(), keys).await?;
            let mut added = false;
            for sig in &extra.signed().signatures {
                if !target.signatures.iter().any(|s| s.keyid == sig.keyid) {
                    target.signatures.push(sig.clone());
                    added = true;
                }
            }
            if added {
                let bytes = serde_json::to_vec_pretty(&target).map_err(|e| RepoError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                write_atomic(&path, &bytes).await?;
                joined.countersigned.push(k + 1);
            }
        }
        if !joined.bumped.is_empty() {
            repo.resign(&mut next).await?;
            *st = next;
        }
        joined.root_version = st.root_version;
    }
    // Channels: never below what own's agents installed.
    let mut own_newest: BTreeMap<String, &DefsVersion> = BTreeMap::new();
    for v in &own_state.versions {
        let e = own_newest.entry(v.channel.clone()).or_insert(v);
        if v.version > e.version {
            *e = v;
        }
    }
    let shared_versions = repo.history().await?;
    for (channel, theirs) in own_newest {
        let ours = shared_versions
            .iter()
            .filter(|v| v.channel == channel)
            .max_by_key(|v| v.version);
        if ours.is_some_and(|v| v.version > theirs.version) {
            continue;
        }
        let object = match ours {
            Some(v) => shared.join("objects").join(&v.sha256),
            None => own.join("objects").join(&theirs.sha256),
        };
        let content = tokio::fs::read(&object)
            .await
            .map_err(|source| RepoError::Io {
                what: "reading",
                path: object.clone(),
                source,
            })?;
        let v = repo
            .publish_at_least(
                &channel,
                content,
                Some(format!(
                    "raised above v{} of the joining repository {own_id}",
                    theirs.version
                )),
                theirs.version + 1,
            )
            .await?;
        joined.raised.push((channel, v.version));
    }
    Ok(joined)
}

async fn new_root(
    version: u64,
    now: OffsetDateTime,
    keys: &[PathBuf; 4],
) -> Result<Root, RepoError> {
    let mut root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: true,
        version: nz(version),
        expires: jiff_ts(now + ROOT_LIFETIME),
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for (role, path) in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ]
    .into_iter()
    .zip(keys)
    {
        let key = load_key(path)?.tuf_key();
        let id = key.key_id().map_err(|e| RepoError::Key {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        root.keys.insert(id.clone(), key);
        root.roles.insert(
            role,
            RoleKeys {
                keyids: vec![id],
                threshold: nz(1),
                _extra: HashMap::new(),
            },
        );
    }
    Ok(root)
}

async fn sign_root(root: Root, keys: &[PathBuf]) -> Result<SignedRole<Root>, RepoError> {
    let sources: Vec<Box<dyn KeySource>> = keys
        .iter()
        .map(|p| Box::new(PemKey(p.clone())) as Box<dyn KeySource>)
        .collect();
    // The key holder lists the keys allowed to sign: for a new root, its
    // own root keys plus (during rotation) the previous ones passed here.
    let mut holder_root = root.clone();
    for k in keys {
        let key = load_key(k)?.tuf_key();
        if let Ok(id) = key.key_id() {
            holder_root.keys.insert(id.clone(), key);
            if let Some(rk) = holder_root.roles.get_mut(&RoleType::Root)
                && !rk.keyids.contains(&id)
            {
                rk.keyids.push(id);
            }
        }
    }
    SignedRole::new(
        root,
        &KeyHolder::Root(holder_root),
        &sources,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(|e| sign_err("root", e))
}

/// A key file in PEM (PKCS#8 "PRIVATE KEY") or raw DER.
#[derive(Debug)]
struct PemKey(PathBuf);

#[async_trait]
impl KeySource for PemKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(load_key(&self.0)?)
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("Tether key files are written by `tether defs keygen` only".into())
    }
}

fn load_key(path: &Path) -> Result<Box<dyn Sign>, RepoError> {
    let bad = |detail: String| RepoError::Key {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        pem::parse(&bytes)
            .map_err(|e| bad(format!("not PEM: {e}")))?
            .into_contents()
    } else {
        bytes
    };
    tough::sign::parse_keypair(&der)
        .map(|k| Box::new(k) as Box<dyn Sign>)
        .map_err(|e| bad(format!("not an ed25519, ECDSA or RSA PKCS#8 key: {e}")))
}

fn write_new_key(path: &Path) -> Result<(), RepoError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| RepoError::Key {
            path: path.to_path_buf(),
            detail: format!("key generation failed: {e}"),
        })?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| RepoError::Io {
            what: "creating",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| RepoError::Io {
            what: "creating the key",
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| RepoError::Io {
            what: "writing the key",
            path: path.to_path_buf(),
            source,
        })
}

async fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RepoError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| RepoError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| RepoError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Write to a temporary file, fsync, rename over the target, fsync the directory.
async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        tether_fs::write_atomic(&path, &bytes, tether_fs::PUBLIC)
            .map_err(|e| (e.op, e.path, e.source))
    })
    .await
    .map_err(|e| RepoError::Sign {
        role: "state",
        detail: format!("the writer stopped: {e}"),
    })?
    .map_err(|(what, path, source)| RepoError::Io { what, path, source })
}

fn sign_err(role: &'static str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Sign {
        role,
        detail: e.to_string(),
    }
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

fn jiff_ts(t: OffsetDateTime) -> jiff::Timestamp {
    // Whole seconds: TUF expirations are RFC 3339 without fractions.
    jiff::Timestamp::from_second(t.unix_timestamp()).unwrap_or(jiff::Timestamp::MAX)
}

#[cfg(test)]
mod tests;
