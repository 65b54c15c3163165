//! Helpers of the install tests (install.rs, install_filesystem.rs): run
//! `osctl install`, and check an installed disk from outside (GPT, ESP with
//! mtools, root filesystem with e2fsprogs) and from inside (`osctl status`,
//! `fsck` on the mounted root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::disk::{Cleanup, esp_file, mtools, s, tool, tool_text};
use super::{Osctl, assert_fails_naming, run_ok};

pub const MIB: u64 = 1 << 20;
pub const HOST_SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// What [`check_disk`] found.
pub struct Installed {
    pub id: String,
    pub options: String,
}

/// Checks a to-disk result from outside: `esp` for mtools, `root` for
/// e2fsprogs. `kargs` are the `--karg`s given, `efi` the boot loader bytes.
#[track_caller]
pub fn check_disk(
    esp: &str,
    root: &str,
    esp_partuuid: &str,
    kargs: &[&str],
    efi: &[u8],
) -> Installed {
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
pub fn check_boots(
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
pub fn check_status(
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
pub fn install(osctl: &Osctl, tmp: &Path, args: &[&str]) -> Output {
    osctl
        .cmd()
        .env("TMPDIR", tmp)
        .arg("install")
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
pub fn install_ok(osctl: &Osctl, tmp: &Path, args: &[&str]) -> String {
    let out = install(osctl, tmp, args);
    assert!(
        out.status.success(),
        "install {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `osctl install ARGS…` and asserts it fails as
/// [`assert_install_fails`] says; returns the error line.
#[track_caller]
pub fn install_fails(osctl: &Osctl, tmp: &Path, args: &[&str], needles: &[&str]) -> String {
    assert_install_fails(&install(osctl, tmp, args), tmp, needles)
}

/// Asserts a failed install: one line naming every needle
/// ([`assert_fails_naming`]) and no staging directory left in `tmp`.
/// Returns the error line.
#[track_caller]
pub fn assert_install_fails(out: &Output, tmp: &Path, needles: &[&str]) -> String {
    let line = assert_fails_naming(out, needles);
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "staging directory left behind"
    );
    line
}

pub fn host_systemd_boot() -> Vec<u8> {
    std::fs::read(HOST_SYSTEMD_BOOT).expect("this test needs systemd-boot-efi on the host")
}

/// A scratch sysroot, a work directory for disks, and the `TMPDIR` that
/// `osctl install` stages in (inside the work directory, so a test sees
/// whether staging was cleaned up).
pub fn scratch() -> (Osctl, tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    (Osctl::new(), work, tmp)
}
