//! What goes into an image: entries, layers and their tar encoding.
//!
//! A test describes an image as data: an [`ImageSpec`] is a list of
//! [`Layer`]s, each a list of [`Entry`]s written to the layer tar in the order
//! given, nothing added or reordered. That is what lets a test state hostile
//! or odd layers precisely (a hard link before its target, an entry under a
//! missing parent, `../escape`), and what lets
//! [`expected_tree`](crate::expected_tree) compute the root filesystem those
//! exact bytes must produce.
//!
//! Layers are encoded as a stream: tar writer → diff_id hasher → compressor
//! → the caller's writer, so a 50 MiB [`Entry::LargeFile`] never sits in
//! memory. The encoding is deterministic (fixed mtimes, gzip without a
//! timestamp), so the same spec always gives the same digests.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use anyhow::{Result, bail};
use tar::EntryType;

use crate::Sha256;
use crate::layout::{DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR};
use crate::tarwriter::{EntryHeader, TarWriter};

/// One entry of a layer tar. Paths are written as given (no `./` prefix is
/// added; a trailing `/` is added to directories).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
        content: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    /// `size` bytes of deterministic pseudo-random data derived from `seed`,
    /// generated while the tar is written (see [`generated_content`]).
    LargeFile {
        path: String,
        mode: u32,
        size: u64,
        seed: u64,
    },
    /// `size` zero bytes, generated while the tar is written: a file of any
    /// size whose layer compresses to almost nothing.
    Zeros {
        path: String,
        size: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    BlockDev {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    Fifo {
        path: String,
    },
    /// Writes `<parent>/.wh.<name>`: deletes `path` from lower layers.
    Whiteout {
        path: String,
    },
    /// Writes `<dir>/.wh..wh..opq`: hides everything lower layers put in `dir`.
    Opaque {
        dir: String,
    },
    /// A regular file (0644, root) whose name bytes go into the header
    /// verbatim: `../escape`, `/abs/path`, non-UTF-8, ...
    RawPath {
        raw_name: Vec<u8>,
        content: Vec<u8>,
    },
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
    pub fn dir_with(path: &str, mode: u32, uid: u32, gid: u32) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode,
            uid,
            gid,
        }
    }
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Entry {
        Entry::file_with(path, 0o644, 0, 0, content)
    }
    pub fn file_with(
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        content: impl Into<Vec<u8>>,
    ) -> Entry {
        Entry::File {
            path: path.into(),
            mode,
            uid,
            gid,
            content: content.into(),
            xattrs: Vec::new(),
        }
    }
    pub fn large_file(path: &str, size: u64, seed: u64) -> Entry {
        Entry::LargeFile {
            path: path.into(),
            mode: 0o644,
            size,
            seed,
        }
    }
    pub fn zeros(path: &str, size: u64) -> Entry {
        Entry::Zeros {
            path: path.into(),
            size,
        }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Entry {
        Entry::CharDev {
            path: path.into(),
            major,
            minor,
            mode: 0o666,
        }
    }
    pub fn block_dev(path: &str, major: u32, minor: u32) -> Entry {
        Entry::BlockDev {
            path: path.into(),
            major,
            minor,
            mode: 0o660,
        }
    }
    pub fn fifo(path: &str) -> Entry {
        Entry::Fifo { path: path.into() }
    }
    pub fn whiteout(path: &str) -> Entry {
        Entry::Whiteout { path: path.into() }
    }
    pub fn opaque(dir: &str) -> Entry {
        Entry::Opaque { dir: dir.into() }
    }
    pub fn raw(raw_name: impl Into<Vec<u8>>, content: impl Into<Vec<u8>>) -> Entry {
        Entry::RawPath {
            raw_name: raw_name.into(),
            content: content.into(),
        }
    }

    /// Adds an xattr to a [`Entry::File`]; panics on other kinds, as that is
    /// a mistake in the test.
    pub fn with_xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Entry {
        match &mut self {
            Entry::File { xattrs, .. } => xattrs.push((name.into(), value.into())),
            other => panic!("with_xattr on {other:?}: only Entry::File carries xattrs"),
        }
        self
    }

    /// The name written into the tar header.
    pub fn tar_name(&self) -> Vec<u8> {
        match self {
            Entry::Dir { path, .. } if path.ends_with('/') => path.clone().into_bytes(),
            Entry::Dir { path, .. } => format!("{path}/").into_bytes(),
            Entry::File { path, .. }
            | Entry::LargeFile { path, .. }
            | Entry::Zeros { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. }
            | Entry::CharDev { path, .. }
            | Entry::BlockDev { path, .. }
            | Entry::Fifo { path } => path.clone().into_bytes(),
            Entry::Whiteout { path } => {
                let path = path.trim_end_matches('/');
                match path.rsplit_once('/') {
                    Some((parent, name)) => format!("{parent}/.wh.{name}").into_bytes(),
                    None => format!(".wh.{path}").into_bytes(),
                }
            }
            Entry::Opaque { dir } => {
                format!("{}/.wh..wh..opq", dir.trim_end_matches('/')).into_bytes()
            }
            Entry::RawPath { raw_name, .. } => raw_name.clone(),
        }
    }
}

