//! Comparing two images' trees entry by entry, from what the store already
//! knows (no file is read or hashed): [`ImageTree::walk`] gives each
//! entry's content address (object digest, or the bytes of a small inline
//! file) and metadata, in `Path` order, and the two walks are merged like
//! sorted lists.
//!
//! An entry present in both images is *changed* when any of these differ:
//! its type (directory, regular file, symlink, fifo, socket, device), its
//! content (a regular file's bytes; a device's number), its symlink
//! target, its permission bits, its owner (uid or gid), its extended
//! attributes. The modification time is not compared: every image build
//! touches every file. A directory's own metadata counts (the compared
//! tree's root, `/usr` or `/etc`, too); what it holds is compared entry by
//! entry. A hard link is compared as the file it names.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use osctl_store::{Content, ImageTree, StoreError, WalkEntry};
use serde::Serialize;

/// The trees `osctl diff` compares: what an update replaces (`/usr`) and
/// what the machine's `/etc` is merged with. `/var` is the machine's own.
pub const TREES: [&str; 2] = ["/usr", "/etc"];

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

/// What differs in a changed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aspect {
    /// The entry's type (then nothing else is listed).
    Type,
    /// A regular file's bytes, or a device node's number.
    Content,
    /// A symlink's target.
    Target,
    Mode,
    Owner,
    Xattrs,
}

impl Aspect {
    pub fn as_str(self) -> &'static str {
        match self {
            Aspect::Type => "type",
            Aspect::Content => "content",
            Aspect::Target => "target",
            Aspect::Mode => "mode",
            Aspect::Owner => "owner",
            Aspect::Xattrs => "xattrs",
        }
    }
}

/// One entry that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Absolute path in the images.
    pub path: PathBuf,
    pub kind: Kind,
    /// For [`Kind::Changed`]: what differs, in [`Aspect`] order; else empty.
    pub what: Vec<Aspect>,
}

/// The differences under one of [`TREES`], sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDiff {
    pub tree: &'static str,
    pub changes: Vec<FileChange>,
}

impl TreeDiff {
    /// How many entries differ in `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }
}

/// Compares `tree` (one of [`TREES`]) in two images, the directory
/// itself included. A `tree` that is in an image but is not a directory
/// there is an error (not "everything removed").
pub fn diff_tree(
    from: &ImageTree,
    to: &ImageTree,
    tree: &'static str,
) -> Result<TreeDiff, StoreError> {
    let old = from.walk(Path::new(tree))?;
    let new = to.walk(Path::new(tree))?;
    Ok(TreeDiff {
        tree,
        changes: diff_walks(&old, &new),
    })
}

/// Merges two walks (each sorted by path, as [`ImageTree::walk`] returns
/// them) into the list of differences.
pub fn diff_walks(
    from: &[(PathBuf, WalkEntry<'_>)],
    to: &[(PathBuf, WalkEntry<'_>)],
) -> Vec<FileChange> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let change = |path: &Path, kind, what| FileChange {
        path: path.to_path_buf(),
        kind,
        what,
    };
    while i < from.len() || j < to.len() {
        let ord = match (from.get(i), to.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                out.push(change(&from[i].0, Kind::Removed, Vec::new()));
                i += 1;
            }
            Ordering::Greater => {
                out.push(change(&to[j].0, Kind::Added, Vec::new()));
                j += 1;
            }
            Ordering::Equal => {
                let what = differences(&from[i].1, &to[j].1);
                if !what.is_empty() {
                    out.push(change(&from[i].0, Kind::Changed, what));
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// What differs between two entries at the same path (empty: nothing).
fn differences(a: &WalkEntry<'_>, b: &WalkEntry<'_>) -> Vec<Aspect> {
    if type_of(&a.content) != type_of(&b.content) {
        return vec![Aspect::Type];
    }
    let mut what = Vec::new();
    match (&a.content, &b.content) {
        (Content::Symlink(x), Content::Symlink(y)) if x != y => what.push(Aspect::Target),
        (Content::Symlink(_), Content::Symlink(_)) => {}
        (x, y) if x != y => what.push(Aspect::Content),
        _ => {}
    }
    if a.mode != b.mode {
        what.push(Aspect::Mode);
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        what.push(Aspect::Owner);
    }
    if a.xattrs != b.xattrs {
        what.push(Aspect::Xattrs);
    }
    what
}

/// The file type of an entry, ignoring its content.
fn type_of(c: &Content<'_>) -> u8 {
    match c {
        Content::Directory => 0,
        Content::Inline(_) | Content::Object { .. } | Content::Sparse(_) => 1,
        Content::Symlink(_) => 2,
        Content::Fifo => 3,
        Content::Socket => 4,
        Content::CharacterDevice(_) => 5,
        Content::BlockDevice(_) => 6,
    }
}
