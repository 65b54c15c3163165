//! Images in containers' local storage (`containers-storage:`), the images
//! podman and buildah build on the machine, read through skopeo's
//! `experimental-image-proxy` (the `containers-image-proxy` crate).
//!
//! Model: one skopeo process per source, spoken to over a socket; each blob
//! comes back on a pipe and is streamed into the store as it is read. No
//! layer is copied to disk first (as `skopeo copy … oci:DIR` would), so a
//! switch needs no room beyond what the store itself keeps. containers
//! storage has no format osctl could read safely on its own (drivers,
//! locks, layer stores); the proxy is containers/image's own reader.
//!
//! What the proxy serves. containers storage keeps layers *unpacked*; the
//! proxy hands out a layer as an uncompressed tar regenerated from them,
//! whatever the manifest says. An image built here by buildah or podman
//! (`commit`, `build`) has a manifest that already says exactly that: every
//! layer `application/vnd.oci.image.layer.v1.tar`, its digest the layer's
//! DiffID, its size the tar's. Those layers are asked for by the manifest's
//! descriptor and verified twice, against the manifest's digest and size:
//! by the proxy when the pipe is finished, and by osctl as the bytes pass
//! ([`DigestReader`]); the store then checks the same bytes against the
//! config's `diff_ids`. (Before any of these, containers storage itself
//! checks each file it reassembles the tar from against the checksum it
//! recorded at commit, so a file changed in the storage after the build
//! fails the `GetBlob` request, naming the file.) An image *pulled* into storage keeps its registry
//! manifest (gzip or zstd layers): the proxy cannot serve those blobs as
//! described (it would send the uncompressed tar under the compressed
//! digest), and proxy protocol 0.2.3 (skopeo 1.9) has no call telling the
//! uncompressed size, so such a manifest is refused by name, with the ways
//! around it, before anything is fetched.
//!
//! The manifest is asked for by name, so there is nothing to check it
//! against: its digest is computed from the bytes osctl keeps. For an
//! OCI-format build that is the digest podman shows. A Docker-format build
//! (`--format docker`) is converted to OCI by the proxy, manifest and config:
//! the kept digest is then the converted manifest's, and the converted
//! config exists only as the proxy's `GetFullConfig` answer (asking for it
//! by digest fails). So the config is always read that way, once, when the
//! manifest is resolved, and served from memory, verified against the
//! manifest's config descriptor like any blob. (The crate reads it whole;
//! it comes from root's own storage and is refused when longer than its
//! descriptor says.)
//!
//! Signature policy: the proxy is started with `--insecure-policy`, because
//! osctl applies no `policy.json` to any transport (registry pulls do not
//! consult it either); the image is in root's own storage.
//!
//! Errors. The proxy answers a failed request with one line of its own
//! ("reference … does not resolve to an image ID"); if skopeo dies, the
//! crate's error carries its exit status and stderr on several lines. Both
//! are reduced to one line ([`one_line`]) under an error naming the
//! reference.

use std::sync::Arc;

use bytes::Bytes;
use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use oci_spec::image::Descriptor;
use tokio::io::AsyncReadExt;

use super::{BlobReader, Fetched};
use crate::limits::MAX_MANIFEST_BYTES;
use crate::manifest::{self, Compression, ParsedManifest};
use crate::reference::StorageSpec;
use crate::verify::{DigestReader, Expected, sha256_digest};
use crate::{BoxError, FetchError};

/// Bytes per chunk handed from the proxy's pipe to the consumer; as in
/// `local.rs`, large enough that channel traffic does not count.
const CHUNK: usize = 256 * 1024;

/// The OCI manifest media type: what the proxy serves (it converts other
/// formats), the content type the manifest is parsed as.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a storage driver's image store is called in the storage root
/// (`vfs-images`, `overlay-images`).
const IMAGE_STORE_SUFFIX: &str = "-images";

struct Opened {
    proxy: ImageProxy,
    image: OpenedImage,
}

