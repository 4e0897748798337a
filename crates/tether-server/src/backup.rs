//! `tether backup` and `tether restore` (docs/backup.md): one file that
//! holds everything a control plane is to its agents, and its restore onto
//! a fresh machine.
//!
//! The file is a zstd-compressed tar. Its first member is `manifest.json`
//! (format, version, backend, time, where the KEK is, and each member's
//! size, mode and SHA-256); then `database/` (the SQLite snapshot taken
//! with `VACUUM INTO`, or pg_dump's custom-format dump, which reads one
//! consistent snapshot) and `data/`, every file of the data dir: the
//! server's CA and certificate (`pki/`, which agents pin), the definitions
//! repository and its keys (`defs/`), the built-in CA (`ca/`) and its KEK
//! (`ca.kek`, unless it lives in `TETHER_CA_KEY`), the admin token and the
//! instance id. The database is copied first and the files after it, so a
//! publish that lands in between leaves the repository ahead of the store,
//! which the server's start reconciles; the files are copied until two
//! listings around the copy agree (`BackupUnstable` after five tries).
//!
//! A restore reads the whole file into a private directory beside the
//! target, checking the manifest's version and backend and every member's
//! path and checksum, before anything is written where it counts: then the
//! PostgreSQL dump is restored in one transaction (`pg_restore
//! --single-transaction`) and the directory is renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tether_store_sql::backup::{self as db, DatabaseKind};
pub use tether_store_sql::{PgSettings, SslMode};
use tether_wire::ErrorCode;
use time::OffsetDateTime;

mod seal;

use seal::{OpenReader, SealError, SealWriter};

/// The format this code writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's `format`.
pub const FORMAT_NAME: &str = "tether-backup";
const MANIFEST: &str = "manifest.json";
/// A manifest larger than this is not ours.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
const SQLITE_MEMBER: &str = "database/tether.db";
const POSTGRES_MEMBER: &str = "database/postgres.dump";
/// How many times the data dir is copied before it is called unstable.
const COPY_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {problem}")]
    Source { path: PathBuf, problem: String },
    #[error("the database could not be copied: {0}")]
    Snapshot(String),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("member {member}: its SHA-256 is {actual}, the manifest says {expected}")]
    Checksum {
        member: String,
        expected: String,
        actual: String,
    },
    #[error("member {member:?}: {problem}")]
    UnsafeMember {
        member: String,
        problem: &'static str,
    },
    #[error("the backup is format version {found}; this tether reads up to version {supported}")]
    NewerFormat { found: u32, supported: u32 },
    #[error("the backup holds a {backup} database but the restore targets {target}")]
    WrongBackend { backup: Backend, target: Backend },
    #[error("{0} is not empty")]
    TargetNotEmpty(String),
    #[error("the database restore failed and was rolled back: {0}")]
    DatabaseRestore(String),
    #[error("the data dir {0} kept changing while it was copied")]
    Unstable(PathBuf),
    #[error("the passphrase does not open this backup")]
    WrongPassphrase,
    #[error("the backup is sealed with a passphrase; pass --passphrase-file")]
    PassphraseNeeded,
}

impl BackupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BackupError::Source { .. } => ErrorCode::BackupSourceUnreadable,
            BackupError::Snapshot(_) => ErrorCode::BackupSnapshotFailed,
            BackupError::Write { .. } => ErrorCode::BackupWriteFailed,
            BackupError::Corrupt(_) => ErrorCode::BackupCorrupt,
            BackupError::Checksum { .. } => ErrorCode::BackupChecksumMismatch,
            BackupError::UnsafeMember { .. } => ErrorCode::BackupUnsafeMember,
            BackupError::NewerFormat { .. } => ErrorCode::BackupNewerFormat,
            BackupError::WrongBackend { .. } => ErrorCode::BackupWrongBackend,
            BackupError::TargetNotEmpty(_) => ErrorCode::BackupTargetNotEmpty,
            BackupError::DatabaseRestore(_) => ErrorCode::BackupDatabaseRestoreFailed,
            BackupError::Unstable(_) => ErrorCode::BackupUnstable,
            BackupError::WrongPassphrase => ErrorCode::BackupWrongPassphrase,
            BackupError::PassphraseNeeded => ErrorCode::BackupPassphraseNeeded,
        }
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |error| BackupError::Write {
        path: path.to_owned(),
        error,
    }
}

/// The database backend a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Where the key-encryption key (sealing the built-in CA's keys and the
/// ACME accounts) was when the backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KekPlace {
    /// `data/ca.kek` is in the backup.
    Included,
    /// In `TETHER_CA_KEY`: not in the backup, the operator must bring it.
    Environment,
    /// This server has none (no built-in CA, no ACME account).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `database/…` or `data/…`, `/`-separated, relative.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub backend: Backend,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The tether that wrote it.
    pub tether_version: String,
    pub kek: KekPlace,
    pub members: Vec<Member>,
}

