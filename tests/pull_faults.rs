//! Bad input and faults: each gets a one-line error naming the thing at
//! fault, a non-zero exit, and leaves the store exactly as it was (the image
//! pulled before is still listed, `fsck` is clean). `Osctl::pull_fails`
//! checks all three.

use crate::util::{Osctl, push_good, push_spec};
use osctl_testutil::{DropProxy, Entry, ImageSpec, Layer, Registry, RegistryOptions, encode_layer};

// Dropped connections, retries and resumption: pull_retry.rs.
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry with one good image already pulled into a fresh store.
fn setup() -> (Registry, Osctl, String) {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let good = push_good(&registry, "faults/base");
    let osctl = Osctl::new();
    osctl.pull(&good);
    (registry, osctl, good)
}

/// Uploads layers and a config as given and tags a manifest over them: the
/// way to serve images no well-behaved tool would write.
fn push_manual(
    registry: &Registry,
    repo: &str,
    tag: &str,
    layers: &[(Vec<u8>, String)],
    config: &[u8],
) -> String {
    let mut descs = Vec::new();
    for (bytes, media_type) in layers {
        let digest = registry.put_blob(repo, bytes).unwrap();
        descs.push(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}));
    }
    let config_digest = registry.put_blob(repo, config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descs,
    });
    registry
        .put_manifest(repo, tag, OCI_MANIFEST, manifest.to_string().as_bytes())
        .unwrap();
    registry.image_ref(&format!("{repo}:{tag}"))
}

