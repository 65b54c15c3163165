//! A registry that lies: endless bodies, lengths and digests that do not
//! match, redirect loops, huge headers, token services that answer garbage,
//! indexes that point at themselves. Each pull fails with one line naming
//! the registry and what was wrong (or, where the lie is harmless, pulls the
//! right content), and leaves the store as it was (`Osctl::pull_fails`).
//!
//! The lies are told by `DropProxy` ([`Canned`] responses) in front of a
//! real registry that holds the honest content.

use crate::util::{Osctl, push_good, push_spec};
use osctl_image::limits::{
    MAX_ERROR_BODY_BYTES, MAX_MANIFEST_BYTES, MAX_TOKEN_RESPONSE_BYTES, human_size,
};
use osctl_testutil::{
    BuiltImage, Canned, CannedBody, DropProxy, Entry, ImageSpec, Layer, Registry, RegistryOptions,
    assert_trees_equal, expected_tree, sha256_digest,
};
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Far beyond every cap: a client that stops at its cap never sees the end.
const ENDLESS_SAFETY_NET: u64 = 256 * 1024 * 1024;

struct Setup {
    registry: Registry,
    proxy: DropProxy,
    osctl: Osctl,
    layers: Vec<Layer>,
    built: BuiltImage,
}

/// A registry with `hostile/os:v1`, a proxy in front, and a store that
/// already holds another image (so a failed pull can be seen to keep it).
fn setup() -> Setup {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let layers = vec![Layer::new(vec![
        Entry::file("etc/os-release", "ID=hostile\n"),
        Entry::file("usr/bin/tool", vec![0x42; 50_000]),
    ])];
    let (_, built) = push_spec(&registry, "hostile/os:v1", &ImageSpec::new(layers.clone()));
    let good = push_good(&registry, "hostile/base");
    let osctl = Osctl::new();
    osctl.pull(&good);
    let proxy = DropProxy::passthrough(&registry.addr()).unwrap();
    Setup {
        registry,
        proxy,
        osctl,
        layers,
        built,
    }
}

impl Setup {
    fn manifest_bytes(&self) -> Vec<u8> {
        std::fs::read(self.registry.blob_path(&self.built.manifest_digest)).unwrap()
    }
    fn reference(&self) -> String {
        self.proxy.image_ref("hostile/os:v1")
    }
}

fn endless(chunk: &[u8]) -> CannedBody {
    CannedBody::Endless {
        chunk: chunk.to_vec(),
        max_bytes: ENDLESS_SAFETY_NET,
    }
}

#[test]
fn an_endless_manifest_stops_at_the_cap() {
    let s = setup();
    let canned = Canned {
        status: 200,
        headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
        body: endless(&[b' '; 64 * 1024]),
    };
    s.proxy.serve("/v2/hostile/os/manifests/v1", canned);
    let limit = format!("larger than the {} limit", human_size(MAX_MANIFEST_BYTES));
    s.osctl.pull_fails(
        &[&s.reference()],
        &["manifest of", &s.reference(), &limit, &s.proxy.addr()],
    );
}

#[test]
fn a_manifest_declaring_more_than_the_cap_is_not_read() {
    let s = setup();
    let canned = Canned {
        status: 200,
        headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
        body: CannedBody::LyingLength {
            bytes: s.manifest_bytes(),
            declared: 1 << 40,
        },
    };
    s.proxy.serve("/v2/hostile/os/manifests/v1", canned);
    s.osctl
        .pull_fails(&[&s.reference()], &["manifest of", "4 MiB limit"]);
}

#[test]
fn an_endless_error_body_stops_at_the_cap() {
    let s = setup();
    let canned = Canned {
        status: 500,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: endless(b"error "),
    };
    s.proxy.serve("/v2/hostile/os/manifests/v1", canned);
    let limit = format!("over the {} limit", human_size(MAX_ERROR_BODY_BYTES));
    s.osctl
        .pull_fails(&[&s.reference()], &["HTTP 500", &limit, &s.proxy.addr()]);
}

