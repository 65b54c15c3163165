//! The two next-boot markers: `state/staged` (an update waiting for
//! finalize) and `state/rollback` (a queued rollback).
//!
//! Each file holds one line, `<deployment id> <generation> [existing]
//! [download-only]`. The
//! generation orders the two markers when both exist: the one written last
//! wins (see [`crate::state`]). `existing` (staged marker only) says the
//! deployment existed before this switch staged it again (a rollback, pinned
//! or other deployment): when it stops being staged it stays, as what it was,
//! instead of being dropped like an update that never booted. That is what lets `switch` during a queued rollback,
//! and `rollback` with an update staged, each flip the machine's state with
//! one atomic write instead of a remove followed by a write, which a crash
//! could split. A marker written before generations existed (`<id>` alone)
//! reads as generation 0.
//!
//! `download-only` (staged marker only) says the deployment was staged by
//! `osctl upgrade --download-only`: it is staged in every other respect
//! (status shows it, recovery keeps it, a later switch replaces it), but
//! finalize leaves it alone, so it never becomes the next boot. `osctl
//! upgrade --from-downloaded` releases it by rewriting the marker without
//! the word: one atomic write, the commit point of the release. Keeping the
//! flag in the marker rather than in a file of its own means there is no
//! second file that a crash could leave disagreeing with the marker, and a
//! marker that stops holding takes the flag with it. An osctl that does not
//! know the word refuses the marker (it does not parse) instead of
//! finalizing a deployment the admin held back.
//!
//! A marker is only a claim: [`crate::state::classify`] decides whether it
//! still holds (a staged marker whose deployment became the default was
//! finalized; a rollback marker counts only while the default names it), and
//! the recovery at the start of every locked operation removes the stale
//! ones.

use std::path::Path;

use cap_std::fs::Dir;

use crate::DeployError;
use crate::layout::{self, DeploymentId};
use crate::sysroot::Sysroot;

/// The staged marker, relative to the state dir.
pub const STAGED: &str = crate::layout::state_dir_name(crate::layout::partition::STAGED_MARKER);
/// The rollback marker, relative to the state dir.
pub const ROLLBACK: &str = crate::layout::state_dir_name(crate::layout::partition::ROLLBACK_MARKER);

/// One marker's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub id: DeploymentId,
    pub generation: u64,
    /// The deployment existed before it was staged (see the module doc).
    pub existing: bool,
    /// Staged by `upgrade --download-only`: finalize leaves it (see the
    /// module doc).
    pub download_only: bool,
}

/// The word that marks a staged deployment that existed before.
const EXISTING: &str = "existing";
/// The word that marks a download-only staged deployment.
const DOWNLOAD_ONLY: &str = "download-only";

impl Marker {
    /// Parses `<id> [<generation> [existing] [download-only]]` (one line,
    /// surrounding whitespace ignored; the words in that order, each at
    /// most once). The error is the reason, without the file name.
    pub fn parse(text: &str) -> Result<Marker, String> {
        let mut words = text.split_whitespace();
        let id = words.next().ok_or("empty")?;
        let id = DeploymentId::parse(id).ok_or_else(|| format!("'{id}' is not a deployment id"))?;
        let generation = match words.next() {
            None => 0,
            Some(g) => g
                .parse()
                .map_err(|_| format!("'{g}' is not a generation number"))?,
        };
        let mut marker = Marker {
            id,
            generation,
            existing: false,
            download_only: false,
        };
        // What the previous word was, for the error message.
        let mut after = "the generation";
        for word in words {
            match word {
                EXISTING if !marker.existing && !marker.download_only => marker.existing = true,
                DOWNLOAD_ONLY if !marker.download_only => marker.download_only = true,
                extra => return Err(format!("unexpected '{extra}' after {after}")),
            }
            after = match word {
                EXISTING => "'existing'",
                _ => "'download-only'",
            };
        }
        Ok(marker)
    }

    pub fn render(&self) -> String {
        let mut line = format!("{} {}", self.id, self.generation);
        if self.existing {
            line.push(' ');
            line.push_str(EXISTING);
        }
        if self.download_only {
            line.push(' ');
            line.push_str(DOWNLOAD_ONLY);
        }
        line.push('\n');
        line
    }
}

