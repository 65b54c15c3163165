//! `install to-filesystem PATH`: the root filesystem is already made and
//! mounted at `PATH` (someone else partitioned the disk); the boot dir
//! (default `PATH/boot`, usually the mounted ESP) gets the boot files.
//!
//! Model: staging writes in place. `PATH` is bind-mounted at `S/sysroot`
//! and the boot dir at `S/boot` of a small temporary `S`, so the ordinary
//! staging code lays out the store and state directly on the target (no
//! copy of the store) and no path logic is duplicated. The bind mounts are
//! non-recursive: a filesystem mounted below `PATH` (the ESP at
//! `PATH/boot/efi`) is never reached through `S/sysroot`, so wiping or
//! cleaning `S/sysroot` cannot descend into it. They are unmounted at the
//! end, on errors too; `S` is only removed once they are gone.
//!
//! `PATH` must be empty apart from `lost+found`, empty directories, the
//! boot dir and the mount points of other filesystems ([`mounts`]), and the
//! boot dir must hold no osctl files; `--wipe` empties `PATH` (never
//! touching those) and removes osctl's files (entries, kernels) from the
//! boot dir, never anything else there. A failed install empties `PATH`
//! again and puts the boot dir back as it was ([`bootdir::Snapshot`]).
//!
//! The installed system finds the boot files at /boot through a line in
//! the deployment's `/etc/fstab`: the boot dir's filesystem when it is a
//! mount point of its own, else, for a directory of the root filesystem, a
//! bind mount of `/sysroot/<dir>` (the image's own /boot is an empty
//! read-only directory, where every osctl command would fail).
//!
//! Everything is checked before the first write: the tools (`dumpe2fs` for
//! ext4, whose `verity` feature decides whether the entries demand
//! fs-verity), `PATH` and the boot dir, the image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use osctl_store::PullObserver;

use crate::bootdir::{self, Snapshot};
use crate::mounts::{self, Keep, Mount, findmnt};
use crate::staging::{self, BootMount, Request, Seal, Staging};
use crate::tools;
use crate::{
    CommonOptions, FilesystemInfo, FilesystemOptions, InstallError, InstallOutcome, TargetKind,
    check_kargs,
};

/// A bind mount, unmounted on drop (lazily if it is busy).
struct Bind {
    target: PathBuf,
    mounted: bool,
}

