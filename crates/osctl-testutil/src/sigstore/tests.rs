//! The signer against OpenSSL's verifier and the openssl command, using
//! only the public key PEM, and the payload bytes against the format.

use std::process::Command;

use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Verifier;

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Verifies with nothing but the SPKI PEM, the way a verifier would.
fn openssl_verifies(public_pem: &str, kind: KeyKind, payload: &[u8], signature: &[u8]) -> bool {
    let key = PKey::public_key_from_pem(public_pem.as_bytes()).unwrap();
    match kind {
        KeyKind::Ed25519 => Verifier::new_without_digest(&key)
            .unwrap()
            .verify_oneshot(signature, payload)
            .unwrap(),
        KeyKind::P256 | KeyKind::P384 | KeyKind::Rsa2048 => {
            let mut verifier = Verifier::new(MessageDigest::sha256(), &key).unwrap();
            if kind == KeyKind::Rsa2048 {
                verifier.set_rsa_padding(Padding::PKCS1).unwrap();
            }
            // A malformed ECDSA signature is an error, not `false`.
            verifier.verify_oneshot(signature, payload).unwrap_or(false)
        }
    }
}

/// The `openssl` command's verdict: a consumer of the PEM and signature
/// files outside this process.
fn openssl_cli_verifies(public_pem: &str, kind: KeyKind, payload: &[u8], signature: &[u8]) -> bool {
    let dir = crate::tempdir();
    let (key, data, sig) = (
        dir.path().join("key.pub"),
        dir.path().join("payload"),
        dir.path().join("sig"),
    );
    std::fs::write(&key, public_pem).unwrap();
    std::fs::write(&data, payload).unwrap();
    std::fs::write(&sig, signature).unwrap();
    let mut cmd = Command::new("openssl");
    match kind {
        KeyKind::Ed25519 => cmd
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&key)
            .arg("-in")
            .arg(&data)
            .arg("-sigfile")
            .arg(&sig),
        _ => cmd
            .args(["dgst", "-sha256", "-verify"])
            .arg(&key)
            .arg("-signature")
            .arg(&sig)
            .arg(&data),
    };
    crate::run_unchecked(&mut cmd).unwrap().status.success()
}

#[test]
fn payloads_are_byte_exact() {
    let cases = [
        (
            "localhost:5000/os:v2",
            Optional::Skopeo {
                creator: "osctl test".into(),
                timestamp: 1_765_000_000,
            },
            r#"{"critical":{"identity":{"docker-reference":"localhost:5000/os:v2"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"cosign container image signature"},"optional":{"creator":"osctl test","timestamp":1765000000}}"#,
        ),
        (
            "localhost:5000/os",
            Optional::Null,
            r#"{"critical":{"identity":{"docker-reference":"localhost:5000/os"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"cosign container image signature"},"optional":null}"#,
        ),
        (
            // Strings are JSON-escaped, not pasted.
            "quote\"back\\slash",
            Optional::Skopeo {
                creator: "tab\there".into(),
                timestamp: 0,
            },
            r#"{"critical":{"identity":{"docker-reference":"quote\"back\\slash"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"cosign container image signature"},"optional":{"creator":"tab\there","timestamp":0}}"#,
        ),
    ];
    for (reference, optional, expected) in cases {
        let bytes = payload(reference, DIGEST, optional);
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        // And it is the JSON it claims to be.
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            parsed["critical"]["identity"]["docker-reference"],
            reference
        );
    }
}

#[test]
fn skopeo_now_is_the_current_time() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let Optional::Skopeo { creator, timestamp } = Optional::skopeo_now() else {
        panic!("skopeo_now made a null optional");
    };
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(creator, CREATOR);
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );
}

