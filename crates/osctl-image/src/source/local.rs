//! OCI image layouts (`oci:`) and OCI archives (`oci-archive:`), read with
//! the `ocidir` crate.
//!
//! An archive is read in place: `ocidir` indexes the tar's members once and
//! serves each blob as a slice of the file, so nothing is extracted to disk.
//! `ocidir`'s readers are blocking; a blob is pumped into the async world by
//! one blocking task through a small channel of large chunks, which keeps the
//! number of cross-thread handoffs per blob low.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cap_std_ext::cap_std;
use oci_spec::image::{Descriptor, ImageIndex};
use ocidir::{OciArchive, OciDir, OciRead};

use super::{BlobReader, FetchOptions, ResolvedManifest};
use crate::FetchError;
use crate::manifest::{self, ParsedManifest, Platform};
use crate::verify::{DigestReader, Expected, sha256_digest};

/// Bytes per chunk handed from the blocking reader to the async consumer.
/// Large enough that channel traffic is negligible next to hashing and
/// decompression, small enough that the two in flight stay well under a MiB.
const CHUNK: usize = 256 * 1024;

/// Manifests and indexes are small documents; refuse anything bigger than
/// this before reading it into memory.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// The OCI annotation a layout's `index.json` uses to name tags.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

enum Layout {
    Dir(OciDir),
    Archive(std::sync::Arc<OciArchive>),
}

pub struct LocalSource {
    layout: Layout,
    path: PathBuf,
    tag: Option<String>,
    platform: Platform,
}

impl LocalSource {
    pub fn open_dir(
        path: &Path,
        tag: Option<String>,
        opts: &FetchOptions,
    ) -> Result<Self, FetchError> {
        let not_layout = |why: String| FetchError::Malformed {
            what: format!("OCI layout {}", path.display()),
            why,
        };
        let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(
            |e| FetchError::Other(format!("cannot open OCI layout {}: {e}", path.display())),
        )?;
        let oci = OciDir::open(dir).map_err(|e| not_layout(e.to_string()))?;
        Ok(LocalSource {
            layout: Layout::Dir(oci),
            path: path.to_path_buf(),
            tag,
            platform: opts.platform.clone().unwrap_or_else(Platform::host),
        })
    }

    pub async fn open_archive(
        path: &Path,
        tag: Option<String>,
        opts: &FetchOptions,
    ) -> Result<Self, FetchError> {
        let p = path.to_path_buf();
        // Indexing reads every tar header: do it off the async threads.
        let archive = tokio::task::spawn_blocking(move || OciArchive::open(&p))
            .await
            .map_err(|e| FetchError::Other(e.to_string()))?
            .map_err(|e| FetchError::Malformed {
                what: format!("OCI archive {}", path.display()),
                why: e.to_string(),
            })?;
        Ok(LocalSource {
            layout: Layout::Archive(std::sync::Arc::new(archive)),
            path: path.to_path_buf(),
            tag,
            platform: opts.platform.clone().unwrap_or_else(Platform::host),
        })
    }

    pub fn location(&self) -> String {
        match self.layout {
            Layout::Dir(_) => format!("OCI layout {}", self.path.display()),
            Layout::Archive(_) => format!("OCI archive {}", self.path.display()),
        }
    }

    fn read_index(&self) -> Result<ImageIndex, FetchError> {
        let r = match &self.layout {
            Layout::Dir(d) => d.read_index(),
            Layout::Archive(a) => a.read_index(),
        };
        r.map_err(|e| FetchError::Malformed {
            what: format!("index.json of {}", self.location()),
            why: e.to_string(),
        })
    }

    fn blocking_reader(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, FetchError> {
        let what = format!("blob {} in {}", desc.digest(), self.location());
        let r: Result<Box<dyn Read + Send>, ocidir::Error> = match &self.layout {
            Layout::Dir(d) => d
                .read_blob(desc)
                .map(|f| Box::new(f) as Box<dyn Read + Send>),
            Layout::Archive(a) => a
                .read_blob(desc)
                .map(|f| Box::new(f) as Box<dyn Read + Send>),
        };
        r.map_err(|e| FetchError::Blob {
            what,
            detail: e.to_string(),
        })
    }

    fn read_document(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, FetchError> {
        if desc.size() > MAX_MANIFEST {
            return Err(FetchError::Malformed {
                what: what.to_string(),
                why: format!("declared size {} is too large for a manifest", desc.size()),
            });
        }
        let mut buf = Vec::new();
        self.blocking_reader(desc)?
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FetchError::Blob {
                what: what.to_string(),
                detail: e.to_string(),
            })?;
        let actual = sha256_digest(&buf);
        if actual != desc.digest().to_string() {
            return Err(FetchError::Blob {
                what: what.to_string(),
                detail: format!("digest mismatch: content hashes to {actual}"),
            });
        }
        Ok(buf)
    }

    pub async fn resolve(&self) -> Result<ResolvedManifest, FetchError> {
        let index = self.read_index()?;
        let location = self.location();
        let top = match &self.tag {
            Some(tag) => index
                .manifests()
                .iter()
                .find(|d| {
                    d.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|t| t == tag)
                })
                .ok_or_else(|| FetchError::NotFound {
                    reference: format!("{location}:{tag}"),
                    detail: format!("no tag '{tag}' (tags: {})", tags(&index)),
                })?,
            None => match index.manifests().as_slice() {
                [one] => one,
                [] => {
                    return Err(FetchError::NotFound {
                        reference: location,
                        detail: "the layout holds no image".into(),
                    });
                }
                _ => {
                    return Err(FetchError::BadReference {
                        reference: location,
                        why: format!(
                            "it holds several images; name one as :TAG (tags: {})",
                            tags(&index)
                        ),
                    });
                }
            },
        };
        let what = format!("manifest {} in {location}", top.digest());
        let raw = self.read_document(top, &what)?;
        let media = top.media_type().to_string();
        match manifest::parse_manifest(&raw, Some(&media), &what)? {
            ParsedManifest::Image(m) => Ok(ResolvedManifest {
                digest: top.digest().to_string(),
                raw,
                manifest: *m,
                index_digest: None,
            }),
            ParsedManifest::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &self.platform, &what)?;
                let what = format!("manifest {} in {location}", chosen.digest());
                let raw2 = self.read_document(chosen, &what)?;
                match manifest::parse_manifest(&raw2, Some(chosen.media_type().as_ref()), &what)? {
                    ParsedManifest::Image(m) => Ok(ResolvedManifest {
                        digest: chosen.digest().to_string(),
                        raw: raw2,
                        manifest: *m,
                        index_digest: Some(top.digest().to_string()),
                    }),
                    ParsedManifest::Index(_) => Err(FetchError::Malformed {
                        what,
                        why: "an index nested in an index".into(),
                    }),
                }
            }
        }
    }

    pub fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, FetchError> {
        let mut reader = self.blocking_reader(desc)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            break; // consumer gone: stop reading
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
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

fn tags(index: &ImageIndex) -> String {
    let t: Vec<&str> = index
        .manifests()
        .iter()
        .filter_map(|d| d.annotations().as_ref()?.get(REF_NAME).map(String::as_str))
        .collect();
    if t.is_empty() {
        "none".into()
    } else {
        t.join(", ")
    }
}
