//! Why a deployment operation failed.
//!
//! The rule for every error in the workspace (docs/architecture.md,
//! "Errors"): an error's own text is one line naming what failed and on
//! what; its cause (an `io::Error`, a parse error) is its `source()`, never
//! repeated in that text. The CLI prints the whole chain on one line
//! (`error: reading /x/origin.json: Permission denied`), and a program can
//! walk it to tell, say, `ENOSPC` from `EROFS`.

use std::path::PathBuf;

use crate::EtcMergeError;
use crate::boot::BootError;
use crate::layout::DeploymentId;
use crate::layout::cmdline::CmdlineError;

/// Why a deployment operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    #[error(transparent)]
    Store(#[from] osctl_store::StoreError),
    #[error(transparent)]
    Image(#[from] osctl_image::FetchError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Etc(#[from] EtcMergeError),
    /// `step` failed on `path`.
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file osctl wrote does not parse.
    #[error("{}: unreadable", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `/etc/osctl/config.toml` is wrong (`why` is the parser's one line,
    /// position included).
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    #[error(
        "cannot read the kernel command line {}; osctl needs it to know which deployment is booted (in a chroot or container, mount /proc)",
        path.display()
    )]
    Cmdline {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel command line {} does not say which deployment is booted", path.display())]
    BadCmdline {
        path: PathBuf,
        #[source]
        source: CmdlineError,
    },
    /// A marker in `state/` does not parse (`problem` names it).
    #[error("{problem}; not changing deployments until `osctl fsck --repair` removes it")]
    UnreadableMarker { problem: String },
    /// The booted deployment's origin or record cannot be read.
    #[error(
        "the booted deployment {} cannot be read ({why}); refusing {what} until that file is repaired (osctl would take the machine for one with nothing booted)",
        id.short()
    )]
    BootedUnreadable {
        id: DeploymentId,
        why: String,
        what: &'static str,
    },
    /// A deployment of the image being staged exists but cannot be read.
    #[error(
        "deployment {} of {image} exists but cannot be read ({why}); not staging over it",
        id.short()
    )]
    BrokenDeployment {
        id: DeploymentId,
        image: String,
        why: String,
    },
    #[error("bad image id {0}: expected 64 lowercase hex digits")]
    BadImageId(String),
    #[error("refusing to remove the booted deployment {}", .0.short())]
    RemoveBooted(DeploymentId),
    #[error(
        "refusing to remove deployment {}: the default boot entry names it and nothing is booted to point it at",
        .0.short()
    )]
    RemoveDefault(DeploymentId),
    #[error("no rollback deployment: nothing but the booted deployment exists")]
    NoRollback,
    /// `what` needs a booted deployment and the command line names none.
    #[error("{0}")]
    NotBooted(&'static str),
    #[error("no deployment matches '{0}' (ids are in osctl status; give 6 or more digits)")]
    NoSuchDeployment(String),
    #[error("'{0}' matches several deployments; give more digits")]
    Ambiguous(String),
    /// An `osctl diff` argument names nothing comparable.
    #[error(
        "'{0}' is neither a deployment id (osctl status) nor an image in the store (osctl image list)"
    )]
    NotADiffTarget(String),
    /// An `osctl diff` argument is not a deployment and does not parse as
    /// an image reference.
    #[error("'{arg}' is neither a deployment id (osctl status) nor an image reference")]
    NotADiffReference {
        arg: String,
        #[source]
        source: osctl_image::FetchError,
    },
    /// `osctl diff` without an argument it has no default for.
    #[error("{0}")]
    NoDiffDefault(&'static str),
    #[error("nothing to upgrade: no deployment is booted or staged (use osctl switch IMAGE)")]
    NothingTracked,
    #[error(
        "{image} resolves to {digest}, which failed on this machine ({reason}; {at}): not staging it again; `osctl upgrade --force` does"
    )]
    FailedBefore {
        image: String,
        digest: String,
        reason: String,
        at: String,
    },
    /// `upgrade --from-downloaded` with no download-only deployment staged.
    #[error(
        "nothing downloaded: no download-only update is staged (`osctl upgrade --download-only` downloads one)"
    )]
    NothingDownloaded,
    /// `upgrade --download-only` while the next boot is already something
    /// other than the booted deployment: it would have to cancel that.
    #[error("{0}")]
    NextBootPlanned(NextBoot),
    /// `bless` of a deployment whose health record cannot be read.
    #[error(
        "{why}: not marking deployment {} good (`osctl health check` writes a new record)",
        id.short()
    )]
    HealthUnreadable { id: DeploymentId, why: String },
    /// `bless` of a deployment whose checks failed.
    #[error("deployment {} failed its health checks ({reason}): not marking it good", id.short())]
    HealthFailed { id: DeploymentId, reason: String },
    /// The config blob `what` (of an update found by `upgrade --check`) is
    /// not JSON.
    #[error("{what} is not valid JSON")]
    BadConfig {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// An error and its sources on one line, for recorded text: the store's
/// renderer, so both crates write chains the same way.
pub(crate) use osctl_store::one_line;

/// What already boots next when `upgrade --download-only` refuses to touch
/// it (see [`DeployError::NextBootPlanned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextBoot {
    /// An ordinary staged update (pending or finalized).
    Staged(DeploymentId),
    /// A queued rollback.
    Rollback(DeploymentId),
}

impl std::fmt::Display for NextBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextBoot::Staged(id) => write!(
                f,
                "deployment {} is staged to boot next: --download-only does not replace it (`osctl upgrade` stages the update for the next boot instead)",
                id.short()
            ),
            NextBoot::Rollback(id) => write!(
                f,
                "a rollback to deployment {} is queued for the next boot: --download-only does not cancel it (`osctl rollback --cancel` does)",
                id.short()
            ),
        }
    }
}
