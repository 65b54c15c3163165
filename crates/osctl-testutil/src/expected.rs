//! The root filesystem a list of layers must produce.
//!
//! # Semantics (OCI image spec, "Applying changesets")
//!
//! Layers are applied bottom to top. Within one layer:
//!
//! 1. Whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are
//!    applied first, and only against what the *lower* layers built: the spec
//!    says they never hide entries of their own layer, whatever the order.
//!    A whiteout removes the path and everything under it; an opaque marker
//!    removes the directory's lower contents but keeps the directory. Neither
//!    creates anything (whiteouts of absent paths are no-ops).
//! 2. Every other entry is applied in tar order. A directory over an existing
//!    directory only updates its metadata (children stay); anything else
//!    replaces what was at the path, including a whole directory subtree.
//!    A hard link copies its target's node and shares its identity, so the
//!    two paths form a hard-link group (a later replacement of either path
//!    breaks only that path out of the group, as `tar -x` does).
//!    Missing parent directories are created as `0755 root:root`, which is
//!    what `tar -x` run by root does; specs that care list parents explicitly.
//!
//! Names are normalised the way extractors do (`./` and trailing `/`
//! dropped). Entries whose names are absolute or contain `..` have no agreed
//! meaning, so they are left out: a test with such names asserts on osctl's
//! behaviour (reject or skip) rather than on a tree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};

use crate::Sha256;
use crate::layout::{Entry, Layer, generated_content};
use crate::tree::{Node, NodeKind, Tree};

/// Applies `layers` in order and returns the resulting tree; panics (with
/// the reason) if the layers are inconsistent, e.g. a hard link to nothing.
pub fn expected_tree(layers: &[Layer]) -> Tree {
    try_expected_tree(layers).unwrap_or_else(|e| panic!("expected_tree: {e:#}"))
}

pub fn try_expected_tree(layers: &[Layer]) -> Result<Tree> {
    let mut state = State {
        tree: Tree::default(),
        next_inode: 1,
    };
    state
        .tree
        .nodes
        .insert(PathBuf::new(), dir_node(0o755, 0, 0, 0));
    for (i, layer) in layers.iter().enumerate() {
        let actions: Vec<_> = layer.entries.iter().filter_map(classify).collect();
        for action in &actions {
            match action {
                Action::Whiteout(path) => state.remove_subtree(path, true),
                Action::Opaque(dir) => state.remove_subtree(dir, false),
                Action::Put(..) => {}
            }
        }
        for action in &actions {
            if let Action::Put(path, entry) = action {
                state
                    .put(path, entry)
                    .with_context(|| format!("layer {i}, entry {}", path.display()))?;
            }
        }
    }
    Ok(state.tree)
}

enum Action<'a> {
    Whiteout(PathBuf),
    Opaque(PathBuf),
    Put(PathBuf, &'a Entry),
}

fn classify(entry: &Entry) -> Option<Action<'_>> {
    let path = normalize(&entry.tar_name())?;
    let Some(name) = path.file_name().map(OsStr::as_bytes) else {
        return Some(Action::Put(path, entry)); // the root itself, e.g. "./"
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    if name == b".wh..wh..opq" {
        Some(Action::Opaque(parent.into()))
    } else if let Some(hidden) = name.strip_prefix(b".wh.") {
        Some(Action::Whiteout(parent.join(OsStr::from_bytes(hidden))))
    } else {
        Some(Action::Put(path, entry))
    }
}