#[test]
fn every_key_kind_signs_what_openssl_verifies_from_the_public_pem() {
    let payload = payload(
        "localhost:5000/os:v2",
        DIGEST,
        Optional::Skopeo {
            creator: "osctl test".into(),
            timestamp: 1_765_000_000,
        },
    );
    for kind in KeyKind::ALL {
        let key = SigningKey::generate(kind).unwrap();
        assert_eq!(key.kind(), kind);
        let public = key.public_pem();
        assert!(
            public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{kind:?}: {public}"
        );
        assert!(
            public.ends_with("-----END PUBLIC KEY-----\n"),
            "{kind:?}: {public}"
        );
        let private = key.private_pem();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{kind:?}"
        );

        let signature = key.sign(&payload).unwrap();
        match kind {
            KeyKind::Ed25519 => assert_eq!(signature.len(), 64),
            KeyKind::Rsa2048 => assert_eq!(signature.len(), 256),
            // DER: a SEQUENCE of two INTEGERs.
            KeyKind::P256 | KeyKind::P384 => assert_eq!(signature[0], 0x30, "{kind:?}"),
        }
        assert!(
            openssl_verifies(&public, kind, &payload, &signature),
            "{kind:?}"
        );
        assert!(
            openssl_cli_verifies(&public, kind, &payload, &signature),
            "{kind:?}"
        );

        // A payload differing by one byte does not verify: the signature is
        // over these exact bytes.
        let mut other = payload.clone();
        let last = other.len() - 2;
        other[last] ^= 1;
        assert!(
            !openssl_verifies(&public, kind, &other, &signature),
            "{kind:?}"
        );
        assert!(
            !openssl_cli_verifies(&public, kind, &other, &signature),
            "{kind:?}"
        );

        // The base64 form decodes to a signature that verifies too (ECDSA
        // and fresh Ed25519/RSA signatures of the same bytes may differ).
        let text = key.sign_base64(&payload).unwrap();
        let decoded = base64::decode_block(&text).unwrap();
        assert_eq!(base64::encode_block(&decoded), text);
        assert!(
            openssl_verifies(&public, kind, &payload, &decoded),
            "{kind:?}"
        );

        // The private PEM reads back as the same key.
        let again = SigningKey::from_private_pem(&private).unwrap();
        assert_eq!(again.kind(), kind);
        assert_eq!(again.public_pem(), public);
        let signature = again.sign(&payload).unwrap();
        assert!(
            openssl_verifies(&public, kind, &payload, &signature),
            "{kind:?}"
        );
    }
}

#[test]
fn unsupported_private_keys_are_refused_by_name() {
    let rsa1024 = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let p521 = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap()).unwrap(),
    )
    .unwrap();
    let cases = [
        (
            String::from_utf8(rsa1024.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            "RSA private key of 1024 bits: only 2048-bit RSA",
        ),
        (
            String::from_utf8(p521.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            "EC private key on curve secp521r1: only P-256 and P-384",
        ),
        (
            "not a key".to_owned(),
            "parsing the private key PEM (unencrypted PKCS#8 expected)",
        ),
    ];
    for (pem, expected) in cases {
        let err = SigningKey::from_private_pem(&pem).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn key_kinds_parse_by_name() {
    for kind in KeyKind::ALL {
        assert_eq!(kind.name().parse::<KeyKind>().unwrap(), kind);
    }
    let err = "p521".parse::<KeyKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown key kind "p521": expected one of p256, p384, ed25519, rsa2048"#
    );
}

#[test]
fn signature_tags_replace_the_colon() {
    assert_eq!(
        signature_tag(DIGEST),
        "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
    );
    assert_eq!(signature_tag("sha512:ab"), "sha512-ab.sig");
}

#[test]
fn descriptors_and_manifests_have_the_format_fields() {
    let layer = SignatureLayer {
        payload: b"{}".to_vec(),
        signature: Some("c2ln".into()),
        media_type: SIMPLESIGNING_MEDIA_TYPE.into(),
        extra_annotations: vec![("dev.sigstore.cosign/bundle".into(), "{}".into())],
        declared_size: None,
    };
    let payload_digest = crate::sha256_digest(b"{}");
    assert_eq!(
        layer.descriptor(),
        json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": 2,
            "annotations": {
                "dev.cosignproject.cosign/signature": "c2ln",
                "dev.sigstore.cosign/bundle": "{}",
            },
        })
    );
    let bare = SignatureLayer {
        signature: None,
        extra_annotations: Vec::new(),
        declared_size: Some(1 << 40),
        ..layer.clone()
    };
    assert_eq!(
        bare.descriptor(),
        json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": 1u64 << 40,
        })
    );

    let config = sig_config(std::slice::from_ref(&payload_digest));
    assert_eq!(
        serde_json::from_slice::<Value>(&config).unwrap(),
        json!({"architecture": "", "os": "", "config": {},
               "rootfs": {"type": "layers", "diff_ids": [payload_digest]}})
    );
    let config_digest = crate::sha256_digest(&config);
    let manifest = sig_manifest(
        std::slice::from_ref(&layer),
        &config_digest,
        config.len() as u64,
        &ManifestShape::oci(),
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&manifest).unwrap(),
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [layer.descriptor()],
        })
    );
    let shape = ManifestShape {
        annotations: vec![("pad".into(), "x".repeat(3))],
        ..ManifestShape::docker_v2s2()
    };
    let docker = sig_manifest(&[], &config_digest, 7, &shape);
    assert_eq!(
        serde_json::from_slice::<Value>(&docker).unwrap(),
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": 7,
            },
            "layers": [],
            "annotations": {"pad": "xxx"},
        })
    );
}
