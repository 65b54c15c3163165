//! Importing one layer: blob → decompress → split into the store, verified.
//!
//! ```text
//!  blob reader ──▶ progress ──▶ inflate ──▶ sha256 (diff_id) ═▶ split_layer
//!  (size/digest                 (gzip,      (checked after the     (objects +
//!   checked at EOF)              zstd)       tar is drained)        splitstream)
//! ```
//!
//! `═▶` is the only hand-off between threads: 256 KiB chunks of tar over a
//! bounded channel to the blocking thread of [`crate::split`], so one layer
//! uses two cores (this task inflates and hashes, the splitter hashes
//! objects and writes them).
//!
//! The layer's splitstream is *registered* under its diff_id (by
//! [`register_layers`], after one sync for all the layers of a pull) only
//! after three checks pass: the blob's digest and size, the uncompressed stream's
//! sha256 against the config's `rootfs.diff_ids` entry (composefs-oci does not
//! check it), and every entry path staying inside the root. Until then the
//! objects it wrote are unreferenced and `gc` removes them; no image, record
//! or ref ever points at an unverified layer. A verified layer stays
//! registered even if a later layer fails, so a retried pull resumes.

use std::path::Path;
use std::sync::Arc;

use composefs::fsverity::Sha256HashValue;
use composefs::repository::Repository;
use composefs_oci::LAYER_CONTENT_TYPE;
use oci_spec::image::MediaType;
use osctl_image::verify::DigestReader;
use osctl_image::{BlobReader, Compression};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

use crate::writeback::Writeback;
use crate::{BoxError, StoreError, error, limits, split};

/// Bytes of uncompressed tar handed to the splitter at a time.
const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks queued between the inflater and the splitter: enough to ride out
/// a slow object write, little enough to keep the memory per layer at 1 MiB.
const CHUNKS_IN_FLIGHT: usize = 4;

pub(crate) type Repo = Repository<Sha256HashValue>;

/// Receives the count of compressed bytes read so far for one layer.
pub(crate) type ByteCallback = Box<dyn Fn(u64) + Send + Sync>;

/// Streams one layer into the store and checks it; returns its splitstream,
/// which [`register_layers`] then registers under `diff_id`. `what` names
/// the layer in errors; `writeback` hears of every object written.
// Eight different things; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn import_layer(
    repo: Arc<Repo>,
    writeback: Option<Arc<Writeback>>,
    store_path: &Path,
    blob: BlobReader,
    compression: Compression,
    diff_id: &str,
    what: &str,
    on_bytes: ByteCallback,
) -> Result<Sha256HashValue, StoreError> {
    let io_err = |e: std::io::Error| StoreError::Fetch {
        what: what.to_string(),
        source: Box::new(e),
    };
    let mut counted = Progress {
        inner: blob,
        read: 0,
        on_bytes,
        failed: None,
    };
    let media = match compression {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    };
    // The tar bytes go to a blocking thread in chunks (one hand-off per
    // chunk, not per file): this task inflates and hashes the diff_id, the
    // splitter parses, hashes objects and writes them, so a layer keeps
    // both cores busy.
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let split_repo = repo.clone();
    let splitter = tokio::task::spawn_blocking(move || {
        split::split_layer(&split_repo, writeback.as_deref(), || {
            received.blocking_recv()
        })
    });
    let produced = async {
        // Dropped at the end of this block, whatever the outcome: the
        // splitter then sees the end of the stream.
        let chunks = chunks;
        let inflated =
            composefs_oci::layer::decompress_async(&mut counted, &media).map_err(|e| {
                StoreError::Unparsable {
                    what: format!("{what}: cannot be decompressed"),
                    source: e.into(),
                }
            })?;
        // The diff_id covers every byte, including what follows the tar's
        // end marker: the splitter keeps reading to the end, and so does
        // this loop.
        let mut hashing = DigestReader::new(inflated);
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_SIZE);
            while chunk.len() < CHUNK_SIZE {
                if hashing.read_buf(&mut chunk).await.map_err(io_err)? == 0 {
                    break;
                }
            }
            let last = chunk.len() < CHUNK_SIZE;
            if !chunk.is_empty() && chunks.send(chunk).await.is_err() {
                // The splitter stopped: its error says why.
                break;
            }
            if last {
                break;
            }
        }
        Ok::<_, StoreError>(hashing.finish().0)
    }
    .await;
    let split = splitter.await.map_err(|e| StoreError::Task {
        step: "splitting a layer into the store",
        source: e,
    })?;
    // Read the compressed blob to its end so its size/digest check runs even
    // when the decompressor stopped early (bytes after the last gzip member)
    // or failed: a corrupt blob is reported as the digest mismatch it is,
    // not as whatever the decompressor or tar parser tripped over first.
    let drained = tokio::io::copy(&mut counted, &mut tokio::io::sink()).await;
    // The blob's own error first, then the inflater's, then the splitter's.
    let (verity, actual_diff_id) = match (drained, produced, split) {
        (Err(blob_error), _, _) => return Err(io_err(blob_error)),
        (Ok(_), Err(e), _) => return Err(e),
        (Ok(_), Ok(_), Err(e)) => return Err(split_error(store_path, what, e)),
        (Ok(_), Ok(diff), Ok(verity)) => (verity, diff),
    };
    if actual_diff_id != diff_id {
        return Err(StoreError::DiffIdMismatch {
            what: what.to_string(),
            expected: diff_id.to_string(),
            actual: actual_diff_id,
        });
    }
    let check_repo = repo.clone();
    let check_what = what.to_string();
    let check_path_buf = store_path.to_path_buf();
    let verity = tokio::task::spawn_blocking(move || {
        check_layer_paths(&check_repo, &check_path_buf, &verity, &check_what).map(|()| verity)
    })
    .await
    .map_err(|e| StoreError::Task {
        step: "checking the paths of a layer",
        source: e,
    })??;
    Ok(verity)
}

