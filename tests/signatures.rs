//! Signed images (issue 12): the machine's policy.json decides, before any
//! layer, against real signatures in a real registry. The signatures come
//! from osctl-testutil's signer (OpenSSL, written from the format's
//! description), never from osctl's own code.
//!
//! Every refusal is checked three ways: one error line naming the image and
//! the reason, the store unchanged (`pull_fails`: image list, fsck), and the
//! registry's log showing that neither the config nor a layer was fetched.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use std::process::Command;

use osctl_testutil::api::resolve_digest;
use osctl_testutil::sigstore::{
    KeyKind, ManifestShape, Optional, SignatureLayer, SigningKey, payload, push_signatures,
    push_signatures_with, sign_image,
};
use osctl_testutil::{
    BuiltImage, Entry, Fault, ImageSpec, Layer, Registry, RegistryOptions, write_index_layout,
};
use serde_json::Value;

use crate::util::machine::{Images, Machine};
use crate::util::{Osctl, POLICY_ENV, booted_cmd, push_spec};

/// A registry, a trusted key (its public half in a file) and a scratch
/// directory for policies.
struct Fixture {
    registry: Registry,
    dir: tempfile::TempDir,
    key: SigningKey,
    key_path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(KeyKind::P256).unwrap();
        let key_path = dir.path().join("trusted.pub");
        std::fs::write(&key_path, key.public_pem()).unwrap();
        Fixture {
            registry: Registry::start(RegistryOptions::default()).unwrap(),
            dir,
            key,
            key_path,
        }
    }

    /// Pushes a small image whose content names `repo_tag` (so every
    /// repository holds a different manifest).
    fn push(&self, repo_tag: &str) -> (String, BuiltImage) {
        let spec = ImageSpec::new(vec![Layer::new(vec![
            Entry::dir("usr"),
            Entry::file("usr/image", format!("{repo_tag}\n").repeat(20)),
        ])]);
        push_spec(&self.registry, repo_tag, &spec)
    }

    /// `registry/repo` as policy scopes and identities spell it.
    fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.registry.addr())
    }

    /// Writes `json` as a policy file; returns its path.
    fn policy_file(&self, name: &str, json: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    /// A policy that rejects by default and requires `requirement` for
    /// `scope` under `docker`.
    fn policy(&self, scope: &str, requirement: &str) -> PathBuf {
        self.policy_file(
            &format!("policy-{}.json", osctl_testutil::sha256_digest(scope.as_bytes())),
            &format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{scope}":[{requirement}]}}}}}}"#
            ),
        )
    }

    /// `sigstoreSigned` with the trusted key and `identity` (`""` = default).
    fn signed_by_key(&self, identity: &str) -> String {
        let identity = match identity {
            "" => String::new(),
            i => format!(r#","signedIdentity":{i}"#),
        };
        format!(
            r#"{{"type":"sigstoreSigned","keyPath":"{}"{identity}}}"#,
            self.key_path.display()
        )
    }

    fn osctl(&self, policy: &Path) -> Osctl {
        let mut osctl = Osctl::new();
        osctl.set_env(POLICY_ENV, policy);
        osctl
    }

    /// Asserts that the registry served neither the config nor a layer of
    /// `image` from `repo`.
    #[track_caller]
    fn assert_no_blob_fetched(&self, repo: &str, image: &BuiltImage) {
        let log = self.registry.log();
        for digest in std::iter::once(&image.config_digest).chain(&image.layer_digests) {
            assert!(
                !log.contains(&format!("GET /v2/{repo}/blobs/{digest}")),
                "{digest} of {repo} was fetched although the image was refused"
            );
        }
    }
}

/// `sha256:` of the key's DER SubjectPublicKeyInfo, as OpenSSL's own tool
/// writes it: how osctl must name the key.
pub(crate) fn fingerprint(public_pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(public_pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    osctl_testutil::sha256_digest(&out.stdout)
}

/// The `signature` object `image list` shows for the only image.
fn listed_signature(osctl: &Osctl) -> Value {
    let list = osctl.list();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0]["signature"].clone()
}