pub struct StorageSource {
    opened: Arc<Opened>,
    /// The whole reference, `containers-storage:[…]name`, for messages.
    reference: String,
    /// The config as `GetFullConfig` served it, under the digest the
    /// manifest gives it; set by `resolve`.
    config: std::sync::Mutex<Option<(String, Bytes)>>,
}

/// How long opening an image may take before osctl says what it is
/// waiting for (it goes on waiting).
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl StorageSource {
    /// Starts skopeo's proxy and opens the image; fails with one line
    /// naming the reference if skopeo is missing, the storage root does not
    /// exist or the storage has no such image.
    pub async fn open(
        store: Option<&StorageSpec>,
        name: &str,
        reference: String,
    ) -> Result<Self, FetchError> {
        if let Some(spec) = store {
            // skopeo would create a missing root (and run root), or a new
            // storage inside a directory that holds none, and then report
            // "no such image": a typo in the path or the driver must not
            // leave directories behind.
            check_root(spec, &reference)?;
        }
        let mut config = ImageProxyConfig::default();
        config.insecure_policy = Some(true);
        let proxy = ImageProxy::new_with_config(config)
            .await
            .map_err(|e| proxy_error(&reference, "cannot start skopeo's image proxy", e))?;
        let spec = store.map(|s| s.to_string()).unwrap_or_default();
        let target = format!("containers-storage:{spec}{name}");
        // skopeo waits for the storage's lock without a limit, and a long
        // wait can be legitimate (a build committing); a silent one is
        // not: after a while, say what is being waited for.
        let opened = {
            let open = proxy.open_image(&target);
            tokio::pin!(open);
            match tokio::time::timeout(OPEN_PATIENCE, &mut open).await {
                Ok(opened) => opened,
                Err(_) => {
                    tracing::warn!(
                        "{reference}: still waiting after {} s for skopeo to open the image; \
                         another buildah or podman may hold the containers storage lock",
                        OPEN_PATIENCE.as_secs()
                    );
                    open.await
                }
            }
        };
        let image = opened.map_err(|e| proxy_error(&reference, "cannot open the image", e))?;
        Ok(StorageSource {
            opened: Arc::new(Opened { proxy, image }),
            reference,
            config: std::sync::Mutex::new(None),
        })
    }

    pub fn location(&self) -> String {
        self.reference.clone()
    }

    pub(crate) async fn resolve(&self) -> Result<Fetched, FetchError> {
        let what = format!("manifest of {}", self.reference);
        let (named, raw) = self
            .opened
            .proxy
            .fetch_manifest_raw_oci(&self.opened.image)
            .await
            .map_err(|e| proxy_error(&self.reference, "cannot read the manifest", e))?;
        // The crate has read it whole already (from root's own storage);
        // what the store keeps is still held to the manifest cap.
        if raw.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(FetchError::TooLarge {
                what,
                limit: MAX_MANIFEST_BYTES,
                note: String::new(),
            });
        }
        let digest = sha256_digest(&raw);
        let parsed = manifest::parse_manifest(&raw, Some(OCI_MANIFEST), &what)?;
        let ParsedManifest::Image(m) = parsed else {
            return Err(FetchError::Malformed {
                what,
                why: "the proxy served an index, not an image manifest".into(),
                source: None,
            });
        };
        tracing::debug!(
            "{}: manifest {digest} (containers storage names it {named})",
            self.reference
        );
        for (i, layer) in m.layers().iter().enumerate() {
            let compression = manifest::layer_compression(layer.media_type());
            if compression.is_some_and(|c| c != Compression::None) {
                return Err(FetchError::Local {
                    what: self.reference.clone(),
                    why: format!(
                        "layer {i} ({}) is recorded {} in its manifest, as pulled from a \
                         registry; containers storage serves it uncompressed under another \
                         digest, which skopeo's image proxy cannot describe: pull the image \
                         from its registry, or rebuild it here (buildah build/commit)",
                        layer.digest(),
                        layer.media_type()
                    ),
                    source: None,
                });
            }
        }
        let config_desc = m.config();
        let config = self
            .opened
            .proxy
            .fetch_config_raw(&self.opened.image)
            .await
            .map_err(|e| proxy_error(&self.reference, "cannot read the config", e))?;
        if config.len() as u64 > config_desc.size() {
            return Err(FetchError::Blob {
                what: format!("config {} of {}", config_desc.digest(), self.reference),
                why: format!(
                    "the proxy served {} bytes, the manifest says {}",
                    config.len(),
                    config_desc.size()
                ),
                source: None,
            });
        }
        *self.config.lock().map_err(|_| poisoned(&self.reference))? =
            Some((config_desc.digest().to_string(), Bytes::from(config)));
        Ok(Fetched {
            raw,
            digest,
            manifest: *m,
            index_digest: None,
        })
    }

    /// Streams a blob from the proxy. The reader ends only after the proxy
    /// has confirmed the blob's size and digest (its `FinishPipe`), and
    /// osctl's own [`DigestReader`] checks them again at that end.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        let expected = Expected {
            digest: Some(desc.digest().to_string()),
            size: Some(desc.size()),
        };
        let config = self
            .config
            .lock()
            .map_err(|_| poisoned(&self.reference))?
            .clone();
        if let Some((digest, bytes)) = config
            && digest == desc.digest().to_string()
        {
            let reader = std::io::Cursor::new(bytes);
            return Ok(Box::new(DigestReader::verifying(reader, expected)));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        let opened = Arc::clone(&self.opened);
        let digest = desc.digest().clone();
        let size = desc.size();
        tokio::spawn(async move {
            // The consumer's error names the blob and the reference already.
            let fail =
                |e: containers_image_proxy::Error| std::io::Error::other(one_line(&e.to_string()));
            let (mut pipe, finish) = match opened.proxy.get_blob(&opened.image, &digest, size).await
            {
                Ok(p) => p,
                Err(e) => {
                    // The consumer may be gone already; then nobody needs the error.
                    let _ = tx.send(Err(fail(e))).await;
                    return;
                }
            };
            // The pump owns the pipe: when it stops early (the consumer
            // left), the pipe closes with it, the proxy's write fails and
            // FinishPipe returns instead of waiting for a reader forever.
            let pump_tx = tx.clone();
            let pump = async move {
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    match pipe.read(&mut buf).await {
                        Ok(0) => return true,
                        Ok(n) => {
                            buf.truncate(n);
                            if pump_tx.send(Ok(Bytes::from(buf))).await.is_err() {
                                return false; // consumer gone: stop reading
                            }
                        }
                        Err(e) => {
                            // As above: a consumer that left needs no error.
                            let _ = pump_tx.send(Err(e)).await;
                            return false;
                        }
                    }
                }
            };
            // The proxy writes the pipe and answers FinishPipe only once the
            // whole blob has been read: drive both at once.
            let (whole, finished) = tokio::join!(pump, finish);
            if let Err(e) = finished
                && whole
            {
                // A consumer that left needs no error.
                let _ = tx.send(Err(fail(e))).await;
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Box::new(DigestReader::verifying(
            tokio_util::io::StreamReader::new(stream),
            expected,
        )))
    }
}