fn config_for(diff_ids: &[&str]) -> Vec<u8> {
    json!({
        "architecture": osctl_testutil::layout::host_oci_arch(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    })
    .to_string()
    .into_bytes()
}

fn small_layer() -> osctl_testutil::EncodedLayer {
    encode_layer(
        &Layer::new(vec![Entry::file("usr/bin/app", "a".repeat(500))]),
        false,
    )
    .unwrap()
}

#[test]
fn unknown_repository_and_tag() {
    let (registry, osctl, _) = setup();
    let missing_repo = registry.image_ref("no/such/repo:v1");
    osctl.pull_fails(&[&missing_repo], &["image not found", &missing_repo]);
    let missing_tag = registry.image_ref("faults/base:nope");
    osctl.pull_fails(&[&missing_tag], &["image not found", &missing_tag]);
    osctl.pull_fails(
        &["Not A Reference"],
        &["invalid image reference 'Not A Reference'"],
    );
    osctl.pull_fails(&["dir:/srv/x"], &["transport 'dir' is not supported"]);
    osctl.pull_fails(
        &["127.0.0.1:99999/x:y"],
        &[
            "'127.0.0.1:99999/x:y'",
            "port '99999' of registry 127.0.0.1:99999 is not a TCP port",
        ],
    );
}

#[test]
fn local_sources_that_are_not_images() {
    let (_, osctl, _) = setup();
    let dir = osctl.sysroot();
    let not_tar = dir.join("notes.txt");
    std::fs::write(
        &not_tar,
        "just some text, long enough to be more than nothing\n".repeat(20),
    )
    .unwrap();
    let short = dir.join("short.tar");
    std::fs::write(&short, "tiny").unwrap();
    let gz = dir.join("layout.tar.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let empty_dir = dir.join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let show = |p: &std::path::Path| p.display().to_string();
    let missing = dir.join("missing.tar");
    for (reference, needles) in [
        (
            format!("oci-archive:{}", show(&missing)),
            vec![format!("OCI archive {}: does not exist", show(&missing))],
        ),
        (
            format!("oci-archive:{}", show(&not_tar)),
            vec![format!(
                "OCI archive {}: is not a tar archive",
                show(&not_tar)
            )],
        ),
        (
            format!("oci-archive:{}", show(&short)),
            vec![format!(
                "OCI archive {}: is not a tar archive (it is only 4 bytes long)",
                show(&short)
            )],
        ),
        (
            format!("oci-archive:{}", show(&gz)),
            vec![format!("OCI archive {}: is gzip-compressed", show(&gz))],
        ),
        (
            format!("oci-archive:{}", show(&empty_dir)),
            vec![
                format!("OCI archive {}: is a directory", show(&empty_dir)),
                "use oci:".into(),
            ],
        ),
        (
            "oci:/nonexistent/layout:v1".to_string(),
            vec!["OCI layout /nonexistent/layout: does not exist".into()],
        ),
        (
            "oci:/etc".to_string(),
            vec!["OCI layout /etc: is not an OCI image layout: it has no index.json".into()],
        ),
        (
            format!("oci:{}", show(&not_tar)),
            vec![
                format!("OCI layout {}: is not a directory", show(&not_tar)),
                "use oci-archive:".into(),
            ],
        ),
    ] {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let err = osctl.pull_fails(&[&reference], &needles);
        assert!(!err.contains("i/o error"), "{err}");
    }
}

#[test]
fn registry_that_is_not_there() {
    let osctl = Osctl::new();
    let port = osctl_testutil::free_port();
    let reference = format!("127.0.0.1:{port}/os:v1");
    osctl.pull_fails(
        &[&reference],
        &["cannot reach registry", &format!("127.0.0.1:{port}")],
    );
}

#[test]
fn corrupted_blob_is_refused() {
    let (registry, osctl, _) = setup();
    let clean = osctl.objects();
    let layers = vec![Layer::new(vec![Entry::file(
        "usr/big",
        vec![b'x'; 100_000],
    )])];
    let (reference, built) = push_spec(&registry, "faults/corrupt:v1", &ImageSpec::new(layers));
    let blob = registry.blob_path(&built.layer_digests[0]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let err = osctl.pull_fails(&[&reference], &[&built.layer_digests[0]]);
    assert!(err.to_lowercase().contains("digest"), "{err}");
    // Whatever the refused layer left behind is garbage, and exactly that
    // is removed: the store is back to the good image's objects.
    let leftover = osctl.objects() - clean;
    let out = osctl.ok(&["gc"]);
    assert!(
        out.starts_with(&format!("Removed {leftover} unreferenced objects ")),
        "{out}"
    );
    assert_eq!(osctl.objects(), clean);
}

#[test]
fn truncated_blob_is_refused() {
    let (registry, osctl, _) = setup();
    let layers = vec![Layer::new(vec![Entry::file(
        "usr/big",
        vec![b'y'; 200_000],
    )])];
    let (reference, built) = push_spec(&registry, "faults/short:v1", &ImageSpec::new(layers));
    let blob = registry.blob_path(&built.layer_digests[0]);
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
    osctl.pull_fails(&[&reference], &[&built.layer_digests[0]]);
}

#[test]
fn diff_id_mismatch_is_refused() {
    let (registry, osctl, _) = setup();
    let layer = small_layer();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let reference = push_manual(
        &registry,
        "faults/diffid",
        "v1",
        &[(layer.bytes.clone(), layer.media_type.clone())],
        &config_for(&[&wrong]),
    );
    osctl.pull_fails(&[&reference], &["diff_id mismatch", &wrong, &layer.diff_id]);
}

#[test]
fn malformed_config_and_layer_count() {
    let (registry, osctl, _) = setup();
    let layer = small_layer();
    let l = [(layer.bytes.clone(), layer.media_type.clone())];
    let bad_json = push_manual(&registry, "faults/config", "json", &l, b"{\"rootfs\": [");
    osctl.pull_fails(&[&bad_json], &["config sha256:", "not valid JSON"]);
    let too_few = push_manual(&registry, "faults/config", "count", &l, &config_for(&[]));
    osctl.pull_fails(
        &[&too_few],
        &["lists 0 diff_ids but the manifest has 1 layers"],
    );
}

#[test]
fn unsupported_layer_media_type() {
    let (registry, osctl, _) = setup();
    let layer = small_layer();
    let reference = push_manual(
        &registry,
        "faults/media",
        "v1",
        &[(
            layer.bytes.clone(),
            "application/vnd.example.weird+tar".into(),
        )],
        &config_for(&[&layer.diff_id]),
    );
    osctl.pull_fails(
        &[&reference],
        &[
            "unsupported media type application/vnd.example.weird+tar",
            &layer.digest,
        ],
    );
}

#[test]
fn malformed_and_foreign_manifests() {
    let (registry, osctl, _) = setup();
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    proxy.serve_manifest(
        "faults/m",
        "json",
        OCI_MANIFEST,
        b"{\"schemaVersion\": 2, \"layers\": [",
    );
    proxy.serve_manifest(
        "faults/m",
        "type",
        "application/vnd.example.manifest+json",
        br#"{"schemaVersion": 2, "mediaType": "application/vnd.example.manifest+json"}"#,
    );
    let json_ref = proxy.image_ref("faults/m:json");
    osctl.pull_fails(&[&json_ref], &["manifest of", "faults/m:json", "malformed"]);
    let type_ref = proxy.image_ref("faults/m:type");
    osctl.pull_fails(
        &[&type_ref],
        &["unsupported media type application/vnd.example.manifest+json"],
    );
}

#[test]
fn tar_entries_escaping_the_root_are_refused() {
    let (registry, osctl, _) = setup();
    for (tag, name, needle) in [
        ("dotdot", &b"../escape"[..], "'../escape' escapes the root"),
        ("nested", &b"usr/../../etc/evil"[..], "escapes the root"),
        ("absolute", &b"/etc/passwd"[..], "'/etc/passwd' is absolute"),
    ] {
        let layers = vec![Layer::new(vec![
            Entry::file("usr/ok", "fine"),
            Entry::raw(name.to_vec(), "evil"),
        ])];
        let (reference, _) = push_spec(
            &registry,
            &format!("faults/tar:{tag}"),
            &ImageSpec::new(layers),
        );
        osctl.pull_fails(&[&reference], &[needle, &reference]);
    }
    // Nothing was written outside the store, under any name.
    assert!(!osctl.sysroot().join("escape").exists());
    assert!(!osctl.sysroot().parent().unwrap().join("escape").exists());
}

#[test]
fn sparse_tar_entries_are_refused() {
    // Both sparse encodings GNU tar writes: the GNU 'S' entry type, and PAX
    // GNU.sparse.* records (a regular entry whose data starts with the map).
    // composefs keeps regular files whole, so neither can be imported; each
    // is refused with one line instead of a file of the wrong content.
    let (registry, osctl, _) = setup();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("root");
    std::fs::create_dir_all(root.join("usr")).unwrap();
    let file = std::fs::File::create(root.join("usr/sparse")).unwrap();
    file.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"data", 1_000_000).unwrap();
    for format in ["gnu", "posix"] {
        let tar = src.path().join(format!("{format}.tar"));
        osctl_testutil::run(
            std::process::Command::new("tar")
                .args(["--sparse", &format!("--format={format}"), "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("usr"),
        )
        .unwrap();
        let bytes = std::fs::read(&tar).unwrap();
        let diff_id = osctl_testutil::sha256_digest(&bytes);
        let reference = push_manual(
            &registry,
            "faults/sparse",
            format,
            &[(bytes, "application/vnd.oci.image.layer.v1.tar".into())],
            &config_for(&[&diff_id]),
        );
        osctl.pull_fails(
            &[&reference],
            &[
                &reference,
                "layer 1",
                "sparse tar entries are not supported",
            ],
        );
    }
}
