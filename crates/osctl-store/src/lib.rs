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
//! └── osctl/
//!     ├── images/<key>.json           image record (reference, digests, raw manifest+config)
//!     └── layers/<verity>.idx         a layer's entries, parsed once, for image builds:
//!                                     named by its splitstream's id (see [`layer_index`])
//! ```
//!
//! `<key>` is the sha256 of the canonical reference (see [`record`]). A layer
//! index is a cache of its splitstream: checked when read, made again when it
//! does not check out, removed by `gc` with its layer.
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
mod check;
mod compact;
mod erofs_check;
mod erofs_write;
mod error;
pub mod failpoint;
mod fsck;
mod gc;
mod image;
mod import;
mod layer_index;
pub mod limits;
mod object;
pub mod pull;
mod reach;
pub mod record;
mod records;
mod repair;
mod roots;
mod split;
pub mod test_hooks;
#[cfg(test)]
mod test_pull;
pub mod tree;
mod writeback;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::Dir;
use composefs::fsverity::Sha256HashValue;
use composefs::repository::{Repository, RepositoryConfig};
use osctl_image::ImageRef;

pub use error::{BoxError, Damage, StoreError, one_line};
pub use fsck::FsckReport;
pub use gc::GcReport;
pub use pull::{PullObserver, PullOutcome, Silent};
pub use record::ImageRecord;
pub use records::{BrokenRecord, RecordScan};
pub use repair::RepairReport;
pub use tree::{Content, EntryKind, ImageTree, WalkEntry};

use import::Repo;

/// Path of the composefs repository, relative to the sysroot.
pub const REPO_PATH: &str = osctl_layout::sysroot::STORE;
/// Path of the image records directory, relative to the sysroot.
pub const RECORDS_PATH: &str = osctl_layout::sysroot::RECORDS;
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

