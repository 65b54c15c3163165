//! The deployment lifecycle on a scratch sysroot, against a real registry:
//! switch v1 → boot it → edit /etc, write /var → upgrade to v2 → finalize →
//! boot v2 → check the merged /etc, /var, the boot entry and status →
//! rollback → upgrade --check → gc.

use std::path::{Path, PathBuf};

use crate::util::{Osctl, booted_cmd, os_spec, push_tag, run_ok};
use osctl_testutil::{Entry, Registry, RegistryOptions};
use serde_json::Value;

fn v1() -> osctl_testutil::ImageSpec {
    os_spec(
        "1.0",
        &["console=ttyS0", "quiet"],
        vec![
            Entry::file("etc/both.conf", "image v1\n"),
            Entry::file("etc/admin.conf", "image v1\n"),
            Entry::file("etc/image-only.conf", "image v1\n"),
            Entry::file("etc/deleted.conf", "image v1\n"),
            Entry::file("etc/typechange", "a file in v1\n"),
        ],
    )
}

fn v2() -> osctl_testutil::ImageSpec {
    os_spec(
        "2.0",
        &["console=ttyS0", "loglevel=3"],
        vec![
            Entry::file("etc/both.conf", "image v2\n"),
            Entry::file("etc/admin.conf", "image v1\n"),
            Entry::file("etc/image-only.conf", "image v2\n"),
            Entry::file("etc/deleted.conf", "image v1\n"),
            Entry::dir("etc/typechange"),
            Entry::file("etc/typechange/now-a-dir", "v2\n"),
            Entry::file("etc/new-in-v2.conf", "v2\n"),
        ],
    )
}

