//! Hostile layers (issue 9, #12): each is either refused with one line
//! naming the layer and the entry, or pulled into exactly the tree the OCI
//! layer semantics give (testutil's model), mounted and compared file by
//! file — never a crash, never an image the kernel cannot read. Cases that
//! already behaved are kept here so they stay that way.

use crate::util::Osctl;
use crate::util::store::layout_ref;
use osctl_testutil::{Entry, ImageSpec, Layer, assert_trees_equal, expected_tree};

fn l(entries: Vec<Entry>) -> Layer {
    Layer::new(entries)
}

#[test]
fn hostile_layers_that_are_refused() {
    let huge_name = format!("user.{}", "n".repeat(300));
    let cases: Vec<(&str, Vec<Layer>, Vec<&str>)> = vec![
        (
            "hardlink-to-nothing",
            vec![l(vec![
                Entry::file("usr/a", "a"),
                Entry::hardlink("usr/l", "usr/missing"),
            ])],
            vec![
                "layer 1",
                "tar entry 'usr/l' (hard link to 'usr/missing')",
                "does not exist",
            ],
        ),
        (
            "hardlink-cycle",
            vec![l(vec![
                Entry::hardlink("usr/a", "usr/b"),
                Entry::hardlink("usr/b", "usr/a"),
            ])],
            vec!["tar entry 'usr/a' (hard link to 'usr/b')", "does not exist"],
        ),
        (
            "hardlink-to-itself",
            vec![l(vec![Entry::hardlink("usr/a", "usr/a")])],
            vec!["tar entry 'usr/a' (hard link to 'usr/a')"],
        ),
        (
            "hardlink-to-a-directory",
            vec![l(vec![
                Entry::file("usr/f", "f"),
                Entry::hardlink("usr/l", "usr"),
            ])],
            vec!["tar entry 'usr/l' (hard link to 'usr')", "is a directory"],
        ),
        (
            "hardlink-to-its-own-layers-whiteout",
            vec![
                l(vec![Entry::file("usr/t", "t")]),
                l(vec![
                    Entry::hardlink("usr/l", "usr/t"),
                    Entry::whiteout("usr/t"),
                ]),
            ],
            vec!["layer 2", "tar entry 'usr/l' (hard link to 'usr/t')"],
        ),
        (
            "hardlink-escaping",
            vec![l(vec![
                Entry::file("usr/a", "a"),
                Entry::hardlink("usr/l", "../../etc/passwd"),
            ])],
            vec!["hardlink target '../../etc/passwd' escapes the root"],
        ),
        (
            "hardlink-absolute",
            vec![l(vec![Entry::hardlink("usr/l", "/etc/passwd")])],
            vec!["hardlink target '/etc/passwd' is absolute"],
        ),
        (
            "write-through-a-symlink",
            vec![
                l(vec![Entry::symlink("usr/evil", "/tmp")]),
                l(vec![Entry::file("usr/evil/pwned", "x")]),
            ],
            vec![
                "layer 2",
                "tar entry 'usr/evil/pwned'",
                "is not a subdirectory",
            ],
        ),
        (
            "xattr-value-over-64k",
            vec![l(vec![
                Entry::file("usr/x", "x").with_xattr("user.big", vec![b'v'; 70_000]),
            ])],
            vec!["xattr 'user.big' of 'usr/x' has a value of 70000 bytes; at most 65535"],
        ),
        (
            "xattr-value-of-exactly-64k",
            vec![l(vec![
                Entry::file("usr/x", "x").with_xattr("user.big", vec![b'v'; 65_536]),
            ])],
            vec!["has a value of 65536 bytes"],
        ),
        (
            "xattr-name-over-255",
            vec![l(vec![
                Entry::file("usr/x", "x").with_xattr(&huge_name, "v"),
            ])],
            vec!["has a name of 305 bytes; at most 255"],
        ),
        (
            "xattr-without-a-name",
            vec![l(vec![Entry::file("usr/x", "x").with_xattr("user.", "v")])],
            vec!["xattr 'user.' of 'usr/x' is not a namespace.name xattr name"],
        ),
        (
            "capability-garbage",
            vec![l(vec![
                Entry::file("usr/x", "x").with_xattr("security.capability", vec![0xff; 7]),
            ])],
            vec!["xattr 'security.capability' of 'usr/x' is not a file capability set"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    for (name, layers, needles) in cases {
        let reference = layout_ref(&dir.path().join(name), "v1", &ImageSpec::new(layers));
        let mut all = needles.clone();
        all.push(&reference);
        osctl.pull_fails(&[&reference], &all);
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[test]
fn hostile_layers_that_pull_into_the_tree_the_spec_gives() {
    let cases = osctl_testutil::images::layers_that_pull_into_the_spec();
    let dir = tempfile::tempdir().unwrap();
    for (name, layers) in cases {
        let osctl = Osctl::new();
        let reference = layout_ref(
            &dir.path().join(name),
            "v1",
            &ImageSpec::new(layers.clone()),
        );
        let out = osctl.run(&["image", "pull", "--progress", "none", &reference]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        osctl.fsck_clean();
        let tree = osctl.mounted_tree(&reference);
        eprintln!("{name}: {} paths", tree.nodes.len());
        assert_trees_equal(&expected_tree(&layers), &tree);
    }
}

#[test]
fn osctl_specific_readings_of_odd_layers() {
    // Where testutil's model and osctl differ on purpose.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();

    // `.wh.` names nothing: it hides nothing (the model would take it as
    // the root).
    let base = vec![l(vec![Entry::file("etc/a", "a")])];
    let mut layers = base.clone();
    layers.push(l(vec![Entry::raw(b".wh.".to_vec(), "")]));
    let reference = layout_ref(
        &dir.path().join("empty-whiteout"),
        "v1",
        &ImageSpec::new(layers),
    );
    osctl.pull(&reference);
    assert_trees_equal(&expected_tree(&base), &osctl.mounted_tree(&reference));

    // trusted.* xattrs (overlayfs's own, e.g. a redirect to /etc/shadow)
    // are dropped with every other non-user xattr (docs/store.md).
    let plain = vec![l(vec![Entry::file("usr/x", "x")])];
    let hostile = vec![l(vec![
        Entry::file("usr/x", "x")
            .with_xattr("trusted.overlay.redirect", "/etc/shadow")
            .with_xattr("trusted.overlay.metacopy", ""),
    ])];
    let reference = layout_ref(
        &dir.path().join("overlay-xattrs"),
        "v1",
        &ImageSpec::new(hostile),
    );
    osctl.pull(&reference);
    assert_trees_equal(&expected_tree(&plain), &osctl.mounted_tree(&reference));
}
