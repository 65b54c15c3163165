//! Writing a [`CompactTree`] as a composefs EROFS image (format V1),
//! streamed to a writer, byte for byte the image composefs-rs's
//! `compute_image_bytes` makes of the same tree.
//!
//! Why our own writer: composefs-rs's clones the whole tree (to add the V1
//! whiteout stubs), builds a second per-inode structure with boxed copies
//! of every xattr (two per stored file: `metacopy` and `redirect`), counts
//! xattrs in a map holding another copy of each, and returns the image as
//! one buffer: about 0.9 KiB per entry on top of the tree. This one keeps
//! four u32 per inode (its node, its nid, and the node's inode and link
//! count) and a bit of flags, recomputes each inode's xattrs when it needs
//! them, counts only what may be shared, and streams the bytes out.
//!
//! The image id is the fs-verity digest of these bytes, and deployments
//! name images by it, so the format must not drift: the layout rules below
//! follow composefs-rs 0.9.4's V1 writer (itself C mkcomposefs's), and the
//! tests compare the bytes of both writers on the project's edge-case
//! images and on generated trees. Other format versions are left to
//! composefs-rs (see [`supported`]).
//!
//! Layout (V1): a 1 KiB composefs header, the EROFS superblock, the inodes
//! in breadth-first order (the root first; in each directory the entries in
//! name order; a hard-linked file where its first path in depth-first name
//! order is), each 32-byte aligned with its xattrs and inline data, then
//! the shared xattr table, then the data blocks of the inodes that have
//! them, in inode order. Two passes: the first computes every inode's
//! offset (its nid), the second writes.

use std::collections::VecDeque;
use std::io::Write;

use anyhow::{Context, bail};
use composefs::erofs::composefs::OverlayMetacopy;
use composefs::erofs::format::{self, DataLayout, FileType, FormatVersion};
use composefs::fsverity::Sha256HashValue;
use foldhash::{HashMap, HashMapExt as _};
use zerocopy::IntoBytes;

use crate::compact::{CompactTree, Kind, NONE, ROOT, XattrSet};
use parts::{
    BLOCK, COMPACT_HEADER, DIRENT, ESCAPED_WHITEOUT, EXTENDED_HEADER, HAS_WHITEOUTS, MAX_DIR_TAIL,
    SLOT, Sink, XATTR_HEADER, Xattr, chunk_bits, chunk_count,
};

/// The one format this writer makes.
pub(crate) fn supported(version: FormatVersion) -> bool {
    version == FormatVersion::V1
}

/// One entry of a directory inode's listing.
struct Dirent<'a> {
    name: &'a [u8],
    inode: u32,
    file_type: FileType,
}

/// Everything the header of an inode needs, computed from the tree.
struct Plan {
    file_type: FileType,
    layout: DataLayout,
    size: u64,
    nlink: u64,
    compact: bool,
    xattr_size: u64,
    /// Data blocks in the block area (Epoch1: large inline files, symlinks
    /// too long for their inode, chunk indices that do not fit).
    data_blocks: u64,
    /// Bytes of inline data after the inode (and its xattrs).
    tail: u64,
    /// Directory only: (entries in blocks, entries inline), as index ranges.
    dir_blocks: Vec<std::ops::Range<usize>>,
    /// Where its data blocks start (known in the second pass; the first
    /// pass's placeholder changes no size).
    block_start: u64,
}

/// Layout facts of the whole image.
struct Image<'t> {
    tree: &'t CompactTree,
    /// Node of each inode, in inode order.
    inode_node: Vec<u32>,
    /// Inode of each node ([`NONE`] if unreachable).
    node_inode: Vec<u32>,
    /// Link count of each node (leaves).
    nlink: Vec<u32>,
    /// Parent node of each directory node.
    parent: Vec<u32>,
    flags: Vec<u8>,
    min_mtime: (u64, u32),
    /// Shared xattrs in table (disk) order; their index is their position.
    shared: Vec<Xattr>,
    shared_idx: HashMap<Xattr, u32>,
    has_acl: bool,
}

/// Why [`write_image`] failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The tree cannot be an image (composefs-rs refuses it too).
    Invalid(anyhow::Error),
    /// Writing failed.
    Write(anyhow::Error),
}

