//! `fsck` reads each stored EROFS image the way the kernel will (issue 9,
//! #15): a store pulled by an older osctl can hold an image with a 256-byte
//! name, which composefs-rs's own checks pass and the kernel refuses
//! ("Structure needs cleaning"). Such images are made here with composefs-rs
//! directly, swapped in for a pulled image, confirmed unreadable by the
//! kernel, and must be reported by `fsck`.

use std::ffi::OsStr;
use std::path::Path;

use composefs::erofs::format::FormatVersion;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, compute_verity};
use composefs::generic_tree::{Directory, Inode, LeafContent, Stat};
use composefs::tree::{FileSystem, RegularFile};

mod common;
use common::PulledStore;

fn stat(mode: u32) -> Stat {
    Stat {
        st_mode: mode,
        st_uid: 0,
        st_gid: 0,
        st_mtim_sec: 0,
        st_mtim_nsec: 0,
        xattrs: Default::default(),
    }
}

type Fs = FileSystem<Sha256HashValue>;

/// `/usr/<name>`, a one-byte file.
fn with_name(name: &str) -> Fs {
    let mut fs = Fs::new(stat(0o755));
    let leaf = fs.push_leaf(
        stat(0o644),
        LeafContent::Regular(RegularFile::Inline(Box::from(&b"x"[..]))),
    );
    let mut usr = Directory::new(stat(0o755));
    usr.insert(OsStr::new(name), Inode::leaf(leaf));
    fs.root
        .insert(OsStr::new("usr"), Inode::Directory(Box::new(usr)));
    fs
}

/// `/usr/link` → a target of `len` bytes.
fn with_symlink(len: usize) -> Fs {
    let mut fs = Fs::new(stat(0o755));
    let target = "t".repeat(len);
    let leaf = fs.push_leaf(
        stat(0o777),
        LeafContent::Symlink(Box::from(OsStr::new(&target))),
    );
    let mut usr = Directory::new(stat(0o755));
    usr.insert(OsStr::new("link"), Inode::leaf(leaf));
    fs.root
        .insert(OsStr::new("usr"), Inode::Directory(Box::new(usr)));
    fs
}

/// `/d/d/…` nested `depth` directories deep.
fn nested(depth: usize) -> Fs {
    let mut fs = Fs::new(stat(0o755));
    let mut dir = Directory::new(stat(0o755));
    for _ in 1..depth {
        let mut parent = Directory::new(stat(0o755));
        parent.insert(OsStr::new("d"), Inode::Directory(Box::new(dir)));
        dir = parent;
    }
    fs.root
        .insert(OsStr::new("d"), Inode::Directory(Box::new(dir)));
    fs
}

/// Stores `fs` as an EROFS image and makes `reference`'s record use it, as
/// if an older osctl had pulled it. Returns the new image id.
fn swap_in(sysroot: &Path, reference: &str, fs: &Fs) -> String {
    let (bytes, id): (_, Sha256HashValue) = fs.compute_image_bytes(FormatVersion::V1);
    assert_eq!(compute_verity::<Sha256HashValue>(&bytes), id);
    let repo = sysroot.join("sysroot/composefs");
    let object = repo.join("objects").join(id.to_object_pathname());
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, &bytes).unwrap();
    let hex = id.to_hex();
    std::os::unix::fs::symlink(
        Path::new("../objects").join(id.to_object_pathname()),
        repo.join("images").join(&hex),
    )
    .unwrap();
    let key = osctl_testutil::sha256_digest(reference.as_bytes());
    let record = sysroot
        .join("sysroot/osctl/images")
        .join(format!("{}.json", key.trim_start_matches("sha256:")));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    v["imageId"] = serde_json::Value::String(hex.clone());
    std::fs::write(&record, v.to_string()).unwrap();
    hex
}

#[tokio::test(flavor = "multi_thread")]
async fn fsck_reports_images_the_kernel_cannot_read() {
    let cases: [(&str, Fs, &str, &str); 3] = [
        (
            "name",
            with_name(&"n".repeat(256)),
            "usr",
            "a name of 256 bytes, which the kernel refuses",
        ),
        (
            "symlink",
            with_symlink(5000),
            "",
            "'/usr/link': a symlink target of 5000 bytes",
        ),
        (
            "depth",
            nested(300),
            "",
            "nested deeper than 256 directories",
        ),
    ];
    for (what, bad, unreadable_dir, needle) in cases {
        let PulledStore {
            dir: _dir,
            sysroot,
            store,
            imgref,
        } = PulledStore::new().await;
        assert!(store.fsck().await.unwrap().is_ok());

        let id = swap_in(&sysroot, &imgref.to_string(), &bad);
        if !unreadable_dir.is_empty() {
            // The kernel agrees: the directory cannot be listed.
            let mnt = tempfile::tempdir().unwrap();
            store.mount(&imgref, mnt.path()).unwrap();
            let listed = std::fs::read_dir(mnt.path().join(unreadable_dir))
                .and_then(|rd| rd.collect::<Result<Vec<_>, _>>());
            std::process::Command::new("umount")
                .arg(mnt.path())
                .status()
                .unwrap();
            let e = listed.expect_err("the kernel refuses the directory");
            assert_eq!(e.raw_os_error(), Some(117), "{what}: EUCLEAN, got {e}");
        }
        let report = store.fsck().await.unwrap();
        let expected = format!("{imgref}: the kernel cannot read EROFS image {id}: ");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with(&expected) && p.contains(needle)),
            "{what}: {:?}",
            report.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fsck_reads_the_images_of_deployments_without_a_record() {
    // A deployment keeps its image after `image rm`; its EROFS image must
    // be read the kernel's way as well, with no record to lead to it.
    let PulledStore {
        dir: _dir,
        sysroot,
        store,
        imgref,
    } = PulledStore::new().await;
    let id = swap_in(&sysroot, &imgref.to_string(), &with_name(&"n".repeat(256)));
    let record = store.get(&imgref).unwrap();
    let deployment = "d".repeat(64);
    store.add_root(&deployment, &record).unwrap();
    store.remove(&imgref).unwrap();

    let report = store.fsck().await.unwrap();
    let expected = format!(
        "deployment {}: the kernel cannot read EROFS image {id}: ",
        &deployment[..12]
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with(&expected) && p.contains("a name of 256 bytes")),
        "{:?}",
        report.problems
    );
}
