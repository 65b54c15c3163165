//! A layer's entry index: what the image build needs from a stored layer,
//! without its splitstream.
//!
//! Building an image applies every layer's tar entries in order. Read from
//! the splitstreams, that costs a zstd decompression and a tar header parse
//! of every entry of every layer, twice (whiteouts first, then the rest; see
//! [`crate::image::build_compact`]), on every pull, although only the top
//! layer of an update is new. The index holds the same entries already
//! parsed — paths, metadata, xattrs, object ids and sizes, inline contents,
//! link targets, whiteouts — as composefs-oci's entry reader yields them, so
//! the build reads the index instead and gets the same tree, byte for byte
//! the same image (the equivalence tests build both ways).
//!
//! # Model
//!
//! One file per layer splitstream, `sysroot/osctl/layers/<verity>.idx`,
//! named by the splitstream's fs-verity id: a splitstream's bytes decide
//! its entries, so the index never goes stale; a layer imported again into
//! the same splitstream keeps it. It is made from the splitstream by the
//! first build that needs it (the cold pull's), while that build reads the
//! splitstream anyway, and never changed afterwards.
//!
//! The file is a header and a body. The header: magic, format version, the
//! splitstream id and size, the entry count, the body's length, and a
//! sha256 over those fields and the body's sha256. The body: one length-prefixed record per entry. The
//! reader refuses a file whose header or digest does not match (a torn or
//! damaged write, another version, another layer) and the build then makes
//! the index again from the splitstream, with a warning naming the file: an
//! index is never trusted unchecked, and never needed (the splitstream is
//! the truth). Written to a temporary in the same directory, fsynced, and
//! renamed into place.
//!
//! `gc` removes the index of every splitstream it removed (an index whose
//! splitstream is gone); `fsck` checks every index's header and digest and
//! reports one that does not match or has no splitstream; `fsck --repair`
//! removes those (the next build makes them again).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::generic_tree::{LeafContent, Stat};
use composefs::tree::RegularFile;
use composefs_oci::tar::{TarEntry, TarItem};
use sha2::{Digest, Sha256};
use zerocopy::{FromBytes, IntoBytes};

/// Where the indexes live, relative to the sysroot.
pub const LAYER_INDEX_PATH: &str = osctl_layout::sysroot::LAYER_INDEXES;

/// File name suffix of an index.
pub(crate) const INDEX_SUFFIX: &str = ".idx";

/// First bytes of every index file.
const MAGIC: &[u8; 8] = b"OSCTLIX\0";

/// Format version; a reader refuses any other.
pub(crate) const INDEX_VERSION: u32 = 1;

/// magic, version, reserved, splitstream id, splitstream size, entries,
/// body length, sha256.
const HEADER_LEN: usize = 8 + 4 + 4 + 32 + 8 + 8 + 8 + 32;

/// I/O buffer of the reader and the writer.
const BUFFER: usize = 128 * 1024;

/// Mode of the index directory.
const DIR_MODE: u32 = 0o755;

/// Entry tags.
const TAG_DIR: u8 = 0;
const TAG_HARDLINK: u8 = 1;
const TAG_INLINE: u8 = 2;
const TAG_EXTERNAL: u8 = 3;
const TAG_SYMLINK: u8 = 4;
const TAG_CHAR: u8 = 5;
const TAG_BLOCK: u8 = 6;
const TAG_FIFO: u8 = 7;
const TAG_SOCKET: u8 = 8;

/// Why an index could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("layer index {}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("layer index {}: {step}", path.display())]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An entry the index cannot hold (a regular file without a verity
    /// id): such a layer is read from its splitstream, which refuses it.
    #[error("an entry of this layer cannot be indexed")]
    Unindexable,
}

/// The index file of splitstream `verity` in `dir`.
pub(crate) fn index_path(dir: &Path, verity: &Sha256HashValue) -> PathBuf {
    dir.join(format!("{}{INDEX_SUFFIX}", verity.to_hex()))
}

/// The splitstream id an index file name names, if it is one.
pub(crate) fn verity_of(name: &str) -> Option<Sha256HashValue> {
    Sha256HashValue::from_hex(name.strip_suffix(INDEX_SUFFIX)?).ok()
}

/// Writes an index of one layer's entries: [`Self::push`] each entry in
/// the splitstream's order, then [`Self::commit`].
pub(crate) struct IndexWriter {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    verity: Sha256HashValue,
    stream_size: u64,
    out: BufWriter<File>,
    hasher: Sha256,
    entries: u64,
    body: u64,
    buf: Vec<u8>,
}

