//! Splitting one uncompressed layer tar into the store: osctl's own
//! replacement for `composefs_oci::tar::split_async`, writing the same
//! splitstream byte for byte (the equivalence test in `split_tests.rs`
//! imports the test images both ways and compares).
//!
//! # The model
//!
//! One blocking thread per layer runs this loop over the tar bytes, which
//! arrive as chunks from the async side (where the blob is read, inflated
//! and sha256-hashed for the diff_id: that is the other core's work). The
//! thread parses the tar headers (with `tar-core`, as composefs-oci does),
//! and for each regular file above [`INLINE_CONTENT_MAX_V0`] streams the
//! content once from the chunk it arrived in: the fs-verity digest is fed
//! whole 4 KiB blocks straight from that buffer while the same bytes are
//! written to an `O_TMPFILE` in the object directory, which is then linked
//! under its digest. Everything else (headers, small files, padding) goes
//! inline into composefs's [`SplitStreamWriter`], in the same order as
//! composefs-oci's builder replays it, so the splitstream is identical.
//!
//! Why not `split_async`: it hands every file above 64 bytes to a new
//! blocking task through a channel (a futex round trip per file), and each
//! object costs about eleven syscalls (a re-open, a verity ioctl that fails
//! on an insecure store, a `statat` that almost always says ENOENT, a
//! `mkdirat` that almost always says EEXIST, …). Here an object costs
//! `openat(O_TMPFILE)`, its `write`s, one `linkat` and a `close`:
//! - the verity ioctl runs only on a store that is not insecure (there it
//!   goes through composefs's own `finalize_object_tmpfile`, which enables
//!   and measures verity in the kernel; the digest must match ours);
//! - the 256 fan-out directories are not probed: a `linkat` that fails
//!   with ENOENT creates its directory and retries, so a warm store pays
//!   nothing and a cold one one `mkdirat` per directory;
//! - an object that already exists is found by the `linkat` itself
//!   (EEXIST), as composefs-rs does after its probe; its bytes were written
//!   to a tmpfile the kernel discards — cheaper than probing every object of
//!   a cold pull.
//!
//! Durability is the caller's: nothing here syncs (the objects' sizes go to
//! the pull's [`crate::writeback`], which only starts their writeback
//! early). The layer is registered (`Repository::register_stream`, which
//! syncs first) only after its checks pass.

use std::cell::Cell;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use composefs::INLINE_CONTENT_MAX_V0;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::splitstream::SplitStreamWriter;
use composefs_oci::LAYER_CONTENT_TYPE;
use rustix::fs::{Mode, OFlags};
use tar_core::HEADER_SIZE;
use tar_core::parse::{ParseEvent, Parser};

use crate::BoxError;
use crate::import::Repo;
use crate::object::{self, VerityStream};
use crate::writeback::Writeback;

/// Mode of a stored object (composefs-rs creates its objects 0644 too).
const OBJECT_MODE: u32 = 0o644;