#[test]
fn signed_images_are_verified_with_each_key_kind_and_identity_rule() {
    let f = Fixture::new();
    // (case, key kind, inline key, identity the signature names, signedIdentity, cosign payload)
    let cases: [(&str, KeyKind, bool, &str, &str, bool); 7] = [
        ("p256", KeyKind::P256, false, "{ref}", "", false),
        ("p384", KeyKind::P384, false, "{ref}", "", false),
        ("ed25519", KeyKind::Ed25519, false, "{ref}", "", false),
        ("rsa", KeyKind::Rsa2048, true, "{ref}", "", false),
        (
            "cosign",
            KeyKind::P256,
            false,
            "{name}",
            r#"{"type":"matchRepository"}"#,
            true,
        ),
        (
            "exactrepo",
            KeyKind::P256,
            true,
            "registry.example/team/os",
            r#"{"type":"exactRepository","dockerRepository":"registry.example/team/os"}"#,
            true,
        ),
        (
            "remap",
            KeyKind::P256,
            false,
            "registry.example/remap:v1",
            r#"{"type":"remapIdentity","prefix":"{name}","signedPrefix":"registry.example/remap"}"#,
            false,
        ),
    ];
    for (case, kind, inline, identity, rule, cosign) in cases {
        let repo = format!("ok/{case}");
        let (reference, image) = f.push(&format!("{repo}:v1"));
        let fill = |s: &str| {
            s.replace("{ref}", &reference)
                .replace("{name}", &f.name(&repo))
        };
        let key = SigningKey::generate(kind).unwrap();
        let pub_path = f.dir.path().join(format!("{case}.pub"));
        std::fs::write(&pub_path, key.public_pem()).unwrap();
        let optional = if cosign {
            Optional::Null
        } else {
            Optional::skopeo_now()
        };
        let signed = payload(&fill(identity), &image.manifest_digest, optional);
        push_signatures(
            &f.registry,
            &repo,
            &image.manifest_digest,
            &[SignatureLayer::signed(&key, &signed).unwrap()],
        )
        .unwrap();
        let keys = if inline {
            let b64 = B64.encode(key.public_pem());
            format!(r#""keyData":"{b64}""#)
        } else {
            format!(r#""keyPath":"{}""#, pub_path.display())
        };
        let rule = match rule {
            "" => String::new(),
            r => format!(r#","signedIdentity":{}"#, fill(r)),
        };
        let policy = f.policy(
            &f.name(&repo),
            &format!(r#"{{"type":"sigstoreSigned",{keys}{rule}}}"#),
        );
        let osctl = f.osctl(&policy);
        let out = osctl.pull(&reference);
        let key_id = fingerprint(&pub_path);
        let kind_name = match kind {
            KeyKind::P256 => "ECDSA P-256",
            KeyKind::P384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa2048 => "RSA",
        };
        assert!(
            out.contains(&format!(
                "  signature verified ({kind_name} key {})\n",
                &key_id[..7 + 12]
            )),
            "{case}: {out}"
        );
        assert_eq!(
            listed_signature(&osctl),
            serde_json::json!({
                "policy": policy.display().to_string(),
                "scope": format!("docker scope \"{}\"", f.name(&repo)),
                "result": "verified",
                "key": key_id,
                "keyType": kind_name,
                "signedDigest": image.manifest_digest,
                "identity": fill(identity),
            }),
            "{case}"
        );
    }
}

/// Standard padded base64 (the policy's keyData form, the signature
/// annotation's).
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How one refusal case prepares the registry: given the fixture, the
/// repository, the image's reference and the image.
type Setup = fn(&Fixture, &str, &str, &BuiltImage);

#[test]
fn images_without_an_acceptable_signature_are_refused_before_any_layer() {
    let f = Fixture::new();
    let cases: Vec<(&str, Setup, &str, Vec<&str>)> = vec![
        (
            "unsigned",
            |_, _, _, _| {},
            "",
            vec!["no signature found (looked for sha256-"],
        ),
        (
            "otherkey",
            |f, repo, reference, image| {
                let key = SigningKey::generate(KeyKind::P256).unwrap();
                sign_image(&f.registry, repo, &image.manifest_digest, reference, &key).unwrap();
            },
            "",
            vec![
                "signature 1 in sha256-",
                "is not a valid signature by a trusted key (1 key tried)",
            ],
        ),
        (
            "tampered",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let mut layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                let mut raw = B64.decode(layer.signature.as_ref().unwrap()).unwrap();
                let last = raw.len() - 1;
                raw[last] ^= 0x01;
                layer.signature = Some(B64.encode(&raw));
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec!["is not a valid signature by a trusted key"],
        ),
        (
            "payloadedit",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let mut layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                // The signature stays; the payload says another tag.
                layer.payload = payload(
                    &format!("{reference}x"),
                    &image.manifest_digest,
                    Optional::Null,
                );
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec!["is not a valid signature by a trusted key"],
        ),
        (
            "copied",
            |f, repo, reference, image| {
                // A valid signature of another image, under this image's tag.
                let (_, other) = f.push(&format!("{repo}:other"));
                let signed = payload(reference, &other.manifest_digest, Optional::skopeo_now());
                let layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec!["signs sha256:", ", not sha256:"],
        ),
        (
            "otherrepo",
            |f, repo, _, image| {
                let elsewhere = format!("{}/elsewhere/os", f.registry.addr());
                let signed = payload(&elsewhere, &image.manifest_digest, Optional::Null);
                let layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            r#"{"type":"matchRepository"}"#,
            vec!["/elsewhere/os, which signedIdentity matchRepository does not accept for"],
        ),
        (
            "cosigndefault",
            |f, repo, _, image| {
                // cosign signs the repository without a tag: not enough for
                // the default rule, which wants the tag that was pulled.
                let signed = payload(&f.name(repo), &image.manifest_digest, Optional::Null);
                let layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec!["which signedIdentity matchRepoDigestOrExact does not accept for"],
        ),
        (
            "noannotation",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let mut layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                layer.signature = None;
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec![
                "signature 1 in sha256-",
                "has no dev.cosignproject.cosign/signature annotation",
            ],
        ),
        (
            "docker",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                push_signatures_with(
                    &f.registry,
                    repo,
                    &image.manifest_digest,
                    &[layer],
                    &ManifestShape::docker_v2s2(),
                )
                .unwrap();
            },
            "",
            vec![
                "media type application/vnd.docker.distribution.manifest.v2+json, not application/vnd.oci.image.manifest.v1+json",
            ],
        ),
        (
            "bigmanifest",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                let shape = ManifestShape {
                    annotations: vec![("padding".into(), "x".repeat(2 * 1024 * 1024))],
                    ..ManifestShape::oci()
                };
                push_signatures_with(&f.registry, repo, &image.manifest_digest, &[layer], &shape)
                    .unwrap();
            },
            "",
            vec!["is larger than the 1 MiB limit"],
        ),
        (
            "bigpayload",
            |f, repo, reference, image| {
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let mut layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                layer.declared_size = Some(1 << 40);
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec!["its payload of 1099511627776 bytes is over the 64 KiB limit"],
        ),
        (
            "otherattachment",
            |f, repo, reference, image| {
                // An attachment that is not a signature (another media type).
                let signed = payload(reference, &image.manifest_digest, Optional::skopeo_now());
                let mut layer = SignatureLayer::signed(&f.key, &signed).unwrap();
                layer.media_type = "application/vnd.example.sbom+json".into();
                push_signatures(&f.registry, repo, &image.manifest_digest, &[layer]).unwrap();
            },
            "",
            vec![
                "no acceptable signature: sha256-",
                ".sig holds no signature layers",
            ],
        ),
    ];
    for (case, setup, rule, needles) in cases {
        let repo = format!("bad/{case}");
        let (reference, image) = f.push(&format!("{repo}:v1"));
        setup(&f, &repo, &reference, &image);
        let policy = f.policy(&f.name(&repo), &f.signed_by_key(rule));
        let osctl = f.osctl(&policy);
        let mut all = vec![format!("image {reference}: signature refused: ")];
        all.extend(needles.iter().map(|n| n.to_string()));
        let needles: Vec<&str> = all.iter().map(String::as_str).collect();
        let line = osctl.pull_fails(&[&reference], &needles);
        assert!(
            line.starts_with(&format!(
                "error: pulling {reference}: image {reference}: signature refused: "
            )),
            "{case}: {line}"
        );
        f.assert_no_blob_fetched(&repo, &image);
    }
}

#[test]
fn the_policy_decides_by_scope_and_says_when_nothing_was_verified() {
    let f = Fixture::new();
    let (open_ref, _) = f.push("open/os:v1");
    let (closed_ref, closed) = f.push("closed/os:v1");
    let (gpg_ref, gpg) = f.push("gpg/os:v1");
    let policy = f.policy_file(
        "scoped.json",
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{
                "{open}":[{{"type":"insecureAcceptAnything"}}],
                "{gpg}":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"/etc/pki/gpg.pub"}}]}}}}}}"#,
            open = f.name("open"),
            gpg = f.name("gpg/os"),
        ),
    );
    let osctl = f.osctl(&policy);
    // The more specific scope overrides the default's reject.
    let out = osctl.pull(&open_ref);
    assert!(
        out.contains("  signature not verified (the policy accepts anything)\n"),
        "{out}"
    );
    assert_eq!(
        listed_signature(&osctl),
        serde_json::json!({
            "policy": policy.display().to_string(),
            "scope": format!("docker scope \"{}\"", f.name("open")),
            "result": "insecure",
        })
    );
    osctl.pull_fails(
        &[&closed_ref],
        &[&format!(
            "image {closed_ref}: signature refused: the policy rejects it (default of {})",
            policy.display()
        )],
    );
    f.assert_no_blob_fetched("closed/os", &closed);
    // What osctl cannot check is refused by name, never accepted.
    osctl.pull_fails(
        &[&gpg_ref],
        &[&format!(
            "signature policy {}: docker scope \"{}\": signedBy (GPG simple signing) is not supported by osctl (image {gpg_ref} refused)",
            policy.display(),
            f.name("gpg/os")
        )],
    );
    f.assert_no_blob_fetched("gpg/os", &gpg);

    // An explicit reject scope, and the transport-wide "" scope.
    let policy = f.policy_file(
        "reject.json",
        &format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"docker":{{
                "{open}":[{{"type":"reject"}}],"":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#,
            open = f.name("open/os:v1"),
        ),
    );
    f.osctl(&policy).pull_fails(
        &[&open_ref],
        &[&format!(
            "signature refused: the policy rejects it (docker scope \"{}\" of {})",
            f.name("open/os:v1"),
            policy.display()
        )],
    );
}

