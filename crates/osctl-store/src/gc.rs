//! Removing images and garbage collection.
//!
//! Reachability is composefs-rs's: anything not reachable from a ref under
//! `streams/refs/` or `images/refs/` is garbage. osctl's part is keeping its
//! refs (`osctl/<key>`) in step with its records: `rm` deletes the record
//! first and the refs second, so a crash in between leaves a ref without a
//! record, which `gc` prunes. The reverse (a record without refs) cannot
//! arise from osctl's own ordering, and `fsck` reports it if it does.
//!
//! A record file that cannot be read still keeps its refs: until it is
//! removed or replaced, nobody can tell which objects its image needs. The
//! temporary of a record write a crash interrupted is removed.
//!
//! When a root cannot be walked (its EROFS image or a stream it names was
//! deleted or truncated), composefs-rs's GC stops before removing anything.
//! `gc` then still prunes refs and reports the damaged roots, but removes no
//! objects: which objects a damaged root needs is unknown, and guessing
//! could delete what a deployment boots from.

use std::os::fd::AsFd as _;
use std::path::Path;

use cap_std::fs::Dir;
use osctl_image::ImageRef;

use crate::layer_index::{self, LAYER_INDEX_PATH};
use crate::record::record_key;
use crate::records::record_file;
use crate::{RECORDS_PATH, REPO_PATH, Store, StoreError, atomic};

/// What `gc` did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub objects_removed: u64,
    pub bytes_removed: u64,
    /// osctl refs whose record no longer exists (left by an interrupted `rm`).
    pub refs_pruned: u64,
    /// Roots that could not be walked; when not empty, no object was removed.
    pub damaged: Vec<String>,
}

const REF_DIRS: [&str; 2] = ["streams/refs/osctl", "images/refs/osctl"];

impl Store {
    pub(crate) fn repo_dir(&self) -> Result<Dir, StoreError> {
        let path = self.sysroot().join(REPO_PATH);
        Dir::open_ambient_dir(&path, cap_std::ambient_authority()).map_err(|e| StoreError::Io {
            step: "opening",
            path,
            source: e,
        })
    }

