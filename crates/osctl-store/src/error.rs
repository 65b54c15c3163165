//! Why a store operation failed.
//!
//! The rule for every error in the workspace (docs/architecture.md,
//! "Errors"): an error's own text is one line naming what failed and on
//! what (a path, an image reference, a layer digest); its cause (an
//! `io::Error`, a composefs-rs error, a parse error) is its `source()`,
//! never repeated in that text. The CLI prints the whole chain on one line
//! (`error: pulling R: writing to the store at P: No space left on device
//! (os error 28)`), and a program walks it to tell, say, `ENOSPC` from
//! `EROFS`.
//!
//! composefs-rs reports failures as anyhow chains; an `ENOSPC` deep inside a
//! layer import used to surface as "not a valid tar stream: No space left on
//! device". Any chain that carries one of [`WRITE_ERRNOS`] becomes
//! [`StoreError::Write`], which says where it failed and keeps the
//! `io::Error` as its source so callers can match on the errno. Other
//! composefs-rs failures become [`StoreError::Repo`], which keeps the
//! anyhow chain itself as its source.

use std::path::{Path, PathBuf};

use rustix::io::Errno;

use osctl_image::FetchError;

/// A cause of any type, for errors whose causes differ by call site (a
/// composefs-rs anyhow chain, a tar parser error, a JSON error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Image(#[from] FetchError),
    /// Reading the blob of `what` (a layer) failed while it was imported
    /// (the source is the reader's `io::Error`, or the chain around it).
    #[error("{what}")]
    Fetch {
        what: String,
        #[source]
        source: BoxError,
    },
    /// `what` (part of an image) is not something osctl stores; `why` is
    /// the reason in words (there is no underlying error).
    #[error("{what}: {why}")]
    Malformed { what: String, why: String },
    /// `what` (part of an image, with what is wrong: "… is not valid
    /// JSON") does not parse; the parser's error is the source.
    #[error("{what}")]
    Unparsable {
        what: String,
        #[source]
        source: BoxError,
    },
    /// `path` of the image `reference` cannot be read or exported.
    #[error("{} in {reference}", path.display())]
    InImage {
        path: PathBuf,
        reference: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}: diff_id mismatch: config says {expected}, content hashes to {actual}")]
    DiffIdMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("no image {0} in the store (see osctl image list)")]
    NotInStore(String),
    /// A pull that had to fetch one exact manifest found another: nothing
    /// was written.
    #[error("{reference} now resolves to {got}, not to {want}; nothing was pulled")]
    NotTheExpectedImage {
        reference: String,
        want: String,
        got: String,
    },
    #[error("no osctl store at {}", .0.display())]
    NoStore(PathBuf),
    /// `step` failed on `path`.
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Whether the filesystem at `path` supports fs-verity cannot be told,
    /// so no store is created there.
    #[error(
        "cannot create a store at {} (only a filesystem without fs-verity makes an insecure \
         store): probing fs-verity support failed",
        path.display()
    )]
    VerityProbe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store's filesystem refused a write (full, read-only, I/O error);
    /// `source` carries the errno.
    #[error("{}writing to the store at {}", context_prefix(.what), .path.display())]
    Write {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image in the store is incomplete or damaged (see `osctl fsck`);
    /// the source says what is missing or broken.
    #[error("image {image} is damaged (see `osctl fsck`; `osctl image pull {image}` repairs it)")]
    Damaged {
        image: String,
        #[source]
        damage: Damage,
    },
    /// composefs-rs failed at `step` on the store at `path`; its anyhow
    /// chain is the source.
    #[error("store {}: {step}", path.display())]
    Repo {
        step: String,
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    /// Mounting the image `image` at `target` failed.
    #[error("mounting {image} at {}", target.display())]
    Mount {
        image: String,
        target: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    /// The store's filesystem cannot back an EROFS file mount (tmpfs).
    #[error(
        "mounting {image}: the filesystem holding the store ({}) cannot back an EROFS \
         file mount; keep the store on ext4, xfs or btrfs to mount its images",
        store.display()
    )]
    MountUnsupported {
        image: String,
        store: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    /// A task the store ran `step` on did not finish (it panicked or was
    /// cancelled).
    #[error("{step}: the task doing it did not finish")]
    Task {
        step: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Encoding the record of `reference` as JSON failed.
    #[error("encoding the record of {reference}")]
    Encode {
        reference: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("'{}' is not a deployment id (64 lowercase hex digits)", .0.escape_debug())]
    BadRootName(String),
}

/// What is wrong with a damaged image ([`StoreError::Damaged`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    #[error("its EROFS image {id} cannot be read")]
    ImageUnreadable {
        id: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("{layer} is missing from the store")]
    LayerMissing { layer: String },
    #[error("{layer} cannot be read")]
    LayerUnreadable {
        layer: String,
        #[source]
        source: BoxError,
    },
    /// `first` is the first bad object found, `more` how many others.
    #[error("{layer}: {first}{}", and_more(*.more))]
    BadObjects {
        layer: String,
        first: String,
        more: usize,
    },
}

fn and_more(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    }
}

