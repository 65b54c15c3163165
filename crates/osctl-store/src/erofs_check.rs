//! Reading a stored EROFS image the way the kernel will, without mounting it.
//!
//! composefs-rs's own `fsck` checks that an image parses and that the
//! objects it names exist, but not the limits the kernel applies when it
//! reads directories: an image with a 256-byte name passes it, and the
//! mounted directory then fails with "Structure needs cleaning". This walk
//! applies those limits ([`crate::limits`]) to every directory entry and
//! symlink of the image bytes themselves.
//!
//! Why not mount it: `fsck` must work where mounting does not (a store on
//! tmpfs, a chroot without mount privileges, a kernel without EROFS), must
//! not change the machine, and must name the offending path rather than a
//! dmesg line; and a mount would only reveal a bad directory if something
//! happened to list it.
//!
//! The walk is iterative, so a hostile image cannot exhaust the stack.

use std::collections::HashSet;

use composefs::erofs::format::{S_IFDIR, S_IFLNK, S_IFMT};
use composefs::erofs::reader::{Image, InodeHeader, InodeOps, InodeType};

use crate::limits::{self, MAX_DEPTH, MAX_NAME_BYTES, MAX_SYMLINK_TARGET_BYTES};

/// Size of one EROFS directory entry header: nid (8), nameoff (2),
/// file type (1), reserved (1).
const DIRENT_SIZE: usize = 12;

/// Checks every directory entry and symlink of the EROFS `image` against
/// what the kernel reads. The error names the offending path.
pub(crate) fn check_kernel_readable(image: &[u8]) -> Result<(), String> {
    let img = Image::open(image).map_err(|e| format!("not a readable EROFS image: {e}"))?;
    let root = u64::from(img.sb.root_nid.get());
    let mut seen = HashSet::from([root]);
    let mut todo: Vec<(u64, usize, Vec<u8>)> = vec![(root, 0, Vec::new())];
    while let Some((nid, depth, path)) = todo.pop() {
        // `path` is "" for the root, "/a/b" below it.
        let shown = |name: &[u8]| {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(name);
            limits::shown(&p)
        };
        let here = if path.is_empty() {
            "/".to_string()
        } else {
            limits::shown(&path)
        };
        let dir = img
            .inode(nid)
            .map_err(|e| format!("directory '{here}': {e}"))?;
        let entries = dir_entries(&img, &dir).map_err(|e| format!("directory '{here}': {e}"))?;
        for (name, child) in entries {
            if name == b"." || name == b".." {
                continue;
            }
            if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains(&b'/') {
                return Err(format!(
                    "'{}': a name of {} bytes, which the kernel refuses (names are 1 to {MAX_NAME_BYTES} bytes without '/')",
                    shown(&name),
                    name.len()
                ));
            }
            let inode = img
                .inode(child)
                .map_err(|e| format!("'{}': {e}", shown(&name)))?;
            match inode.mode().0.get() & S_IFMT {
                S_IFDIR => {
                    if depth + 1 > MAX_DEPTH {
                        return Err(format!(
                            "'{}': nested deeper than {MAX_DEPTH} directories",
                            shown(&name)
                        ));
                    }
                    if seen.insert(child) {
                        let mut sub = path.clone();
                        sub.push(b'/');
                        sub.extend_from_slice(&name);
                        todo.push((child, depth + 1, sub));
                    }
                }
                S_IFLNK if inode.size() > MAX_SYMLINK_TARGET_BYTES as u64 => {
                    return Err(format!(
                        "'{}': a symlink target of {} bytes, which the kernel cuts to {MAX_SYMLINK_TARGET_BYTES}",
                        shown(&name),
                        inode.size()
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The (name, nid) entries of a directory inode, as the kernel splits them:
/// in each block (and in the inline tail) the first entry's name offset
/// gives the number of entries; each name runs to the next name's offset,
/// the last one to its NUL or the end of the block.
fn dir_entries(img: &Image, dir: &InodeType) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let mut out = Vec::new();
    for block in img.inode_blocks(dir).map_err(|e| e.to_string())? {
        let data = img.block(block).map_err(|e| e.to_string())?;
        parse_dirents(data, &mut out)?;
    }
    if let Some(inline) = dir.inline() {
        parse_dirents(inline, &mut out)?;
    }
    Ok(out)
}

fn parse_dirents(block: &[u8], out: &mut Vec<(Vec<u8>, u64)>) -> Result<(), String> {
    let header = |i: usize| -> Result<(u64, usize), String> {
        let h = block
            .get(i * DIRENT_SIZE..(i + 1) * DIRENT_SIZE)
            .ok_or("directory entry out of bounds")?;
        let nid = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let nameoff = u16::from_le_bytes(h[8..10].try_into().expect("2 bytes"));
        Ok((nid, usize::from(nameoff)))
    };
    let (_, first) = header(0)?;
    if first == 0 || first % DIRENT_SIZE != 0 || first > block.len() {
        return Err(format!("bad first name offset {first}"));
    }
    let count = first / DIRENT_SIZE;
    for i in 0..count {
        let (nid, start) = header(i)?;
        let end = if i + 1 < count {
            header(i + 1)?.1
        } else {
            let tail = block.get(start..).ok_or("name out of bounds")?;
            start + tail.iter().position(|b| *b == 0).unwrap_or(tail.len())
        };
        let name = block
            .get(start..end)
            .ok_or_else(|| format!("name offsets {start}..{end} out of bounds"))?;
        out.push((name.to_vec(), nid));
    }
    Ok(())
}
