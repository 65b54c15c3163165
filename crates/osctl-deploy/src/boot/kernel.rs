//! The image's kernel and initramfs, and their shared copies in the boot dir.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use osctl_store::atomic::{TMP_PREFIX, sync_dir, sync_renamed};
use osctl_store::{EntryKind, ImageTree};
use sha2::{Digest, Sha256};

use super::{BootError, ensure_dir, open_dir_opt, remove_temporaries};
use crate::layout::KERNELS_DIR;

/// Where images keep their kernels (bootc's convention).
pub const MODULES_DIR: &str = "/usr/lib/modules";
/// The kernel's file name, in the image and in the boot dir.
pub const VMLINUZ: &str = crate::layout::VMLINUZ;
/// The initramfs's file name, in the image and in the boot dir.
pub const INITRAMFS: &str = crate::layout::INITRAMFS;

/// The one kernel of an image, as found by [`find_kernel`] (only there:
/// [`install_kernel`] copies exactly what was checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    image: String,
    version: String,
    vmlinuz: PathBuf,
    initramfs: PathBuf,
}

impl KernelFiles {
    /// The image it was found in (its reference), for messages.
    pub fn image(&self) -> &str {
        &self.image
    }
    /// The kernel release: the directory name under `/usr/lib/modules`.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// `/usr/lib/modules/<version>/vmlinuz`.
    pub fn vmlinuz(&self) -> &Path {
        &self.vmlinuz
    }
    /// `/usr/lib/modules/<version>/initramfs.img`.
    pub fn initramfs(&self) -> &Path {
        &self.initramfs
    }
}

/// Finds the image's kernel: the one directory under `/usr/lib/modules`
/// holding a `vmlinuz`, which must also hold an `initramfs.img`; both must
/// be regular files. `image` names the image in errors.
pub fn find_kernel(tree: &ImageTree, image: &str) -> Result<KernelFiles, BootError> {
    let modules = Path::new(MODULES_DIR);
    match tree.kind(modules) {
        Some(EntryKind::Directory) => {}
        None => {
            return Err(BootError::NoModulesDir {
                image: image.to_owned(),
            });
        }
        Some(kind) => {
            return Err(BootError::ImageFile {
                image: image.to_owned(),
                path: modules.to_owned(),
                why: format!("is {}, not a directory", describe(kind)),
            });
        }
    }
    let versions: Vec<String> = tree
        .list(modules)
        .into_iter()
        .filter(|(name, kind)| {
            *kind == EntryKind::Directory && tree.kind(&modules.join(name).join(VMLINUZ)).is_some()
        })
        .map(|(name, _)| name)
        .collect();
    let version = match <[String; 1]>::try_from(versions) {
        Ok([version]) => version,
        Err(versions) if versions.is_empty() => {
            return Err(BootError::NoKernel {
                image: image.to_owned(),
            });
        }
        Err(versions) => {
            return Err(BootError::SeveralKernels {
                image: image.to_owned(),
                versions,
            });
        }
    };
    let dir = modules.join(&version);
    let vmlinuz = dir.join(VMLINUZ);
    let initramfs = dir.join(INITRAMFS);
    if tree.kind(&initramfs).is_none() {
        return Err(BootError::NoInitramfs {
            image: image.to_owned(),
            version,
        });
    }
    for path in [&vmlinuz, &initramfs] {
        match tree.kind(path) {
            Some(EntryKind::Regular) | None => {}
            Some(kind) => {
                return Err(BootError::ImageFile {
                    image: image.to_owned(),
                    path: path.clone(),
                    why: format!("is {}, not a regular file", describe(kind)),
                });
            }
        }
    }
    Ok(KernelFiles {
        image: image.to_owned(),
        version,
        vmlinuz,
        initramfs,
    })
}

/// The boot digest of the kernel pair: sha256 (hex) over the vmlinuz bytes
/// followed by the initramfs bytes, streamed from the store.
pub fn boot_digest(tree: &ImageTree, kernel: &KernelFiles) -> Result<String, BootError> {
    Ok(hash_pair(tree, kernel, None)?.0)
}

