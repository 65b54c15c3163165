//! A large pull starts the writeback of its objects before its final sync
//! (osctl-store's writeback.rs): the splitters report the bytes they write,
//! and past each 64 MiB a thread syncs the store's filesystem. Read from the
//! pull's debug log, which counts the early syncs; a small pull has none.

use osctl_testutil::{Entry, ImageSpec, Layer};

use crate::util::Osctl;
use crate::util::store::layout_ref;

/// More than one step of early writeback (64 MiB) of object bytes.
const LARGE_FILE_BYTES: u64 = 80 << 20;

/// `early_syncs=N` from the debug log of `osctl image pull REFERENCE`.
fn early_syncs(osctl: &Osctl, reference: &str) -> u64 {
    let out = osctl
        .cmd()
        .args(["--log-level", "osctl_store=debug"])
        .args(["image", "pull", "--progress", "none", reference])
        .output()
        .expect("running osctl image pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pull of {reference}: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("early writeback stopped"))
        .unwrap_or_else(|| panic!("no 'early writeback stopped' in the debug log:\n{stderr}"));
    let count = line
        .split("early_syncs=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no early_syncs= in {line:?}"));
    count
        .parse()
        .unwrap_or_else(|_| panic!("early_syncs={count:?} in {line:?}"))
}

#[test]
fn a_large_pull_syncs_early_and_a_small_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let small = layout_ref(
        &dir.path().join("small"),
        "v1",
        &ImageSpec::new(vec![Layer::new(vec![Entry::file("usr/bin/x", "x")])]),
    );
    let large = layout_ref(
        &dir.path().join("large"),
        "v1",
        &ImageSpec::new(vec![Layer::new(vec![
            Entry::file("usr/bin/x", "x"),
            Entry::zeros("usr/share/zeros.img", LARGE_FILE_BYTES),
        ])]),
    );
    let osctl = Osctl::new();
    assert_eq!(early_syncs(&osctl, &small), 0);
    let syncs = early_syncs(&osctl, &large);
    assert!(
        syncs >= 1,
        "{syncs} early syncs for {LARGE_FILE_BYTES} bytes"
    );
    osctl.fsck_clean();
}
