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
use crate::signature::{self, Policy, SignatureStore, SignatureVerdict};
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
    /// The signature policy file; `None` means the machine's
    /// ([`Policy::load`]). For library callers and tests: the CLI has no
    /// flag for it, a machine's policy is changed in its file.
    pub signature_policy: Option<PathBuf>,
}

/// A manifest as a transport fetched it, before the signature policy has
/// looked at it. Only [`Source::resolve`] turns it into a
/// [`ResolvedManifest`], so nothing outside this crate can use an image
/// the policy has not accepted.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) raw: Vec<u8>,
    pub(crate) digest: String,
    pub(crate) manifest: ImageManifest,
    pub(crate) index_digest: Option<String>,
}

impl Fetched {
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }
    pub(crate) fn index_digest(&self) -> Option<&str> {
        self.index_digest.as_deref()
    }
}

/// The image manifest a reference resolved to, accepted by the signature
/// policy.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    fetched: Fetched,
    signature: SignatureVerdict,
}

impl ResolvedManifest {
    /// The manifest exactly as served (what its digest covers).
    pub fn raw(&self) -> &[u8] {
        &self.fetched.raw
    }
    /// `sha256:<hex>` of [`Self::raw`].
    pub fn digest(&self) -> &str {
        &self.fetched.digest
    }
    pub fn manifest(&self) -> &ImageManifest {
        &self.fetched.manifest
    }
    /// The digest of the index the manifest was chosen from, if any.
    pub fn index_digest(&self) -> Option<&str> {
        self.fetched.index_digest.as_deref()
    }
    /// What the signature policy decided.
    pub fn signature(&self) -> &SignatureVerdict {
        &self.signature
    }
}

/// An opened transport for one image reference, with the signature policy
/// that decides whether its image may be used.
pub struct Source {
    kind: Kind,
    imgref: ImageRef,
    policy: Policy,
}

enum Kind {
    Registry(Box<RegistrySource>),
    Local(local::LocalSource),
    ContainersStorage(storage::StorageSource),
}

impl Source {
    /// Reads the signature policy, then opens the transport `imgref` names.
    /// For a registry this decides TLS and credentials but sends no request
    /// yet. A policy that cannot be read fails here, before any network.
    pub async fn open(imgref: &ImageRef, opts: &FetchOptions) -> Result<Self, FetchError> {
        let policy = match &opts.signature_policy {
            Some(path) => Policy::load_from(path)?,
            None => Policy::load()?,
        };
        let kind = match imgref {
            ImageRef::Registry(r) => {
                Kind::Registry(Box::new(RegistrySource::open(r.clone(), opts).await?))
            }
            ImageRef::OciLayout { path, tag } => {
                Kind::Local(local::LocalSource::open_dir(path, tag.clone(), opts)?)
            }
            ImageRef::OciArchive { path, tag } => {
                Kind::Local(local::LocalSource::open_archive(path, tag.clone(), opts).await?)
            }
            ImageRef::ContainersStorage { store, image } => Kind::ContainersStorage(
                storage::StorageSource::open(store.as_ref(), image, imgref.to_string()).await?,
            ),
        };
        Ok(Source {
            kind,
            imgref: imgref.clone(),
            policy,
        })
    }

    /// Fetches the manifest, resolving an index to the wanted platform, and
    /// applies the signature policy to it: an image the policy refuses is a
    /// [`FetchError::SignatureRefused`], returned before any blob is read.
    pub async fn resolve(&self) -> Result<ResolvedManifest, FetchError> {
        let (fetched, signatures) = match &self.kind {
            Kind::Registry(r) => (r.resolve().await?, SignatureStore::Registry(r)),
            Kind::Local(l) => (
                l.resolve().await?,
                SignatureStore::None {
                    what: l.kind_name(),
                },
            ),
            Kind::ContainersStorage(s) => (
                s.resolve().await?,
                SignatureStore::None {
                    what: "containers-storage (local images)",
                },
            ),
        };
        let signature = signature::verify(&self.policy, &self.imgref, &fetched, signatures).await?;
        tracing::debug!(image = %self.imgref, scope = %signature.scope, result = ?signature.check, "signature policy");
        Ok(ResolvedManifest { fetched, signature })
    }

    /// Opens a blob for streaming; the reader fails at EOF unless the blob
    /// has the descriptor's size and digest.
    pub async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        match &self.kind {
            Kind::Registry(r) => r.open_blob(desc).await,
            Kind::Local(l) => l.open_blob(desc),
            Kind::ContainersStorage(s) => s.open_blob(desc),
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
        match &self.kind {
            Kind::Registry(r) => format!("registry {}", r.registry()),
            Kind::Local(l) => l.location(),
            Kind::ContainersStorage(s) => s.location(),
        }
    }
}