/// Why a marker could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("reading {}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: unreadable marker: {why}", path.display())]
    Malformed {
        path: std::path::PathBuf,
        why: String,
    },
}

/// Reads marker `name` from the state dir (shown as `shown`); `None` when
/// there is none. A marker that does not parse is an error: it is not
/// guessed at (the recovery reports it and the operation stops).
pub fn read(state: &Dir, name: &str, shown: &Path) -> Result<Option<Marker>, MarkerError> {
    let path = shown.join(name);
    match state.read_to_string(name) {
        Ok(text) => Marker::parse(&text)
            .map(Some)
            .map_err(|why| MarkerError::Malformed { path, why }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MarkerError::Io { path, source }),
    }
}

/// Writes marker `name` atomically.
pub fn write(state: &Dir, name: &str, marker: &Marker) -> std::io::Result<()> {
    osctl_store::atomic::write_atomic(state, name, marker.render().as_bytes())
}

/// Removes marker `name` durably (a missing one is fine).
pub fn remove(state: &Dir, name: &str) -> std::io::Result<()> {
    osctl_store::atomic::remove_durably(state, name)
}

impl Sysroot {
    /// Writes marker `name` naming `id` (`existing`, `download_only`: see
    /// [`crate::markers`]), with a generation above both markers' (so it
    /// wins over the other one; see [`crate::state`]).
    pub(crate) fn write_marker(
        &self,
        name: &str,
        id: &DeploymentId,
        existing: bool,
        download_only: bool,
    ) -> Result<(), DeployError> {
        let facts = self.facts()?;
        let generation = [&facts.staged_marker, &facts.rollback_marker]
            .into_iter()
            .flatten()
            .map(|m| m.generation)
            .max()
            .unwrap_or(0)
            + 1;
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        let marker = Marker {
            id: id.clone(),
            generation,
            existing,
            download_only,
        };
        write(&state_dir, name, &marker).map_err(|e| DeployError::Io {
            step: "writing",
            path: self.path().join(layout::sysroot::STATE).join(name),
            source: e,
        })
    }

    /// Removes marker `name` (durably; a missing one is fine).
    pub(crate) fn remove_marker(&self, name: &str) -> Result<(), DeployError> {
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        remove(&state_dir, name).map_err(|e| DeployError::Io {
            step: "removing",
            path: self.path().join(layout::sysroot::STATE).join(name),
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_strictly() {
        let id = "c".repeat(64);
        let ok = |s: &str| Marker::parse(s).unwrap();
        assert_eq!(ok(&format!("{id}\n")).generation, 0);
        assert_eq!(ok(&format!(" {id} 7 \n")).generation, 7);
        let m = ok(&format!("{id} 3"));
        assert!(!m.existing);
        assert_eq!(Marker::parse(&m.render()).unwrap(), m);
        let m = ok(&format!("{id} 4 existing\n"));
        assert!(m.existing && m.generation == 4);
        assert_eq!(Marker::parse(&m.render()).unwrap(), m);
        for (text, existing) in [
            (format!("{id} 5 download-only\n"), false),
            (format!("{id} 5 existing download-only\n"), true),
        ] {
            let m = ok(&text);
            assert!(m.download_only && m.existing == existing && m.generation == 5);
            assert_eq!(m.render(), text);
        }
        assert!(!ok(&format!("{id} 4 existing")).download_only);
        for (bad, why) in [
            ("", "empty"),
            ("abc 1", "'abc' is not a deployment id"),
            (&format!("{id} x") as &str, "'x' is not a generation number"),
            (&format!("{id} 1 2"), "unexpected '2' after the generation"),
            (
                &format!("{id} 1 existing x"),
                "unexpected 'x' after 'existing'",
            ),
            (
                &format!("{id} 1 download-only existing"),
                "unexpected 'existing' after 'download-only'",
            ),
            (
                &format!("{id} 1 download-only download-only"),
                "unexpected 'download-only' after 'download-only'",
            ),
            (
                &format!("{id} 1 existing existing"),
                "unexpected 'existing' after 'existing'",
            ),
        ] {
            assert_eq!(Marker::parse(bad).unwrap_err(), why, "{bad:?}");
        }
    }
}
