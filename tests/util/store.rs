//! Helpers for the store tests: images as `oci:` layouts, and finding the
//! files of a store to damage them the way disks and people do.

use std::path::{Path, PathBuf};

use osctl_testutil::{ImageSpec, write_layout};

use super::{Osctl, booted_cmd};

/// Writes `spec` as an OCI layout under `dir` and returns `oci:DIR:TAG`.
pub fn layout_ref(dir: &Path, tag: &str, spec: &ImageSpec) -> String {
    write_layout(dir, tag, spec).unwrap();
    format!("oci:{}:{tag}", dir.display())
}

/// The record file of `reference` (the key is the sha256 of the reference).
pub fn record_path(osctl: &Osctl, reference: &str) -> PathBuf {
    let key = osctl_testutil::sha256_digest(reference.as_bytes());
    osctl
        .sysroot()
        .join("sysroot/osctl/images")
        .join(format!("{}.json", key.trim_start_matches("sha256:")))
}

/// The one object file of exactly `size` bytes (tests give the files they
/// damage a size nothing else in the store has).
#[track_caller]
pub fn object_of_size(osctl: &Osctl, size: u64) -> PathBuf {
    let mut found = Vec::new();
    for sub in std::fs::read_dir(osctl.store().join("objects")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if f.metadata().unwrap().len() == size {
                found.push(f.path());
            }
        }
    }
    assert_eq!(found.len(), 1, "objects of {size} bytes: {found:?}");
    found.pop().unwrap()
}

/// The object file a store symlink (`images/<id>`, `streams/<name>`) names.
pub fn link_target(link: &Path) -> PathBuf {
    let target = std::fs::read_link(link).unwrap();
    link.parent().unwrap().join(target)
}

/// `osctl fsck` output (stdout) and whether it passed.
pub fn fsck(osctl: &Osctl) -> (bool, String) {
    let out = osctl.run(&["fsck"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What a refused `switch` must leave unchanged: every name under the
/// deployment state and the boot entries, and `status`.
pub fn deploy_state(osctl: &Osctl) -> (Vec<String>, String) {
    let mut names = Vec::new();
    for dir in ["sysroot/state/deploy", "boot/loader/entries"] {
        if let Ok(rd) = std::fs::read_dir(osctl.sysroot().join(dir)) {
            for e in rd {
                names.push(format!(
                    "{dir}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
    }
    names.sort();
    let status = booted_cmd(osctl, None)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    (names, String::from_utf8_lossy(&status.stdout).into_owned())
}
