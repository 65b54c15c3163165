//! `osctl install to-filesystem` with the real tools, as root: a loop-mounted
//! ext4 as the target root, boot dirs of several shapes (its own mount, a
//! directory of the root filesystem, an ESP mounted below it, one shared
//! with another OS), the ext4 feature probe, and cleanup after failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::disk::{Cleanup, attach, s, sparse_file, tool, tool_text};
use crate::util::install::*;
use crate::util::{IMAGE_SYSTEMD_BOOT, Osctl, bootable_os_spec, os_spec, push_tag};
use osctl_testutil::{Entry, Registry, RegistryOptions};
use serde_json::Value;

/// A new ext4 (4 KiB blocks, no verity feature: this host's kernel mounts
/// one with it read-only only) in the file `image`, mounted at `at`
/// (created) through a loop device; returns the device and the UUID.
fn mounted_ext4(image: &Path, size: u64, at: &Path, cleanup: &mut Cleanup) -> (String, String) {
    sparse_file(image, size);
    tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-b", "4096"])
            .arg(image),
    );
    let uuid = tool_text(
        Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(image),
    )
    .trim()
    .to_string();
    let dev = attach(image, None, cleanup);
    std::fs::create_dir_all(at).unwrap();
    tool(Command::new("mount").arg(&dev).arg(at));
    cleanup.push("umount", &[s(at)]);
    (dev, uuid)
}

/// `osctl [--boot-dir BOOT] install to-filesystem --progress none
/// --source-imgref IMAGE EXTRA… ROOT`, with `PATH=bin` if given.
fn fs_install(
    osctl: &Osctl,
    tmp: &Path,
    boot: Option<&Path>,
    bin: Option<&Path>,
    image: &str,
    extra: &[&str],
    root: &Path,
) -> Output {
    let mut cmd = osctl.cmd();
    cmd.env("TMPDIR", tmp);
    if let Some(b) = boot {
        cmd.arg("--boot-dir").arg(b);
    }
    if let Some(b) = bin {
        cmd.env("PATH", b);
    }
    cmd.args(["install", "to-filesystem", "--progress", "none"])
        .args(["--source-imgref", image, "--format", "json"])
        .args(extra)
        .arg(root)
        .output()
        .unwrap()
}

/// The JSON result of a successful install.
#[track_caller]
fn json_ok(out: Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A registry with the bootable test image as `os:fs`, a scratch osctl and
/// a work directory with an empty `tmp`.
fn fs_setup() -> (Registry, String, Osctl, tempfile::TempDir, PathBuf) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:fs",
    );
    let (osctl, work, tmp) = scratch();
    (registry, reference, osctl, work, tmp)
}

