//! Root-setup errors: one line each, naming the thing at fault, because the
//! only place they are read is a serial console during boot.

use std::path::PathBuf;

/// Why the root could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no {key}=<image id> on the kernel command line ({cmdline})")]
    NoTarget { key: &'static str, cmdline: String },
    #[error("{key}={value} on the kernel command line: not a 64-digit lowercase hex image id")]
    BadTarget { key: &'static str, value: String },
    #[error("{key}= appears more than once on the kernel command line")]
    TwoTargets { key: &'static str },
    #[error("{option}={value} on the kernel command line: expected one of {expected}")]
    BadOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "no osctl store at {0} (does root= name the osctl root partition? was it installed with osctl install?)"
    )]
    NoStore(PathBuf),
    #[error("image {id} named by composefs= is not in the store ({path} is missing)")]
    NoImage { id: String, path: PathBuf },
    #[error("deployment {id} has no state at {path} (staged by another machine, or removed?)")]
    NoDeployment { id: String, path: PathBuf },
    #[error(
        "image {id} fails its fs-verity check: the file's digest is {found} (it was altered; refusing to boot it)"
    )]
    ImageTampered { id: String, found: String },
    #[error(
        "image {id} has no fs-verity although the store is sealed ({path}); refusing to boot it"
    )]
    ImageUnsealed { id: String, path: PathBuf },
    #[error(
        "image {id} could not be mounted: {why} (with fs-verity required, an I/O error means its content no longer matches its digest: it was altered; refusing to boot it)"
    )]
    ImageCorrupt { id: String, why: String },
    #[error(
        "the root filesystem cannot enable fs-verity on {path} ({why}); create it with `mkfs.ext4 -O verity` (or `tune2fs -O verity`), or boot with composefs=?<id> to skip verity"
    )]
    NoVerity { path: PathBuf, why: String },
    #[error(
        "store object {path} has fs-verity digest {found}: its name says otherwise (corrupt store)"
    )]
    ObjectMismatch { path: PathBuf, found: String },
    #[error(
        "image {id} has no /{dir} directory to mount {what} on (add `RUN mkdir -p /{dir}` to the Containerfile)"
    )]
    NoMountPoint {
        id: String,
        dir: &'static str,
        what: &'static str,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("moving mount {from} to {to}")]
    MoveMount {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: rustix::io::Errno,
    },
}

impl SetupError {
    /// A closure mapping an I/O-ish error to [`SetupError::Io`] for `path`,
    /// keeping it as the source.
    pub(crate) fn io<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(E) -> SetupError {
        let path = path.into();
        move |e| SetupError::Io {
            step,
            path,
            source: e.into(),
        }
    }
}
