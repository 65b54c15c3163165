//! The initramfs root setup (`osctl-root-setup`) on the host: a deployment
//! staged by the real `osctl switch` on a scratch sysroot is mounted the way
//! the initramfs mounts it, in a private mount namespace (`unshare -m`), and
//! every bad input is refused with one console line and no mount left behind.
//!
//! The host kernel has no fs-verity, so these runs use `composefs=?<id>`
//! (the image digest is then checked in software); `verity=require`, sealing
//! and tampered objects are proven in the VM test (tests/vm/lifecycle).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{Osctl, os_spec, run_ok};
use osctl_testutil::{Entry, write_layout};

const FAILED: &str = "OSCTL-ROOT-SETUP-FAILED: ";

/// A scratch sysroot with one staged deployment of an OS image.
struct Staged {
    osctl: Osctl,
    _layout: tempfile::TempDir,
    id: String,
}

fn stage(with_sysroot_dir: bool) -> Staged {
    let layout = tempfile::tempdir().unwrap();
    let mut extra = vec![Entry::file("etc/motd", "image motd\n")];
    if with_sysroot_dir {
        extra.push(Entry::dir("sysroot"));
    }
    write_layout(layout.path(), "v1", &os_spec("1.0", &["quiet"], extra)).unwrap();
    let osctl = Osctl::new();
    let reference = format!("oci:{}:v1", layout.path().display());
    osctl.ok(&["switch", &reference]);
    // The staged marker: "<id> <generation>".
    let staged = std::fs::read_to_string(osctl.sysroot().join("sysroot/state/staged")).unwrap();
    Staged {
        osctl,
        _layout: layout,
        id: staged.split_whitespace().next().unwrap().to_string(),
    }
}

impl Staged {
    fn root(&self) -> PathBuf {
        self.osctl.sysroot().join("sysroot")
    }

    /// Runs `script` in a private mount namespace after making `<sysroot>/sysroot`
    /// a mount point (as the initramfs's root mount is) and writing
    /// `cmdline`; `$RS` runs the root setup.
    fn run(&self, cmdline: &str, script: &str) -> Output {
        let s = self.osctl.sysroot();
        std::fs::write(s.join("cmdline"), cmdline).unwrap();
        let rs = format!(
            "{} --root {} --stash {} --cmdline {} --on-failure exit",
            env!("CARGO_BIN_EXE_osctl-root-setup"),
            self.root().display(),
            s.join("stash").display(),
            s.join("cmdline").display()
        );
        let full = format!(
            "set -e\nmount --bind {r} {r}\nRS='{rs}'\n{script}",
            r = self.root().display()
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &full])
            .output()
            .expect("unshare")
    }

    /// Runs the root setup expecting a failure; checks the one-line marker
    /// and that the root partition is still the only mount there.
    #[track_caller]
    fn refused(&self, cmdline: &str, want: &str) {
        let root = self.root();
        let out = self.run(
            cmdline,
            &format!(
                "if $RS; then echo SETUP-SUCCEEDED; fi\n\
                 findmnt -rn -o TARGET,FSTYPE -R {r}\n\
                 findmnt -rn -o TARGET {s} || echo stash-not-mounted\n",
                r = root.display(),
                s = self.osctl.sysroot().join("stash").display()
            ),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "script failed: {stdout}{stderr}");
        assert!(!stdout.contains("SETUP-SUCCEEDED"), "{stdout}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(FAILED)).collect();
        assert_eq!(lines.len(), 1, "one marker line: {stderr}");
        assert!(
            lines[0].contains(want),
            "marker should say {want:?}: {}",
            lines[0]
        );
        // Only the bind mount the script made: nothing half-mounted.
        let mounts: Vec<&str> = stdout.lines().filter(|l| l.starts_with('/')).collect();
        assert_eq!(mounts.len(), 1, "mounts left: {stdout}");
        assert!(!mounts[0].contains("overlay"), "{stdout}");
        assert!(stdout.contains("stash-not-mounted"), "{stdout}");
    }
}

