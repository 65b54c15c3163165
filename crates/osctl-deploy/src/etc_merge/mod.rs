//! The three-way `/etc` merge.
//!
//! When a machine moves to a new image, its new `/etc` is built from three
//! trees: `old`, the booted image's pristine `/etc`; `current`, the live
//! `/etc` with the administrator's edits; `new`, the new image's pristine
//! `/etc`. [`merge_etc`] writes the result into an empty `target` directory
//! and returns an [`EtcMergeReport`].
//!
//! # Model
//!
//! A per-path three-way merge with `old` as the common ancestor, as ostree
//! does it, plus conflict detection, as bootc does it: the new image is the
//! base; what the administrator changed since `old` is carried over; what
//! they left alone follows the image (including the image's additions and
//! deletions). Where both changed the same path differently the
//! administrator's version wins: they changed it on purpose on this machine,
//! while the image's change is a default that a later edit can adopt. A
//! conflict is logged (`tracing` warn) and reported, never fatal: an update
//! must not stop on a file that became a directory (bootc aborts there,
//! bootc#2285). Only I/O failures end a merge ([`EtcMergeError`]).
//!
//! "Changed" compares the file type, permission bits (with
//! setuid/setgid/sticky), owner uid/gid, every extended attribute, and the
//! content: bytes for regular files (streamed, never the whole file in
//! memory), target for symlinks, device number for device nodes. Timestamps
//! are not significant (a `touch` is not an edit); the hard-link structure is
//! not compared either.
//!
//! | admin (old → current)      | image (old → new)         | result  | report       |
//! |----------------------------|---------------------------|---------|--------------|
//! | unchanged                  | unchanged                 | new     | —            |
//! | unchanged                  | modified, added, deleted  | new     | `updated`    |
//! | modified, added, deleted   | unchanged                 | current | `carried`    |
//! | changed                    | changed to the same thing | current | —            |
//! | changed                    | changed differently       | current | `conflicts`  |
//!
//! Conflict kinds ([`ConflictKind`]): `BothModified` (same type everywhere,
//! different edits), `BothAdded` (not in `old`, `current` ≠ `new`),
//! `TypeChanged` (file ↔ directory ↔ symlink ↔ special on one side, any change
//! on the other), `DeletedButImageChanged`, `ModifiedButImageDeleted`.
//!
//! Directories:
//! - a directory in both `current` and `new` is merged entry by entry; its
//!   own metadata (mode, owner, xattrs) follows the table (a directory absent
//!   from `old` counts as empty, so two additions merge too);
//! - a directory the administrator deleted stays deleted (`carried`); if the
//!   image changed anything inside it, that is a `DeletedButImageChanged`
//!   conflict and the deletion is still kept;
//! - a directory the image deleted goes (`updated`) if the administrator
//!   changed nothing inside; otherwise a `ModifiedButImageDeleted` conflict:
//!   the directory stays, holding only the administrator's changed and added
//!   entries (each reported itself); the entries they left alone go;
//! - a subtree taken whole from one side (added, or replacing another file
//!   type) is reported once, by its top path.
//!
//! Example (report paths are relative to `/etc`):
//!
//! ```text
//! path              old    current       new        result    report
//! hosts             "a"    "a" + line    "a"        current   carried Modified
//! motd              "v1"   "v1"          "v2"       new       updated Modified
//! ssh/sshd_config   "x"    "x" + admin   "x" + img  current   conflict BothModified
//! local.conf        —      "mine"        —          current   carried Added
//! cron.daily/old    "s"    —             "s"        (absent)  carried Deleted
//! ```
//!
//! The written tree keeps each chosen entry's mode, owner, xattrs and
//! access/modification times. Regular files that are hard links of each
//! other in the tree they were taken from stay hard links in the result when
//! they all take that same side; a file whose group is split between sides
//! is a copy. Fifos, sockets and device nodes are recreated with `mknod`;
//! where that is refused (no `CAP_MKNOD`) the entry is skipped and listed in
//! [`EtcMergeReport::skipped`].
//!
//! All access goes through the given cap-std [`Dir`] handles, one path
//! component at a time with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`: a symlink in
//! `/etc` (even one pointing out of it, or absolute) is compared and copied
//! as a link, never followed.
//!
//! Limits: extended attributes of symlinks and device nodes are read and
//! written through `/proc/self/fd`, so `/proc` must be mounted. The merge
//! reads `current` while it runs; callers should merge a quiet `/etc` (at
//! shutdown, as bootc's finalize step does) and discard `target` on error.

mod merge_report;
mod snapshot;
mod three_way;
mod write_target;

use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

pub use merge_report::{
    ChangeKind, ConflictKind, EtcChange, EtcConflict, EtcMergeReport, EtcSkipped,
};

/// An I/O failure during the merge; nothing else is an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcMergeError {
    /// `step` failed on `path` (relative to `/etc`) in `tree` (`old`,
    /// `current`, `new` or `target`; two names when comparing).
    #[error("/etc merge: {step} {} ({tree})", show(path))]
    Io {
        step: &'static str,
        tree: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl EtcMergeError {
    pub(crate) fn io(
        step: &'static str,
        tree: &'static str,
        path: &Path,
    ) -> impl FnOnce(io::Error) -> EtcMergeError {
        move |source| EtcMergeError::Io {
            step,
            tree,
            path: path.to_owned(),
            source,
        }
    }
}

/// `/etc/<path>`, `/etc` for the root.
fn show(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "/etc".to_owned()
    } else {
        Path::new("/etc").join(path).display().to_string()
    }
}

/// Merges `old` (booted image's pristine /etc), `current` (live /etc) and
/// `new` (new image's pristine /etc) into the empty directory `target`.
///
/// Conflicts do not fail the merge: they are resolved for the administrator,
/// logged and listed in the report. The target's own metadata is set too.
/// On error `target` holds a partial tree that the caller should discard.
pub fn merge_etc(
    old: &Dir,
    current: &Dir,
    new: &Dir,
    target: &Dir,
) -> Result<EtcMergeReport, EtcMergeError> {
    three_way::Merger::new(target).run(old, current, new)
}
