//! Filesystem trees: read from disk, computed from layers, compared.
//!
//! # The model
//!
//! A [`Tree`] maps each path (relative; the root is the empty path) to a
//! [`Node`]: file type with its type-specific data (content size and sha256,
//! symlink target, device numbers), permission bits (`mode & 0o7777`), uid,
//! gid and xattrs. Hard links are represented by an opaque `inode` number
//! that is only meaningful *within* one tree: comparisons look at which paths
//! share an inode ([`Tree::hardlink_groups`]), never at the numbers.
//!
//! # What is compared and what is not
//!
//! * mtimes/atimes/ctimes are not recorded: extraction order, composefs and
//!   the kernel all touch directory mtimes, and layers carry fixed ones anyway.
//! * Sizes of directories and symlinks, nlink counts and device/inode numbers
//!   are not compared (they depend on the filesystem); hard-link *grouping* is.
//! * The root directory's own metadata is skipped by [`assert_trees_equal`]:
//!   an extraction target is a `mkdtemp` directory (0700) and composefs
//!   synthesises its root from the image's `./` entry or defaults, so neither
//!   says anything about the layers. Use [`diff_trees_with`] with
//!   `root_metadata: true` to check it.
//! * xattrs that the host, not the image, adds are skipped when snapshotting
//!   (see [`is_noise_xattr`]); everything else, including `security.capability`
//!   (file capabilities are real image content), is compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::Sha256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File { size: u64, sha256: String },
    Symlink { target: PathBuf },
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits only (`mode & 0o7777`); the type is in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Identity for hard links, meaningful only within one tree.
    pub inode: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<PathBuf, Node>,
}

impl Tree {
    /// The node at `path` (relative, `""` for the root; a leading `/` is
    /// accepted for convenience).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(Path::new(path.trim_start_matches('/')))
    }

    /// Sets of two or more non-directory paths sharing one inode.
    pub fn hardlink_groups(&self) -> BTreeSet<Vec<PathBuf>> {
        let mut by_inode: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (path, node) in &self.nodes {
            if node.kind != NodeKind::Dir {
                by_inode.entry(node.inode).or_default().push(path.clone());
            }
        }
        by_inode
            .into_values()
            .filter(|paths| paths.len() > 1)
            .collect()
    }

    /// One line per node, `ls -l` style; handy in a failing test's output.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (path, node) in &self.nodes {
            let _ = writeln!(
                out,
                "{:o} {}:{} {} {}",
                node.mode,
                node.uid,
                node.gid,
                display(path),
                describe_kind(&node.kind)
            );
        }
        out
    }
}

/// xattrs that say something about the host rather than the image:
/// * `security.selinux`, `security.ima`, `security.evm`: labels and
///   signatures the host's LSM/IMA policy attaches to every file it sees.
/// * `trusted.overlay.*`, `user.overlay.*`: overlayfs' private attributes
///   (composefs builds on overlayfs); an overlay mount normally hides them,
///   but they show up when looking at a backing directory.
pub fn is_noise_xattr(name: &str) -> bool {
    matches!(name, "security.selinux" | "security.ima" | "security.evm")
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
}

/// Snapshots the directory tree under `dir` without following symlinks.
/// Panics on I/O errors (it is a test helper); see [`try_snapshot`].
pub fn snapshot(dir: &Path) -> Tree {
    try_snapshot(dir).unwrap_or_else(|e| panic!("snapshot of {}: {e:#}", dir.display()))
}

pub fn try_snapshot(dir: &Path) -> Result<Tree> {
    let mut tree = Tree::default();
    let mut inodes: HashMap<(u64, u64), u64> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.as_os_str().is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let meta =
            fs::symlink_metadata(&abs).with_context(|| format!("lstat {}", abs.display()))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            for child in fs::read_dir(&abs).with_context(|| format!("reading {}", abs.display()))? {
                stack.push(rel.join(child?.file_name()));
            }
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File {
                size: meta.len(),
                sha256: hash_file(&abs)?,
            }
        } else if ft.is_symlink() {
            NodeKind::Symlink {
                target: fs::read_link(&abs)?,
            }
        } else if ft.is_char_device() {
            NodeKind::CharDev {
                major: rustix::fs::major(meta.rdev()),
                minor: rustix::fs::minor(meta.rdev()),
            }
        } else if ft.is_block_device() {
            NodeKind::BlockDev {
                major: rustix::fs::major(meta.rdev()),
                minor: rustix::fs::minor(meta.rdev()),
            }
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let next = inodes.len() as u64;
        let inode = *inodes.entry((meta.dev(), meta.ino())).or_insert(next);
        let xattrs = read_xattrs(&abs).with_context(|| format!("xattrs of {}", abs.display()))?;
        tree.nodes.insert(
            rel,
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                xattrs,
                inode,
            },
        );
    }
    Ok(tree)
}

fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher.hex())
}

fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut names = vec![0u8; rustix::fs::llistxattr_query(path)?];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_str = String::from_utf8_lossy(name).into_owned();
        if is_noise_xattr(&name_str) {
            continue;
        }
        let c_name = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; rustix::fs::lgetxattr_query(path, c_name)?];
        let len = rustix::fs::lgetxattr(path, c_name, &mut value[..])?;
        value.truncate(len);
        out.insert(name_str, value);
    }
    Ok(out)
}

/// What [`diff_trees_with`] compares beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareOptions {
    /// Also compare the root directory's mode, owner and xattrs.
    pub root_metadata: bool,
}

/// Panics with a list of every difference if the trees differ (ignoring the
/// root directory's own metadata, see the module docs).
#[track_caller]
pub fn assert_trees_equal(expected: &Tree, actual: &Tree) {
    let diffs = diff_trees(expected, actual);
    if !diffs.is_empty() {
        panic!(
            "trees differ ({} problems; expected {} paths, actual {}):\n  {}\n",
            diffs.len(),
            expected.nodes.len(),
            actual.nodes.len(),
            diffs.join("\n  ")
        );
    }
}

pub fn diff_trees(expected: &Tree, actual: &Tree) -> Vec<String> {
    diff_trees_with(expected, actual, CompareOptions::default())
}

/// Every difference between the trees, one human-readable line each.
pub fn diff_trees_with(expected: &Tree, actual: &Tree, options: CompareOptions) -> Vec<String> {
    let mut out = Vec::new();
    for (path, exp) in &expected.nodes {
        let shown = display(path);
        let Some(act) = actual.nodes.get(path) else {
            out.push(format!(
                "{shown}: missing (expected {})",
                describe_kind(&exp.kind)
            ));
            continue;
        };
        if path.as_os_str().is_empty() && !options.root_metadata {
            continue;
        }
        if exp.kind != act.kind {
            out.push(format!(
                "{shown}: expected {}, found {}",
                describe_kind(&exp.kind),
                describe_kind(&act.kind)
            ));
        }
        if exp.mode != act.mode {
            out.push(format!(
                "{shown}: mode expected {:04o}, found {:04o}",
                exp.mode, act.mode
            ));
        }
        if (exp.uid, exp.gid) != (act.uid, act.gid) {
            out.push(format!(
                "{shown}: owner expected {}:{}, found {}:{}",
                exp.uid, exp.gid, act.uid, act.gid
            ));
        }
        let names: BTreeSet<_> = exp.xattrs.keys().chain(act.xattrs.keys()).collect();
        for name in names {
            match (exp.xattrs.get(name), act.xattrs.get(name)) {
                (Some(e), Some(a)) if e == a => {}
                (Some(e), Some(a)) => out.push(format!(
                    "{shown}: xattr {name} expected {}, found {}",
                    show_bytes(e),
                    show_bytes(a)
                )),
                (Some(e), None) => {
                    out.push(format!("{shown}: xattr {name}={} missing", show_bytes(e)))
                }
                (None, Some(a)) => out.push(format!(
                    "{shown}: unexpected xattr {name}={}",
                    show_bytes(a)
                )),
                (None, None) => unreachable!(),
            }
        }
    }
    for (path, act) in &actual.nodes {
        if !expected.nodes.contains_key(path) {
            out.push(format!(
                "{}: unexpected {}",
                display(path),
                describe_kind(&act.kind)
            ));
        }
    }
    let (exp_links, act_links) = (expected.hardlink_groups(), actual.hardlink_groups());
    for group in exp_links.difference(&act_links) {
        out.push(format!(
            "hard links: expected {} to be one inode",
            show_group(group)
        ));
    }
    for group in act_links.difference(&exp_links) {
        out.push(format!(
            "hard links: unexpected shared inode for {}",
            show_group(group)
        ));
    }
    out
}

fn display(path: &Path) -> String {
    format!("/{}", path.display())
}

fn show_group(group: &[PathBuf]) -> String {
    let names: Vec<_> = group.iter().map(|p| display(p)).collect();
    format!("{{{}}}", names.join(", "))
}

fn describe_kind(kind: &NodeKind) -> String {
    match kind {
        NodeKind::Dir => "directory".into(),
        NodeKind::File { size, sha256 } => format!(
            "file of {size} bytes, sha256 {}",
            &sha256[..12.min(sha256.len())]
        ),
        NodeKind::Symlink { target } => format!("symlink -> {}", target.display()),
        NodeKind::CharDev { major, minor } => format!("char device {major}:{minor}"),
        NodeKind::BlockDev { major, minor } => format!("block device {major}:{minor}"),
        NodeKind::Fifo => "fifo".into(),
        NodeKind::Socket => "socket".into(),
    }
}

fn show_bytes(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}
