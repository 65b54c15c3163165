//! The image's root filesystem, read-only, through one cap-std handle.
//!
//! Lints see paths as the machine will (`/usr/lib/modules`), but every
//! access goes through a [`Dir`] rooted at the rootfs, so a symlink in the
//! image (`/etc/resolv.conf -> /run/...`) can never send a check to the
//! build host's files. Nothing here follows a symlink unless a lint asks.
//!
//! When lint runs inside a build (`RUN osctl container lint`), `/proc`,
//! `/sys`, `/dev` and often `/run` and `/tmp` are mounts the builder made:
//! their contents are not part of the image. [`Rootfs::walk`] stays on the
//! rootfs's own filesystem, and [`Rootfs::is_mount`] lets a lint skip a
//! directory the builder mounted.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, File, Metadata, MetadataExt};
use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};

use crate::LintError;

/// What a path is, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File {
        len: u64,
    },
    Symlink,
    /// Device node, socket or FIFO.
    Special,
}

impl Kind {
    fn of(meta: &Metadata) -> Kind {
        let ft = meta.file_type();
        if ft.is_dir() {
            Kind::Directory
        } else if ft.is_file() {
            Kind::File { len: meta.len() }
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Special
        }
    }
}

/// An image's root filesystem.
pub struct Rootfs {
    dir: Dir,
    /// The directory as given, for messages.
    path: PathBuf,
    /// The device of the rootfs's top directory: the walk stays on it.
    dev: u64,
}

/// `/usr/lib` → `usr/lib` (cap-std opens relative paths only).
fn rel(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

impl Rootfs {
    /// Opens `path` as an image's root filesystem.
    pub fn open(path: &Path) -> Result<Rootfs, LintError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(|source| {
            LintError::OpenRootfs {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let dev = dir
            .dir_metadata()
            .map_err(|source| LintError::OpenRootfs {
                path: path.to_path_buf(),
                source,
            })?
            .dev();
        Ok(Rootfs {
            dir,
            path: path.to_path_buf(),
            dev,
        })
    }

    fn io(&self, step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LintError {
        let path = self.path.join(rel(path));
        move |source| LintError::Io { step, path, source }
    }

    /// What `path` is, or `None` when nothing is there.
    pub fn kind(&self, path: &Path) -> Result<Option<Kind>, LintError> {
        if rel(path).as_os_str().is_empty() {
            return Ok(Some(Kind::Directory));
        }
        match self.dir.symlink_metadata(rel(path)) {
            Ok(meta) => Ok(Some(Kind::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A path through a file (`/etc/x` when /etc is a file) names
            // nothing either.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                Ok(None)
            }
            Err(e) => Err(self.io("reading", path)(e)),
        }
    }

    /// The names in directory `path`, sorted; empty when it is not there.
    pub fn list(&self, path: &Path) -> Result<Vec<OsString>, LintError> {
        if self.kind(path)? != Some(Kind::Directory) {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        let entries = if rel(path).as_os_str().is_empty() {
            self.dir.entries()
        } else {
            self.dir.read_dir(rel(path))
        }
        .map_err(self.io("listing", path))?;
        for entry in entries {
            names.push(entry.map_err(self.io("listing", path))?.file_name());
        }
        names.sort();
        Ok(names)
    }

    /// The contents of the regular file `path` (`None` when it is not one);
    /// [`LintError::TooLarge`] past `limit` bytes: lints read configuration
    /// files, and a huge one is worth saying so, not an allocation.
    pub fn read(&self, path: &Path, limit: u64) -> Result<Option<Vec<u8>>, LintError> {
        if !matches!(self.kind(path)?, Some(Kind::File { .. })) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        // One byte past the limit tells a file of exactly `limit` bytes
        // from a larger one, which is refused rather than judged cut short.
        self.open_file(path)?
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io("reading", path))?;
        if bytes.len() as u64 > limit {
            return Err(LintError::TooLarge {
                path: path.to_path_buf(),
                limit,
            });
        }
        Ok(Some(bytes))
    }

    /// Opens the regular file `path` for reading.
    pub fn open_file(&self, path: &Path) -> Result<File, LintError> {
        self.dir.open(rel(path)).map_err(self.io("opening", path))
    }

    /// The target of the symlink `path`.
    pub fn read_link(&self, path: &Path) -> Result<PathBuf, LintError> {
        self.dir
            .read_link_contents(rel(path))
            .map_err(self.io("reading the link", path))
    }

    /// Whether `path` is on another filesystem than the rootfs: a mount
    /// the builder made, like `/proc`, a tmpfs on `/run`, or a file it
    /// bind-mounts (`/etc/resolv.conf` during a `RUN`).
    pub fn is_mount(&self, path: &Path) -> Result<bool, LintError> {
        if rel(path).as_os_str().is_empty() {
            return Ok(false);
        }
        // The kernel says whether a path is the root of a mount. A device
        // number cannot: overlayfs without xino reports its lower layers'
        // devices, btrfs one per subvolume.
        let stx = statx(
            &self.dir,
            rel(path),
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )
        .map_err(|e| self.io("reading", path)(e.into()))?;
        if stx
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
        {
            return Ok(stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        }
        // Kernels before 5.8 do not say: fall back to the device.
        let meta = self
            .dir
            .symlink_metadata(rel(path))
            .map_err(self.io("reading", path))?;
        Ok(meta.dev() != self.dev)
    }

    /// Visits `top` and everything below it on the rootfs's filesystem, in
    /// name order, without following symlinks; `visit` gets each path (as
    /// the machine sees it) and what it is, and returns whether to descend
    /// into a directory. Iterative: a deep tree cannot exhaust the stack.
    pub fn walk(
        &self,
        top: &Path,
        mut visit: impl FnMut(&Path, Kind) -> Result<bool, LintError>,
    ) -> Result<(), LintError> {
        let Some(kind) = self.kind(top)? else {
            return Ok(());
        };
        let mut stack = vec![(top.to_path_buf(), kind)];
        while let Some((path, kind)) = stack.pop() {
            let descend = visit(&path, kind)?;
            if kind != Kind::Directory || !descend || self.is_mount(&path)? {
                continue;
            }
            let mut children = Vec::new();
            for name in self.list(&path)? {
                let child = path.join(&name);
                if let Some(kind) = self.kind(&child)? {
                    children.push((child, kind));
                }
            }
            // Popped from the end: push in reverse to visit in name order.
            stack.extend(children.into_iter().rev());
        }
        Ok(())
    }
}
