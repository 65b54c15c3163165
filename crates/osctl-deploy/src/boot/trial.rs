//! Trying a new deployment with a way back: what makes systemd-boot fall
//! back by itself when a new deployment's boot counter runs out.
//!
//! systemd-boot picks the entry that loader.conf's `default` names even when
//! that entry is "bad" (no tries left): an exact `default osctl-<id>.conf`
//! would boot a broken deployment forever. So while a deployment is on
//! trial, `default` is the pattern `osctl-*`, which systemd-boot resolves to
//! the first matching entry in its sort order — and that order puts bad
//! entries last, then sorts by `sort-key`:
//!
//! ```text
//! loader.conf       default osctl-*
//! osctl-<new>+2.conf    sort-key 0-osctl-trying     boots while it has tries
//! osctl-<prev>.conf     sort-key 1-osctl-fallback   boots once <new> is bad
//! osctl-<older>.conf    sort-key osctl              (the normal key)
//! ```
//!
//! The trial starts with one atomic loader.conf write after both entries got
//! their keys (keys alone change nothing while `default` is exact), and ends
//! with one: an exact `default` (marking the new deployment good, noticing
//! it failed, a rollback), after which the keys go back to normal.

use std::path::Path;

use cap_std::fs::Dir;
use osctl_store::atomic::write_atomic;

use super::bls::{
    BlsEntry, EntryFile, SORT_KEY, entry_files_of, read_default_value, read_entries,
    write_default_value,
};
use super::{BootError, open_dir_opt};
use crate::layout::{DeploymentId, ENTRIES_DIR};

/// Sort key of the deployment on trial: sorts before every other key.
pub const SORT_KEY_TRYING: &str = "0-osctl-trying";
/// Sort key of the deployment to fall back to: right after the trial.
pub const SORT_KEY_FALLBACK: &str = "1-osctl-fallback";
/// loader.conf's `default` during a trial.
pub const TRIAL_DEFAULT: &str = "osctl-*";

/// Starts a trial of `trying` (whose entry must carry a boot counter) with
/// `fallback` to return to.
pub fn write_trial_default(
    boot: &Dir,
    trying: &DeploymentId,
    fallback: &DeploymentId,
) -> Result<(), BootError> {
    // Keys a crash left behind (between an exact default and the
    // normalization after it) must not give a trial two fallbacks.
    for e in read_entries(boot)? {
        if e.entry.sort_key != SORT_KEY && &e.id != trying && &e.id != fallback {
            set_sort_key(boot, &e.id, SORT_KEY)?;
        }
    }
    set_sort_key(boot, fallback, SORT_KEY_FALLBACK)?;
    set_sort_key(boot, trying, SORT_KEY_TRYING)?;
    write_default_value(boot, TRIAL_DEFAULT)
}

/// Whether a trial is on (loader.conf's `default` is the pattern).
pub fn is_trial(boot: &Dir) -> Result<bool, BootError> {
    Ok(read_default_value(boot)?.as_deref() == Some(TRIAL_DEFAULT))
}

/// The entry systemd-boot boots during a trial: bad entries last, then by
/// sort key (then id, as a stable tiebreak: the trial keys are unique).
pub(super) fn pick(entries: &[EntryFile]) -> Option<DeploymentId> {
    entries
        .iter()
        .min_by(|a, b| {
            let bad = |e: &EntryFile| e.tries.is_some_and(|t| t.exhausted());
            (bad(a), &a.entry.sort_key, &a.id).cmp(&(bad(b), &b.entry.sort_key, &b.id))
        })
        .map(|e| e.id.clone())
}

/// Rewrites deployment `id`'s entry with sort key `key`, keeping its file
/// name (and so its boot counter).
fn set_sort_key(boot: &Dir, id: &DeploymentId, key: &str) -> Result<(), BootError> {
    let Some(dir) = open_dir_opt(boot, ENTRIES_DIR, ENTRIES_DIR)? else {
        return Ok(());
    };
    for name in entry_files_of(&dir, id)? {
        let path = Path::new(ENTRIES_DIR).join(&name);
        let text = dir
            .read_to_string(&name)
            .map_err(BootError::io("read", &path))?;
        let mut entry = BlsEntry::parse(&text).map_err(|why| BootError::BootFile {
            path: path.clone(),
            why,
        })?;
        if entry.sort_key != key {
            entry.sort_key = key.to_owned();
            write_atomic(&dir, &name, entry.render().as_bytes())
                .map_err(BootError::io("write", &path))?;
        }
    }
    Ok(())
}

/// Puts every osctl entry back on the normal sort key (after a trial).
pub(super) fn normalize_sort_keys(boot: &Dir) -> Result<(), BootError> {
    for e in read_entries(boot)? {
        if e.entry.sort_key != SORT_KEY {
            set_sort_key(boot, &e.id, SORT_KEY)?;
        }
    }
    Ok(())
}
