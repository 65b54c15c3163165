//! The store on filesystems that fail (issue 9, #21): read-only, full, and
//! tmpfs (which cannot back an EROFS file mount). Each failure is one line
//! that says what failed — writing to the store, at its path, and the
//! kernel's reason — and leaves the store as it was.

use crate::util::Osctl;
use crate::util::assert_fails_naming;
use crate::util::store::layout_ref;
use osctl_testutil::{Entry, ImageSpec, Layer, ScratchFs};

const MIB: u64 = 1024 * 1024;

fn small(tag: &str) -> ImageSpec {
    ImageSpec::new(vec![Layer::new(vec![
        Entry::dir("usr"),
        Entry::file("usr/lib/os-release", format!("ID={tag}\n")),
    ])])
}

/// Many small files, a few external objects and one big one: a write can
/// fail at any step of a pull, depending on how much room is left.
fn bulky() -> ImageSpec {
    let mut entries = vec![Entry::dir("usr"), Entry::dir("usr/share")];
    for i in 0..200 {
        entries.push(Entry::file(
            &format!("usr/share/f{i}"),
            format!("file {i}\n").repeat(20 + i),
        ));
    }
    entries.push(Entry::large_file("usr/share/big", 3 * MIB, 11));
    ImageSpec::new(vec![Layer::new(entries)])
}

#[test]
fn a_read_only_store_says_so() {
    let fs = ScratchFs::tmpfs(64 * MIB).unwrap();
    let layouts = tempfile::tempdir().unwrap();
    let a = layout_ref(&layouts.path().join("a"), "v1", &small("a"));
    let b = layout_ref(&layouts.path().join("b"), "v1", &small("b"));
    let osctl = Osctl::new_in(fs.path());
    osctl.pull(&a);
    fs.remount(true).unwrap();
    // Nothing to write: an unchanged image is still "up to date".
    let out = osctl.pull(&a);
    assert!(
        out.starts_with(&format!("Image is up to date: {a}")),
        "{out}"
    );
    osctl.pull_fails(
        &[&b],
        &[&format!(
            "error: pulling {b}: writing to the store at {}: Read-only file system (os error 30)",
            osctl.store().display()
        )],
    );
    fs.remount(false).unwrap();
    osctl.pull(&b);
}

#[test]
fn a_full_store_says_so_wherever_the_space_runs_out() {
    let fs = ScratchFs::tmpfs(24 * MIB).unwrap();
    let layouts = tempfile::tempdir().unwrap();
    let base = layout_ref(&layouts.path().join("base"), "v1", &small("base"));
    let big = layout_ref(&layouts.path().join("big"), "v1", &bulky());
    let osctl = Osctl::new_in(fs.path());
    osctl.pull(&base);
    let needle = format!(
        "writing to the store at {}/sysroot/",
        osctl.sysroot().display()
    );
    // How much a successful pull takes; then too little by a lot, by a
    // little, and by a page or two, so the space runs out at different
    // steps: objects, splitstreams, the EROFS image, the config, the record.
    let free = fs.free().unwrap();
    osctl.pull(&big);
    let needed = free - fs.free().unwrap();
    osctl.ok(&["image", "rm", &big]);
    const PAGE: u64 = 4096;
    for leave in [
        0,
        needed / 4,
        needed / 2,
        needed - 16 * PAGE,
        needed - 8 * PAGE,
        needed - 4 * PAGE,
        needed - 3 * PAGE,
        needed - 2 * PAGE,
        needed - PAGE,
    ] {
        let filler = fs.fill("filler", leave).unwrap();
        let out = osctl.run(&["image", "pull", "--progress", "none", &big]);
        let line = assert_fails_naming(
            &out,
            &[&big, &needle, "No space left on device (os error 28)"],
        );
        eprintln!("{leave} of {needed} bytes free: {line}");
        assert_eq!(osctl.list().len(), 1, "{leave} bytes free");
        std::fs::remove_file(filler).unwrap();
        osctl.fsck_clean();
        osctl.ok(&["gc"]);
    }
    osctl.pull(&big);
}

#[test]
fn mounting_an_image_from_a_tmpfs_store_says_why_it_cannot() {
    let fs = ScratchFs::tmpfs(64 * MIB).unwrap();
    let layouts = tempfile::tempdir().unwrap();
    let a = layout_ref(layouts.path(), "v1", &small("a"));
    let osctl = Osctl::new_in(fs.path());
    osctl.pull(&a);
    let mnt = tempfile::tempdir().unwrap();
    let out = osctl.run(&["image", "mount", &a, mnt.path().to_str().unwrap()]);
    assert_fails_naming(
        &out,
        &[
            &format!("mounting {a}"),
            &format!(
                "the filesystem holding the store ({})",
                osctl.store().display()
            ),
            "cannot back an EROFS file mount",
        ],
    );
    assert_eq!(std::fs::read_dir(mnt.path()).unwrap().count(), 0);
}
