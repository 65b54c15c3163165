//! `osctl install to-disk` and `to-filesystem` with the real tools, against
//! a real registry, as root.
//!
//! The disks are read from outside the way the firmware and the initramfs
//! would: the GPT with `sfdisk -J`, the ESP with mtools (this host's kernel
//! may have no vfat), the root filesystem with e2fsprogs (`FILE?offset=N`)
//! and through a read-only loop device at its offset; then the installed
//! sysroot is mounted and `osctl status` and `osctl fsck` run on it, with a
//! simulated kernel command line equal to the boot entry's.
//!
//! Needs: fdisk (sfdisk), e2fsprogs, dosfstools, mtools, util-linux
//! (losetup, partx, wipefs), mount, and loop devices.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::disk::{
    Cleanup, attach, esp_file, gpt, mtools, s, sha256, sparse_file, tool, tool_text,
};
use common::{IMAGE_SYSTEMD_BOOT, Osctl, bootable_os_spec, booted_cmd, os_spec, push_tag, run_ok};
use osctl_testutil::{Registry, RegistryOptions};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const HOST_SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// What [`check_disk`] found.
struct Installed {
    id: String,
    options: String,
}

/// Checks a to-disk result from outside: `esp` for mtools, `root` for
/// e2fsprogs. `kargs` are the `--karg`s given, `efi` the boot loader bytes.
#[track_caller]
fn check_disk(esp: &str, root: &str, esp_partuuid: &str, kargs: &[&str], efi: &[u8]) -> Installed {
    // ESP: the default entry, its options, kernel, initramfs, boot loader.
    let loader = String::from_utf8(esp_file(esp, "/loader/loader.conf")).unwrap();
    let id = loader
        .lines()
        .find_map(|l| l.strip_prefix("default osctl-")?.strip_suffix(".conf"))
        .unwrap_or_else(|| panic!("no default in loader.conf: {loader}"))
        .to_string();
    let entry =
        String::from_utf8(esp_file(esp, &format!("/loader/entries/osctl-{id}.conf"))).unwrap();
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .to_string();
    let dumpe2fs = tool_text(Command::new("dumpe2fs").arg("-h").arg(root));
    let field = |name: &str| {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} not in dumpe2fs output"))
            .to_string()
    };
    let uuid = field("Filesystem UUID:");
    let features: Vec<String> = field("Filesystem features:")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(
        features.contains(&"has_journal".to_string()),
        "{features:?}"
    );
    assert!(features.contains(&"verity".to_string()), "{features:?}");
    assert_eq!(field("Block size:"), "4096");
    assert_eq!(field("Filesystem volume name:"), "osctl-root");
    // Verity required (no '?'), image kargs, root=, rw, then --kargs in order.
    let mut expected = vec![
        format!("composefs={id}"),
        "console=ttyS0".to_string(),
        format!("root=UUID={uuid}"),
        "rw".to_string(),
    ];
    expected.extend(kargs.iter().map(|k| k.to_string()));
    assert_eq!(options, expected.join(" "));
    let linux = entry
        .lines()
        .find_map(|l| l.strip_prefix("linux "))
        .unwrap();
    let initrd = entry
        .lines()
        .find_map(|l| l.strip_prefix("initrd "))
        .unwrap();
    assert_eq!(esp_file(esp, linux.trim()), b"kernel for 1.0".repeat(50));
    assert_eq!(esp_file(esp, initrd.trim()), vec![b'i'; 3000]);
    assert_eq!(esp_file(esp, "/EFI/BOOT/BOOTX64.EFI"), efi);
    assert_eq!(esp_file(esp, "/EFI/systemd/systemd-bootx64.efi"), efi);

    // Root: the store, the deployment with its fstab line, the marker.
    let debugfs =
        |request: &str| tool_text(Command::new("debugfs").arg("-R").arg(request).arg(root));
    assert!(debugfs("cat /osctl/seal-at-boot").contains("fs-verity"));
    let fstab = debugfs(&format!("cat /state/deploy/{id}/etc/fstab"));
    assert!(
        fstab.starts_with("# <file system>"),
        "image's fstab kept: {fstab}"
    );
    assert!(
        fstab.contains(&format!(
            "\nPARTUUID={esp_partuuid} /boot vfat umask=0077,shortname=winnt,nofail,x-systemd.automount 0 2\n"
        )),
        "{fstab}"
    );
    let stat = debugfs(&format!("stat /state/deploy/{id}/etc/fstab"));
    assert!(stat.contains("Mode:  0644"), "{stat}");
    let top = debugfs("ls /");
    for name in ["composefs", "state", "osctl"] {
        assert!(top.contains(name), "{name} at the root: {top}");
    }
    assert!(debugfs("ls /state/var/lib").contains("seed"), "/var seeded");
    assert!(
        !debugfs("ls /state").contains("staged"),
        "finalized: no staged marker"
    );
    Installed { id, options }
}