/// What `tether backup` reads.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub pg: PgSettings,
    pub out: PathBuf,
    pub now: OffsetDateTime,
    /// Whether `TETHER_CA_KEY` is set (then the KEK is not in the data dir).
    pub kek_in_env: bool,
    /// Seal the file with this passphrase (`--passphrase-file`).
    pub passphrase: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// The file's size in bytes.
    pub size: u64,
    /// Entries of the data dir that were not backed up (links, sockets).
    pub skipped: Vec<PathBuf>,
}

/// What `tether restore` reads.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    /// `None`: SQLite at `data_dir/tether.db`.
    pub database_url: Option<String>,
    pub pg: PgSettings,
    pub force: bool,
    /// The passphrase a sealed backup needs.
    pub passphrase: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub manifest: Manifest,
}

fn target_backend(url: &str) -> Result<(Backend, Option<PathBuf>), BackupError> {
    match db::database_kind(url) {
        Ok(DatabaseKind::Sqlite(path)) => Ok((Backend::Sqlite, Some(path))),
        Ok(DatabaseKind::Postgres) => Ok((Backend::Postgres, None)),
        Ok(_) => Err(BackupError::Source {
            path: PathBuf::from("database_url"),
            problem: "an in-memory database holds nothing to back up or restore".to_owned(),
        }),
        Err(e) => Err(BackupError::Source {
            path: PathBuf::from("database_url"),
            problem: e.to_string(),
        }),
    }
}

/// Writes the backup file `req.out` (0600, replaced atomically).
pub async fn create(req: &BackupRequest) -> Result<BackupReport, BackupError> {
    let data_dir = std::path::absolute(&req.data_dir).map_err(|e| BackupError::Source {
        path: req.data_dir.clone(),
        problem: e.to_string(),
    })?;
    let looks_like_ours = ["instance.id", "admin.token", "pki"]
        .iter()
        .any(|f| data_dir.join(f).exists());
    if !looks_like_ours {
        return Err(BackupError::Source {
            path: data_dir,
            problem: "is not a Tether server's data dir (no instance.id, admin.token or pki/)"
                .to_owned(),
        });
    }
    let (backend, sqlite_path) = target_backend(&req.database_url)?;
    let out = std::path::absolute(&req.out).map_err(write_err(&req.out))?;
    let out_dir = out.parent().unwrap_or(Path::new("/")).to_owned();
    let staging = tempfile::Builder::new()
        .prefix(".tether-backup-")
        .tempdir_in(&out_dir)
        .map_err(write_err(&out_dir))?;
    let root = staging.path();

    // The database first: files newer than it are reconciled at start.
    std::fs::create_dir_all(root.join("database")).map_err(write_err(root))?;
    let db_member = match (backend, &sqlite_path) {
        (Backend::Sqlite, Some(path)) => {
            let dest = root.join(SQLITE_MEMBER);
            if !path.exists() {
                return Err(BackupError::Source {
                    path: path.clone(),
                    problem: "the SQLite database does not exist".to_owned(),
                });
            }
            db::sqlite_snapshot(path, &dest)
                .await
                .map_err(|e| BackupError::Snapshot(e.to_string()))?;
            SQLITE_MEMBER
        }
        _ => {
            pg_dump(&req.database_url, &req.pg, &root.join(POSTGRES_MEMBER)).await?;
            POSTGRES_MEMBER
        }
    };
    let mut members = vec![member_of(root, db_member)?];

    // The files, without the live database (copied above) and logs.
    let mut excluded: BTreeSet<PathBuf> = BTreeSet::new();
    if let Some(path) = &sqlite_path {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            excluded.insert(PathBuf::from(p));
        }
    }
    excluded.insert(out.clone());
    excluded.insert(root.to_owned());
    let (files, skipped) = copy_stable(&data_dir, &root.join("data"), &excluded)?;
    members.extend(files);

    // A built-in CA without `ca.kek` opens with a KEK from the server's
    // environment, even when this command's environment lacks it.
    let kek = if req.kek_in_env {
        KekPlace::Environment
    } else if data_dir.join("ca.kek").is_file() {
        KekPlace::Included
    } else if data_dir.join("ca").is_dir() {
        KekPlace::Environment
    } else {
        KekPlace::None
    };
    let manifest = Manifest {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        backend,
        created_at: req.now,
        tether_version: env!("CARGO_PKG_VERSION").to_owned(),
        kek,
        members,
    };
    let size = write_archive(root, &manifest, &out, req.passphrase.as_deref())?;
    Ok(BackupReport {
        manifest,
        size,
        skipped,
    })
}

