//! The writer's two passes: the first lays the image out (every inode's
//! nid, where the inode table and the shared xattrs end), the second writes
//! the same bytes with those offsets filled in.

use anyhow::{Context, bail};
use composefs::erofs::format::{
    self, CompactInodeHeader, ComposefsHeader, DataLayout, DirectoryEntryHeader,
    ExtendedInodeHeader, FileType, FormatVersion, InodeLayout, InodeXAttrHeader, Superblock,
};
use xxhash_rust::xxh32::xxh32;
use zerocopy::IntoBytes;

use super::parts::*;
use super::{Dirent, Image, Layout, Plan};
use crate::compact::Kind;

impl Image<'_> {
    /// Writes one inode; returns its nid.
    fn emit_inode(
        &self,
        out: &mut impl Out,
        inode: u32,
        plan: &Plan,
        xattrs: &[Xattr],
        list: &[Dirent],
        layout: Option<&Layout>,
    ) -> anyhow::Result<u32> {
        let header = if plan.compact {
            COMPACT_HEADER
        } else {
            EXTENDED_HEADER
        };
        out.pad(SLOT)?;
        let pos = out.pos();
        let symlink = matches!(plan.file_type, FileType::Symlink);
        match plan.layout {
            DataLayout::FlatPlain if symlink && plan.data_blocks > 0 => {
                // Padded as if the target were still inline (C mkcomposefs).
                let total = header + plan.xattr_size + plan.size;
                if pos / BLOCK != (pos + total - 1) / BLOCK {
                    out.zeros(to_boundary(pos))?;
                }
            }
            DataLayout::ChunkBased if plan.tail == 0 && plan.data_blocks > 0 => {
                out.zeros(to_boundary(pos))?;
            }
            DataLayout::ChunkBased if plan.tail > 0 => {
                let r = to_boundary(pos + header + plan.xattr_size);
                if r > 0 && r < plan.tail {
                    out.zeros(round_up(r, SLOT))?;
                }
            }
            DataLayout::FlatInline if symlink => {
                let total = header + plan.xattr_size + plan.size % BLOCK;
                if pos % BLOCK + total > BLOCK {
                    out.zeros(to_boundary(pos))?;
                }
            }
            DataLayout::FlatInline => {
                let r = to_boundary(pos + header + plan.xattr_size);
                if r > 0 && r < plan.size % BLOCK {
                    out.zeros(round_up(r, SLOT))?;
                }
            }
            _ => {}
        }
        let nid = u32::try_from(out.pos() / SLOT).context("the image is too large")?;
        let node = &self.tree.nodes[self.inode_node[inode as usize] as usize];
        let xattr_icount: u16 = match plan.xattr_size {
            0 => 0,
            n => (1 + (n - XATTR_HEADER) / 4) as u16,
        };
        let mode = plan.file_type | node.mode;
        let u = self.i_u(inode, plan)?;
        if plan.compact {
            out.put(
                CompactInodeHeader {
                    format: InodeLayout::Compact | plan.layout,
                    xattr_icount: xattr_icount.into(),
                    mode,
                    nlink: (plan.nlink as u16).into(),
                    size: (plan.size as u32).into(),
                    reserved: 0.into(),
                    u: u.into(),
                    ino: inode.into(),
                    uid: (node.uid as u16).into(),
                    gid: (node.gid as u16).into(),
                    reserved2: [0; 4],
                }
                .as_bytes(),
            )?;
        } else {
            out.put(
                ExtendedInodeHeader {
                    format: InodeLayout::Extended | plan.layout,
                    xattr_icount: xattr_icount.into(),
                    mode,
                    size: plan.size.into(),
                    u: u.into(),
                    ino: inode.into(),
                    uid: node.uid.into(),
                    gid: node.gid.into(),
                    mtime: (node.mtime_sec as u64).into(),
                    mtime_nsec: node.mtime_nsec.into(),
                    nlink: (plan.nlink as u32).into(),
                    ..Default::default()
                }
                .as_bytes(),
            )?;
        }
        if !xattrs.is_empty() {
            self.emit_xattrs(out, xattrs, layout)?;
        }
        match node.kind {
            Kind::Dir => {
                let inline = match plan.dir_blocks.last() {
                    Some(last) => last.end..list.len(),
                    None => 0..list.len(),
                };
                self.emit_dirents(out, &list[inline], layout)?;
            }
            Kind::Inline => {
                let data = self.tree.bytes(node.a, node.b);
                out.put(&data[data.len() - plan.tail as usize..])?;
            }
            Kind::External => {
                for _ in 0..plan.tail / 4 {
                    out.put(&NULL_CHUNK)?;
                }
            }
            Kind::Symlink if plan.data_blocks == 0 => out.put(self.tree.bytes(node.a, node.b))?,
            _ => {}
        }
        out.pad(SLOT)?;
        Ok(nid)
    }

    fn emit_xattrs(
        &self,
        out: &mut impl Out,
        xattrs: &[Xattr],
        layout: Option<&Layout>,
    ) -> anyhow::Result<()> {
        let mut filter = 0u32;
        for x in xattrs {
            let (idx, start) = x.prefix();
            filter |=
                1 << (xxh32(&x.name[start..], format::XATTR_FILTER_SEED + u32::from(idx)) % 32);
        }
        let shared: Vec<u32> = xattrs
            .iter()
            .filter_map(|x| self.shared_idx.get(x).copied())
            .collect();
        out.put(
            InodeXAttrHeader {
                name_filter: (!filter).into(),
                shared_count: shared.len() as u8,
                ..Default::default()
            }
            .as_bytes(),
        )?;
        for idx in shared {
            let r = match layout {
                None => 0u32,
                Some(l) => {
                    let offset = l.shared_offsets[idx as usize];
                    ((l.inodes_end % BLOCK + (offset - l.inodes_end)) / XATTR_ALIGN) as u32
                }
            };
            out.put(&r.to_le_bytes())?;
        }
        for x in xattrs {
            if !self.shared_idx.contains_key(x) {
                x.write(out)?;
            }
        }
        Ok(())
    }

    fn emit_dirents(
        &self,
        out: &mut impl Out,
        list: &[Dirent],
        layout: Option<&Layout>,
    ) -> anyhow::Result<()> {
        let mut name_offset = DIRENT * list.len() as u64;
        for d in list {
            let nid = layout.map_or(0, |l| u64::from(l.nids[d.inode as usize]));
            out.put(
                DirectoryEntryHeader {
                    inode_offset: nid.into(),
                    name_offset: (name_offset as u16).into(),
                    file_type: d.file_type.into(),
                    ..Default::default()
                }
                .as_bytes(),
            )?;
            name_offset += d.name.len() as u64;
        }
        for d in list {
            out.put(d.name)?;
        }
        Ok(())
    }

    /// The first pass: every offset the second needs.
    pub(super) fn layout(&self) -> anyhow::Result<Layout> {
        let mut count = Count(0);
        let mut nids = Vec::with_capacity(self.inode_node.len());
        let inodes_end = self.emit_inodes(&mut count, None, &mut nids)?;
        let mut shared_offsets = Vec::with_capacity(self.shared.len());
        for x in &self.shared {
            shared_offsets.push(count.pos());
            x.write(&mut count)?;
        }
        let mut layout = Layout {
            nids,
            inodes_end,
            shared_offsets,
            end: 0,
        };
        count.pad(BLOCK)?;
        self.emit_blocks(&mut count, &layout)?;
        layout.end = count.pos();
        Ok(layout)
    }

    /// Header, superblock and inodes; returns the end of the inode table.
    fn emit_inodes(
        &self,
        out: &mut impl Out,
        layout: Option<&Layout>,
        nids: &mut Vec<u32>,
    ) -> anyhow::Result<u64> {
        let flags = if self.has_acl {
            format::COMPOSEFS_FLAGS_HAS_ACL.get()
        } else {
            0
        };
        out.put(
            ComposefsHeader {
                magic: format::COMPOSEFS_MAGIC,
                version: format::VERSION,
                flags: flags.into(),
                composefs_version: FormatVersion::V1.composefs_version(),
                ..Default::default()
            }
            .as_bytes(),
        )?;
        out.pad(HEADER_AREA)?;
        let (root_nid, blocks, xattr_blkaddr) = match layout {
            None => (0, 0, 0),
            Some(l) => (l.nids[0], l.end / BLOCK, l.inodes_end / BLOCK),
        };
        out.put(
            Superblock {
                magic: format::MAGIC_V1,
                blkszbits: format::BLOCK_BITS,
                feature_compat: (format::FEATURE_COMPAT_MTIME
                    | format::FEATURE_COMPAT_XATTR_FILTER)
                    .into(),
                root_nid: (root_nid as u16).into(),
                inos: (self.inode_node.len() as u64).into(),
                blocks: (blocks as u32).into(),
                build_time: self.min_mtime.0.into(),
                build_time_nsec: self.min_mtime.1.into(),
                xattr_blkaddr: (xattr_blkaddr as u32).into(),
                ..Default::default()
            }
            .as_bytes(),
        )?;
        // The block area starts after the inodes and the shared xattrs,
        // known only after the first pass; the first pass's block
        // addresses are placeholders that change no size.
        let mut block_start = match layout {
            None => 0,
            Some(l) => {
                let table_end = l.shared_offsets.last().map_or(l.inodes_end, |&o| {
                    o + self.shared.last().map_or(0, Xattr::entry_size)
                });
                round_up(table_end, BLOCK)
            }
        };
        let mut xattrs = Vec::new();
        for inode in 0..self.inode_node.len() as u32 {
            self.xattrs(inode, &mut xattrs);
            let list = if matches!(self.file_type(inode), FileType::Directory) {
                self.listing(inode)
            } else {
                Vec::new()
            };
            let mut plan = self.plan(inode, &xattrs, &list);
            plan.block_start = block_start;
            let nid = self.emit_inode(out, inode, &plan, &xattrs, &list, layout)?;
            if layout.is_none() {
                nids.push(nid);
            }
            block_start += plan.data_blocks * BLOCK;
        }
        out.pad(SLOT)?;
        Ok(out.pos())
    }

    fn emit_blocks(&self, out: &mut impl Out, layout: &Layout) -> anyhow::Result<()> {
        let layout = Some(layout);
        let mut xattrs = Vec::new();
        for inode in 0..self.inode_node.len() as u32 {
            let node = &self.tree.nodes[self.inode_node[inode as usize] as usize];
            match node.kind {
                Kind::Dir => {
                    let list = self.listing(inode);
                    let (blocks, _, _) = Self::split_listing(&list);
                    for block in blocks {
                        self.emit_dirents(out, &list[block], layout)?;
                        out.pad(BLOCK)?;
                    }
                }
                Kind::Inline | Kind::Symlink | Kind::External => {
                    // Whether a leaf has blocks depends on its xattrs' size.
                    self.xattrs(inode, &mut xattrs);
                    let plan = self.plan(inode, &xattrs, &[]);
                    if plan.data_blocks == 0 {
                        continue;
                    }
                    match node.kind {
                        Kind::Inline => {
                            let data = self.tree.bytes(node.a, node.b);
                            for chunk in data.chunks(BLOCK as usize).take(plan.data_blocks as usize)
                            {
                                out.put(chunk)?;
                                out.pad(BLOCK)?;
                            }
                        }
                        Kind::Symlink => {
                            let target = self.tree.bytes(node.a, node.b);
                            out.put(&target[..target.len().min(BLOCK as usize)])?;
                            out.pad(BLOCK)?;
                        }
                        _ => {
                            for _ in 0..NONINLINE_CHUNKS {
                                out.put(&NULL_CHUNK)?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn emit(&self, out: &mut impl Out, layout: &Layout) -> anyhow::Result<()> {
        // The nids are the first pass's; this pass records none.
        let mut no_nids = Vec::new();
        let inodes_end = self.emit_inodes(out, Some(layout), &mut no_nids)?;
        if inodes_end != layout.inodes_end {
            bail!(
                "the inode table ended at {inodes_end}, the first pass at {}",
                layout.inodes_end
            );
        }
        for x in &self.shared {
            x.write(out)?;
        }
        out.pad(BLOCK)?;
        self.emit_blocks(out, layout)?;
        if out.pos() != layout.end {
            bail!(
                "the image ended at {}, the first pass at {}",
                out.pos(),
                layout.end
            );
        }
        Ok(())
    }
}
