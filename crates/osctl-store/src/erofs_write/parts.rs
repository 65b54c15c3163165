//! The on-disk pieces of the V1 image: sizes and alignments, xattr
//! entries, chunk geometry, and the two outputs of the writer's passes
//! (bytes counted, bytes written).

use std::io::Write;

use composefs::erofs::format::{self, BLOCK_SIZE, XAttrHeader};
use zerocopy::IntoBytes;

pub(super) const BLOCK: u64 = BLOCK_SIZE as u64;
/// Inodes start on 32-byte slots; a nid is an offset / 32.
pub(super) const SLOT: u64 = 32;
/// Xattr entries are 4-byte aligned.
pub(super) const XATTR_ALIGN: u64 = 4;
/// The composefs header takes the first KiB; the superblock follows.
pub(super) const HEADER_AREA: u64 = 1024;
pub(super) const COMPACT_HEADER: u64 = 32;
pub(super) const EXTENDED_HEADER: u64 = 64;
pub(super) const XATTR_HEADER: u64 = 12;
pub(super) const DIRENT: u64 = 12;
/// A directory tail longer than this goes to a block of its own.
pub(super) const MAX_DIR_TAIL: u64 = 2048;
/// The chunk index of a file whose data is elsewhere (an overlay redirect).
pub(super) const NULL_CHUNK: [u8; 4] = [0xff; 4];
/// When a file's chunk indices do not fit inline, one block of them.
pub(super) const NONINLINE_CHUNKS: u64 = 1024;
/// xattr prefix index skipped in V1 (C mkcomposefs 1.0.8 has no `lustre.`).
pub(super) const LUSTRE_PREFIX: usize = 5;

/// Per-inode flags.
pub(super) const ESCAPED_WHITEOUT: u8 = 1;
pub(super) const HAS_WHITEOUTS: u8 = 2;

/// One xattr of an inode, its full name unsplit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Xattr {
    pub(super) name: Vec<u8>,
    pub(super) value: Vec<u8>,
}

impl Xattr {
    pub(super) fn new(name: &[u8], value: &[u8]) -> Self {
        Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }

    /// C mkcomposefs's order: full name, then value length, then value.
    pub(super) fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.name
            .cmp(&other.name)
            .then(self.value.len().cmp(&other.value.len()))
            .then_with(|| self.value.cmp(&other.value))
    }

    /// (EROFS name index, suffix start).
    pub(super) fn prefix(&self) -> (u8, usize) {
        for (idx, prefix) in format::XATTR_PREFIXES.iter().enumerate().rev() {
            if idx != LUSTRE_PREFIX && self.name.starts_with(prefix) {
                return (idx as u8, prefix.len());
            }
        }
        (0, 0)
    }

    pub(super) fn entry_size(&self) -> u64 {
        let (_, start) = self.prefix();
        round_up(
            4 + (self.name.len() - start + self.value.len()) as u64,
            XATTR_ALIGN,
        )
    }

    pub(super) fn write(&self, out: &mut impl Out) -> std::io::Result<()> {
        let (idx, start) = self.prefix();
        let suffix = &self.name[start..];
        out.put(
            XAttrHeader {
                name_len: suffix.len() as u8,
                name_index: idx,
                value_size: (self.value.len() as u16).into(),
            }
            .as_bytes(),
        )?;
        out.put(suffix)?;
        out.put(&self.value)?;
        out.pad(XATTR_ALIGN)
    }
}

pub(super) fn round_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

/// Bytes from `pos` to the next block boundary; 0 when on one.
pub(super) fn to_boundary(pos: u64) -> u64 {
    (BLOCK - pos % BLOCK) % BLOCK
}

/// Where bytes go: counted (first pass) or written (second).
pub(super) trait Out {
    fn pos(&self) -> u64;
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn zeros(&mut self, n: u64) -> std::io::Result<()>;
    fn pad(&mut self, align: u64) -> std::io::Result<()> {
        let n = round_up(self.pos(), align) - self.pos();
        self.zeros(n)
    }
}

pub(super) struct Count(pub(super) u64);

impl Out for Count {
    fn pos(&self) -> u64 {
        self.0
    }
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        self.0 += n;
        Ok(())
    }
}

pub(super) struct Sink<W> {
    pub(super) w: W,
    pub(super) pos: u64,
}

impl<W: Write> Out for Sink<W> {
    fn pos(&self) -> u64 {
        self.pos
    }
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pos += bytes.len() as u64;
        self.w.write_all(bytes)
    }
    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 1024] = [0; 1024];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }
}

/// log2 of the chunk size of an external file: the smallest power of two
/// that holds it, at least a block, at most 2^31 blocks.
pub(super) fn chunk_bits(size: u64) -> u32 {
    let block_bits = u32::from(format::BLOCK_BITS);
    let bits = if size > 1 {
        64 - (size - 1).leading_zeros()
    } else {
        1
    };
    bits.clamp(block_bits, block_bits + 31)
}

pub(super) fn chunk_count(size: u64) -> u64 {
    size.div_ceil(1u64 << chunk_bits(size))
}
