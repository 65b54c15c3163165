//! The harness against the real registry, skopeo, umoci and curl.

mod common;

use std::fs;
use std::process::Command;

use osctl_testutil::layout::{DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use osctl_testutil::{
    Compression, DropProxy, Entry, ImageSpec, Layer, ManifestFormat, PushOptions, Registry,
    RegistryOptions, UmociStep, build_layout_with_umoci, encode_layer, run, run_unchecked, tempdir,
    write_index_layout, write_layout, write_oci_archive,
};
use serde_json::json;

fn skopeo_inspect(args: &[String], image: &str) -> std::process::Output {
    run_unchecked(
        Command::new("skopeo")
            .arg("inspect")
            .args(args)
            .arg(format!("docker://{image}")),
    )
    .unwrap()
}

#[test]
fn plain_registry_serves_what_skopeo_pushed() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layout = tempdir();
    let spec = ImageSpec::new(vec![common::base_layer(), common::upper_layer()])
        .with_label("org.example", "yes");
    let built = write_layout(layout.path(), "v1", &spec).unwrap();

    let pushed = registry
        .push_oci_layout(layout.path(), "v1", "test/rich:v1")
        .unwrap();
    assert_eq!(pushed, built.manifest_digest);

    let info = registry.inspect("test/rich:v1", false).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest);
    assert_eq!(info["Layers"], json!(built.layer_digests));
    assert_eq!(info["Labels"]["org.example"], "yes");
    let raw = registry.inspect("test/rich:v1", true).unwrap();
    assert_eq!(raw["mediaType"], OCI_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], OCI_CONFIG);

    // The stored blob is where blob_path says, byte-identical to the layout's.
    for digest in &built.layer_digests {
        assert_eq!(
            fs::read(registry.blob_path(digest)).unwrap(),
            fs::read(built.blob_path(digest)).unwrap()
        );
    }
}

#[test]
fn htpasswd_registry_needs_credentials() {
    let registry =
        Registry::start(RegistryOptions::default().with_auth("osctl", "s3cret")).unwrap();
    let layout = tempdir();
    let built = write_layout(
        layout.path(),
        "latest",
        &ImageSpec::new(vec![common::base_layer()]),
    )
    .unwrap();
    registry
        .push_oci_layout(layout.path(), "latest", "private/img:latest")
        .unwrap();

    let image = registry.image_ref("private/img:latest");
    let anonymous = skopeo_inspect(&["--tls-verify=false".into(), "--no-creds".into()], &image);
    assert!(!anonymous.status.success(), "anonymous inspect must fail");
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("unauthorized"));

    let wrong = skopeo_inspect(
        &["--tls-verify=false".into(), "--creds=osctl:wrong".into()],
        &image,
    );
    assert!(!wrong.status.success(), "wrong password must fail");

    let info = registry.inspect("private/img:latest", false).unwrap(); // uses --creds
    assert_eq!(info["Digest"], built.manifest_digest);

    // Our own HTTP helper authenticates too, and plain requests are refused.
    assert_eq!(
        registry.request("GET", "/v2/", &[], &[]).unwrap().status,
        200
    );
    let resp = osctl_testutil::run(
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}/v2/", registry.base_url())),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&resp.stdout), "401");
}

#[test]
fn tls_registry_is_trusted_only_with_its_certificate() {
    let registry =
        Registry::start(RegistryOptions::default().with_tls().with_auth("u", "p")).unwrap();
    assert!(registry.base_url().starts_with("https://"));
    let layout = tempdir();
    let built = write_layout(
        layout.path(),
        "t",
        &ImageSpec::new(vec![Layer::new(vec![Entry::file("f", "x")])]),
    )
    .unwrap();
    registry
        .push_oci_layout(layout.path(), "t", "secure/img:t")
        .unwrap();

    let image = registry.image_ref("secure/img:t");
    let cert_dir = format!("--cert-dir={}", registry.cert_dir().unwrap().display());
    let ok = skopeo_inspect(&[cert_dir, "--creds=u:p".into()], &image);
    assert!(ok.status.success());
    let info: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest);

    let untrusted = skopeo_inspect(&["--creds=u:p".into()], &image);
    assert!(
        !untrusted.status.success(),
        "a self-signed certificate must not be trusted by default"
    );
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("certificate"));

    // curl with --cacert, through the harness's request helper.
    let resp = registry
        .request("GET", "/v2/secure/img/tags/list", &[], &[])
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(resp.body_text().contains("\"t\""));
}

