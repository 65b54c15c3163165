//! The test signer against a real registry (Debian's docker-registry): what
//! it stores under the `.sig` tag, read back over the registry API and
//! checked with OpenSSL from the public keys alone; and the
//! `osctl-test-sign` binary the shell VM test uses.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use openssl::base64;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::sign::Verifier;
use osctl_testutil::layout::{DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};
use osctl_testutil::sigstore::{
    self, CREATOR, KeyKind, ManifestShape, Optional, SignatureLayer, SigningKey,
};
use osctl_testutil::{
    Entry, ImageSpec, Layer, Registry, RegistryOptions, run, run_unchecked, sha256_digest, tempdir,
    write_layout,
};
use serde_json::Value;

const REPO: &str = "sig/os";
// The format's names, spelled out here rather than taken from the signer,
// so a typo there fails these tests.
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A small image pushed by skopeo as `sig/os:v1`; returns its digest.
fn push_image(registry: &Registry) -> String {
    let layout = tempdir();
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::file(
        "etc/os-release",
        "ID=t\n",
    )])]);
    let built = write_layout(layout.path(), "v1", &spec).unwrap();
    let pushed = registry
        .push_oci_layout(layout.path(), "v1", &format!("{REPO}:v1"))
        .unwrap();
    assert_eq!(pushed, built.manifest_digest);
    pushed
}

fn get(registry: &Registry, target: &str, accept: &str) -> osctl_testutil::HttpResponse {
    let resp = registry
        .request("GET", target, &[("Accept", accept)], &[])
        .unwrap();
    assert_eq!(resp.status, 200, "GET {target}: {}", resp.body_text());
    resp
}

/// One signature as a verifier finds it: descriptor, payload blob, decoded
/// signature annotation.
struct Found {
    descriptor: Value,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Reads the signatures of `signed` the way the format says a verifier
/// does, checking every structural rule on the way; `sig_digest` is what the
/// signer said it pushed.
fn read_signatures(registry: &Registry, signed: &str, sig_digest: &str) -> Vec<Found> {
    let tag = format!("sha256-{}.sig", signed.strip_prefix("sha256:").unwrap());
    let resp = get(
        registry,
        &format!("/v2/{REPO}/manifests/{tag}"),
        OCI_MANIFEST,
    );
    assert_eq!(resp.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(sha256_digest(&resp.body), sig_digest);
    let manifest: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);

    let layers = manifest["layers"].as_array().unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = get(
        registry,
        &format!("/v2/{REPO}/blobs/{config_digest}"),
        "*/*",
    )
    .body;
    assert_eq!(manifest["config"]["size"], config.len());
    let config: Value = serde_json::from_slice(&config).unwrap();
    let layer_digests: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        layer_digests
    );

    layers
        .iter()
        .map(|descriptor| {
            assert_eq!(descriptor["mediaType"], SIMPLESIGNING);
            let digest = descriptor["digest"].as_str().unwrap();
            let payload = get(registry, &format!("/v2/{REPO}/blobs/{digest}"), "*/*").body;
            assert_eq!(sha256_digest(&payload), digest);
            assert_eq!(descriptor["size"], payload.len());
            let text = descriptor["annotations"][SIGNATURE_ANNOTATION]
                .as_str()
                .unwrap();
            Found {
                descriptor: descriptor.clone(),
                payload,
                signature: base64::decode_block(text).unwrap(),
            }
        })
        .collect()
}

/// OpenSSL's verdict from the public key PEM alone.
fn verifies(public_pem: &str, kind: KeyKind, found: &Found) -> bool {
    let key = PKey::public_key_from_pem(public_pem.as_bytes()).unwrap();
    let mut verifier = match kind {
        KeyKind::Ed25519 => Verifier::new_without_digest(&key).unwrap(),
        _ => Verifier::new(MessageDigest::sha256(), &key).unwrap(),
    };
    if kind == KeyKind::Rsa2048 {
        verifier.set_rsa_padding(Padding::PKCS1).unwrap();
    }
    // A signature of another key type can fail to parse rather than verify.
    verifier
        .verify_oneshot(&found.signature, &found.payload)
        .unwrap_or(false)
}