fn status(osctl: &Osctl, booted: Option<&str>) -> Value {
    let out = run_ok(booted_cmd(osctl, booted).args(["status", "--format", "json"]));
    serde_json::from_str(&out).unwrap()
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn switch_boot_edit_upgrade_finalize_rollback() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    push_tag(&registry, &v1(), "os:stable");
    let reference = registry.image_ref("os:stable");
    let osctl = Osctl::new();
    let root = osctl.sysroot().to_path_buf();

    // Fresh machine: switch + finalize make v1 the default boot entry.
    let out = run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &reference]));
    assert!(out.contains("Staged"), "{out}");
    let st = status(&osctl, None);
    let v1_id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let loader = read(root.join("boot/loader/loader.conf"));
    assert!(
        loader.contains(&format!("default osctl-{v1_id}.conf")),
        "{loader}"
    );

    // Boot v1: edit /etc, write /var.
    let st = status(&osctl, Some(&v1_id));
    assert_eq!(
        st["status"]["booted"]["composefs"]["verity"],
        v1_id.as_str()
    );
    assert_eq!(st["status"]["booted"]["image"]["version"], "1.0");
    assert!(st["status"]["staged"].is_null());
    let etc = root.join(format!("sysroot/state/deploy/{v1_id}/etc"));
    std::fs::write(etc.join("both.conf"), "admin edit\n").unwrap();
    std::fs::write(etc.join("admin.conf"), "admin edit\n").unwrap();
    std::fs::remove_file(etc.join("deleted.conf")).unwrap();
    std::fs::write(etc.join("local.conf"), "admin added\n").unwrap();
    std::fs::write(etc.join("typechange"), "admin edited the file\n").unwrap();
    let var = root.join("sysroot/state/var");
    // The first deployment seeded /var from its image; later ones never do.
    assert_eq!(read(var.join("lib/seed")), "seeded by 1.0\n");
    std::fs::create_dir_all(var.join("lib/app")).unwrap();
    std::fs::write(var.join("lib/app/data"), "precious\n").unwrap();

    // No update yet; then v2 is pushed to the same tag.
    let out = run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["upgrade", "--check"]));
    assert!(out.contains("No update available"), "{out}");
    push_tag(&registry, &v2(), "os:stable");
    let blob_gets = |log: &str| {
        log.lines()
            .filter(|l| l.contains("GET /v2/os/blobs/sha256:"))
            .count()
    };
    let before = blob_gets(&registry.log());
    let out = run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["upgrade", "--check"]));
    assert!(
        out.contains("Update available") && out.contains("2.0"),
        "{out}"
    );
    // Only the config blob was fetched: no layers.
    assert_eq!(
        blob_gets(&registry.log()) - before,
        1,
        "upgrade --check fetched layers"
    );
    let st = status(&osctl, Some(&v1_id));
    assert_eq!(st["status"]["booted"]["cachedUpdate"]["version"], "2.0");

    // Upgrade stages v2; finalize merges /etc and switches the default.
    run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["upgrade", "--progress", "none"]));
    let st = status(&osctl, Some(&v1_id));
    let v2_id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1_id, v2_id);
    assert_eq!(st["status"]["staged"]["image"]["version"], "2.0");
    let loader = read(root.join("boot/loader/loader.conf"));
    assert!(
        loader.contains(&v1_id),
        "staging must not change the default: {loader}"
    );
    // A new deployment boots on trial: three tries (systemd-boot boot
    // counting) before the boot loader falls back to v1.
    let entry = read(root.join(format!("boot/loader/entries/osctl-{v2_id}+3.conf")));
    let options = entry.lines().find(|l| l.starts_with("options")).unwrap();
    // The host has no fs-verity, so the store is insecure and the entry
    // says verity is optional (`?`).
    assert_eq!(
        options,
        format!("options composefs=?{v2_id} console=ttyS0 loglevel=3")
    );
    let linux = entry.lines().find(|l| l.starts_with("linux")).unwrap();
    let kernel = root.join("boot").join(
        linux
            .trim_start_matches("linux")
            .trim()
            .trim_start_matches('/'),
    );
    assert_eq!(read(kernel), "kernel for 2.0".repeat(50));

    let out = run_ok(booted_cmd(&osctl, Some(&v1_id)).arg("finalize"));
    assert!(out.contains("conflicts"), "{out}");
    let merged = root.join(format!("sysroot/state/deploy/{v2_id}/etc"));
    assert_eq!(
        read(merged.join("both.conf")),
        "admin edit\n",
        "conflict keeps the admin's"
    );
    assert_eq!(read(merged.join("admin.conf")), "admin edit\n");
    assert_eq!(read(merged.join("image-only.conf")), "image v2\n");
    assert!(
        !merged.join("deleted.conf").exists(),
        "admin deletion carried"
    );
    assert_eq!(read(merged.join("local.conf")), "admin added\n");
    assert_eq!(read(merged.join("new-in-v2.conf")), "v2\n");
    assert_eq!(read(merged.join("typechange")), "admin edited the file\n");

    // Boot v2.
    let st = status(&osctl, Some(&v2_id));
    assert_eq!(
        st["status"]["booted"]["composefs"]["verity"],
        v2_id.as_str()
    );
    assert_eq!(
        st["status"]["rollback"]["composefs"]["verity"],
        v1_id.as_str()
    );
    assert_eq!(st["status"]["rollbackQueued"], false);
    let conflicts = serde_json::to_string(&st["status"]["booted"]).unwrap();
    assert!(
        conflicts.contains("both.conf"),
        "status lists the /etc conflicts: {conflicts}"
    );
    assert_eq!(
        read(var.join("lib/app/data")),
        "precious\n",
        "/var untouched"
    );
    assert_eq!(
        read(var.join("lib/seed")),
        "seeded by 1.0\n",
        "v2's /var is not applied"
    );

    // Rollback queues v1.
    run_ok(booted_cmd(&osctl, Some(&v2_id)).arg("rollback"));
    let st = status(&osctl, Some(&v2_id));
    assert_eq!(st["status"]["rollbackQueued"], true);
    assert_eq!(st["spec"]["bootOrder"], "rollback");
    let loader = read(root.join("boot/loader/loader.conf"));
    assert!(loader.contains(&format!("osctl-{v1_id}.conf")), "{loader}");

    // gc keeps both deployments' images; they stay mountable.
    run_ok(booted_cmd(&osctl, Some(&v2_id)).arg("gc"));
    for id in [&v1_id, &v2_id] {
        assert!(Path::new(&root.join(format!("sysroot/composefs/images/{id}"))).exists());
    }
    osctl.fsck_clean();
}