/// Mounts the root filesystem `root_dev` read-only at X/sysroot, copies the
/// ESP to X/boot, "boots" the entry's command line, and runs status and
/// fsck there.
#[track_caller]
fn check_boots(
    root_dev: &str,
    esp: &str,
    installed: &Installed,
    image: &str,
    verity_required: bool,
) {
    let x = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let sysroot = x.path().join("sysroot");
    let boot = x.path().join("boot");
    std::fs::create_dir(&sysroot).unwrap();
    std::fs::create_dir(&boot).unwrap();
    tool(
        Command::new("mount")
            .args(["-o", "ro", root_dev])
            .arg(&sysroot),
    );
    cleanup.push("umount", &[s(&sysroot)]);
    tool(mtools("mcopy", esp).args(["-s", "-n", "::/*"]).arg(&boot));
    check_status(x.path(), None, installed, image, verity_required);
    drop(cleanup);
}

/// `osctl status` and `fsck` on an installed sysroot `x`.
#[track_caller]
fn check_status(
    x: &Path,
    boot: Option<&Path>,
    installed: &Installed,
    image: &str,
    verity_required: bool,
) {
    let cmdline = x.join("cmdline");
    std::fs::write(
        &cmdline,
        format!("BOOT_IMAGE=/vmlinuz {}\n", installed.options),
    )
    .unwrap();
    let osctl = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_osctl"));
        c.arg("--sysroot")
            .arg(x)
            .env("OSCTL_CMDLINE_FILE", &cmdline);
        if let Some(b) = boot {
            c.arg("--boot-dir").arg(b);
        }
        run_ok(c.args(args))
    };
    let st: Value = serde_json::from_str(&osctl(&["status", "--format", "json"])).unwrap();
    let booted = &st["status"]["booted"];
    assert_eq!(booted["composefs"]["verity"], installed.id.as_str(), "{st}");
    assert_eq!(
        booted["composefs"]["missingVerityAllowed"], !verity_required,
        "{st}"
    );
    assert!(st["status"]["staged"].is_null(), "{st}");
    assert!(st["status"]["rollback"].is_null(), "{st}");
    let image_name = image.split_once("://").map_or(image, |(_, n)| n);
    assert!(booted.to_string().contains(image_name), "{st}");
    let fsck = osctl(&["fsck"]);
    assert!(fsck.contains(" 0 problem(s)"), "{fsck}");
}

/// `osctl install …` with a scratch sysroot; the install's temporaries go
/// under `tmp`.
fn install(osctl: &Osctl, tmp: &Path, args: &[&str]) -> Output {
    osctl
        .cmd()
        .env("TMPDIR", tmp)
        .arg("install")
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn install_ok(osctl: &Osctl, tmp: &Path, args: &[&str]) -> String {
    let out = install(osctl, tmp, args);
    assert!(
        out.status.success(),
        "install {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a failed install with a one-line error naming every needle.
#[track_caller]
fn install_fails(osctl: &Osctl, tmp: &Path, args: &[&str], needles: &[&str]) {
    let out = install(osctl, tmp, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "install {args:?} should fail");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error should mention {n:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "staging directory left behind"
    );
}

fn host_systemd_boot() -> Vec<u8> {
    std::fs::read(HOST_SYSTEMD_BOOT).expect("this test needs systemd-boot-efi on the host")
}

#[test]
fn to_disk_writes_a_bootable_image_file() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:v1",
    );
    let osctl = Osctl::new();
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let disk = work.path().join("disk.img");
    let out = install_ok(
        &osctl,
        &tmp,
        &[
            "to-disk",
            "--progress",
            "none",
            "--source-imgref",
            &reference,
            "--karg",
            "quiet",
            "--karg",
            "systemd.unit=multi-user.target",
            s(&disk),
        ],
    );
    assert!(
        out.contains("First boot enables fs-verity on the store."),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "staging removed"
    );

    // A sparse file of whole MiB: ESP at 1 MiB, root right after it.
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len() % MIB, 0);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len(),
        "sparse"
    );
    let parts = gpt(&disk);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!((parts[0].start, parts[0].size), (MIB, 256 * MIB));
    assert_eq!(
        (parts[0].kind.as_str(), parts[0].name.as_str()),
        (ESP_TYPE, "ESP")
    );
    assert_eq!(parts[1].start, 257 * MIB);
    assert_eq!(parts[1].size, meta.len() - 258 * MIB);
    assert_eq!(parts[1].kind, ROOT_TYPE);

    let esp = format!("{}@@{}", disk.display(), parts[0].start);
    let root = format!("{}?offset={}", disk.display(), parts[1].start);
    let installed = check_disk(
        &esp,
        &root,
        &parts[0].uuid,
        &["quiet", "systemd.unit=multi-user.target"],
        IMAGE_SYSTEMD_BOOT,
    );
    assert!(out.contains(&installed.id[..12]), "{out}");
    assert!(out.contains(&installed.options), "{out}");

    let mut cleanup = Cleanup::default();
    let dev = attach(&disk, Some((parts[1].start, parts[1].size)), &mut cleanup);
    check_boots(&dev, &esp, &installed, &reference, true);
}

