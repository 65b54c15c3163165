//! `fsck --repair`: remove what is damaged so that a re-pull restores it.
//!
//! composefs-rs never rewrites an object whose name exists, so a truncated
//! object would otherwise stay forever, and a layer stream naming a missing
//! object would keep being reused. Repair removes, under the repository's
//! exclusive lock (no pull writes meanwhile):
//!
//! 1. every object whose content does not match its name or cannot be read
//!    (an EROFS image is an object too: a damaged one goes here). An image
//!    whose object is intact but that composefs-rs cannot parse is only
//!    reported: its bytes are exactly what was written, it may be all a
//!    deployment boots from, and a re-pull need not give the same bytes;
//! 2. every stream (`streams/<name>`) whose splitstream is gone or
//!    unreadable, or that names an object no longer present — so the layer
//!    counts as absent and the next pull fetches it again;
//! 3. every layer index ([`crate::layer_index`]) that does not check out
//!    or whose splitstream is gone — the next image build makes it again
//!    from the splitstream.
//!
//! Records, refs and good objects are left alone: a re-pull of each image
//! the report names fetches exactly the damaged layers and rebuilds a
//! removed EROFS image under the same id, which the refs still name.

use std::collections::BTreeSet;

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use rustix::fs::{AtFlags, FlockOperation};

use crate::reach::link_object;
use crate::{FsckReport, REPO_PATH, Store, StoreError};

/// What `fsck --repair` removed and what remains to do.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Objects removed (`objects/xx/…`).
    pub objects_removed: Vec<String>,
    /// Streams removed (`oci-layer-sha256:…`).
    pub streams_removed: Vec<String>,
    /// Layer indexes removed (the next image build makes them again).
    pub indexes_removed: Vec<String>,
    /// Images to pull again (references), and deployments whose image is
    /// incomplete until then.
    pub to_repull: Vec<String>,
}

impl Store {
    /// Runs `fsck`, then removes what it found damaged (see the module
    /// docs). Returns the findings and what was done.
    ///
    /// Both run under the exclusive locks: damage judged before them could
    /// be mended meanwhile (a pull replaces a damaged object under the same
    /// name), and the good object would then be removed.
    pub async fn repair(&self) -> Result<(FsckReport, RepairReport), StoreError> {
        let mut done = RepairReport::default();
        let naming = self.naming_lock(true)?;
        let fd = self.repo().repo_fd();
        let lock_error = |e: rustix::io::Errno| StoreError::Io {
            step: "repairing: locking the store at",
            path: self.sysroot().join(REPO_PATH),
            source: e.into(),
        };
        rustix::fs::flock(fd, FlockOperation::LockExclusive).map_err(lock_error)?;
        let result = self.repair_locked(&mut done).await;
        rustix::fs::flock(fd, FlockOperation::LockShared).map_err(lock_error)?;
        drop(naming);
        let report = result?;
        done.to_repull = self.incomplete_images()?;
        Ok((report, done))
    }

    /// The part of [`Self::repair`] that needs the store to itself.
    async fn repair_locked(&self, done: &mut RepairReport) -> Result<FsckReport, StoreError> {
        let (report, damage) = self.fsck_with_damage().await?;
        let repo_path = self.sysroot().join(REPO_PATH);
        let fd = self.repo().repo_fd();
        let fail = |what: String, e: std::io::Error| StoreError::Io {
            step: "repairing: removing",
            path: repo_path.join(&what),
            source: e,
        };
        for path in damage.objects {
            match rustix::fs::unlinkat(fd, path.as_str(), AtFlags::empty()) {
                Ok(()) => done.objects_removed.push(path),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(fail(path, e.into())),
            }
        }
        for name in self.streams_to_remove(&damage.streams)? {
            let path = format!("streams/{name}");
            match rustix::fs::unlinkat(fd, path.as_str(), AtFlags::empty()) {
                Ok(()) => done.streams_removed.push(name),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(fail(path, e.into())),
            }
        }
        for path in damage.indexes {
            match std::fs::remove_file(&path) {
                Ok(()) => done.indexes_removed.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(path.display().to_string(), e)),
            }
        }
        self.repo().sync().map_err(|e| StoreError::Repo {
            step: "syncing the store".into(),
            path: repo_path.clone(),
            source: e,
        })?;
        Ok(report)
    }

    /// Streams that are unreadable (`known`), dangling, or name an object
    /// that is not there.
    fn streams_to_remove(&self, known: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
        let objects = self.repo().objects_dir().map_err(|e| StoreError::Io {
            step: "opening",
            path: self.sysroot().join(REPO_PATH).join("objects"),
            source: e.into(),
        })?;
        // Any failure to stat an object counts as absent: what cannot be
        // stat'ed cannot be read either, and removing a stream loses nothing
        // a re-pull does not bring back (its objects stay).
        let present = |id: &Sha256HashValue| {
            rustix::fs::statat(objects, id.to_object_pathname().as_str(), AtFlags::empty()).is_ok()
        };
        let mut out = Vec::new();
        for (name, link) in self.stream_links()? {
            let intact = !known.contains(&name)
                && link_object(&link).is_some_and(|own| present(&own))
                && self
                    .repo()
                    .open_stream(&name, None, None)
                    .is_ok_and(|mut s| {
                        let mut all = true;
                        s.get_object_refs(|id| all &= present(id)).is_ok() && all
                    });
            if !intact {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// References whose image is not complete, and deployments whose root
    /// names an image that cannot be read or names an object that is gone
    /// (a deployment keeps its image after `image rm`, so there may be no
    /// record to name instead).
    fn incomplete_images(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for rec in self.scan_records()?.records {
            if self.verify_image(&rec).is_err() {
                out.push(rec.reference().to_string());
            }
        }
        let objects = self.repo().objects_dir().map_err(|e| StoreError::Io {
            step: "opening",
            path: self.sysroot().join(REPO_PATH).join("objects"),
            source: e.into(),
        })?;
        for id in self.roots()? {
            // Reported, not acted on: a root whose link cannot be read is
            // listed as incomplete.
            let image = self.root_image(&id).unwrap_or(None);
            let complete = match image.map(|i| self.repo().objects_for_image(&i)) {
                Some(Ok(needed)) => needed.iter().all(|o| {
                    rustix::fs::statat(objects, o.to_object_pathname().as_str(), AtFlags::empty())
                        .is_ok()
                }),
                _ => false,
            };
            if !complete {
                out.push(format!("deployment {}", &id[..12]));
            }
        }
        Ok(out)
    }
}
