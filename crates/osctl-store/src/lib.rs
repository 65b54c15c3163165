//! osctl's image store: the *store* step of the data path.
//!
//! A composefs-rs repository holds the content; osctl adds one record per
//! pulled reference next to it. Everything lives under the sysroot
//! (`--sysroot`, default `/`), reached through a cap-std [`Dir`] so that tests
//! run on scratch directories:
//!
//! ```text
//! <sysroot>/sysroot/
//! ├── composefs/                      composefs-rs repository (sha256 object ids)
//! │   ├── meta.json                   algorithm + format; fs-verity on it = secure store
//! │   ├── objects/ab/cdef…            file contents, named by fs-verity digest, shared
//! │   ├── streams/oci-layer-sha256:…  one splitstream per layer (tar headers + object refs)
//! │   ├── streams/oci-config-sha256:… config + named refs to its layers and EROFS image
//! │   ├── streams/refs/osctl/<key>    GC root: → the image's config stream
//! │   ├── images/<image id>           EROFS image (object), mounted by its id
//! │   └── images/refs/osctl/<key>     GC root: → the EROFS image
//! └── osctl/images/<key>.json         image record (reference, digests, raw manifest+config)
//! ```
//!
//! `<key>` is the sha256 of the canonical reference (see [`record`]).
//!
//! Model: composefs owns content and reachability; osctl owns naming. A
//! record is written only after the objects, streams and refs it needs are
//! durable, so the record set is always the set of complete images. Removing
//! an image deletes its record, then its refs; `gc` frees what no ref reaches.
//!
//! fs-verity: a new store is created *secure* (verity required on every
//! object) when the filesystem supports fs-verity, *insecure* otherwise; the
//! mode is fixed at creation and reported by [`Store::verity`].
#![forbid(unsafe_code)]

pub mod atomic;
pub mod failpoint;
mod image;
mod import;
mod maintenance;
pub mod pull;
pub mod record;
pub mod test_hooks;
pub mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::Dir;
use composefs::fsverity::Sha256HashValue;
use composefs::repository::{Repository, RepositoryConfig};
use osctl_image::{FetchError, ImageRef};

pub use maintenance::{FsckReport, GcReport};
pub use pull::{PullObserver, PullOutcome, Silent};
pub use record::ImageRecord;
pub use tree::{EntryKind, ImageTree};

use import::Repo;

/// Path of the composefs repository, relative to the sysroot.
pub const REPO_PATH: &str = "sysroot/composefs";
/// Path of the image records directory, relative to the sysroot.
pub const RECORDS_PATH: &str = "sysroot/osctl/images";
/// Lock file ordering ref writes against ref pruning (see `naming_lock`).
const NAMING_LOCK: &str = "sysroot/osctl/naming.lock";

/// Whether the store's objects are protected by fs-verity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerityMode {
    /// Every object has fs-verity enabled; the kernel checks reads.
    Enforced,
    /// The filesystem lacks fs-verity; object names are still their verity
    /// digests, so verity can be enabled later without renaming anything.
    Insecure,
}

impl std::fmt::Display for VerityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerityMode::Enforced => "fs-verity enforced",
            VerityMode::Insecure => "insecure mode: no fs-verity on this filesystem",
        })
    }
}

/// Why a store operation failed; one line naming the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Image(#[from] FetchError),
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{what}: diff_id mismatch: config says {expected}, content hashes to {actual}")]
    DiffIdMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("no image {0} in the store (see osctl image list)")]
    NotInStore(String),
    #[error("no osctl store at {0}")]
    NoStore(PathBuf),
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("store: {0}")]
    Repo(String),
    #[error("{0}")]
    Other(String),
}

/// An open store rooted at a sysroot.
pub struct Store {
    root: PathBuf,
    records: Dir,
    repo: Arc<Repo>,
    verity: VerityMode,
}

impl Store {
    /// Opens the store under `sysroot`, creating it if absent.
    pub fn open_or_create(sysroot: &Path) -> Result<Self, StoreError> {
        Self::open_inner(sysroot, true)
    }

    /// Opens an existing store; [`StoreError::NoStore`] if there is none.
    pub fn open(sysroot: &Path) -> Result<Self, StoreError> {
        Self::open_inner(sysroot, false)
    }