fn member_of(root: &Path, rel: &str) -> Result<Member, BackupError> {
    let path = root.join(rel);
    let mut file = std::fs::File::open(&path).map_err(write_err(&path))?;
    let mut hash = Sha256::new();
    let size = std::io::copy(&mut file, &mut hash).map_err(write_err(&path))?;
    Ok(Member {
        path: rel.to_owned(),
        size,
        mode: 0o600,
        sha256: hex::encode(hash.finalize()),
    })
}

/// Gives a PostgreSQL tool the database: the URL without its password on
/// the command line (which `ps` shows to every user), the password in
/// `PGPASSWORD`.
fn pg_target(cmd: &mut Command, url: &str) {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let password = parsed.password().unwrap_or_default();
            let password = percent_decode(password);
            cmd.env("PGPASSWORD", password);
            let _ = parsed.set_password(None);
            cmd.arg(format!("--dbname={parsed}"));
        }
        _ => {
            cmd.arg(format!("--dbname={url}"));
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pg_env(cmd: &mut Command, pg: &PgSettings) {
    if let Some(mode) = pg.ssl_mode {
        cmd.env("PGSSLMODE", mode.as_str());
    }
    if let Some(ca) = &pg.ca_file {
        cmd.env("PGSSLROOTCERT", ca);
    }
}

async fn pg_dump(url: &str, pg: &PgSettings, dest: &Path) -> Result<(), BackupError> {
    let mut cmd = Command::new("pg_dump");
    cmd.args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
        .arg(dest)
        .stdin(std::process::Stdio::null());
    pg_target(&mut cmd, url);
    pg_env(&mut cmd, pg);
    run_tool(cmd, "pg_dump")
        .await
        .map_err(BackupError::Snapshot)
}

/// Runs a PostgreSQL tool off the runtime; its stderr is the message.
async fn run_tool(mut cmd: Command, name: &'static str) -> Result<(), String> {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| format!("{name} did not finish: {e}"))?
        .map_err(|e| format!("cannot run {name} (install postgresql-client): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One file's identity in a listing: its size, modification time and inode.
type Listing = BTreeMap<PathBuf, (u64, i128, u64)>;

fn list(
    dir: &Path,
    excluded: &BTreeSet<PathBuf>,
    out: &mut Listing,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt as _;
    let src = |e: std::io::Error| BackupError::Source {
        path: dir.to_owned(),
        problem: format!("cannot be read: {e}"),
    };
    for entry in std::fs::read_dir(dir).map_err(src)? {
        let entry = entry.map_err(src)?;
        let path = entry.path();
        if excluded.contains(&path) {
            continue;
        }
        let meta = entry.metadata().map_err(src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            list(&path, excluded, out, skipped)?;
        } else if kind.is_file() {
            // Logs are not state; nor are the temporaries of a write in flight.
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".log") || name.starts_with(".tether-backup-") {
                continue;
            }
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            out.insert(path, (meta.len(), mtime, meta.ino()));
        } else {
            skipped.push(path);
        }
    }
    Ok(())
}

/// Copies the data dir's files into `dest` until a listing before and one
/// after the copy agree: each file there is replaced by a rename, so equal
/// listings mean no file changed while it was read.
fn copy_stable(
    data_dir: &Path,
    dest: &Path,
    excluded: &BTreeSet<PathBuf>,
) -> Result<(Vec<Member>, Vec<PathBuf>), BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    for _ in 0..COPY_ATTEMPTS {
        let _ = std::fs::remove_dir_all(dest);
        let mut before = Listing::new();
        let mut skipped = Vec::new();
        list(data_dir, excluded, &mut before, &mut skipped)?;
        let mut members = Vec::new();
        let mut vanished = false;
        for path in before.keys() {
            let rel = path
                .strip_prefix(data_dir)
                .map_err(|_| BackupError::Source {
                    path: path.clone(),
                    problem: "is outside the data dir".to_owned(),
                })?;
            let rel_text = rel
                .to_str()
                .ok_or_else(|| BackupError::Source {
                    path: path.clone(),
                    problem: "has a name that is not UTF-8".to_owned(),
                })?
                .to_owned();
            let mut src = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    vanished = true;
                    break;
                }
                Err(e) => {
                    return Err(BackupError::Source {
                        path: path.clone(),
                        problem: format!("cannot be read: {e}"),
                    });
                }
            };
            let mode = src
                .metadata()
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o600);
            let target = dest.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(write_err(parent))?;
            }
            let mut file = std::fs::File::create(&target).map_err(write_err(&target))?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut size = 0u64;
            loop {
                let n = src.read(&mut buf).map_err(|e| BackupError::Source {
                    path: path.clone(),
                    problem: format!("cannot be read: {e}"),
                })?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(write_err(&target))?;
                size += n as u64;
            }
            members.push(Member {
                path: format!("data/{rel_text}"),
                size,
                mode,
                sha256: hex::encode(hash.finalize()),
            });
        }
        let mut after = Listing::new();
        list(data_dir, excluded, &mut after, &mut Vec::new())?;
        if !vanished && before == after {
            return Ok((members, skipped));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(BackupError::Unstable(data_dir.to_owned()))
}

