//! Lints about booting: the kernel, the initramfs, kernel arguments, /boot.
//!
//! The rules are staging's (osctl-deploy's `boot` module): the same kernel
//! directory constants and the same kargs.d parser. One difference is
//! left: staging's image tree never follows a symlink in the middle of a
//! path, while these lookups do within the rootfs.

use std::path::{Path, PathBuf};

use osctl_deploy::boot::{INITRAMFS, KARGS_DIRS, MODULES_DIR, VMLINUZ, parse_kargs_file};

use crate::initramfs::{self, Contains};
use crate::{Kind, LintError, Rootfs, show};

/// kargs.d files are a few lines; a bigger one is refused by its size
/// (the lint then says it could not check).
const MAX_KARGS_FILE: u64 = 64 * 1024;

/// Kernel directories under /usr/lib/modules: those holding a `vmlinuz`.
fn kernel_dirs(root: &Rootfs) -> Result<Vec<PathBuf>, LintError> {
    let mut dirs = Vec::new();
    for name in root.list(Path::new(MODULES_DIR))? {
        let dir = Path::new(MODULES_DIR).join(name);
        if root.kind(&dir)? == Some(Kind::Directory) && root.kind(&dir.join(VMLINUZ))?.is_some() {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Directory => "a directory",
        Kind::File { .. } => "a regular file",
        Kind::Symlink => "a symlink",
        Kind::Special => "a device, socket or FIFO",
    }
}

/// A problem with `path` unless it is a regular file.
fn regular_file(root: &Rootfs, path: &Path) -> Result<Option<String>, LintError> {
    Ok(match root.kind(path)? {
        Some(Kind::File { .. }) => None,
        Some(kind) => Some(format!(
            "{}: {}, not a regular file",
            show(path),
            describe(kind)
        )),
        None => Some(format!("{}: missing", show(path))),
    })
}

pub(super) fn kernel(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let dirs = kernel_dirs(root)?;
    match dirs.as_slice() {
        [] => Ok(vec![format!("{MODULES_DIR}: no <kver>/{VMLINUZ}")]),
        [dir] => Ok([
            regular_file(root, &dir.join(VMLINUZ))?,
            regular_file(root, &dir.join(INITRAMFS))?,
        ]
        .into_iter()
        .flatten()
        .collect()),
        several => Ok(several
            .iter()
            .map(|d| {
                format!(
                    "{}: one of {} kernels",
                    show(&d.join(VMLINUZ)),
                    several.len()
                )
            })
            .collect()),
    }
}

pub(super) fn initramfs_root_setup(root: &Rootfs) -> Result<Vec<String>, LintError> {
    // Without exactly one kernel and a regular initramfs, `kernel` reports;
    // there is no one initramfs to look into.
    let dirs = kernel_dirs(root)?;
    let [dir] = dirs.as_slice() else {
        return Ok(Vec::new());
    };
    let path = dir.join(INITRAMFS);
    if !matches!(root.kind(&path)?, Some(Kind::File { .. })) {
        return Ok(Vec::new());
    }
    let want = osctl_layout::INITRAMFS_ROOT_SETUP;
    let problem = match initramfs::contains(root.open_file(&path)?, want) {
        Ok(Contains::Yes) => return Ok(Vec::new()),
        Ok(Contains::No) => format!("{}: no {want} inside", show(&path)),
        Ok(Contains::Unreadable(format)) => format!(
            "{}: compressed with {format}, which lint cannot look into (use gzip, zstd or xz)",
            show(&path)
        ),
        Err(e) => format!("{}: not a readable initramfs: {e}", show(&path)),
    };
    Ok(vec![problem])
}

/// A kargs.d file, with its arguments for this architecture or why it is
/// invalid.
type KargsFile = (PathBuf, Result<Vec<String>, String>);

/// Every kargs.d file, in the order staging applies them.
fn kargs_files(root: &Rootfs) -> Result<Vec<KargsFile>, LintError> {
    let mut files = Vec::new();
    for dir in KARGS_DIRS {
        for name in root.list(Path::new(dir))? {
            let path = Path::new(dir).join(&name);
            if !name.to_string_lossy().ends_with(".toml") {
                continue;
            }
            let parsed = match root.read(&path, MAX_KARGS_FILE)? {
                None => Err("not a regular file".to_owned()),
                Some(bytes) => match String::from_utf8(bytes) {
                    Err(_) => Err("not UTF-8".to_owned()),
                    Ok(text) => parse_kargs_file(&text, std::env::consts::ARCH)
                        .map(Option::unwrap_or_default),
                },
            };
            files.push((path, parsed));
        }
    }
    Ok(files)
}

pub(super) fn kargs(root: &Rootfs) -> Result<Vec<String>, LintError> {
    Ok(kargs_files(root)?
        .into_iter()
        .filter_map(|(path, parsed)| parsed.err().map(|why| format!("{}: {why}", show(&path))))
        .collect())
}

pub(super) fn panic_karg(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let has_panic = kargs_files(root)?
        .into_iter()
        .filter_map(|(_, parsed)| parsed.ok())
        .flatten()
        .any(|karg| karg.starts_with("panic="));
    Ok(if has_panic {
        Vec::new()
    } else {
        vec![format!("no panic= in {}", KARGS_DIRS.join(" or "))]
    })
}

pub(super) fn boot_empty(root: &Rootfs) -> Result<Vec<String>, LintError> {
    Ok(root
        .list(Path::new("/boot"))?
        .into_iter()
        .map(|name| show(&Path::new("/boot").join(name)))
        .collect())
}