/// Makes verified layers visible under their diff_ids: one sync of the store
/// for all of them (each layer's objects and splitstream must be on disk
/// before anything names them), then one stream link each. `layers` holds
/// (diff_id, splitstream, what) as [`import_layer`] returned them.
pub(crate) async fn register_layers(
    repo: &Arc<Repo>,
    store_path: &Path,
    layers: &[(String, Sha256HashValue, String)],
) -> Result<(), StoreError> {
    if layers.is_empty() {
        return Ok(());
    }
    repo.sync_async()
        .await
        .map_err(|e| error::repo_write_error(store_path, "syncing the imported layers", e))?;
    for (diff_id, verity, what) in layers {
        let parsed = diff_id.parse().map_err(|e| StoreError::Unparsable {
            what: format!("{what}: invalid diff_id {diff_id}"),
            source: Box::new(e),
        })?;
        // register_stream syncs again: with the data synced just above there
        // is nothing left to write back, so that costs a syscall, not I/O.
        repo.register_stream(verity, &composefs_oci::layer_content_id(&parsed), None)
            .await
            .map_err(|e| error::repo_write_error(store_path, &format!("registering {what}"), e))?;
        tracing::debug!(%what, "layer registered");
    }
    Ok(())
}

/// A splitter error as the user sees it: a full or read-only store is a
/// write error (the errno stays the source), a bad tar names the layer.
fn split_error(store_path: &Path, what: &str, e: split::SplitError) -> StoreError {
    match e {
        split::SplitError::Write { source, .. } => error::write_error(store_path, what, source),
        split::SplitError::Repo { step, source } => {
            error::repo_write_error(store_path, &format!("{what}: {step}"), source)
        }
        tar @ split::SplitError::Tar(_) => StoreError::Unparsable {
            what: format!("{what}: not a valid tar stream"),
            source: tar.into(),
        },
    }
}

