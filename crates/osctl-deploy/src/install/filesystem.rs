//! `install to-filesystem PATH`: the root filesystem is already made and
//! mounted at `PATH` (someone else partitioned the disk); the boot dir
//! (default `PATH/boot`, usually the mounted ESP) gets the boot files.
//!
//! Model: staging writes in place. `PATH` is bind-mounted at `S/sysroot`
//! and the boot dir at `S/boot` of a small temporary `S`, so the ordinary
//! staging code lays out the store and state directly on the target (no
//! copy of the store) and no path logic is duplicated. The bind mounts are
//! non-recursive: a filesystem mounted below `PATH` (the ESP at
//! `PATH/boot`) is never reached through `S/sysroot`, so wiping or
//! cleaning `S/sysroot` cannot descend into it. They are unmounted at the
//! end, on errors too; `S` is only removed once they are gone.
//!
//! `PATH` must be empty apart from `lost+found` (and the boot dir, when it
//! is `PATH/<dir>`), and the boot dir must hold no osctl files; `--wipe`
//! empties `PATH` and removes osctl's files (entries, kernels) from the boot
//! dir, never anything else there. A failed install empties `PATH` again
//! and removes the osctl files it wrote to the boot dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use osctl_store::PullObserver;

use super::staging::{self, Request, Seal, Staging};
use super::tools::{self, run};
use super::{
    CommonOptions, FilesystemInfo, FilesystemOptions, InstallError, InstallOutcome, TargetKind,
    check_kargs,
};
use crate::layout::{ENTRIES_DIR, ENTRY_PREFIX, KERNELS_DIR, LOADER_CONF};

/// A mounted filesystem as findmnt reports it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Mount {
    target: String,
    source: Option<String>,
    fstype: Option<String>,
    uuid: Option<String>,
    partuuid: Option<String>,
}

