//! Pulling from an OCI distribution registry.
//!
//! osctl speaks the few distribution calls a pull needs itself (manifests,
//! blobs, the token service) on `reqwest` with a rustls set-up
//! of its own, rather than through a registry client library, because a pull
//! must hold against a registry that misbehaves:
//! - everything read whole is capped ([`crate::limits`]), so an endless
//!   manifest, token or error body fails at the cap instead of filling memory;
//! - failed GETs are retried a bounded number of times, and a broken blob
//!   download resumes with a `Range` request ([`blob`]);
//! - a machine without a CA bundle gets an error, not a panic ([`tls`]).
//!
//! Manifests are fetched raw and parsed here (`manifest.rs`): the raw bytes
//! are what the digest covers and what the store keeps. A manifest's digest
//! is always computed from its bytes and checked against the reference's
//! digest, or against `Docker-Content-Digest` when the registry sends one.

mod authorize;
mod blob;
mod challenge;
mod client;
mod probe;
mod redirect;
mod response;
mod retry;
mod scheme;
mod tls;

use std::sync::Arc;

use oci_client::Reference;
use oci_spec::image::Descriptor;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::{BlobReader, FetchOptions, Fetched};
use crate::FetchError;
use crate::auth;
use crate::limits::MAX_MANIFEST_BYTES;
use crate::manifest::{self, ACCEPTED_MANIFEST_TYPES, ParsedManifest, Platform};
use crate::registries;
use crate::verify::{DigestReader, Expected, sha256_digest};
use client::RegistryClient;

pub struct RegistrySource {
    client: Arc<RegistryClient>,
    reference: Reference,
    platform: Platform,
}

impl RegistrySource {
    pub async fn open(reference: Reference, opts: &FetchOptions) -> Result<Self, FetchError> {
        let registry = reference.resolve_registry().to_string();
        if reqwest::Url::parse(&format!("https://{registry}/v2/")).is_err() {
            return Err(FetchError::BadReference {
                reference: reference.whole(),
                why: format!("'{registry}' is not a valid registry host[:port]"),
            });
        }
        let policy = registries::policy_for(&registry, opts.tls_verify, opts.cert_dir.as_deref())?;
        let lookup = auth::lookup(opts.authfile.as_deref(), &registry, reference.repository())?;
        tracing::debug!(%registry, allow_http = policy.allow_http, insecure = policy.insecure, ca_files = ?policy.ca_files, "registry policy");
        let client = RegistryClient::new(&registry, reference.repository(), &policy, lookup)?;
        Ok(RegistrySource {
            client: Arc::new(client),
            reference,
            platform: opts.platform.clone().unwrap_or_else(Platform::host),
        })
    }

    pub fn registry(&self) -> &str {
        self.client.registry()
    }

