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
use crate::failpoint;
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
    failpoint::hit("trial:after-fallback-key");
    set_sort_key(boot, trying, SORT_KEY_TRYING)?;
    failpoint::hit("trial:after-trying-key");
    write_default_value(boot, TRIAL_DEFAULT)
}

/// During a trial, the deployment on trial: the entry with the trying sort
/// key (whether or not it has tries left). `None` when no trial is on.
pub fn trying(boot: &Dir) -> Result<Option<DeploymentId>, BootError> {
    if !is_trial(boot)? {
        return Ok(None);
    }
    Ok(read_entries(boot)?
        .into_iter()
        .find(|e| e.entry.sort_key == SORT_KEY_TRYING)
        .map(|e| e.id))
}

/// Whether a trial is on (loader.conf's `default` is the pattern).
pub fn is_trial(boot: &Dir) -> Result<bool, BootError> {
    Ok(read_default_value(boot)?.as_deref() == Some(TRIAL_DEFAULT))
}

/// The entry systemd-boot boots during a trial, in its order: bad entries
/// last, then by sort key, then newest `version` first, then the id
/// (descending, as systemd-boot compares entry ids with the counter removed).
/// The trial keys are unique, so the later rules only decide among entries
/// with the normal key (a trial whose two entries are both gone).
pub(super) fn pick(entries: &[EntryFile]) -> Option<DeploymentId> {
    entries
        .iter()
        .min_by(|a, b| {
            let bad = |e: &EntryFile| e.tries.is_some_and(|t| t.exhausted());
            bad(a)
                .cmp(&bad(b))
                .then_with(|| a.entry.sort_key.cmp(&b.entry.sort_key))
                .then_with(|| version_cmp(&b.entry.version, &a.entry.version))
                .then_with(|| b.id.cmp(&a.id))
        })
        .map(|e| e.id.clone())
}

/// Compares versions the way people read them: runs of digits as numbers,
/// everything else character by character (`1.10` > `1.9`, `v2` > `v1`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let strip = |s: &[u8]| {
                    let z = s.iter().take_while(|c| **c == b'0').count();
                    s[z..].to_vec()
                };
                let (da, db) = (strip(&a[..na]), strip(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
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
pub fn normalize_sort_keys(boot: &Dir) -> Result<(), BootError> {
    for e in read_entries(boot)? {
        if e.entry.sort_key != SORT_KEY {
            set_sort_key(boot, &e.id, SORT_KEY)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::version_cmp;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_compare_by_number() {
        for (a, b, want) in [
            ("1.10", "1.9", Greater),
            ("v2", "v1", Greater),
            ("2.0", "2.0", Equal),
            ("1.0", "1.0.1", Less),
            ("007", "7", Equal),
            ("abc", "abd", Less),
        ] {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
        }
    }
}
