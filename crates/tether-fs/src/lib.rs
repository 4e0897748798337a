//! Durable file writes: the one way Tether replaces a file.
//!
//! A write goes to a temporary file beside the target, created with its
//! final mode from the start (a 0600 secret is never readable by others,
//! not even for an instant), is fsynced, renamed over the target, and the
//! directory is fsynced so the rename itself survives a power cut. Readers
//! see the old file or the new one, never a mix, and after a crash the
//! target is one of the two. A failed write removes its temporary file.
//!
//! Used by the agent (state, config, credential), the definitions
//! (installed content, TUF state, mirrors, exports), the server (PKI, the
//! admin credential) and the CLI (endpoint record, exported bundles).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What failed, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct WriteError {
    /// The step: "creating", "writing", "syncing", "renaming onto"…
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn new(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError + use<> {
        let path = path.to_path_buf();
        move |source| WriteError { op, path, source }
    }

    /// Whether the disk (or the quota) is full.
    pub fn is_disk_full(&self) -> bool {
        is_disk_full(&self.source)
    }
}

/// Mode of files only their owner may read: secrets, keys, state.
pub const PRIVATE: u32 = 0o600;
/// Mode of files anyone may read: certificates, served content.
pub const PUBLIC: u32 = 0o644;

/// Replaces `path` with `bytes`, durably and atomically, with `mode`
/// (before the umask). Creates the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    replace_with(path, mode, |f| {
        f.write_all(bytes).map_err(WriteError::new("writing", path))
    })
}

/// Like [`write_atomic`], and the temporary is also given `owner` (uid,
/// gid) before the rename, so the target never has the wrong owner, not
/// even for an instant (a deployed key readable by its service only).
#[cfg(unix)]
pub fn write_atomic_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), WriteError> {
    replace_with(path, mode, |f| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))
                .map_err(WriteError::new("changing the owner of", path))?;
            // chown clears set-id bits on some systems; the mode is set again.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(WriteError::new("setting the mode of", path))?;
        }
        f.write_all(bytes).map_err(WriteError::new("writing", path))
    })
}

/// Replaces `to` with a copy of `from`, like [`write_atomic`].
pub fn copy_atomic(from: &Path, to: &Path, mode: u32) -> Result<(), WriteError> {
    replace_with(to, mode, |f| {
        let mut src = File::open(from).map_err(WriteError::new("opening", from))?;
        io::copy(&mut src, f)
            .map(drop)
            .map_err(WriteError::new("copying to", to))
    })
}

fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let dir = parent(path);
    fs::create_dir_all(&dir).map_err(WriteError::new("creating", &dir))?;
    let tmp = tmp_path(path);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options
            .open(&tmp)
            .map_err(WriteError::new("creating", &tmp))?;
        // A leftover temporary from a crash may have another mode.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(WriteError::new("setting the mode of", &tmp))?;
        fill(&mut f)?;
        f.sync_all().map_err(WriteError::new("syncing", &tmp))?;
        drop(f);
        rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` onto `to` and fsyncs the directory.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), WriteError> {
    fs::rename(from, to).map_err(WriteError::new("renaming onto", to))?;
    sync_dir(&parent(to))
}

/// Fsyncs a directory, so the names in it (a rename, a new file) persist.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WriteError::new("syncing", dir))
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The temporary name used while writing `path`: hidden, beside it, and
/// unique per process so two writers never share one.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Whether an I/O error means the disk is full (or the quota is).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_write_sets_owner_and_exact_mode_before_the_rename() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let own = fs::metadata(dir.path()).expect("stat");
        // As root, another owner (nobody); otherwise our own ids, which a
        // chown always accepts.
        let ids = if own.uid() == 0 {
            (65534, 65534)
        } else {
            (own.uid(), own.gid())
        };
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"old", 0o600).expect("old");
        write_atomic_owned(&p, b"k", 0o640, Some(ids)).expect("write");
        let meta = fs::metadata(&p).expect("stat");
        assert_eq!(mode(&p), 0o640);
        assert_eq!((meta.uid(), meta.gid()), ids);
        assert_eq!(fs::read(&p).expect("read"), b"k");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temporary left"
        );
    }

    fn mode(p: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).expect("stat").permissions())
            & 0o777
    }

    #[test]
    fn replaces_whole_files_with_their_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/secret");
        write_atomic(&p, b"one", PRIVATE).expect("writes");
        assert_eq!(fs::read(&p).expect("reads"), b"one");
        assert_eq!(mode(&p), 0o600);
        write_atomic(&p, b"two", PRIVATE).expect("replaces");
        assert_eq!(fs::read(&p).expect("reads"), b"two");
        // A stale temporary with a wide mode does not widen the result.
        fs::write(tmp_path(&p), b"stale").expect("writes");
        fs::set_permissions(
            tmp_path(&p),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .expect("chmod");
        write_atomic(&p, b"three", PRIVATE).expect("replaces");
        assert_eq!(mode(&p), 0o600);
        let public = dir.path().join("cert.pem");
        copy_atomic(&p, &public, PUBLIC).expect("copies");
        assert_eq!(fs::read(&public).expect("reads"), b"three");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("lists")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["secret"], "no temporary left");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_the_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        write_atomic(&p, b"old", PUBLIC).expect("writes");
        // The target is a directory: the rename fails, the temporary goes.
        let d = dir.path().join("d");
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("x"), b"x").expect("writes");
        let e = write_atomic(&d, b"new", PUBLIC).expect_err("a directory");
        assert_eq!(e.op, "renaming onto", "{e}");
        assert!(!tmp_path(&d).exists());
        let e = copy_atomic(&dir.path().join("missing"), &p, PUBLIC).expect_err("no source");
        assert_eq!(e.op, "opening", "{e}");
        assert_eq!(fs::read(&p).expect("reads"), b"old", "the old file stays");
    }
}