/// Layer compression; also decides the layer's media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
    /// Overrides the media type written into the manifest (e.g. to test an
    /// unsupported one). The blob is still compressed per `compression`.
    pub media_type: Option<String>,
}

impl Layer {
    /// A gzip layer. `Layer::new(vec![])` is the empty layer (a tar with zero
    /// entries, i.e. just the end-of-archive blocks).
    pub fn new(entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            compression: Compression::Gzip,
            media_type: None,
        }
    }
    pub fn with_compression(mut self, compression: Compression) -> Layer {
        self.compression = compression;
        self
    }
    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.media_type = Some(media_type.into());
        self
    }
}

#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    /// OCI architecture name (`amd64`, `arm64`, ...), defaults to the host's.
    pub architecture: String,
    pub os: String,
    pub labels: BTreeMap<String, String>,
    /// Docker schema 2 media types for manifest, config and layers instead of
    /// OCI ones. Only gzip and uncompressed layers have Docker media types.
    pub docker_media_types: bool,
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec {
            layers,
            architecture: host_oci_arch().into(),
            os: "linux".into(),
            labels: BTreeMap::new(),
            docker_media_types: false,
        }
    }
    pub fn with_label(mut self, key: &str, value: &str) -> ImageSpec {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn with_docker_media_types(mut self) -> ImageSpec {
        self.docker_media_types = true;
        self
    }
}

/// The host architecture in OCI/Go naming.
pub fn host_oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A layer encoded in memory, for tests that upload blobs themselves
/// ([`crate::Registry::put_blob`]) or tamper with them first.
#[derive(Clone, Debug)]
pub struct EncodedLayer {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
}

pub fn encode_layer(layer: &Layer, docker_media_types: bool) -> Result<EncodedLayer> {
    let (bytes, diff_id) = encode_layer_to(layer, Vec::new())?;
    Ok(EncodedLayer {
        digest: crate::sha256_digest(&bytes),
        bytes,
        diff_id,
        media_type: layer_media_type(layer, docker_media_types)?,
    })
}

/// The uncompressed layer tar, e.g. to feed to `tar -x`.
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    Ok(write_layer_tar(entries, Vec::new())?)
}

/// Streams `entries` as a tar into `out`.
pub fn write_layer_tar<W: Write>(entries: &[Entry], out: W) -> io::Result<W> {
    let mut tar = TarWriter::new(out);
    for entry in entries {
        let name = entry.tar_name();
        let mut h = EntryHeader::new(&name, EntryType::Regular);
        let mut data: Box<dyn Read + '_> = Box::new(io::empty());
        match entry {
            Entry::Dir { mode, uid, gid, .. } => {
                (h.kind, h.mode, h.uid, h.gid) = (EntryType::Directory, *mode, *uid, *gid);
            }
            Entry::File {
                mode,
                uid,
                gid,
                content,
                xattrs,
                ..
            } => {
                (h.mode, h.uid, h.gid, h.size, h.xattrs) =
                    (*mode, *uid, *gid, content.len() as u64, xattrs);
                data = Box::new(&content[..]);
            }
            Entry::LargeFile {
                mode, size, seed, ..
            } => {
                (h.mode, h.size) = (*mode, *size);
                data = Box::new(generated_content(*size, *seed));
            }
            Entry::Zeros { size, .. } => {
                (h.mode, h.size) = (0o644, *size);
                data = Box::new(io::repeat(0).take(*size));
            }
            Entry::Symlink { target, .. } => {
                (h.kind, h.mode, h.link) = (EntryType::Symlink, 0o777, Some(target.as_bytes()));
            }
            Entry::Hardlink { target, .. } => {
                (h.kind, h.link) = (EntryType::Link, Some(target.as_bytes()));
            }
            Entry::CharDev {
                major, minor, mode, ..
            } => {
                (h.kind, h.mode, h.device) = (EntryType::Char, *mode, Some((*major, *minor)));
            }
            Entry::BlockDev {
                major, minor, mode, ..
            } => {
                (h.kind, h.mode, h.device) = (EntryType::Block, *mode, Some((*major, *minor)));
            }
            Entry::Fifo { .. } => h.kind = EntryType::Fifo,
            Entry::Whiteout { .. } | Entry::Opaque { .. } => {}
            Entry::RawPath { content, .. } => {
                h.size = content.len() as u64;
                data = Box::new(&content[..]);
            }
        }
        tar.append(&h, &mut data)?;
    }
    tar.finish()
}

