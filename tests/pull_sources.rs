//! Every reference form and transport, multi-arch indexes, and sharing of
//! content between images.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{
    DropProxy, Entry, ImageSpec, Layer, Registry, RegistryOptions, assert_trees_equal,
    expected_tree, write_index_layout, write_layout, write_oci_archive,
};

fn os_layers(version: &str) -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::file(
                "usr/lib/os-release",
                format!("ID=test\nVERSION_ID={version}\n"),
            ),
            Entry::file("usr/bin/busybox", vec![0x7f; 200_000]),
        ]),
        Layer::new(vec![Entry::file("etc/motd", format!("v{version}\n"))]),
    ]
}

#[test]
fn oci_layout_and_archive_sources() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layers = os_layers("1");
    let built = write_layout(&layout, "v1", &ImageSpec::new(layers.clone())).unwrap();
    write_layout(&layout, "v2", &ImageSpec::new(os_layers("2"))).unwrap();
    let archive = dir.path().join("os.tar");
    write_oci_archive(&layout, &archive).unwrap();

    let osctl = Osctl::new();
    let from_dir = format!("oci:{}:v1", layout.display());
    osctl.pull(&from_dir);
    let from_tar = format!("oci-archive:{}:v1", archive.display());
    let out = osctl.pull(&from_tar);
    // Same image from two transports: the second pull reuses every layer.
    assert!(out.contains("0 fetched, 2 already present"), "{out}");
    let list = osctl.list();
    assert_eq!(list.len(), 2);
    for item in &list {
        assert_eq!(item["manifestDigest"], built.manifest_digest.as_str());
    }
    assert_eq!(osctl.image_id(&from_dir), osctl.image_id(&from_tar));
    assert_trees_equal(&expected_tree(&layers), &osctl.mounted_tree(&from_tar));

    // A layout with two tags needs one named.
    let err = osctl.pull_fails(
        &[&format!("oci:{}", layout.display())],
        &["several images", "v1", "v2"],
    );
    assert!(err.contains(&layout.display().to_string()), "{err}");
    osctl.pull_fails(&[&format!("oci:{}:v9", layout.display())], &["no tag 'v9'"]);
}

#[test]
fn digest_references_and_docker_prefix() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let (reference, built) = push_spec(&registry, "dig/os:v1", &ImageSpec::new(os_layers("1")));
    let by_digest = registry.image_ref(&format!("dig/os@{}", built.manifest_digest));
    let osctl = Osctl::new();
    osctl.pull(&by_digest);
    osctl.pull(&format!("docker://{reference}"));
    let list = osctl.list();
    let refs: Vec<&str> = list
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert!(
        refs.contains(&by_digest.as_str()) && refs.contains(&reference.as_str()),
        "{refs:?}"
    );
}

#[test]
fn multi_arch_index_picks_the_platform() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = osctl_testutil::layout::host_oci_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let mut host_spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("arch", host)])]);
    host_spec.architecture = host.into();
    let mut other_spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("arch", other)])]);
    other_spec.architecture = other.into();
    let index = write_index_layout(
        dir.path(),
        "multi",
        &[(other_spec, "linux", other), (host_spec, "linux", host)],
    )
    .unwrap();
    registry
        .push_oci_index(dir.path(), "multi", "multi/os:v1")
        .unwrap();
    let reference = registry.image_ref("multi/os:v1");

    let osctl = Osctl::new();
    osctl.pull(&reference);
    let item = &osctl.list()[0];
    assert_eq!(item["architecture"], host);
    assert_eq!(
        item["manifestDigest"],
        index.images[1].manifest_digest.as_str()
    );
    let tree = osctl.mounted_tree(&reference);
    assert_eq!(
        tree.get("arch").map(|n| n.kind.clone()),
        expected_tree(&[Layer::new(vec![Entry::file("arch", host)])])
            .get("arch")
            .map(|n| n.kind.clone())
    );

    let other_root = Osctl::new();
    other_root.ok(&[
        "image",
        "pull",
        "--platform",
        &format!("linux/{other}"),
        &reference,
    ]);
    assert_eq!(other_root.list()[0]["architecture"], other);

    other_root.pull_fails(
        &["--platform", "linux/s390x", &reference],
        &["no image for platform linux/s390x", "available:"],
    );
    other_root.pull_fails(
        &["--platform", "nonsense", &reference],
        &["invalid platform 'nonsense'"],
    );
}