    /// The raw manifest `r` names, its digest and its Content-Type.
    async fn fetch_manifest(
        &self,
        r: &Reference,
    ) -> Result<(Vec<u8>, String, Option<String>), FetchError> {
        let name = r.whole();
        let tag_or_digest = r
            .digest()
            .or(r.tag())
            .unwrap_or(crate::reference::DEFAULT_TAG);
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&ACCEPTED_MANIFEST_TYPES.join(", "))
                .expect("media types are header-safe"),
        );
        let path = self.client.path("manifests", tag_or_digest);
        let (answer_headers, raw) = self
            .client
            .get_whole(
                &path,
                &headers,
                (&name, &format!("manifest of {name}")),
                MAX_MANIFEST_BYTES,
            )
            .await?;
        let digest = sha256_digest(&raw);
        let mismatch = |claimed: &str, by: &str| FetchError::Blob {
            what: format!("manifest of {name}"),
            source: None,
            why: format!(
                "digest mismatch: {by} says {claimed} but the content registry {} served hashes to {digest}",
                self.registry()
            ),
        };
        if let Some(wanted) = r.digest() {
            if wanted != digest {
                return Err(mismatch(wanted, "the reference"));
            }
        } else if let Some(claimed) = answer_headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            // Only a sha256 claim can be compared; other algorithms are
            // rare and the content digest osctl records is sha256 anyway.
            .filter(|c| c.starts_with("sha256:"))
            && claimed != digest
        {
            return Err(mismatch(claimed, "Docker-Content-Digest"));
        }
        let content_type = answer_headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((raw, digest, content_type))
    }

    pub(crate) async fn resolve(&self) -> Result<Fetched, FetchError> {
        let (raw, digest, content_type) = self.fetch_manifest(&self.reference).await?;
        let what = format!("manifest of {}", self.reference.whole());
        match manifest::parse_manifest(&raw, manifest_type(content_type.as_deref()), &what)? {
            ParsedManifest::Image(m) => Ok(Fetched {
                raw,
                digest,
                manifest: *m,
                index_digest: None,
            }),
            ParsedManifest::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &self.platform, &what)?;
                let by_digest = self
                    .reference
                    .clone_with_digest(chosen.digest().to_string());
                let (raw2, digest2, type2) = self.fetch_manifest(&by_digest).await?;
                let what2 = format!("manifest {} of {}", digest2, self.reference.whole());
                match manifest::parse_manifest(&raw2, manifest_type(type2.as_deref()), &what2)? {
                    ParsedManifest::Image(m) => Ok(Fetched {
                        raw: raw2,
                        digest: digest2,
                        manifest: *m,
                        index_digest: Some(digest),
                    }),
                    ParsedManifest::Index(_) => Err(FetchError::Malformed {
                        what: what2,
                        why: "an index nested in an index".into(),
                        source: None,
                    }),
                }
            }
        }
    }

    /// The manifest under `tag` in this repository (a signature
    /// attachment's `sha256-<hex>.sig`), raw, with its Content-Type; `None`
    /// when the registry has no such tag. Read whole, at most `limit` bytes.
    pub(crate) async fn manifest_if_any(
        &self,
        tag: &str,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, FetchError> {
        let what = format!("manifest {tag} of {}", self.repository_name());
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&ACCEPTED_MANIFEST_TYPES.join(", "))
                .expect("media types are header-safe"),
        );
        let path = self.client.path("manifests", tag);
        match self
            .client
            .get_whole(&path, &headers, (&what, &what), limit)
            .await
        {
            Ok((headers, raw)) => {
                let content_type = headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Some((raw, content_type)))
            }
            Err(FetchError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub(crate) fn repository_name(&self) -> String {
        format!(
            "{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )
    }

    pub async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        let what = format!("blob {} of {}", desc.digest(), self.reference.whole());
        let path = self.client.path("blobs", desc.digest().as_ref());
        let first = self.client.get(&path, &HeaderMap::new(), &what).await?;
        if let Some(declared) = first.content_length()
            && declared != desc.size()
        {
            return Err(FetchError::Blob {
                what,
                source: None,
                why: format!(
                    "registry {} declares {declared} bytes (Content-Length) but the descriptor says {}",
                    self.registry(),
                    desc.size()
                ),
            });
        }
        let stream = blob::resumable(self.client.clone(), path, what, first, desc.size());
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::new(DigestReader::verifying(
            reader,
            Expected {
                digest: Some(desc.digest().to_string()),
                size: Some(desc.size()),
            },
        )))
    }
}

/// The Content-Type of a manifest answer, if it is one of the manifest
/// types. Anything else (`application/json`, `text/plain`, a wrong type) is
/// ignored and the manifest's own `mediaType` field, or its shape, decides:
/// the bytes are what the digest covers, the header is not.
fn manifest_type(content_type: Option<&str>) -> Option<&str> {
    let t = content_type?.split(';').next()?.trim();
    ACCEPTED_MANIFEST_TYPES.contains(&t).then_some(t)
}