/// Writes `tree` as a V1 composefs EROFS image to `out`; returns its size.
/// Adds the whiteout stubs to the tree and freezes it.
pub(crate) fn write_image(tree: &mut CompactTree, out: impl Write) -> Result<u64, Failure> {
    tree.add_overlay_whiteouts().map_err(Failure::Invalid)?;
    tree.freeze();
    let mut image = Image::new(tree).map_err(Failure::Invalid)?;
    image.share_xattrs();
    let layout = image.layout().map_err(Failure::Invalid)?;
    let mut sink = Sink { w: out, pos: 0 };
    image.emit(&mut sink, &layout).map_err(Failure::Write)?;
    sink.w.flush().map_err(|e| Failure::Write(e.into()))?;
    Ok(sink.pos)
}

/// Calls `visit(dir, child)` for every entry of the tree, depth first in
/// each directory's (sorted) entry order — the order inodes are placed in.
fn walk_in_name_order(tree: &CompactTree, mut visit: impl FnMut(u32, u32)) {
    let mut stack: Vec<(u32, usize)> = vec![(ROOT, 0)];
    while let Some((dir, i)) = stack.pop() {
        let Some(&e) = tree.dir_entries(dir).get(i) else {
            continue;
        };
        stack.push((dir, i + 1));
        let child = tree.entries[e as usize].child;
        visit(dir, child);
        if tree.nodes[child as usize].kind == Kind::Dir {
            stack.push((child, 0));
        }
    }
}

/// Offsets the second pass needs from the first.
struct Layout {
    nids: Vec<u32>,
    inodes_end: u64,
    shared_offsets: Vec<u64>,
    end: u64,
}