#[test]
fn umoci_built_layout_pushes() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let work = tempdir();
    let rootfs = work.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hostname"), "umoci\n").unwrap();
    fs::write(rootfs.join("old"), "old\n").unwrap();
    std::os::unix::fs::symlink("etc/hostname", rootfs.join("link")).unwrap();
    let layout = work.path().join("layout");
    let built = build_layout_with_umoci(
        &layout,
        "u1",
        &rootfs,
        &[UmociStep::Whiteout {
            target: "/old".into(),
        }],
    )
    .unwrap();
    assert_eq!(built.layer_digests.len(), 2);
    assert_eq!(built.diff_ids.len(), 2);

    let pushed = registry
        .push_oci_layout(&layout, "u1", "umoci/img:u1")
        .unwrap();
    assert_eq!(pushed, built.manifest_digest);
    assert_eq!(
        registry.inspect("umoci/img:u1", false).unwrap()["Layers"],
        json!(built.layer_digests)
    );
}

#[test]
fn index_docker_zstd_archive_and_empty_layer_variants_push() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let work = tempdir();
    let layout = work.path().join("layout");
    let files = || {
        vec![
            Entry::dir("etc"),
            Entry::file("etc/os-release", "ID=test\n"),
        ]
    };

    // Multi-arch index, pushed with --all.
    let mut arm = ImageSpec::new(vec![Layer::new(files())]);
    arm.architecture = "arm64".into();
    let amd = ImageSpec::new(vec![Layer::new(files()), Layer::new(vec![])]);
    let index = write_index_layout(
        &layout,
        "multi",
        &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
    )
    .unwrap();
    assert_eq!(
        registry
            .push_oci_index(&layout, "multi", "multi/img:1")
            .unwrap(),
        index.index_digest
    );
    let raw = registry.inspect("multi/img:1", true).unwrap();
    assert_eq!(raw["mediaType"], OCI_INDEX);
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(raw["manifests"][1]["platform"]["architecture"], "arm64");
    for image in &index.images {
        assert!(
            registry.blob_path(&image.config_digest).exists(),
            "every platform's blobs were pushed"
        );
    }

    // A Docker manifest list (pushed through skopeo's dir: transport).
    let docker_list = write_index_layout(
        &layout,
        "docker-list",
        &[
            (
                ImageSpec::new(vec![Layer::new(files())]).with_docker_media_types(),
                "linux",
                "amd64",
            ),
            (
                ImageSpec::new(vec![Layer::new(vec![])]).with_docker_media_types(),
                "linux",
                "arm64",
            ),
        ],
    )
    .unwrap();
    let pushed = registry
        .push_oci_index(&layout, "docker-list", "docker/list:1")
        .unwrap();
    assert_eq!(pushed, docker_list.index_digest);
    let raw = registry.inspect("docker/list:1", true).unwrap();
    assert_eq!(
        raw["mediaType"],
        osctl_testutil::layout::DOCKER_MANIFEST_LIST
    );

    // Docker media types, kept as they are.
    let docker = ImageSpec::new(vec![Layer::new(files())]).with_docker_media_types();
    let built = write_layout(&layout, "docker", &docker).unwrap();
    assert_eq!(
        registry
            .push_oci_layout(&layout, "docker", "docker/img:1")
            .unwrap(),
        built.manifest_digest
    );
    assert_eq!(
        registry.inspect("docker/img:1", true).unwrap()["mediaType"],
        DOCKER_MANIFEST
    );

    // An OCI image converted to Docker schema 2 by skopeo.
    let oci = ImageSpec::new(vec![Layer::new(files())]);
    write_layout(&layout, "oci", &oci).unwrap();
    let options = PushOptions {
        format: Some(ManifestFormat::V2s2),
        ..Default::default()
    };
    registry
        .push_oci_layout_with(&layout, "oci", "converted/img:1", &options)
        .unwrap();
    assert_eq!(
        registry.inspect("converted/img:1", true).unwrap()["mediaType"],
        DOCKER_MANIFEST
    );

    // zstd and uncompressed layers, plus an empty one.
    let mixed = ImageSpec::new(vec![
        Layer::new(files()).with_compression(Compression::Zstd),
        Layer::new(vec![Entry::file("plain", "p")]).with_compression(Compression::None),
        Layer::new(vec![]),
    ]);
    let built = write_layout(&layout, "mixed", &mixed).unwrap();
    assert_eq!(
        registry
            .push_oci_layout(&layout, "mixed", "mixed/img:1")
            .unwrap(),
        built.manifest_digest
    );
    let raw = registry.inspect("mixed/img:1", true).unwrap();
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        raw["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );

    // oci-archive: transport.
    let archive = work.path().join("image.tar");
    write_oci_archive(&layout, &archive).unwrap();
    let src = format!("oci-archive:{}:mixed", archive.display());
    assert_eq!(
        registry
            .skopeo_copy_to(&src, "archive/img:1", &PushOptions::default())
            .unwrap(),
        built.manifest_digest
    );
}

