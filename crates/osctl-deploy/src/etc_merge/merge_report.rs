//! What a merge did: carried admin changes, image updates, conflicts, skips.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

/// How a path differs from `old` on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// Not in `old`.
    Added,
    /// In `old` and here, but different (content, metadata or file type).
    Modified,
    /// In `old`, not here.
    Deleted,
}

impl ChangeKind {
    pub(crate) fn between(old_present: bool, side_present: bool) -> ChangeKind {
        match (old_present, side_present) {
            (false, _) => ChangeKind::Added,
            (true, false) => ChangeKind::Deleted,
            (true, true) => ChangeKind::Modified,
        }
    }
}

/// A path that one side changed and the result follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcChange {
    #[serde(serialize_with = "lossy")]
    path: PathBuf,
    kind: ChangeKind,
}

impl EtcChange {
    /// Path relative to `/etc` (`.` for `/etc` itself).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> ChangeKind {
        self.kind
    }
}

/// Why the administrator's and the image's changes could not both be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ConflictKind {
    /// Same file type in all three trees; admin and image changed it differently.
    BothModified,
    /// Not in `old`; admin and image added different things.
    BothAdded,
    /// The file type changed (file, directory, symlink, special) on one side
    /// and the other side changed the path too.
    TypeChanged,
    /// The admin deleted it (a directory: the whole directory); the image
    /// changed it (a directory: anything inside).
    DeletedButImageChanged,
    /// The admin changed it (a directory: anything inside); the image deleted it.
    ModifiedButImageDeleted,
}

/// A path both sides changed; the result keeps the administrator's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcConflict {
    #[serde(serialize_with = "lossy")]
    path: PathBuf,
    kind: ConflictKind,
    resolution: String,
}

impl EtcConflict {
    pub(crate) fn new(path: PathBuf, kind: ConflictKind, resolution: String) -> Self {
        EtcConflict {
            path,
            kind,
            resolution,
        }
    }

    /// Path relative to `/etc` (`.` for `/etc` itself).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> ConflictKind {
        self.kind
    }

    /// What the result holds, in words (for `osctl status`).
    pub fn resolution(&self) -> &str {
        &self.resolution
    }
}

/// An entry the merge chose but could not create (a device node without
/// `CAP_MKNOD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcSkipped {
    #[serde(serialize_with = "lossy")]
    path: PathBuf,
    reason: String,
}

impl EtcSkipped {
    /// Path relative to `/etc`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The outcome of [`super::merge_etc`]. Each list is in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcMergeReport {
    conflicts: Vec<EtcConflict>,
    carried: Vec<EtcChange>,
    updated: Vec<EtcChange>,
    skipped: Vec<EtcSkipped>,
}

impl EtcMergeReport {
    /// Paths both sides changed differently; the administrator's version won.
    pub fn conflicts(&self) -> &[EtcConflict] {
        &self.conflicts
    }

    /// Administrator changes carried over (the image left these paths alone).
    pub fn carried(&self) -> &[EtcChange] {
        &self.carried
    }

    /// Image changes taken because the administrator left these paths alone.
    pub fn updated(&self) -> &[EtcChange] {
        &self.updated
    }

    /// Entries that should be in the result but could not be created.
    pub fn skipped(&self) -> &[EtcSkipped] {
        &self.skipped
    }

    pub(crate) fn conflict(&mut self, conflict: EtcConflict) {
        tracing::warn!(
            path = %conflict.path.display(),
            kind = ?conflict.kind,
            "/etc merge conflict: {}",
            conflict.resolution
        );
        self.conflicts.push(conflict);
    }

    pub(crate) fn carry(&mut self, path: &Path, kind: ChangeKind) {
        tracing::debug!(path = %path.display(), ?kind, "/etc merge: admin change carried");
        self.carried.push(EtcChange {
            path: path.to_owned(),
            kind,
        });
    }

    pub(crate) fn update(&mut self, path: &Path, kind: ChangeKind) {
        tracing::debug!(path = %path.display(), ?kind, "/etc merge: image change taken");
        self.updated.push(EtcChange {
            path: path.to_owned(),
            kind,
        });
    }

    pub(crate) fn skip(&mut self, path: &Path, reason: String) {
        tracing::warn!(path = %path.display(), "/etc merge: skipped: {reason}");
        self.skipped.push(EtcSkipped {
            path: path.to_owned(),
            reason,
        });
    }
}

/// Paths are shown to people; a non-UTF-8 name must not fail the output.
fn lossy<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}
