//! `ImageTree` reads an image's files and exports subtrees without mounting:
//! the exported `/etc` must be exactly the tree the layers describe.

use std::path::Path;
use std::sync::Arc;

use cap_std::fs::Dir;
use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{EntryKind, ImageRecord, Silent, Store};
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
            Entry::fifo("etc/kept-fifo"),
            Entry::file("usr/lib/modules/6.12.0/vmlinuz", vec![7u8; 100_000]),
        ]),
        Layer::new(vec![
            Entry::whiteout("etc/initctl"),
            Entry::file("etc/motd", "v2\n"),
        ]),
    ]
}

/// Pulls `layers` as an `oci:` layout into a fresh store under `dir`.
async fn pulled(dir: &Path, layers: Vec<Layer>) -> (Store, ImageRecord) {
    let layout = dir.join("layout");
    osctl_testutil::write_layout(&layout, "v1", &ImageSpec::new(layers)).unwrap();
    let sysroot = dir.join("root");
    std::fs::create_dir(&sysroot).unwrap();
    let store = Store::open_or_create(&sysroot).unwrap();
    let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
    let outcome = store
        .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
        .await
        .unwrap();
    let record = outcome.record().clone();
    (store, record)
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_exports_without_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let layers = etc_layers();
    let (store, record) = pulled(dir.path(), layers.clone()).await;
    store.check_image(&record).unwrap();
    let tree = store.image_tree(&record).unwrap();

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

#[tokio::test(flavor = "multi_thread")]
async fn device_nodes_in_etc_and_var_are_not_exported() {
    // docs/store.md, "What an image may carry": staging must not create an
    // image's device nodes on the host. The refusal comes before anything
    // is written, from export and from check_image (which `switch` runs
    // before it creates any state).
    for (entry, shown) in [
        (Entry::char_dev("etc/null-ish", 1, 3), "/etc/null-ish"),
        (Entry::block_dev("var/lib/disk", 8, 0), "/var/lib/disk"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let kind = if shown.starts_with("/etc") {
            "character"
        } else {
            "block"
        };
        let base = if shown.starts_with("/etc") {
            "/etc"
        } else {
            "/var"
        };
        let layers = vec![Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/a", "a\n"),
            Entry::dir("var"),
            Entry::fifo("var/fifo"),
            entry,
        ])];
        let (store, record) = pulled(dir.path(), layers).await;
        let tree = store.image_tree(&record).unwrap();

        let out = dir.path().join("export");
        std::fs::create_dir(&out).unwrap();
        let target = Dir::open_ambient_dir(&out, cap_std::ambient_authority()).unwrap();
        let err = tree
            .export(Path::new(base), &target)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{shown} in oci:"))
                && err.contains(&format!("a {kind} device node"))
                && err.contains(&format!("may not carry device nodes in {base}")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing was written before the refusal"
        );
        let checked = store.check_image(&record).unwrap_err().to_string();
        assert_eq!(checked, err, "check_image refuses with the same line");
        assert_eq!(err.lines().count(), 1);
        // A fifo alone is fine and keeps the image's mode.
        if base == "/var" {
            continue;
        }
        let var = dir.path().join("var-export");
        std::fs::create_dir(&var).unwrap();
        let target = Dir::open_ambient_dir(&var, cap_std::ambient_authority()).unwrap();
        tree.export(Path::new("/var"), &target).unwrap();
        let meta = std::fs::symlink_metadata(var.join("fifo")).unwrap();
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    }
}
