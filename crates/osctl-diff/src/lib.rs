//! `osctl diff`: what changes between two images in the store — the files
//! under `/usr` and `/etc`, and the Debian packages installed.
//!
//! Model: both images' trees are rebuilt from their layer splitstreams
//! ([`osctl_store::ImageTree`], no mount, no root) and compared by the
//! content addresses the store already holds ([`files`]): nothing is read
//! or hashed again, so the cost is the tree rebuild plus one pass over the
//! entries. Packages come from each image's `/var/lib/dpkg/status`
//! ([`dpkg`]), compared in Debian's version order ([`version`], osctl's
//! own implementation of dpkg's rules). An image without a dpkg database
//! is compared by files only and the result says so ([`Packages`]).
//!
//! This crate only reads. Which two images to compare (a deployment, the
//! booted or staged one, a reference in the store) is the caller's
//! business; [`report`] renders the result for people and programs.
#![forbid(unsafe_code)]

pub mod dpkg;
mod error;
pub mod files;
pub mod packages;
pub mod report;
pub mod version;

use osctl_store::ImageTree;

pub use error::{DiffError, DpkgError};
pub use files::{Aspect, FileChange, Kind, TREES, TreeDiff};
pub use packages::{PackageDiff, Packages, VersionChange};

/// Everything that differs between two images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDiff {
    /// One per [`TREES`] entry, in that order.
    pub trees: Vec<TreeDiff>,
    pub packages: Packages,
}

/// Compares image `from` (named `from_name` in messages) with `to`.
pub fn diff_images(
    from: &ImageTree,
    from_name: &str,
    to: &ImageTree,
    to_name: &str,
) -> Result<ImageDiff, DiffError> {
    let trees = TREES
        .iter()
        .map(|t| files::diff_tree(from, to, t))
        .collect::<Result<_, _>>()?;
    let old = packages::installed(from, from_name)?;
    let new = packages::installed(to, to_name)?;
    let packages = match (old, new) {
        (Some(old), Some(new)) => {
            Packages::Compared(packages::compare(&old, &new, from_name, to_name)?)
        }
        (old, new) => Packages::NotCompared {
            missing: [(old.is_none(), from_name), (new.is_none(), to_name)]
                .into_iter()
                .filter(|(missing, _)| *missing)
                .map(|(_, name)| name.to_string())
                .collect(),
        },
    };
    Ok(ImageDiff { trees, packages })
}
