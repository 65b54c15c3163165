//! Pulled images come out right: every edge case of the tar/OCI layer format
//! is pulled from a real registry, mounted, and compared file by file with
//! the tree the layers must produce.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{
    Compression, Entry, ImageSpec, Layer, PushOptions, Registry, RegistryOptions,
    assert_trees_equal, expected_tree, snapshot, write_layout,
};

#[test]
fn every_layer_edge_case_survives_pull_and_mount() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = osctl_testutil::images::edge_case_layers();
    let (reference, built) = push_spec(&registry, "edge/os:v1", &ImageSpec::new(layers.clone()));
    let osctl = Osctl::new();
    let out = osctl.pull(&reference);
    assert!(out.contains("4 fetched, 0 already present"), "{out}");
    assert!(
        out.contains("insecure mode"),
        "the output says the verity mode: {out}"
    );

    let list = osctl.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reference"], reference.as_str());
    assert_eq!(list[0]["manifestDigest"], built.manifest_digest.as_str());
    assert_eq!(list[0]["configDigest"], built.config_digest.as_str());
    assert_eq!(list[0]["layers"], 4);

    let tree = osctl.mounted_tree(&reference);
    assert_trees_equal(&expected_tree(&layers), &tree);
    // Hard links stay hard links through the composefs image.
    assert!(
        tree.hardlink_groups()
            .iter()
            .any(|g| g.len() == 2 && g.iter().any(|p| p.ends_with("tool-link"))),
        "tool and tool-link are one inode"
    );
    osctl.fsck_clean();
}

#[test]
fn documented_canonicalisation_is_applied() {
    // docs/store.md: /run is emptied, only security.capability and user.*
    // xattrs are kept, the root takes /usr's metadata, and missing parents
    // are created 0755 root:root.
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = vec![Layer::new(vec![
        Entry::dir_with("usr", 0o711, 0, 0),
        Entry::file("run/stale.pid", "1"),
        Entry::file("usr/x", "x")
            .with_xattr("trusted.example", "t")
            .with_xattr("security.selinux", "system_u:object_r:bin_t:s0")
            .with_xattr("user.kept", "yes"),
        Entry::file("deep/er/file", "parents not listed"),
    ])];
    let (reference, _) = push_spec(&registry, "canon/os:v1", &ImageSpec::new(layers));
    let osctl = Osctl::new();
    osctl.pull(&reference);
    // The tree snapshot leaves security.selinux out (it is noise on a
    // labelled host), so the dropped label is checked on the mount itself.
    let mnt = tempfile::tempdir().unwrap();
    osctl.ok(&["image", "mount", &reference, mnt.path().to_str().unwrap()]);
    let xattr = |name: &str| {
        let mut buf = vec![0u8; 256];
        rustix::fs::lgetxattr(mnt.path().join("usr/x"), name, &mut buf).map(|n| buf[..n].to_vec())
    };
    let (selinux, kept) = (xattr("security.selinux"), xattr("user.kept"));
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    assert_eq!(
        kept.unwrap(),
        b"yes",
        "the check can see xattrs on the mount"
    );
    assert_eq!(
        selinux,
        Err(rustix::io::Errno::NODATA),
        "security.selinux dropped"
    );
    let tree = osctl.mounted_tree(&reference);
    let run = tree.get("run").expect("/run stays");
    assert!(matches!(run.kind, osctl_testutil::NodeKind::Dir));
    assert!(tree.get("run/stale.pid").is_none(), "/run is emptied");
    let x = tree.get("usr/x").unwrap();
    assert_eq!(x.xattrs.keys().collect::<Vec<_>>(), vec!["user.kept"]);
    assert_eq!(tree.get("").unwrap().mode, 0o711, "root takes /usr's mode");
    let deep = tree.get("deep/er").unwrap();
    assert_eq!((deep.mode, deep.uid, deep.gid), (0o755, 0, 0));
}

#[test]
fn docker_v2_media_types_pull() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = vec![
        Layer::new(vec![Entry::file("etc/os-release", "ID=docker-made\n")]),
        Layer::new(vec![Entry::file("usr/bin/x", "x")]).with_compression(Compression::None),
    ];
    let spec = ImageSpec::new(layers.clone()).with_docker_media_types();
    let (reference, built) = push_spec(&registry, "docker/os:v1", &spec);
    let served = registry.inspect("docker/os:v1", true).unwrap();
    assert_eq!(
        served["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let osctl = Osctl::new();
    osctl.pull(&reference);
    assert_eq!(
        osctl.list()[0]["manifestDigest"],
        built.manifest_digest.as_str()
    );
    assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&reference));
}

#[test]
fn skopeo_converted_v2s2_pulls() {
    // skopeo rewrites an OCI image as Docker schema 2 on the way in: an
    // independent writer of the Docker format.
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = vec![Layer::new(vec![Entry::file("etc/motd", "converted\n")])];
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), "t", &ImageSpec::new(layers.clone())).unwrap();
    registry
        .push_oci_layout_with(
            dir.path(),
            "t",
            "conv/os:v1",
            &PushOptions {
                format: Some(osctl_testutil::ManifestFormat::V2s2),
                all: false,
            },
        )
        .unwrap();
    let reference = registry.image_ref("conv/os:v1");
    let osctl = Osctl::new();
    osctl.pull(&format!("docker://{reference}"));
    assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&reference));
}

#[test]
fn umoci_built_image_from_a_directory() {
    // A tree made on disk (owners, modes, xattrs, hardlinks), layered by
    // umoci — a tool osctl shares no code with.
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    std::fs::write(root.join("usr/bin/prog"), "#!/bin/sh\n").unwrap();
    std::fs::hard_link(root.join("usr/bin/prog"), root.join("usr/bin/prog2")).unwrap();
    std::os::unix::fs::symlink("prog", root.join("usr/bin/prog-sym")).unwrap();
    std::os::unix::fs::chown(root.join("etc/ssh/sshd_config"), Some(0), Some(22)).unwrap();
    let layout = src.path().join("layout");
    // umoci unpack + repack (umoci 0.4.7's `insert` writes truncated tars).
    let image = format!("{}:v1", layout.display());
    let bundle = src.path().join("bundle");
    let sh = |args: &[&str]| {
        osctl_testutil::run(std::process::Command::new(args[0]).args(&args[1..])).unwrap();
    };
    sh(&["umoci", "init", "--layout", layout.to_str().unwrap()]);
    sh(&["umoci", "new", "--image", &image]);
    sh(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        bundle.to_str().unwrap(),
    ]);
    sh(&[
        "cp",
        "-a",
        &format!("{}/.", root.display()),
        bundle.join("rootfs").to_str().unwrap(),
    ]);
    sh(&[
        "umoci",
        "repack",
        "--image",
        &image,
        bundle.to_str().unwrap(),
    ]);
    let built = osctl_testutil::read_layout_image(&layout, "v1").unwrap();
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    registry
        .push_oci_layout(&layout, "v1", "umoci/os:v1")
        .unwrap();
    let reference = registry.image_ref("umoci/os:v1");
    let osctl = Osctl::new();
    osctl.pull(&reference);
    assert_eq!(
        osctl.list()[0]["manifestDigest"],
        built.manifest_digest.as_str()
    );
    assert_trees_equal(&snapshot(&root), &osctl.mounted_tree(&reference));
}