#[test]
fn lying_manifest_answers() {
    let s = setup();
    let manifest = s.manifest_bytes();
    let wrong = sha256_digest(b"some other manifest");
    let path = "/v2/hostile/os/manifests/v1";
    for (case, canned, needles) in [
        (
            "a Docker-Content-Digest that the bytes do not have",
            Canned::ok(OCI_MANIFEST, &manifest).with_header("Docker-Content-Digest", &wrong),
            vec!["digest mismatch", "Docker-Content-Digest", wrong.as_str()],
        ),
        (
            "a Content-Length longer than the body",
            Canned {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: CannedBody::LyingLength {
                    bytes: manifest.clone(),
                    declared: manifest.len() as u64 + 100,
                },
            },
            vec!["transfer failed", "gave up after"],
        ),
        (
            "a Content-Length shorter than the body",
            Canned {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: CannedBody::LyingLength {
                    bytes: manifest.clone(),
                    declared: manifest.len() as u64 - 10,
                },
            },
            vec!["manifest of", "malformed"],
        ),
        (
            "a redirect loop",
            Canned::redirect(&format!("http://{}{path}", s.proxy.addr())),
            vec!["redirect"],
        ),
        (
            "a 1 MiB header",
            Canned::ok(OCI_MANIFEST, &manifest).with_header("X-Padding", &"p".repeat(1 << 20)),
            vec!["hostile/os:v1", "message head is too large"],
        ),
    ] {
        s.proxy.serve(path, canned);
        eprintln!("case: {case}");
        let mut needles = needles;
        let addr = s.proxy.addr();
        needles.push(&addr);
        s.osctl.pull_fails(&[&s.reference()], &needles);
    }
}

#[test]
fn harmless_lies_still_give_the_right_image() {
    let s = setup();
    let manifest = s.manifest_bytes();
    let path = "/v2/hostile/os/manifests/v1";
    let layer = &s.built.layer_digests[0];
    for (case, served_path, canned) in [
        // The manifest says what it is; the header does not matter.
        (
            "a wrong Content-Type",
            path.to_string(),
            Canned::ok("text/html; charset=utf-8", &manifest),
        ),
        // A blob redirected to another host (as to a storage backend).
        (
            "a blob redirected elsewhere",
            format!("/v2/hostile/os/blobs/{layer}"),
            Canned::redirect(&format!(
                "http://{}/v2/hostile/os/blobs/{layer}",
                s.registry.addr()
            )),
        ),
    ] {
        eprintln!("case: {case}");
        s.proxy.serve(&served_path, canned);
        let osctl = Osctl::new();
        osctl.pull(&s.reference());
        let item = &osctl.list()[0];
        assert_eq!(
            item["manifestDigest"],
            s.built.manifest_digest.as_str(),
            "{case}"
        );
        assert_trees_equal(
            &expected_tree(&s.layers),
            &osctl.mounted_tree(&s.reference()),
        );
    }
}

#[test]
fn a_blob_whose_length_disagrees_with_its_descriptor() {
    let s = setup();
    let layer = &s.built.layer_digests[0];
    let canned = Canned {
        status: 200,
        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
        body: CannedBody::LyingLength {
            bytes: vec![0; 10],
            declared: 10,
        },
    };
    s.proxy
        .serve(&format!("/v2/hostile/os/blobs/{layer}"), canned);
    s.osctl.pull_fails(
        &[&s.reference()],
        &[
            layer,
            "declares 10 bytes (Content-Length) but the descriptor says",
        ],
    );
}

#[test]
fn a_config_declared_huge_is_not_fetched() {
    let s = setup();
    let mut manifest: serde_json::Value = serde_json::from_slice(&s.manifest_bytes()).unwrap();
    manifest["config"]["size"] = json!(1u64 << 40);
    let bytes = manifest.to_string().into_bytes();
    s.proxy
        .serve_manifest("hostile/os", "v1", OCI_MANIFEST, &bytes);
    s.osctl.pull_fails(
        &[&s.reference()],
        &[&s.built.config_digest, "is over the 8 MiB limit"],
    );
    let log = s.proxy.log();
    assert!(
        !log.iter()
            .any(|r| r.target.contains(&s.built.config_digest)),
        "the config was never asked for: {log:#?}"
    );
}

