//! `ImageTree` reads an image's files and exports subtrees without mounting:
//! the exported `/etc` must be exactly the tree the layers describe.

use std::path::Path;
use std::sync::Arc;

use cap_std::fs::Dir;
use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{EntryKind, Silent, Store};
use osctl_testutil::{Entry, ImageSpec, Layer, assert_trees_equal, expected_tree, snapshot};

fn etc_layers() -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::dir("etc"),
            Entry::dir_with("etc/ssh", 0o755, 0, 0),
            Entry::file_with("etc/shadow", 0o640, 0, 42, "root:*:1::::::\n"),
            Entry::file("etc/big.conf", "x".repeat(10_000)),
            Entry::hardlink("etc/big-link.conf", "etc/big.conf"),
            Entry::symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
            Entry::file("etc/ssh/sshd_config", "PermitRootLogin no\n")
                .with_xattr("user.note", "kept"),
            Entry::fifo("etc/initctl"),
            Entry::char_dev("etc/null-ish", 1, 3),
            Entry::file("usr/lib/modules/6.12.0/vmlinuz", vec![7u8; 100_000]),
        ]),
        Layer::new(vec![
            Entry::whiteout("etc/initctl"),
            Entry::file("etc/motd", "v2\n"),
        ]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_exports_without_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layers = etc_layers();
    osctl_testutil::write_layout(&layout, "v1", &ImageSpec::new(layers.clone())).unwrap();
    let sysroot = dir.path().join("root");
    std::fs::create_dir(&sysroot).unwrap();
    let store = Store::open_or_create(&sysroot).unwrap();
    let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
    let outcome = store
        .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    let tree = store.image_tree(outcome.record()).unwrap();

    assert_eq!(tree.kind(Path::new("/etc")), Some(EntryKind::Directory));
    assert_eq!(
        tree.kind(Path::new("/etc/localtime")),
        Some(EntryKind::Symlink)
    );
    assert_eq!(tree.kind(Path::new("/etc/initctl")), None, "whited out");
    assert_eq!(
        tree.read(Path::new("/usr/lib/modules/6.12.0/vmlinuz"))
            .unwrap()
            .unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(tree.read(Path::new("/etc/motd")).unwrap().unwrap(), b"v2\n");
    assert!(tree.read(Path::new("/etc/nothing")).unwrap().is_none());
    let names: Vec<String> = tree
        .list(Path::new("/usr/lib/modules"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["6.12.0"]);

    let out = dir.path().join("etc-copy");
    std::fs::create_dir(&out).unwrap();
    let target = Dir::open_ambient_dir(&out, cap_std::ambient_authority()).unwrap();
    tree.export(Path::new("/etc"), &target).unwrap();
    // The expected /etc is the layers' tree restricted to etc/, re-rooted.
    let full = expected_tree(&layers);
    let mut expected = osctl_testutil::Tree::default();
    for (path, node) in full.nodes.iter() {
        if let Ok(rest) = path.strip_prefix("etc") {
            expected.nodes.insert(rest.to_path_buf(), node.clone());
        }
    }
    assert_trees_equal(&expected, &snapshot(&out));
}
