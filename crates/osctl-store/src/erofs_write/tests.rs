//! Equivalence: our writer's bytes are composefs-rs's bytes, for generated
//! trees with every kind of entry the format treats specially and for the
//! project's edge-case images pulled into a real store.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use composefs::erofs::format::FormatVersion;
use composefs::fsverity::{FsVerityHashValue, FsVerityHasher, Sha256HashValue};
use composefs::generic_tree::LeafId;
use composefs::tree::{Directory, FileSystem, Inode, LeafContent, RegularFile, Stat};
use osctl_testutil::{Entry, Layer, images};

use super::{Failure, redirect_path, write_image};
use crate::Store;
use crate::compact::CompactTree;

/// The EROFS bytes of `fs` from both writers must be the same.
fn assert_same_image(name: &str, fs: &FileSystem<Sha256HashValue>) {
    let (want, want_id) = fs.compute_image_bytes(FormatVersion::V1);
    let mut tree = CompactTree::from_filesystem(fs).unwrap();
    let mut got = Vec::new();
    let size = write_image(&mut tree, &mut got).unwrap();
    assert_eq!(size, got.len() as u64, "{name}: the size returned");
    if got[..] != want[..] {
        let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
        panic!(
            "{name}: our image has {} bytes, composefs-rs's {}; first difference at byte {:?}",
            got.len(),
            want.len(),
            at.unwrap_or(got.len().min(want.len()))
        );
    }
    assert_eq!(
        FsVerityHasher::<Sha256HashValue>::hash(&got),
        want_id,
        "{name}"
    );
}

fn stat(mode: u32, uid: u32, mtime: i64) -> Stat {
    Stat {
        st_mode: mode,
        st_uid: uid,
        st_gid: uid,
        st_mtim_sec: mtime,
        st_mtim_nsec: 0,
        xattrs: BTreeMap::new(),
    }
}

fn with_xattrs(mut st: Stat, xattrs: &[(&str, &[u8])]) -> Stat {
    for (name, value) in xattrs {
        st.xattrs
            .insert(Box::from(OsStr::new(name)), Box::from(*value));
    }
    st
}

fn object(seed: u64) -> Sha256HashValue {
    FsVerityHasher::<Sha256HashValue>::hash(&seed.to_le_bytes())
}

#[test]
fn redirects_are_composefs_object_paths() {
    for seed in [0, 1, 0xdead_beef, u64::MAX] {
        let id = object(seed);
        let want = format!("/{}", id.to_object_pathname());
        assert_eq!(
            std::str::from_utf8(&redirect_path(&id)).unwrap(),
            want,
            "seed {seed}"
        );
    }
}

/// Builds a composefs tree by path.
struct Gen(FileSystem<Sha256HashValue>);

impl Gen {
    fn new(root: Stat) -> Self {
        Gen(FileSystem::new(root))
    }

    fn insert(&mut self, path: &str, inode: Inode<Sha256HashValue>) {
        let path = Path::new(path);
        let parent = path.parent().map_or(OsStr::new(""), |p| p.as_os_str());
        let dir = self.0.root.get_directory_mut(parent).unwrap();
        dir.insert(path.file_name().unwrap(), inode);
    }

    fn dir(&mut self, path: &str, st: Stat) {
        self.insert(path, Inode::Directory(Box::new(Directory::new(st))));
    }

    fn leaf(&mut self, path: &str, st: Stat, content: LeafContent<Sha256HashValue>) -> LeafId {
        let id = self.0.push_leaf(st, content);
        self.insert(path, Inode::leaf(id));
        id
    }

    fn file(&mut self, path: &str, st: Stat, data: &[u8]) -> LeafId {
        self.leaf(
            path,
            st,
            LeafContent::Regular(RegularFile::Inline(data.into())),
        )
    }

    fn external(&mut self, path: &str, st: Stat, seed: u64, size: u64) -> LeafId {
        let content = LeafContent::Regular(RegularFile::External(object(seed), size));
        self.leaf(path, st, content)
    }