    /// Forgets `imgref` and frees the space only it used. Works on a
    /// reference whose record file is unreadable too: that is how such a
    /// record is cleared.
    pub fn remove(&self, imgref: &ImageRef) -> Result<GcReport, StoreError> {
        let naming = self.naming_lock(true)?;
        let reference = imgref.to_string();
        let key = record_key(&reference);
        let file = record_file(&key);
        let records_path = self.sysroot().join(RECORDS_PATH);
        let present = self
            .records_dir()
            .try_exists(&file)
            .map_err(|e| StoreError::Io {
                step: "looking for",
                path: records_path.join(&file),
                source: e,
            })?;
        let repo_dir = self.repo_dir()?;
        // A removal interrupted after the record went left its refs: a
        // re-run finishes it rather than saying there is nothing to remove.
        let interrupted = REF_DIRS
            .iter()
            .any(|d| repo_dir.symlink_metadata(Path::new(d).join(&key)).is_ok());
        if !present && !interrupted {
            return Err(StoreError::NotInStore(reference));
        }
        atomic::remove_durably(self.records_dir(), &file).map_err(|e| StoreError::Io {
            step: "removing the record",
            path: records_path.join(&file),
            source: e,
        })?;
        crate::failpoint::hit("rm:after-record");
        for d in REF_DIRS {
            let name = Path::new(d).join(&key);
            if let Err(e) = repo_dir.remove_file(&name)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(StoreError::Io {
                    step: "removing the ref",
                    path: self.sysroot().join(REPO_PATH).join(name),
                    source: e,
                });
            }
        }
        crate::failpoint::hit("rm:after-refs");
        drop(naming);
        self.gc()
    }

    /// Removes the temporaries of record writes a crash interrupted
    /// (`atomic::write_atomic` leaves `.tmp-*` until its rename). Called
    /// under the exclusive naming lock: the only record writer (a pull)
    /// holds it shared while it writes, so no temporary is in use.
    fn remove_record_temporaries(&self) -> Result<(), StoreError> {
        let dir = self.records_dir();
        let fail = |e: std::io::Error| StoreError::Io {
            step: "removing an interrupted record write in",
            path: self.sysroot().join(RECORDS_PATH),
            source: e,
        };
        for entry in dir.entries().map_err(fail)? {
            let name = entry.map_err(fail)?.file_name();
            if name.to_string_lossy().starts_with(atomic::TMP_PREFIX) {
                dir.remove_file(&name).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Removes the layer indexes whose splitstream the GC removed
    /// ([`crate::layer_index`]), under the naming lock: a pull writes
    /// indexes while it holds it (shared), in its image build.
    fn prune_layer_indexes(&self) -> Result<(), StoreError> {
        let _naming = self.naming_lock(true)?;
        let dir = self.sysroot().join(LAYER_INDEX_PATH);
        let objects = self.repo().objects_dir().map_err(|e| StoreError::Io {
            step: "opening",
            path: self.sysroot().join(REPO_PATH).join("objects"),
            source: e.into(),
        })?;
        let removed = layer_index::prune(&dir, objects.as_fd()).map_err(|e| StoreError::Io {
            step: "removing the layer indexes of removed layers in",
            path: dir.clone(),
            source: e,
        })?;
        tracing::debug!(removed, "layer indexes pruned");
        Ok(())
    }

    /// Prunes osctl refs without a record, then removes every object,
    /// stream and image no ref reaches (unless a root is damaged: see the
    /// module docs).
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let naming = self.naming_lock(true)?;
        let scan = self.scan_records()?;
        let keys = scan.present_keys();
        let repo_dir = self.repo_dir()?;
        let mut refs_pruned = 0;
        for d in REF_DIRS {
            let path = self.sysroot().join(REPO_PATH).join(d);
            let io = |step: &'static str, path: &Path, e: std::io::Error| StoreError::Io {
                step,
                path: path.to_path_buf(),
                source: e,
            };
            let dir = match repo_dir.open_dir(d) {
                Ok(dir) => dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("opening", &path, e)),
            };
            for entry in dir.entries().map_err(|e| io("listing", &path, e))? {
                let entry = entry.map_err(|e| io("listing", &path, e))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if !keys.contains(&name) {
                    dir.remove_file(&name)
                        .map_err(|e| io("pruning the ref", &path.join(&name), e))?;
                    refs_pruned += 1;
                }
            }
        }
        self.remove_record_temporaries()?;
        crate::failpoint::hit("gc:after-refs-pruned");
        // Released before composefs-rs's GC, which waits for running pulls
        // to finish: holding both would deadlock against a pull waiting here.
        drop(naming);
        match self.repo().gc(&[]) {
            Ok(r) => {
                self.prune_layer_indexes()?;
                Ok(GcReport {
                    objects_removed: r.objects_removed,
                    bytes_removed: r.objects_bytes,
                    refs_pruned,
                    damaged: Vec::new(),
                })
            }
            Err(e) => {
                // composefs-rs leaves its exclusive lock held when its GC
                // fails; step back to the shared lock every open handle has.
                rustix::fs::flock(
                    self.repo().repo_fd(),
                    rustix::fs::FlockOperation::LockShared,
                )
                .map_err(|e| StoreError::Io {
                    step: "releasing the GC lock on",
                    path: self.sysroot().join(REPO_PATH),
                    source: e.into(),
                })?;
                let damaged = self.reach(&scan)?.broken;
                if damaged.is_empty() {
                    return Err(StoreError::Repo {
                        step: "collecting garbage".into(),
                        path: self.sysroot().join(REPO_PATH),
                        source: e,
                    });
                }
                Ok(GcReport {
                    refs_pruned,
                    damaged,
                    ..GcReport::default()
                })
            }
        }
    }
}