#[test]
fn a_policy_or_key_that_cannot_be_used_refuses_every_pull_naming_the_file() {
    let f = Fixture::new();
    let (reference, image) = f.push("cfg/os:v1");
    sign_image(
        &f.registry,
        "cfg/os",
        &image.manifest_digest,
        &reference,
        &f.key,
    )
    .unwrap();
    let missing = f.dir.path().join("missing.pub");
    let not_pem = f.policy_file("not-pem.pub", "ssh-ed25519 AAAA user@host\n");
    let cases: Vec<(PathBuf, String)> = vec![
        (
            f.policy_file(
                "broken.json",
                r#"{"default":[{"type":"insecureAcceptAnything"}],"#,
            ),
            "EOF while parsing".into(),
        ),
        (
            f.policy_file(
                "typo.json",
                r#"{"default":[{"type":"insecureAcceptAnythin"}]}"#,
            ),
            "unknown variant `insecureAcceptAnythin`".into(),
        ),
        (
            f.policy_file("empty.json", r#"{"default":[]}"#),
            "default: the requirement list is empty".into(),
        ),
        (
            f.policy(
                &f.name("cfg/os"),
                &format!(
                    r#"{{"type":"sigstoreSigned","keyPath":"{}"}}"#,
                    missing.display()
                ),
            ),
            format!("key file {}: cannot read it", missing.display()),
        ),
        (
            f.policy(
                &f.name("cfg"),
                &format!(
                    r#"{{"type":"sigstoreSigned","keyPath":"{}"}}"#,
                    not_pem.display()
                ),
            ),
            format!(
                "key file {}: no PEM \"PUBLIC KEY\" block",
                not_pem.display()
            ),
        ),
        (
            f.dir.path().join("no-such-policy.json"),
            format!("cannot read it (named by ${POLICY_ENV})"),
        ),
    ];
    for (policy, why) in cases {
        let line = f.osctl(&policy).pull_fails(
            &[&reference],
            &[&format!("signature policy {}: ", policy.display()), &why],
        );
        assert!(!line.contains("signature refused"), "{line}");
        f.assert_no_blob_fetched("cfg/os", &image);
    }
}

#[test]
fn oci_layouts_carry_no_signatures_so_the_policy_alone_decides() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("usr/x", "x\n")])]);
    osctl_testutil::write_layout(dir.path(), "v1", &spec).unwrap();
    let reference = format!("oci:{}:v1", dir.path().display());
    let strict = f.policy_file(
        "oci-strict.json",
        &format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"oci":{{"{}":[{}]}}}}}}"#,
            dir.path().display(),
            f.signed_by_key("")
        ),
    );
    f.osctl(&strict).pull_fails(
        &[&reference],
        &[&format!(
            "image {reference}: signature refused: oci scope \"{}\" requires a sigstore signature, and an OCI layout cannot carry one",
            dir.path().display()
        )],
    );
    let open = f.policy_file(
        "oci-open.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let osctl = f.osctl(&open);
    osctl.pull(&reference);
    assert_eq!(listed_signature(&osctl)["result"], "insecure");
}

