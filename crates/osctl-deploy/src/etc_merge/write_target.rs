//! Writing the result: entries copied from one side into the target tree.
//!
//! New files are created with `O_EXCL | O_NOFOLLOW` and mode 0600,
//! directories with mode 0700; owner, mode, xattrs and times are applied once
//! the entry is complete (a directory's after its entries), in the order that
//! keeps setuid/setgid bits and `security.capability` (chown clears both).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::Path;

use cap_std::fs::Dir;
use cap_std_ext::dirext::CapStdExtDirExt;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::EtcMergeError;
use super::snapshot::{self, Entry, Kind, Node};
use super::three_way::{Merger, Result, Side, open_dir, shown};

/// Maps a rustix error like [`EtcMergeError::io`] maps an `io::Error`.
fn errno(
    step: &'static str,
    tree: &'static str,
    path: &Path,
) -> impl FnOnce(Errno) -> EtcMergeError {
    let f = EtcMergeError::io(step, tree, path);
    move |e| f(io::Error::from(e))
}

impl Merger<'_> {
    /// Writes `entry`, taken from `side`, as `target/<entry.name>`; a
    /// directory with everything in it.
    pub(crate) fn copy_entry(
        &mut self,
        side: Side,
        entry: &Entry,
        target: &Dir,
        path: &Path,
    ) -> Result<()> {
        let (tree, name, node) = (side.tree(), entry.name, &entry.node);
        match node.kind {
            Kind::File => {
                let key = (side, node.dev, node.ino);
                if node.nlink > 1
                    && let Some(first) = self.links.get(&key)
                {
                    return rustix::fs::linkat(
                        self.target_root,
                        first,
                        target,
                        name,
                        AtFlags::empty(),
                    )
                    .map_err(errno("hard-linking", "target", path));
                }
                let mut src = snapshot::open_file(entry.dir, name)
                    .map_err(EtcMergeError::io("opening", tree, path))?;
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(target, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(errno("creating", "target", path))?;
                let mut dst = File::from(fd);
                io::copy(&mut src, &mut dst).map_err(EtcMergeError::io(
                    "copying",
                    match side {
                        Side::Current => "current to target",
                        Side::New => "new to target",
                    },
                    path,
                ))?;
                drop(dst);
                self.apply_meta(target, name, node, path)?;
                if node.nlink > 1 {
                    self.links.insert(key, path.to_owned());
                }
                Ok(())
            }
            Kind::Dir => {
                let sub = self.make_dir(target, name, path)?;
                let src = open_dir(entry, tree, path)?;
                let children =
                    snapshot::list(&src).map_err(EtcMergeError::io("listing", tree, path))?;
                for child in &children {
                    let child_path = path.join(child);
                    let found = snapshot::inspect(&src, child).map_err(EtcMergeError::io(
                        "inspecting",
                        tree,
                        &child_path,
                    ))?;
                    if let Some(node) = found {
                        let child = Entry {
                            dir: &src,
                            name: child,
                            node,
                        };
                        self.copy_entry(side, &child, &sub, &child_path)?;
                    }
                }
                self.apply_meta(target, name, node, path)
            }
            Kind::Symlink => {
                let link = node.link.as_deref().unwrap_or_default();
                rustix::fs::symlinkat(link, target, name).map_err(errno(
                    "creating symlink",
                    "target",
                    path,
                ))?;
                self.apply_meta(target, name, node, path)
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                let file_type = match node.kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::Socket => FileType::Socket,
                    Kind::CharDev => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let mode = Mode::from_raw_mode(0o600);
                match rustix::fs::mknodat(target, name, file_type, mode, node.rdev) {
                    Ok(()) => self.apply_meta(target, name, node, path),
                    Err(e) if e == Errno::PERM || e == Errno::OPNOTSUPP => {
                        let kind = node.kind.describe();
                        self.report
                            .skip(&shown(path), format!("cannot create the {kind} node: {e}"));
                        Ok(())
                    }
                    Err(e) => Err(errno("creating node", "target", path)(e)),
                }
            }
        }
    }

    /// Creates `target/name` (mode 0700 until [`Merger::apply_meta`]) and opens it.
    pub(crate) fn make_dir(&mut self, target: &Dir, name: &OsStr, path: &Path) -> Result<Dir> {
        rustix::fs::mkdirat(target, name, Mode::from_raw_mode(0o700)).map_err(errno(
            "creating directory",
            "target",
            path,
        ))?;
        snapshot::open_dir(target, name).map_err(EtcMergeError::io("opening", "target", path))
    }

    /// Gives `target/name` the owner, mode, xattrs and times of `node`.
    pub(crate) fn apply_meta(
        &mut self,
        target: &Dir,
        name: &OsStr,
        node: &Node,
        path: &Path,
    ) -> Result<()> {
        let owner = (Some(Uid::from_raw(node.uid)), Some(Gid::from_raw(node.gid)));
        rustix::fs::chownat(target, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno("setting the owner of", "target", path))?;
        if node.kind != Kind::Symlink {
            // Not a symlink (we just created it), so following is harmless;
            // fchmodat has no working no-follow flag on older kernels.
            rustix::fs::chmodat(
                target,
                name,
                Mode::from_raw_mode(node.mode),
                AtFlags::empty(),
            )
            .map_err(errno("setting the mode of", "target", path))?;
        }
        for (key, value) in &node.xattrs {
            target
                .setxattr(name, key, value)
                .map_err(EtcMergeError::io("setting xattrs of", "target", path))?;
        }
        rustix::fs::utimensat(target, name, &node.times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(
            "setting the times of",
            "target",
            path,
        ))
    }
}
