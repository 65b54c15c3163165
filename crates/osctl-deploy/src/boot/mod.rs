//! Boot files: the kernel and initramfs taken from an image, its kernel
//! arguments, and the BLS type 1 entries and `loader.conf` default that
//! make a deployment bootable.
//!
//! # Model
//!
//! osctl follows bootc's conventions for what an image provides and the
//! [Boot Loader Specification] (type 1 entries, as read by systemd-boot and
//! GRUB's blscfg) for what the boot dir holds, so an image built for bootc
//! boots under osctl unchanged:
//!
//! - **Kernel** ([`find_kernel`]): exactly one directory under
//!   `/usr/lib/modules/` holds a `vmlinuz`, and its `initramfs.img` must
//!   exist too (bootc's layout; other module directories without a kernel
//!   are ignored). Zero or several kernels is an error naming what was
//!   found: osctl never guesses which kernel an image meant.
//! - **Boot files** ([`install_kernel`]): the pair is copied to
//!   `<boot>/osctl/<boot digest>/{vmlinuz,initramfs.img}`, where the boot
//!   digest is the sha256 over the vmlinuz bytes followed by the initramfs
//!   bytes. Deployments whose pair is byte-identical share one directory, so
//!   an upgrade that leaves the kernel alone writes nothing to the ESP. A
//!   directory is built under a `.tmp-` name and renamed into place, and
//!   removed by renaming it back to a `.tmp-` name first, so a digest-named
//!   directory is always complete.
//! - **Kernel arguments** ([`image_kargs`]): `kargs.d/*.toml` files in
//!   `/usr/lib/bootc/` (bootc's) then `/usr/lib/osctl/`, each directory's
//!   files sorted by name; `kargs = [...]` and an optional
//!   `match-architectures = [...]` (Rust architecture names, as bootc). As in
//!   bootc, parsing is strict: an unknown key, a missing `kargs` or an entry
//!   that is not exactly one argument fails, naming the file. osctl keeps
//!   image arguments and machine-local ones apart in each deployment's
//!   origin, so an update replaces the image's and carries the local ones;
//!   [`diff_kargs`] computes the same result for a combined list.
//! - **Entries** ([`write_entry`], [`read_entries`]): one
//!   `loader/entries/osctl-<id>.conf` per deployment, `options` =
//!   `composefs=<id>` then the kernel arguments. Only files named
//!   `osctl-<id>[+LEFT[-DONE]].conf` are ours; every other entry is left
//!   alone. The boot-counting suffix (systemd-boot's automatic boot
//!   assessment) is parsed, never written, here.
//! - **Default** ([`read_default`], [`write_default`]): the
//!   `default osctl-<id>.conf` line of `loader/loader.conf`; every other line
//!   is kept as it was.
//!
//! Every file is written through cap-std [`Dir`](cap_std::fs::Dir) handles
//! with write-temp + fsync + rename + fsync(dir)
//! ([`osctl_store::atomic`]); created directories are fsynced into their
//! parents. Leftover `.tmp-*` names from a crash are removed by the next
//! write to the same directory, so callers must hold osctl's deployment
//! lock (one writer at a time).
//!
//! [Boot Loader Specification]: https://uapi-group.org/specifications/specs/boot_loader_specification/

mod bls;
mod kargs;
mod kernel;
mod trial;

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use osctl_store::StoreError;
use osctl_store::atomic::{TMP_PREFIX, sync_dir};

pub use bls::{
    BadEntry, BlsEntry, EntryFile, SORT_KEY, Tries, bless_entry, entry_file_name, entry_title,
    os_release_name, read_all_entries, read_default, read_entries, remove_entry, write_default,
    write_entry,
};
pub use kargs::{KARGS_DIRS, diff_kargs, image_kargs, parse_kargs_file, split_cmdline};
pub use kernel::{
    INITRAMFS, KernelFiles, MODULES_DIR, VMLINUZ, boot_digest, find_kernel, install_kernel,
    remove_unused_kernels,
};
pub use trial::{
    SORT_KEY_FALLBACK, SORT_KEY_TRYING, TRIAL_DEFAULT, is_trial, normalize_sort_keys, trying,
    write_trial_default,
};