    fn open_inner(sysroot: &Path, create: bool) -> Result<Self, StoreError> {
        let io = |path: &Path, e: std::io::Error| StoreError::Io {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let root = Dir::open_ambient_dir(sysroot, cap_std::ambient_authority()).map_err(|e| {
            StoreError::Io {
                path: sysroot.to_path_buf(),
                why: format!("cannot open the sysroot: {e}"),
            }
        })?;
        let repo_path = sysroot.join(REPO_PATH);
        let exists = root
            .try_exists(Path::new(REPO_PATH).join("meta.json"))
            .unwrap_or(false);
        if !exists && !create {
            return Err(StoreError::NoStore(repo_path));
        }
        root.create_dir_all(RECORDS_PATH)
            .map_err(|e| io(&sysroot.join(RECORDS_PATH), e))?;
        let records = root
            .open_dir(RECORDS_PATH)
            .map_err(|e| io(&sysroot.join(RECORDS_PATH), e))?;
        let repo = if exists {
            Repository::open_path(&root, REPO_PATH)
                .map_err(|e| StoreError::Repo(format!("opening {}: {e}", repo_path.display())))?
        } else {
            let parent = Path::new(REPO_PATH)
                .parent()
                .expect("REPO_PATH has a parent");
            let secure = filesystem_has_verity(&root, parent);
            let mut config = RepositoryConfig::default();
            if !secure {
                config = config.set_insecure();
            }
            let (repo, _created) =
                Repository::init_path(&root, REPO_PATH, config).map_err(|e| {
                    StoreError::Repo(format!("creating {}: {e:#}", repo_path.display()))
                })?;
            repo
        };
        let verity = if repo.is_insecure() {
            VerityMode::Insecure
        } else {
            VerityMode::Enforced
        };
        Ok(Store {
            root: sysroot.to_path_buf(),
            records,
            repo: Arc::new(repo),
            verity,
        })
    }

    /// The store's fs-verity mode.
    pub fn verity(&self) -> VerityMode {
        self.verity
    }

    /// The sysroot this store lives under.
    pub fn sysroot(&self) -> &Path {
        &self.root
    }

    pub(crate) fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Every complete image, sorted by reference.
    pub fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let path = self.root.join(RECORDS_PATH);
        let mut out = Vec::new();
        for entry in self.records.entries().map_err(|e| StoreError::Io {
            path: path.clone(),
            why: e.to_string(),
        })? {
            let entry = entry.map_err(|e| StoreError::Io {
                path: path.clone(),
                why: e.to_string(),
            })?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(atomic::TMP_PREFIX) || !name.ends_with(".json") {
                continue;
            }
            let data = self.records.read(&name).map_err(|e| StoreError::Io {
                path: path.join(&name),
                why: e.to_string(),
            })?;
            let rec: ImageRecord = serde_json::from_slice(&data).map_err(|e| StoreError::Io {
                path: path.join(&name),
                why: format!("unreadable record: {e}"),
            })?;
            out.push(rec);
        }
        out.sort_by(|a, b| a.reference().cmp(b.reference()));
        Ok(out)
    }

    /// The record for `imgref`, if it was pulled.
    pub fn find(&self, imgref: &ImageRef) -> Result<Option<ImageRecord>, StoreError> {
        let wanted = imgref.to_string();
        Ok(self
            .records()?
            .into_iter()
            .find(|r| r.reference() == wanted))
    }

    /// Like [`Self::find`], but a missing image is an error.
    pub fn get(&self, imgref: &ImageRef) -> Result<ImageRecord, StoreError> {
        self.find(imgref)?
            .ok_or_else(|| StoreError::NotInStore(imgref.to_string()))
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let mut data =
            serde_json::to_vec_pretty(record).map_err(|e| StoreError::Other(e.to_string()))?;
        data.write_all(b"\n").expect("writing to a Vec cannot fail");
        atomic::write_atomic(&self.records, &format!("{}.json", record.key()), &data).map_err(|e| {
            StoreError::Io {
                path: self.root.join(RECORDS_PATH),
                why: format!("writing record for {}: {e}", record.reference()),
            }
        })
    }

    pub(crate) fn image_exists(&self, record: &ImageRecord) -> bool {
        self.repo.open_image(record.image_id()).is_ok()
    }

    /// Mounts `imgref`'s composefs image read-only at `target`.
    ///
    /// The image is mounted by its hex id, never by ref name: composefs-rs
    /// demands fs-verity for mounts by name, which an insecure store cannot
    /// give (every file would read as EIO).
    pub fn mount(&self, imgref: &ImageRef, target: &Path) -> Result<(), StoreError> {
        let record = self.get(imgref)?;
        self.repo
            .mount_at(record.image_id(), target, &Default::default())
            .map_err(|e| StoreError::Io {
                path: target.to_path_buf(),
                why: format!("mounting {}: {e:#}", record.reference()),
            })
    }

    /// Serialises naming against pruning: a pull holds it shared from
    /// writing its GC refs to writing its record; `gc` and `rm` hold it
    /// exclusively while they list records and prune refs, so `gc` can never
    /// take a fresh pull's refs for the leftovers of an interrupted `rm`.
    /// (composefs-rs's own lock then keeps `gc` from deleting objects while
    /// any pull is running.)
    pub(crate) fn naming_lock(&self, exclusive: bool) -> Result<std::fs::File, StoreError> {
        let path = self.root.join(NAMING_LOCK);
        let io = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            why: e.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).map_err(|e| io(e.into()))?;
        Ok(file)
    }

    /// Counts the content objects in the store (for reports and tests).
    pub fn object_count(&self) -> Result<u64, StoreError> {
        maintenance::count_objects(&self.root.join(REPO_PATH))
    }
}

/// Probes whether the filesystem holding `dir` can enable fs-verity, by
/// trying it on a scratch file (closed for writing first, as the kernel
/// requires).
fn filesystem_has_verity(root: &Dir, dir: &Path) -> bool {
    let name = dir.join(format!(".verity-probe-{}", std::process::id()));
    let probe = (|| -> std::io::Result<bool> {
        root.create_dir_all(dir)?;
        root.write(&name, b"osctl fs-verity probe")?;
        let f = root.open(&name)?;
        Ok(composefs::fsverity::enable_verity_raw::<Sha256HashValue>(&f).is_ok())
    })();
    let _ = root.remove_file(&name);
    probe.unwrap_or(false)
}