impl Bind {
    fn new(source: &Path, target: &Path) -> Result<Bind, InstallError> {
        rustix::mount::mount_bind(source, target).map_err(|e| InstallError::Io {
            step: "bind-mounting for staging",
            path: source.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Bind {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    fn unmount(&mut self) -> bool {
        use rustix::mount::{UnmountFlags, unmount};
        if self.mounted {
            self.mounted = unmount(&self.target, UnmountFlags::empty()).is_err()
                && unmount(&self.target, UnmountFlags::DETACH).is_err();
        }
        !self.mounted
    }
}

/// The staging sysroot with its two bind mounts. Dropping it unmounts
/// them, and removes `S` only if both are gone: removing it with a mount
/// in place would delete the target's files.
struct MountedStaging {
    binds: Vec<Bind>,
    staging: Option<Staging>,
}

impl Drop for MountedStaging {
    fn drop(&mut self) {
        let mut all = true;
        for b in self.binds.iter_mut().rev() {
            all &= b.unmount();
        }
        if let Some(s) = self.staging.take()
            && !all
        {
            let kept = s.keep();
            tracing::error!(path = %kept.display(), "could not unmount the staging binds; left in place");
        }
    }
}

/// `statfs` type of ext2, ext3 and ext4.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;

/// The deployment's /boot line for the boot dir, or (as `Err`) the warning
/// why there is none. `boot_rel`: the boot dir relative to `PATH`, when it
/// is inside; `root_mount`: the filesystem holding `PATH`.
fn boot_mount(
    boot: &Path,
    boot_rel: Option<&Path>,
    root_mount: &Mount,
) -> Result<Result<BootMount, String>, InstallError> {
    let exists = boot.exists();
    let own = if exists {
        findmnt("--mountpoint", boot)?.filter(|m| Path::new(&m.target) == boot)
    } else {
        None
    };
    if let Some(m) = own {
        // A separate boot filesystem is mounted at /boot by the installed
        // system: osctl there writes entries and kernels to /boot.
        let spec = match (&m.partuuid, &m.uuid) {
            (Some(p), _) if !p.is_empty() => format!("PARTUUID={p}"),
            (_, Some(u)) if !u.is_empty() => format!("UUID={u}"),
            _ => {
                return Ok(Err(format!(
                    "findmnt shows no PARTUUID or UUID for the boot dir {} ({}), so the installed system does not mount it at /boot; add that to the deployment's /etc/fstab",
                    boot.display(),
                    m.source.as_deref().unwrap_or("no source")
                )));
            }
        };
        return Ok(Ok(BootMount::partition(
            &spec,
            m.fstype.as_deref().unwrap_or("auto"),
        )));
    }
    // A directory: on the root filesystem itself, it is bind-mounted.
    let holder = if exists {
        findmnt("--target", boot)?.map(|m| m.target)
    } else {
        Some(root_mount.target.clone())
    };
    match boot_rel {
        Some(rel) if holder.as_deref() == Some(root_mount.target.as_str()) => {
            Ok(Ok(BootMount::bind(&mounts::fstab_escape(rel))))
        }
        _ => Ok(Err(format!(
            "the boot dir {} is neither a mounted filesystem nor a directory of the root filesystem, so the installed system does not mount it at /boot; add that to the deployment's /etc/fstab",
            boot.display()
        ))),
    }
}

/// Installs `common.imgref` onto the filesystem mounted at `opts.root`.
/// See the module documentation.
pub async fn to_filesystem(
    common: &CommonOptions,
    opts: &FilesystemOptions,
    observer: Arc<dyn PullObserver>,
) -> Result<InstallOutcome, InstallError> {
    check_kargs(&common.kargs)?;
    // All tools at once: ext4 (its magic, shared with ext2/3) needs
    // dumpe2fs; findmnt below tells for sure.
    let ext4_magic =
        rustix::fs::statfs(&opts.root).is_ok_and(|s| s.f_type as u64 == EXT4_SUPER_MAGIC);
    tools::require(if ext4_magic {
        &["findmnt", "dumpe2fs"]
    } else {
        &["findmnt"]
    })?;
    let target_err = |path: &Path, why: String| InstallError::Target {
        path: path.to_path_buf(),
        why,
    };
    let root =
        std::fs::canonicalize(&opts.root).map_err(|e| target_err(&opts.root, e.to_string()))?;
    if !root.is_dir() {
        return Err(target_err(&root, "is not a directory".into()));
    }
    let boot = match &opts.boot_dir {
        Some(b) => {
            let b = std::fs::canonicalize(b).map_err(|e| target_err(b, e.to_string()))?;
            if !b.is_dir() {
                return Err(target_err(&b, "is not a directory".into()));
            }
            b
        }
        None => root.join("boot"),
    };
    if root.starts_with(&boot) {
        return Err(target_err(
            &boot,
            "the boot dir cannot be the root itself or hold it".into(),
        ));
    }
    // The boot dir's path in PATH, when it is inside.
    let boot_rel = boot.strip_prefix(&root).ok().map(Path::to_path_buf);

    let mount = findmnt("--target", &root)?
        .ok_or_else(|| target_err(&root, "findmnt finds no filesystem holding it".into()))?;
    if mount.fstype.as_deref() == Some("ext4") {
        // Without it the entries could only guess whether to demand
        // fs-verity: named now, before anything is written.
        tools::require(&["dumpe2fs"])?;
    }
    let given_root = common.kargs.iter().any(|k| k.starts_with("root="));
    let mut local_kargs = Vec::new();
    if !given_root {
        if Path::new(&mount.target) != root {
            return Err(target_err(
                &root,
                format!(
                    "is not a mount point (it is inside {}); mount the root filesystem there, or give --karg root=…",
                    mount.target
                ),
            ));
        }
        let uuid = mount
            .uuid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                target_err(
                    &root,
                    "findmnt shows no filesystem UUID; give --karg root=…".into(),
                )
            })?;
        local_kargs.push(format!("root=UUID={uuid}"));
        local_kargs.push("rw".to_owned());
    }
    local_kargs.extend(common.kargs.iter().cloned());
    let verity_fs = mounts::supports_verity(&root, &mount)?;

    let keep = Keep {
        boot: boot_rel.clone(),
        mounts: mounts::mount_points_below(&root).map_err(|source| InstallError::Io {
            step: "listing the mounts below the target in",
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?,
    };
    let foreign = mounts::foreign_entries(&root, &keep)?;
    if !foreign.is_empty() && !common.wipe {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        let more = if foreign.len() > 5 { ", …" } else { "" };
        return Err(target_err(
            &root,
            format!(
                "is not empty ({}{more}); give --wipe to empty it",
                shown.join(", ")
            ),
        ));
    }
    let ours = bootdir::osctl_boot_files(&boot);
    if !ours.is_empty() && !common.wipe {
        return Err(target_err(
            &boot,
            format!(
                "already holds osctl boot files ({}); give --wipe to remove them",
                ours[0].display()
            ),
        ));
    }
    let fstab = boot_mount(&boot, boot_rel.as_deref(), &mount)?;
    let snapshot = Snapshot::take(&boot)?;

    // Checks done: from here on the target is written.
    let created_boot = !boot.exists();
    if created_boot {
        std::fs::create_dir(&boot).map_err(|e| target_err(&boot, e.to_string()))?;
    }
    let staging = Staging::new()?;
    let mut mounted = MountedStaging {
        binds: Vec::new(),
        staging: None,
    };
    let s_root = staging.root();
    let s_boot = staging.boot();
    let s_path = staging.path().to_path_buf();
    mounted.staging = Some(staging);
    let result = async {
        mounted.binds.push(Bind::new(&root, &s_root)?);
        mounted.binds.push(Bind::new(&boot, &s_boot)?);
        if common.wipe {
            (common.on_step)("emptying the target");
            mounts::empty_dir(&s_root, &keep)?;
            bootdir::remove_osctl_boot_files(&s_boot)?;
        }
        let request = Request {
            common,
            local_kargs,
            seal: if verity_fs {
                Seal::IfInsecure
            } else {
                Seal::Never
            },
            fstab: fstab.as_ref().ok().cloned(),
        };
        staging::build(&s_path, &request, observer).await
    }
    .await;
    let built = match result {
        Ok(b) => b,
        Err(e) => {
            // Leave the target as it was (through the binds, which do not
            // reach filesystems mounted below PATH).
            // Every step is tried; each failure is named in the error.
            let mut restore = Vec::new();
            if mounted.binds.len() == 2 {
                if let Err(r) = mounts::empty_dir(&s_root, &keep) {
                    restore.push(format!("emptying {}: {r}", root.display()));
                }
                if let Err(r) = bootdir::remove_osctl_boot_files(&s_boot) {
                    restore.push(format!("removing osctl's boot files: {r}"));
                }
                if let Err(r) = snapshot.restore(&s_boot) {
                    restore.push(format!("restoring {}: {r}", boot.display()));
                }
            }
            drop(mounted);
            if created_boot && let Err(r) = std::fs::remove_dir_all(&boot) {
                restore.push(format!("removing {}: {r}", boot.display()));
            }
            return Err(e.with_restore(restore));
        }
    };
    drop(mounted);
    let mut warnings = built.warnings;
    if let Err(why) = &fstab {
        warnings.push(why.clone());
    }
    let device = mount.device().unwrap_or("its device");
    if let Some(sub) = mount.subpath()
        && !common.kargs.iter().any(|k| k.starts_with("rootflags="))
    {
        warnings.push(format!(
            "{} is the directory {sub} of {device}, not the top of its filesystem: an initramfs mounts root= whole and finds no store there (for a btrfs subvolume, give --karg rootflags=subvol={sub})",
            root.display()
        ));
    }
    if mount.fstype.as_deref() == Some("ext4") && !verity_fs {
        warnings.push(format!(
            "the ext4 filesystem of {} ({device}) lacks the verity feature, so the store cannot be sealed; `tune2fs -O verity {device}` before installing enables it",
            root.display()
        ));
    }
    Ok(InstallOutcome {
        image: common.imgref.to_string(),
        image_id: built.id.to_string(),
        manifest_digest: built.record.manifest_digest().to_string(),
        target: root,
        target_kind: TargetKind::Filesystem,
        size: None,
        partitions: Vec::new(),
        filesystem: Some(FilesystemInfo {
            fstype: mount.fstype.clone().unwrap_or_default(),
            uuid: mount.uuid.clone(),
            device: mount.device().map(String::from),
            verity: verity_fs,
        }),
        boot_dir: Some(boot),
        kernel_cmdline: built.cmdline,
        bootloader: built.bootloader,
        fstab: fstab.ok().map(|m| m.line),
        verity: built.verity,
        warnings,
    })
}