    fn link(&mut self, path: &str, id: LeafId) {
        self.insert(path, Inode::leaf(id));
    }
}

/// Every construct the V1 layout treats specially.
fn edge_tree() -> FileSystem<Sha256HashValue> {
    let root = with_xattrs(
        stat(0o755, 0, 1000),
        &[
            ("security.selinux", b"system_u:object_r:root_t"),
            ("user.root", b"r"),
        ],
    );
    let mut g = Gen::new(root);
    let plain = || stat(0o644, 0, 1000);
    // Names that sort before "." and "..".
    g.file("-dash", plain(), b"d");
    g.file(" space", plain(), b"s");
    g.file("!bang", plain(), b"");
    for d in [
        "etc", "usr", "usr/bin", "a", "a/b", "a/b/c", "z", "many", "tail", "run",
    ] {
        g.dir(d, stat(0o755, 0, 1000));
    }
    g.dir("srv", stat(0o4750, 70_000, 2000));
    g.dir(
        "opaque",
        with_xattrs(stat(0o755, 0, 1000), &[("trusted.overlay.opaque", b"x")]),
    );
    // Inline files of sizes around the block and half-block limits.
    for size in [
        0usize, 1, 63, 64, 100, 2047, 2048, 2049, 4095, 4096, 4097, 6143, 6145, 9000,
    ] {
        g.file(&format!("usr/inline-{size}"), plain(), &vec![b'i'; size]);
    }
    // External files: sizes around the chunk limits, shared contents, a
    // size past 4 GiB (an extended inode).
    for (i, size) in [1u64, 65, 4096, 4097, 1 << 20, (1 << 20) + 1, 5 << 30]
        .iter()
        .enumerate()
    {
        g.external(&format!("usr/ext-{i}"), plain(), i as u64, *size);
    }
    g.external("usr/same-1", plain(), 100, 500);
    g.external("etc/same-2", plain(), 100, 500);
    g.external("a/same-3", plain(), 100, 500);
    g.external("usr/pair-1", plain(), 101, 700);
    g.external(
        "z/pair-2",
        with_xattrs(plain(), &[("user.k", b"v")]),
        101,
        700,
    );
    g.external("usr/empty-object", plain(), 102, 0);
    // Symlinks: short, long, and long enough to move to a block.
    for len in [1usize, 100, 2000, 4000, 4030, 4031, 4064, 4065, 4095] {
        let target = "t".repeat(len);
        g.leaf(
            &format!("usr/bin/link-{len}"),
            stat(0o777, 0, 1000),
            LeafContent::Symlink(OsStr::new(&target).into()),
        );
    }
    g.leaf(
        "usr/bin/link-xattr-4000",
        with_xattrs(stat(0o777, 0, 1000), &[("user.big", &[b'v'; 60])]),
        LeafContent::Symlink(OsStr::new(&"u".repeat(4000)).into()),
    );
    g.leaf("etc/null", plain(), LeafContent::CharacterDevice(0x103));
    g.leaf("etc/loop0", plain(), LeafContent::BlockDevice(0x700));
    g.leaf("etc/fifo", plain(), LeafContent::Fifo);
    g.leaf("etc/socket", plain(), LeafContent::Socket);
    // Whiteouts (character devices 0/0): escaped in a directory; at the
    // root, one that passes for a stub (not escaped) and one that does not.
    g.leaf("etc/gone", plain(), LeafContent::CharacterDevice(0));
    g.leaf("opaque/gone", plain(), LeafContent::CharacterDevice(0));
    let stub_like = with_xattrs(
        stat(0o644, 0, 1000),
        &[("security.selinux", b"system_u:object_r:root_t")],
    );
    g.leaf("0a", stub_like, LeafContent::CharacterDevice(0));
    g.leaf("0b", stat(0o600, 0, 1000), LeafContent::CharacterDevice(0));
    g.file("ff", plain(), b"a file where a stub would be");
    // Hard links: first path (depth-first) deep, another at the root that
    // breadth-first order meets first; two links in one directory; three.
    let deep = g.file("a/b/c/deep", plain(), b"deep content");
    g.link("zz-link", deep);
    let twins = g.external("usr/twin-1", plain(), 200, 9999);
    g.link("usr/twin-2", twins);
    let three = g.file("etc/three", stat(0o600, 1000, 1000), b"3");
    g.link("a/three", three);
    g.link("z/three", three);
    // Xattrs: shared, unique, escaped, ACLs, lustre (no prefix in V1),
    // values that sort differently by length and by bytes.
    for i in 0..20 {
        let st = with_xattrs(
            plain(),
            &[
                ("user.shared", b"same"),
                ("user.unique", format!("u{i}").as_bytes()),
                ("trusted.overlay.custom", b"esc"),
                ("security.capability", &[1, 0, 0, 2, 0, 0, 0, 0]),
            ],
        );
        g.file(&format!("etc/x{i:02}"), st, b"x");
    }
    g.file(
        "etc/acl",
        with_xattrs(
            plain(),
            &[
                ("system.posix_acl_access", &[2, 0, 0, 0]),
                ("system.posix_acl_default", &[2, 0, 0, 0]),
                ("lustre.thing", b"l"),
                ("trusted.a", b"\x00\x00"),
                ("trusted.b", b"\xee"),
            ],
        ),
        b"acl",
    );
    g.file(
        "etc/ord-1",
        with_xattrs(plain(), &[("trusted.a", b"\xee")]),
        b"1",
    );
    g.file(
        "etc/ord-2",
        with_xattrs(plain(), &[("trusted.a", b"\xee")]),
        b"2",
    );
    g.file(
        "etc/ord-3",
        with_xattrs(plain(), &[("trusted.a", b"\x00\x00")]),
        b"3",
    );
    g.file(
        "etc/ord-4",
        with_xattrs(plain(), &[("trusted.a", b"\x00\x00")]),
        b"4",
    );
    // Metadata: other mtimes (not the minimum: extended inodes), a
    // negative one, nanoseconds, a large uid, a mode with type bits.
    let mut ns = plain();
    ns.st_mtim_nsec = 5;
    g.file("usr/nsec", ns, b"n");
    g.file("usr/old", stat(0o644, 0, -5), b"o");
    g.file("usr/newer", stat(0o644, 0, 5000), b"n");
    g.file("usr/big-uid", stat(0o644, 100_000, 1000), b"u");
    g.file("usr/typed-mode", stat(0o100_755, 0, 1000), b"t");
    // A directory whose entries take blocks and an inline tail, and one
    // whose tail is too long to stay inline.
    for i in 0..400 {
        g.file(
            &format!("many/entry-with-a-longer-name-{i:04}"),
            plain(),
            b"",
        );
    }
    for i in 0..150 {
        g.file(&format!("tail/e-{i:05}"), plain(), b"");
    }
    g.0
}