/// Copies the kernel pair to `<boot>/osctl/<boot digest>/` and returns the
/// digest. If that directory exists already (another deployment has the
/// same pair) it is reused once its content hashes to the digest; one that
/// does not (a damaged file, a hand edit) is replaced. A new pair is written
/// into a `.tmp-` directory next to it, fsynced, and renamed into place (or
/// exchanged with the damaged one in one `renameat2`, so the deployments
/// that share it never see it missing).
pub fn install_kernel(
    tree: &ImageTree,
    kernel: &KernelFiles,
    boot: &Dir,
) -> Result<String, BootError> {
    let (digest, sizes) = hash_pair(tree, kernel, None)?;
    let kernels = ensure_dir(boot, KERNELS_DIR)?;
    let final_rel = Path::new(KERNELS_DIR).join(&digest);
    let damaged = match open_dir_opt(&kernels, &digest, &final_rel)? {
        Some(existing) => match installed_digest(&existing, &final_rel)? {
            Some((found, found_sizes)) if found == digest && found_sizes == sizes => {
                tracing::debug!(digest, "boot files already present, shared");
                return Ok(digest);
            }
            // The same bytes split differently between the two files: a
            // different pair under the same name. Replacing it would break
            // the deployments that use it.
            Some((found, found_sizes)) if found == digest => {
                return Err(BootError::BootFile {
                    path: final_rel.join(VMLINUZ),
                    why: format!(
                        "holds a {}-byte kernel and a {}-byte initramfs whose bytes hash like this image's {}-byte and {}-byte pair; refusing to share or replace it",
                        found_sizes[0], found_sizes[1], sizes[0], sizes[1]
                    ),
                });
            }
            found => {
                tracing::warn!(
                    "{} does not hold the kernel pair its name says ({}): replacing it",
                    final_rel.display(),
                    found.map_or("a file is missing".to_owned(), |(f, _)| format!(
                        "it hashes to {f}"
                    ))
                );
                true
            }
        },
        None => false,
    };
    remove_temporaries(&kernels, KERNELS_DIR, |_| true)?;

    let tmp = format!("{TMP_PREFIX}{}-{digest}", std::process::id());
    let tmp_rel = Path::new(KERNELS_DIR).join(&tmp);
    kernels
        .create_dir(&tmp)
        .map_err(BootError::io("create", &tmp_rel))?;
    let result = (|| {
        let dir = kernels
            .open_dir(&tmp)
            .map_err(BootError::io("open", &tmp_rel))?;
        let (copied, _) = hash_pair(tree, kernel, Some((&dir, &tmp_rel)))?;
        if copied != digest {
            return Err(BootError::ImageFile {
                image: kernel.image.clone(),
                path: kernel.vmlinuz.clone(),
                why: format!(
                    "kernel pair hashed to {digest} then to {copied} while copying; the store changed under osctl"
                ),
            });
        }
        sync_dir(&dir).map_err(BootError::io("fsync", &tmp_rel))?;
        if damaged {
            rustix::fs::renameat_with(
                &kernels,
                &tmp,
                &kernels,
                &digest,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| BootError::io("exchange into place", &final_rel)(e.into()))?;
            // On FAT a renamed directory's entry names its first cluster
            // only once the directory itself is written back.
            sync_renamed(&kernels, &digest).map_err(BootError::io("fsync", &final_rel))?;
            // The damaged pair now has the temporary name.
            kernels
                .remove_dir_all(&tmp)
                .map_err(BootError::io("remove", &tmp_rel))?;
            sync_dir(&kernels).map_err(BootError::io("fsync", KERNELS_DIR))
        } else {
            kernels
                .rename(&tmp, &kernels, &digest)
                .map_err(BootError::io("rename into place", &final_rel))?;
            sync_renamed(&kernels, &digest).map_err(BootError::io("fsync", &final_rel))
        }
    })();
    if let Err(e) = &result
        && let Err(cleanup) = kernels.remove_dir_all(&tmp)
        && cleanup.kind() != std::io::ErrorKind::NotFound
    {
        // The next kernel install removes leftover temporaries.
        tracing::warn!("{e}; removing {} failed too: {cleanup}", tmp_rel.display());
    }
    result?;
    tracing::info!(
        digest,
        version = kernel.version,
        "installed kernel and initramfs"
    );
    Ok(digest)
}

/// The boot digest of the pair installed in `dir` (shown as `shown`):
/// sha256 over its vmlinuz then its initramfs, and the two sizes; `None` if
/// either is not a regular file.
fn installed_digest(dir: &Dir, shown: &Path) -> Result<Option<(String, [u64; 2])>, BootError> {
    let mut hasher = Sha256::new();
    let mut sizes = [0u64; 2];
    for (name, size) in [VMLINUZ, INITRAMFS].into_iter().zip(&mut sizes) {
        let path = shown.join(name);
        let mut file = match dir.open(name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BootError::io("open", &path)(e)),
        };
        if !file
            .metadata()
            .map_err(BootError::io("stat", &path))?
            .is_file()
        {
            return Ok(None);
        }
        *size = copy_hashing(&mut file, &mut hasher, None)
            .map_err(|(_, e)| BootError::io("read", &path)(e))?;
    }
    Ok(Some((hex::encode(hasher.finalize()), sizes)))
}

