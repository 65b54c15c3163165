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
    #[error("{0}")]
    Other(String),
}