#[test]
fn refusals_leave_the_target_alone() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let good = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:good",
    );
    let no_sysroot = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:nosysroot");
    let osctl = Osctl::new();
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let to_disk = |image: &str, target: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["to-disk", "--progress", "none", "--source-imgref", image];
        args.extend_from_slice(extra);
        args.push(s(target));
        args.into_iter().map(String::from).collect()
    };
    let fails = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        install_fails(&osctl, &tmp, &args, needles);
    };

    // A partition table: refused without --wipe, not a byte changed.
    let used = work.path().join("used.img");
    sparse_file(&used, 512 * MIB);
    tool(Command::new("sh").arg("-c").arg(format!(
        "echo 'start=2048, size=20480, type=83' | sfdisk -q -X dos {}",
        used.display()
    )));
    let before = sha256(&used);
    fails(to_disk(&good, &used, &[]), &["used.img", "--wipe", "dos"]);
    assert_eq!(sha256(&used), before);

    // A reference that does not exist: no file created.
    let new = work.path().join("new.img");
    fails(
        to_disk(&registry.image_ref("os:missing"), &new, &[]),
        &["os:missing"],
    );
    assert!(!new.exists());
    fails(
        to_disk("not a reference!", &new, &[]),
        &["not a reference!"],
    );
    assert!(!new.exists());

    // An image without /sysroot: refused before writing, new or existing.
    fails(
        to_disk(&no_sysroot, &new, &[]),
        &["os:nosysroot", "/sysroot"],
    );
    assert!(!new.exists());
    let zeros = work.path().join("zeros.img");
    sparse_file(&zeros, 512 * MIB);
    let zeros_before = sha256(&zeros);
    fails(to_disk(&no_sysroot, &zeros, &[]), &["/sysroot"]);
    // Too small for the content, naming the sizes.
    let tiny = work.path().join("tiny.img");
    sparse_file(&tiny, 64 * MIB);
    fails(
        to_disk(&good, &tiny, &[]),
        &["tiny.img", "too small", "67108864 bytes"],
    );
    assert_eq!(std::fs::metadata(&tiny).unwrap().len(), 64 * MIB);
    fails(
        to_disk(&good, &new, &["--karg", "root=/dev/sda2"]),
        &["root="],
    );
    fails(to_disk(&good, &new, &["--esp-size", "16"]), &["--esp-size"]);
    assert!(!new.exists());
    assert_eq!(sha256(&zeros), zeros_before);

    // Nothing booted and no --source-imgref.
    install_fails(
        &osctl,
        &tmp,
        &["to-disk", "--progress", "none", s(&new)],
        &["give --source-imgref"],
    );
    assert!(!new.exists());

    // --wipe: the used file becomes a two-partition disk of the same size.
    let wipe = to_disk(&good, &used, &["--wipe"]);
    install_ok(
        &osctl,
        &tmp,
        &wipe.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let parts = gpt(&used);
    assert_eq!(parts.len(), 2);
    assert_eq!(std::fs::metadata(&used).unwrap().len(), 512 * MIB);
    assert_eq!(parts[1].size, 512 * MIB - 258 * MIB);
}