#[test]
fn apply_finalizes_then_reboots() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    push_tag(&registry, &v1(), "os:v1");
    let osctl = Osctl::new();
    let marker = osctl.sysroot().join("rebooted");
    run_ok(
        booted_cmd(&osctl, None)
            .env(
                "OSCTL_REBOOT_COMMAND",
                format!("touch {}", marker.display()),
            )
            .args([
                "switch",
                "--apply",
                "--progress",
                "none",
                &registry.image_ref("os:v1"),
            ]),
    );
    assert!(marker.exists(), "the reboot command ran");
    let loader = read(osctl.sysroot().join("boot/loader/loader.conf"));
    assert!(
        loader.starts_with("default osctl-"),
        "finalized before the reboot: {loader}"
    );
    assert!(!osctl.sysroot().join("sysroot/state/staged").exists());
    // Human status: the new deployment boots next.
    let human = run_ok(booted_cmd(&osctl, None).args(["status", "--format", "human"]));
    assert!(human.contains("os:v1"), "{human}");
}

#[test]
fn replacing_a_finalized_update_never_leaves_the_default_dangling() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1_ref = push_tag(&registry, &v1(), "os:v1");
    let v2_ref = push_tag(&registry, &v2(), "os:v2");
    let v3_ref = push_tag(&registry, &os_spec("3.0", &[], vec![]), "os:v3");
    let osctl = Osctl::new();
    let root = osctl.sysroot().to_path_buf();
    let default_has_entry = || {
        let loader = read(root.join("boot/loader/loader.conf"));
        let name = loader
            .lines()
            .find_map(|l| l.strip_prefix("default "))
            .unwrap()
            .trim()
            .to_string();
        assert!(
            root.join("boot/loader/entries").join(&name).is_file(),
            "dangling default {name}"
        );
        name
    };
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &v1_ref]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let v1_id = default_has_entry()
        .trim_start_matches("osctl-")
        .trim_end_matches(".conf")
        .to_string();
    // v2 finalized (the default), then replaced by v3 before any reboot.
    run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["switch", "--progress", "none", &v2_ref]));
    run_ok(booted_cmd(&osctl, Some(&v1_id)).arg("finalize"));
    run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["switch", "--progress", "none", &v3_ref]));
    assert!(
        default_has_entry().contains(&v1_id),
        "the default went back to the booted v1"
    );
    // Switching back to the booted image drops v3 the same way.
    run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["switch", "--progress", "none", &v1_ref]));
    default_has_entry();
    let st = status(&osctl, Some(&v1_id));
    assert!(st["status"]["staged"].is_null(), "{st}");
}

#[test]
fn the_boot_dir_given_once_is_remembered() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1_ref = push_tag(&registry, &v1(), "os:v1");
    let osctl = Osctl::new();
    let esp = osctl.sysroot().join("efi");
    std::fs::create_dir(&esp).unwrap();
    run_ok(booted_cmd(&osctl, None).arg("--boot-dir").arg(&esp).args([
        "switch",
        "--progress",
        "none",
        &v1_ref,
    ]));
    // finalize at shutdown runs without --boot-dir.
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    assert!(read(esp.join("loader/loader.conf")).starts_with("default osctl-"));
    assert!(!osctl.sysroot().join("boot/loader/loader.conf").exists());
}

#[test]
fn order_does_not_trust_the_clock() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1_ref = push_tag(&registry, &v1(), "os:v1");
    let v2_ref = push_tag(&registry, &v2(), "os:v2");
    let osctl = Osctl::new();
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &v1_ref]));
    run_ok(booted_cmd(&osctl, None).arg("finalize"));
    let v1_id = status(&osctl, None)["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    run_ok(booted_cmd(&osctl, Some(&v1_id)).args(["switch", "--progress", "none", &v2_ref]));
    run_ok(booted_cmd(&osctl, Some(&v1_id)).arg("finalize"));
    // The clock stepped back before v2 was made: its timestamp is older
    // than v1's. It is still the update that boots next, not a rollback.
    let st = status(&osctl, Some(&v1_id));
    let v2_id = st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .unwrap()
        .to_string();
    let origin_path = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{v2_id}/origin.json"));
    let mut origin: Value = serde_json::from_str(&read(origin_path.clone())).unwrap();
    origin["deployed"] = "2001-01-01T00:00:00Z".into();
    std::fs::write(&origin_path, origin.to_string()).unwrap();
    let st = status(&osctl, Some(&v1_id));
    assert_eq!(
        st["status"]["staged"]["composefs"]["verity"],
        v2_id.as_str()
    );
    assert_eq!(st["status"]["rollbackQueued"], false);
}