/// Removes every `<boot>/osctl/<digest>` directory whose digest is not in
/// `keep`, and leftover temporaries; returns how many digest directories
/// went. Each is first renamed to a `.tmp-` name (and that rename fsynced),
/// so a crash never leaves a partial directory under a digest name. Names
/// that are not 64 lowercase hex digits are not osctl's and are left alone.
pub fn remove_unused_kernels(boot: &Dir, keep: &[String]) -> Result<usize, BootError> {
    let Some(kernels) = open_dir_opt(boot, KERNELS_DIR, KERNELS_DIR)? else {
        return Ok(0);
    };
    remove_temporaries(&kernels, KERNELS_DIR, |_| true)?;
    let mut unused = Vec::new();
    for entry in kernels
        .entries()
        .map_err(BootError::io("list", KERNELS_DIR))?
    {
        let entry = entry.map_err(BootError::io("list", KERNELS_DIR))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && is_digest(&name) && !keep.contains(&name) {
            unused.push(name);
        }
    }
    unused.sort();
    for name in &unused {
        let rel = Path::new(KERNELS_DIR).join(name);
        let doomed = format!("{TMP_PREFIX}{}-rm-{name}", std::process::id());
        kernels
            .rename(name, &kernels, &doomed)
            .map_err(BootError::io("rename for removal", &rel))?;
        // Durable with its first cluster (FAT): a crash before the removal
        // leaves a whole `.tmp-` directory for the next cleanup, not lost
        // clusters.
        sync_renamed(&kernels, &doomed).map_err(BootError::io("fsync", &rel))?;
        kernels.remove_dir_all(&doomed).map_err(BootError::io(
            "remove",
            Path::new(KERNELS_DIR).join(&doomed),
        ))?;
        tracing::info!(digest = name, "removed unused kernel and initramfs");
    }
    if !unused.is_empty() {
        sync_dir(&kernels).map_err(BootError::io("fsync", KERNELS_DIR))?;
    }
    Ok(unused.len())
}

fn describe(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Directory => "a directory",
        EntryKind::Regular => "a regular file",
        EntryKind::Symlink => "a symlink",
        EntryKind::Other => "a special file",
    }
}

fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Hashes vmlinuz then initramfs; with a target, also writes each into it
/// (shown as the second element) and fsyncs it. Returns the digest and the
/// two sizes.
fn hash_pair(
    tree: &ImageTree,
    kernel: &KernelFiles,
    target: Option<(&Dir, &Path)>,
) -> Result<(String, [u64; 2]), BootError> {
    let mut hasher = Sha256::new();
    let mut sizes = [0u64; 2];
    let files = [(&kernel.vmlinuz, VMLINUZ), (&kernel.initramfs, INITRAMFS)];
    for ((src, name), size) in files.into_iter().zip(&mut sizes) {
        let mut reader = tree.open(src)?.ok_or_else(|| BootError::ImageFile {
            image: kernel.image.clone(),
            path: src.clone(),
            why: "not a regular file".into(),
        })?;
        let fail = |(read, e): (bool, std::io::Error)| match (read, target) {
            (false, Some((_, shown))) => BootError::io("write", shown.join(name))(e),
            _ => BootError::ImageRead {
                image: kernel.image.clone(),
                path: src.clone(),
                source: e,
            },
        };
        match target {
            None => *size = copy_hashing(&mut reader, &mut hasher, None).map_err(fail)?,
            Some((dir, shown)) => {
                let path = shown.join(name);
                let mut out = dir.create(name).map_err(BootError::io("create", &path))?;
                *size = copy_hashing(&mut reader, &mut hasher, Some(&mut out)).map_err(fail)?;
                out.sync_all().map_err(BootError::io("fsync", &path))?;
            }
        }
    }
    Ok((hex::encode(hasher.finalize()), sizes))
}

/// Streams `reader` into the hasher (and `out`), returning the byte count;
/// an error says whether reading (`true`) or writing failed.
fn copy_hashing(
    reader: &mut dyn Read,
    hasher: &mut Sha256,
    mut out: Option<&mut cap_std::fs::File>,
) -> Result<u64, (bool, std::io::Error)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((true, e)),
        };
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&buf[..n]).map_err(|e| (false, e))?;
        }
        total += n as u64;
    }
}