/// Why a boot-file operation failed; one line naming the image, file or
/// boot-dir path at fault (I/O causes are chained as sources).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error("no kernel: {MODULES_DIR} not found in {image}")]
    NoModulesDir { image: String },
    #[error("no kernel: {MODULES_DIR}/*/{VMLINUZ} not found in {image}")]
    NoKernel { image: String },
    /// Two or more module directories hold a vmlinuz.
    #[error(
        "{} kernels in {image}: {} (each has {MODULES_DIR}/<version>/{VMLINUZ}); an image must have exactly one",
        versions.len(), versions.join(", ")
    )]
    SeveralKernels {
        image: String,
        versions: Vec<String>,
    },
    #[error(
        "no initramfs: {MODULES_DIR}/{version}/{INITRAMFS} not found in {image} (kernel {version})"
    )]
    NoInitramfs { image: String, version: String },
    /// A file of the image is not what osctl expects (bad kargs.d TOML, a
    /// symlink where a regular file must be, …).
    #[error("{} in {image}: {why}", path.display())]
    ImageFile {
        image: String,
        path: PathBuf,
        why: String,
    },
    /// Reading a file of the image failed.
    #[error("reading {} of {image}", path.display())]
    ImageRead {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading the image from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `step` failed on `path`, relative to the boot dir.
    #[error("boot dir: {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the boot dir is not what osctl wrote (a malformed
    /// `osctl-*.conf` entry, a non-UTF-8 loader.conf, a boot-files directory
    /// whose content does not match its digest, …).
    #[error("boot dir: {}: {why}", path.display())]
    BootFile { path: PathBuf, why: String },
}

impl BootError {
    pub(crate) fn io(
        step: &'static str,
        path: impl AsRef<Path>,
    ) -> impl FnOnce(std::io::Error) -> BootError {
        let path = path.as_ref().to_owned();
        move |source| BootError::Io { step, path, source }
    }
}

/// Opens `path` (relative to `boot`) as a directory, creating it and any
/// missing parents; each created directory is fsynced into its parent.
pub(crate) fn ensure_dir(boot: &Dir, path: &str) -> Result<Dir, BootError> {
    let mut dir = boot.try_clone().map_err(BootError::io("open", "."))?;
    let mut here = PathBuf::new();
    for part in Path::new(path).components() {
        here.push(part);
        let created = match dir.create_dir(part) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(BootError::io("create", &here)(e)),
        };
        if created {
            let parent = here.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(&dir).map_err(BootError::io("fsync", parent.unwrap_or(Path::new("."))))?;
        }
        dir = dir.open_dir(part).map_err(BootError::io("open", &here))?;
    }
    Ok(dir)
}

/// Opens directory `name` of `dir` (shown as `shown`); `None` if absent.
pub(crate) fn open_dir_opt(
    dir: &Dir,
    name: &str,
    shown: impl AsRef<Path>,
) -> Result<Option<Dir>, BootError> {
    match dir.open_dir(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BootError::io("open", shown)(e)),
    }
}

/// Removes leftover temporaries (`.tmp-*`, files or directories, whose
/// name passes `ours`) from `dir` (shown as `shown`), left by a crash in the
/// middle of a write.
pub(crate) fn remove_temporaries(
    dir: &Dir,
    shown: &str,
    ours: impl Fn(&str) -> bool,
) -> Result<(), BootError> {
    let mut removed = false;
    for entry in dir.entries().map_err(BootError::io("list", shown))? {
        let entry = entry.map_err(BootError::io("list", shown))?;
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.starts_with(TMP_PREFIX) && ours(n))
        else {
            continue;
        };
        let path = Path::new(shown).join(name);
        let is_dir = entry
            .file_type()
            .map_err(BootError::io("stat", &path))?
            .is_dir();
        let result = if is_dir {
            dir.remove_dir_all(name)
        } else {
            dir.remove_file(name)
        };
        match result {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BootError::io("remove", &path)(e)),
        }
        tracing::debug!(path = %path.display(), "removed a leftover temporary");
    }
    if removed {
        sync_dir(dir).map_err(BootError::io("fsync", shown))?;
    }
    Ok(())
}