#[test]
fn second_image_stores_only_new_objects_and_repull_is_one_manifest_request() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    // 40 shared files (objects: > 64 bytes each), then one changed and one new.
    let shared: Vec<Entry> = (0..40)
        .map(|i| Entry::file(&format!("usr/lib/f{i}"), format!("{i:0>200}")))
        .collect();
    let v1 = ImageSpec::new(vec![
        Layer::new(shared.clone()),
        Layer::new(vec![Entry::file("etc/version", "1".repeat(100))]),
    ]);
    // v2 repacks everything into other layers: same files, new layer digests.
    let mut v2_files = shared.clone();
    v2_files.push(Entry::file("usr/lib/new", "n".repeat(100)));
    v2_files.push(Entry::file("etc/version", "2".repeat(100)));
    let v2 = ImageSpec::new(vec![Layer::new(v2_files)]);
    let (r1, _) = push_spec(&registry, "share/os:v1", &v1);
    let (r2, _) = push_spec(&registry, "share/os:v2", &v2);

    let osctl = Osctl::new();
    osctl.pull(&r1);
    let after_v1 = osctl.objects();
    osctl.pull(&r2);
    let after_v2 = osctl.objects();
    // New objects: 2 new file contents + v2's layer splitstream, its config
    // stream (written twice: before and after the image exists) and its
    // EROFS image. The 40 shared files are not stored again.
    let new = after_v2 - after_v1;
    assert!(
        (2..=7).contains(&new),
        "expected only a handful of new objects, got {new} ({after_v1} → {after_v2})"
    );
    assert!(after_v1 >= 40);

    // Pulling an unchanged reference is one manifest GET (no HEAD) and no
    // blob request at all. Counted by a proxy in front of the registry: it
    // logs each request as its answer passes, so the log is complete when
    // osctl exits (the registry's own access log may lag its answers).
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    let via_proxy = proxy.image_ref("share/os:v2");
    osctl.pull(&via_proxy);
    let before = proxy.log().len();
    let out = osctl.pull(&via_proxy);
    assert!(out.contains("up to date"), "{out}");
    let log = proxy.log();
    let repull = &log[before..];
    let count = |method: &str, kind: &str| {
        repull
            .iter()
            .filter(|r| {
                r.method == method && r.target.starts_with(&format!("/v2/share/os/{kind}/"))
            })
            .count()
    };
    assert_eq!(count("GET", "manifests"), 1, "{repull:#?}");
    assert_eq!(count("HEAD", "manifests"), 0, "{repull:#?}");
    assert_eq!(
        count("GET", "blobs") + count("HEAD", "blobs"),
        0,
        "{repull:#?}"
    );
    assert!(
        repull
            .iter()
            .all(|r| r.target == "/v2/" || r.target.contains("/manifests/")),
        "nothing else but the API check: {repull:#?}"
    );
    osctl.fsck_clean();

    // rm frees what only v1 used; gc afterwards finds nothing.
    let rm = osctl.ok(&["image", "rm", &r1]);
    assert!(rm.contains("Removed"), "{rm}");
    osctl.ok(&["image", "rm", &via_proxy]);
    assert_eq!(osctl.list().len(), 1);
    let gc = osctl.ok(&["gc"]);
    assert!(gc.starts_with("Removed 0 unreferenced objects"), "{gc}");
    assert_trees_equal(&expected_tree(&v2.layers), &osctl.mounted_tree(&r2));
}
