//! `osctl install to-disk` with the real tools, against a real registry, as
//! root (to-filesystem: install_filesystem.rs; shared checks:
//! util/install.rs).
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

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::disk::{
    Cleanup, attach, esp_file, gpt, mtools, s, sha256, sparse_file, tool, tool_text,
};
use crate::util::install::*;
use crate::util::{
    IMAGE_SYSTEMD_BOOT, Osctl, bootable_os_spec, booted_cmd, os_spec, push_tag, run_ok,
};
use osctl_testutil::{Registry, RegistryOptions};
use serde_json::Value;

#[test]
fn to_disk_writes_a_bootable_image_file() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let reference = push_tag(
        &registry,
        &bootable_os_spec("1.0", &["console=ttyS0"], true),
        "os:v1",
    );
    let (osctl, work, tmp) = scratch();
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
    let (osctl, work, tmp) = scratch();
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
    let (osctl, work, tmp) = scratch();
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
    // Without /proc (a container, a chroot) osctl cannot tell whether the
    // device is mounted: it refuses instead of taking it for unused.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none /proc && exec {} --sysroot {} install to-disk --progress none --source-imgref {reference} {dev}",
            env!("CARGO_BIN_EXE_osctl"),
            osctl.sysroot().display()
        ))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_install_fails(
        &out,
        &tmp,
        &[
            &format!("{dev}: cannot tell whether it is in use (reading /proc/self/mountinfo"),
            "refusing to write to it",
        ],
    );
    // Something else (udev's probe, here a thread) opens the ESP's node as
    // soon as it appears and holds it: its page cache then outlives mcopy,
    // so only an fsync of that node makes the ESP durable.
    let (p1, p2) = (format!("{dev}p1"), format!("{dev}p2"));
    let stop = Arc::new(AtomicBool::new(false));
    let holder = std::thread::spawn({
        let (p1, stop) = (p1.clone(), stop.clone());
        move || {
            let held = loop {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                if let Ok(f) = std::fs::File::open(&p1) {
                    break f;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(held);
            true
        }
    });
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
    // Durable when osctl says so: read through the backing file, past the
    // partition nodes' page caches, while the ESP node is still held.
    let parts = gpt(&backing);
    let esp_written = format!("{}@@{}", backing.display(), parts[0].start);
    let root_written = format!("{}?offset={}", backing.display(), parts[1].start);
    check_disk(
        &esp_written,
        &root_written,
        &parts[0].uuid,
        &[],
        &host_systemd_boot(),
    );
    stop.store(true, Ordering::SeqCst);
    assert!(holder.join().unwrap(), "{p1} was never held open");
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
    let (osctl, work, tmp) = scratch();
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