/// Many entries in many directories, with the same kinds mixed in.
fn large_tree(dirs: usize, per_dir: usize) -> FileSystem<Sha256HashValue> {
    let mut g = Gen::new(stat(0o755, 0, 1_700_000_000));
    g.dir("usr", stat(0o755, 0, 1_700_000_000));
    let mut first = None;
    for d in 0..dirs {
        let dir = format!("usr/d{d:03}");
        g.dir(&dir, stat(0o755, 0, 1_700_000_000 + (d % 3) as i64));
        for f in 0..per_dir {
            let i = (d * per_dir + f) as u64;
            let path = format!("{dir}/f{f:05}");
            let mut st = stat(0o644, (i % 3) as u32, 1_700_000_000 + (i % 5) as i64);
            if i.is_multiple_of(10) {
                st = with_xattrs(st, &[("user.tag", format!("{}", i % 4).as_bytes())]);
            }
            match i % 9 {
                0 => {
                    g.file(&path, st, format!("small {i}").as_bytes());
                }
                1 => {
                    g.leaf(
                        &path,
                        st,
                        LeafContent::Symlink(OsStr::new("../target").into()),
                    );
                }
                // Every seventh content repeats: shared overlay xattrs.
                _ => {
                    let id =
                        g.external(&path, st, if i.is_multiple_of(7) { 7 } else { i }, 100 + i);
                    if i % 500 == 3 {
                        match first {
                            None => first = Some(id),
                            Some(_) => g.link(&format!("{dir}/link{f:05}"), id),
                        }
                    }
                }
            }
        }
    }
    if let Some(id) = first {
        g.link("usr/first-link", id);
    }
    g.0
}