#[test]
fn mounts_the_deployment_as_the_initramfs_would() {
    let staged = stage(true);
    let root = staged.root();
    let r = root.display();
    let id = &staged.id;
    // /var is seeded by the first switch; remove it to prove the root setup
    // seeds a missing one from the image.
    std::fs::remove_dir_all(root.join("state/var")).unwrap();
    let out = staged.run(
        &format!("BOOT_IMAGE=/vmlinuz rw composefs=?{id}\n"),
        &format!(
            "$RS\n\
             echo \"root: $(findmnt -n -o FSTYPE,OPTIONS {r})\"\n\
             echo \"tool: $(cat {r}/usr/bin/tool | tail -n 1)\"\n\
             if touch {r}/usr/new 2>/dev/null; then echo usr-writable; else echo usr-read-only; fi\n\
             echo admin > {r}/etc/admin.conf\n\
             echo \"etc in state: $(cat {r}/sysroot/state/deploy/{id}/etc/admin.conf)\"\n\
             echo \"motd: $(cat {r}/etc/motd)\"\n\
             echo \"var: $(cat {r}/var/lib/seed)\"\n\
             echo data > {r}/var/lib/written\n\
             echo \"var in state: $(cat {r}/sysroot/state/var/lib/written)\"\n\
             echo \"store: $(ls -d {r}/sysroot/composefs/objects)\"\n\
             echo \"sysroot: $(findmnt -n -o TARGET {r}/sysroot)\"\n\
             ls -a {s} 2>/dev/null || echo stash-removed\n",
            s = staged.osctl.sysroot().join("stash").display()
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let want = [
        "tool: echo 1.0",
        "usr-read-only",
        "etc in state: admin",
        "motd: image motd",
        "var: seeded by 1.0",
        "var in state: data",
        &format!("store: {r}/sysroot/composefs/objects"),
        &format!("sysroot: {r}/sysroot"),
        "stash-removed",
    ];
    for w in want {
        assert!(stdout.contains(w), "missing {w:?} in:\n{stdout}\n{stderr}");
    }
    let root_line = stdout.lines().find(|l| l.starts_with("root: ")).unwrap();
    assert!(root_line.starts_with("root: overlay ro,"), "{root_line}");
    for opt in ["metacopy=on", "redirect_dir=on"] {
        assert!(root_line.contains(opt), "{root_line}");
    }
    assert!(!root_line.contains("verity=require"), "{root_line}");
    assert!(stderr.contains("seeded /var from the image"), "{stderr}");
    assert!(
        stderr.contains(&format!("root is composefs image {id} (verity optional)")),
        "{stderr}"
    );
    // Everything was in the namespace: the host sees the sysroot as before.
    assert!(!Path::new(&root.join("usr")).exists());
    assert!(root.join("state/var/lib/seed").exists());
}

#[test]
fn bad_command_lines_and_stores_are_refused_with_nothing_mounted() {
    let staged = stage(true);
    let id = staged.id.clone();
    let root = staged.root();
    let unknown = "ab".repeat(32);
    staged.refused(
        "BOOT_IMAGE=/vmlinuz rw",
        "no composefs=<image id> on the kernel command line",
    );
    staged.refused(
        "rw composefs=nothex",
        "composefs=nothex on the kernel command line: not a 64-digit",
    );
    staged.refused(
        &format!("rw composefs=?{unknown}"),
        &format!("image {unknown} named by composefs= is not in the store"),
    );
    // Verity demanded where the filesystem has none (this host): sealing
    // fails with the fix in the message, before anything is mounted.
    staged.refused(&format!("rw composefs={id}"), "cannot enable fs-verity on");

    // A deployment whose state is gone.
    let state = root.join("state/deploy").join(&id);
    let aside = root.join("state/aside");
    std::fs::rename(&state, &aside).unwrap();
    staged.refused(
        &format!("rw composefs=?{id}"),
        &format!("deployment {id} has no state at"),
    );
    std::fs::rename(&aside, &state).unwrap();

    // A tampered EROFS image: one byte changed; the software digest check
    // refuses it.
    let image = std::fs::canonicalize(root.join("composefs/images").join(&id)).unwrap();
    let good = std::fs::read(&image).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x55;
    std::fs::write(&image, &bad).unwrap();
    staged.refused(
        &format!("rw composefs=?{id}"),
        &format!("image {id} fails its fs-verity check"),
    );
    std::fs::write(&image, &good).unwrap();

    // No store at all on the root partition.
    let store = root.join("composefs");
    let store_aside = root.join("composefs.aside");
    std::fs::rename(&store, &store_aside).unwrap();
    staged.refused(&format!("rw composefs=?{id}"), "no osctl store at");
    std::fs::rename(&store_aside, &store).unwrap();
}

#[test]
fn a_failure_after_the_first_mount_undoes_every_mount() {
    let staged = stage(true);
    let root = staged.root();
    // /var cannot be seeded into place: state/var is a file. The image is
    // already attached at the root by then; the undo must take it down and
    // put the root partition back.
    std::fs::remove_dir_all(root.join("state/var")).unwrap();
    std::fs::write(root.join("state/var"), "not a directory\n").unwrap();
    staged.refused(
        &format!("rw composefs=?{}", staged.id),
        "renaming into place",
    );
    assert_eq!(
        std::fs::read_to_string(root.join("state/var")).unwrap(),
        "not a directory\n"
    );
}

#[test]
fn an_image_without_mount_points_is_refused_before_any_mount() {
    let staged = stage(false);
    staged.refused(
        &format!("rw composefs=?{}", staged.id),
        "has no /sysroot directory to mount the root partition on (add `RUN mkdir -p /sysroot`",
    );
}

#[test]
fn the_binary_explains_its_arguments() {
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_osctl-root-setup")).arg("--help"));
    assert!(out.contains("--root DIR"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_osctl-root-setup"))
        .args(["--on-failure", "halt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("OSCTL-ROOT-SETUP-FAILED: --on-failure halt: expected reboot, shell or exit")
    );
}