#[test]
fn to_filesystem_on_a_mounted_ext4() {
    let (registry, reference, osctl, work, tmp) = fs_setup();
    let no_sysroot = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:nosysroot");
    let mut cleanup = Cleanup::default();
    let root = work.path().join("root");
    let (_, fs_uuid) = mounted_ext4(
        &work.path().join("root.img"),
        512 * MIB,
        &root,
        &mut cleanup,
    );
    // The boot dir: a plain directory outside PATH (no vfat on this host).
    let boot = work.path().join("esp");
    std::fs::create_dir(&boot).unwrap();
    let run = |image: &str, extra: &[&str]| {
        fs_install(&osctl, &tmp, Some(&boot), None, image, extra, &root)
    };

    std::fs::write(root.join("leftover"), "x").unwrap();
    assert_install_fails(
        &run(&reference, &[]),
        &tmp,
        &["not empty (leftover)", "--wipe"],
    );
    assert!(root.join("leftover").exists());
    // A failure after the pull started empties the target again.
    std::fs::remove_file(root.join("leftover")).unwrap();
    assert_install_fails(&run(&no_sysroot, &[]), &tmp, &["os:nosysroot", "/sysroot"]);
    assert_eq!(names(&root), ["lost+found"]);
    assert!(names(&boot).is_empty(), "{:?}", names(&boot));

    std::fs::write(root.join("leftover"), "x").unwrap();
    let result = json_ok(run(&reference, &["--wipe", "--karg", "quiet"]));
    assert!(!root.join("leftover").exists(), "--wipe emptied the root");
    assert!(root.join("lost+found").is_dir(), "lost+found kept");
    assert!(
        !root.join("osctl/seal-at-boot").exists(),
        "no verity: no seal"
    );
    assert_eq!(result["targetKind"], "filesystem");
    assert_eq!(result["verity"], "none");
    let warnings = result["warnings"].to_string();
    assert!(warnings.contains("tune2fs -O verity"), "{result}");
    assert!(
        warnings.contains("does not mount it at /boot"),
        "a boot dir outside PATH that is no mount point: {result}"
    );
    assert_eq!(result["filesystem"]["uuid"], fs_uuid.as_str());
    assert_eq!(result["bootloader"]["from"], "image");
    assert!(result["fstab"].is_null(), "{result}");
    let id = result["imageId"].as_str().unwrap().to_string();
    let options = format!("composefs=?{id} console=ttyS0 root=UUID={fs_uuid} rw quiet");
    assert_eq!(result["kernelCmdline"], options.as_str());
    let entry =
        std::fs::read_to_string(boot.join(format!("loader/entries/osctl-{id}.conf"))).unwrap();
    assert!(entry.contains(&format!("options {options}\n")), "{entry}");
    assert_eq!(
        std::fs::read(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
        IMAGE_SYSTEMD_BOOT
    );
    let fstab = std::fs::read_to_string(root.join(format!("state/deploy/{id}/etc/fstab"))).unwrap();
    assert!(!fstab.contains("/boot"), "{fstab}");
    // This install's staging binds (under its own TMPDIR; other tests may
    // be installing at the same time) are gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&tmp.display().to_string()),
        "staging binds unmounted"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "staging removed"
    );
    check_installed_fs(&root, &boot, Installed { id, options }, &reference, false);
}

/// `osctl status` and `fsck` on the root filesystem at `root` (bound at
/// X/sysroot) with its boot files in `boot`.
#[track_caller]
fn check_installed_fs(root: &Path, boot: &Path, installed: Installed, image: &str, verity: bool) {
    let x = tempfile::tempdir().unwrap();
    let mut inner = Cleanup::default();
    let sysroot = x.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    tool(Command::new("mount").arg("--bind").arg(root).arg(&sysroot));
    inner.push("umount", &[s(&sysroot)]);
    check_status(x.path(), Some(boot), &installed, image, verity);
}

/// ext4 needs dumpe2fs to tell whether it has the verity feature, on the
/// device itself: findmnt shows a directory bind-mounted at PATH as
/// `/dev/loopN[/sub]`.
#[test]
fn to_filesystem_reads_the_ext4_features_with_dumpe2fs() {
    let (_registry, reference, osctl, work, tmp) = fs_setup();
    let mut cleanup = Cleanup::default();
    let top = work.path().join("top");
    let (dev, fs_uuid) = mounted_ext4(&work.path().join("root.img"), 512 * MIB, &top, &mut cleanup);
    std::fs::create_dir(top.join("sub")).unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    tool(
        Command::new("mount")
            .arg("--bind")
            .arg(top.join("sub"))
            .arg(&root),
    );
    cleanup.push("umount", &[s(&root)]);
    let boot = work.path().join("esp");
    std::fs::create_dir(&boot).unwrap();
    let untouched = || {
        assert!(names(&root).is_empty(), "{:?}", names(&root));
        assert!(names(&boot).is_empty(), "{:?}", names(&boot));
    };

    // No dumpe2fs on the PATH: named before anything is written.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(
        tool_text(Command::new("sh").args(["-c", "command -v findmnt"])).trim(),
        bin.join("findmnt"),
    )
    .unwrap();
    let run =
        |bin: Option<&Path>| fs_install(&osctl, &tmp, Some(&boot), bin, &reference, &[], &root);
    assert_install_fails(
        &run(Some(&bin)),
        &tmp,
        &["missing tools", "dumpe2fs (e2fsprogs)"],
    );
    untouched();

    // dumpe2fs fails: an error naming the device, not a silent composefs=?.
    std::fs::write(
        bin.join("dumpe2fs"),
        "#!/bin/sh\necho \"dumpe2fs: Bad magic number in super-block while trying to open $2\" >&2\n\
         echo \"Couldn't find valid filesystem superblock.\" >&2\nexit 1\n",
    )
    .unwrap();
    tool(Command::new("chmod").arg("755").arg(bin.join("dumpe2fs")));
    let err = assert_install_fails(
        &run(Some(&bin)),
        &tmp,
        &["dumpe2fs failed", "Bad magic number", &format!("{dev} ")],
    );
    assert!(!err.contains("[/sub]"), "{err}");
    untouched();

    // The real dumpe2fs reads the device without the [/sub] suffix.
    let result = json_ok(run(None));
    assert_eq!(result["filesystem"]["device"], dev.as_str(), "{result}");
    assert_eq!(result["filesystem"]["uuid"], fs_uuid.as_str());
    assert_eq!(result["verity"], "none");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains(&format!("tune2fs -O verity {dev}`")),
        "{result}"
    );
    assert!(warnings.contains("/sub"), "not the top of {dev}: {result}");
}

