//! Sigstore signature attachments in a registry, and the search for one
//! that the policy accepts.
//!
//! The signatures of the manifest `sha256:<hex>` are the layers of the OCI
//! manifest tagged `sha256-<hex>.sig` in the same repository: each layer of
//! type [`SIMPLE_SIGNING_TYPE`] is one signature, its blob the signed
//! payload, its annotation [`SIGNATURE_ANNOTATION`] the base64 signature.
//! Other layers (other kinds of attachment) are skipped. One accepted
//! signature is enough; every rejected one leaves its reason, so a refusal
//! says why each signature did not count.
//!
//! Order per signature, cheapest and safest first: size caps, the
//! signature over the payload's bytes, only then the payload's JSON, its
//! digest and its identity.

use base64::Engine as _;
use oci_spec::image::{Descriptor, ImageManifest};
use tokio::io::AsyncReadExt as _;

use super::identity::{DockerRef, SignedIdentity};
use super::keys::PublicKey;
use super::{SignatureCheck, payload, strict_json};
use crate::FetchError;
use crate::limits::{
    MAX_SIGNATURE_MANIFEST_BYTES, MAX_SIGNATURE_PAYLOAD_BYTES, MAX_SIGNATURES, human_size,
};
use crate::source::{Fetched, RegistrySource};
use crate::verify::sha256_digest;

/// The media type of a layer that is one signature.
pub(crate) const SIMPLE_SIGNING_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation holding the base64 signature.
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The only manifest type a signature attachment may have (what skopeo and
/// cosign write, and what the containers tools accept).
const OCI_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// How many reasons a refusal lists before "and N more".
const REASONS_SHOWN: usize = 3;

/// `sha256:abc…` → `sha256-abc….sig`.
pub(crate) fn attachment_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Looks for a signature of the fetched manifest (then of its index) that
/// one of `keys` made and whose payload names that digest and an identity
/// `rule` accepts for `intended`. `Ok(Err(reason))` is a refusal; `Err` a
/// registry that could not be asked.
pub(super) async fn find_accepted(
    registry: &RegistrySource,
    fetched: &Fetched,
    keys: &[PublicKey],
    rule: &SignedIdentity,
    intended: &DockerRef,
) -> Result<Result<SignatureCheck, String>, FetchError> {
    let mut signed: Vec<&str> = vec![fetched.digest()];
    signed.extend(fetched.index_digest());
    let mut looked = Vec::new();
    let mut reasons = Vec::new();
    let mut found = false;
    for digest in signed {
        let tag = attachment_tag(digest);
        looked.push(tag.clone());
        let raw = match registry
            .manifest_if_any(&tag, MAX_SIGNATURE_MANIFEST_BYTES)
            .await
        {
            Ok(Some(raw)) => raw,
            Ok(None) => continue,
            // Refusals, not failures: the registry answered, with too much.
            Err(e @ FetchError::TooLarge { .. }) => {
                found = true;
                reasons.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        found = true;
        let layers = match signature_layers(&raw.0, raw.1.as_deref()) {
            Ok(layers) => layers,
            Err(why) => {
                reasons.push(format!("{tag}: {why}"));
                continue;
            }
        };
        if layers.is_empty() {
            reasons.push(format!("{tag} holds no signature layers"));
        }
        for (n, layer) in layers.iter().enumerate() {
            let what = format!("signature {} in {tag}", n + 1);
            match check_one(registry, layer, &what, digest, keys, rule, intended).await {
                Ok(check) => return Ok(Ok(check)),
                Err(why) => reasons.push(why),
            }
        }
    }
    if !found {
        return Ok(Err(format!(
            "no signature found (looked for {} in {})",
            looked.join(" and "),
            registry.repository_name()
        )));
    }
    Ok(Err(summarize(reasons)))
}

/// The simple-signing layers of an attachment manifest.
fn signature_layers(raw: &[u8], content_type: Option<&str>) -> Result<Vec<Descriptor>, String> {
    let manifest: ImageManifest =
        strict_json::from_slice(raw).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    let declared = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()));
    if declared.as_deref() != Some(OCI_MANIFEST_TYPE) {
        return Err(format!(
            "media type {}, not {OCI_MANIFEST_TYPE}",
            declared.as_deref().unwrap_or("(none)")
        ));
    }
    let layers: Vec<Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| l.media_type().to_string() == SIMPLE_SIGNING_TYPE)
        .cloned()
        .collect();
    if layers.len() > MAX_SIGNATURES {
        return Err(format!(
            "{} signatures, more than the {MAX_SIGNATURES} osctl examines",
            layers.len()
        ));
    }
    Ok(layers)
}

