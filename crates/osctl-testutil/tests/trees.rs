//! expected_tree and snapshot, checked against GNU tar and umoci.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use osctl_testutil::{
    Entry, ImageSpec, Layer, NodeKind, assert_trees_equal, diff_trees, expected_tree, run,
    snapshot, tempdir, write_layout,
};

fn kind(tree: &osctl_testutil::Tree, path: &str) -> Option<NodeKind> {
    tree.get(path).map(|n| n.kind.clone())
}

#[test]
fn expected_tree_applies_whiteouts_opaques_and_overrides() {
    let tree = expected_tree(&[common::base_layer(), common::upper_layer()]);
    assert!(tree.get("removed.txt").is_none());
    assert!(tree.get("usr/bin/sh").is_none());
    assert!(tree.get("opt/old/a").is_none() && tree.get("opt/old/b").is_none());
    assert!(tree.get("opt/old/c").is_some());
    assert_eq!(kind(&tree, "opt/old"), Some(NodeKind::Dir));
    let Some(NodeKind::File { size, .. }) = kind(&tree, "etc/passwd") else {
        panic!("etc/passwd")
    };
    assert_eq!(size, "root:x:0:0:root:/root:/bin/bash\n".len() as u64);
    assert_eq!(tree.get("etc/shadow").unwrap().gid, 42);
    assert_eq!(
        tree.get("usr/bin/tool").unwrap().xattrs["user.osctl.test"],
        b"hello"
    );
    assert_eq!(tree.hardlink_groups().len(), 1);
    assert_eq!(
        kind(&tree, "dev/null"),
        Some(NodeKind::CharDev { major: 1, minor: 3 })
    );
}

#[test]
fn whiteouts_never_hide_their_own_layer() {
    // The whiteout comes *after* the file in the same layer, and a file is
    // added inside an opaque directory before the marker: both must survive.
    let tree = expected_tree(&[
        Layer::new(vec![Entry::file("d/lower", "l"), Entry::file("x", "old")]),
        Layer::new(vec![
            Entry::file("x", "new"),
            Entry::whiteout("x"),
            Entry::file("d/upper", "u"),
            Entry::opaque("d"),
        ]),
        Layer::new(vec![Entry::whiteout("d"), Entry::file("d", "now a file")]),
    ]);
    assert!(
        tree.get("x").is_some(),
        "same-layer whiteout must not hide x"
    );
    assert!(matches!(kind(&tree, "d"), Some(NodeKind::File { .. })));
    assert!(tree.get("d/upper").is_none() && tree.get("d/lower").is_none());

    let tree = expected_tree(&[
        Layer::new(vec![Entry::file("d/lower", "l")]),
        Layer::new(vec![Entry::file("d/upper", "u"), Entry::opaque("d")]),
    ]);
    assert!(tree.get("d/upper").is_some() && tree.get("d/lower").is_none());
}

#[test]
fn hostile_names_are_left_out_and_hardlinks_break_on_replace() {
    let tree = expected_tree(&[
        Layer::new(vec![
            Entry::raw(&b"../escape"[..], "x"),
            Entry::raw(&b"/abs/path"[..], "x"),
            Entry::raw(&b"./ok/raw\xff"[..], "x"),
            Entry::file("a", "1"),
            Entry::hardlink("b", "a"),
            Entry::hardlink("c", "./a"),
        ]),
        Layer::new(vec![Entry::file("c", "2")]),
    ]);
    assert_eq!(tree.nodes.len(), 6, "{}", tree.dump()); // root, ok, ok/raw\xff, a, b, c
    assert_eq!(tree.hardlink_groups().len(), 1);
    assert_eq!(tree.hardlink_groups().first().unwrap().len(), 2);
}

