//! First-boot sealing: enabling fs-verity on a store that was written where
//! fs-verity was not available.
//!
//! `osctl install` usually runs on a build host whose kernel or filesystem
//! has no fs-verity, so the installed store is *insecure*: its objects are
//! named by their fs-verity digests (computed in userspace) but the files do
//! not carry verity. The first boot whose command line demands verity seals
//! it, once:
//!
//! 1. every object gets `FS_IOC_ENABLE_VERITY` (sha256, 4 KiB blocks: the
//!    parameters the object names were computed with), and the digest the
//!    kernel then reports must equal the object's name — so sealing also
//!    checks every byte the installer wrote;
//! 2. `meta.json` gets verity **last**: composefs treats a repository whose
//!    `meta.json` has verity as a secure one. An interrupted seal leaves it
//!    without, and the next boot carries on (objects already sealed are
//!    measured, not enabled again).
//!
//! EROFS images are objects too (`images/<id>` links into `objects/`), so
//! they are sealed by step 1.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use composefs::fsverity::{
    EnableVerityError, FsVerityHashValue, Sha256HashValue, enable_verity_raw, measure_verity_opt,
};

use osctl_layout::partition;

use crate::SetupError;

/// What sealing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    objects: u64,
    enabled: u64,
    elapsed: Duration,
}

impl SealReport {
    /// Objects checked.
    pub fn objects(&self) -> u64 {
        self.objects
    }
    /// Objects whose verity this run enabled (the rest already had it).
    pub fn enabled(&self) -> u64 {
        self.enabled
    }
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Whether the store under `root` is sealed (its `meta.json` has fs-verity).
pub fn is_sealed(root: &Path) -> Result<bool, SetupError> {
    let meta = root.join(partition::STORE_META);
    let file = File::open(&meta).map_err(SetupError::io("opening", &meta))?;
    Ok(measure(&file, &meta)?.is_some())
}

/// Seals the store under `root` (see the module docs). Returns `None` when it
/// was sealed already.
pub fn seal(root: &Path) -> Result<Option<SealReport>, SetupError> {
    if is_sealed(root)? {
        return Ok(None);
    }
    let started = Instant::now();
    let mut report = SealReport {
        objects: 0,
        enabled: 0,
        elapsed: Duration::ZERO,
    };
    let objects = root.join(partition::STORE_OBJECTS);
    // Only the 256 fan-out directories (`00`..`ff`): a temporary file a
    // writer left behind (`.tmp-object-*`) is not an object.
    let mut fanout: Vec<PathBuf> = std::fs::read_dir(&objects)
        .map_err(SetupError::io("listing", &objects))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SetupError::io("listing", &objects))?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) && p.is_dir()
        })
        .collect();
    fanout.sort();
    for dir in fanout {
        let entries = std::fs::read_dir(&dir).map_err(SetupError::io("listing", &dir))?;
        for entry in entries {
            let path = entry.map_err(SetupError::io("listing", &dir))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            // The name is the digest: two hex digits of directory, the rest
            // in the file name.
            let expected = format!(
                "{}{}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if seal_file(&path)? {
                report.enabled += 1;
            }
            let found = measured(&path)?;
            if found != expected {
                return Err(SetupError::ObjectMismatch { path, found });
            }
            report.objects += 1;
        }
    }
    let meta = root.join(partition::STORE_META);
    seal_file(&meta)?;
    let store = File::open(root.join(partition::STORE))
        .map_err(SetupError::io("opening", root.join(partition::STORE)))?;
    rustix::fs::syncfs(&store).map_err(SetupError::io("syncing", root))?;
    report.elapsed = started.elapsed();
    Ok(Some(report))
}

/// Enables fs-verity on `path` unless it has it; returns whether it did.
fn seal_file(path: &Path) -> Result<bool, SetupError> {
    let file = File::open(path).map_err(SetupError::io("opening", path))?;
    if measure(&file, path)?.is_some() {
        return Ok(false);
    }
    match enable_verity_raw::<Sha256HashValue>(&file) {
        Ok(()) | Err(EnableVerityError::AlreadyEnabled) => Ok(true),
        Err(EnableVerityError::FilesystemNotSupported) => Err(SetupError::NoVerity {
            path: path.to_path_buf(),
            why: "the filesystem does not support it".into(),
        }),
        Err(e) => Err(SetupError::NoVerity {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// The kernel's fs-verity digest of `path`, as hex; an error if it has none.
pub fn measured(path: &Path) -> Result<String, SetupError> {
    let file = File::open(path).map_err(SetupError::io("opening", path))?;
    measure(&file, path)?
        .map(|d| d.to_hex())
        .ok_or_else(|| SetupError::NoVerity {
            path: path.to_path_buf(),
            why: "fs-verity is not enabled on it".into(),
        })
}

fn measure(file: impl AsFd, path: &Path) -> Result<Option<Sha256HashValue>, SetupError> {
    measure_verity_opt::<Sha256HashValue>(file)
        .map_err(SetupError::io("measuring fs-verity of", path))
}
