//! Image references, transports and verified fetching: the *reference →
//! fetch* part of osctl's data path.
//!
//! ```text
//!   "registry/repo:tag"          ImageRef::parse      (reference.rs)
//!   "oci:/dir:tag"         ──▶   Source::open         (source/: registry, layout, archive,
//!   "oci-archive:/f.tar"         Source::resolve      → raw manifest bytes + digest
//!   "containers-storage:…"                             containers-storage via skopeo)
//!                                Source::open_blob    → AsyncRead verified at EOF
//! ```
//!
//! This crate knows nothing about where bytes are stored; `osctl-store`
//! consumes the readers it hands out. Credentials (auth.rs) and TLS policy
//! (registries.rs) follow the containers tools' files so that a host already
//! set up for podman or bootc needs no new configuration.
#![forbid(unsafe_code)]

pub mod auth;
mod error;
pub mod limits;
pub mod manifest;
pub mod reference;
mod reference_grammar;
pub mod registries;
pub mod signature;
pub mod source;
pub mod verify;

pub use error::{BoxError, FetchError};
pub use manifest::{Compression, Platform};
pub use reference::{ImageRef, StorageSpec, Transport};
pub use signature::{Policy, SignatureCheck, SignatureVerdict};
pub use source::{BlobReader, FetchOptions, ResolvedManifest, Source};

/// An error and its causes on one line, without repeating identical texts:
/// for log lines only (an error keeps its causes as `source()`).
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
