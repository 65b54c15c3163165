//! Snapshots of one tree entry and the comparisons the merge needs.
//!
//! Every access is relative to an open directory handle and one path
//! component, never follows a symlink (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`)
//! and never leaves the tree. Extended attributes go through cap-std-ext,
//! which reaches a symlink or device node by `/proc/self/fd/<dir>/<name>` with
//! the `l*xattr` calls (so `/proc` must be mounted).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use cap_std::fs::Dir;
use cap_std_ext::dirext::CapStdExtDirExt;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

/// File type of an entry; device numbers are part of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "character device",
            Kind::BlockDev => "block device",
        }
    }
}

/// What `lstat`, `llistxattr` and `readlink` say about one entry.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) rdev: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) times: Timestamps,
    /// Every extended attribute, sorted by name.
    pub(crate) xattrs: Vec<(OsString, Vec<u8>)>,
    /// Target of a symlink, as stored (never resolved).
    pub(crate) link: Option<OsString>,
}

impl Node {
    /// Equal type, permissions, owner, xattrs and device number: everything
    /// but content, link target and timestamps. A symlink's mode is not
    /// significant (Linux ignores it).
    pub(crate) fn same_meta(&self, other: &Node) -> bool {
        self.kind == other.kind
            && (self.kind == Kind::Symlink || self.mode == other.mode)
            && self.uid == other.uid
            && self.gid == other.gid
            && self.xattrs == other.xattrs
            && (!matches!(self.kind, Kind::CharDev | Kind::BlockDev) || self.rdev == other.rdev)
    }
}

/// One entry of one tree: the directory holding it, its name, its snapshot.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) dir: &'a Dir,
    pub(crate) name: &'a OsStr,
    pub(crate) node: Node,
}

impl Entry<'_> {
    pub(crate) fn is_dir(&self) -> bool {
        self.node.kind == Kind::Dir
    }
}

/// Snapshot of `dir/name`, or `None` when there is no such entry.
pub(crate) fn inspect(dir: &Dir, name: &OsStr) -> io::Result<Option<Node>> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::Socket => Kind::Socket,
        FileType::CharacterDevice => Kind::CharDev,
        FileType::BlockDevice => Kind::BlockDev,
        FileType::Unknown => {
            return Err(io::Error::other(format!(
                "unknown file type {:o}",
                st.st_mode
            )));
        }
    };
    let link = if kind == Kind::Symlink {
        let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
        Some(OsStr::from_bytes(target.as_bytes()).to_owned())
    } else {
        None
    };
    Ok(Some(Node {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        rdev: st.st_rdev,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink as u64,
        times: Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        },
        xattrs: read_xattrs(dir, name)?,
        link,
    }))
}

fn read_xattrs(dir: &Dir, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let list = match dir.listxattrs(name) {
        Ok(list) => list,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for key in list.iter() {
        // An attribute removed between list and get is simply not there.
        if let Some(value) = dir.getxattr(name, key)? {
            out.push((key.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Names in `dir`, sorted.
pub(crate) fn list(dir: &Dir) -> io::Result<BTreeSet<OsString>> {
    let mut names = BTreeSet::new();
    for entry in dir.entries()? {
        names.insert(entry?.file_name());
    }
    Ok(names)
}

/// Opens the regular file `dir/name` for reading without following a symlink
/// (and without blocking, should it have become a fifo meanwhile).
pub(crate) fn open_file(dir: &Dir, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::openat(dir, name, flags | OFlags::NONBLOCK, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("no longer a regular file"));
    }
    Ok(File::from(fd))
}

/// Opens the directory `dir/name` without following a symlink.
pub(crate) fn open_dir(dir: &Dir, name: &OsStr) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(Dir::from(rustix::fs::openat(
        dir,
        name,
        flags,
        Mode::empty(),
    )?))
}

/// Whether two entries are the same: type, metadata and, for a regular file
/// its bytes, for a symlink its target, for a directory its whole subtree.
/// Timestamps and hard-link counts are not compared.
pub(crate) fn same_entry(a: &Entry, b: &Entry) -> io::Result<bool> {
    if !a.node.same_meta(&b.node) {
        return Ok(false);
    }
    match a.node.kind {
        Kind::File => {
            if a.node.size != b.node.size {
                return Ok(false);
            }
            if (a.node.dev, a.node.ino) == (b.node.dev, b.node.ino) {
                return Ok(true);
            }
            same_content(open_file(a.dir, a.name)?, open_file(b.dir, b.name)?)
        }
        Kind::Symlink => Ok(a.node.link == b.node.link),
        Kind::Dir => same_tree(&open_dir(a.dir, a.name)?, &open_dir(b.dir, b.name)?),
        Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => Ok(true),
    }
}

/// Whether two directories hold the same entries, compared by [`same_entry`].
pub(crate) fn same_tree(a: &Dir, b: &Dir) -> io::Result<bool> {
    let names = list(a)?;
    if names != list(b)? {
        return Ok(false);
    }
    for name in &names {
        let (Some(an), Some(bn)) = (inspect(a, name)?, inspect(b, name)?) else {
            return Ok(false);
        };
        let ea = Entry {
            dir: a,
            name,
            node: an,
        };
        let eb = Entry {
            dir: b,
            name,
            node: bn,
        };
        if !same_entry(&ea, &eb)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Streams both files in 64 KiB blocks; stops at the first difference.
fn same_content(mut a: File, mut b: File) -> io::Result<bool> {
    const BLOCK: usize = 64 * 1024;
    let mut buf_a = vec![0u8; BLOCK];
    let mut buf_b = vec![0u8; BLOCK];
    loop {
        let na = fill(&mut a, &mut buf_a)?;
        let nb = fill(&mut b, &mut buf_b)?;
        if na != nb || buf_a[..na] != buf_b[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn fill(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
