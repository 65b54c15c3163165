//! Store objects whose fs-verity digest osctl computes itself: the layer
//! splitter's file contents ([`crate::split`]) and the EROFS image
//! ([`crate::image`]).
//!
//! composefs-rs's own path (`finalize_object_tmpfile`) enables verity on
//! the tmpfile and asks the kernel for the digest; on a store that cannot
//! have verity (insecure) it reads the whole file back and hashes it in
//! userspace. osctl hashes the bytes while it writes them, so on an
//! insecure store it only needs the link, made here; a store with verity
//! still goes through composefs-rs, and the kernel's digest must match.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::BorrowedFd;

use composefs::fsverity::{FsVerityHashValue, FsVerityHasher, Sha256HashValue};
use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;

/// The fs-verity block size composefs uses (`LG_BLKSZ` 12).
const VERITY_BLOCK: usize = 4096;

/// Mode of an object fan-out directory (`objects/ab/`).
const FANOUT_DIR_MODE: u32 = 0o755;

/// fs-verity digest of a byte stream, fed in runs of any length. Whole
/// blocks are hashed straight from the caller's buffer; only a block that
/// straddles two runs is assembled in `carry` (composefs's `Write` impl
/// copies every block into a fresh buffer instead).
pub(crate) struct VerityStream {
    hasher: FsVerityHasher<Sha256HashValue>,
    carry: Vec<u8>,
}

impl VerityStream {
    pub(crate) fn new() -> Self {
        VerityStream {
            hasher: FsVerityHasher::new(),
            carry: Vec::with_capacity(VERITY_BLOCK),
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let n = (VERITY_BLOCK - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.carry.len() < VERITY_BLOCK {
                return;
            }
            self.hasher.add_block(&self.carry);
            self.carry.clear();
        }
        let mut blocks = data.chunks_exact(VERITY_BLOCK);
        for block in &mut blocks {
            self.hasher.add_block(block);
        }
        self.carry.extend_from_slice(blocks.remainder());
    }

    pub(crate) fn finish(mut self) -> Sha256HashValue {
        if !self.carry.is_empty() {
            self.hasher.add_block(&self.carry);
        }
        self.hasher.digest()
    }
}

/// Gives the `O_TMPFILE` `file` in the store's `objects` directory the
/// object name of `id`, its digest. An object of that name already there
/// is the same content (the name is its digest), so EEXIST is success.
///
/// The fan-out directory is not probed: a link that fails with ENOENT
/// creates it and tries again, so a warm store pays nothing. `by_fd_refused`
/// remembers, across calls, that `linkat(fd, "", AT_EMPTY_PATH)` was refused
/// (it needs CAP_DAC_READ_SEARCH on older kernels); then objects are linked
/// through `/proc/self/fd`. On failure, returns the step that failed.
pub(crate) fn link_tmpfile(
    objects: BorrowedFd<'_>,
    file: &File,
    id: &Sha256HashValue,
    by_fd_refused: &Cell<bool>,
) -> Result<(), (&'static str, Errno)> {
    let path = id.to_object_pathname();
    let mut created_dir = false;
    loop {
        let by_fd = !by_fd_refused.get();
        let linked = if by_fd {
            rustix::fs::linkat(file, "", objects, &path, AtFlags::EMPTY_PATH)
        } else {
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            rustix::fs::linkat(
                rustix::fs::CWD,
                &proc_path,
                objects,
                &path,
                AtFlags::SYMLINK_FOLLOW,
            )
        };
        match linked {
            Ok(()) | Err(Errno::EXIST) => return Ok(()),
            // ENOENT: the fan-out directory is missing, or (with
            // AT_EMPTY_PATH, on a kernel that wants CAP_DAC_READ_SEARCH
            // for it) the link by fd was refused. Create the directory
            // once; if it was there already, or the link by fd still
            // fails after, it was the refusal.
            Err(Errno::NOENT) if !created_dir => {
                created_dir = true;
                match rustix::fs::mkdirat(
                    objects,
                    id.to_object_dir().as_str(),
                    Mode::from_raw_mode(FANOUT_DIR_MODE),
                ) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if by_fd => by_fd_refused.set(true),
                    Err(e) => return Err(("creating an object directory", e)),
                }
            }
            Err(Errno::NOENT | Errno::PERM) if by_fd => by_fd_refused.set(true),
            Err(e) => return Err(("linking an object", e)),
        }
    }
}