#[test]
fn an_index_may_be_signed_itself_or_per_platform() {
    let f = Fixture::new();
    let host = osctl_testutil::layout::host_oci_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    for (repo, sign_index) in [("multi/index", true), ("multi/platform", false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut host_spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("arch", repo)])]);
        host_spec.architecture = host.into();
        let mut other_spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("arch", other)])]);
        other_spec.architecture = other.into();
        let built = write_index_layout(
            dir.path(),
            "multi",
            &[(other_spec, "linux", other), (host_spec, "linux", host)],
        )
        .unwrap();
        f.registry
            .push_oci_index(dir.path(), "multi", &format!("{repo}:v1"))
            .unwrap();
        let reference = f.registry.image_ref(&format!("{repo}:v1"));
        let index_digest = resolve_digest(&f.registry, repo, "v1").unwrap();
        let platform_digest = built.images[1].manifest_digest.clone();
        let signed = if sign_index {
            &index_digest
        } else {
            &platform_digest
        };
        sign_image(&f.registry, repo, signed, &reference, &f.key).unwrap();
        let policy = f.policy(&f.name(repo), &f.signed_by_key(""));
        let osctl = f.osctl(&policy);
        osctl.pull(&reference);
        let signature = listed_signature(&osctl);
        assert_eq!(signature["result"], "verified", "{repo}: {signature}");
        assert_eq!(signature["signedDigest"], signed.as_str(), "{repo}");
        assert_eq!(osctl.list()[0]["manifestDigest"], platform_digest.as_str());
        // The other platform: a signature of the index covers it too; one of
        // the host's manifest does not.
        let other_root = f.osctl(&policy);
        let other_platform = ["--platform", &format!("linux/{other}"), &reference];
        if sign_index {
            let mut args = vec!["image", "pull", "--progress", "plain"];
            args.extend(other_platform);
            other_root.ok(&args);
            assert_eq!(
                listed_signature(&other_root)["signedDigest"],
                index_digest.as_str()
            );
        } else {
            other_root.pull_fails(
                &other_platform,
                &[&format!(
                    "image {reference}: signature refused: no signature found (looked for sha256-{}.sig and sha256-{}.sig in {})",
                    &built.images[0].manifest_digest[7..],
                    &index_digest[7..],
                    f.name(repo)
                )],
            );
        }
    }
}