#[test]
fn indexes_that_point_at_indexes_or_at_themselves() {
    let s = setup();
    let arch = osctl_testutil::layout::host_oci_arch();
    let entry = |digest: &str, size: usize, media_type: &str| {
        json!({"mediaType": media_type, "digest": digest, "size": size,
               "platform": {"os": "linux", "architecture": arch}})
    };
    let index = |entries: Vec<serde_json::Value>| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
            .to_string()
            .into_bytes()
    };
    // An index whose entry for this platform is itself an index.
    let inner = index(vec![entry(
        &s.built.manifest_digest,
        s.manifest_bytes().len(),
        OCI_MANIFEST,
    )]);
    let outer = index(vec![entry(&sha256_digest(&inner), inner.len(), OCI_INDEX)]);
    s.proxy
        .serve_manifest("hostile/nested", "v1", OCI_INDEX, &outer);
    s.proxy
        .serve_manifest("hostile/nested", &sha256_digest(&inner), OCI_INDEX, &inner);
    let nested = s.proxy.image_ref("hostile/nested:v1");
    s.osctl
        .pull_fails(&[&nested], &["an index nested in an index", &nested]);

    // An index whose entry is served as the index itself: a digest can never
    // name the bytes that contain it, so the loop ends at the digest check.
    let claimed = sha256_digest(b"the index itself");
    let selfish = index(vec![entry(&claimed, 100, OCI_MANIFEST)]);
    s.proxy
        .serve_manifest("hostile/self", "v1", OCI_INDEX, &selfish);
    s.proxy
        .serve_manifest("hostile/self", &claimed, OCI_INDEX, &selfish);
    let looped = s.proxy.image_ref("hostile/self:v1");
    s.osctl
        .pull_fails(&[&looped], &["digest mismatch", &claimed]);
}

/// A registry front whose manifest asks for a bearer token from the proxy's
/// own `/token`, which then answers with `token`. (osctl learns the
/// challenge from the `401` of its first request, the manifest.)
fn token_service_answering(s: &Setup, token: Canned) {
    let realm = format!("http://{}/token", s.proxy.addr());
    s.proxy.serve(
        "/v2/hostile/os/manifests/v1",
        Canned {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="{realm}",service="hostile""#),
            )],
            body: CannedBody::Bytes(b"{}".to_vec()),
        },
    );
    s.proxy.serve("/token", token);
}

/// A token service's answer, made from the proxy's address.
type TokenAnswer = fn(&str) -> Canned;

#[test]
fn token_services_that_misbehave() {
    let token_limit = format!(
        "larger than the {} limit",
        human_size(MAX_TOKEN_RESPONSE_BYTES)
    );
    let cases: [(&str, TokenAnswer, Vec<&str>); 5] = [
        (
            "garbage",
            |_| Canned::ok("application/json", b"<html>hello</html>"),
            vec!["token service", "not token JSON"],
        ),
        (
            "no token",
            |_| Canned::ok("application/json", br#"{"expires_in": 60}"#),
            vec!["token service", "holds no token"],
        ),
        (
            "endless",
            |_| Canned {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: endless(b"{\"token\":\"aaaa"),
            },
            vec!["token service", &token_limit],
        ),
        (
            "a redirect loop",
            |addr| Canned::redirect(&format!("http://{addr}/token")),
            vec!["redirect", "token"],
        ),
        (
            "always 500",
            |_| Canned {
                status: 500,
                headers: vec![],
                body: CannedBody::Bytes(b"down".to_vec()),
            },
            vec!["HTTP 500", "gave up after"],
        ),
    ];
    for (case, answer, mut needles) in cases {
        eprintln!("case: {case}");
        let s = setup();
        let addr = s.proxy.addr();
        token_service_answering(&s, answer(&addr));
        needles.push(&addr);
        s.osctl.pull_fails(&[&s.reference()], &needles);
    }
}
