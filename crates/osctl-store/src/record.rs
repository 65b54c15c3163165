//! Image records: what osctl knows about each pulled reference.
//!
//! One JSON file per reference in `sysroot/osctl/images/<key>.json`, where
//! `<key>` is the sha256 of the canonical reference string, so any reference
//! (slashes, colons, paths) maps to a safe, fixed-length file name. The
//! record keeps the manifest and config **raw**, exactly as fetched, because
//! their digests are over those bytes; re-serialising would change them.
//!
//! A record is written last in a pull, after every object, stream and ref it
//! points to is durable: a record that exists always describes a complete
//! image.
//!
//! Every id and digest in a record becomes part of a path somewhere (the
//! image id names `images/<id>`, digests name streams), so they are checked
//! when a record is *read*, wherever from: the store's records and the copies
//! deployments keep. A record with `imageId` `../../x` does not deserialize.

use std::collections::BTreeMap;

use osctl_image::SignatureVerdict;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the record format, bumped on incompatible changes.
pub const RECORD_VERSION: u32 = 1;

/// One layer as the manifest describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    #[serde(deserialize_with = "sha256_digest")]
    pub digest: String,
    #[serde(deserialize_with = "sha256_digest")]
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// Everything osctl records about one pulled image reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub(crate) version: u32,
    pub(crate) reference: String,
    pub(crate) transport: String,
    #[serde(deserialize_with = "sha256_digest")]
    pub(crate) manifest_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index_digest: Option<String>,
    #[serde(deserialize_with = "sha256_digest")]
    pub(crate) config_digest: String,
    /// fs-verity digest (hex) of the composefs EROFS image.
    #[serde(deserialize_with = "hex_id")]
    pub(crate) image_id: String,
    pub(crate) layers: Vec<LayerRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<String>,
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// When osctl stored it (RFC 3339, UTC).
    pub(crate) pulled: String,
    pub(crate) manifest: String,
    pub(crate) config: String,
    /// What the signature policy decided at the pull that wrote this
    /// record. Absent in records written before osctl checked signatures:
    /// then nothing is known, and status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<SignatureVerdict>,
}

impl ImageRecord {
    /// The canonical reference (`registry/repo:tag`, `oci:/path:tag`, …).
    pub fn reference(&self) -> &str {
        &self.reference
    }
    pub fn transport(&self) -> &str {
        &self.transport
    }
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }
    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }
    /// The composefs image id: the EROFS image's fs-verity digest in hex.
    pub fn image_id(&self) -> &str {
        &self.image_id
    }
    pub fn layers(&self) -> &[LayerRecord] {
        &self.layers
    }
    /// Sum of the (compressed) layer sizes, as registries report image size.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
    pub fn created(&self) -> Option<&str> {
        self.created.as_deref()
    }
    pub fn architecture(&self) -> &str {
        &self.architecture
    }
    pub fn os(&self) -> &str {
        &self.os
    }
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    pub fn pulled(&self) -> &str {
        &self.pulled
    }
    /// The manifest bytes exactly as fetched.
    pub fn manifest_raw(&self) -> &str {
        &self.manifest
    }
    /// The config bytes exactly as fetched.
    pub fn config_raw(&self) -> &str {
        &self.config
    }
    /// What the signature policy decided when the image was pulled (or
    /// last found up to date); `None` for records older than that check.
    pub fn signature(&self) -> Option<&SignatureVerdict> {
        self.signature.as_ref()
    }
    /// The record's file-name key (see the module docs).
    pub fn key(&self) -> String {
        record_key(&self.reference)
    }
}

/// Length of an object, image or record id: a sha256 in hex.
pub const ID_HEX_LEN: usize = 64;

/// Whether `s` is exactly [`ID_HEX_LEN`] lowercase hex digits: the only
/// form of an id the store accepts from disk.
pub fn is_hex_id(s: &str) -> bool {
    s.len() == ID_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is `sha256:` followed by a [hex id](is_hex_id).
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex_id)
}

fn hex_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !is_hex_id(&s) {
        return Err(serde::de::Error::custom(format!(
            "'{}' is not a {ID_HEX_LEN}-digit lowercase hex id",
            s.escape_debug()
        )));
    }
    Ok(s)
}

fn sha256_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !is_sha256_digest(&s) {
        return Err(serde::de::Error::custom(format!(
            "'{}' is not a sha256:<{ID_HEX_LEN} lowercase hex digits> digest",
            s.escape_debug()
        )));
    }
    Ok(s)
}

/// sha256 hex of the canonical reference string.
pub fn record_key(reference: &str) -> String {
    hex::encode(Sha256::digest(reference.as_bytes()))
}

/// Name of the composefs refs (stream and image) that keep a record's data
/// alive through garbage collection.
pub fn gc_ref_name(key: &str) -> String {
    format!("osctl/{key}")
}