#[test]
fn generated_trees_give_composefs_bytes() {
    let cases: Vec<(&str, FileSystem<Sha256HashValue>)> = vec![
        ("empty root", FileSystem::new(stat(0o755, 0, 0))),
        ("edge cases", edge_tree()),
        ("30k entries", large_tree(30, 1000)),
        ("one directory of 20k entries", large_tree(1, 20_000)),
    ];
    for (name, fs) in &cases {
        assert_same_image(name, fs);
    }
}

#[test]
fn a_hard_linked_whiteout_is_refused_as_composefs_refuses_it() {
    let mut g = Gen::new(stat(0o755, 0, 0));
    let id = g.leaf("w", stat(0o644, 0, 0), LeafContent::CharacterDevice(0));
    g.link("w2", id);
    let theirs = composefs::erofs::writer::ValidatedFileSystem::new(g.0.clone())
        .unwrap_err()
        .to_string();
    let mut tree = CompactTree::from_filesystem(&g.0).unwrap();
    let ours = match write_image(&mut tree, Vec::new()) {
        Err(Failure::Invalid(e)) => e.to_string(),
        other => panic!("not refused as invalid: {other:?}"),
    };
    assert_eq!(
        ours,
        "invalid composefs filesystem: whiteout inode has nlink > 1"
    );
    assert_eq!(ours, theirs);
}

/// The images of the project's pull tests (the edge-case image and the odd
/// layers of tests/pull_content.rs and tests/pull_hostile_layers.rs, shared
/// through `osctl_testutil::images`), and the cases only the image build
/// needs on top: entries the build drops or keeps by name, long names and
/// deep paths, the harness's own base and upper layers, a tree without /usr.
fn test_images() -> Vec<(&'static str, Vec<Layer>)> {
    let l = Layer::new;
    let mut images = vec![("edge cases", images::edge_case_layers())];
    images.extend(images::layers_that_pull_into_the_spec());
    images.extend([
        (
            "entries the build drops or keeps by name",
            vec![
                l(vec![
                    Entry::file("usr/lib/dropped", "dropped xattrs")
                        .with_xattr("trusted.example", "t")
                        .with_xattr("security.selinux", "system_u:object_r:bin_t:s0"),
                    Entry::file("usr/share/plain.txt", "plain\n"),
                    Entry::hardlink("a-root-link", "usr/share/plain.txt"),
                ]),
                l(vec![
                    Entry::char_dev("etc/overlay-whiteout", 0, 0),
                    Entry::char_dev("0c", 0, 0),
                    Entry::file("run/stale.pid", "1"),
                    Entry::file("deep/er/file", "parents not listed"),
                ]),
            ],
        ),
        (
            "harness base and upper",
            vec![
                l(vec![
                    Entry::dir("etc"),
                    Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                    Entry::dir("usr/bin"),
                    Entry::file_with("usr/bin/tool", 0o4755, 0, 0, "#!/bin/sh\necho tool\n")
                        .with_xattr("user.osctl.test", "hello"),
                    Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
                    Entry::symlink("usr/bin/sh", "tool"),
                    Entry::dir("opt/old"),
                    Entry::file("opt/old/a", "a"),
                    Entry::file("removed.txt", "soon gone"),
                    Entry::dir_with("home/user", 0o700, 1000, 1000),
                    Entry::file_with("home/user/.profile", 0o600, 1000, 1000, "export X=1\n"),
                    Entry::file("empty", ""),
                ]),
                l(vec![
                    Entry::whiteout("removed.txt"),
                    Entry::whiteout("usr/bin/sh"),
                    Entry::dir("opt/old"),
                    Entry::opaque("opt/old"),
                    Entry::file("opt/old/c", "c"),
                    Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
                    Entry::file_with("var/state", 0o600, 1000, 100, "state"),
                ]),
            ],
        ),
        (
            "long names and deep paths",
            vec![l(vec![
                Entry::file(&format!("usr/{}", "n".repeat(255)), "long name"),
                Entry::symlink("usr/long-target", &"t".repeat(4000)),
                Entry::file(&format!("usr/{}/f", ["deep"; 40].join("/")), "deep"),
            ])],
        ),
        (
            "no /usr",
            vec![l(vec![
                Entry::file("etc/a", "a"),
                Entry::file("run/x", "x"),
            ])],
        ),
    ]);
    images
}