/// Where the compressed archive goes: the file, or a sealer in front of it.
enum Sink {
    Plain(std::fs::File),
    Sealed(Box<SealWriter<std::fs::File>>),
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(f) => f.write(data),
            Sink::Sealed(s) => s.write(data),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(f) => f.flush(),
            Sink::Sealed(s) => s.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> std::io::Result<std::fs::File> {
        match self {
            Sink::Plain(f) => Ok(f),
            Sink::Sealed(s) => s.finish(),
        }
    }
}

fn write_archive(
    root: &Path,
    manifest: &Manifest,
    out: &Path,
    passphrase: Option<&[u8]>,
) -> Result<u64, BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    let out_dir = out.parent().unwrap_or(Path::new("/"));
    // NamedTempFile creates the file 0600, so the secrets are never open
    // to others, not even while it is written.
    let tmp = tempfile::Builder::new()
        .prefix(".tether-backup-")
        .suffix(".partial")
        .tempfile_in(out_dir)
        .map_err(write_err(out_dir))?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Write {
        path: out.to_owned(),
        error: std::io::Error::other(e),
    })?;
    let err = write_err(out);
    let result = (|| -> std::io::Result<std::fs::File> {
        let file = tmp.as_file().try_clone()?;
        let sink = match passphrase {
            Some(p) => Sink::Sealed(Box::new(SealWriter::new(file, p)?)),
            None => Sink::Plain(file),
        };
        let encoder = zstd::Encoder::new(sink, 3)?;
        let mut tar = tar::Builder::new(encoder);
        let mtime = u64::try_from(manifest.created_at.unix_timestamp()).unwrap_or(0);
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, MANIFEST, json.as_slice())?;
        for m in &manifest.members {
            let file = std::fs::File::open(root.join(&m.path))?;
            let mut header = tar::Header::new_gnu();
            header.set_size(m.size);
            header.set_mode(m.mode);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, &m.path, file.take(m.size))?;
        }
        let encoder = tar.into_inner()?;
        let file = encoder.finish()?.finish()?;
        file.sync_all()?;
        Ok(file)
    })();
    let file = result.map_err(err)?;
    let size = file.metadata().map_err(write_err(out))?.len();
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_err(out))?;
    tmp.persist(out).map_err(|e| BackupError::Write {
        path: out.to_owned(),
        error: e.error,
    })?;
    if let Ok(dir) = std::fs::File::open(out_dir) {
        let _ = dir.sync_all();
    }
    Ok(size)
}

/// Checks a member's path: relative, `/`-separated plain names under
/// `data/` or `database/`, nothing that climbs out.
fn safe_member_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 4096 {
        return Err("an empty or overlong path");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err("an absolute path or one with a backslash or NUL");
    }
    if !(path.starts_with("data/") || path.starts_with("database/")) {
        return Err("outside data/ and database/");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            _ => return Err("a path with `..` or `.`"),
        }
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("a path with `..`, `.` or an empty name");
    }
    Ok(())
}

/// Reads and checks the manifest: format, version, member paths.
fn read_manifest(bytes: &[u8]) -> Result<Manifest, BackupError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| BackupError::Corrupt(format!("the manifest cannot be read: {e}")))?;
    if head.format != FORMAT_NAME {
        return Err(BackupError::Corrupt(format!(
            "the manifest's format is {:?}, not {FORMAT_NAME:?}",
            head.format
        )));
    }
    if head.version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat {
            found: head.version,
            supported: FORMAT_VERSION,
        });
    }
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| BackupError::Corrupt(format!("the manifest cannot be read: {e}")))?;
    let mut seen = BTreeSet::new();
    for m in &manifest.members {
        safe_member_path(&m.path).map_err(|problem| BackupError::UnsafeMember {
            member: m.path.clone(),
            problem,
        })?;
        if !seen.insert(m.path.as_str()) {
            return Err(BackupError::Corrupt(format!(
                "the manifest lists {} twice",
                m.path
            )));
        }
        if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BackupError::Corrupt(format!(
                "the manifest's SHA-256 of {} is not 64 hex digits",
                m.path
            )));
        }
    }
    let want = match manifest.backend {
        Backend::Sqlite => SQLITE_MEMBER,
        Backend::Postgres => POSTGRES_MEMBER,
    };
    if !seen.contains(want) {
        return Err(BackupError::Corrupt(format!(
            "the manifest of a {} backup lists no {want}",
            manifest.backend
        )));
    }
    Ok(manifest)
}