/// The skopeo-style payload `found` should be, with the timestamp it has.
fn expected_skopeo_payload(reference: &str, signed: &str, found: &Found) -> Vec<u8> {
    let parsed: Value = serde_json::from_slice(&found.payload).unwrap();
    let timestamp = parsed["optional"]["timestamp"].as_i64().unwrap();
    sigstore::payload(
        reference,
        signed,
        Optional::Skopeo {
            creator: CREATOR.into(),
            timestamp,
        },
    )
}

#[test]
fn sign_image_stores_verifiable_signatures_and_appends() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let signed = push_image(&registry);
    let reference = format!("{}/{REPO}:v1", registry.addr());

    let first = SigningKey::generate(KeyKind::P256).unwrap();
    let sig_digest = sigstore::sign_image(&registry, REPO, &signed, &reference, &first).unwrap();
    let found = read_signatures(&registry, &signed, &sig_digest);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].payload,
        expected_skopeo_payload(&reference, &signed, &found[0])
    );
    assert!(verifies(&first.public_pem(), KeyKind::P256, &found[0]));

    // A second signer adds a layer and keeps the first one as it was.
    let second = SigningKey::generate(KeyKind::Ed25519).unwrap();
    let sig_digest2 = sigstore::sign_image(&registry, REPO, &signed, &reference, &second).unwrap();
    assert_ne!(sig_digest2, sig_digest);
    let both = read_signatures(&registry, &signed, &sig_digest2);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].descriptor, found[0].descriptor);
    assert_eq!(
        both[1].payload,
        expected_skopeo_payload(&reference, &signed, &both[1])
    );
    assert!(verifies(&first.public_pem(), KeyKind::P256, &both[0]));
    assert!(verifies(&second.public_pem(), KeyKind::Ed25519, &both[1]));
    assert!(!verifies(&first.public_pem(), KeyKind::P256, &both[1]));
    assert!(!verifies(&second.public_pem(), KeyKind::Ed25519, &both[0]));
}

#[test]
fn push_signatures_writes_one_layer_per_key_kind() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let signed = push_image(&registry);
    let reference = format!("{}/{REPO}", registry.addr());
    let payload = sigstore::payload(&reference, &signed, Optional::Null);
    let keys: Vec<SigningKey> = KeyKind::ALL
        .iter()
        .map(|&kind| SigningKey::generate(kind).unwrap())
        .collect();
    let layers: Vec<SignatureLayer> = keys
        .iter()
        .map(|key| SignatureLayer::signed(key, &payload).unwrap())
        .collect();
    let sig_digest = sigstore::push_signatures(&registry, REPO, &signed, &layers).unwrap();
    let found = read_signatures(&registry, &signed, &sig_digest);
    assert_eq!(found.len(), KeyKind::ALL.len());
    for ((key, found), layer) in keys.iter().zip(&found).zip(&layers) {
        assert_eq!(found.descriptor, layer.descriptor());
        assert_eq!(
            String::from_utf8(found.payload.clone()).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{signed}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert!(
            verifies(&key.public_pem(), key.kind(), found),
            "{:?}",
            key.kind()
        );
    }
}

