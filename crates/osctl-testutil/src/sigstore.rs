//! A signer for tests: sigstore signatures in cosign's "classic" layout,
//! attached to images in a registry.
//!
//! # Why it exists and how it was written
//!
//! osctl verifies image signatures; its tests need signed images, and
//! nothing on this machine can make them (Debian builds skopeo without
//! sigstore signing, and there is no cosign). This module was written from
//! the public description of the format only, independently of osctl's
//! verifier and with a different crypto library (OpenSSL here, ring there),
//! so that a misreading of the format cannot hide in both sides at once.
//!
//! # The format, as implemented
//!
//! * **Where.** Signatures of the manifest `sha256:<hex>` are an image of
//!   their own in the same repository, tagged `sha256-<hex>.sig`
//!   ([`signature_tag`]).
//! * **The signature image.** An OCI image manifest (schemaVersion 2, its
//!   `mediaType` field set) whose config is a small OCI config listing the
//!   payload digests as diff_ids (verifiers do not read it) and which has one
//!   layer per signature.
//! * **One signature.** The layer's media type is
//!   `application/vnd.dev.cosign.simplesigning.v1+json`; its blob is the
//!   payload itself; the signature is carried in the layer descriptor's
//!   annotation `dev.cosignproject.cosign/signature`, standard padded base64.
//! * **The payload** ([`payload`]) is compact JSON with sorted keys: under
//!   `critical`, the `identity.docker-reference` the signer vouches for, the
//!   `image.docker-manifest-digest` and the fixed `type`; under `optional`,
//!   skopeo writes a creator and a Unix timestamp while cosign writes `null`
//!   ([`Optional`]). skopeo's docker-reference carries the tag
//!   (`host/os:v2`), cosign's only the repository (`host/os`); the caller
//!   passes whichever it wants.
//! * **The signature** covers the exact payload bytes, always with SHA-256:
//!   ECDSA P-256 (what `skopeo generate-sigstore-key` makes) or P-384 as a DER
//!   `ECDSA-Sig-Value`, Ed25519 over the payload itself, RSA as PKCS#1 v1.5.
//!   Public keys are SPKI PEM (`BEGIN PUBLIC KEY`), private keys PKCS#8 PEM.
//! * **Appending.** Signing an image that already has signatures adds a layer
//!   to the existing signature manifest and keeps the others, as
//!   containers/image does ([`append_signature`], [`sign_image`]).
//!
//! Tests of a verifier also need shapes no signer writes; the lower levels
//! allow them: [`SignatureLayer`] fields (no annotation, another media type,
//! a lying declared size), [`ManifestShape`] (Docker media types, huge
//! annotations) and [`push_sig_manifest`] (any bytes under the `.sig` tag).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use openssl::base64;
use openssl::ec::{Asn1Flag, EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Signer;
use serde_json::{Map, Value, json};

use crate::api::{self, RegistryApi};
use crate::layout::{DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};

/// Media type of a signature layer (its blob is the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// Suffix of the tag signatures live under.
pub const SIGNATURE_TAG_SUFFIX: &str = ".sig";
/// `optional.creator` of skopeo-style payloads made here.
pub const CREATOR: &str = "osctl-testutil sigstore signer";
/// RSA modulus size of [`KeyKind::Rsa2048`].
const RSA_BITS: u32 = 2048;

/// The key types sigstore signatures are made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256, what `skopeo generate-sigstore-key` makes.
    P256,
    /// ECDSA on NIST P-384 (still signing a SHA-256 digest).
    P384,
    Ed25519,
    /// RSA, 2048-bit modulus, PKCS#1 v1.5 signatures.
    Rsa2048,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::Ed25519,
        KeyKind::Rsa2048,
    ];

    /// The lower-case name `osctl-test-sign --kind` takes.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Rsa2048 => "rsa2048",
        }
    }
}

