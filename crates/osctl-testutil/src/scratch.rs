//! Scratch filesystems for fault tests: a size-limited tmpfs that can be
//! filled up or remounted read-only, unmounted (lazily) on drop.
//!
//! Real filesystems, not fault injection: the kernel returns `ENOSPC` and
//! `EROFS` exactly as it would on a full or read-only disk. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// A tmpfs mounted on a fresh temporary directory.
pub struct ScratchFs {
    dir: tempfile::TempDir,
}

impl ScratchFs {
    /// Mounts a tmpfs of `size_bytes` (`mount -t tmpfs -o size=…`).
    pub fn tmpfs(size_bytes: u64) -> Result<ScratchFs> {
        let dir = crate::tempdir();
        crate::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}")])
                .arg("osctl-scratch")
                .arg(dir.path()),
        )?;
        Ok(ScratchFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,ro` (or `rw`).
    pub fn remount(&self, read_only: bool) -> Result<()> {
        let opts = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        crate::run(Command::new("mount").args(["-o", opts]).arg(self.path()))?;
        Ok(())
    }

    /// Bytes still free for writing (statvfs `f_bavail`).
    pub fn free(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(self.path()).context("statvfs")?;
        Ok(st.f_bavail * st.f_frsize)
    }

    /// Allocates a file `name` so that about `leave` bytes stay free;
    /// returns its path. `leave` 0 fills the filesystem.
    pub fn fill(&self, name: &str, leave: u64) -> Result<PathBuf> {
        let free = self.free()?;
        if free < leave {
            bail!("only {free} bytes free, cannot leave {leave}");
        }
        let path = self.path().join(name);
        crate::run(
            Command::new("fallocate")
                .args(["-l", &(free - leave).to_string()])
                .arg(&path),
        )?;
        Ok(path)
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // Lazily, so a test that failed with something still open under the
        // mount does not also leak the mount; the tempdir removes the
        // (then empty) mount point. Errors only mean there is nothing to do.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
