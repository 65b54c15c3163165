//! `fsck`: every object's digest, every stream and image, every record.
//!
//! composefs-rs checks the repository (object digests, splitstreams, image
//! structure, links); osctl adds what only it knows: records that cannot be
//! read, ids that are not ids, records whose image, layers or GC roots are
//! missing, and EROFS images the kernel could not read. Every problem about
//! an object, stream or image names the images and deployments that need it
//! ([`crate::reach`]), so the admin knows what to re-pull.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::repository::FsckError;

use crate::layer_index::{self, LAYER_INDEX_PATH};
use crate::reach::{DEPLOY_REFS, OSCTL_REFS, Reach};
use crate::record::{gc_ref_name, is_hex_id};
use crate::{Store, StoreError};

/// What `fsck` found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub images_checked: u64,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The damage composefs-rs's fsck found, sorted by what `--repair` does.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// Objects whose content is wrong or unreadable.
    pub objects: BTreeSet<String>,
    /// Streams that cannot be read or name missing objects.
    pub streams: BTreeSet<String>,
    /// Layer indexes that cannot be used ([`crate::layer_index`]).
    pub indexes: BTreeSet<PathBuf>,
}

impl Store {
    /// Checks every object's digest, every stream and image, and that each
    /// record's image, config and layers are present, rooted and readable.
    pub async fn fsck(&self) -> Result<FsckReport, StoreError> {
        Ok(self.fsck_with_damage().await?.0)
    }

    pub(crate) async fn fsck_with_damage(&self) -> Result<(FsckReport, Damage), StoreError> {
        let r = self.repo().fsck().await.map_err(|e| StoreError::Repo {
            step: "checking the repository".into(),
            path: self.sysroot().join(crate::REPO_PATH),
            source: e,
        })?;
        let scan = self.scan_records()?;
        let reach = if r.errors().is_empty() {
            Reach::default()
        } else {
            self.reach(&scan)?
        };
        let mut damage = Damage::default();
        let mut report = FsckReport {
            objects_checked: r.objects_checked(),
            images_checked: r.images_checked(),
            problems: r
                .errors()
                .iter()
                .map(|e| attribute(e, &reach, &mut damage))
                .collect(),
        };
        let index_dir = self.sysroot().join(LAYER_INDEX_PATH);
        let objects = self.repo().objects_dir().map_err(|e| StoreError::Io {
            step: "opening",
            path: self.sysroot().join(crate::REPO_PATH).join("objects"),
            source: e.into(),
        })?;
        let indexes =
            layer_index::problems(&index_dir, objects.as_fd()).map_err(|e| StoreError::Io {
                step: "checking the layer indexes in",
                path: index_dir.clone(),
                source: e,
            })?;
        for (path, problem) in indexes {
            report.problems.push(problem);
            damage.indexes.insert(path);
        }
        report.problems.extend(
            scan.broken.iter().map(|b| {
                format!("{b} (`osctl image rm` or a re-pull of its reference replaces it)")
            }),
        );
        for name in self.root_names()? {
            if !is_hex_id(&name) {
                report.problems.push(format!(
                    "images/refs/{DEPLOY_REFS}/{}: not a deployment id",
                    name.escape_debug()
                ));
            }
        }
        let repo_dir = self.repo_dir()?;
        let mut images_read = BTreeSet::new();
        for rec in &scan.records {
            let key = rec.key();
            let who = rec.reference();
            images_read.insert(rec.image_id().to_string());
            if let Some(p) = self.kernel_readable(who, rec.image_id()) {
                report.problems.push(p);
            }
            for d in ["streams/refs", "images/refs"] {
                let p = Path::new(d).join(OSCTL_REFS).join(&key);
                if repo_dir.symlink_metadata(&p).is_err() {
                    report.problems.push(format!(
                        "{who}: GC root {} ({}) is missing",
                        p.display(),
                        gc_ref_name(&key)
                    ));
                }
            }
            for i in 0..rec.layers().len() {
                if self.layer_stream(rec, i)?.is_none() {
                    report.problems.push(format!(
                        "{who}: layer {} ({}) is missing",
                        i + 1,
                        rec.layers()[i].digest
                    ));
                }
            }
        }
        // Deployments keep their images after `image rm`: read those too.
        for id in self.roots()? {
            if let Some(image) = self.root_image(&id)?
                && images_read.insert(image.clone())
                && let Some(p) = self.kernel_readable(&format!("deployment {}", &id[..12]), &image)
            {
                report.problems.push(p);
            }
        }
        Ok((report, damage))
    }