#[test]
fn hostile_signature_manifests_reach_the_registry_as_built() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let signed = push_image(&registry);
    let tag_target = format!("/v2/{REPO}/manifests/{}", sigstore::signature_tag(&signed));
    let key = SigningKey::generate(KeyKind::P256).unwrap();
    let payload = sigstore::payload("x/os:v1", &signed, Optional::Null);
    let good = SignatureLayer::signed(&key, &payload).unwrap();

    let big_annotation = ManifestShape {
        annotations: vec![("pad".into(), "p".repeat(2 << 20))],
        ..ManifestShape::oci()
    };
    let huge_declared = SignatureLayer {
        declared_size: Some(1 << 40),
        ..good.clone()
    };
    let unsigned = SignatureLayer {
        signature: None,
        ..good.clone()
    };
    let cases: [(&str, ManifestShape, SignatureLayer, &str); 4] = [
        (
            "docker v2s2",
            ManifestShape::docker_v2s2(),
            good.clone(),
            DOCKER_MANIFEST,
        ),
        ("2 MiB manifest", big_annotation, good.clone(), OCI_MANIFEST),
        (
            "huge declared size",
            ManifestShape::oci(),
            huge_declared,
            OCI_MANIFEST,
        ),
        (
            "no signature annotation",
            ManifestShape::oci(),
            unsigned,
            OCI_MANIFEST,
        ),
    ];
    for (name, shape, layer, content_type) in cases {
        let layers = std::slice::from_ref(&layer);
        let digest = sigstore::push_signatures_with(&registry, REPO, &signed, layers, &shape)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let resp = get(&registry, &tag_target, content_type);
        assert_eq!(resp.header("content-type"), Some(content_type), "{name}");
        assert_eq!(sha256_digest(&resp.body), digest, "{name}");
        let manifest: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(manifest["mediaType"], shape.media_type, "{name}");
        assert_eq!(manifest["layers"][0], layer.descriptor(), "{name}");
        if name == "2 MiB manifest" {
            assert!(
                resp.body.len() > 2 << 20,
                "{name}: {} bytes",
                resp.body.len()
            );
        }
    }

    // Appending to a signature manifest of another type is refused, and
    // nothing is pushed over it.
    let docker = sigstore::push_signatures_with(
        &registry,
        REPO,
        &signed,
        std::slice::from_ref(&good),
        &ManifestShape::docker_v2s2(),
    )
    .unwrap();
    let err = sigstore::append_signature(&registry, REPO, &signed, &good).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "appending to the signature manifest {REPO}:{}: it is a {DOCKER_MANIFEST}, not an OCI image manifest",
            sigstore::signature_tag(&signed)
        )
    );
    let served = get(&registry, &tag_target, DOCKER_MANIFEST);
    assert_eq!(sha256_digest(&served.body), docker);

    // The lowest level puts any bytes under the tag.
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    registry.put_blob(REPO, b"{}").unwrap();
    let raw = sigstore::push_sig_manifest(&registry, REPO, &signed, OCI_MANIFEST, body).unwrap();
    assert_eq!(raw, sha256_digest(body));
    assert_eq!(get(&registry, &tag_target, OCI_MANIFEST).body, body);
}

fn sign_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osctl-test-sign"))
}

#[test]
fn the_binary_generates_keys_and_signs_by_tag_or_digest() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let signed = push_image(&registry);
    let dir = tempdir();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for (kind, private, public) in [
        ("p256", "p256.key", "p256.pub"),
        ("ed25519", "ed.key", "ed.pub"),
    ] {
        run(sign_bin().args([
            "generate-key",
            "--kind",
            kind,
            "--private",
            &path(private),
            "--public",
            &path(public),
        ]))
        .unwrap();
        let mode = |f: &str| std::fs::metadata(path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(private), 0o600, "{kind}");
        assert_eq!(mode(public), 0o644, "{kind}");
        let key =
            SigningKey::from_private_pem(&std::fs::read_to_string(path(private)).unwrap()).unwrap();
        assert_eq!(key.kind().name(), kind);
        assert_eq!(
            key.public_pem(),
            std::fs::read_to_string(path(public)).unwrap()
        );
    }

    // By tag, skopeo-style.
    let reference = format!("localhost:5000/{REPO}:v1");
    let out = run(sign_bin().args([
        "sign",
        "--key",
        &path("p256.key"),
        "--registry",
        &registry.addr(),
        "--image",
        &format!("{REPO}:v1"),
        "--identity",
        &reference,
    ]))
    .unwrap();
    let sig_digest = String::from_utf8(out.stdout).unwrap();
    let found = read_signatures(&registry, &signed, sig_digest.trim_end());
    assert_eq!(
        sig_digest,
        format!(
            "{}\n",
            sha256_digest(
                &get(
                    &registry,
                    &format!("/v2/{REPO}/manifests/{}", sigstore::signature_tag(&signed)),
                    OCI_MANIFEST
                )
                .body
            )
        )
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].payload,
        expected_skopeo_payload(&reference, &signed, &found[0])
    );
    let p256_pub = std::fs::read_to_string(path("p256.pub")).unwrap();
    assert!(verifies(&p256_pub, KeyKind::P256, &found[0]));

    // By digest, cosign-style: appended.
    let out = run(sign_bin().args([
        "sign",
        "--key",
        &path("ed.key"),
        "--registry",
        &registry.addr(),
        "--image",
        REPO,
        "--digest",
        &signed,
        "--identity",
        "localhost:5000/sig/os",
        "--cosign",
    ]))
    .unwrap();
    let sig_digest = String::from_utf8(out.stdout).unwrap();
    let both = read_signatures(&registry, &signed, sig_digest.trim_end());
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].descriptor, found[0].descriptor);
    assert_eq!(
        both[1].payload,
        sigstore::payload("localhost:5000/sig/os", &signed, Optional::Null)
    );
    let ed_pub = std::fs::read_to_string(path("ed.pub")).unwrap();
    assert!(verifies(&ed_pub, KeyKind::Ed25519, &both[1]));
}