#[test]
fn raw_blobs_and_manifests_can_be_served() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layer = encode_layer(&Layer::new(vec![Entry::file("f", "content")]), false).unwrap();
    let layer_digest = registry.put_blob("raw/img", &layer.bytes).unwrap();
    assert_eq!(layer_digest, layer.digest);
    let config_digest = registry.put_blob("raw/img", b"{ this is not json").unwrap();

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": 18 },
        "layers": [{ "mediaType": "application/vnd.example.unsupported", "digest": layer_digest, "size": layer.bytes.len() }],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = registry
        .put_manifest("raw/img", "broken", OCI_MANIFEST, &body)
        .unwrap();
    assert_eq!(digest, osctl_testutil::sha256_digest(&body));
    let served = registry.inspect("raw/img:broken", true).unwrap();
    assert_eq!(
        served["layers"][0]["mediaType"],
        "application/vnd.example.unsupported"
    );
    let config = registry
        .request(
            "GET",
            &format!("/v2/raw/img/blobs/{config_digest}"),
            &[],
            &[],
        )
        .unwrap();
    assert_eq!(config.body, b"{ this is not json");

    // What distribution itself refuses (documented in registry.rs).
    let not_json = registry
        .put_manifest_raw("raw/img", "x", OCI_MANIFEST, b"{ nope")
        .unwrap();
    assert_eq!(not_json.status, 400, "{}", not_json.body_text());
    let unknown_type = registry
        .put_manifest_raw("raw/img", "y", "application/x-unknown", &body)
        .unwrap();
    assert_eq!(unknown_type.status, 400, "{}", unknown_type.body_text());
}

#[test]
fn tampered_blobs_are_served_as_tampered() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layout = tempdir();
    let built = write_layout(
        layout.path(),
        "v",
        &ImageSpec::new(vec![common::base_layer()]),
    )
    .unwrap();
    registry
        .push_oci_layout(layout.path(), "v", "tamper/img:v")
        .unwrap();

    let digest = &built.layer_digests[0];
    let path = registry.blob_path(digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let resp = registry
        .request("GET", &format!("/v2/tamper/img/blobs/{digest}"), &[], &[])
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body, bytes,
        "the registry serves the corrupted bytes without checking"
    );
    assert_ne!(osctl_testutil::sha256_digest(&resp.body), *digest);

    // Manifests are blobs too: different but valid JSON is served as is,
    // under the old digest; unparseable content gets a 500.
    let path = registry.blob_path(&built.manifest_digest);
    let original = fs::read_to_string(&path).unwrap();
    let swapped = original.replace(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/x-foo",
    );
    fs::write(&path, &swapped).unwrap();
    let accept = [("Accept", OCI_MANIFEST)];
    let by_digest = format!("/v2/tamper/img/manifests/{}", built.manifest_digest);
    for target in ["/v2/tamper/img/manifests/v", by_digest.as_str()] {
        let resp = registry.request("GET", target, &accept, &[]).unwrap();
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (200, swapped.as_bytes())
        );
    }
    fs::write(&path, "{ nope").unwrap();
    assert_eq!(
        registry
            .request("GET", &by_digest, &accept, &[])
            .unwrap()
            .status,
        500
    );
}

