//! Building the first deployment in a staging sysroot `S` with the
//! ordinary deployment code: `S/sysroot` becomes the root filesystem's
//! content, `S/boot` the boot partition's.
//!
//! The sysroot is opened with [`Sysroot::installing`] (nothing is booted
//! from it, whatever the host's command line says) and without a boot dir
//! option (so none is remembered in the installed state). The image is
//! pulled and checked (kernel, `/sysroot`, boot loader, an `/etc/fstab`
//! that can take the `/boot` line) before anything is staged, staged with
//! the install's kernel arguments, then finalized: the first deployment is
//! the default and no staged marker remains. Then systemd-boot goes to the
//! boot dir ([`bootdir::write_efi`]) and the `/boot` line to the
//! deployment's `etc/fstab`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use osctl_store::{EntryKind, ImageRecord, ImageTree, PullObserver, VerityMode};

use crate::bootdir;
use crate::{ArchBoot, Bootloader, BootloaderSource, CommonOptions, InstallError, Verity};
use osctl_deploy::boot;
use osctl_deploy::{FinalizeOutcome, StageOptions, StageOutcome, Sysroot, SysrootOptions};
use osctl_layout::{self as layout, DeploymentId};

/// Where images and hosts keep systemd-boot.
pub const SYSTEMD_BOOT_DIR: &str = "/usr/lib/systemd/boot/efi";

/// A temporary sysroot `S` with `S/sysroot` and `S/boot`, removed on drop.
pub(super) struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    /// A new staging sysroot under `$TMPDIR`, else `/var/tmp` (a disk:
    /// the store can be large).
    pub fn new() -> Result<Staging, InstallError> {
        let parent = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let io = |p: &Path, source: std::io::Error| InstallError::Io {
            step: "creating the staging sysroot in",
            path: p.to_path_buf(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("osctl-install-")
            .tempdir_in(&parent)
            .map_err(|e| io(&parent, e))?;
        for sub in ["sysroot", "boot"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).map_err(|e| io(&p, e))?;
            // The root filesystem's root directory takes this mode.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io(&p, e))?;
        }
        Ok(Staging { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Leaves `S` on disk (when a mount in it could not be removed).
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
    /// `S/sysroot`: the root filesystem's content.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("sysroot")
    }
    /// `S/boot`: the boot partition's content.
    pub fn boot(&self) -> PathBuf {
        self.dir.path().join("boot")
    }
}

/// What [`build`] needs beyond the common options.
pub(super) struct Request<'a> {
    pub common: &'a CommonOptions,
    /// The first deployment's machine-local kernel arguments.
    pub local_kargs: Vec<String>,
    /// When to write the seal-at-boot marker (entries then demand fs-verity).
    pub seal: Seal,
    /// A line for the deployment's `/etc/fstab` that mounts the boot files
    /// at /boot.
    pub fstab: Option<BootMount>,
}

/// The deployment's `/etc/fstab` line for /boot, and the comment above it.
#[derive(Debug, Clone)]
pub(super) struct BootMount {
    pub line: String,
    pub comment: &'static str,
}

impl BootMount {
    /// The boot partition (the ESP, or another filesystem) by `spec`
    /// (`PARTUUID=…`, `UUID=…`).
    ///
    /// `nofail,x-systemd.automount`: /boot is mounted on first access, so
    /// boot never waits for it and nothing that runs early (osctl staging an
    /// update, a health check) races a mount still in progress — the VM test
    /// saw `osctl switch` write into the read-only image's empty /boot when
    /// the line had `nofail` alone.
    pub fn partition(spec: &str, fstype: &str) -> BootMount {
        let options = if fstype == "vfat" {
            "umask=0077,shortname=winnt,nofail,x-systemd.automount"
        } else {
            "defaults,nofail,x-systemd.automount"
        };
        BootMount {
            line: format!("{spec} /boot {fstype} {options} 0 2"),
            comment: "# Added by osctl install: the boot partition holds the boot entries and\n\
                      # kernels that osctl writes when it stages an update, so it is mounted at /boot.\n",
        }
    }

    /// A directory of the root filesystem, `/sysroot/<dir>` on the running
    /// system (the root setup mounts the root filesystem at /sysroot before
    /// systemd starts), bind-mounted at /boot: the image's /boot is an empty
    /// read-only directory.
    pub fn bind(dir_in_root: &str) -> BootMount {
        BootMount {
            line: format!(
                "/sysroot/{dir_in_root} /boot none bind,x-systemd.requires-mounts-for=/sysroot 0 0"
            ),
            comment: "# Added by osctl install: the boot entries and kernels that osctl writes when\n\
                      # it stages an update are on the root filesystem, so that directory is\n\
                      # bind-mounted at /boot.\n",
        }
    }
}

/// When [`build`] writes [`SEAL_AT_BOOT_FILE`](osctl_deploy::SEAL_AT_BOOT_FILE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seal {
    /// The store is copied onto a filesystem with fs-verity (to-disk).
    Always,
    /// The store is written in place on a filesystem that can have
    /// fs-verity: seal at boot unless it is already enforced.
    IfInsecure,
    /// The filesystem cannot have fs-verity.
    Never,
}