impl std::str::FromStr for KeyKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<KeyKind> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| {
                let names: Vec<_> = KeyKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown key kind {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A private key that signs payloads.
#[derive(Clone)]
pub struct SigningKey {
    kind: KeyKind,
    key: PKey<Private>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key of `kind`.
    pub fn generate(kind: KeyKind) -> Result<SigningKey> {
        let key = match kind {
            KeyKind::P256 => ec_key(Nid::X9_62_PRIME256V1)?,
            KeyKind::P384 => ec_key(Nid::SECP384R1)?,
            KeyKind::Ed25519 => PKey::generate_ed25519()?,
            KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(RSA_BITS)?)?,
        };
        Ok(SigningKey { kind, key })
    }

    /// Reads a private key PEM (PKCS#8, or the traditional EC/RSA forms) and
    /// works out its kind; keys of any other kind are refused.
    pub fn from_private_pem(pem: &str) -> Result<SigningKey> {
        let key = PKey::private_key_from_pem(pem.as_bytes())
            .context("parsing the private key PEM (unencrypted PKCS#8 expected)")?;
        let kind = match key.id() {
            Id::EC => {
                let curve = key.ec_key()?.group().curve_name();
                match curve {
                    Some(Nid::X9_62_PRIME256V1) => KeyKind::P256,
                    Some(Nid::SECP384R1) => KeyKind::P384,
                    other => bail!(
                        "EC private key on curve {}: only P-256 and P-384",
                        other
                            .and_then(|nid| nid.short_name().ok())
                            .unwrap_or("(unnamed)")
                    ),
                }
            }
            Id::ED25519 => KeyKind::Ed25519,
            Id::RSA if key.bits() == RSA_BITS => KeyKind::Rsa2048,
            Id::RSA => bail!(
                "RSA private key of {} bits: only {RSA_BITS}-bit RSA",
                key.bits()
            ),
            other => bail!("private key of type {other:?}: not a sigstore key type"),
        };
        Ok(SigningKey { kind, key })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> String {
        let pem = (self.key.public_key_to_pem()).expect("encoding a public key we hold");
        String::from_utf8(pem).expect("PEM is ASCII")
    }

    /// The private key, unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn private_pem(&self) -> String {
        let pem = (self.key.private_key_to_pem_pkcs8()).expect("encoding a private key we hold");
        String::from_utf8(pem).expect("PEM is ASCII")
    }

    /// The raw signature over `payload` (see the module docs for the scheme
    /// per key kind): DER for ECDSA, 64 bytes for Ed25519, 256 for RSA.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let signature = match self.kind {
            // Ed25519 hashes internally; there is no separate digest step.
            KeyKind::Ed25519 => Signer::new_without_digest(&self.key)?.sign_oneshot_to_vec(payload),
            KeyKind::P256 | KeyKind::P384 => {
                Signer::new(MessageDigest::sha256(), &self.key)?.sign_oneshot_to_vec(payload)
            }
            KeyKind::Rsa2048 => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
                // The default, stated: PSS would also verify with OpenSSL
                // but is not what sigstore RSA keys sign with.
                signer.set_rsa_padding(Padding::PKCS1)?;
                signer.sign_oneshot_to_vec(payload)
            }
        };
        signature.with_context(|| format!("signing with a {} key", self.kind.name()))
    }

    /// [`SigningKey::sign`], as the base64 text the annotation carries.
    pub fn sign_base64(&self, payload: &[u8]) -> Result<String> {
        Ok(base64::encode_block(&self.sign(payload)?))
    }
}

fn ec_key(curve: Nid) -> Result<PKey<Private>> {
    let mut group = EcGroup::from_curve_name(curve)?;
    // SPKI names the curve by OID, never spells out its parameters: the
    // form every verifier accepts (explicit parameters are often refused).
    group.set_asn1_flag(Asn1Flag::NAMED_CURVE);
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

/// The `optional` part of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Optional {
    /// What containers/image (skopeo, podman) writes.
    Skopeo { creator: String, timestamp: i64 },
    /// What cosign writes: `"optional":null`.
    Null,
}

impl Optional {
    /// Skopeo-style with [`CREATOR`] and the current time.
    pub fn skopeo_now() -> Optional {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        Optional::Skopeo {
            creator: CREATOR.into(),
            timestamp: i64::try_from(timestamp).expect("seconds since 1970 fit in i64"),
        }
    }
}

/// The payload a signature covers, byte for byte as containers/image writes
/// it: compact JSON, keys in sorted order. Written out by hand rather than
/// through a JSON map, whose key order would depend on serde_json features.
pub fn payload(docker_reference: &str, manifest_digest: &str, optional: Optional) -> Vec<u8> {
    let string = |s: &str| Value::String(s.to_owned()).to_string();
    let optional = match optional {
        Optional::Skopeo { creator, timestamp } => format!(
            "{{\"creator\":{},\"timestamp\":{timestamp}}}",
            string(&creator)
        ),
        Optional::Null => "null".to_owned(),
    };
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\
         \"image\":{{\"docker-manifest-digest\":{}}},\"type\":{}}},\
         \"optional\":{optional}}}",
        string(docker_reference),
        string(manifest_digest),
        string(SIGNATURE_TYPE),
    )
    .into_bytes()
}