#[test]
fn the_binary_refuses_bad_input_by_name() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    push_image(&registry);
    let dir = tempdir();
    let key = dir.path().join("k").to_str().unwrap().to_owned();
    let public = dir.path().join("k.pub").to_str().unwrap().to_owned();
    run(sign_bin().args([
        "generate-key",
        "--kind",
        "p256",
        "--private",
        &key,
        "--public",
        &public,
    ]))
    .unwrap();
    let key_before = std::fs::read(&key).unwrap();
    let addr = registry.addr();
    let sign = |extra: &[&str]| {
        let mut args = vec!["sign", "--key", &key, "--registry", &addr];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            [
                "generate-key",
                "--kind",
                "p521",
                "--private",
                "x",
                "--public",
                "y",
            ]
            .map(String::from)
            .to_vec(),
            r#"unknown key kind "p521": expected one of p256, p384, ed25519, rsa2048"#.into(),
        ),
        (
            [
                "generate-key",
                "--kind",
                "p256",
                "--private",
                &key,
                "--public",
                &format!("{public}2"),
            ]
            .map(String::from)
            .to_vec(),
            format!("creating {key}: File exists (os error 17)"),
        ),
        (
            [
                "generate-key",
                "--kind",
                "p256",
                "--private",
                &format!("{key}2"),
                "--public",
                &public,
            ]
            .map(String::from)
            .to_vec(),
            format!("creating {public}: File exists (os error 17)"),
        ),
        (
            sign(&["--image", "sig/os:v1"]),
            "--identity is required".into(),
        ),
        (
            sign(&["--image", "sig/os:nope", "--identity", "r"]),
            format!("resolving sig/os:nope in {addr}: manifest sig/os:nope not found (404)"),
        ),
        (
            sign(&["--image", "sig/os", "--identity", "r"]),
            "--image sig/os has no tag and there is no --digest".into(),
        ),
        (
            sign(&[
                "--image",
                "sig/os",
                "--digest",
                "sha256:abc",
                "--identity",
                "r",
            ]),
            r#"digest "sha256:abc" does not have 64 hex digits"#.into(),
        ),
        (
            sign(&["--image", "sig/os:v1", "--identity", "r", "--force"]),
            r#"unknown argument "--force""#.into(),
        ),
    ];
    for (args, expected) in cases {
        let out = run_unchecked(sign_bin().args(&args)).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            stderr.lines().next().unwrap(),
            format!("osctl-test-sign: {expected}"),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The existing key was not touched, no half key pair was left, and
    // nothing was signed.
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
    assert!(!std::path::Path::new(&format!("{public}2")).exists());
    assert!(!std::path::Path::new(&format!("{key}2")).exists());
    let sigs = registry
        .request("GET", &format!("/v2/{REPO}/tags/list"), &[], &[])
        .unwrap();
    assert_eq!(
        sigs.body_text(),
        format!(r#"{{"name":"{REPO}","tags":["v1"]}}"#) + "\n"
    );
}
