//! Comparing two images' installed Debian packages: added, removed,
//! upgraded and downgraded, in Debian version order ([`crate::version`]).
//! A package whose version text differs but compares equal (`1.01` and
//! `1.1`) is not listed.
//!
//! Matching is decided per name over *both* images: when each image has
//! at most one instance of a name, the two are compared under the plain
//! name (an architecture change, `amd64` → `all`, is then not a change by
//! itself); when either image has the name for several architectures
//! (multi-arch), instances are matched by (name, architecture) and shown
//! as `name:arch`. Deciding per image instead would turn dropping
//! `libc6:i386` into "removed libc6:amd64, removed libc6:i386, added
//! libc6".

use std::cmp::Ordering;
use std::collections::BTreeMap;

use std::path::Path;

use osctl_store::{EntryKind, ImageTree};

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
            Packages::NotCompared { missing } => Some(no_database(missing)),
        }
    }
}

/// The line saying packages were not compared because the images named
/// in `missing` have no dpkg database.
pub fn no_database(missing: &[String]) -> String {
    format!(
        "no dpkg database in {}: packages not compared",
        missing.join(" or ")
    )
}

/// The installed packages of `tree` (named `image` in errors); `None`
/// only if nothing is at the dpkg status path (or at a directory on the
/// way to it). Anything else there that is not a regular file (a symlinked
/// `/var/lib/dpkg`, a status that is a symlink) is an error: osctl does
/// not follow links inside an image, and a database it cannot read is not
/// "no database".
pub fn installed(tree: &ImageTree, image: &str) -> Result<Option<Installed>, DiffError> {
    let status = Path::new(dpkg::STATUS_PATH);
    for at in status.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let want = if at == status {
            EntryKind::Regular
        } else {
            EntryKind::Directory
        };
        match tree.kind(at) {
            None => return Ok(None),
            Some(kind) if kind == want => {}
            Some(kind) => {
                return Err(DiffError::DpkgNotAFile {
                    path: dpkg::STATUS_PATH,
                    image: image.to_string(),
                    at: at.display().to_string(),
                    is: words(kind),
                    want: words(want),
                });
            }
        }
    }
    let Some(bytes) = tree.read(status)? else {
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

/// The instances of each name in the two images: (from side, to side).
type ByName<'a> = BTreeMap<&'a str, (Vec<&'a Package>, Vec<&'a Package>)>;

/// A display name's package in the two images.
enum Pair<'a> {
    Removed(&'a Package),
    Added(&'a Package),
    Both(&'a Package, &'a Package),
}

fn pair<'a>(p: Option<&'a Package>, q: Option<&'a Package>) -> Option<Pair<'a>> {
    match (p, q) {
        (Some(p), Some(q)) => Some(Pair::Both(p, q)),
        (Some(p), None) => Some(Pair::Removed(p)),
        (None, Some(q)) => Some(Pair::Added(q)),
        (None, None) => None,
    }
}

/// Pairs up the two images' packages under their display names (see the
/// module doc), sorted by display name.
fn matched<'a>(from: &'a [Package], to: &'a [Package]) -> Vec<(String, Pair<'a>)> {
    let mut by_name: ByName<'a> = BTreeMap::new();
    for p in from {
        by_name.entry(&p.name).or_default().0.push(p);
    }
    for q in to {
        by_name.entry(&q.name).or_default().1.push(q);
    }
    let mut out = Vec::new();
    for (name, (old, new)) in by_name {
        if old.len() <= 1 && new.len() <= 1 {
            out.extend(
                pair(old.first().copied(), new.first().copied()).map(|p| (name.to_string(), p)),
            );
            continue;
        }
        let mut arches: BTreeMap<&str, (Option<&Package>, Option<&Package>)> = BTreeMap::new();
        for p in old {
            arches.entry(&p.architecture).or_default().0 = Some(p);
        }
        for q in new {
            arches.entry(&q.architecture).or_default().1 = Some(q);
        }
        for (arch, (p, q)) in arches {
            out.extend(pair(p, q).map(|p| (format!("{name}:{arch}"), p)));
        }
    }
    // The map orders names, not display names: `libc6:amd64` comes out
    // before `libc6-dev` but sorts after it.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// An entry kind in words, for errors.
fn words(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Directory => "a directory",
        EntryKind::Regular => "a regular file",
        EntryKind::Symlink => "a symlink",
        EntryKind::Other => "a special file",
    }
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
    for (name, pair) in matched(from, to) {
        let (p, q) = match pair {
            Pair::Both(p, q) => (p, q),
            Pair::Removed(p) => {
                diff.removed.push((name, p.clone()));
                continue;
            }
            Pair::Added(q) => {
                diff.added.push((name, q.clone()));
                continue;
            }
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
    Ok(diff)
}