#[tokio::test(flavor = "multi_thread")]
async fn test_images_give_composefs_bytes() {
    for (name, layers) in test_images() {
        // Kept whole: its directory goes with it.
        let pulled = crate::test_pull::pull_layers(name, layers).await;
        let (store, record) = (&pulled.store, &pulled.record);
        let (diff_ids, shown, layers) = store.layer_inputs(record).unwrap();
        let repo = store.repo();
        let (want, want_id) =
            crate::image::image_bytes_with_composefs(repo, &diff_ids, &shown, &layers).unwrap();
        let mut tree = crate::image::build_compact(repo, None, &diff_ids, &shown, &layers).unwrap();
        let mut got = Vec::new();
        write_image(&mut tree, &mut got).unwrap();
        if got[..] != want[..] {
            let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
            panic!(
                "{name}: our image has {} bytes, composefs-rs's {}; first difference at {at:?}",
                got.len(),
                want.len()
            );
        }
        // The pull committed the image with our writer: composefs-rs's id.
        assert_eq!(record.image_id(), want_id.to_hex(), "{name}");
    }
}

/// The image each way: from the layers' splitstreams (the reference path)
/// and from their indexes ([`crate::layer_index`]), which the pull wrote.
fn images_both_ways(store: &Store, record: &crate::ImageRecord) -> (Vec<u8>, Vec<u8>) {
    let (diff_ids, shown, layers) = store.layer_inputs(record).unwrap();
    let index_dir = store.sysroot().join(crate::layer_index::LAYER_INDEX_PATH);
    for verity in layers.values() {
        let path = crate::layer_index::index_path(&index_dir, verity);
        assert!(
            path.exists(),
            "the pull indexed its layer: {}",
            path.display()
        );
    }
    let mut built = Vec::new();
    for dir in [None, Some(index_dir.as_path())] {
        let mut tree =
            crate::image::build_compact(store.repo(), dir, &diff_ids, &shown, &layers).unwrap();
        let mut bytes = Vec::new();
        write_image(&mut tree, &mut bytes).unwrap();
        built.push(bytes);
    }
    let from_indexes = built.pop().unwrap();
    (built.pop().unwrap(), from_indexes)
}

#[tokio::test(flavor = "multi_thread")]
async fn images_built_from_layer_indexes_are_the_splitstreams_images() {
    for (name, layers) in test_images() {
        let pulled = crate::test_pull::pull_layers(name, layers).await;
        let (from_streams, from_indexes) = images_both_ways(&pulled.store, &pulled.record);
        assert!(
            from_indexes == from_streams,
            "{name}: the image from the indexes ({} bytes) is not the one from the splitstreams ({} bytes)",
            from_indexes.len(),
            from_streams.len()
        );
        // The pull (which wrote the indexes in its whiteout pass and read
        // them in its second) committed the splitstreams' image.
        assert_eq!(
            pulled.record.image_id(),
            FsVerityHasher::<Sha256HashValue>::hash(&from_streams).to_hex(),
            "{name}"
        );
    }
}
