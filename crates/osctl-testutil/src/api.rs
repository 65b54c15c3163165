//! The few registry API calls the harness makes itself, for any registry it
//! can reach.
//!
//! # The model
//!
//! [`RegistryApi`] is one operation: send a request to `/v2/...` and return
//! the answer. Everything else here (blob upload, manifest PUT and GET,
//! resolving a tag to a digest) is written once on top of it, so the same code
//! serves a [`Registry`](crate::Registry) this crate started (with its auth
//! and TLS) and a [`PlainHttpRegistry`]: a registry someone else started, on
//! plain HTTP without auth, which is what the shell VM test has and what the
//! `osctl-test-sign` binary talks to.

use anyhow::{Context as _, Result, bail};

use crate::http::{self, HttpResponse, Request};
use crate::layout::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

/// The manifest types a GET asks for: image and index, OCI and Docker, so a
/// tag answers with what it names rather than a conversion.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A registry the harness can send requests to.
pub trait RegistryApi {
    /// Sends one request; `target` is path and query, e.g. `/v2/_catalog`.
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse>;
}

impl RegistryApi for crate::Registry {
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        crate::Registry::request(self, method, target, headers, body)
    }
}

/// An already running registry on plain HTTP without auth, known only by its
/// address (`127.0.0.1:PORT`). Nothing is started or stopped.
#[derive(Clone, Debug)]
pub struct PlainHttpRegistry {
    addr: String,
}

impl PlainHttpRegistry {
    pub fn new(addr: &str) -> PlainHttpRegistry {
        PlainHttpRegistry { addr: addr.into() }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl RegistryApi for PlainHttpRegistry {
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let req = Request {
            method,
            target,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
        };
        http::send_plain(&self.addr, &req)
    }
}

/// Uploads `bytes` as a blob of `repo` in one go (POST an upload, then PUT
/// `?digest=`) and returns its digest.
pub fn put_blob<R: RegistryApi + ?Sized>(registry: &R, repo: &str, bytes: &[u8]) -> Result<String> {
    let digest = crate::sha256_digest(bytes);
    let resp = registry.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
    if resp.status != 202 {
        bail!(
            "starting a blob upload to {repo} answered {}: {}",
            resp.status,
            resp.body_text()
        );
    }
    let location = resp
        .header("location")
        .context("upload answer without Location")?;
    // distribution answers with an absolute URL; keep path and query.
    let target = match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => location.to_string(),
    };
    let sep = if target.contains('?') { '&' } else { '?' };
    let target = format!("{target}{sep}digest={digest}");
    let resp = registry.request(
        "PUT",
        &target,
        &[("Content-Type", "application/octet-stream")],
        bytes,
    )?;
    if resp.status != 201 {
        bail!(
            "finishing the blob upload to {repo} answered {}: {}",
            resp.status,
            resp.body_text()
        );
    }
    Ok(digest)
}

/// PUTs `body` as the manifest `<repo>:<reference>` with `content_type`,
/// without checking the answer (for tests of what the registry refuses).
pub fn put_manifest_raw<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> Result<HttpResponse> {
    let target = format!("/v2/{repo}/manifests/{reference}");
    registry.request("PUT", &target, &[("Content-Type", content_type)], body)
}

/// PUTs a manifest and returns its digest; fails unless the registry
/// answers 201.
pub fn put_manifest<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> Result<String> {
    let resp = put_manifest_raw(registry, repo, reference, content_type, body)?;
    if resp.status != 201 {
        bail!(
            "PUT manifest {repo}:{reference} answered {}: {}",
            resp.status,
            resp.body_text()
        );
    }
    Ok(resp
        .header("docker-content-digest")
        .map(String::from)
        .unwrap_or_else(|| crate::sha256_digest(body)))
}

/// A manifest as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl FetchedManifest {
    /// `sha256:` of the bytes served: the digest that names them, computed
    /// here rather than taken from the registry's header.
    pub fn digest(&self) -> String {
        crate::sha256_digest(&self.body)
    }
}

/// GETs the manifest `<repo>:<reference>` (a tag or a digest), accepting
/// [`MANIFEST_TYPES`]. `Ok(None)` when the registry answers 404: the caller
/// decides whether a missing manifest is an error.
pub fn get_manifest<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    reference: &str,
) -> Result<Option<FetchedManifest>> {
    let accept = MANIFEST_TYPES.join(", ");
    let resp = registry.request(
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", &accept)],
        &[],
    )?;
    match resp.status {
        200 => {}
        404 => return Ok(None),
        status => bail!(
            "GET manifest {repo}:{reference} answered {status}: {}",
            resp.body_text()
        ),
    }
    let content_type = resp
        .header("content-type")
        .with_context(|| format!("manifest {repo}:{reference} served without a Content-Type"))?
        .to_owned();
    Ok(Some(FetchedManifest {
        content_type,
        body: resp.body,
    }))
}

/// The digest of the manifest `<repo>:<tag>` names, computed from the bytes
/// served; fails if there is none.
pub fn resolve_digest<R: RegistryApi + ?Sized>(
    registry: &R,
    repo: &str,
    tag: &str,
) -> Result<String> {
    let manifest = get_manifest(registry, repo, tag)?
        .with_context(|| format!("manifest {repo}:{tag} not found (404)"))?;
    Ok(manifest.digest())
}