impl IndexWriter {
    /// Starts the index of splitstream `verity` (`stream_size` bytes: see
    /// [`stream_size`]) in `dir` (created if missing), in a temporary file.
    pub(crate) fn create(
        dir: &Path,
        verity: &Sha256HashValue,
        stream_size: u64,
    ) -> Result<Self, IndexError> {
        let path = index_path(dir, verity);
        let io = |step, source| IndexError::Io {
            path: path.clone(),
            step,
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| io("creating its directory", e))?;
        let tmp = dir.join(format!(
            "{}{}.{}",
            crate::atomic::TMP_PREFIX,
            verity.to_hex(),
            std::process::id()
        ));
        let mut file = File::create(&tmp).map_err(|e| io("creating a temporary", e))?;
        // The header is written last, once the body's digest is known.
        file.write_all(&[0; HEADER_LEN])
            .map_err(|e| io("writing", e))?;
        Ok(IndexWriter {
            tmp,
            path,
            dir: dir.to_path_buf(),
            verity: verity.clone(),
            stream_size,
            out: BufWriter::with_capacity(BUFFER, file),
            hasher: Sha256::new(),
            entries: 0,
            body: 0,
            buf: Vec::new(),
        })
    }

    pub(crate) fn push(&mut self, entry: &TarEntry<Sha256HashValue>) -> Result<(), IndexError> {
        let b = &mut self.buf;
        b.clear();
        let (tag, payload): (u8, Payload) = match &entry.item {
            TarItem::Directory => (TAG_DIR, Payload::None),
            TarItem::Hardlink(target) => (TAG_HARDLINK, Payload::Bytes(target.as_bytes())),
            TarItem::Leaf(LeafContent::Regular(RegularFile::Inline(data))) => {
                (TAG_INLINE, Payload::Bytes(data))
            }
            TarItem::Leaf(LeafContent::Regular(RegularFile::External(id, size))) => {
                (TAG_EXTERNAL, Payload::Object(id, *size))
            }
            TarItem::Leaf(LeafContent::Regular(_)) => return Err(IndexError::Unindexable),
            TarItem::Leaf(LeafContent::Symlink(target)) => {
                (TAG_SYMLINK, Payload::Bytes(target.as_bytes()))
            }
            TarItem::Leaf(LeafContent::CharacterDevice(rdev)) => (TAG_CHAR, Payload::Rdev(*rdev)),
            TarItem::Leaf(LeafContent::BlockDevice(rdev)) => (TAG_BLOCK, Payload::Rdev(*rdev)),
            TarItem::Leaf(LeafContent::Fifo) => (TAG_FIFO, Payload::None),
            TarItem::Leaf(LeafContent::Socket) => (TAG_SOCKET, Payload::None),
        };
        b.push(tag);
        put_bytes(b, entry.path.as_os_str().as_bytes())?;
        let st = &entry.stat;
        b.extend_from_slice(&st.st_mode.to_le_bytes());
        b.extend_from_slice(&st.st_uid.to_le_bytes());
        b.extend_from_slice(&st.st_gid.to_le_bytes());
        b.extend_from_slice(&st.st_mtim_sec.to_le_bytes());
        b.extend_from_slice(&st.st_mtim_nsec.to_le_bytes());
        let count = u32::try_from(st.xattrs.len()).map_err(|_| IndexError::Unindexable)?;
        b.extend_from_slice(&count.to_le_bytes());
        for (name, value) in &st.xattrs {
            put_bytes(b, name.as_bytes())?;
            put_bytes(b, value)?;
        }
        match payload {
            Payload::None => {}
            Payload::Bytes(bytes) => put_bytes(b, bytes)?,
            Payload::Object(id, size) => {
                b.extend_from_slice(id.as_bytes());
                b.extend_from_slice(&size.to_le_bytes());
            }
            Payload::Rdev(rdev) => b.extend_from_slice(&rdev.to_le_bytes()),
        }
        let len = u32::try_from(b.len())
            .map_err(|_| IndexError::Unindexable)?
            .to_le_bytes();
        self.hasher.update(len);
        self.hasher.update(&*b);
        let io = |e| IndexError::Io {
            path: self.tmp.clone(),
            step: "writing",
            source: e,
        };
        self.out.write_all(&len).map_err(io)?;
        self.out.write_all(b).map_err(io)?;
        self.entries += 1;
        self.body += (len.len() + b.len()) as u64;
        Ok(())
    }