/// Relative, `.`-free path, or None for absolute or `..`-containing names.
fn normalize(name: &[u8]) -> Option<PathBuf> {
    let path = Path::new(OsStr::from_bytes(name));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn dir_node(mode: u32, uid: u32, gid: u32, inode: u64) -> Node {
    Node {
        kind: NodeKind::Dir,
        mode,
        uid,
        gid,
        xattrs: BTreeMap::new(),
        inode,
    }
}

struct State {
    tree: Tree,
    next_inode: u64,
}

impl State {
    fn inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    /// Removes everything strictly under `path`, and `path` itself if asked.
    /// Relies on component-wise ordering: descendants sort right after it.
    fn remove_subtree(&mut self, path: &Path, including_self: bool) {
        let doomed: Vec<PathBuf> = self
            .tree
            .nodes
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .filter(|p| including_self || p != path)
            .filter(|p| !p.as_os_str().is_empty()) // never the root itself
            .collect();
        for p in doomed {
            self.tree.nodes.remove(&p);
        }
    }

    fn ensure_parents(&mut self, path: &Path) -> Result<()> {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors {
            match self.tree.nodes.get(dir) {
                Some(node) if node.kind == NodeKind::Dir => {}
                Some(_) => bail!("parent {} is not a directory", dir.display()),
                None => {
                    let inode = self.inode();
                    self.tree
                        .nodes
                        .insert(dir.into(), dir_node(0o755, 0, 0, inode));
                }
            }
        }
        Ok(())
    }

    fn put(&mut self, path: &Path, entry: &Entry) -> Result<()> {
        if let Entry::Dir { mode, uid, gid, .. } = entry
            && let Some(node) = self.tree.nodes.get_mut(path)
            && node.kind == NodeKind::Dir
        {
            (node.mode, node.uid, node.gid) = (*mode, *uid, *gid);
            return Ok(());
        }
        ensure!(
            !path.as_os_str().is_empty(),
            "only a directory can be the root"
        );
        self.ensure_parents(path)?;
        let node = match entry {
            Entry::Hardlink { target, .. } => {
                let target =
                    normalize(target.as_bytes()).context("hard link target escapes the root")?;
                let node = self
                    .tree
                    .nodes
                    .get(&target)
                    .with_context(|| format!("hard link to missing {}", target.display()))?;
                ensure!(
                    node.kind != NodeKind::Dir,
                    "hard link to directory {}",
                    target.display()
                );
                if target == path {
                    return Ok(());
                }
                node.clone()
            }
            other => self.new_node(other)?,
        };
        self.remove_subtree(path, true);
        self.tree.nodes.insert(path.into(), node);
        Ok(())
    }

    fn new_node(&mut self, entry: &Entry) -> Result<Node> {
        let (kind, mode, uid, gid, xattrs) = match entry {
            Entry::Dir { mode, uid, gid, .. } => (NodeKind::Dir, *mode, *uid, *gid, vec![]),
            Entry::File {
                mode,
                uid,
                gid,
                content,
                xattrs,
                ..
            } => (file_kind(content), *mode, *uid, *gid, xattrs.clone()),
            Entry::LargeFile {
                mode, size, seed, ..
            } => {
                let mut hasher = Sha256::new();
                io::copy(&mut generated_content(*size, *seed), &mut hasher)?;
                (
                    NodeKind::File {
                        size: *size,
                        sha256: hasher.hex(),
                    },
                    *mode,
                    0,
                    0,
                    vec![],
                )
            }
            Entry::Zeros { size, .. } => {
                let mut hasher = Sha256::new();
                io::copy(&mut io::Read::take(io::repeat(0), *size), &mut hasher)?;
                (
                    NodeKind::File {
                        size: *size,
                        sha256: hasher.hex(),
                    },
                    0o644,
                    0,
                    0,
                    vec![],
                )
            }
            Entry::Symlink { target, .. } => (
                NodeKind::Symlink {
                    target: target.into(),
                },
                0o777,
                0,
                0,
                vec![],
            ),
            Entry::CharDev {
                major, minor, mode, ..
            } => (
                NodeKind::CharDev {
                    major: *major,
                    minor: *minor,
                },
                *mode,
                0,
                0,
                vec![],
            ),
            Entry::BlockDev {
                major, minor, mode, ..
            } => (
                NodeKind::BlockDev {
                    major: *major,
                    minor: *minor,
                },
                *mode,
                0,
                0,
                vec![],
            ),
            Entry::Fifo { .. } => (NodeKind::Fifo, 0o644, 0, 0, vec![]),
            Entry::RawPath { content, .. } => (file_kind(content), 0o644, 0, 0, vec![]),
            Entry::Hardlink { .. } | Entry::Whiteout { .. } | Entry::Opaque { .. } => {
                unreachable!("handled by the caller")
            }
        };
        Ok(Node {
            kind,
            mode,
            uid,
            gid,
            xattrs: xattrs.into_iter().collect(),
            inode: self.inode(),
        })
    }
}

fn file_kind(content: &[u8]) -> NodeKind {
    NodeKind::File {
        size: content.len() as u64,
        sha256: hex::encode(openssl::sha::sha256(content)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_dots_and_rejects_escapes() {
        assert_eq!(normalize(b"./a//b/./c/"), Some(PathBuf::from("a/b/c")));
        assert_eq!(normalize(b"./"), Some(PathBuf::new()));
        assert_eq!(normalize(b"../x"), None);
        assert_eq!(normalize(b"a/../../x"), None);
        assert_eq!(normalize(b"/etc/passwd"), None);
    }
}