#[test]
fn to_disk_without_source_installs_the_booted_image() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], false),
        "os:booted",
    );
    let osctl = Osctl::new();
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &reference]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let st: Value = serde_json::from_str(&run_ok(
        booted_cmd(&osctl, None).args(["status", "--format", "json"]),
    ))
    .unwrap();
    let id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk.img");
    // The host "runs" that very image: the new disk's deployment is still
    // made the default, not mistaken for the booted one.
    let out = run_ok(
        booted_cmd(&osctl, Some(&id))
            .env("TMPDIR", work.path())
            .args([
                "install",
                "to-disk",
                "--progress",
                "none",
                "--bootloader",
                "none",
            ])
            .arg(&disk),
    );
    assert!(
        out.contains(&format!("Installed {reference} (image {})", &id[..12])),
        "{out}"
    );
    assert!(out.contains("boot loader: none"), "{out}");
    let parts = gpt(&disk);
    let esp = format!("{}@@{}", disk.display(), parts[0].start);
    let loader = String::from_utf8(esp_file(&esp, "/loader/loader.conf")).unwrap();
    assert!(
        loader.contains(&format!("default osctl-{id}.conf")),
        "{loader}"
    );
    let listing = tool_text(mtools("mdir", &esp).args(["-b", "::/"]));
    assert!(!listing.contains("EFI"), "--bootloader none: {listing}");
}

#[test]
fn to_disk_on_a_block_device() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], false),
        "os:dev",
    );
    let osctl = Osctl::new();
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let backing = work.path().join("backing.img");
    sparse_file(&backing, 1 << 30);
    let mut cleanup = Cleanup::default();
    let dev = attach(&backing, None, &mut cleanup);
    // Partitions osctl makes the kernel add go before the device does.
    cleanup.push("partx", &["-d", &dev]);

    // The backing file is in use by the loop device.
    install_fails(
        &osctl,
        &tmp,
        &[
            "to-disk",
            "--progress",
            "none",
            "--source-imgref",
            &reference,
            s(&backing),
        ],
        &["in use", &dev],
    );
    let out = install_ok(
        &osctl,
        &tmp,
        &[
            "to-disk",
            "--progress",
            "none",
            "--source-imgref",
            &reference,
            &dev,
        ],
    );
    assert!(out.contains("disk: block device, 1.0 GiB, GPT"), "{out}");
    let (p1, p2) = (format!("{dev}p1"), format!("{dev}p2"));
    assert!(
        out.contains(&format!("partition 1 ({p1}): ESP, 256 MiB")),
        "{out}"
    );
    assert!(
        out.contains(&format!("from this host ({HOST_SYSTEMD_BOOT})")),
        "{out}"
    );
    for p in [&p1, &p2] {
        let meta = std::fs::metadata(p).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_block_device(
            &meta.file_type()
        ));
    }
    let parts = gpt(Path::new(&dev));
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].size, (1 << 30) - 258 * MIB);
    let installed = check_disk(&p1, &p2, &parts[0].uuid, &[], &host_systemd_boot());
    check_boots(&p2, &p1, &installed, &reference, true);

    // Now it has a partition table: refused without --wipe.
    install_fails(
        &osctl,
        &tmp,
        &[
            "to-disk",
            "--progress",
            "none",
            "--source-imgref",
            &reference,
            &dev,
        ],
        &["--wipe", "gpt"],
    );
}

#[test]
fn to_filesystem_on_a_mounted_ext4() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:fs",
    );
    let no_sysroot = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:nosysroot");
    let osctl = Osctl::new();
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let image = work.path().join("root.img");
    sparse_file(&image, 512 * MIB);
    // No verity feature: this host's kernel mounts such a filesystem
    // read-only only, and install must then not promise fs-verity.
    tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-b", "4096"])
            .arg(&image),
    );
    let fs_uuid = tool_text(
        Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(&image),
    )
    .trim()
    .to_string();
    let mut cleanup = Cleanup::default();
    let dev = attach(&image, None, &mut cleanup);
    let root = work.path().join("root");
    let boot = work.path().join("esp");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&boot).unwrap();
    tool(Command::new("mount").arg(&dev).arg(&root));
    cleanup.push("umount", &[s(&root)]);

    let run = |image: &str, extra: &[&str]| -> Output {
        osctl
            .cmd()
            .env("TMPDIR", &tmp)
            .arg("--boot-dir")
            .arg(&boot)
            .args(["install", "to-filesystem", "--progress", "none"])
            .args(["--source-imgref", image])
            .args(extra)
            .arg(&root)
            .output()
            .unwrap()
    };
    let one_line_error = |out: Output, needles: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{n:?}: {stderr}");
        }
    };
    std::fs::write(root.join("leftover"), "x").unwrap();
    one_line_error(run(&reference, &[]), &["not empty (leftover)", "--wipe"]);
    assert!(root.join("leftover").exists());
    // A failure after the pull started empties the target again.
    std::fs::remove_file(root.join("leftover")).unwrap();
    one_line_error(run(&no_sysroot, &[]), &["os:nosysroot", "/sysroot"]);
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&root), ["lost+found"]);
    assert!(names(&boot).is_empty(), "{:?}", names(&boot));

    std::fs::write(root.join("leftover"), "x").unwrap();
    let out = run(
        &reference,
        &["--wipe", "--karg", "quiet", "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!root.join("leftover").exists(), "--wipe emptied the root");
    assert!(root.join("lost+found").is_dir(), "lost+found kept");
    assert!(
        !root.join("osctl/seal-at-boot").exists(),
        "no verity: no seal"
    );
    assert_eq!(result["targetKind"], "filesystem");
    assert_eq!(result["verity"], "none");
    assert!(
        result["warnings"].to_string().contains("tune2fs -O verity"),
        "{result}"
    );
    assert_eq!(result["filesystem"]["uuid"], fs_uuid.as_str());
    assert_eq!(result["bootloader"]["from"], "image");
    assert!(
        result["fstab"].is_null(),
        "the boot dir is no separate filesystem"
    );
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
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("osctl-install-"),
        "staging binds unmounted"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "staging removed"
    );

    // The installed sysroot: the root filesystem at X/sysroot.
    let x = tempfile::tempdir().unwrap();
    let mut inner = Cleanup::default();
    std::fs::create_dir(x.path().join("sysroot")).unwrap();
    tool(
        Command::new("mount")
            .arg("--bind")
            .arg(&root)
            .arg(x.path().join("sysroot")),
    );
    inner.push("umount", &[s(&x.path().join("sysroot"))]);
    let installed = Installed { id, options };
    check_status(x.path(), Some(&boot), &installed, &reference, false);
}