    /// Writes the header, fsyncs the file and renames it into place.
    pub(crate) fn commit(self) -> Result<(), IndexError> {
        let tmp = self.tmp.clone();
        let io = |step, source| IndexError::Io {
            path: tmp.clone(),
            step,
            source,
        };
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| io("writing", e.into_error()))?;
        let header = header(
            &self.verity,
            self.stream_size,
            self.entries,
            self.body,
            &self.hasher.finalize().into(),
        );
        std::io::Seek::rewind(&mut file).map_err(|e| io("writing the header", e))?;
        file.write_all(&header)
            .map_err(|e| io("writing the header", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        crate::failpoint::hit("pull:after-layer-index-written");
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io("renaming into place", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing its directory", e))?;
        crate::failpoint::hit("pull:after-layer-index");
        Ok(())
    }

    /// Drops the temporary (the layer is read from its splitstream).
    pub(crate) fn abandon(self) {
        drop(self.out);
        if let Err(e) = std::fs::remove_file(&self.tmp) {
            // A leftover temporary is ignored by readers and removed by gc.
            tracing::warn!(
                "cannot remove the unfinished layer index {}: {e}",
                self.tmp.display()
            );
        }
    }
}

enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Object(&'a Sha256HashValue, u64),
    Rdev(u64),
}

fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) -> Result<(), IndexError> {
    let len = u32::try_from(bytes.len()).map_err(|_| IndexError::Unindexable)?;
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(bytes);
    Ok(())
}

/// Where the header's digest starts: it covers the header before it and
/// the body (sha256 of those header bytes and the body's sha256).
const DIGEST_AT: usize = HEADER_LEN - 32;

/// The digest of an index: its header up to [`DIGEST_AT`] and its body's
/// sha256, so that a damaged header field is caught like a damaged entry.
fn digest(head: &[u8], body_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&head[..DIGEST_AT]);
    h.update(body_digest);
    h.finalize().into()
}

fn header(
    verity: &Sha256HashValue,
    stream_size: u64,
    entries: u64,
    body: u64,
    body_digest: &[u8; 32],
) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(verity.as_bytes());
    h.extend_from_slice(&stream_size.to_le_bytes());
    h.extend_from_slice(&entries.to_le_bytes());
    h.extend_from_slice(&body.to_le_bytes());
    let digest = digest(&h, body_digest);
    h.extend_from_slice(&digest);
    debug_assert_eq!(h.len(), HEADER_LEN);
    h
}

/// What an index's header says about its body.
struct Header {
    raw: [u8; HEADER_LEN],
    stream_size: u64,
    entries: u64,
    body: u64,
    digest: [u8; 32],
}