#[test]
fn drop_proxy_cuts_blob_downloads_only() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layout = tempdir();
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::large_file("big", 1 << 20, 7)])]);
    let built = write_layout(layout.path(), "v", &spec).unwrap();
    registry
        .push_oci_layout(layout.path(), "v", "proxy/img:v")
        .unwrap();

    let proxy = DropProxy::start_limited(&registry.addr(), 1000, 1).unwrap();
    let out = tempdir();
    let curl = |url: &str, file: &str| {
        run_unchecked(
            Command::new("curl")
                .args(["-sS", "-o"])
                .arg(out.path().join(file))
                .arg(url),
        )
        .unwrap()
    };
    let blob_url = format!(
        "http://{}/v2/proxy/img/blobs/{}",
        proxy.addr(),
        built.layer_digests[0]
    );
    let cut = curl(&blob_url, "cut");
    assert_eq!(
        cut.status.code(),
        Some(18),
        "curl reports a partial transfer"
    );
    assert_eq!(fs::metadata(out.path().join("cut")).unwrap().len(), 1000);
    assert_eq!(proxy.cuts(), 1);

    // Manifests pass, and after max_cuts blobs pass too.
    let manifest_url = format!("http://{}/v2/proxy/img/manifests/v", proxy.addr());
    let accept = format!("Accept: {OCI_MANIFEST}");
    run(Command::new("curl")
        .args(["-sSf", "-H", &accept, "-o"])
        .arg(out.path().join("m"))
        .arg(&manifest_url))
    .unwrap();
    assert_eq!(
        osctl_testutil::sha256_digest(&fs::read(out.path().join("m")).unwrap()),
        built.manifest_digest
    );
    assert!(curl(&blob_url, "whole").status.success());
    assert_eq!(
        fs::read(out.path().join("whole")).unwrap(),
        fs::read(built.layer_path(0)).unwrap()
    );

    // skopeo through a cutting proxy fails on the blob.
    let proxy = DropProxy::start(&registry.addr(), 4096).unwrap();
    let dest = format!("dir:{}", out.path().join("dir").display());
    let t = std::time::Instant::now();
    let copy = run_unchecked(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}", proxy.image_ref("proxy/img:v")))
            .arg(dest),
    )
    .unwrap();
    assert!(
        !copy.status.success(),
        "skopeo must fail when every blob download is cut"
    );
    eprintln!(
        "skopeo took {:?}, {} cuts, {} requests",
        t.elapsed(),
        proxy.cuts(),
        proxy.requests()
    );
    assert!(proxy.cuts() >= 1);
}

#[test]
fn proxy_serves_manifests_the_registry_refuses() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    proxy.serve_manifest(
        "odd/img",
        "v1",
        "application/vnd.example.unknown+json",
        b"{ not json",
    );
    let url = format!("http://{}/v2/odd/img/manifests/v1", proxy.addr());
    let out = run(Command::new("curl").args(["-sSf", "-i", &url])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Content-Type: application/vnd.example.unknown+json"),
        "{text}"
    );
    assert!(text.ends_with("{ not json"));
    // Everything else still reaches the registry.
    let catalog = format!("http://{}/v2/_catalog", proxy.addr());
    let out = run(Command::new("curl").args(["-sSf", &catalog])).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"repositories":[]}"#
    );
}

#[test]
fn large_layer_streams_through_write_and_push() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layout = tempdir();
    let layers = vec![Layer::new(vec![Entry::large_file("big.bin", 50 << 20, 1)])];
    let started = std::time::Instant::now();
    let built = write_layout(layout.path(), "big", &ImageSpec::new(layers.clone())).unwrap();
    eprintln!("write_layout of 50 MiB: {:?}", started.elapsed());
    let size = fs::metadata(built.layer_path(0)).unwrap().len();
    assert!(
        size > 50 << 20,
        "generated content is incompressible ({size} bytes)"
    );
    let started = std::time::Instant::now();
    registry
        .push_oci_layout(layout.path(), "big", "big/img:1")
        .unwrap();
    eprintln!("push of 50 MiB: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let tree = osctl_testutil::expected_tree(&layers);
    eprintln!("expected_tree of 50 MiB: {:?}", started.elapsed());
    assert_eq!(tree.get("big.bin").map(|n| n.mode), Some(0o644));
}
