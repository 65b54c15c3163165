//! Deployments refuse bad input with one line naming what is wrong, and
//! leave the deployments and boot entries exactly as they were.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::{Osctl, assert_fails_naming, booted_cmd, os_spec, push_tag, run_fails, run_ok};
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions};

/// Every file under the state and boot dirs, with its content: what must
/// not change when a command fails.
fn snapshot_state(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for top in ["sysroot/state", "boot"] {
        let base = root.join(top);
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                // A sysroot without state/ or boot/ yet: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == base => continue,
                Err(e) => panic!("{}: {e}", dir.display()),
            };
            for e in rd {
                let p = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let key = p.strip_prefix(root).unwrap().display().to_string();
                let content = if meta.is_dir() {
                    stack.push(p);
                    Vec::new()
                } else if meta.is_symlink() {
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                };
                out.insert(key, content);
            }
        }
    }
    out
}

/// Runs a command that must fail with one `error:` line containing every
/// needle and change nothing under state/ and boot/.
#[track_caller]
fn fails_cleanly(osctl: &Osctl, booted: Option<&str>, args: &[&str], needles: &[&str]) {
    let before = snapshot_state(osctl.sysroot());
    run_fails(booted_cmd(osctl, booted).args(args), needles);
    assert_eq!(
        snapshot_state(osctl.sysroot()),
        before,
        "{args:?} changed state"
    );
    if osctl.store().exists() {
        osctl.fsck_clean();
    }
}

#[test]
fn images_that_cannot_boot_are_refused() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let good = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:good");
    let no_kernel = push_tag(
        &registry,
        &ImageSpec::new(vec![Layer::new(vec![Entry::file(
            "usr/lib/os-release",
            "ID=x\n",
        )])]),
        "os:nokernel",
    );
    let mut two = os_spec("1.0", &[], vec![]);
    two.layers.push(Layer::new(vec![
        Entry::file("usr/lib/modules/6.13.0/vmlinuz", "k2"),
        Entry::file("usr/lib/modules/6.13.0/initramfs.img", "i2"),
    ]));
    let two_kernels = push_tag(&registry, &two, "os:twokernels");
    let mut bad_kargs = os_spec("1.0", &[], vec![]);
    bad_kargs.layers.push(Layer::new(vec![Entry::file(
        "usr/lib/bootc/kargs.d/20-broken.toml",
        "kargs = [\"unterminated",
    )]));
    let bad_kargs = push_tag(&registry, &bad_kargs, "os:badkargs");

    let osctl = Osctl::new();
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &good]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));

    fails_cleanly(
        &osctl,
        None,
        &["switch", "--progress", "none", &no_kernel],
        &["kernel", "/usr/lib/modules"],
    );
    fails_cleanly(
        &osctl,
        None,
        &["switch", "--progress", "none", &two_kernels],
        &["6.12.0-osctl", "6.13.0"],
    );
    fails_cleanly(
        &osctl,
        None,
        &["switch", "--progress", "none", &bad_kargs],
        &["/usr/lib/bootc/kargs.d/20-broken.toml"],
    );
}

#[test]
fn rollback_without_a_rollback_deployment() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let good = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:good");
    let osctl = Osctl::new();
    fails_cleanly(&osctl, None, &["rollback"], &["no rollback deployment"]);
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &good]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let st = booted_cmd(&osctl, None)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    fails_cleanly(
        &osctl,
        Some(&id),
        &["rollback"],
        &["no rollback deployment"],
    );
    fails_cleanly(
        &osctl,
        Some(&id),
        &["upgrade", "--check", "--tls-verify=true"],
        &[&registry.addr()],
    );
    fails_cleanly(
        &osctl,
        Some(&id),
        &["pin", "0123456789ab"],
        &["no deployment matches '0123456789ab'"],
    );
    fails_cleanly(&Osctl::new(), None, &["upgrade"], &["nothing to upgrade"]);
}

#[test]
fn disk_full_during_switch_keeps_the_machine_intact() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let small = push_tag(&registry, &os_spec("1.0", &[], vec![]), "os:small");
    let mut big = os_spec("2.0", &[], vec![]);
    big.layers.push(Layer::new(vec![Entry::large_file(
        "usr/share/big.bin",
        24 * 1024 * 1024,
        9,
    )]));
    let big = push_tag(&registry, &big, "os:big");

    // A 16 MiB tmpfs as the sysroot: v1 fits, v2 does not.
    let osctl = Osctl::new();
    let root = osctl.sysroot();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Umount(root);
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &small]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let before = snapshot_state(root);
    let out = booted_cmd(&osctl, None)
        .args(["switch", "--progress", "none", &big])
        .output()
        .unwrap();
    assert_fails_naming(&out, &["No space left on device"]);
    assert_eq!(
        snapshot_state(root),
        before,
        "a failed switch changed deployments or entries"
    );
    osctl.fsck_clean();
}