/// The default boot dir PATH/boot on the root filesystem: the installed
/// system bind-mounts /sysroot/boot at /boot (the image's /boot is a
/// read-only empty directory).
#[test]
fn to_filesystem_binds_a_boot_dir_of_the_root_filesystem() {
    let (registry, reference, osctl, work, tmp) = fs_setup();
    let extra = vec![
        Entry::dir("sysroot"),
        Entry::dir("boot"),
        Entry::symlink("etc/fstab", "../proc/self/mounts"),
        Entry::file(
            HOST_SYSTEMD_BOOT.trim_start_matches('/'),
            IMAGE_SYSTEMD_BOOT,
        ),
    ];
    let fstab_link = push_tag(
        &registry,
        &os_spec("1.0", &["console=ttyS0"], extra),
        "os:fstablink",
    );
    let mut cleanup = Cleanup::default();
    let root = work.path().join("root");
    mounted_ext4(
        &work.path().join("root.img"),
        512 * MIB,
        &root,
        &mut cleanup,
    );
    let boot = root.join("boot");
    std::fs::create_dir(&boot).unwrap();

    // An image whose /etc/fstab is a symlink: refused before the boot dir
    // is written.
    assert_install_fails(
        &fs_install(&osctl, &tmp, None, None, &fstab_link, &[], &root),
        &tmp,
        &["os:fstablink", "/etc/fstab", "symlink"],
    );
    assert!(names(&boot).is_empty(), "{:?}", names(&boot));
    assert_eq!(names(&root), ["boot", "lost+found"]);

    let result = json_ok(fs_install(&osctl, &tmp, None, None, &reference, &[], &root));
    let line = "/sysroot/boot /boot none bind,x-systemd.requires-mounts-for=/sysroot 0 0";
    assert_eq!(result["fstab"], line, "{result}");
    assert_eq!(result["bootDir"], s(&boot));
    let id = result["imageId"].as_str().unwrap().to_string();
    let fstab = std::fs::read_to_string(root.join(format!("state/deploy/{id}/etc/fstab"))).unwrap();
    assert!(fstab.ends_with(&format!("\n{line}\n")), "{fstab}");
    assert!(
        boot.join(format!("loader/entries/osctl-{id}.conf"))
            .exists()
    );
    let options = result["kernelCmdline"].as_str().unwrap().to_string();
    check_installed_fs(&root, &boot, Installed { id, options }, &reference, false);
}

/// The ESP mounted at PATH/boot/efi (a common layout): PATH/boot holds only
/// mount points and empty directories, and `--wipe` leaves the mount alone.
#[test]
fn to_filesystem_with_the_esp_mounted_below_path() {
    let (_registry, reference, osctl, work, tmp) = fs_setup();
    let mut cleanup = Cleanup::default();
    let root = work.path().join("root");
    mounted_ext4(
        &work.path().join("root.img"),
        512 * MIB,
        &root,
        &mut cleanup,
    );
    // The "ESP": ext4, as this host's kernel has no vfat.
    let esp = root.join("boot/efi");
    let (_, esp_uuid) = mounted_ext4(&work.path().join("esp.img"), 64 * MIB, &esp, &mut cleanup);
    std::fs::create_dir(root.join("boot/grub")).unwrap();
    let run = |extra: &[&str]| fs_install(&osctl, &tmp, Some(&esp), None, &reference, extra, &root);

    let result = json_ok(run(&[]));
    let line = format!("UUID={esp_uuid} /boot ext4 defaults,nofail,x-systemd.automount 0 2");
    assert_eq!(result["fstab"], line.as_str(), "{result}");
    let id = result["imageId"].as_str().unwrap().to_string();
    assert!(esp.join(format!("loader/entries/osctl-{id}.conf")).exists());

    std::fs::write(root.join("leftover"), "x").unwrap();
    let again = json_ok(run(&["--wipe"]));
    assert_eq!(again["imageId"], id.as_str());
    assert!(!root.join("leftover").exists());
    assert_eq!(names(&root.join("boot")), ["efi"], "the mount point kept");
    tool(Command::new("findmnt").arg("--mountpoint").arg(&esp));
    assert!(esp.join(format!("loader/entries/osctl-{id}.conf")).exists());
    assert!(esp.join("lost+found").is_dir(), "the ESP's own files kept");
}