/// Walks the raw tar headers kept in the layer's splitstream and refuses any
/// entry (or hardlink target) that is absolute or has a `..` component, and
/// any entry beyond what an image may carry ([`crate::limits`]: name length,
/// nesting depth, symlink target length).
///
/// This reads only the splitstream's inline data (headers and small files),
/// not the external objects, so it costs little next to the import. It has
/// to parse the *raw* header: composefs-oci's entry reader normalises an
/// absolute path to a relative one, which would hide the offence.
fn check_layer_paths(
    repo: &Repo,
    store_path: &Path,
    verity: &Sha256HashValue,
    what: &str,
) -> Result<(), StoreError> {
    use tar_core::parse::{ParseEvent, Parser};
    let malformed = |source: BoxError| StoreError::Unparsable {
        what: format!("{what}: not a valid tar archive"),
        source,
    };
    let mut reader = repo
        .open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))
        .map_err(|e| StoreError::Repo {
            step: format!("reopening {what}"),
            path: store_path.to_path_buf(),
            source: e,
        })?;
    let mut block = [0u8; 512];
    loop {
        let mut parser = Parser::with_defaults();
        let mut header: Vec<u8> = Vec::new();
        let size = loop {
            if !reader
                .read_inline_exact(&mut block)
                .map_err(|e| malformed(e.into()))?
            {
                return Ok(());
            }
            header.extend_from_slice(&block);
            let outcome = loop {
                match parser.parse(&header).map_err(|e| malformed(Box::new(e)))? {
                    ParseEvent::NeedData { .. } => break None,
                    ParseEvent::GlobalExtensions { consumed, .. } => {
                        header.drain(..consumed);
                        continue;
                    }
                    ParseEvent::End { .. } => return Ok(()),
                    ParseEvent::Entry { entry, .. } => {
                        let refuse = |why: String| StoreError::Malformed {
                            what: what.to_string(),
                            why,
                        };
                        check_path(&entry.path, "path").map_err(refuse)?;
                        limits::check_path(&entry.path, "tar entry").map_err(refuse)?;
                        match (&entry.entry_type, &entry.link_target) {
                            (tar_core::EntryType::Link, Some(t)) => {
                                check_path(t, "hardlink target").map_err(refuse)?;
                            }
                            (tar_core::EntryType::Symlink, Some(t)) => {
                                limits::check_symlink_target(&entry.path, t).map_err(refuse)?;
                            }
                            _ => {}
                        }
                        for (name, value) in &entry.xattrs {
                            limits::check_xattr(&entry.path, name, value).map_err(refuse)?;
                        }
                        break Some(entry.size);
                    }
                    ParseEvent::SparseEntry { .. } => {
                        return Err(StoreError::Malformed {
                            what: format!("{what}: not a valid tar archive"),
                            why: "sparse tar entries are not supported".into(),
                        });
                    }
                }
            };
            if let Some(size) = outcome {
                break size;
            }
        };
        let stored = size.next_multiple_of(512);
        reader
            .read_exact(size as usize, stored as usize)
            .map_err(|e| malformed(e.into()))?;
    }
}

/// A tar member name must stay inside the root: not absolute, no `..`.
/// The root itself (`/`, `./`, `.`) is fine: umoci and others write it.
fn check_path(raw: &[u8], kind: &str) -> Result<(), String> {
    let shown = limits::shown(raw);
    if raw.split(|b| *b == b'/').all(|c| c.is_empty() || c == b".") {
        return Ok(());
    }
    if raw.first() == Some(&b'/') {
        return Err(format!(
            "tar entry {kind} '{shown}' is absolute; refusing the layer"
        ));
    }
    if raw.split(|b| *b == b'/').any(|c| c == b"..") {
        return Err(format!(
            "tar entry {kind} '{shown}' escapes the root; refusing the layer"
        ));
    }
    Ok(())
}

/// Counts compressed bytes for progress reporting, and remembers the first
/// error of the blob stream so that reading on after a failure repeats it
/// (a stream polled again after an error may report a misleading second one,
/// e.g. a digest mismatch over the bytes that did arrive).
struct Progress {
    inner: BlobReader,
    read: u64,
    on_bytes: ByteCallback,
    failed: Option<Arc<std::io::Error>>,
}

/// The first error of a blob stream, handed out again on every later read
/// (an `io::Error` cannot be cloned): the same text and the same sources.
#[derive(Debug)]
struct Repeated(Arc<std::io::Error>);

impl std::fmt::Display for Repeated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Repeated {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Repeated {
    fn error(first: &Arc<std::io::Error>) -> std::io::Error {
        std::io::Error::new(first.kind(), Repeated(first.clone()))
    }
}

impl AsyncRead for Progress {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(first) = &this.failed {
            return std::task::Poll::Ready(Err(Repeated::error(first)));
        }
        let before = buf.filled().len();
        let mut r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Err(e)) = r {
            let first = Arc::new(e);
            r = std::task::Poll::Ready(Err(Repeated::error(&first)));
            this.failed = Some(first);
        }
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            (this.on_bytes)(this.read);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_that_escape_are_refused() {
        assert!(check_path(b"usr/bin/sh", "path").is_ok());
        assert!(check_path(b"./etc/passwd", "path").is_ok());
        assert!(check_path(b"a/..b/c", "path").is_ok());
        assert!(
            check_path(b"../etc/shadow", "path")
                .unwrap_err()
                .contains("escapes")
        );
        assert!(
            check_path(b"usr/../../x", "path")
                .unwrap_err()
                .contains("escapes")
        );
        assert!(
            check_path(b"/etc/passwd", "path")
                .unwrap_err()
                .contains("absolute")
        );
    }
}