fn parse_header(raw: &[u8; HEADER_LEN], verity: &Sha256HashValue) -> Result<Header, String> {
    if &raw[..8] != MAGIC {
        return Err("not a layer index (bad magic)".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != INDEX_VERSION {
        return Err(format!(
            "format version {version}, this osctl reads {INDEX_VERSION}"
        ));
    }
    if &raw[16..48] != verity.as_bytes() {
        return Err(format!(
            "made for splitstream {}, not {}",
            Sha256HashValue::read_from_bytes(&raw[16..48])
                .expect("32 bytes")
                .to_hex(),
            verity.to_hex()
        ));
    }
    Ok(Header {
        raw: *raw,
        stream_size: u64_at(48),
        entries: u64_at(56),
        body: u64_at(64),
        digest: raw[DIGEST_AT..].try_into().expect("32 bytes"),
    })
}

/// Reads an index, checked: [`Self::open`] checks the header, the entries
/// come from [`Self::next_entry`], and the body's length and digest are
/// checked when the last entry has been read ([`Self::next_entry`] returns
/// the error then, in place of the end).
pub(crate) struct IndexReader {
    path: PathBuf,
    input: BufReader<File>,
    header: Header,
    hasher: Sha256,
    read: u64,
    entries: u64,
    buf: Vec<u8>,
}

impl IndexReader {
    /// Opens the index of splitstream `verity` in `dir`; `Ok(None)` if
    /// there is none.
    pub(crate) fn open(dir: &Path, verity: &Sha256HashValue) -> Result<Option<Self>, IndexError> {
        let path = index_path(dir, verity);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IndexError::Io {
                    path,
                    step: "opening",
                    source: e,
                });
            }
        };
        Self::from_file(path, file, verity).map(Some)
    }

    fn from_file(path: PathBuf, file: File, verity: &Sha256HashValue) -> Result<Self, IndexError> {
        let mut input = BufReader::with_capacity(BUFFER, file);
        let mut raw = [0u8; HEADER_LEN];
        input
            .read_exact(&mut raw)
            .map_err(|e| IndexError::Invalid {
                path: path.clone(),
                why: format!("cannot read its header: {e}"),
            })?;
        let header = parse_header(&raw, verity).map_err(|why| IndexError::Invalid {
            path: path.clone(),
            why,
        })?;
        Ok(IndexReader {
            path,
            input,
            header,
            hasher: Sha256::new(),
            read: 0,
            entries: 0,
            buf: Vec::new(),
        })
    }

    /// The size of the splitstream the index was made from; to be trusted
    /// only once the last entry has been read (the digest is checked then).
    pub(crate) fn stream_size(&self) -> u64 {
        self.header.stream_size
    }

    fn invalid(&self, why: impl Into<String>) -> IndexError {
        IndexError::Invalid {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    /// Reads the next record (its length, then its bytes) into `buf`.
    fn record(&mut self) -> Result<(), IndexError> {
        let mut len = [0u8; 4];
        if self.read + len.len() as u64 > self.header.body {
            return Err(self.invalid(format!(
                "entry {} runs past the body's {} bytes",
                self.entries + 1,
                self.header.body
            )));
        }
        self.input
            .read_exact(&mut len)
            .map_err(|e| self.invalid(format!("truncated: {e}")))?;
        let n = u32::from_le_bytes(len) as usize;
        if self.read + (len.len() + n) as u64 > self.header.body {
            return Err(self.invalid(format!(
                "entry {} runs past the body's {} bytes",
                self.entries + 1,
                self.header.body
            )));
        }
        self.buf.resize(n, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|e| self.invalid(format!("truncated: {e}")))?;
        self.hasher.update(len);
        self.hasher.update(&self.buf);
        self.read += (len.len() + n) as u64;
        Ok(())
    }

    /// The next entry, `None` at the end of a body whose length and digest
    /// match the header.
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntry<Sha256HashValue>>, IndexError> {
        if self.read == self.header.body {
            return self.finish().map(|()| None);
        }
        self.record()?;
        let entry = parse_entry(&self.buf)
            .map_err(|why| self.invalid(format!("entry {}: {why}", self.entries + 1)))?;
        self.entries += 1;
        Ok(Some(entry))
    }

    fn finish(&mut self) -> Result<(), IndexError> {
        let mut rest = [0u8; 1];
        match self.input.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => return Err(self.invalid("bytes after the body")),
            Err(e) => return Err(self.invalid(format!("cannot read: {e}"))),
        }
        if self.entries != self.header.entries {
            return Err(self.invalid(format!(
                "{} entries, the header says {}",
                self.entries, self.header.entries
            )));
        }
        let body: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if digest(&self.header.raw, &body) != self.header.digest {
            return Err(self.invalid("its content does not match its digest"));
        }
        Ok(())
    }
}

/// Reads one record's fields in order.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// One record as composefs-oci's entry reader would have returned it.
fn parse_entry(record: &[u8]) -> Result<TarEntry<Sha256HashValue>, String> {
    let mut c = Cursor(record);
    let [tag] = c.array()?;
    let path = PathBuf::from(OsStr::from_bytes(c.bytes()?));
    let st_mode = c.u32()?;
    let st_uid = c.u32()?;
    let st_gid = c.u32()?;
    let st_mtim_sec = i64::from_le_bytes(c.array()?);
    let st_mtim_nsec = c.u32()?;
    let mut xattrs = std::collections::BTreeMap::new();
    for _ in 0..c.u32()? {
        let name: Box<OsStr> = OsStr::from_bytes(c.bytes()?).into();
        let value: Box<[u8]> = c.bytes()?.into();
        xattrs.insert(name, value);
    }
    let item = match tag {
        TAG_DIR => TarItem::Directory,
        TAG_HARDLINK => TarItem::Hardlink(OsStr::from_bytes(c.bytes()?).to_os_string()),
        TAG_INLINE => TarItem::Leaf(LeafContent::Regular(RegularFile::Inline(c.bytes()?.into()))),
        TAG_EXTERNAL => {
            let id = Sha256HashValue::read_from_bytes(c.take(32)?).expect("32 bytes");
            let size = c.u64()?;
            TarItem::Leaf(LeafContent::Regular(RegularFile::External(id, size)))
        }
        TAG_SYMLINK => TarItem::Leaf(LeafContent::Symlink(OsStr::from_bytes(c.bytes()?).into())),
        TAG_CHAR => TarItem::Leaf(LeafContent::CharacterDevice(c.u64()?)),
        TAG_BLOCK => TarItem::Leaf(LeafContent::BlockDevice(c.u64()?)),
        TAG_FIFO => TarItem::Leaf(LeafContent::Fifo),
        TAG_SOCKET => TarItem::Leaf(LeafContent::Socket),
        other => return Err(format!("unknown tag {other}")),
    };
    if !c.0.is_empty() {
        return Err(format!("{} bytes after its fields", c.0.len()));
    }
    Ok(TarEntry {
        path,
        stat: Stat {
            st_mode,
            st_uid,
            st_gid,
            st_mtim_sec,
            st_mtim_nsec,
            xattrs,
        },
        item,
    })
}