/// Extracts the layers with GNU tar, as root, keeping owners, modes, xattrs.
fn untar_layers(blobs: &[&Path], dest: &Path) {
    for blob in blobs {
        run(Command::new("tar")
            .args([
                "--extract",
                "--same-permissions",
                "--same-owner",
                "--numeric-owner",
            ])
            .args(["--xattrs", "--xattrs-include=*"])
            .arg("--file")
            .arg(blob)
            .arg("--directory")
            .arg(dest))
        .unwrap();
    }
}

#[test]
fn gnu_tar_extraction_matches_expected_tree() {
    // No whiteouts: tar would write `.wh.*` files literally.
    let override_layer = Layer::new(vec![
        Entry::file_with("etc/passwd", 0o600, 0, 0, "replaced"),
        Entry::symlink("removed.txt", "etc/passwd"),
        Entry::large_file("big", 5 << 20, 42),
        Entry::dir_with("home/user", 0o750, 1000, 1000),
        // Longer than a ustar header holds: PAX path/linkpath records.
        Entry::file(&format!("long/{}", "n".repeat(150)), "long name"),
        Entry::symlink("long/link", &"t".repeat(120)),
        Entry::hardlink("long/hard", &format!("long/{}", "n".repeat(150))),
        Entry::raw(&b"long/not-utf8-\xff"[..], "bytes"),
    ]);
    let layers = vec![common::base_layer(), override_layer];
    let layout = tempdir();
    let built = write_layout(layout.path(), "t", &ImageSpec::new(layers.clone())).unwrap();
    let root = tempdir();
    let blobs: Vec<_> = (0..layers.len()).map(|i| built.layer_path(i)).collect();
    untar_layers(
        &blobs.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        root.path(),
    );

    let actual = snapshot(root.path());
    let expected = expected_tree(&layers);
    assert_trees_equal(&expected, &actual);
    assert_eq!(
        actual.get("usr/bin/tool").unwrap().mode,
        0o4755,
        "setuid survives xattrs and chown"
    );
    assert_eq!(
        actual.get("usr/bin/tool").unwrap().xattrs["trusted.osctl.binary"],
        [0u8, 1, 2, 255]
    );
}

#[test]
fn umoci_unpack_of_our_layout_matches_expected_tree() {
    // umoci applies whiteouts and opaque markers itself: an independent
    // implementation of the layer semantics expected_tree models.
    let layers = vec![common::base_layer(), common::upper_layer()];
    let work = tempdir();
    let layout = work.path().join("layout");
    write_layout(&layout, "t", &ImageSpec::new(layers.clone())).unwrap();
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle))
    .unwrap();
    assert_trees_equal(&expected_tree(&layers), &snapshot(&bundle.join("rootfs")));
}

#[test]
fn diff_lists_every_mismatch() {
    let layers = [common::base_layer()];
    let expected = expected_tree(&layers);
    let root = tempdir();
    let layout = tempdir();
    let built = write_layout(layout.path(), "t", &ImageSpec::new(layers.to_vec())).unwrap();
    untar_layers(&[&built.layer_path(0)], root.path());
    let r = root.path();
    fs::write(r.join("etc/passwd"), "tampered").unwrap();
    fs::set_permissions(r.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(r.join("etc/shadow"), Some(0), Some(0)).unwrap();
    fs::remove_file(r.join("usr/bin/tool-link")).unwrap();
    fs::copy(r.join("usr/bin/tool"), r.join("usr/bin/tool-link")).unwrap();
    fs::write(r.join("extra"), "").unwrap();
    fs::remove_file(r.join("empty")).unwrap();

    let diffs = diff_trees(&expected, &snapshot(r));
    let text = diffs.join("\n");
    for needle in [
        "/etc/passwd: expected file of 30 bytes, sha256 79492b90d473, found file of 8 bytes",
        "/etc/passwd: mode expected 0644, found 0600",
        "/etc/shadow: owner expected 0:42, found 0:0",
        "/usr/bin/tool-link: xattr user.osctl.test=\"hello\" missing",
        "/empty: missing",
        "/extra: unexpected file",
        "hard links: expected {/usr/bin/tool, /usr/bin/tool-link} to be one inode",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