/// A boot dir shared with another OS: a foreign removable-media boot loader
/// is left alone, and a failed install restores what it changed there.
#[test]
fn to_filesystem_shares_the_boot_dir() {
    const OLD_SYSTEMD_BOOT: &[u8] = b"MZ\0old\0#### LoaderInfo: systemd-boot 252.1 ####\0";
    const FOREIGN: &[u8] = b"MZ\0another OS's shim\0";
    let (_registry, reference, osctl, work, tmp) = fs_setup();
    let mut cleanup = Cleanup::default();
    let root = work.path().join("root");
    mounted_ext4(
        &work.path().join("root.img"),
        512 * MIB,
        &root,
        &mut cleanup,
    );
    let boot = work.path().join("esp");
    let fallback = boot.join("EFI/BOOT/BOOTX64.EFI");
    let ours = boot.join("EFI/systemd/systemd-bootx64.efi");
    std::fs::create_dir_all(boot.join("loader")).unwrap();
    std::fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
    let loader_conf = "timeout 5\ndefault other.conf\n";
    std::fs::write(boot.join("loader/loader.conf"), loader_conf).unwrap();
    std::fs::write(&fallback, OLD_SYSTEMD_BOOT).unwrap();
    let run =
        |extra: &[&str]| fs_install(&osctl, &tmp, Some(&boot), None, &reference, extra, &root);

    // Fails after loader.conf and the fallback were written (EFI/systemd is
    // a file): both are restored, osctl's files removed.
    std::fs::write(boot.join("EFI/systemd"), "in the way").unwrap();
    assert_install_fails(&run(&[]), &tmp, &["EFI/systemd"]);
    assert_eq!(
        std::fs::read_to_string(boot.join("loader/loader.conf")).unwrap(),
        loader_conf
    );
    assert_eq!(names(&boot.join("loader")), ["loader.conf"]);
    assert_eq!(std::fs::read(&fallback).unwrap(), OLD_SYSTEMD_BOOT);
    assert_eq!(names(&boot), ["EFI", "loader"]);
    assert_eq!(names(&boot.join("EFI")), ["BOOT", "systemd"]);
    assert_eq!(names(&root), ["lost+found"]);
    std::fs::remove_file(boot.join("EFI/systemd")).unwrap();

    // Another OS's fallback: kept; systemd-boot only at its own path.
    std::fs::write(&fallback, FOREIGN).unwrap();
    let result = json_ok(run(&[]));
    assert_eq!(std::fs::read(&fallback).unwrap(), FOREIGN);
    assert_eq!(std::fs::read(&ours).unwrap(), IMAGE_SYSTEMD_BOOT);
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("EFI/systemd/systemd-bootx64.efi") && warnings.contains("efibootmgr"),
        "{result}"
    );
    let id = result["imageId"].as_str().unwrap();
    let loader = std::fs::read_to_string(boot.join("loader/loader.conf")).unwrap();
    assert!(
        loader.contains(&format!("default osctl-{id}.conf")),
        "{loader}"
    );

    // An older systemd-boot there is replaced.
    std::fs::write(&fallback, OLD_SYSTEMD_BOOT).unwrap();
    let result = json_ok(run(&["--wipe"]));
    assert_eq!(std::fs::read(&fallback).unwrap(), IMAGE_SYSTEMD_BOOT);
    assert!(
        !result["warnings"].to_string().contains("efibootmgr"),
        "{result}"
    );
}