impl<'t> Image<'t> {
    fn new(tree: &'t CompactTree) -> anyhow::Result<Self> {
        let n = tree.nodes.len();
        let mut nlink = vec![0u32; n];
        let mut parent = vec![NONE; n];
        // Link counts, and the directory of each multiply-linked leaf's
        // first path in depth-first name order (where its inode goes).
        let mut canonical: HashMap<u32, u32> = HashMap::new();
        let mut multi: Vec<(u32, u32)> = Vec::new();
        walk_in_name_order(tree, |dir, child| {
            if tree.nodes[child as usize].kind == Kind::Dir {
                parent[child as usize] = dir;
            } else {
                nlink[child as usize] += 1;
                if nlink[child as usize] == 2 {
                    multi.push((child, dir));
                }
            }
        });
        // The first-seen directory of each multi-link leaf: a second walk
        // only when there are hard links (the first does not know yet).
        if !multi.is_empty() {
            walk_in_name_order(tree, |dir, child| {
                if tree.nodes[child as usize].kind != Kind::Dir && nlink[child as usize] > 1 {
                    canonical.entry(child).or_insert(dir);
                }
            });
        }
        for (leaf, _) in &multi {
            let node = &tree.nodes[*leaf as usize];
            if node.kind == Kind::CharDevice && node.rdev() == 0 {
                bail!("invalid composefs filesystem: whiteout inode has nlink > 1");
            }
        }
        drop(multi);

        // At most one inode per node: sized once, no growth by doubling.
        let mut inode_node = Vec::with_capacity(n);
        inode_node.push(ROOT);
        let mut flags = Vec::with_capacity(n);
        flags.push(0);
        let mut image = Image {
            tree,
            inode_node,
            node_inode: vec![NONE; n],
            nlink,
            parent,
            flags,
            min_mtime: (0, 0),
            shared: Vec::new(),
            shared_idx: HashMap::new(),
            has_acl: false,
        };
        image.node_inode[ROOT as usize] = 0;
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let mut has_whiteouts = false;
            for &e in tree.dir_entries(dir) {
                let child = tree.entries[e as usize].child;
                let node = &tree.nodes[child as usize];
                if node.kind == Kind::Dir {
                    image.assign(child, 0);
                    queue.push_back(child);
                    continue;
                }
                let links = image.nlink[child as usize];
                let here = links == 1
                    || (canonical.get(&child) == Some(&dir)
                        && image.node_inode[child as usize] == NONE);
                if !here {
                    continue;
                }
                let escaped = node.kind == Kind::CharDevice
                    && node.rdev() == 0
                    && !image.is_stub(dir, tree.name(e), child);
                has_whiteouts |= escaped;
                image.assign(child, if escaped { ESCAPED_WHITEOUT } else { 0 });
            }
            if has_whiteouts {
                let inode = image.node_inode[dir as usize];
                image.flags[inode as usize] |= HAS_WHITEOUTS;
            }
        }
        image.min_mtime = image
            .inode_node
            .iter()
            .map(|&node| {
                let n = &tree.nodes[node as usize];
                (n.mtime_sec as u64, n.mtime_nsec)
            })
            .min()
            .unwrap_or((0, 0));
        Ok(image)
    }

    fn assign(&mut self, node: u32, flags: u8) {
        self.node_inode[node as usize] = self.inode_node.len() as u32;
        self.inode_node.push(node);
        self.flags.push(flags);
    }

    /// Whether leaf `node`, named `name` in `dir`, is one of the whiteout
    /// stubs the V1 format adds (those are not escaped): composefs-rs
    /// recognises them by name and metadata.
    fn is_stub(&self, dir: u32, name: &[u8], node: u32) -> bool {
        let root = &self.tree.nodes[ROOT as usize];
        let leaf = &self.tree.nodes[node as usize];
        let root_x = &self.tree.xattr_sets[root.xattrs as usize];
        let leaf_x = &self.tree.xattr_sets[leaf.xattrs as usize];
        let selinux = |set: &XattrSet| {
            set.iter()
                .find(|(n, _)| &**n == format::XATTR_SECURITY_SELINUX)
                .map(|(_, v)| v.clone())
        };
        let root_selinux = selinux(root_x);
        let xattrs_match = match &root_selinux {
            None => leaf_x.is_empty(),
            Some(label) => leaf_x.len() == 1 && selinux(leaf_x).as_ref() == Some(label),
        };
        dir == ROOT
            && name.len() == 2
            && name
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && leaf.mode == 0o644
            && leaf.uid == root.uid
            && leaf.gid == root.gid
            && leaf.mtime_sec == root.mtime_sec
            && leaf.mtime_nsec == root.mtime_nsec
            && xattrs_match
    }

    fn file_type(&self, inode: u32) -> FileType {
        if self.flags[inode as usize] & ESCAPED_WHITEOUT != 0 {
            return FileType::RegularFile;
        }
        match self.tree.nodes[self.inode_node[inode as usize] as usize].kind {
            Kind::Dir => FileType::Directory,
            Kind::Inline | Kind::External => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
            Kind::CharDevice => FileType::CharacterDevice,
            Kind::BlockDevice => FileType::BlockDevice,
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
        }
    }

    /// The xattrs of `inode` in on-disk order (before sharing).
    fn xattrs(&self, inode: u32, out: &mut Vec<Xattr>) {
        out.clear();
        let node = &self.tree.nodes[self.inode_node[inode as usize] as usize];
        if node.kind == Kind::External {
            let (id, _) = &self.tree.objects[node.a as usize];
            out.push(Xattr::new(
                format::XATTR_OVERLAY_METACOPY,
                OverlayMetacopy::new(id).as_bytes(),
            ));
            out.push(Xattr::new(
                format::XATTR_OVERLAY_REDIRECT,
                &redirect_path(id),
            ));
        }
        for (name, value) in self.tree.xattr_sets[node.xattrs as usize].iter() {
            match name.strip_prefix(format::XATTR_OVERLAY_PREFIX) {
                Some(rest) => out.push(Xattr {
                    name: [format::XATTR_OVERLAY_ESCAPED_PREFIX, rest].concat(),
                    value: value.to_vec(),
                }),
                None => out.push(Xattr::new(name, value)),
            }
        }
        let flags = self.flags[inode as usize];
        if flags & ESCAPED_WHITEOUT != 0 {
            out.push(Xattr::new(format::XATTR_OVERLAY_WHITEOUT, b""));
            out.push(Xattr::new(format::XATTR_USERXATTR_WHITEOUT, b""));
        }
        if flags & HAS_WHITEOUTS != 0 {
            out.push(Xattr::new(format::XATTR_OVERLAY_WHITEOUTS, b""));
            out.push(Xattr::new(format::XATTR_USERXATTR_WHITEOUTS, b""));
            out.push(Xattr::new(format::XATTR_OVERLAY_OPAQUE, b"x"));
            out.push(Xattr::new(format::XATTR_USERXATTR_OPAQUE, b"x"));
        }
        if inode == 0 {
            out.push(Xattr::new(format::XATTR_OVERLAY_OPAQUE_ROOT, b"y"));
        }
        out.sort_by(Xattr::order);
    }

    /// Finds the xattrs used more than once (by different inodes, or twice
    /// by one) and orders the shared table as C mkcomposefs does:
    /// descending, an xattr's index being its position.
    fn share_xattrs(&mut self) {
        // Per-file xattrs (metacopy, redirect) repeat only where two files
        // have the same content: counted by sorting the files by object id
        // instead of hashing every file's xattrs.
        let mut external: Vec<u32> = (0..self.inode_node.len() as u32)
            .filter(|&i| {
                self.tree.nodes[self.inode_node[i as usize] as usize].kind == Kind::External
            })
            .collect();
        let object = |i: &u32| {
            let node = &self.tree.nodes[self.inode_node[*i as usize] as usize];
            &self.tree.objects[node.a as usize].0
        };
        external.sort_unstable_by(|a, b| object(a).as_bytes().cmp(object(b).as_bytes()));
        let mut shared: Vec<Xattr> = Vec::new();
        let mut buf = Vec::new();
        for run in external.chunk_by(|a, b| object(a) == object(b)) {
            if run.len() > 1 {
                self.xattrs(run[0], &mut buf);
                shared.extend(buf.drain(..).filter(|x| {
                    x.name == format::XATTR_OVERLAY_METACOPY
                        || x.name == format::XATTR_OVERLAY_REDIRECT
                }));
            }
        }
        drop(external);
        let mut counts: HashMap<Xattr, u32> = HashMap::new();
        for inode in 0..self.inode_node.len() as u32 {
            self.xattrs(inode, &mut buf);
            for x in buf.drain(..) {
                let (prefix, _) = x.prefix();
                if prefix == format::XATTR_INDEX_POSIX_ACL_ACCESS
                    || prefix == format::XATTR_INDEX_POSIX_ACL_DEFAULT
                {
                    self.has_acl = true;
                }
                if x.name == format::XATTR_OVERLAY_METACOPY
                    || x.name == format::XATTR_OVERLAY_REDIRECT
                {
                    continue;
                }
                *counts.entry(x).or_insert(0) += 1;
            }
        }
        shared.extend(counts.into_iter().filter(|(_, n)| *n > 1).map(|(x, _)| x));
        shared.sort_by(|a, b| b.order(a));
        self.shared_idx = shared
            .iter()
            .enumerate()
            .map(|(i, x)| (x.clone(), i as u32))
            .collect();
        self.shared = shared;
    }

    /// A directory inode's listing: `.`, `..` and its entries, by name.
    fn listing(&self, inode: u32) -> Vec<Dirent<'t>> {
        let tree = self.tree;
        let node = self.inode_node[inode as usize];
        let parent = match self.parent[node as usize] {
            NONE => inode,
            p => self.node_inode[p as usize],
        };
        let mut list = vec![
            Dirent {
                name: b".",
                inode,
                file_type: FileType::Directory,
            },
            Dirent {
                name: b"..",
                inode: parent,
                file_type: FileType::Directory,
            },
        ];
        for &e in tree.dir_entries(node) {
            let child = self.node_inode[tree.entries[e as usize].child as usize];
            list.push(Dirent {
                name: tree.name(e),
                inode: child,
                file_type: self.file_type(child),
            });
        }
        list.sort_unstable_by(|a, b| a.name.cmp(b.name));
        list
    }

    /// Splits a listing into full blocks and an inline tail.
    fn split_listing(
        list: &[Dirent],
    ) -> (Vec<std::ops::Range<usize>>, std::ops::Range<usize>, u64) {
        let mut blocks = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (i, d) in list.iter().enumerate() {
            let size = DIRENT + d.name.len() as u64;
            if bytes + size <= BLOCK {
                bytes += size;
            } else {
                blocks.push(start..i);
                start = i;
                bytes = size;
            }
        }
        if bytes > MAX_DIR_TAIL {
            blocks.push(start..list.len());
            start = list.len();
            bytes = 0;
        }
        (blocks, start..list.len(), bytes)
    }

    fn xattr_size(&self, xattrs: &[Xattr]) -> u64 {
        if xattrs.is_empty() {
            return 0;
        }
        XATTR_HEADER
            + xattrs
                .iter()
                .map(|x| match self.shared_idx.get(x) {
                    Some(_) => 4,
                    None => x.entry_size(),
                })
                .sum::<u64>()
    }

    fn fits_compact(&self, node: u32, size: u64, nlink: u64) -> bool {
        let n = &self.tree.nodes[node as usize];
        (n.mtime_sec as u64, n.mtime_nsec) == self.min_mtime
            && nlink <= u64::from(u16::MAX)
            && n.uid <= u32::from(u16::MAX)
            && n.gid <= u32::from(u16::MAX)
            && size <= u64::from(u32::MAX)
    }

    fn plan(&self, inode: u32, xattrs: &[Xattr], list: &[Dirent]) -> Plan {
        let node_id = self.inode_node[inode as usize];
        let node = &self.tree.nodes[node_id as usize];
        let xattr_size = self.xattr_size(xattrs);
        let file_type = self.file_type(inode);
        let mut plan = Plan {
            file_type,
            layout: DataLayout::FlatPlain,
            size: 0,
            nlink: u64::from(self.nlink[node_id as usize]),
            compact: false,
            xattr_size,
            data_blocks: 0,
            tail: 0,
            dir_blocks: Vec::new(),
            block_start: 0,
        };
        match node.kind {
            Kind::Dir => {
                let (blocks, inline, tail) = Self::split_listing(list);
                plan.nlink = list
                    .iter()
                    .filter(|d| matches!(d.file_type, FileType::Directory))
                    .count() as u64;
                plan.size = BLOCK * blocks.len() as u64 + tail;
                plan.layout = if inline.is_empty() {
                    DataLayout::FlatPlain
                } else {
                    DataLayout::FlatInline
                };
                plan.data_blocks = blocks.len() as u64;
                plan.tail = tail;
                plan.dir_blocks = blocks;
            }
            Kind::Inline => {
                let len = u64::from(node.b);
                plan.size = len;
                if len > 0 {
                    plan.data_blocks = len / BLOCK;
                    plan.tail = len % BLOCK;
                    if plan.tail > BLOCK / 2 {
                        plan.data_blocks += 1;
                        plan.tail = 0;
                    }
                    plan.layout = if plan.data_blocks > 0 && plan.tail == 0 {
                        DataLayout::FlatPlain
                    } else {
                        DataLayout::FlatInline
                    };
                }
            }
            Kind::External => {
                let size = self.tree.objects[node.a as usize].1;
                plan.size = size;
                plan.layout = DataLayout::ChunkBased;
                if size > 0 {
                    plan.tail = chunk_count(size) * 4;
                    if plan.tail + xattr_size % SLOT > BLOCK {
                        plan.data_blocks = 1;
                        plan.tail = 0;
                    }
                }
            }
            Kind::Symlink => {
                let len = u64::from(node.b);
                plan.size = len;
                plan.tail = len;
                plan.layout = DataLayout::FlatInline;
                let header = if self.fits_compact(node_id, len, plan.nlink) {
                    COMPACT_HEADER
                } else {
                    EXTENDED_HEADER
                };
                if len > 0 && header + xattr_size + len >= BLOCK {
                    plan.data_blocks = 1;
                    plan.tail = 0;
                    plan.layout = DataLayout::FlatPlain;
                }
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo | Kind::Socket => {}
        }
        plan.compact = self.fits_compact(node_id, plan.size, plan.nlink);
        plan
    }

    /// The `i_u` field: a block address, a device number or a chunk format.
    fn i_u(&self, inode: u32, plan: &Plan) -> anyhow::Result<u32> {
        let node = &self.tree.nodes[self.inode_node[inode as usize] as usize];
        let blkaddr =
            u32::try_from(plan.block_start / BLOCK).context("the image has too many blocks")?;
        Ok(match node.kind {
            Kind::Dir => match plan.layout {
                DataLayout::FlatInline if plan.dir_blocks.is_empty() => 0,
                _ => blkaddr,
            },
            Kind::Inline | Kind::Symlink if plan.data_blocks > 0 => blkaddr,
            Kind::External => {
                let chunk_format = chunk_bits(plan.size) - u32::from(format::BLOCK_BITS);
                if plan.data_blocks > 0 {
                    (blkaddr & 0xFFFF_0000) | chunk_format
                } else {
                    chunk_format
                }
            }
            Kind::CharDevice | Kind::BlockDevice => u32::try_from(node.rdev())
                .with_context(|| format!("device number {:#x} does not fit EROFS", node.rdev()))?,
            _ => 0,
        })
    }
}

mod emit;
mod parts;
#[cfg(test)]
mod tests;

/// Length of an object's redirect: `/ab/` and the other 62 hex digits.
const REDIRECT_LEN: usize = 66;

/// `/` and the object's path (`ab/cdef…`), as composefs-rs writes the
/// redirect xattr. Without `hex` or `format!`: every stored file's xattrs
/// are computed three times per image, and the string formatting was a
/// tenth of an update pull's CPU (docs/performance.md).
fn redirect_path(id: &Sha256HashValue) -> [u8; REDIRECT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; REDIRECT_LEN];
    out[0] = b'/';
    out[3] = b'/';
    let mut at = 1;
    for &byte in id.as_bytes() {
        if at == 3 {
            at = 4;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out
}