#[test]
fn a_pull_that_finds_the_image_stored_applies_todays_policy() {
    let f = Fixture::new();
    let (reference, image) = f.push("again/os:v1");
    let open = f.policy_file(
        "open.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let strict = f.policy(&f.name("again/os"), &f.signed_by_key(""));
    let mut osctl = f.osctl(&open);
    osctl.pull(&reference);
    assert_eq!(listed_signature(&osctl)["result"], "insecure");
    // The policy now requires a signature the image does not have: the
    // stored image stays as it was, the pull is refused.
    osctl.set_env(POLICY_ENV, &strict);
    osctl.pull_fails(&[&reference], &["signature refused: no signature found"]);
    assert_eq!(listed_signature(&osctl)["result"], "insecure");
    // Signed now: the pull finds the image up to date and records the
    // new verdict.
    sign_image(
        &f.registry,
        "again/os",
        &image.manifest_digest,
        &reference,
        &f.key,
    )
    .unwrap();
    let out = osctl.pull(&reference);
    assert!(out.starts_with("Image is up to date"), "{out}");
    assert!(
        out.contains("  signature verified (ECDSA P-256 key sha256:"),
        "{out}"
    );
    assert_eq!(listed_signature(&osctl)["result"], "verified");
    osctl.fsck_clean();
}

#[test]
fn deployments_show_their_signature_and_updates_must_be_signed_too() {
    let images = Images::new();
    let registry = &images.registry;
    let key = SigningKey::generate(KeyKind::P256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("os.pub");
    std::fs::write(&key_path, key.public_pem()).unwrap();
    let open = dir.path().join("open.json");
    std::fs::write(&open, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let strict = dir.path().join("strict.json");
    std::fs::write(
        &strict,
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/os":[{{"type":"sigstoreSigned","keyPath":"{}"}}]}}}}}}"#,
            registry.addr(),
            key_path.display()
        ),
    )
    .unwrap();
    let stable = registry.image_ref("os:stable");
    let digest_of = |tag: &str| resolve_digest(registry, "os", tag).unwrap();
    let sign = |tag: &str| sign_image(registry, "os", &digest_of(tag), &stable, &key).unwrap();

    // Deployed under a policy that accepts anything: status says so.
    registry.copy_tag("os:v1", "os:stable").unwrap();
    let mut m = Machine::new();
    m.osctl.set_env(POLICY_ENV, &open);
    m.boot(&stable);
    let st = m.status();
    crate::util::assert_valid_status(&st);
    let booted = &st["status"]["booted"];
    assert_eq!(booted["image"]["image"]["signature"], "insecure", "{st}");
    assert_eq!(st["spec"]["image"]["signature"], "insecure", "{st}");
    assert_eq!(booted["osctl"]["signature"]["result"], "insecure", "{st}");
    let human = m.run(&["status", "--format", "human"]);
    assert!(
        human.contains("Signature: not verified (the policy accepts anything)\n"),
        "{human}"
    );

    // The machine now requires signatures; the tag moves to a signed v2.
    m.osctl.set_env(POLICY_ENV, &strict);
    registry.copy_tag("os:v2", "os:stable").unwrap();
    sign("v2");
    let out = m.run(&["upgrade", "--check"]);
    assert!(
        out.starts_with(&format!(
            "Update available for {stable}: {}",
            digest_of("v2")
        )),
        "{out}"
    );
    m.run(&["upgrade"]);
    let st = m.status();
    crate::util::assert_valid_status(&st);
    let staged = &st["status"]["staged"];
    assert_eq!(
        staged["image"]["image"]["signature"], "containerPolicy",
        "{st}"
    );
    assert_eq!(st["spec"]["image"]["signature"], "containerPolicy", "{st}");
    assert_eq!(
        staged["osctl"]["signature"],
        serde_json::json!({
            "result": "verified",
            "policy": strict.display().to_string(),
            "scope": format!("docker scope \"{}/os\"", registry.addr()),
            "key": fingerprint(&key_path),
            "keyType": "ECDSA P-256",
            "signedDigest": digest_of("v2"),
            "identity": stable,
        }),
        "{st}"
    );
    // The booted deployment keeps what was known when it was pulled.
    assert_eq!(
        st["status"]["booted"]["image"]["image"]["signature"],
        "insecure"
    );
    let human = m.run(&["status", "--format", "human"]);
    assert!(
        human.contains(&format!(
            "Signature: verified (ECDSA P-256 key {})\n",
            &fingerprint(&key_path)[..7 + 12]
        )),
        "{human}"
    );
    m.run(&["finalize"]);
    m.reboot();
    assert_eq!(m.roles().staged, None, "v2 booted");

    // An unsigned v3: reported by --check, not offered, not staged.
    registry.copy_tag("os:v3", "os:stable").unwrap();
    let v3 = digest_of("v3");
    let out = booted_cmd(&m.osctl, m.booted.as_deref())
        .args(["upgrade", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "Update for {stable} refused: {v3}: no signature found (looked for sha256-{}.sig in {}/os)\n",
            &v3[7..],
            registry.addr()
        )
    );
    assert!(m.status()["status"]["booted"]["cachedUpdate"].is_null());
    m.fails(
        &["upgrade"],
        &[&format!(
            "image {stable}: signature refused: no signature found"
        )],
    );
    assert_eq!(m.roles().staged, None, "nothing staged");
}

/// A registry that fails the signature lookup (500, not 404) must refuse
/// the image even where the scope also says `insecureAcceptAnything`: only
/// "no such tag" means "no signature", and every requirement must pass.
/// Once the registry answers again, the same image verifies.
const RETRIES: u64 = 4;

#[test]
fn a_failing_signature_lookup_refuses_and_is_not_read_as_no_signature() {
    let f = Fixture::new();
    let (_, image) = f.push("lookup/os:v1");
    let proxy = osctl_testutil::DropProxy::passthrough(&f.registry.addr()).unwrap();
    let reference = proxy.image_ref("lookup/os:v1");
    sign_image(
        &f.registry,
        "lookup/os",
        &image.manifest_digest,
        &reference,
        &f.key,
    )
    .unwrap();
    let policy = f.policy_file(
        "lookup.json",
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/lookup/os":[{{"type":"insecureAcceptAnything"}},{}]}}}}}}"#,
            proxy.addr(),
            f.signed_by_key("")
        ),
    );
    let osctl = f.osctl(&policy);
    let tag = format!("{}.sig", image.manifest_digest.replacen(':', "-", 1));
    // Every attempt of one pull (osctl retries a 500 a few times).
    proxy.fail_next(&tag, Fault::Status(500), RETRIES);
    let line = osctl.pull_fails(&[&reference], &[&reference, &tag, "HTTP 500"]);
    assert!(!line.contains("no signature found"), "{line}");
    f.assert_no_blob_fetched("lookup/os", &image);
    assert!(
        proxy
            .log()
            .iter()
            .any(|r| r.target.contains(&tag) && r.status == 500),
        "the proxy never failed the signature lookup"
    );

    // The faults are used up: the registry answers again.
    let pulled = osctl.pull(&reference);
    assert!(
        pulled.contains("signature verified (ECDSA P-256 key sha256:"),
        "{pulled}"
    );
    assert_eq!(listed_signature(&osctl)["result"], "verified");
}
