//! Comparing two images' installed Debian packages: added, removed,
//! upgraded and downgraded, by name (see [`crate::dpkg`] for names) and
//! Debian version order ([`crate::version`]). A package whose version
//! text differs but compares equal (`1.01` and `1.1`) is not listed.

use std::cmp::Ordering;

use osctl_store::ImageTree;

use crate::dpkg::{self, Installed, Package};
use crate::version::Version;
use crate::{DiffError, DpkgError};

/// A package in both images at different versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    pub name: String,
    pub architecture: String,
    pub from: String,
    pub to: String,
}

/// The package differences, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageDiff {
    pub added: Vec<(String, Package)>,
    pub removed: Vec<(String, Package)>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
}

/// Whether packages could be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packages {
    Compared(PackageDiff),
    /// The images (by name) that have no dpkg database.
    NotCompared {
        missing: Vec<String>,
    },
}

impl Packages {
    /// The line saying why packages were not compared, if they were not.
    pub fn not_compared(&self) -> Option<String> {
        match self {
            Packages::Compared(_) => None,
            Packages::NotCompared { missing } => Some(format!(
                "no dpkg database in {}: packages not compared",
                missing.join(" or ")
            )),
        }
    }
}

/// The installed packages of `tree` (named `image` in errors); `None` if
/// it has no dpkg status file.
pub fn installed(tree: &ImageTree, image: &str) -> Result<Option<Installed>, DiffError> {
    let Some(bytes) = tree.read(std::path::Path::new(dpkg::STATUS_PATH))? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| DiffError::DpkgNotText {
        path: dpkg::STATUS_PATH,
        image: image.to_string(),
    })?;
    dpkg::parse_status(&text)
        .map(Some)
        .map_err(|source| DiffError::Dpkg {
            path: dpkg::STATUS_PATH,
            image: image.to_string(),
            source,
        })
}

/// Compares two package sets; `from_name`/`to_name` name the images in
/// errors (a version that does not parse).
pub fn compare(
    from: &Installed,
    to: &Installed,
    from_name: &str,
    to_name: &str,
) -> Result<PackageDiff, DiffError> {
    let mut diff = PackageDiff::default();
    for (name, p) in from {
        let Some(q) = to.get(name) else {
            diff.removed.push((name.clone(), p.clone()));
            continue;
        };
        let bad = |source: DpkgError| DiffError::Version {
            package: name.clone(),
            from: from_name.to_string(),
            to: to_name.to_string(),
            source,
        };
        let old = Version::parse(&p.version).map_err(bad)?;
        let new = Version::parse(&q.version).map_err(bad)?;
        let change = || VersionChange {
            name: name.clone(),
            architecture: q.architecture.clone(),
            from: p.version.clone(),
            to: q.version.clone(),
        };
        match old.cmp(&new) {
            Ordering::Less => diff.upgraded.push(change()),
            Ordering::Greater => diff.downgraded.push(change()),
            Ordering::Equal => {}
        }
    }
    for (name, q) in to {
        if !from.contains_key(name) {
            diff.added.push((name.clone(), q.clone()));
        }
    }
    Ok(diff)
}