/// `"what: "`, or nothing when there is no `what`.
fn context_prefix(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

/// `e` and its sources on one line, joined by ": " (as the CLI prints an
/// error): for errors that become log lines or recorded text (a problem
/// line in `status`, a marker's problem). osctl-deploy uses it too.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Errnos that mean the store's filesystem refused a write. Read-side and
/// network failures (`ECONNRESET`, a digest mismatch, `EACCES` on a source
/// file) are not among them and keep their own messages.
const WRITE_ERRNOS: [Errno; 5] = [
    Errno::NOSPC,
    Errno::DQUOT,
    Errno::ROFS,
    Errno::IO,
    Errno::FBIG,
];

/// The first write-side errno in `e`'s chain, as an `io::Error`.
pub(crate) fn write_errno(e: &anyhow::Error) -> Option<std::io::Error> {
    e.chain().find_map(|cause| {
        let errno = if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            Errno::from_io_error(io)?
        } else {
            *cause.downcast_ref::<Errno>()?
        };
        WRITE_ERRNOS
            .contains(&errno)
            .then(|| std::io::Error::from(errno))
    })
}

/// A failed write to the store at `path`, while doing `what`.
pub(crate) fn write_error(path: &Path, what: &str, source: std::io::Error) -> StoreError {
    StoreError::Write {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// For composefs-rs calls that only write: a write-side errno becomes
/// [`StoreError::Write`], anything else [`StoreError::Repo`] (keeping the
/// chain).
pub(crate) fn repo_write_error(path: &Path, what: &str, e: anyhow::Error) -> StoreError {
    match write_errno(&e) {
        Some(io) => write_error(path, what, io),
        None => StoreError::Repo {
            step: what.to_string(),
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_write_errnos_in_chains() {
        let cases: [(anyhow::Error, Option<i32>); 4] = [
            (
                anyhow::Error::from(Errno::NOSPC).context("writing object"),
                Some(libc_errno(Errno::NOSPC)),
            ),
            (
                anyhow::Error::from(std::io::Error::from(Errno::ROFS)).context("x"),
                Some(libc_errno(Errno::ROFS)),
            ),
            (
                anyhow::Error::from(Errno::CONNRESET).context("reading blob"),
                None,
            ),
            (anyhow::anyhow!("Repository is not writable"), None),
        ];
        for (e, want) in cases {
            assert_eq!(
                write_errno(&e).and_then(|io| io.raw_os_error()),
                want,
                "{e:#}"
            );
        }
    }

    /// The errno a caller finds by walking `source()`, whichever variant
    /// the conversion picked: `Write` for the store's own write errnos,
    /// `Repo` (with composefs-rs's chain) for anything else.
    #[test]
    fn conversions_keep_the_errno_as_a_source() {
        let cases = [
            (Errno::NOSPC, true),
            (Errno::ROFS, true),
            (Errno::CONNRESET, false),
            (Errno::ACCESS, false),
        ];
        for (errno, is_write) in cases {
            let cause = anyhow::Error::from(std::io::Error::from(errno)).context("writing object");
            let err = repo_write_error(Path::new("/s/composefs"), "importing layer 1", cause);
            assert_eq!(matches!(err, StoreError::Write { .. }), is_write, "{err:?}");
            let mut found = None;
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
            while let Some(c) = cur {
                if let Some(n) = c
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                {
                    found = Some(n);
                    break;
                }
                cur = c.source();
            }
            assert_eq!(found, Some(libc_errno(errno)), "{err:?}");
            let text = std::io::Error::from(errno).to_string();
            assert!(!err.to_string().contains(&text), "{err}");
            let line = one_line(&err);
            assert!(line.ends_with(&text) && !line.contains('\n'), "{line}");
        }
    }

    fn libc_errno(e: Errno) -> i32 {
        e.raw_os_error()
    }
}
