//! Durable file writes: the installed definitions and the repository state
//! must survive a kill -9 or a power cut at any instant.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What failed, on which path.
pub(crate) type FsError = (&'static str, PathBuf, io::Error);

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it
/// over `path` and fsyncs the directory: readers see the old file or the
/// new one, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = parent(path);
    fs::create_dir_all(&dir).map_err(|e| ("creating", dir.clone(), e))?;
    let tmp = tmp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| ("creating", tmp.clone(), e))?;
    f.write_all(bytes)
        .map_err(|e| ("writing", tmp.clone(), e))?;
    f.sync_all().map_err(|e| ("syncing", tmp.clone(), e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| ("renaming onto", path.to_path_buf(), e))?;
    sync_dir(&dir)
}

/// Renames `from` onto `to` and fsyncs the directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), FsError> {
    fs::rename(from, to).map_err(|e| ("renaming onto", to.to_path_buf(), e))?;
    sync_dir(&parent(to))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ("syncing", dir.to_path_buf(), e))
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The temporary name used while writing `path`; unique per process so two
/// writers never share one.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Whether an I/O error means the disk is full (or the quota is).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}
