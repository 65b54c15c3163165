//! Seeding the shared `/var` from the image when the root partition has none.
//!
//! `osctl install` and the first `osctl switch` seed `state/var` already; the
//! root setup seeds it only when it is missing — a root filesystem prepared
//! by hand, or an admin who removed `state/var` to get a factory-fresh
//! `/var` on the next boot. Built under `state/.var-seed` and renamed into
//! place, so an interrupted seed is redone, never half-used.
//!
//! Copies directories, regular files and symlinks with owner and mode (what
//! a Debian image's `/var` holds); other file types and extended attributes
//! are not copied.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use crate::SetupError;

/// Copies the tree `from` to `to` (which must not exist).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), SetupError> {
    let meta = fs::symlink_metadata(from).map_err(SetupError::io("reading", from))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(to).map_err(SetupError::io("creating", to))?;
        let mut entries: Vec<_> = fs::read_dir(from)
            .map_err(SetupError::io("listing", from))?
            .collect::<Result<_, _>>()
            .map_err(SetupError::io("listing", from))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(from, to).map_err(SetupError::io("copying", from))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(from).map_err(SetupError::io("reading", from))?;
        symlink(&target, to).map_err(SetupError::io("creating", to))?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(SetupError::io("changing the owner of", to))?;
    if !ft.is_symlink() {
        // After chown, which clears setuid/setgid bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(SetupError::io("setting the mode of", to))?;
    }
    Ok(())
}