/// Why a layer could not be split into the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SplitError {
    /// The tar stream is not one composefs can store; the parser's error,
    /// or the rule, is the source.
    #[error("not a valid tar stream")]
    Tar(#[source] BoxError),
    /// Writing an object or the splitstream failed (`step` says which).
    #[error("{step}")]
    Write {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// composefs-rs failed to store the splitstream or a verity object.
    #[error("{step}")]
    Repo {
        step: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

impl SplitError {
    fn tar(why: &str) -> SplitError {
        SplitError::Tar(why.to_string().into())
    }

    fn write(step: &'static str) -> impl FnOnce(std::io::Error) -> SplitError {
        move |source| SplitError::Write { step, source }
    }
}

/// Splits the tar whose bytes `next_chunk` yields (`None`: the stream
/// ended) into objects and a splitstream of [`LAYER_CONTENT_TYPE`], and
/// returns the splitstream's id. Reads the stream to its end: bytes after
/// the end-of-archive marker are kept inline, as composefs-oci keeps them.
/// Blocking.
pub(crate) fn split_layer(
    repo: &Arc<Repo>,
    writeback: Option<&Writeback>,
    next_chunk: impl FnMut() -> Option<Vec<u8>>,
) -> Result<Sha256HashValue, SplitError> {
    let objects = ObjectWriter::new(repo, writeback)?;
    let mut stream = repo
        .create_stream(LAYER_CONTENT_TYPE)
        .map_err(|source| SplitError::Repo {
            step: "starting the layer's splitstream",
            source,
        })?;
    let mut input = Input::new(next_chunk);
    let mut parser = Parser::with_defaults();
    let mut need = HEADER_SIZE;
    loop {
        if !input.fill_to(need) {
            if input.available().is_empty() {
                // The stream ended on a header boundary without an
                // end-of-archive marker: composefs-oci accepts that too.
                break;
            }
            return Err(SplitError::tar("unexpected EOF in tar stream"));
        }
        let event = parser
            .parse(input.available())
            .map_err(|e| SplitError::Tar(Box::new(e)))?;
        match event {
            ParseEvent::NeedData { min_bytes } => {
                need = min_bytes;
                continue;
            }
            ParseEvent::GlobalExtensions { consumed, .. } => {
                stream.write_inline(&input.available()[..consumed]);
                input.consume(consumed);
            }
            ParseEvent::End { consumed } => {
                // The end marker and whatever follows it (GNU tar pads to
                // a 10 KiB record) are part of the diff_id and of the
                // splitstream composefs-oci writes.
                stream.write_inline(&input.available()[..consumed]);
                input.consume(consumed);
                while let Some(rest) = input.next_run(usize::MAX) {
                    stream.write_inline(rest);
                    let n = rest.len();
                    input.consume(n);
                }
                break;
            }
            ParseEvent::SparseEntry { .. } => {
                return Err(SplitError::tar("sparse tar entries are not supported"));
            }
            ParseEvent::Entry { consumed, entry } => {
                let size = usize::try_from(entry.size)
                    .map_err(|_| SplitError::tar("tar entry size does not fit in memory"))?;
                let external = entry.entry_type.is_file() && size > INLINE_CONTENT_MAX_V0;
                stream.write_inline(&input.available()[..consumed]);
                input.consume(consumed);
                let stored = size.next_multiple_of(HEADER_SIZE);
                if external {
                    let id = objects.store(&mut input, size)?;
                    stream.add_external_size(size as u64);
                    stream
                        .write_reference(id)
                        .map_err(|source| SplitError::Repo {
                            step: "adding an object to the splitstream",
                            source,
                        })?;
                    copy_inline(&mut input, &mut stream, stored - size, "tar padding")?;
                } else {
                    copy_inline(&mut input, &mut stream, stored, "tar entry")?;
                }
            }
        }
        need = HEADER_SIZE;
    }
    stream.done().map_err(|source| SplitError::Repo {
        step: "storing the layer's splitstream",
        source,
    })
}

/// Moves the next `len` bytes of `input` into the splitstream inline.
fn copy_inline<F: FnMut() -> Option<Vec<u8>>>(
    input: &mut Input<F>,
    stream: &mut SplitStreamWriter<Sha256HashValue>,
    mut len: usize,
    what: &str,
) -> Result<(), SplitError> {
    while len > 0 {
        let run = input
            .next_run(len)
            .ok_or_else(|| SplitError::tar(&format!("unexpected EOF reading {what}")))?;
        stream.write_inline(run);
        let n = run.len();
        input.consume(n);
        len -= n;
    }
    Ok(())
}

/// The tar bytes, as chunks handed over by the producer. A chunk is used in
/// place while whole; only a header or extension that straddles two chunks
/// is copied to make it contiguous for the parser.
struct Input<F> {
    next_chunk: F,
    buf: Vec<u8>,
    pos: usize,
}

impl<F: FnMut() -> Option<Vec<u8>>> Input<F> {
    fn new(next_chunk: F) -> Self {
        Input {
            next_chunk,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.pos);
        self.pos += n;
    }

    /// Pulls chunks until at least `n` contiguous bytes are available;
    /// `false` if the stream ended first.
    fn fill_to(&mut self, n: usize) -> bool {
        while self.buf.len() - self.pos < n {
            let Some(chunk) = (self.next_chunk)() else {
                return false;
            };
            if self.pos == self.buf.len() {
                self.buf = chunk;
            } else {
                self.buf.drain(..self.pos);
                self.buf.extend_from_slice(&chunk);
            }
            self.pos = 0;
        }
        true
    }

    /// The next at most `max` bytes that are contiguous in memory (pulling
    /// a chunk if none are left); `None` when the stream has ended.
    fn next_run(&mut self, max: usize) -> Option<&[u8]> {
        while self.pos == self.buf.len() {
            self.buf = (self.next_chunk)()?;
            self.pos = 0;
        }
        let end = self.buf.len().min(self.pos.saturating_add(max));
        Some(&self.buf[self.pos..end])
    }
}

/// Writes objects into the store's `objects/` directory.
struct ObjectWriter<'r> {
    repo: &'r Arc<Repo>,
    objects: BorrowedFd<'r>,
    /// An insecure store never gets verity enabled on its objects (the
    /// filesystem cannot), so the ioctl is not even tried.
    insecure: bool,
    /// Told about every object's bytes, to start their writeback early.
    writeback: Option<&'r Writeback>,
    /// `linkat(fd, "", AT_EMPTY_PATH)` needs CAP_DAC_READ_SEARCH on older
    /// kernels; once refused, objects are linked through `/proc/self/fd`.
    empty_path_refused: Cell<bool>,
}

impl<'r> ObjectWriter<'r> {
    fn new(repo: &'r Arc<Repo>, writeback: Option<&'r Writeback>) -> Result<Self, SplitError> {
        let objects = repo
            .objects_dir()
            .map_err(|e| SplitError::write("opening the objects directory")(e.into()))?;
        Ok(ObjectWriter {
            repo,
            objects: objects.as_fd(),
            insecure: repo.is_insecure(),
            writeback,
            empty_path_refused: Cell::new(false),
        })
    }

    /// Stores the next `size` bytes of `input` as an object; returns its id.
    fn store<F: FnMut() -> Option<Vec<u8>>>(
        &self,
        input: &mut Input<F>,
        size: usize,
    ) -> Result<Sha256HashValue, SplitError> {
        let file = if self.insecure {
            rustix::fs::openat(
                self.objects,
                ".",
                OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
                Mode::from_raw_mode(OBJECT_MODE),
            )
            .map_err(|e| SplitError::write("creating an object")(e.into()))?
        } else {
            self.repo
                .create_object_tmpfile()
                .map_err(|source| SplitError::Repo {
                    step: "creating an object",
                    source,
                })?
        };
        let mut file = File::from(file);
        let mut verity = VerityStream::new();
        let mut left = size;
        while left > 0 {
            let run = input
                .next_run(left)
                .ok_or_else(|| SplitError::tar("unexpected EOF reading tar entry"))?;
            verity.update(run);
            file.write_all(run)
                .map_err(SplitError::write("writing an object"))?;
            let n = run.len();
            input.consume(n);
            left -= n;
        }
        let id = verity.finish();
        if let Some(writeback) = self.writeback {
            writeback.wrote(size as u64);
        }
        if self.insecure {
            self.link(&file, &id)?;
        } else {
            let (measured, _) = self
                .repo
                .finalize_object_tmpfile(file, size as u64)
                .map_err(|source| SplitError::Repo {
                    step: "enabling fs-verity on an object",
                    source,
                })?;
            if measured != id {
                return Err(SplitError::Repo {
                    step: "enabling fs-verity on an object",
                    source: anyhow::anyhow!(
                        "the kernel measured {} where the stream hashed to {}",
                        measured.to_hex(),
                        id.to_hex()
                    ),
                });
            }
        }
        Ok(id)
    }

    /// Gives the tmpfile `file` its object name.
    fn link(&self, file: &File, id: &Sha256HashValue) -> Result<(), SplitError> {
        object::link_tmpfile(self.objects, file, id, &self.empty_path_refused)
            .map_err(|(step, e)| SplitError::write(step)(e.into()))
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