/// Replaces UUIDs, FAT volume ids, 64- and 12-hex ids with placeholders.
fn normalize(text: &str) -> String {
    let words: Vec<String> = text
        .split_inclusive(|c: char| {
            c == ' ' || c == '\n' || c == '=' || c == ',' || c == '(' || c == ')'
        })
        .map(|w| {
            let (core, tail) =
                w.split_at(w.trim_end_matches([' ', '\n', '=', ',', '(', ')']).len());
            let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
            let groups: Vec<&str> = core.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            let placeholder = if lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| hex(g)) {
                Some("<uuid>")
            } else if lens == [4, 4] && groups.iter().all(|g| hex(g)) {
                Some("<vol>")
            } else if core.len() == 64 && hex(core) {
                Some("<id>")
            } else if core.len() == 12 && hex(core) {
                Some("<short>")
            } else {
                None
            };
            match placeholder {
                Some(p) => format!("{p}{tail}"),
                None => w.to_string(),
            }
        })
        .collect();
    words.concat()
}

#[test]
fn human_output() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:v1",
    );
    let osctl = Osctl::new();
    let work = tempfile::tempdir().unwrap();
    let tmp: PathBuf = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let disk = work.path().join("disk.img");
    let out = osctl
        .cmd()
        .env("TMPDIR", &tmp)
        .args([
            "install",
            "to-disk",
            "--progress",
            "plain",
            "--size",
            "1G",
            "--source-imgref",
            &reference,
        ])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = normalize(&String::from_utf8_lossy(&out.stdout))
        .replace(&registry.addr(), "REGISTRY")
        .replace(s(work.path()), "WORK");
    assert_eq!(
        stdout,
        "Installed REGISTRY/os:v1 (image <short>) to WORK/disk.img\n  \
         disk: image file, 1.0 GiB, GPT\n  \
         partition 1: ESP, 256 MiB, vfat UUID=<vol>, PARTUUID=<uuid>\n  \
         partition 2: root, 766 MiB, ext4 UUID=<uuid>, PARTUUID=<uuid>\n  \
         boot loader: systemd-boot from the image (/usr/lib/systemd/boot/efi/systemd-bootx64.efi)\n  \
         /etc/fstab: PARTUUID=<uuid> /boot vfat umask=0077,shortname=winnt,nofail,x-systemd.automount 0 2\n  \
         kernel command line: composefs=<id> console=ttyS0 root=UUID=<uuid> rw\n\
         First boot enables fs-verity on the store.\n"
    );
    // Progress: the pull's lines, then one line per install step.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            !l.starts_with("layer ") && !l.starts_with("Pulling ") && !l.starts_with("Building ")
        })
        .collect();
    assert_eq!(
        steps,
        [
            "Staging the first deployment",
            "Writing the GPT partition table",
            "Creating the root filesystem (ext4) from the staged sysroot",
            "Creating the ESP (vfat) and copying the boot files",
        ],
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1 << 30);
}