/// The first deployment, built.
pub(super) struct Built {
    pub id: DeploymentId,
    pub record: ImageRecord,
    /// The boot entry's `options`.
    pub cmdline: String,
    pub bootloader: Option<BootloaderSource>,
    pub verity: Verity,
    pub warnings: Vec<String>,
}

/// Pulls, checks, stages and finalizes into the sysroot at `sysroot`
/// (whose `boot` is the boot dir).
pub(super) async fn build(
    sysroot: &Path,
    req: &Request<'_>,
    observer: Arc<dyn PullObserver>,
) -> Result<Built, InstallError> {
    let common = req.common;
    let sysroot = Sysroot::open(&SysrootOptions {
        sysroot: sysroot.to_path_buf(),
        boot_dir: None,
    })?
    .installing();
    let verity = match (req.seal, sysroot.store().verity()) {
        (Seal::Always, _) | (Seal::IfInsecure, VerityMode::Insecure) => Verity::FirstBoot,
        (_, VerityMode::Enforced) => Verity::Enforced,
        (Seal::Never, VerityMode::Insecure) => Verity::None,
    };
    if verity == Verity::FirstBoot {
        let marker = sysroot.path().join(osctl_deploy::SEAL_AT_BOOT_FILE);
        std::fs::write(
            &marker,
            "Written by osctl install: the first boot enables fs-verity on every object of this store.\n",
        )
        .map_err(|source| InstallError::Io {
            step: "writing",
            path: marker,
            source,
        })?;
    }
    let name = common.imgref.to_string();
    let pulled = sysroot
        .store()
        .pull(&common.imgref, &common.fetch, observer)
        .await?;
    let record = pulled.record().clone();

    // Everything that can reject the image, before staging.
    let tree = sysroot.store().image_tree(&record)?;
    if tree.kind(Path::new("/sysroot")) != Some(EntryKind::Directory) {
        return Err(InstallError::Image {
            image: name,
            why: "has no /sysroot directory (the root setup mounts the physical root there; add `RUN mkdir /sysroot`)".into(),
        });
    }
    boot::find_kernel(&tree, &name)?;
    let arch = ArchBoot::for_oci(record.architecture()).ok_or_else(|| InstallError::Image {
        image: name.clone(),
        why: format!(
            "architecture {} is not supported by install (amd64, arm64)",
            record.architecture()
        ),
    })?;
    let efi = match common.bootloader {
        Bootloader::SystemdBoot => Some(find_systemd_boot(&tree, &name, &arch)?),
        Bootloader::None => None,
    };
    let mut warnings = Vec::new();
    if req.fstab.is_some() {
        if tree.kind(Path::new("/etc/fstab")) == Some(EntryKind::Symlink) {
            return Err(InstallError::Image {
                image: name,
                why: "/etc/fstab is a symlink: install cannot add the /boot mount to it (make it a regular file)".into(),
            });
        }
        if tree.kind(Path::new("/boot")) != Some(EntryKind::Directory) {
            warnings.push(format!(
                "{name} has no /boot directory: the installed system cannot mount the boot files there"
            ));
        }
    }

    (common.on_step)("staging the first deployment");
    let options = StageOptions {
        local_kargs: Some(req.local_kargs.clone()),
        // The first deployment has nothing to fall back to.
        boot_tries: Some(0),
        download_only: false,
    };
    let id = match sysroot.stage_record_with(&common.imgref, &record, &options)? {
        StageOutcome::Staged { id, .. } => id,
        other => {
            return Err(InstallError::Invalid(format!(
                "staging into a fresh sysroot: unexpected {other:?}"
            )));
        }
    };
    match sysroot.finalize()? {
        FinalizeOutcome::Finalized { .. } => {}
        // Install stages without `download_only`: neither can happen.
        FinalizeOutcome::NothingStaged | FinalizeOutcome::DownloadOnly(_) => {
            return Err(InstallError::Invalid(
                "finalizing the first deployment: nothing was staged to boot".into(),
            ));
        }
    }
    let bootloader = match efi {
        Some((bytes, source)) => {
            warnings.extend(bootdir::write_efi(sysroot.boot_path(), &arch, &bytes)?);
            Some(source)
        }
        None => None,
    };
    if let Some(mount) = &req.fstab {
        let etc = sysroot.path().join(id.state_dir()).join(layout::ETC_DIR);
        append_fstab(&etc, mount)?;
    }
    let cmdline = boot::read_entries(sysroot.boot())?
        .into_iter()
        .find(|e| e.id == id)
        .map(|e| e.entry.options.join(" "))
        .ok_or_else(|| InstallError::Invalid(format!("no boot entry for {id} after staging")))?;
    for dir in [sysroot.root(), sysroot.boot()] {
        osctl_store::atomic::sync_filesystem(dir).map_err(|source| InstallError::Io {
            step: "syncing the filesystem of",
            path: sysroot.path().to_path_buf(),
            source,
        })?;
    }
    Ok(Built {
        id,
        record,
        cmdline,
        bootloader,
        verity,
        warnings,
    })
}

