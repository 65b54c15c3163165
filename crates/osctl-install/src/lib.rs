//! `osctl install`: make a new disk, or a filesystem someone else
//! partitioned, boot an image.
//!
//! # Model
//!
//! The first deployment is built by the same code that stages updates, in
//! a staging sysroot `S` ([`staging`]): `S/sysroot` is what the root
//! filesystem holds (store, `state/deploy/<id>`, `state/var`, image
//! records), `S/boot` what the boot partition holds (`loader/`, kernels,
//! systemd-boot). Reusing it means an installed machine is exactly what
//! `switch` + `finalize` would have made, with no second implementation of
//! deployments to drift apart.
//!
//! - **to-disk** ([`to_disk`]): `S` is a temporary directory. Once it is
//!   complete, the target (an image file or a whole block device) gets a GPT
//!   and two filesystems written straight from `S` by `sfdisk`,
//!   `mkfs.ext4 -d` and `mkfs.vfat` + `mcopy` ([`disk`]): no loop device and
//!   no mount, so it works in containers and on hosts without vfat.
//! - **to-filesystem** ([`to_filesystem`]): the root filesystem is already
//!   mounted at `PATH`; `PATH` is bind-mounted at `S/sysroot` and the boot
//!   dir at `S/boot` ([`filesystem`]), so staging writes in place (the store
//!   is never copied) and `S` itself stays tiny. Its target is rarely bare:
//!   [`mounts`] handles the mount points below `PATH` and reads the
//!   filesystem's features, [`bootdir`] shares the boot dir with another
//!   OS and undoes a failed install there.
//!
//! Order: everything that can reject the install happens before the target
//! is written: arguments, tools, the target's kind, size, use and contents
//! (a partition table or filesystem signature needs `--wipe`), then the
//! pull and the image checks (a kernel, `/sysroot`, a systemd-boot binary),
//! and the size the staged content needs. Only then is the target touched;
//! an image file created by the install is removed if writing fails.
//!
//! fs-verity: the staging store usually cannot have it (the host kernel or
//! `/var/tmp` lacks it), so entries would say `composefs=?<id>`. The root
//! filesystem written to disk has ext4's `verity` feature, and the
//! initramfs seals the store (enables fs-verity on every object) at first
//! boot when the command line demands it. So install writes
//! [`SEAL_AT_BOOT_FILE`](osctl_deploy::SEAL_AT_BOOT_FILE) before staging, which
//! makes the entries say `composefs=<id>`. to-filesystem writes it only when
//! the target filesystem can have fs-verity (ext4 with `verity`, btrfs).

mod bootdir;
mod disk;
mod filesystem;
mod mounts;
mod staging;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::PullObserver;
use serde::Serialize;

use osctl_deploy::DeployError;

pub use disk::{MIN_ESP_MIB, parse_size};
pub use filesystem::to_filesystem;
pub use staging::SYSTEMD_BOOT_DIR;

use disk::MIB;
use staging::{BootMount, Request, Staging};

/// GPT type of the EFI system partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The root filesystem's label.
pub const ROOT_LABEL: &str = "osctl-root";
/// Default ESP size, MiB.
pub const DEFAULT_ESP_MIB: u64 = 256;

/// Why an install failed; one line naming the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The target (image file, device, filesystem path) is unsuitable.
    #[error("{}: {why}", path.display())]
    Target { path: PathBuf, why: String },
    /// The image cannot be installed.
    #[error("{image}: {why}")]
    Image { image: String, why: String },
    /// An external tool failed: its stderr, on one line.
    #[error("{step}: {tool} failed: {stderr}")]
    Tool {
        step: String,
        tool: String,
        stderr: String,
    },
    /// `step` failed on `path`.
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// The install failed, and so did putting the target back as it was:
    /// the target may hold parts of this install.
    #[error("restoring the target after the failed install failed too ({}): it may hold parts of this install; the install failed", restore.join("; "))]
    NotRestored {
        #[source]
        source: Box<InstallError>,
        restore: Vec<String>,
    },
}

impl InstallError {
    /// `self`, or [`InstallError::NotRestored`] if any of `restore` (the
    /// clean-up steps after it) failed.
    pub(crate) fn with_restore(self, restore: Vec<String>) -> InstallError {
        if restore.is_empty() {
            self
        } else {
            InstallError::NotRestored {
                source: Box::new(self),
                restore,
            }
        }
    }
}

impl From<osctl_store::StoreError> for InstallError {
    fn from(e: osctl_store::StoreError) -> Self {
        InstallError::Deploy(e.into())
    }
}

impl From<osctl_deploy::boot::BootError> for InstallError {
    fn from(e: osctl_deploy::boot::BootError) -> Self {
        InstallError::Deploy(e.into())
    }
}

/// Which boot loader goes onto the boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// `EFI/BOOT/BOOT<ARCH>.EFI` and `EFI/systemd/systemd-boot<arch>.efi`.
    SystemdBoot,
    /// Boot files and entries only.
    None,
}

