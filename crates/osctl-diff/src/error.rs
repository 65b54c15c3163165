//! The errors of `osctl diff`'s library.

use osctl_store::StoreError;

/// What is wrong in a dpkg status file or a version number, without the
/// file or image (the caller knows those: [`DiffError`]).
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    #[error("line {line}: {why}")]
    Status { line: usize, why: String },
    #[error("version {version:?}: {why}")]
    BadVersion { version: String, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image's dpkg database cannot be read.
    #[error("reading the dpkg database {path} of {image}")]
    Dpkg {
        path: &'static str,
        image: String,
        #[source]
        source: DpkgError,
    },
    /// Something other than a regular file (or a directory on the way to
    /// it) is where the dpkg database belongs.
    #[error(
        "reading the dpkg database {path} of {image}: {at} is {is}, not {want} (links in an image are not followed)"
    )]
    DpkgNotAFile {
        path: &'static str,
        image: String,
        at: String,
        is: &'static str,
        want: &'static str,
    },
    /// The dpkg database is not UTF-8 text.
    #[error("reading the dpkg database {path} of {image}: it is not UTF-8 text")]
    DpkgNotText { path: &'static str, image: String },
    /// A package's version in one of the images does not parse.
    #[error("comparing package {package} of {from} and {to}")]
    Version {
        package: String,
        from: String,
        to: String,
        #[source]
        source: DpkgError,
    },
}
