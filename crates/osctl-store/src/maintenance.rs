//! Removing images, garbage collection and consistency checks.
//!
//! Reachability is composefs-rs's: anything not reachable from a ref under
//! `streams/refs/` or `images/refs/` is garbage. osctl's part is keeping its
//! refs (`osctl/<key>`) in step with its records: `rm` deletes the record
//! first and the refs second, so a crash in between leaves a ref without a
//! record, which `gc` prunes. The reverse (a record without refs) cannot
//! arise from osctl's own ordering, and `fsck` reports it if it does.

use std::path::Path;

use cap_std::fs::Dir;
use osctl_image::ImageRef;

use crate::record::{ImageRecord, gc_ref_name, record_key};
use crate::{REPO_PATH, Store, StoreError, atomic};

/// What `gc` removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub objects_removed: u64,
    pub bytes_removed: u64,
    /// osctl refs whose record no longer exists (left by an interrupted `rm`).
    pub refs_pruned: u64,
}

/// What `fsck` found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub images_checked: u64,
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const REF_DIRS: [&str; 2] = ["streams/refs/osctl", "images/refs/osctl"];

impl Store {
    fn repo_dir(&self) -> Result<Dir, StoreError> {
        let path = self.sysroot().join(REPO_PATH);
        Dir::open_ambient_dir(&path, cap_std::ambient_authority()).map_err(|e| StoreError::Io {
            path,
            why: e.to_string(),
        })
    }

    /// Forgets `imgref` and frees the space only it used.
    pub fn remove(&self, imgref: &ImageRef) -> Result<(ImageRecord, GcReport), StoreError> {
        let naming = self.naming_lock(true)?;
        let record = self.get(imgref)?;
        let key = record_key(record.reference());
        let records_dir = self.sysroot().join(crate::RECORDS_PATH);
        let records =
            Dir::open_ambient_dir(&records_dir, cap_std::ambient_authority()).map_err(|e| {
                StoreError::Io {
                    path: records_dir.clone(),
                    why: e.to_string(),
                }
            })?;
        atomic::remove_durably(&records, &format!("{key}.json")).map_err(|e| StoreError::Io {
            path: records_dir,
            why: format!("removing record of {}: {e}", record.reference()),
        })?;
        let repo_dir = self.repo_dir()?;
        for d in REF_DIRS {
            let name = Path::new(d).join(&key);
            if let Err(e) = repo_dir.remove_file(&name)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(StoreError::Io {
                    path: self.sysroot().join(REPO_PATH).join(name),
                    why: e.to_string(),
                });
            }
        }
        drop(naming);
        let report = self.gc()?;
        Ok((record, report))
    }

    /// Prunes osctl refs without a record, then removes every object,
    /// stream and image no ref reaches.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let naming = self.naming_lock(true)?;
        let keys: std::collections::HashSet<String> =
            self.records()?.iter().map(|r| r.key()).collect();
        let repo_dir = self.repo_dir()?;
        let mut refs_pruned = 0;
        for d in REF_DIRS {
            let Ok(dir) = repo_dir.open_dir(d) else {
                continue;
            };
            for entry in dir.entries().map_err(|e| StoreError::Repo(e.to_string()))? {
                let entry = entry.map_err(|e| StoreError::Repo(e.to_string()))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if !keys.contains(&name) {
                    dir.remove_file(&name)
                        .map_err(|e| StoreError::Repo(e.to_string()))?;
                    refs_pruned += 1;
                }
            }
        }
        // Released before composefs-rs's GC, which waits for running pulls
        // to finish: holding both would deadlock against a pull waiting here.
        drop(naming);
        let r = self
            .repo()
            .gc(&[])
            .map_err(|e| StoreError::Repo(format!("{e:#}")))?;
        Ok(GcReport {
            objects_removed: r.objects_removed,
            bytes_removed: r.objects_bytes,
            refs_pruned,
        })
    }

    /// Checks every object's digest, every stream and image, and that each
    /// record's image, config and layers are present and rooted.
    pub async fn fsck(&self) -> Result<FsckReport, StoreError> {
        let r = self
            .repo()
            .fsck()
            .await
            .map_err(|e| StoreError::Repo(format!("{e:#}")))?;
        let mut report = FsckReport {
            objects_checked: r.objects_checked(),
            images_checked: r.images_checked(),
            problems: r.errors().iter().map(|e| e.to_string()).collect(),
        };
        let repo_dir = self.repo_dir()?;
        for rec in self.records()? {
            let key = rec.key();
            let who = rec.reference();
            if !self.image_exists(&rec) {
                report
                    .problems
                    .push(format!("{who}: EROFS image {} is missing", rec.image_id()));
            }
            for d in REF_DIRS {
                let p = Path::new(d).join(&key);
                if repo_dir.symlink_metadata(&p).is_err() {
                    report.problems.push(format!(
                        "{who}: GC root {} ({}) is missing",
                        p.display(),
                        gc_ref_name(&key)
                    ));
                }
            }
            for (i, l) in rec.layers().iter().enumerate() {
                let present = l
                    .diff_id
                    .parse()
                    .ok()
                    .map(|d| composefs_oci::layer_content_id(&d))
                    .and_then(|id| self.repo().has_stream(&id).ok().flatten())
                    .is_some();
                if !present {
                    report.problems.push(format!(
                        "{who}: layer {} ({}) is missing",
                        i + 1,
                        l.digest
                    ));
                }
            }
        }
        Ok(report)
    }
}