/// systemd-boot's EFI binary: the image's, else the host's.
fn find_systemd_boot(
    tree: &ImageTree,
    image: &str,
    arch: &ArchBoot,
) -> Result<(Vec<u8>, BootloaderSource), InstallError> {
    let path = Path::new(SYSTEMD_BOOT_DIR).join(arch.systemd_boot);
    if tree.kind(&path) == Some(EntryKind::Regular)
        && let Some(bytes) = tree.read(&path)?
    {
        return Ok((
            bytes,
            BootloaderSource {
                from: "image".into(),
                path,
            },
        ));
    }
    match std::fs::read(&path) {
        Ok(bytes) => Ok((
            bytes,
            BootloaderSource {
                from: "host".into(),
                path,
            },
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(InstallError::Image {
            image: image.to_owned(),
            why: format!(
                "no systemd-boot: neither the image nor this host has {} (install systemd-boot-efi on the host, or give --bootloader none)",
                path.display()
            ),
        }),
        Err(source) => Err(InstallError::Io {
            step: "reading",
            path,
            source,
        }),
    }
}

/// Appends the /boot line to the deployment's `etc/fstab` (created 0644
/// if absent; an existing file keeps its mode and owner). A symlink was
/// refused with the image checks; this only guards against a race.
fn append_fstab(etc: &Path, mount: &BootMount) -> Result<(), InstallError> {
    let path = etc.join("fstab");
    let io = |source: std::io::Error| InstallError::Io {
        step: "adding the /boot mount to",
        path: path.clone(),
        source,
    };
    let existing = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(InstallError::Target {
                path,
                why: "is a symlink; cannot add the /boot mount to it".into(),
            });
        }
        Ok(_) => std::fs::read(&path).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        text.push('\n');
    }
    text.push_str(mount.comment);
    text.push_str(&mount.line);
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}