/// `findmnt -J` for `--target PATH` (the filesystem holding PATH) or
/// `--mountpoint PATH` (only if PATH is a mount point).
fn findmnt(how: &str, path: &Path) -> Result<Option<Mount>, InstallError> {
    let out = Command::new("findmnt")
        .args(["-J", "-o", "TARGET,SOURCE,FSTYPE,UUID,PARTUUID", how])
        .arg(path)
        .output()
        .map_err(|e| InstallError::Tool {
            step: format!("finding the filesystem of {}", path.display()),
            tool: "findmnt".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct List {
        filesystems: Vec<Mount>,
    }
    let list: List = serde_json::from_slice(&out.stdout).map_err(|e| InstallError::Tool {
        step: format!("finding the filesystem of {}", path.display()),
        tool: "findmnt".into(),
        stderr: format!("unreadable output: {e}"),
    })?;
    Ok(list.filesystems.into_iter().next())
}

/// Whether files on this filesystem can have fs-verity: ext4 with the
/// `verity` feature (dumpe2fs), or btrfs.
fn supports_verity(mount: &Mount) -> bool {
    match mount.fstype.as_deref() {
        Some("btrfs") => true,
        Some("ext4") => {
            let Some(source) = &mount.source else {
                return false;
            };
            run(
                "reading the root filesystem's features",
                Command::new("dumpe2fs").arg("-h").arg(source),
                None,
            )
            .is_ok_and(|out| {
                out.lines()
                    .filter_map(|l| l.strip_prefix("Filesystem features:"))
                    .any(|f| f.split_whitespace().any(|w| w == "verity"))
            })
        }
        _ => false,
    }
}

/// A bind mount, unmounted on drop (lazily if it is busy).
struct Bind {
    target: PathBuf,
    mounted: bool,
}

impl Bind {
    fn new(source: &Path, target: &Path) -> Result<Bind, InstallError> {
        rustix::mount::mount_bind(source, target).map_err(|e| InstallError::Io {
            path: source.to_path_buf(),
            why: format!("bind-mounting at {} for staging: {e}", target.display()),
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

/// Names in `dir` other than `lost+found` and `allowed`.
fn foreign_entries(dir: &Path, allowed: Option<&str>) -> Result<Vec<String>, InstallError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| InstallError::Target {
        path: dir.to_path_buf(),
        why: e.to_string(),
    })? {
        let name = e
            .map_err(|e| InstallError::Target {
                path: dir.to_path_buf(),
                why: e.to_string(),
            })?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "lost+found" && Some(name.as_str()) != allowed {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes every entry of `dir` but `lost+found` and `keep`.
fn empty_dir(dir: &Path, keep: Option<&str>) -> Result<(), InstallError> {
    for name in foreign_entries(dir, keep)? {
        let path = dir.join(&name);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        result.map_err(|e| InstallError::Io {
            path,
            why: format!("emptying: {e}"),
        })?;
    }
    Ok(())
}

/// osctl's files in a boot dir: its entries and its kernels directory.
fn osctl_boot_files(boot: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(boot.join(ENTRIES_DIR)) {
        found.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(ENTRY_PREFIX))
                .map(|e| e.path()),
        );
    }
    if boot.join(KERNELS_DIR).is_dir() {
        found.push(boot.join(KERNELS_DIR));
    }
    found.sort();
    found
}

fn remove_osctl_boot_files(boot: &Path) -> Result<(), InstallError> {
    for path in osctl_boot_files(boot) {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| InstallError::Io {
            path,
            why: format!("removing: {e}"),
        })?;
    }
    Ok(())
}

/// Installs `common.imgref` onto the filesystem mounted at `opts.root`.
/// See the module documentation.
pub async fn to_filesystem(
    common: &CommonOptions,
    opts: &FilesystemOptions,
    observer: Arc<dyn PullObserver>,
) -> Result<InstallOutcome, InstallError> {
    check_kargs(&common.kargs)?;
    tools::require(&["findmnt"])?;
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
    if boot == root {
        return Err(target_err(
            &boot,
            "the boot dir cannot be the root itself".into(),
        ));
    }
    // The boot dir's name in PATH, when it is PATH/<name>.
    let boot_child = (boot.parent() == Some(root.as_path()))
        .then(|| boot.file_name().map(|n| n.to_string_lossy().into_owned()))
        .flatten();

    let mount = findmnt("--target", &root)?
        .ok_or_else(|| target_err(&root, "findmnt finds no filesystem holding it".into()))?;
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

    let foreign = foreign_entries(&root, boot_child.as_deref())?;
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
    let ours = osctl_boot_files(&boot);
    if !ours.is_empty() && !common.wipe {
        return Err(target_err(
            &boot,
            format!(
                "already holds osctl boot files ({}); give --wipe to remove them",
                ours[0].display()
            ),
        ));
    }
    // A separate boot filesystem is mounted at /boot by the installed
    // system: osctl there writes entries and kernels to /boot.
    let fstab = findmnt("--mountpoint", &boot)?
        .filter(|m| Path::new(&m.target) == boot)
        .and_then(|m| {
            let spec = match (&m.partuuid, &m.uuid) {
                (Some(p), _) if !p.is_empty() => format!("PARTUUID={p}"),
                (_, Some(u)) if !u.is_empty() => format!("UUID={u}"),
                _ => return None,
            };
            let fstype = m.fstype.unwrap_or_else(|| "auto".into());
            let options = if fstype == "vfat" {
                "umask=0077,shortname=winnt,nofail,x-systemd.automount"
            } else {
                "defaults,nofail,x-systemd.automount"
            };
            Some(format!("{spec} /boot {fstype} {options} 0 2"))
        });
    let verity_fs = supports_verity(&mount);

    // Checks done: from here on the target is written.
    let created_boot = !boot.exists();
    if created_boot {
        std::fs::create_dir(&boot).map_err(|e| target_err(&boot, e.to_string()))?;
    }
    let loader_existed = boot.join(LOADER_CONF).exists();
    let loader_dir_existed = boot.join("loader").exists();
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
            empty_dir(&s_root, boot_child.as_deref())?;
            remove_osctl_boot_files(&s_boot)?;
        }
        let request = Request {
            common,
            local_kargs,
            seal: if verity_fs {
                Seal::IfInsecure
            } else {
                Seal::Never
            },
            fstab: fstab.clone(),
        };
        staging::build(&s_path, &request, observer).await
    }
    .await;
    let built = match result {
        Ok(b) => b,
        Err(e) => {
            // Leave the target as empty as it was (through the binds, which
            // do not reach filesystems mounted below PATH).
            if mounted.binds.len() == 2 {
                let _ = empty_dir(&s_root, boot_child.as_deref());
                let _ = remove_osctl_boot_files(&s_boot);
                if !loader_dir_existed {
                    let _ = std::fs::remove_dir_all(s_boot.join("loader"));
                } else if !loader_existed {
                    let _ = std::fs::remove_file(s_boot.join(LOADER_CONF));
                }
            }
            drop(mounted);
            if created_boot {
                let _ = std::fs::remove_dir_all(&boot);
            }
            return Err(e);
        }
    };
    drop(mounted);
    let mut warnings = built.warnings;
    if mount.fstype.as_deref() == Some("ext4") && !verity_fs {
        warnings.push(format!(
            "{} lacks ext4's verity feature, so the store cannot be sealed; `tune2fs -O verity` on its device before installing enables it",
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
            verity: verity_fs,
        }),
        boot_dir: Some(boot),
        kernel_cmdline: built.cmdline,
        bootloader: built.bootloader,
        fstab,
        verity: built.verity,
        warnings,
    })
}