/// Reads a whole index and checks it (fsck): the entry count, or why it
/// cannot be used.
pub(crate) fn check(path: &Path, verity: &Sha256HashValue) -> Result<u64, IndexError> {
    let file = File::open(path).map_err(|e| IndexError::Io {
        path: path.to_path_buf(),
        step: "opening",
        source: e,
    })?;
    let mut reader = IndexReader::from_file(path.to_path_buf(), file, verity)?;
    while reader.next_entry()?.is_some() {}
    Ok(reader.entries)
}

/// The index files in `dir` (none if it does not exist): (file name, the
/// splitstream it names, if the name is an index's). Temporaries are
/// listed with `None`.
fn list(dir: &Path) -> std::io::Result<Vec<(String, Option<Sha256HashValue>)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let verity = verity_of(&name);
        out.push((name, verity));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether splitstream `verity` is in the store (`objects` is its object
/// directory).
fn has_stream(objects: BorrowedFd<'_>, verity: &Sha256HashValue) -> std::io::Result<bool> {
    match rustix::fs::statat(
        objects,
        verity.to_object_pathname().as_str(),
        rustix::fs::AtFlags::empty(),
    ) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The size of splitstream `verity` in the store (`objects` is its object
/// directory), which its index records: the reuse check
/// ([`crate::check::verify_layer`]) compares it instead of parsing the
/// splitstream.
pub(crate) fn stream_size(
    objects: BorrowedFd<'_>,
    verity: &Sha256HashValue,
) -> rustix::io::Result<u64> {
    let st = rustix::fs::statat(
        objects,
        verity.to_object_pathname().as_str(),
        rustix::fs::AtFlags::empty(),
    )?;
    Ok(st.st_size as u64)
}

/// `gc`'s part: removes every index whose splitstream is gone, and the
/// temporaries of index writes a crash interrupted. The caller holds the
/// naming lock exclusively, so no build is writing an index meanwhile.
/// Returns how many files were removed.
pub(crate) fn prune(dir: &Path, objects: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut removed = 0;
    for (name, verity) in list(dir)? {
        let stale = match &verity {
            Some(v) => !has_stream(objects, v)?,
            None => name.starts_with(crate::atomic::TMP_PREFIX),
        };
        if stale {
            std::fs::remove_file(dir.join(&name))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `fsck`'s part: one line per index that cannot be used (unreadable, not
/// matching its header or digest, or without its splitstream) or file that
/// is not an index, with the path `--repair` removes.
pub(crate) fn problems(
    dir: &Path,
    objects: BorrowedFd<'_>,
) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for (name, verity) in list(dir)? {
        let path = dir.join(&name);
        let Some(verity) = verity else {
            if !name.starts_with(crate::atomic::TMP_PREFIX) {
                out.push((
                    path.clone(),
                    format!("{}: not a layer index", path.display()),
                ));
            }
            continue;
        };
        if !has_stream(objects, &verity)? {
            out.push((
                path.clone(),
                format!(
                    "layer index {}: its splitstream is not in the store (`osctl gc` removes it)",
                    path.display()
                ),
            ));
        } else if let Err(e) = check(&path, &verity) {
            out.push((
                path,
                format!("{e} (`fsck --repair` removes it; the next pull makes it again)"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "layer_index_tests.rs"]
mod tests;