/// The tag signatures of `digest` (`sha256:<hex>`) live under:
/// `sha256-<hex>.sig`. Panics on a digest without an algorithm, so a typo in
/// a test cannot quietly sign under a tag no verifier looks at.
pub fn signature_tag(digest: &str) -> String {
    let (algorithm, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("digest {digest:?} is not <algorithm>:<hex>"));
    format!("{algorithm}-{hex}{SIGNATURE_TAG_SUFFIX}")
}

/// One layer of a signature manifest: a payload, and what its descriptor says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The blob: what the signature covers.
    pub payload: Vec<u8>,
    /// The annotation's value (base64); `None` leaves the annotation out.
    pub signature: Option<String>,
    pub media_type: String,
    /// More descriptor annotations, after the signature's.
    pub extra_annotations: Vec<(String, String)>,
    /// The size the descriptor declares; `None` is the payload's real size.
    pub declared_size: Option<u64>,
}

impl SignatureLayer {
    /// A well-formed layer: `payload` signed by `key`.
    pub fn signed(key: &SigningKey, payload: &[u8]) -> Result<SignatureLayer> {
        Ok(SignatureLayer {
            payload: payload.to_vec(),
            signature: Some(key.sign_base64(payload)?),
            media_type: SIMPLESIGNING_MEDIA_TYPE.into(),
            extra_annotations: Vec::new(),
            declared_size: None,
        })
    }

    pub fn digest(&self) -> String {
        crate::sha256_digest(&self.payload)
    }

    /// The layer's descriptor in the signature manifest.
    pub fn descriptor(&self) -> Value {
        let size = (self.declared_size).unwrap_or(self.payload.len() as u64);
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": size,
        });
        let mut annotations = Map::new();
        if let Some(signature) = &self.signature {
            annotations.insert(SIGNATURE_ANNOTATION.into(), signature.clone().into());
        }
        for (k, v) in &self.extra_annotations {
            annotations.insert(k.clone(), v.clone().into());
        }
        if !annotations.is_empty() {
            descriptor["annotations"] = Value::Object(annotations);
        }
        descriptor
    }
}

/// The manifest-level choices of a signature manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestShape {
    /// The `mediaType` field, also the Content-Type it is pushed with.
    pub media_type: String,
    pub config_media_type: String,
    /// Manifest annotations (none in what signers write).
    pub annotations: Vec<(String, String)>,
}

impl ManifestShape {
    /// What signers write: an OCI image manifest with an OCI config.
    pub fn oci() -> ManifestShape {
        ManifestShape {
            media_type: OCI_MANIFEST.into(),
            config_media_type: OCI_CONFIG.into(),
            annotations: Vec::new(),
        }
    }

    /// The same layers in a Docker schema 2 manifest, which the format does
    /// not use.
    pub fn docker_v2s2() -> ManifestShape {
        ManifestShape {
            media_type: DOCKER_MANIFEST.into(),
            config_media_type: DOCKER_CONFIG.into(),
            annotations: Vec::new(),
        }
    }
}

impl Default for ManifestShape {
    fn default() -> ManifestShape {
        ManifestShape::oci()
    }
}

/// The config blob of a signature image: empty platform, the payload
/// digests as diff_ids (the blobs are uncompressed, so the two are equal).
pub fn sig_config(layer_digests: &[String]) -> Vec<u8> {
    let config = json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": layer_digests },
    });
    serde_json::to_vec(&config).expect("serialising a JSON value")
}

/// The signature manifest for `layers` (in order) and a config blob.
pub fn sig_manifest(
    layers: &[SignatureLayer],
    config_digest: &str,
    config_size: u64,
    shape: &ManifestShape,
) -> Vec<u8> {
    let descriptors = layers.iter().map(SignatureLayer::descriptor).collect();
    manifest_from_descriptors(descriptors, config_digest, config_size, shape)
}

fn manifest_from_descriptors(
    layers: Vec<Value>,
    config_digest: &str,
    config_size: u64,
    shape: &ManifestShape,
) -> Vec<u8> {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": shape.media_type,
        "config": {
            "mediaType": shape.config_media_type,
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    });
    if !shape.annotations.is_empty() {
        let annotations: Map<String, Value> = (shape.annotations.iter())
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        manifest["annotations"] = Value::Object(annotations);
    }
    serde_json::to_vec(&manifest).expect("serialising a JSON value")
}

