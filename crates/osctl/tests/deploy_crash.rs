//! Crash safety: osctl is killed (SIGABRT, no cleanup) at every named fail
//! point of switch, finalize, rollback, pin and prune. After each crash the
//! previous default entry, its kernel, initramfs and image are intact,
//! `osctl fsck` is clean, `osctl status` works, and re-running the command
//! succeeds.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::{Osctl, booted_cmd, os_spec, push_tag, run_ok};
use osctl_testutil::{Entry, Registry, RegistryOptions};

/// A machine booted into v1, with v2 and v3 in the registry.
fn booted_machine(registry: &Registry) -> (Osctl, String) {
    let osctl = Osctl::new();
    let v1 = registry.image_ref("os:v1");
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &v1]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let loader = std::fs::read_to_string(osctl.sysroot().join("boot/loader/loader.conf")).unwrap();
    let id = loader
        .lines()
        .find_map(|l| l.strip_prefix("default osctl-"))
        .unwrap()
        .trim_end_matches(".conf")
        .to_string();
    (osctl, id)
}

/// The default entry names `id`, and its kernel, initramfs and image exist.
fn assert_boots(osctl: &Osctl, id: &str, booted: &str, what: &str) {
    let root = osctl.sysroot();
    let loader = std::fs::read_to_string(root.join("boot/loader/loader.conf")).unwrap();
    assert!(
        loader.contains(&format!("default osctl-{id}.conf")),
        "{what}: default changed: {loader}"
    );
    let entry = std::fs::read_to_string(root.join(format!("boot/loader/entries/osctl-{id}.conf")))
        .unwrap_or_else(|e| panic!("{what}: entry of {id} missing: {e}"));
    for key in ["linux", "initrd"] {
        let rel = entry
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .trim_start_matches('/');
        assert!(
            root.join("boot").join(rel).is_file(),
            "{what}: {key} {rel} missing"
        );
    }
    assert!(
        Path::new(&root.join(format!("sysroot/composefs/images/{id}"))).exists(),
        "{what}: image {id} missing"
    );
    osctl.fsck_clean();
    // Whatever status calls staged, booted or rollback has a boot entry:
    // leftovers of an interrupted command are never offered.
    let st: serde_json::Value = serde_json::from_str(&run_ok(
        booted_cmd(osctl, Some(booted)).args(["status", "--format", "json"]),
    ))
    .unwrap();
    for role in ["staged", "booted", "rollback"] {
        if let Some(id) = st["status"][role]["composefs"]["verity"].as_str() {
            // `osctl-<id>.conf`, or boot-counted `osctl-<id>+3.conf`.
            let has_entry = std::fs::read_dir(root.join("boot/loader/entries"))
                .unwrap()
                .flatten()
                .any(|e| {
                    let name = e.file_name().into_string().unwrap();
                    name == format!("osctl-{id}.conf") || name.starts_with(&format!("osctl-{id}+"))
                });
            assert!(has_entry, "{what}: status {role} {id} has no entry");
        }
    }
}

/// Boots `reference` on top of the machine's current booted deployment:
/// switch, finalize, boot it and mark it good (so its entry loses its boot
/// counter and it is the exact default), and return the new booted id.
fn upgrade_and_boot(osctl: &Osctl, booted: &str, reference: &str) -> String {
    run_ok(booted_cmd(osctl, Some(booted)).args([
        "switch",
        "--retain",
        "--progress",
        "none",
        reference,
    ]));
    let st: serde_json::Value = serde_json::from_str(&run_ok(
        booted_cmd(osctl, Some(booted)).args(["status", "--format", "json"]),
    ))
    .unwrap();
    let id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    run_ok(booted_cmd(osctl, Some(booted)).arg("finalize"));
    run_ok(booted_cmd(osctl, Some(&id)).args(["health", "bless"]));
    id
}

#[test]
fn every_fail_point_leaves_a_bootable_machine() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    for v in ["1", "2", "3"] {
        let spec = os_spec(&format!("{v}.0"), &["quiet"], vec![Entry::file("etc/a", v)]);
        push_tag(&registry, &spec, &format!("os:v{v}"));
    }
    let (v2, v3) = (registry.image_ref("os:v2"), registry.image_ref("os:v3"));
    let mut reached = Vec::new();
    for point in osctl_deploy::failpoint::ALL {
        let (osctl, v1_id) = booted_machine(&registry);
        // (booted deployment, the one that must stay the default, command)
        let (booted, keep, args): (String, String, Vec<String>) =
            match point.split(':').next().unwrap() {
                "stage" => (
                    v1_id.clone(),
                    v1_id.clone(),
                    words(&["switch", "--retain", "--progress", "none", &v2]),
                ),
                "finalize" => {
                    run_ok(booted_cmd(&osctl, Some(&v1_id)).args([
                        "switch",
                        "--progress",
                        "none",
                        &v2,
                    ]));
                    (v1_id.clone(), v1_id.clone(), words(&["finalize"]))
                }
                "rollback" => {
                    // v2 booted (v1 its rollback), v3 staged: rollback queues
                    // v1, then drops v3.
                    let v2_id = upgrade_and_boot(&osctl, &v1_id, &v2);
                    run_ok(booted_cmd(&osctl, Some(&v2_id)).args([
                        "switch",
                        "--retain",
                        "--progress",
                        "none",
                        &v3,
                    ]));
                    // The default moves to v1 before v3 is dropped.
                    let keep = v1_id.clone();
                    (v2_id, keep, words(&["rollback"]))
                }
                "prune" => {
                    // v1 → v2 → v3 booted: v2 is the rollback, v1 is pruned.
                    let v2_id = upgrade_and_boot(&osctl, &v1_id, &v2);
                    let v3_id = upgrade_and_boot(&osctl, &v2_id, &v3);
                    (v3_id.clone(), v3_id, words(&["gc"]))
                }
                "pin" => (v1_id.clone(), v1_id.clone(), words(&["pin", &v1_id[..12]])),
                other => panic!("fail point family {other} has no test"),
            };
        let out = booted_cmd(&osctl, Some(&booted))
            .env(osctl_deploy::failpoint::ENV, point)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{point} was not reached by {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reached.push(*point);
        if *point == "finalize:after-default" {
            // The crash came after the new default was written: the staged
            // deployment boots next, and the old one is still complete.
            assert_boots_entry(&osctl, &v1_id, point);
            osctl.fsck_clean();
        } else {
            assert_boots(&osctl, &keep, &booted, point);
        }
        run_ok(booted_cmd(&osctl, Some(&booted)).args(&args));
        osctl.fsck_clean();
    }
    assert_eq!(reached.len(), osctl_deploy::failpoint::ALL.len());
    eprintln!(
        "{} fail points reached; the machine stayed bootable after each",
        reached.len()
    );
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The entry of `id` and its kernel files exist (whatever the default is).
fn assert_boots_entry(osctl: &Osctl, id: &str, what: &str) {
    let root = osctl.sysroot();
    let entry = std::fs::read_to_string(root.join(format!("boot/loader/entries/osctl-{id}.conf")))
        .unwrap_or_else(|e| panic!("{what}: entry of {id} missing: {e}"));
    // `composefs=<id>`, or `composefs=?<id>` on a store without fs-verity.
    assert!(
        entry.contains(&format!("composefs={id}")) || entry.contains(&format!("composefs=?{id}")),
        "{what}: {entry}"
    );
}
