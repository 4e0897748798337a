//! A small tmpfs that runs out of space, unmounted when dropped (mounting
//! needs root, which the lab has).

use std::path::{Path, PathBuf};

use crate::program;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `1m`, `300k`) at `at`,
    /// creating the directory if needed. Mode 0700, like a state dir.
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = std::process::Command::new(program("mount"))
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mounting a tmpfs failed (the lab runs as root)"
        );
        Tmpfs(at.to_owned())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new(program("umount"))
            .arg(&self.0)
            .status();
    }
}