/// Uploads the payloads of `layers` and a config listing `layer_digests`;
/// returns the config's digest and size.
fn upload_blobs<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    layers: &[SignatureLayer],
    layer_digests: &[String],
) -> Result<(String, u64)> {
    for layer in layers {
        api::put_blob(registry, repo, &layer.payload)
            .with_context(|| format!("uploading signature payload to {repo}"))?;
    }
    let config = sig_config(layer_digests);
    let config_digest = api::put_blob(registry, repo, &config)
        .with_context(|| format!("uploading signature config to {repo}"))?;
    Ok((config_digest, config.len() as u64))
}

/// Replaces the signatures of `signed_digest` in `repo` with `layers`, in an
/// OCI manifest; returns the signature manifest's digest.
pub fn push_signatures<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    signed_digest: &str,
    layers: &[SignatureLayer],
) -> Result<String> {
    push_signatures_with(registry, repo, signed_digest, layers, &ManifestShape::oci())
}

/// [`push_signatures`] with another manifest shape.
pub fn push_signatures_with<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    signed_digest: &str,
    layers: &[SignatureLayer],
    shape: &ManifestShape,
) -> Result<String> {
    let digests: Vec<String> = layers.iter().map(SignatureLayer::digest).collect();
    let (config_digest, config_size) = upload_blobs(registry, repo, layers, &digests)?;
    let body = sig_manifest(layers, &config_digest, config_size, shape);
    push_sig_manifest(registry, repo, signed_digest, &shape.media_type, &body)
}

/// PUTs `body` as the signature manifest of `signed_digest`, as is; returns
/// its digest. The blobs it names must be uploaded already (the registry
/// checks that); [`crate::api::put_blob`] does it.
pub fn push_sig_manifest<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    signed_digest: &str,
    content_type: &str,
    body: &[u8],
) -> Result<String> {
    let tag = signature_tag(signed_digest);
    api::put_manifest(registry, repo, &tag, content_type, body)
        .with_context(|| format!("pushing the signature manifest {repo}:{tag}"))
}

/// Adds `layer` to the signatures of `signed_digest` in `repo`: the layers
/// of an existing signature manifest are kept (their blobs are already
/// there) and `layer` goes last. Returns the new signature manifest digest.
/// `signed_digest` must be `sha256:<64 hex>`.
/// An existing signature manifest that is not an OCI image manifest is
/// refused rather than overwritten.
pub fn append_signature<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    signed_digest: &str,
    layer: &SignatureLayer,
) -> Result<String> {
    crate::digest_hex(signed_digest)?;
    let tag = signature_tag(signed_digest);
    let mut descriptors = match api::get_manifest(registry, repo, &tag)? {
        None => Vec::new(),
        Some(existing) => existing_layers(&existing)
            .with_context(|| format!("appending to the signature manifest {repo}:{tag}"))?,
    };
    descriptors.push(layer.descriptor());
    let digests = (descriptors.iter())
        .map(|d| d["digest"].as_str().map(String::from))
        .collect::<Option<Vec<String>>>()
        .with_context(|| format!("a layer of {repo}:{tag} has no string digest"))?;
    let (config_digest, config_size) =
        upload_blobs(registry, repo, std::slice::from_ref(layer), &digests)?;
    let shape = ManifestShape::oci();
    let body = manifest_from_descriptors(descriptors, &config_digest, config_size, &shape);
    push_sig_manifest(registry, repo, signed_digest, &shape.media_type, &body)
}

fn existing_layers(existing: &api::FetchedManifest) -> Result<Vec<Value>> {
    // The registry may add parameters (`; charset=...`); compare the type.
    let content_type = existing.content_type.split(';').next().unwrap_or("").trim();
    if content_type != OCI_MANIFEST {
        bail!("it is a {content_type}, not an OCI image manifest");
    }
    let manifest: Value = serde_json::from_slice(&existing.body).context("its body is not JSON")?;
    match manifest.get("layers") {
        Some(Value::Array(layers)) => Ok(layers.clone()),
        _ => bail!("it has no layers array"),
    }
}

/// Signs `manifest_digest` in `repo` the way skopeo does (payload with the
/// given docker-reference, creator and current time; one layer), appending
/// to any signatures already there. Returns the signature manifest digest.
pub fn sign_image<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    manifest_digest: &str,
    docker_reference: &str,
    key: &SigningKey,
) -> Result<String> {
    let payload = payload(docker_reference, manifest_digest, Optional::skopeo_now());
    let layer = SignatureLayer::signed(key, &payload)?;
    append_signature(registry, repo, manifest_digest, &layer)
}

#[cfg(test)]
mod tests;