/// Deterministic pseudo-random bytes (splitmix64): incompressible, so a large
/// file makes an equally large blob, and cheap to regenerate for hashing.
pub fn generated_content(size: u64, seed: u64) -> impl Read {
    Generated {
        state: seed,
        remaining: size,
        buf: [0; 8],
        buf_pos: 8,
    }
}

struct Generated {
    state: u64,
    remaining: u64,
    buf: [u8; 8],
    buf_pos: usize,
}

impl Generated {
    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let out = &mut out[..n];
        // Bytes left over from the previous call's last word, then whole
        // words (a byte-at-a-time loop is slow in unoptimised test builds).
        let mut start = 0;
        while start < n && self.buf_pos < 8 {
            out[start] = self.buf[self.buf_pos];
            (start, self.buf_pos) = (start + 1, self.buf_pos + 1);
        }
        let mut words = out[start..].chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_word());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.buf = self.next_word();
            tail.copy_from_slice(&self.buf[..tail.len()]);
            self.buf_pos = tail.len();
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

pub(crate) fn layer_media_type(layer: &Layer, docker: bool) -> Result<String> {
    if let Some(mt) = &layer.media_type {
        return Ok(mt.clone());
    }
    Ok(match (layer.compression, docker) {
        (Compression::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Compression::Zstd, false) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Compression::None, false) => "application/vnd.oci.image.layer.v1.tar",
        (Compression::Gzip, true) => DOCKER_LAYER_GZIP,
        (Compression::None, true) => DOCKER_LAYER_TAR,
        (Compression::Zstd, true) => {
            bail!("Docker schema 2 has no zstd layer media type; set Layer::media_type")
        }
    }
    .into())
}

/// Tar → diff_id hasher → compressor → `out`. Returns `out` and the diff_id.
pub(crate) fn encode_layer_to<W: Write>(layer: &Layer, out: W) -> Result<(W, String)> {
    Ok(match layer.compression {
        Compression::None => {
            let hashed = write_layer_tar(&layer.entries, Hashing::new(out))?;
            let diff_id = hashed.digest();
            (hashed.inner, diff_id)
        }
        Compression::Gzip => {
            // Level 1: these are test fixtures, and most of a large layer is
            // incompressible generated data anyway.
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            let hashed = write_layer_tar(&layer.entries, Hashing::new(gz))?;
            let diff_id = hashed.digest();
            (hashed.inner.finish()?, diff_id)
        }
        Compression::Zstd => {
            let zst = zstd::Encoder::new(out, 1)?;
            let hashed = write_layer_tar(&layer.entries, Hashing::new(zst))?;
            let diff_id = hashed.digest();
            (hashed.inner.finish()?, diff_id)
        }
    })
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    hasher: Sha256,
    pub(crate) len: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", self.hasher.hex())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.0.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_content_does_not_depend_on_read_sizes() {
        let mut whole = Vec::new();
        generated_content(1000, 9).read_to_end(&mut whole).unwrap();
        let mut pieces = Vec::new();
        let mut reader = generated_content(1000, 9);
        for size in [1usize, 3, 7, 8, 9, 13, 100].iter().cycle() {
            let mut buf = vec![0u8; *size];
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            pieces.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole.len(), 1000);
        assert_eq!(whole, pieces);
        assert_ne!(whole[..8], whole[8..16]);
    }
}