/// Checks one signature; `Err` is why it does not count.
async fn check_one(
    registry: &RegistrySource,
    layer: &Descriptor,
    what: &str,
    digest: &str,
    keys: &[PublicKey],
    rule: &SignedIdentity,
    intended: &DockerRef,
) -> Result<SignatureCheck, String> {
    if layer.size() > MAX_SIGNATURE_PAYLOAD_BYTES {
        return Err(format!(
            "{what}: its payload of {} bytes is over the {} limit",
            layer.size(),
            human_size(MAX_SIGNATURE_PAYLOAD_BYTES)
        ));
    }
    let encoded = layer
        .annotations()
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .ok_or_else(|| format!("{what} has no {SIGNATURE_ANNOTATION} annotation"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("{what}: its {SIGNATURE_ANNOTATION} is not base64 ({e})"))?;
    let payload_bytes = fetch_payload(registry, layer, what)
        .await
        .map_err(|e| format!("{what}: {}", crate::error_chain(&e)))?;
    let key = keys
        .iter()
        .find(|k| k.verifies(&payload_bytes, &signature))
        .ok_or_else(|| {
            format!(
                "{what} is not a valid signature by a trusted key ({} key{} tried)",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            )
        })?;
    let payload = payload::parse(&payload_bytes)
        .map_err(|why| format!("{what}: its payload is malformed: {why}"))?;
    if payload.manifest_digest != digest {
        return Err(format!(
            "{what} signs {}, not {digest}",
            payload.manifest_digest
        ));
    }
    let signed = DockerRef::parse(&payload.docker_reference).map_err(|e| {
        format!(
            "{what}: its identity \"{}\" is not a docker reference: {e}",
            payload.docker_reference
        )
    })?;
    if !rule.accepts(intended, &signed) {
        return Err(format!(
            "{what} names {signed}, which signedIdentity {} does not accept for {intended}",
            rule.name()
        ));
    }
    Ok(SignatureCheck::Verified {
        key: key.fingerprint().to_string(),
        key_type: key.kind().to_string(),
        signed_digest: digest.to_string(),
        identity: payload.docker_reference,
    })
}

/// Downloads a payload blob whose declared size is within the cap, and
/// checks its digest.
async fn fetch_payload(
    registry: &RegistrySource,
    layer: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    let mut reader = registry.open_blob(layer).await?;
    let mut buf = Vec::with_capacity(layer.size() as usize);
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| FetchError::Blob {
            what: format!("payload of {what}"),
            why: String::new(),
            source: Some(Box::new(e)),
        })?;
    let actual = sha256_digest(&buf);
    if actual != layer.digest().to_string() {
        return Err(FetchError::Blob {
            what: format!("payload of {what}"),
            why: format!("digest mismatch: content hashes to {actual}"),
            source: None,
        });
    }
    Ok(buf)
}

/// "no acceptable signature: r1; r2; r3 (and N more)". Reasons may quote
/// the registry's `.sig` manifest; its control characters are escaped so
/// that a hostile registry cannot break the line or send terminal escapes.
fn summarize(reasons: Vec<String>) -> String {
    let mut reasons: Vec<String> = reasons
        .into_iter()
        .map(|r| {
            r.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    reasons.dedup();
    let more = reasons.len().saturating_sub(REASONS_SHOWN);
    reasons.truncate(REASONS_SHOWN);
    let mut out = format!("no acceptable signature: {}", reasons.join("; "));
    if more > 0 {
        out.push_str(&format!(" (and {more} more)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_tags_replace_the_first_colon() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            attachment_tag(d),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
    }

    #[test]
    fn refusals_list_a_few_distinct_reasons() {
        let r = |v: &[&str]| summarize(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(r(&["a"]), "no acceptable signature: a");
        assert_eq!(r(&["a", "a", "b"]), "no acceptable signature: a; b");
        assert_eq!(
            r(&["a", "b", "c", "d", "e"]),
            "no acceptable signature: a; b; c (and 2 more)"
        );
    }

    /// The `.sig` manifest is the registry's text, not the signer's: what a
    /// refusal quotes from it must not carry control characters (a newline
    /// breaks the one-line error, ESC sequences rewrite the admin's
    /// terminal or forge log lines).
    #[test]
    fn refusals_quote_no_control_characters_from_the_registry() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let hostile = [
            // mediaType with a newline and an ESC sequence
            format!(
                r#"{{"schemaVersion":2,"mediaType":"x\n\u001b[2Kverified","config":{{"mediaType":"a","digest":"{digest}","size":1}},"layers":[]}}"#
            ),
            // a key repeated, the key holding the escape
            r#"{"\u001b[2K\rok":1,"\u001b[2K\rok":2}"#.to_string(),
        ];
        for text in hostile {
            let why = signature_layers(text.as_bytes(), None).unwrap_err();
            let shown = summarize(vec![why]);
            assert!(
                !shown.chars().any(char::is_control),
                "control characters reach the refusal: {shown:?}"
            );
        }
    }

    #[test]
    fn only_oci_manifests_hold_signatures() {
        let layer = |t: &str| {
            format!(
                r#"{{"mediaType":"{t}","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":10}}"#
            )
        };
        let manifest = |media: &str, layers: &[String]| {
            format!(
                r#"{{"schemaVersion":2,{media}"config":{},"layers":[{}]}}"#,
                layer("application/vnd.oci.image.config.v1+json"),
                layers.join(",")
            )
        };
        let oci = format!(r#""mediaType":"{OCI_MANIFEST_TYPE}","#);
        let docker = r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json","#;
        let two = [layer(SIMPLE_SIGNING_TYPE), layer("application/x-other")];
        assert_eq!(
            signature_layers(manifest(&oci, &two).as_bytes(), None)
                .unwrap()
                .len(),
            1
        );
        // No mediaType field: the Content-Type decides.
        assert_eq!(
            signature_layers(manifest("", &two).as_bytes(), Some(OCI_MANIFEST_TYPE))
                .unwrap()
                .len(),
            1
        );
        for (text, ct, want) in [
            (
                manifest(docker, &two),
                None,
                "media type application/vnd.docker.distribution.manifest.v2+json",
            ),
            (manifest("", &two), None, "media type (none)"),
            ("{}".to_string(), None, "not an OCI image manifest"),
            (
                manifest(&oci, &vec![layer(SIMPLE_SIGNING_TYPE); MAX_SIGNATURES + 1]),
                None,
                "65 signatures",
            ),
        ] {
            let err = signature_layers(text.as_bytes(), ct).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
