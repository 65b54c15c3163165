//! A large pull starts the writeback of its objects before its final sync
//! (osctl-store's writeback.rs): the splitters report the bytes they write,
//! and past each 64 MiB a thread syncs the store's filesystem. Read from the
//! pull's debug log, which counts the early syncs; a small pull has none.
//! An early sync that fails fails the pull, which then registers nothing:
//! shown on a disk whose writeback really fails.

use std::path::Path;
use std::process::Command;

use osctl_testutil::{Entry, ImageSpec, Layer, ScratchFs};

use crate::util::disk::{Cleanup, attach, s, sparse_file, tool};
use crate::util::store::layout_ref;
use crate::util::{Osctl, assert_fails_naming};

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

/// An image whose one layer holds more than one step of object bytes.
fn large(dir: &Path) -> String {
    layout_ref(
        &dir.join("large"),
        "v1",
        &ImageSpec::new(vec![Layer::new(vec![
            Entry::file("usr/bin/x", "x"),
            Entry::zeros("usr/share/zeros.img", LARGE_FILE_BYTES),
        ])]),
    )
}

#[test]
fn a_large_pull_syncs_early_and_a_small_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let small = layout_ref(
        &dir.path().join("small"),
        "v1",
        &ImageSpec::new(vec![Layer::new(vec![Entry::file("usr/bin/x", "x")])]),
    );
    let large = large(dir.path());
    let osctl = Osctl::new();
    assert_eq!(early_syncs(&osctl, &small), 0);
    let syncs = early_syncs(&osctl, &large);
    assert!(
        syncs >= 1,
        "{syncs} early syncs for {LARGE_FILE_BYTES} bytes"
    );
    osctl.fsck_clean();
}

/// The disk's size: room for the whole pull, as the filesystem sees it.
const DISK_BYTES: u64 = 256 << 20;
/// What really backs the disk: less than one step of early writeback, so
/// the first early sync is the first to find out.
const BACKING_BYTES: u64 = 32 << 20;

/// A store on a disk that accepts every write into the page cache and fails
/// when it is written back: an ext2 filesystem (no journal to abort, errors
/// continue) on a loop device whose sparse backing file lives on a tmpfs
/// smaller than the disk. The loop device's writes fail once the tmpfs is
/// full, and `syncfs` reports the writeback error (EIO), as on a failing
/// disk.
#[test]
fn an_early_sync_that_fails_fails_the_pull_and_registers_nothing() {
    let backing = ScratchFs::tmpfs(BACKING_BYTES).unwrap();
    // Before the cleanup, so dropped after it: unmounted first, then removed.
    let mnt = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let disk = backing.path().join("disk");
    sparse_file(&disk, DISK_BYTES);
    let dev = attach(&disk, None, &mut cleanup);
    tool(Command::new("mkfs.ext2").args(["-q", "-F", "-E", "nodiscard", &dev]));
    tool(Command::new("mount").args(["-o", "errors=continue", &dev, s(mnt.path())]));
    cleanup.push("umount", &["-l", s(mnt.path())]);

    let layouts = tempfile::tempdir().unwrap();
    let large = large(layouts.path());
    let small = layout_ref(
        &layouts.path().join("small"),
        "v1",
        &ImageSpec::new(vec![Layer::new(vec![Entry::file("usr/bin/y", "y")])]),
    );
    let osctl = Osctl::new_in(mnt.path());
    // What the store holds before: it must be there after.
    osctl.ok(&["image", "pull", "--progress", "none", &small]);
    let store = osctl.sysroot().join("sysroot/composefs");
    let before = layer_streams(&store);
    assert_eq!(before.len(), 1, "{before:?}");

    let out = osctl
        .cmd()
        .args(["image", "pull", "--progress", "none", &large])
        .output()
        .unwrap();
    // The early writeback's own error, not the final sync's ("syncing the
    // imported layers") nor an import's.
    assert_fails_naming(
        &out,
        &[
            "writing the imported layers back to disk",
            &store.display().to_string(),
        ],
    );
    let listed: Vec<_> = osctl
        .list()
        .iter()
        .map(|i| i["reference"].clone())
        .collect();
    assert_eq!(listed, [small.as_str()], "image list");
    assert_eq!(layer_streams(&store), before, "registered layers");
    drop(cleanup);
}

/// The layers registered in the composefs repository at `store`.
fn layer_streams(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("streams"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("oci-layer-"))
        .collect();
    names.sort();
    names
}