/// The config slot's lock was poisoned by a panic elsewhere: refuse rather
/// than guess what it holds.
fn poisoned(reference: &str) -> FetchError {
    FetchError::Local {
        what: reference.to_string(),
        why: "the config read earlier is unusable (a task panicked)".into(),
        source: None,
    }
}

/// Refuses a storage root that is not an existing directory holding a
/// containers storage of the named driver. A storage that holds any image
/// has `<driver>-images/` (containers/storage's image store, created with
/// the storage); without one, skopeo would create a new, empty storage in
/// the directory (`<driver>/`, `<driver>-images/`, lock files) before
/// finding no image there. Without a driver in the reference any driver's
/// image store will do: containers/storage picks the one in use.
fn check_root(spec: &StorageSpec, reference: &str) -> Result<(), FetchError> {
    let root = &spec.root;
    let refuse = |why: String| FetchError::Local {
        what: reference.to_string(),
        why,
        source: None,
    };
    let unreadable = |e: std::io::Error| FetchError::Local {
        what: reference.to_string(),
        why: format!("cannot read its storage root {}", root.display()),
        source: Some(Box::new(e)),
    };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(refuse(format!(
                "its storage root {} is not a directory",
                root.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!(
                "its storage root {} does not exist",
                root.display()
            )));
        }
        Err(e) => return Err(unreadable(e)),
    }
    let is_image_store = |name: &str| root.join(name).is_dir();
    match &spec.driver {
        Some(driver) => {
            let images = format!("{driver}{IMAGE_STORE_SUFFIX}");
            if !is_image_store(&images) {
                return Err(refuse(format!(
                    "its storage root {} holds no {driver} storage (no {images}/ in it)",
                    root.display()
                )));
            }
        }
        None => {
            let mut found = false;
            for entry in std::fs::read_dir(root).map_err(unreadable)? {
                let name = entry.map_err(unreadable)?.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(IMAGE_STORE_SUFFIX) && is_image_store(&name) {
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(refuse(format!(
                    "its storage root {} holds no containers storage (no \
                     <driver>{IMAGE_STORE_SUFFIX}/ in it)",
                    root.display()
                )));
            }
        }
    }
    Ok(())
}