/// What both install commands take.
pub struct CommonOptions {
    pub imgref: ImageRef,
    pub fetch: FetchOptions,
    /// Extra kernel arguments for the installed system, in order.
    pub kargs: Vec<String>,
    pub bootloader: Bootloader,
    /// Erase what the target holds instead of refusing.
    pub wipe: bool,
    /// Told each step ("writing the GPT partition table"), for progress.
    pub on_step: Box<dyn Fn(&str) + Send + Sync>,
}

/// `install to-disk`.
pub struct DiskOptions {
    /// An image file (created if missing) or a whole block device.
    pub target: PathBuf,
    /// A new image file's size in bytes (default: from the content).
    pub size: Option<u64>,
    pub esp_size_mib: u64,
}

/// `install to-filesystem`.
pub struct FilesystemOptions {
    /// The mounted root filesystem.
    pub root: PathBuf,
    /// Where the boot files go (default `<root>/boot`).
    pub boot_dir: Option<PathBuf>,
}

/// What an install made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallOutcome {
    /// The reference installed.
    pub image: String,
    pub image_id: String,
    pub manifest_digest: String,
    pub target: PathBuf,
    pub target_kind: TargetKind,
    /// The disk's size in bytes (to-disk).
    pub size: Option<u64>,
    /// The partitions written (to-disk).
    pub partitions: Vec<PartitionInfo>,
    /// The root filesystem (to-filesystem).
    pub filesystem: Option<FilesystemInfo>,
    /// Where the boot files went (to-filesystem).
    pub boot_dir: Option<PathBuf>,
    /// The boot entry's kernel command line.
    pub kernel_cmdline: String,
    pub bootloader: Option<BootloaderSource>,
    /// The line added to the deployment's /etc/fstab, if any.
    pub fstab: Option<String>,
    /// fs-verity on the installed store.
    pub verity: Verity,
    pub warnings: Vec<String>,
}

/// fs-verity on the installed store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verity {
    /// Already enforced (the store was written with fs-verity).
    Enforced,
    /// The first boot seals the store; entries demand verity.
    FirstBoot,
    /// The filesystem cannot have fs-verity; entries say `composefs=?<id>`.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    ImageFile,
    BlockDevice,
    Filesystem,
}

/// One partition written by to-disk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub number: u32,
    pub name: String,
    /// The partition's device node (block devices).
    pub node: Option<PathBuf>,
    /// Offset and size in bytes.
    pub start: u64,
    pub size: u64,
    pub type_guid: String,
    pub partuuid: String,
    pub filesystem: String,
    pub fs_uuid: String,
    pub label: String,
}

/// The mounted root filesystem of to-filesystem.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemInfo {
    pub fstype: String,
    pub uuid: Option<String>,
    /// Its device, as findmnt shows it without a `[/subpath]`.
    pub device: Option<String>,
    /// Whether it can hold fs-verity files (ext4 `verity` feature, btrfs).
    pub verity: bool,
}

/// Where the systemd-boot binary came from.
#[derive(Debug, Clone, Serialize)]
pub struct BootloaderSource {
    /// `image` or `host`.
    pub from: String,
    pub path: PathBuf,
}

/// Per-architecture names: the GPT root type (Discoverable Partitions
/// Specification) and the EFI binaries.
pub(crate) struct ArchBoot {
    pub root_type: &'static str,
    pub efi_fallback: &'static str,
    pub systemd_boot: &'static str,
}

impl ArchBoot {
    /// By OCI architecture name.
    pub fn for_oci(arch: &str) -> Option<ArchBoot> {
        match arch {
            "amd64" => Some(ArchBoot {
                root_type: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
                efi_fallback: "BOOTX64.EFI",
                systemd_boot: "systemd-bootx64.efi",
            }),
            "arm64" => Some(ArchBoot {
                root_type: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
                efi_fallback: "BOOTAA64.EFI",
                systemd_boot: "systemd-bootaa64.efi",
            }),
            _ => None,
        }
    }
}

/// The identifiers a new disk gets, generated up front: the root
/// filesystem's UUID goes into the kernel arguments and the ESP's PARTUUID
/// into fstab before anything is written.
pub(crate) struct Ids {
    pub disk: String,
    pub esp_part: String,
    pub root_part: String,
    pub root_fs: String,
    /// FAT volume id, 8 hex digits.
    pub esp_volume: String,
    pub root_type: &'static str,
}

impl Ids {
    fn random() -> Result<Ids, InstallError> {
        Ok(Ids {
            disk: tools::random_uuid()?,
            esp_part: tools::random_uuid()?,
            root_part: tools::random_uuid()?,
            root_fs: tools::random_uuid()?,
            esp_volume: tools::random_uuid()?[..8].to_owned(),
            root_type: "",
        })
    }

    /// The FAT volume id as blkid shows it (`ABCD-1234`).
    pub fn esp_fs_uuid(&self) -> String {
        let v = self.esp_volume.to_ascii_uppercase();
        format!("{}-{}", &v[..4], &v[4..])
    }
}

