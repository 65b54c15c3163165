//! Image references, transports and verified fetching: the *reference →
//! fetch* part of osctl's data path.
//!
//! ```text
//!   "registry/repo:tag"          ImageRef::parse      (reference.rs)
//!   "oci:/dir:tag"         ──▶   Source::open         (source/: registry, layout, archive)
//!   "oci-archive:/f.tar"         Source::resolve      → raw manifest bytes + digest
//!                                Source::open_blob    → AsyncRead verified at EOF
//! ```
//!
//! This crate knows nothing about where bytes are stored; `osctl-store`
//! consumes the readers it hands out. Credentials (auth.rs) and TLS policy
//! (registries.rs) follow the containers tools' files so that a host already
//! set up for podman or bootc needs no new configuration.
#![forbid(unsafe_code)]

pub mod auth;
pub mod limits;
pub mod manifest;
pub mod reference;
pub mod registries;
pub mod source;
pub mod verify;

use std::path::PathBuf;

pub use manifest::{Compression, Platform};
pub use reference::ImageRef;
pub use source::{BlobReader, FetchOptions, ResolvedManifest, Source};

/// Why fetching an image failed. Every variant's message is one line that
/// names the thing at fault (the reference, registry, file or blob).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid image reference '{reference}': {why}")]
    BadReference { reference: String, why: String },
    #[error("invalid platform '{0}': expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    BadPlatform(String),
    #[error("auth file {}: {why}", path.display())]
    AuthFile { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    #[error("{what} is malformed: {why}")]
    Malformed { what: String, why: String },
    #[error("{what} has unsupported media type {media_type}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what} has no image for platform {platform} (available: {available})")]
    NoPlatform {
        what: String,
        platform: String,
        available: String,
    },
    #[error("image not found: {reference} ({detail})")]
    NotFound { reference: String, detail: String },
    #[error("registry {registry} refused {what}: {status} ({auth})")]
    Unauthorized {
        registry: String,
        what: String,
        status: String,
        auth: String,
    },
    #[error("TLS failure talking to registry {registry}: {detail}")]
    Tls { registry: String, detail: String },
    #[error(
        "registry {registry} speaks plain HTTP, not HTTPS; if that is intended, mark it \
         insecure in registries.conf ([[registry]] location = \"{registry}\", insecure = true) \
         or pass --tls-verify=false"
    )]
    PlainHttp { registry: String },
    #[error(
        "cannot verify registry {registry}: no CA certificates are available ({store} is missing \
         or empty); install ca-certificates, or trust the registry's CA with --cert-dir DIR \
         or /etc/containers/certs.d/{registry}/ca.crt"
    )]
    NoCaCertificates { registry: String, store: String },
    #[error("cannot reach registry {registry}: {detail}")]
    Connect { registry: String, detail: String },
    #[error("registry {registry} failed on {what}: {detail}")]
    Registry {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{what}: {detail}")]
    Blob { what: String, detail: String },
    #[error("{what} is larger than the {} limit{note}", limits::human_size(*.limit))]
    TooLarge {
        what: String,
        limit: u64,
        /// Anything to add after the limit (starts with a separator).
        note: String,
    },
    /// A local image source (layout directory, archive file) that cannot be
    /// used, with the file system's reason when there is one.
    #[error("{what}: {why}")]
    Local {
        what: String,
        why: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("{0}")]
    Other(String),
}

/// An error and its causes on one line, without repeating identical texts.
///
/// `std::io::Error::source` skips the error it wraps, so an I/O error's
/// inner error is visited explicitly.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    parts.join(": ")
}