/// A proxy error under one naming the reference and the step.
fn proxy_error(reference: &str, why: &str, e: containers_image_proxy::Error) -> FetchError {
    let text = match &e {
        containers_image_proxy::Error::SkopeoSpawnError(io) => {
            format!("cannot run skopeo (is the skopeo package installed?): {io}")
        }
        other => one_line(&other.to_string()),
    };
    FetchError::Local {
        what: reference.to_string(),
        why: why.to_string(),
        source: Some(BoxError::from(text)),
    }
}

/// The proxy's error text on one line: skopeo's stderr (after an exit)
/// comes on several lines, logrus-formatted (`time=… level=fatal
/// msg="…"`); each line is reduced to its message and the lines are joined.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(" msg=\"") {
            Some((_, msg)) => msg.strip_suffix('"').unwrap_or(msg).replace("\\\"", "\""),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn proxy_errors_become_one_line() {
        for (input, want) in [
            (
                "request failed: no such image",
                "request failed: no such image",
            ),
            (
                "skopeo proxy unexpectedly exited during request method OpenImage: exit status: 1\n\
                 time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"open \\\"/x\\\": permission denied\"\n",
                "skopeo proxy unexpectedly exited during request method OpenImage: exit status: 1; \
                 open \"/x\": permission denied",
            ),
            ("a\n\n  b  \n", "a; b"),
        ] {
            assert_eq!(one_line(input), want, "{input:?}");
        }
    }

    #[test]
    fn roots_without_a_storage_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let missing = dir.path().join("missing");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let vfs = dir.path().join("vfs-storage");
        std::fs::create_dir_all(vfs.join("vfs-images")).unwrap();
        let spec = |driver: Option<&str>, root: &Path| StorageSpec {
            driver: driver.map(str::to_string),
            root: root.to_path_buf(),
            run_root: None,
        };
        for (driver, root, want) in [
            (
                Some("vfs"),
                &missing,
                format!("R: its storage root {} does not exist", missing.display()),
            ),
            (
                None,
                &file,
                format!("R: its storage root {} is not a directory", file.display()),
            ),
            (
                Some("vfs"),
                &empty,
                format!(
                    "R: its storage root {} holds no vfs storage (no vfs-images/ in it)",
                    empty.display()
                ),
            ),
            (
                None,
                &empty,
                format!(
                    "R: its storage root {} holds no containers storage (no \
                     <driver>-images/ in it)",
                    empty.display()
                ),
            ),
            (
                Some("overlay"),
                &vfs,
                format!(
                    "R: its storage root {} holds no overlay storage (no overlay-images/ in it)",
                    vfs.display()
                ),
            ),
        ] {
            let err = check_root(&spec(driver, root), "R").unwrap_err();
            assert_eq!(err.to_string(), want, "{driver:?} {}", root.display());
        }
        // Nothing was created while refusing.
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        check_root(&spec(Some("vfs"), &vfs), "R").unwrap();
        check_root(&spec(None, &vfs), "R").unwrap();
    }
}