/// An open store rooted at a sysroot.
pub struct Store {
    root: PathBuf,
    records_dir: Dir,
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
        let io = |step: &'static str, path: &Path, e: std::io::Error| StoreError::Io {
            step,
            path: path.to_path_buf(),
            source: e,
        };
        let root = Dir::open_ambient_dir(sysroot, cap_std::ambient_authority())
            .map_err(|e| io("opening the sysroot", sysroot, e))?;
        let repo_path = sysroot.join(REPO_PATH);
        let meta = Path::new(REPO_PATH).join("meta.json");
        let exists = root
            .try_exists(&meta)
            .map_err(|e| io("looking for", &sysroot.join(&meta), e))?;
        if !exists && !create {
            return Err(StoreError::NoStore(repo_path));
        }
        // Probed before anything is created: a store this process cannot
        // classify is not created at all.
        let secure = if exists {
            None
        } else {
            let parent = Path::new(REPO_PATH)
                .parent()
                .expect("REPO_PATH has a parent");
            Some(
                probe_verity(&root, parent).map_err(|e| StoreError::VerityProbe {
                    path: sysroot.join(parent),
                    source: e,
                })?,
            )
        };
        root.create_dir_all(RECORDS_PATH)
            .map_err(|e| io("creating", &sysroot.join(RECORDS_PATH), e))?;
        let records = root
            .open_dir(RECORDS_PATH)
            .map_err(|e| io("opening", &sysroot.join(RECORDS_PATH), e))?;
        let repo = match secure {
            None => Repository::open_path(&root, REPO_PATH).map_err(|e| StoreError::Repo {
                step: "opening the repository".into(),
                path: repo_path.clone(),
                source: e.into(),
            })?,
            Some(secure) => {
                let mut config = RepositoryConfig::default();
                if !secure {
                    config = config.set_insecure();
                }
                let (repo, _created) = Repository::init_path(&root, REPO_PATH, config)
                    .map_err(|e| error::repo_write_error(&repo_path, "creating the store", e))?;
                repo
            }
        };
        let verity = if repo.is_insecure() {
            VerityMode::Insecure
        } else {
            VerityMode::Enforced
        };
        Ok(Store {
            root: sysroot.to_path_buf(),
            records_dir: records,
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

    pub(crate) fn records_dir(&self) -> &Dir {
        &self.records_dir
    }

    /// Fails with [`StoreError::Write`] when nothing can be written to the
    /// store: its filesystem is mounted read-only or the directory is not
    /// writable. Checked before a pull writes anything, so the error says so
    /// instead of whatever composefs-rs trips over first.
    pub(crate) fn ensure_writable(&self) -> Result<(), StoreError> {
        use rustix::fs::{Access, AtFlags, StatVfsMountFlags};
        let path = self.root.join(REPO_PATH);
        let fail = |e: rustix::io::Errno| error::write_error(&path, "", e.into());
        let fd = self.repo.repo_fd();
        let st = rustix::fs::fstatvfs(fd).map_err(fail)?;
        if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return Err(fail(rustix::io::Errno::ROFS));
        }
        rustix::fs::accessat(fd, ".", Access::WRITE_OK, AtFlags::empty()).map_err(fail)
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
            .map_err(|e| {
                if chain_has_errno(&e, rustix::io::Errno::NOTBLK) {
                    // The kernel mounts an EROFS image straight from its file
                    // only on filesystems that can read file pages into the
                    // page cache (ext4, xfs, btrfs, …); tmpfs cannot.
                    StoreError::MountUnsupported {
                        image: record.reference().to_string(),
                        store: self.root.join(REPO_PATH),
                        source: e,
                    }
                } else {
                    StoreError::Mount {
                        image: record.reference().to_string(),
                        target: target.to_path_buf(),
                        source: e,
                    }
                }
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
        let io = |step: &'static str, e: std::io::Error| StoreError::Io {
            step,
            path: path.clone(),
            source: e,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).map_err(|e| io("locking", e.into()))?;
        Ok(file)
    }

    /// Counts the content objects in the store (for reports and tests).
    pub fn object_count(&self) -> Result<u64, StoreError> {
        fsck::count_objects(&self.root.join(REPO_PATH))
    }
}

/// Whether `errno` is anywhere in `e`'s chain (as an `io::Error` or a
/// rustix `Errno`).
fn chain_has_errno(e: &anyhow::Error, errno: rustix::io::Errno) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rustix::io::Errno>() == Some(&errno)
            || c.downcast_ref::<std::io::Error>()
                .and_then(rustix::io::Errno::from_io_error)
                == Some(errno)
    })
}

/// Probes whether the filesystem holding `dir` can enable fs-verity, by
/// trying it on a scratch file (closed for writing first, as the kernel
/// requires).
///
/// Only the kernel's "not supported here" answers (`EOPNOTSUPP`, `ENOTTY`)
/// mean an insecure store. Any other failure (the scratch file cannot be
/// written, `EIO`, `ENOSPC`, `EACCES`, …) says nothing about verity and is
/// an error: guessing "insecure" there would fix the store's mode forever.
fn probe_verity(root: &Dir, dir: &Path) -> std::io::Result<bool> {
    use composefs::fsverity::EnableVerityError;
    let name = dir.join(format!(".verity-probe-{}", std::process::id()));
    let probe = (|| -> std::io::Result<bool> {
        root.create_dir_all(dir)?;
        root.write(&name, b"osctl fs-verity probe")?;
        let f = root.open(&name)?;
        match composefs::fsverity::enable_verity_with_retry::<Sha256HashValue>(&f) {
            Ok(()) => Ok(true),
            Err(EnableVerityError::FilesystemNotSupported) => Ok(false),
            Err(EnableVerityError::Io(e)) => Err(e),
            Err(other) => Err(std::io::Error::other(other.to_string())),
        }
    })();
    let removed = match root.remove_file(&name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    let secure = probe?;
    removed?;
    Ok(secure)
}