fn corrupt(e: std::io::Error) -> BackupError {
    match seal::seal_error(&e) {
        Some(SealError::WrongPassphrase) => BackupError::WrongPassphrase,
        _ => BackupError::Corrupt(format!("the backup is truncated or corrupt: {e}")),
    }
}

/// Opens the backup file for reading: through the opener when it is sealed.
fn open_input(file: &Path, passphrase: Option<&[u8]>) -> Result<Box<dyn Read>, BackupError> {
    let mut input = std::fs::File::open(file).map_err(|e| BackupError::Source {
        path: file.to_owned(),
        problem: format!("cannot be read: {e}"),
    })?;
    let mut magic = [0u8; 8];
    let sealed = input.read_exact(&mut magic).is_ok() && magic == *seal::MAGIC;
    if sealed {
        let passphrase = passphrase.ok_or(BackupError::PassphraseNeeded)?;
        return Ok(Box::new(
            OpenReader::new(input, passphrase).map_err(corrupt)?,
        ));
    }
    use std::io::Seek as _;
    input.rewind().map_err(corrupt)?;
    Ok(Box::new(input))
}

/// Reads the manifest, which must be the archive's first member.
fn first_manifest<R: Read>(entries: &mut tar::Entries<'_, R>) -> Result<Manifest, BackupError> {
    let mut first = match entries.next() {
        Some(entry) => entry.map_err(corrupt)?,
        None => return Err(BackupError::Corrupt("the backup is empty".to_owned())),
    };
    if *first.path_bytes() != *MANIFEST.as_bytes()
        || first.header().entry_type() != tar::EntryType::Regular
    {
        return Err(BackupError::Corrupt(
            "the backup does not start with manifest.json: it is not a Tether backup".to_owned(),
        ));
    }
    if first.size() > MAX_MANIFEST {
        return Err(BackupError::Corrupt("the manifest is too large".to_owned()));
    }
    let mut bytes = Vec::new();
    (&mut first)
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .map_err(corrupt)?;
    read_manifest(&bytes)
}

/// Reads only the manifest of the backup at `file`.
pub fn peek(file: &Path, passphrase: Option<&[u8]>) -> Result<Manifest, BackupError> {
    let input = open_input(file, passphrase)?;
    let decoder = zstd::Decoder::new(input).map_err(corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(corrupt)?;
    first_manifest(&mut entries)
}

/// Reads the backup into `dest`, checking everything; returns the manifest.
/// `check` sees the manifest before any member is written.
fn unpack(
    file: &Path,
    passphrase: Option<&[u8]>,
    dest: &Path,
    check: impl FnOnce(&Manifest) -> Result<(), BackupError>,
) -> Result<Manifest, BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    let input = open_input(file, passphrase)?;
    let decoder = zstd::Decoder::new(input).map_err(corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(corrupt)?;

    let manifest = first_manifest(&mut entries)?;
    check(&manifest)?;

    let mut wanted: BTreeMap<&str, &Member> = manifest
        .members
        .iter()
        .map(|m| (m.path.as_str(), m))
        .collect();
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        safe_member_path(&name).map_err(|problem| BackupError::UnsafeMember {
            member: name.clone(),
            problem,
        })?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BackupError::UnsafeMember {
                member: name,
                problem: "not a plain file (a link, a device or a directory)",
            });
        }
        let Some(member) = wanted.remove(name.as_str()) else {
            return Err(BackupError::UnsafeMember {
                member: name,
                problem: "not listed in the manifest, or listed once and found twice",
            });
        };
        if entry.size() != member.size {
            return Err(BackupError::Corrupt(format!(
                "{name} is {} bytes, the manifest says {}",
                entry.size(),
                member.size
            )));
        }
        let target = dest.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_private()
            .open(&target)
            .map_err(write_err(&target))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut reader = (&mut entry).take(member.size);
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(corrupt)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(write_err(&target))?;
            size += n as u64;
        }
        if size != member.size {
            return Err(BackupError::Corrupt(format!(
                "the backup is truncated: {name} ends after {size} of {} bytes",
                member.size
            )));
        }
        let actual = hex::encode(hash.finalize());
        if !actual.eq_ignore_ascii_case(&member.sha256) {
            return Err(BackupError::Checksum {
                member: name,
                expected: member.sha256.clone(),
                actual,
            });
        }
        out.set_permissions(std::fs::Permissions::from_mode(member.mode & 0o755))
            .map_err(write_err(&target))?;
        out.sync_all().map_err(write_err(&target))?;
    }
    if let Some(missing) = wanted.keys().next() {
        return Err(BackupError::Corrupt(format!(
            "the backup is truncated: {missing} and {} more member(s) are missing",
            wanted.len() - 1
        )));
    }
    Ok(manifest)
}

