//! Why fetching an image failed.
//!
//! The rule for every error in the workspace (docs/architecture.md,
//! "Errors"): an error's own text is one line naming what failed and on
//! what (the reference, registry, file or blob); its cause (an `io::Error`,
//! a `reqwest` error, a JSON or TOML parse error) is its `source()`, never
//! repeated in that text. Fields named `why` or `detail` are reasons in
//! words that have no underlying error (the registry's own message, "the
//! file does not exist"); where a variant has both, `why` may be empty and
//! the source says it all. The CLI prints the whole chain on one line.

use std::path::{Path, PathBuf};

use crate::limits;

/// A cause of any type, for variants whose causes differ by call site.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why fetching an image failed. Every variant's message is one line that
/// names the thing at fault (the reference, registry, file or blob).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("invalid image reference '{reference}': {why}")]
    BadReference { reference: String, why: String },
    #[error("unknown transport '{transport}' (accepted: {accepted})")]
    BadTransport { transport: String, accepted: String },
    #[error(
        "image reference '{reference}' names transport '{named}', but --transport says '{given}'"
    )]
    TransportConflict {
        reference: String,
        named: String,
        given: &'static str,
    },
    #[error("invalid platform '{0}': expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    BadPlatform(String),
    #[error("auth file {}{}", path.display(), colon(why))]
    AuthFile {
        path: PathBuf,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A registries.conf file, CA file or CA directory that cannot be used.
    #[error("{}{}", path.display(), colon(why))]
    Config {
        path: PathBuf,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{what} is malformed{}", colon(why))]
    Malformed {
        what: String,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{what} has unsupported media type {media_type}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what} has no image for platform {platform} (available: {available})")]
    NoPlatform {
        what: String,
        platform: String,
        available: String,
    },
    /// `detail` is the registry's or the layout's answer, in words.
    #[error("image not found: {reference} ({detail})")]
    NotFound { reference: String, detail: String },
    #[error("registry {registry} refused {what}: {status} ({auth})")]
    Unauthorized {
        registry: String,
        what: String,
        status: String,
        auth: String,
    },
    /// `why` says what is wrong in words (and what to do); the source is
    /// the failed request, when there is one.
    #[error("TLS failure talking to registry {registry}: {why}")]
    Tls {
        registry: String,
        why: String,
        #[source]
        source: Option<reqwest::Error>,
    },
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
    /// No connection could be made (after `attempts` tries).
    #[error("cannot reach registry {registry}{}", gave_up(*.attempts))]
    Connect {
        registry: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered `what` with an error; `detail` is its status
    /// and message, in words.
    #[error("registry {registry} failed on {what}: {detail}")]
    Registry {
        registry: String,
        what: String,
        detail: String,
    },
    /// A request for `what` (or its body) failed after `attempts` tries.
    #[error("registry {registry} failed on {what}: transfer failed{}", gave_up(*.attempts))]
    Transfer {
        registry: String,
        what: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// A blob that cannot be read, or is not what it should be.
    #[error("{what}{}", colon(why))]
    Blob {
        what: String,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{what} is larger than the {} limit{note}", limits::human_size(*.limit))]
    TooLarge {
        what: String,
        limit: u64,
        /// Anything to add after the limit (starts with a separator).
        note: String,
    },
    /// A local image source (layout directory, archive file) that cannot be
    /// used, with the underlying error when there is one.
    #[error("{what}: {why}")]
    Local {
        what: String,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The signature policy file cannot be used (missing, unreadable,
    /// malformed), or a key it names cannot: every pull is refused.
    #[error("signature policy {}: {why}", path.display())]
    Policy {
        path: PathBuf,
        why: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The policy refuses this image: it is rejected outright, or the
    /// signatures it requires are missing or not acceptable. `digest` is
    /// the manifest that was refused (so `upgrade --check` can report it).
    #[error("image {image}: signature refused: {why}")]
    SignatureRefused {
        image: String,
        digest: String,
        why: String,
    },
    /// Setting up `what` (the HTTP client, TLS) failed.
    #[error("setting up {what}")]
    Setup {
        what: String,
        #[source]
        source: BoxError,
    },
    /// A blocking task doing `what` did not finish (it panicked or was
    /// cancelled).
    #[error("{what}: the task doing it did not finish")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl FetchError {
    /// A file that cannot be read: [`FetchError::Config`] with its cause.
    pub(crate) fn config_io(path: &Path, why: &str, source: std::io::Error) -> Self {
        FetchError::Config {
            path: path.to_path_buf(),
            why: why.to_string(),
            source: Some(Box::new(source)),
        }
    }
}

/// `": why"`, or nothing when `why` is empty (the source says it all).
fn colon(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

/// `" (gave up after N attempts)"` when there was more than one.
pub(crate) fn gave_up(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}