/// Counts regular files under `objects/`.
pub(crate) fn count_objects(repo: &Path) -> Result<u64, StoreError> {
    let objects = repo.join("objects");
    let mut n = 0;
    let rd = match std::fs::read_dir(&objects) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(StoreError::Io {
                path: objects,
                why: e.to_string(),
            });
        }
    };
    for sub in rd.flatten() {
        if let Ok(files) = std::fs::read_dir(sub.path()) {
            n += files
                .flatten()
                .filter(|f| f.file_type().is_ok_and(|t| t.is_file()))
                .count() as u64;
        }
    }
    Ok(n)
}

/// Where deployment GC roots live (relative to the repository): one per
/// deployment, so an image stays in the store while a deployment boots it,
/// whatever happens to the reference it was pulled as (re-pulled to a newer
/// digest, or removed with `image rm`).
const DEPLOY_REF_DIRS: [&str; 2] = ["streams/refs/deploy", "images/refs/deploy"];

impl Store {
    /// Roots `record`'s image (EROFS, config, layers) under `name`, so `gc`
    /// keeps it until [`Store::remove_root`].
    pub fn add_root(&self, name: &str, record: &ImageRecord) -> Result<(), StoreError> {
        let bad = |e: anyhow::Error| StoreError::Repo(format!("rooting {name}: {e:#}"));
        self.repo()
            .symlink(
                format!("images/refs/deploy/{name}"),
                format!("images/{}", record.image_id()),
            )
            .map_err(bad)?;
        self.repo()
            .name_stream(
                &format!("oci-config-{}", record.config_digest()),
                &format!("deploy/{name}"),
            )
            .map_err(bad)?;
        Ok(())
    }

    /// Drops the root named `name`; a missing root is not an error.
    pub fn remove_root(&self, name: &str) -> Result<(), StoreError> {
        let repo_dir = self.repo_dir()?;
        for d in DEPLOY_REF_DIRS {
            let p = Path::new(d).join(name);
            match repo_dir.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        path: self.sysroot().join(REPO_PATH).join(p),
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Names of the deployment roots present.
    pub fn roots(&self) -> Result<Vec<String>, StoreError> {
        let repo_dir = self.repo_dir()?;
        let Ok(dir) = repo_dir.open_dir(DEPLOY_REF_DIRS[1]) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for entry in dir.entries().map_err(|e| StoreError::Repo(e.to_string()))? {
            let entry = entry.map_err(|e| StoreError::Repo(e.to_string()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}
