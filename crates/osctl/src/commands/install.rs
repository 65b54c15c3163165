//! `osctl install to-disk TARGET` and `osctl install to-filesystem PATH`.
//!
//! The image is `--source-imgref`, else the booted deployment's image of
//! the running sysroot (`--sysroot`). For to-filesystem the global
//! `--boot-dir` names where the boot files go (default `PATH/boot`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use osctl_image::ImageRef;
use osctl_install::{
    self as install, Bootloader, CommonOptions, DiskOptions, FilesystemOptions, InstallOutcome,
    TargetKind, Verity,
};

use super::deploy_common::{self, FetchArgs};
use crate::output::short_id;
use crate::progress::{self, ProgressMode};

#[derive(Subcommand)]
pub enum InstallCommand {
    /// Partition a whole disk or a raw image file and install onto it.
    ToDisk(ToDiskArgs),
    /// Install onto a root filesystem that is already made and mounted.
    ToFilesystem(ToFilesystemArgs),
}

#[derive(Args)]
pub struct ToDiskArgs {
    /// A whole block device, or a raw image file (created if missing).
    pub target: PathBuf,
    /// Size of a new image file (4G, 4096M, …); default: the image's
    /// content ×1.5 + the ESP + 512 MiB.
    #[arg(long, value_parser = install::parse_size)]
    pub size: Option<u64>,
    /// Size of the EFI system partition, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = install::DEFAULT_ESP_MIB)]
    pub esp_size: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct ToFilesystemArgs {
    /// The mounted root filesystem: empty apart from lost+found. The boot
    /// files go to --boot-dir (default PATH/boot).
    pub path: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BootloaderArg {
    SystemdBoot,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum InstallFormat {
    Human,
    Json,
}

#[derive(Args)]
pub struct CommonArgs {
    /// The image to install (same forms as `image pull`); default: the
    /// booted deployment's image.
    #[arg(long, value_name = "REF")]
    pub source_imgref: Option<String>,
    /// A kernel argument for the installed system (repeatable, in order).
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Boot loader to put on the boot partition.
    #[arg(long, value_enum, default_value_t = BootloaderArg::SystemdBoot)]
    pub bootloader: BootloaderArg,
    /// Erase what the target holds (partition table, filesystems, files).
    #[arg(long)]
    pub wipe: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// How to show progress: bars on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Output format of the result.
    #[arg(long, value_enum, default_value_t = InstallFormat::Human)]
    pub format: InstallFormat,
}

pub async fn run(
    cmd: InstallCommand,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (outcome, format) = match cmd {
        InstallCommand::ToDisk(a) => {
            let (common, observer) = common_options(&a.common, sysroot, boot)?;
            let opts = DiskOptions {
                target: a.target,
                size: a.size,
                esp_size_mib: a.esp_size,
            };
            let outcome = install::to_disk(&common, &opts, observer).await?;
            (outcome, a.common.format)
        }
        InstallCommand::ToFilesystem(a) => {
            // --boot-dir is the target's boot dir here, not the running one's.
            let (common, observer) = common_options(&a.common, sysroot, None)?;
            let opts = FilesystemOptions {
                root: a.path,
                boot_dir: boot.map(Path::to_path_buf),
            };
            let outcome = install::to_filesystem(&common, &opts, observer).await?;
            (outcome, a.common.format)
        }
    };
    match format {
        InstallFormat::Human => print!("{}", render_human(&outcome)),
        InstallFormat::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
    }
    Ok(ExitCode::SUCCESS)
}

type Observer = std::sync::Arc<dyn osctl_store::PullObserver>;

fn common_options(
    args: &CommonArgs,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<(CommonOptions, Observer)> {
    let imgref = match &args.source_imgref {
        Some(r) => ImageRef::parse(r)?,
        None => booted_image(sysroot, boot)?,
    };
    let mode = args.progress;
    let on_step: Box<dyn Fn(&str) + Send + Sync> = Box::new(move |step: &str| {
        let mut err = std::io::stderr().lock();
        let _ = match mode {
            ProgressMode::None => Ok(()),
            ProgressMode::Json => writeln!(
                err,
                "{}",
                serde_json::json!({"event": "step", "step": step})
            ),
            _ => writeln!(err, "{}", capitalized(step)),
        };
    });
    let common = CommonOptions {
        imgref,
        fetch: args.fetch.options()?,
        kargs: args.kargs.clone(),
        bootloader: match args.bootloader {
            BootloaderArg::SystemdBoot => Bootloader::SystemdBoot,
            BootloaderArg::None => Bootloader::None,
        },
        wipe: args.wipe,
        on_step,
    };
    Ok((common, progress::observer(mode)))
}

/// The image of the deployment booted from `sysroot`.
fn booted_image(sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ImageRef> {
    let booted = match deploy_common::open_existing(sysroot, boot)? {
        Some(s) => s.state()?.booted,
        None => None,
    };
    let Some(booted) = booted else {
        anyhow::bail!(
            "no image to install: nothing is booted from {}; give --source-imgref",
            sysroot.display()
        );
    };
    booted
        .origin()
        .image_ref()
        .with_context(|| format!("the booted deployment {}", booted.id().short()))
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `256 MiB`, `1.5 GiB`.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes.div_ceil(MIB))
    }
}

/// What was installed where, for people.
pub fn render_human(o: &InstallOutcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Installed {} (image {}) to {}",
        o.image,
        short_id(&o.image_id),
        o.target.display()
    );
    match o.target_kind {
        TargetKind::ImageFile | TargetKind::BlockDevice => {
            let kind = if o.target_kind == TargetKind::ImageFile {
                "image file"
            } else {
                "block device"
            };
            let _ = writeln!(s, "  disk: {kind}, {}, GPT", size(o.size.unwrap_or(0)));
        }
        TargetKind::Filesystem => {
            if let Some(fs) = &o.filesystem {
                let uuid = fs.uuid.as_deref().unwrap_or("-");
                let _ = writeln!(s, "  root filesystem: {}, UUID={uuid}", fs.fstype);
            }
            if let Some(b) = &o.boot_dir {
                let _ = writeln!(s, "  boot files: {}", b.display());
            }
        }
    }
    for p in &o.partitions {
        let node = p
            .node
            .as_ref()
            .map(|n| format!(" ({})", n.display()))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  partition {}{node}: {}, {}, {} UUID={}, PARTUUID={}",
            p.number,
            p.name,
            size(p.size),
            p.filesystem,
            p.fs_uuid,
            p.partuuid
        );
    }
    match &o.bootloader {
        Some(b) => {
            let from = if b.from == "image" {
                "the image"
            } else {
                "this host"
            };
            let _ = writeln!(
                s,
                "  boot loader: systemd-boot from {from} ({})",
                b.path.display()
            );
        }
        None => {
            let _ = writeln!(s, "  boot loader: none");
        }
    }
    if let Some(line) = &o.fstab {
        let _ = writeln!(s, "  /etc/fstab: {line}");
    }
    let _ = writeln!(s, "  kernel command line: {}", o.kernel_cmdline);
    for w in &o.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    let _ = writeln!(
        s,
        "{}",
        match o.verity {
            Verity::FirstBoot => "First boot enables fs-verity on the store.",
            Verity::Enforced => "fs-verity is enforced on the store.",
            Verity::None =>
                "The store has no fs-verity: the root filesystem cannot have it (entries say composefs=?<id>).",
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use osctl_install::{BootloaderSource, FilesystemInfo};

    #[test]
    fn filesystem_result_for_people() {
        let outcome = InstallOutcome {
            image: "reg.example/os:v1".into(),
            image_id: "ab".repeat(32),
            manifest_digest: format!("sha256:{}", "cd".repeat(32)),
            target: "/mnt".into(),
            target_kind: TargetKind::Filesystem,
            size: None,
            partitions: Vec::new(),
            filesystem: Some(FilesystemInfo {
                fstype: "ext4".into(),
                uuid: Some("u-u-i-d".into()),
                device: Some("/dev/sda2".into()),
                verity: false,
            }),
            boot_dir: Some("/mnt/boot".into()),
            kernel_cmdline: "composefs=?x root=UUID=u-u-i-d rw".into(),
            bootloader: Some(BootloaderSource {
                from: "host".into(),
                path: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
            }),
            fstab: None,
            verity: Verity::None,
            warnings: vec!["no verity".into()],
        };
        assert_eq!(
            render_human(&outcome),
            "Installed reg.example/os:v1 (image abababababab) to /mnt\n  \
             root filesystem: ext4, UUID=u-u-i-d\n  \
             boot files: /mnt/boot\n  \
             boot loader: systemd-boot from this host (/usr/lib/systemd/boot/efi/systemd-bootx64.efi)\n  \
             kernel command line: composefs=?x root=UUID=u-u-i-d rw\n  \
             warning: no verity\n\
             The store has no fs-verity: the root filesystem cannot have it (entries say composefs=?<id>).\n"
        );
    }
}