/// Each `--karg` must be one non-empty word; `composefs=` is osctl's.
fn check_kargs(kargs: &[String]) -> Result<(), InstallError> {
    for k in kargs {
        if k.is_empty() || k.chars().any(char::is_whitespace) {
            return Err(InstallError::Invalid(format!(
                "--karg '{k}': give one kernel argument per --karg, without spaces"
            )));
        }
        if k.starts_with(&format!("{}=", osctl_layout::cmdline::KEY)) {
            return Err(InstallError::Invalid(format!(
                "--karg '{k}': osctl sets composefs= itself"
            )));
        }
    }
    Ok(())
}

/// Installs `common.imgref` onto a new disk: an image file (created if
/// missing) or a whole block device. See the module documentation.
pub async fn to_disk(
    common: &CommonOptions,
    opts: &DiskOptions,
    observer: Arc<dyn PullObserver>,
) -> Result<InstallOutcome, InstallError> {
    check_kargs(&common.kargs)?;
    if let Some(k) = common.kargs.iter().find(|k| k.starts_with("root=")) {
        return Err(InstallError::Invalid(format!(
            "--karg '{k}': to-disk sets root= to the new root filesystem itself"
        )));
    }
    if opts.esp_size_mib < MIN_ESP_MIB {
        return Err(InstallError::Invalid(format!(
            "--esp-size {}: the ESP needs at least {MIN_ESP_MIB} MiB (FAT32)",
            opts.esp_size_mib
        )));
    }
    tools::require(&["wipefs", "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy"])?;
    let target = disk::inspect(&opts.target, common.wipe, opts.size)?;
    if target.kind == disk::Kind::BlockDevice {
        tools::require(&["partx"])?;
    }

    let mut ids = Ids::random()?;
    let mut local_kargs = vec![format!("root=UUID={}", ids.root_fs), "rw".to_owned()];
    local_kargs.extend(common.kargs.iter().cloned());
    let fstab = BootMount::partition(&format!("PARTUUID={}", ids.esp_part), "vfat");
    let staging = Staging::new()?;
    let request = Request {
        common,
        local_kargs,
        seal: staging::Seal::Always,
        fstab: Some(fstab.clone()),
    };
    let built = staging::build(staging.path(), &request, observer).await?;
    ids.root_type = ArchBoot::for_oci(built.record.architecture())
        .map(|a| a.root_type)
        .unwrap_or_default();

    let esp = opts.esp_size_mib * MIB;
    let boot_content = tools::content_size(&staging.boot())?;
    if boot_content.bytes + esp / 16 + MIB > esp {
        return Err(InstallError::Invalid(format!(
            "the boot files ({}) do not fit an ESP of {}; give a larger --esp-size",
            tools::human(boot_content.bytes),
            tools::human(esp)
        )));
    }
    let root_content = tools::content_size(&staging.root())?;
    let total = match target.kind {
        disk::Kind::NewFile if target.size == 0 => disk::default_size(esp, root_content),
        _ => target.size,
    };
    let layout = disk::layout(&target, total, esp, disk::root_minimum(root_content))?;

    // Staging took a while: look again (in use? written to?) right before
    // the first write.
    let again = disk::inspect(&opts.target, common.wipe, opts.size)?;
    if again.kind != target.kind {
        return Err(InstallError::Target {
            path: opts.target.clone(),
            why: "changed while the image was staged".into(),
        });
    }
    let step = |s: &str| (common.on_step)(s);
    let created = target.kind == disk::Kind::NewFile;
    let written = disk::prepare(&target, total, common.wipe).and_then(|_| {
        disk::write(
            &target,
            &layout,
            &ids,
            &staging.root(),
            root_content,
            &staging.boot(),
            &step,
        )
    });
    let partitions = match written {
        Ok(p) => p,
        Err(e) => {
            let mut restore = Vec::new();
            if created && let Err(r) = std::fs::remove_file(&opts.target) {
                restore.push(format!("removing {}: {r}", opts.target.display()));
            }
            return Err(e.with_restore(restore));
        }
    };
    Ok(InstallOutcome {
        image: common.imgref.to_string(),
        image_id: built.id.to_string(),
        manifest_digest: built.record.manifest_digest().to_string(),
        target: opts.target.clone(),
        target_kind: match target.kind {
            disk::Kind::BlockDevice => TargetKind::BlockDevice,
            _ => TargetKind::ImageFile,
        },
        size: Some(total),
        partitions,
        filesystem: None,
        boot_dir: None,
        kernel_cmdline: built.cmdline,
        bootloader: built.bootloader,
        fstab: Some(fstab.line),
        verity: built.verity,
        warnings: built.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kargs_are_single_words() {
        assert!(check_kargs(&["console=ttyS0".into(), "quiet".into()]).is_ok());
        assert!(check_kargs(&["a b".into()]).is_err());
        assert!(check_kargs(&["".into()]).is_err());
        assert!(check_kargs(&[format!("composefs={}", "a".repeat(64))]).is_err());
    }

    #[test]
    fn esp_volume_ids_look_like_blkid() {
        let ids = Ids::random().unwrap();
        let u = ids.esp_fs_uuid();
        assert_eq!(u.len(), 9);
        assert_eq!(&u[4..5], "-");
        assert_eq!(u, u.to_ascii_uppercase());
    }
}