trait PrivateOpen {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateOpen for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(BackupError::Write {
            path: dir.to_owned(),
            error: e,
        }),
    }
}

/// Verifies the backup whole, then restores it (see the module doc).
pub async fn restore(req: &RestoreRequest) -> Result<RestoreReport, BackupError> {
    let data_dir = std::path::absolute(&req.data_dir).map_err(write_err(&req.data_dir))?;
    let default_url = crate::default_database_url(&data_dir);
    let url = req.database_url.clone().unwrap_or(default_url);
    let (target, sqlite_path) = target_backend(&url)?;
    let sqlite_path = sqlite_path.map(|p| std::path::absolute(&p).unwrap_or(p));

    // The cheap refusals first: a foreign or newer file, the other backend.
    let head = peek(&req.file, req.passphrase.as_deref())?;
    if head.backend != target {
        return Err(BackupError::WrongBackend {
            backup: head.backend,
            target,
        });
    }
    let data_dir_empty = is_empty_dir(&data_dir)?;
    if !data_dir_empty && !req.force {
        return Err(BackupError::TargetNotEmpty(format!(
            "the data dir {}",
            data_dir.display()
        )));
    }
    let pg_tables = if target == Backend::Postgres {
        db::postgres_table_count(&url, &req.pg)
            .await
            .map_err(|e| BackupError::DatabaseRestore(e.to_string()))?
    } else {
        0
    };
    if pg_tables > 0 && !req.force {
        return Err(BackupError::TargetNotEmpty(format!(
            "the PostgreSQL database ({pg_tables} tables)"
        )));
    }
    let outside_db = sqlite_path
        .as_ref()
        .filter(|p| p.parent() != Some(data_dir.as_path()) || !p.ends_with("tether.db"));
    if let Some(path) = outside_db
        && path.exists()
        && !req.force
    {
        return Err(BackupError::TargetNotEmpty(format!(
            "the SQLite database {}",
            path.display()
        )));
    }

    let parent = data_dir.parent().unwrap_or(Path::new("/")).to_owned();
    std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".tether-restore-")
        .tempdir_in(&parent)
        .map_err(write_err(&parent))?;
    let root = staging.path().to_owned();
    let file = req.file.clone();
    let passphrase = req.passphrase.clone();
    let manifest = tokio::task::spawn_blocking(move || {
        unpack(&file, passphrase.as_deref(), &root, |m| {
            if m.backend != target {
                return Err(BackupError::WrongBackend {
                    backup: m.backend,
                    target,
                });
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| BackupError::Corrupt(format!("the restore stopped: {e}")))??;
    let root = staging.path();
    let data = root.join("data");
    std::fs::create_dir_all(&data).map_err(write_err(&data))?;

    // Everything is verified: now the database, in one transaction.
    match target {
        Backend::Postgres => {
            let mut cmd = Command::new("pg_restore");
            cmd.args([
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
            ]);
            if pg_tables > 0 {
                cmd.args(["--clean", "--if-exists"]);
            }
            pg_target(&mut cmd, &url);
            cmd.arg(root.join(POSTGRES_MEMBER))
                .stdin(std::process::Stdio::null());
            pg_env(&mut cmd, &req.pg);
            run_tool(cmd, "pg_restore")
                .await
                .map_err(BackupError::DatabaseRestore)?;
        }
        Backend::Sqlite => {
            let snapshot = root.join(SQLITE_MEMBER);
            match &outside_db {
                None => {
                    std::fs::rename(&snapshot, data.join("tether.db")).map_err(write_err(&data))?
                }
                Some(path) => {
                    let bytes = std::fs::read(&snapshot).map_err(write_err(&snapshot))?;
                    tether_fs::write_atomic(path, &bytes, tether_fs::PRIVATE).map_err(|e| {
                        BackupError::Write {
                            path: e.path,
                            error: e.source,
                        }
                    })?;
                }
            }
        }
    }
    place(&data, &data_dir)?;
    Ok(RestoreReport { manifest })
}

/// Moves the verified tree into place: a rename, after the old directory
/// (if any) was moved aside; the old one is removed last.
fn place(data: &Path, data_dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .map_err(write_err(data))?;
    let aside = if data_dir.exists() {
        let mut name = data_dir.as_os_str().to_owned();
        name.push(format!(".replaced-{}", uuid::Uuid::new_v4().simple()));
        let aside = PathBuf::from(name);
        std::fs::rename(data_dir, &aside).map_err(write_err(data_dir))?;
        Some(aside)
    } else {
        None
    };
    if let Err(error) = std::fs::rename(data, data_dir) {
        if let Some(aside) = &aside {
            let _ = std::fs::rename(aside, data_dir);
        }
        return Err(BackupError::Write {
            path: data_dir.to_owned(),
            error,
        });
    }
    if let Some(aside) = aside {
        // Empty, or replaced with --force.
        let _ = std::fs::remove_dir_all(aside);
    }
    if let Some(parent) = data_dir.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite-shaped backup built by hand, with `members` after the
    /// manifest (which lists `listed`).
    fn archive(
        dir: &Path,
        manifest: &Manifest,
        members: &[(&str, &[u8], tar::EntryType)],
    ) -> PathBuf {
        let path = dir.join("b.tar.zst");
        let file = std::fs::File::create(&path).expect("create");
        let enc = zstd::Encoder::new(file, 1).expect("zstd");
        let mut tar = tar::Builder::new(enc);
        let json = serde_json::to_vec(manifest).expect("json");
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, MANIFEST, json.as_slice())
            .expect("manifest");
        for (name, bytes, kind) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(*kind);
            // Written raw, so hostile names (`..`, absolute) get in as they are.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            tar.append(&h, *bytes).expect("member");
        }
        tar.into_inner().expect("tar").finish().expect("zstd");
        path
    }

    fn manifest(members: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            backend: Backend::Sqlite,
            created_at: time::macros::datetime!(2026-12-07 20:00 UTC),
            tether_version: "0.1.0".to_owned(),
            kek: KekPlace::None,
            members: members
                .iter()
                .map(|(p, b)| Member {
                    path: (*p).to_owned(),
                    size: b.len() as u64,
                    mode: 0o600,
                    sha256: hex::encode(Sha256::digest(b)),
                })
                .collect(),
        }
    }

    const DB: &[u8] = b"SQLite format 3\0 not really";
    const TOKEN: &[u8] = b"tta_secret\n";

    /// A member as the test archives hold it: name, bytes, entry type.
    type Entry = (&'static str, &'static [u8], tar::EntryType);

    fn good() -> (Manifest, Vec<Entry>) {
        let m = manifest(&[(SQLITE_MEMBER, DB), ("data/admin.token", TOKEN)]);
        let members = vec![
            (SQLITE_MEMBER, DB, tar::EntryType::Regular),
            ("data/admin.token", TOKEN, tar::EntryType::Regular),
        ];
        (m, members)
    }

    fn unpack_code(file: &Path) -> (ErrorCode, String) {
        let dest = tempfile::tempdir().expect("dest");
        let e = unpack(file, None, dest.path(), |_| Ok(())).expect_err("refused");
        // Nothing but the scratch directory was written to.
        (e.code(), e.to_string())
    }

    #[test]
    fn a_good_archive_unpacks_with_its_modes() {
        let dir = tempfile::tempdir().expect("dir");
        let (m, members) = good();
        let file = archive(dir.path(), &m, &members);
        let dest = tempfile::tempdir().expect("dest");
        let got = unpack(&file, None, dest.path(), |_| Ok(())).expect("unpacks");
        assert_eq!(got, m);
        assert_eq!(
            std::fs::read(dest.path().join("data/admin.token")).expect("token"),
            TOKEN
        );
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().expect("dir");
        let (m, members) = good();
        let file = archive(dir.path(), &m, &members);
        let bytes = std::fs::read(&file).expect("read");
        for cut in [bytes.len() / 2, bytes.len() - 8, 10] {
            std::fs::write(&file, &bytes[..cut]).expect("cut");
            let (code, msg) = unpack_code(&file);
            assert_eq!(code, ErrorCode::BackupCorrupt, "cut at {cut}: {msg}");
        }
        std::fs::write(&file, b"not a backup at all").expect("junk");
        assert_eq!(unpack_code(&file).0, ErrorCode::BackupCorrupt);
    }

    #[test]
    fn a_member_missing_at_the_end_is_corrupt() {
        let dir = tempfile::tempdir().expect("dir");
        let (m, mut members) = good();
        members.pop();
        let file = archive(dir.path(), &m, &members);
        let (code, msg) = unpack_code(&file);
        assert_eq!(code, ErrorCode::BackupCorrupt, "{msg}");
        assert!(msg.contains("data/admin.token"), "{msg}");
    }

    #[test]
    fn wrong_checksum_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (m, mut members) = good();
        members[1].1 = b"tta_secreT\n";
        let file = archive(dir.path(), &m, &members);
        let (code, msg) = unpack_code(&file);
        assert_eq!(code, ErrorCode::BackupChecksumMismatch, "{msg}");
    }

    #[test]
    fn traversal_links_and_unlisted_members_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        for (name, kind) in [
            ("data/../../etc/evil", tar::EntryType::Regular),
            ("/etc/evil", tar::EntryType::Regular),
            ("elsewhere/x", tar::EntryType::Regular),
            ("data/unlisted", tar::EntryType::Regular),
            ("data/admin.token", tar::EntryType::Symlink),
        ] {
            let (m, mut members) = good();
            members.insert(1, (name, TOKEN, kind));
            let file = archive(dir.path(), &m, &members);
            let (code, msg) = unpack_code(&file);
            assert_eq!(code, ErrorCode::BackupUnsafeMember, "{name}: {msg}");
        }
        // A manifest naming a path that climbs out is refused before any
        // member is read.
        let m = manifest(&[(SQLITE_MEMBER, DB), ("data/../x", TOKEN)]);
        let file = archive(dir.path(), &m, &[]);
        assert_eq!(unpack_code(&file).0, ErrorCode::BackupUnsafeMember);
    }

    #[test]
    fn newer_format_and_foreign_manifests_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut m, members) = good();
        m.version = FORMAT_VERSION + 1;
        let file = archive(dir.path(), &m, &members);
        let (code, msg) = unpack_code(&file);
        assert_eq!(code, ErrorCode::BackupNewerFormat, "{msg}");
        m.version = FORMAT_VERSION;
        m.format = "something-else".to_owned();
        let file = archive(dir.path(), &m, &members);
        assert_eq!(unpack_code(&file).0, ErrorCode::BackupCorrupt);
    }

    #[test]
    fn wrong_backend_is_refused_before_members_are_written() {
        let dir = tempfile::tempdir().expect("dir");
        let (m, members) = good();
        let file = archive(dir.path(), &m, &members);
        let dest = tempfile::tempdir().expect("dest");
        let e = unpack(&file, None, dest.path(), |m| {
            Err(BackupError::WrongBackend {
                backup: m.backend,
                target: Backend::Postgres,
            })
        })
        .expect_err("refused");
        assert_eq!(e.code(), ErrorCode::BackupWrongBackend);
        assert!(is_empty_dir(dest.path()).expect("read"));
    }

    #[test]
    fn a_sealed_backup_needs_its_passphrase() {
        let data = tempfile::tempdir().expect("data");
        std::fs::write(data.path().join("admin.token"), TOKEN).expect("token");
        std::fs::write(data.path().join("instance.id"), b"id\n").expect("id");
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("database")).expect("db dir");
        std::fs::write(root.path().join(SQLITE_MEMBER), DB).expect("db");
        let (files, _) =
            copy_stable(data.path(), &root.path().join("data"), &BTreeSet::new()).expect("copy");
        let mut m = manifest(&[(SQLITE_MEMBER, DB)]);
        m.members.extend(files);
        let out = root.path().join("sealed.backup");
        write_archive(root.path(), &m, &out, Some(b"s3cret".as_slice())).expect("written");
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(&bytes[..8], seal::MAGIC);

        let dest = tempfile::tempdir().expect("dest");
        let e = unpack(&out, None, dest.path(), |_| Ok(())).expect_err("no passphrase");
        assert_eq!(e.code(), ErrorCode::BackupPassphraseNeeded);
        let e = unpack(&out, Some(b"wrong"), dest.path(), |_| Ok(())).expect_err("wrong");
        assert_eq!(e.code(), ErrorCode::BackupWrongPassphrase);
        let got = unpack(&out, Some(b"s3cret"), dest.path(), |_| Ok(())).expect("opens");
        assert_eq!(got, m);
        assert_eq!(
            std::fs::read(dest.path().join("data/admin.token")).expect("token"),
            TOKEN
        );
        // Cut short, a sealed backup is corrupt, not a wrong passphrase.
        std::fs::write(&out, &bytes[..bytes.len() - 5]).expect("cut");
        let dest = tempfile::tempdir().expect("dest");
        let e = unpack(&out, Some(b"s3cret"), dest.path(), |_| Ok(())).expect_err("cut");
        assert_eq!(e.code(), ErrorCode::BackupCorrupt);
    }

    #[test]
    fn the_password_leaves_the_command_line() {
        let mut cmd = Command::new("pg_dump");
        pg_target(
            &mut cmd,
            "postgres://u:p%40ss@db.example:5432/tether?sslmode=require",
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            ["--dbname=postgres://u@db.example:5432/tether?sslmode=require"]
        );
        let env: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            env,
            [(
                std::ffi::OsStr::new("PGPASSWORD"),
                Some(std::ffi::OsStr::new("p@ss"))
            )]
        );
    }

    #[test]
    fn member_paths() {
        for ok in ["data/a", "data/pki/ca.pem", "database/tether.db"] {
            assert_eq!(safe_member_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/data/a",
            "data/../a",
            "data//a",
            "data/./a",
            "x/a",
            "data\\..\\a",
            "..",
        ] {
            assert!(safe_member_path(bad).is_err(), "{bad}");
        }
    }
}
