//! Manifests, image indexes, platforms and layer media types.
//!
//! osctl parses manifests itself from the raw bytes it fetched, instead of
//! letting the registry client re-serialise them: the raw bytes are what the
//! manifest digest covers and what the store keeps. Both OCI and Docker v2
//! (schema 2) media types are understood; Docker's are mapped to their OCI
//! equivalents so the rest of osctl sees one vocabulary.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::FetchError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every manifest media type osctl asks a registry for.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] =
    &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// An OS/architecture pair (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI's (Go's) names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(FetchError::BadPlatform(s.to_string())),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a manifest fetch returned, before platform resolution.
pub enum ParsedManifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

/// Parses raw manifest bytes; `content_type` is the HTTP Content-Type or the
/// descriptor's media type when known. `what` names the manifest in errors.
pub fn parse_manifest(
    raw: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<ParsedManifest, FetchError> {
    let malformed = |why: String| FetchError::Malformed {
        what: what.to_string(),
        why,
        source: None,
    };
    let unparsable = |e: serde_json::Error| FetchError::Malformed {
        what: what.to_string(),
        why: String::new(),
        source: Some(Box::new(e)),
    };
    let probe: Probe = serde_json::from_slice(raw).map_err(unparsable)?;
    if probe.schema_version != Some(2) {
        return Err(malformed(format!(
            "schemaVersion is {:?}, expected 2",
            probe.schema_version
        )));
    }
    let media_type = probe
        .media_type
        .as_deref()
        .or(content_type)
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_string());
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // Some registries send a generic JSON type; OCI allows the field to be
        // absent. Tell the two shapes apart by their content.
        None | Some("application/json") => probe.manifests.is_some(),
        Some(other) => {
            return Err(FetchError::UnsupportedMediaType {
                what: what.to_string(),
                media_type: other.to_string(),
            });
        }
    };
    if is_index {
        let idx: ImageIndex = serde_json::from_slice(raw).map_err(unparsable)?;
        Ok(ParsedManifest::Index(Box::new(idx)))
    } else {
        let m: ImageManifest = serde_json::from_slice(raw).map_err(unparsable)?;
        check_config_type(&m, what)?;
        Ok(ParsedManifest::Image(Box::new(m)))
    }
}

fn check_config_type(m: &ImageManifest, what: &str) -> Result<(), FetchError> {
    match m.config().media_type() {
        MediaType::ImageConfig => Ok(()),
        MediaType::Other(s) if s == DOCKER_CONFIG => Ok(()),
        other => Err(FetchError::UnsupportedMediaType {
            what: format!("config of {what}"),
            media_type: other.to_string(),
        }),
    }
}

/// Picks the manifest for `platform` from an index.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor, FetchError> {
    let candidates = index.manifests().iter().filter(|d| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == platform.os
                && p.architecture().to_string() == platform.architecture
                && match (&platform.variant, p.variant()) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })
    });
    // Prefer an entry without a variant (or the first match) when none was asked.
    let mut best: Option<&Descriptor> = None;
    for d in candidates {
        let no_variant = d.platform().as_ref().is_some_and(|p| p.variant().is_none());
        if best.is_none() || no_variant {
            best = Some(d);
            if no_variant {
                break;
            }
        }
    }
    best.ok_or_else(|| {
        let available: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        FetchError::NoPlatform {
            what: what.to_string(),
            platform: platform.to_string(),
            available: available.join(", "),
        }
    })
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Maps a layer's media type (OCI or Docker) to its compression, or refuses
/// it. Non-distributable ("foreign") layers are accepted: osctl pulls them
/// from wherever the descriptor points, like any other blob.
pub fn layer_compression(media_type: &MediaType) -> Option<Compression> {
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Some(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Some(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Some(Compression::Zstd)
        }
        MediaType::Other(s) => match s.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        assert_eq!(
            Platform::parse("linux/arm64").unwrap().architecture,
            "arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().variant.as_deref(),
            Some("v7")
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/").is_err());
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn malformed_and_foreign_manifests_are_refused() {
        let e = parse_manifest(b"{", None, "m").err().unwrap().to_string();
        assert!(e.contains("not valid") || e.contains("malformed"), "{e}");
        let e = parse_manifest(br#"{"schemaVersion":1}"#, None, "m")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("schemaVersion"), "{e}");
        let e = parse_manifest(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing"}"#,
            None,
            "m",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("application/vnd.example.thing"), "{e}");
    }

    #[test]
    fn docker_layer_types_map() {
        let t = MediaType::Other("application/vnd.docker.image.rootfs.diff.tar.gzip".into());
        assert_eq!(layer_compression(&t), Some(Compression::Gzip));
        assert_eq!(
            layer_compression(&MediaType::ImageLayerZstd),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression(&MediaType::Other("text/plain".into())),
            None
        );
    }
}
