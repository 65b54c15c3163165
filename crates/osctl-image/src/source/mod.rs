//! Where an image's bytes come from: a registry, an OCI layout directory, an
//! OCI archive or containers' local storage.
//!
//! Model: one [`Source`] per pull, an enum rather than a trait object, because
//! there are few transports, fixed, and each method is async. Every source
//! hands out the *raw* manifest bytes (so their digest can be checked and
//! kept) and blob readers that verify size and digest as they are read; the
//! consumer never sees a blob it has not verified by the time it reaches EOF.

mod local;
mod registry;
mod storage;

use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageManifest};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::manifest::Platform;
use crate::verify::sha256_digest;
use crate::{FetchError, ImageRef};

pub use registry::RegistrySource;

/// A boxed reader of one blob, verified at end-of-file.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// Options that shape how a source is reached; all optional.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// `--authfile`: the only auth file to consult.
    pub authfile: Option<PathBuf>,
    /// `--platform`: which image of an index to take (default: the host's).
    pub platform: Option<Platform>,
    /// `--tls-verify`: `Some(false)` marks the registry insecure.
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: extra CA certificates (`*.crt`).
    pub cert_dir: Option<PathBuf>,
}

/// The image manifest a reference resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    raw: Vec<u8>,
    digest: String,
    manifest: ImageManifest,
    index_digest: Option<String>,
}

impl ResolvedManifest {
    /// The manifest exactly as served (what its digest covers).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    /// `sha256:<hex>` of [`Self::raw`].
    pub fn digest(&self) -> &str {
        &self.digest
    }
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }
    /// The digest of the index the manifest was chosen from, if any.
    pub fn index_digest(&self) -> Option<&str> {
        self.index_digest.as_deref()
    }
}

/// An opened transport for one image reference.
pub enum Source {
    Registry(Box<RegistrySource>),
    Local(local::LocalSource),
    ContainersStorage(storage::StorageSource),
}

impl Source {
    /// Opens the transport `imgref` names. For a registry this decides TLS and
    /// credentials but sends no request yet.
    pub async fn open(imgref: &ImageRef, opts: &FetchOptions) -> Result<Self, FetchError> {
        match imgref {
            ImageRef::Registry(r) => Ok(Source::Registry(Box::new(
                RegistrySource::open(r.clone(), opts).await?,
            ))),
            ImageRef::OciLayout { path, tag } => Ok(Source::Local(local::LocalSource::open_dir(
                path,
                tag.clone(),
                opts,
            )?)),
            ImageRef::OciArchive { path, tag } => Ok(Source::Local(
                local::LocalSource::open_archive(path, tag.clone(), opts).await?,
            )),
            ImageRef::ContainersStorage { store, image } => Ok(Source::ContainersStorage(
                storage::StorageSource::open(store.as_ref(), image, imgref.to_string()).await?,
            )),
        }
    }

    /// Fetches the manifest, resolving an index to the wanted platform.
    pub async fn resolve(&self) -> Result<ResolvedManifest, FetchError> {
        match self {
            Source::Registry(r) => r.resolve().await,
            Source::Local(l) => l.resolve().await,
            Source::ContainersStorage(s) => s.resolve().await,
        }
    }

    /// Opens a blob for streaming; the reader fails at EOF unless the blob
    /// has the descriptor's size and digest.
    pub async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        match self {
            Source::Registry(r) => r.open_blob(desc).await,
            Source::Local(l) => l.open_blob(desc),
            Source::ContainersStorage(s) => s.open_blob(desc),
        }
    }

    /// Reads a small blob (a config) whole, verified. `limit` guards memory.
    pub async fn read_small_blob(
        &self,
        desc: &Descriptor,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, FetchError> {
        if desc.size() > limit {
            return Err(FetchError::Malformed {
                what: what.to_string(),
                why: format!(
                    "its declared size {} is over the {} limit",
                    desc.size(),
                    crate::limits::human_size(limit)
                ),
                source: None,
            });
        }
        let mut reader = self.open_blob(desc).await?;
        let mut buf = Vec::with_capacity(desc.size() as usize);
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|e| FetchError::Blob {
                what: what.to_string(),
                why: String::new(),
                source: Some(Box::new(e)),
            })?;
        // Registry readers only count; check the digest of a small blob here.
        let actual = sha256_digest(&buf);
        if actual != desc.digest().to_string() {
            return Err(FetchError::Blob {
                what: what.to_string(),
                why: format!("digest mismatch: content hashes to {actual}"),
                source: None,
            });
        }
        Ok(buf)
    }

    /// Where the image comes from, for messages.
    pub fn location(&self) -> String {
        match self {
            Source::Registry(r) => format!("registry {}", r.registry()),
            Source::Local(l) => l.location(),
            Source::ContainersStorage(s) => s.location(),
        }
    }
}
