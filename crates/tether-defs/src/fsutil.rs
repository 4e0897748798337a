//! Durable file writes for the installed definitions and the repository
//! state, which must survive a kill -9 or a power cut at any instant. The
//! one implementation is `tether_fs`; this adapts its error to the
//! (step, path, error) triple the definitions errors are built from.

use std::io;
use std::path::{Path, PathBuf};

/// What failed, on which path.
pub(crate) type FsError = (&'static str, PathBuf, io::Error);

fn triple(e: tether_fs::WriteError) -> FsError {
    (e.op, e.path, e.source)
}

/// [`tether_fs::write_atomic`], readable by all (definitions are not secret).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    tether_fs::write_atomic(path, bytes, tether_fs::PUBLIC).map_err(triple)
}

/// Renames `from` onto `to` and fsyncs the directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), FsError> {
    tether_fs::rename_durable(from, to).map_err(triple)
}

/// The temporary name used while writing `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    tether_fs::tmp_path(path)
}

/// Whether an I/O error means the disk is full (or the quota is).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    tether_fs::is_disk_full(e)
}