    /// The problem with EROFS image `id` (needed by `who`), if it cannot
    /// be read, or not the way the kernel reads it.
    fn kernel_readable(&self, who: &str, id: &str) -> Option<String> {
        match self.read_image(id) {
            Err(e) => Some(format!("{who}: EROFS image {id} cannot be read: {e}")),
            Ok(bytes) => crate::erofs_check::check_kernel_readable(&bytes)
                .err()
                .map(|e| format!("{who}: the kernel cannot read EROFS image {id}: {e}")),
        }
    }

    /// The bytes of the EROFS image `id`.
    fn read_image(&self, id: &str) -> Result<Vec<u8>, String> {
        let (fd, _) = self
            .repo()
            .open_image(id)
            .map_err(|e| e.root_cause().to_string())?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

/// One composefs-rs finding as a line naming who needs the thing at fault,
/// and noted in `damage` for `--repair`.
fn attribute(e: &FsckError, reach: &Reach, damage: &mut Damage) -> String {
    use FsckError as E;
    let object = |path: &str| {
        Sha256HashValue::from_object_pathname(path.as_bytes())
            .ok()
            .and_then(|id| reach.objects.get(&id))
    };
    let stream = |path: &str| path.strip_prefix("streams/").map(str::to_string);
    let image = |path: &str| path.strip_prefix("images/").map(str::to_string);
    let owners = match e {
        E::ObjectInvalidName { path, .. }
        | E::ObjectOpenFailed { path, .. }
        | E::ObjectDigestMismatch { path, .. }
        | E::ObjectVerityFailed { path, .. }
        | E::ObjectVerityMissing { path } => {
            damage.objects.insert(path.clone());
            object(path)
        }
        E::StreamOpenFailed { path, .. }
        | E::StreamReadFailed { path, .. }
        | E::MissingObjectRef { path, .. } => {
            let name = stream(path);
            damage.streams.extend(name.clone());
            name.and_then(|n| reach.streams.get(&n))
        }
        E::MissingNamedRef { path, .. } => stream(path).and_then(|n| reach.streams.get(&n)),
        E::ImageOpenFailed { path, .. }
        | E::ImageReadFailed { path, .. }
        | E::ImageInvalid { path, .. } => image(path).and_then(|i| reach.images.get(&i)),
        E::ImageMissingObject { path, .. } => image(path).and_then(|i| reach.images.get(&i)),
        E::BrokenSymlink { path } | E::EntryNotSymlink { path } | E::StatFailed { path, .. } => {
            if let Some(label) = reach.refs.get(path) {
                return format!("{e} (GC root of {label})");
            }
            match (stream(path), image(path)) {
                (Some(name), _) if !name.starts_with("refs/") => {
                    damage.streams.insert(name.clone());
                    reach.streams.get(&name)
                }
                (_, Some(id)) if !id.starts_with("refs/") => reach.images.get(&id),
                _ => None,
            }
        }
        _ => None,
    };
    format!("{e} (needed by {})", reach.owners_of(owners))
}

/// Counts regular files under `objects/`.
pub(crate) fn count_objects(repo: &Path) -> Result<u64, StoreError> {
    let objects = repo.join("objects");
    let io = |path: &Path, e: std::io::Error| StoreError::Io {
        step: "counting objects in",
        path: path.to_path_buf(),
        source: e,
    };
    let rd = match std::fs::read_dir(&objects) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&objects, e)),
    };
    let mut n = 0;
    for sub in rd {
        let sub = sub.map_err(|e| io(&objects, e))?;
        for f in std::fs::read_dir(sub.path()).map_err(|e| io(&sub.path(), e))? {
            let f = f.map_err(|e| io(&sub.path(), e))?;
            if f.file_type().map_err(|e| io(&f.path(), e))?.is_file() {
                n += 1;
            }
        }
    }
    Ok(n)
}
