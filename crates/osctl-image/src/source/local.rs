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

use super::{BlobReader, FetchOptions, Fetched};
use crate::limits::MAX_MANIFEST_BYTES;
use crate::manifest::{self, ParsedManifest, Platform};
use crate::verify::{DigestReader, Expected, sha256_digest};
use crate::{BoxError, FetchError};

/// Bytes per chunk handed from the blocking reader to the async consumer.
/// Large enough that channel traffic is negligible next to hashing and
/// decompression, small enough that the two in flight stay well under a MiB.
const CHUNK: usize = 256 * 1024;

/// A tar archive is a sequence of 512-byte blocks, the first a header.
const TAR_BLOCK: usize = 512;

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
        let what = format!("OCI layout {}", path.display());
        check_layout_dir(path, &what)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(|e| local(&what, "cannot be opened", Some(e)))?;
        let oci = OciDir::open(dir).map_err(|e| FetchError::Malformed {
            what: what.clone(),
            why: String::new(),
            source: Some(Box::new(e)),
        })?;
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
        let what = format!("OCI archive {}", path.display());
        let (p, w) = (path.to_path_buf(), what.clone());
        // Indexing reads every tar header: do it off the async threads.
        let archive = tokio::task::spawn_blocking(move || open_archive_file(&p, &w))
            .await
            .map_err(|e| FetchError::Task {
                what: format!("reading {what}"),
                source: e,
            })??;
        Ok(LocalSource {
            layout: Layout::Archive(std::sync::Arc::new(archive)),
            path: path.to_path_buf(),
            tag,
            platform: opts.platform.clone().unwrap_or_else(Platform::host),
        })
    }

    /// "an OCI layout" / "an OCI archive", for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.layout {
            Layout::Dir(_) => "an OCI layout",
            Layout::Archive(_) => "an OCI archive",
        }
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
        r.map_err(|e| match e {
            ocidir::Error::MissingImageIndex => local(
                &self.location(),
                "is not an OCI image layout: it has no index.json",
                None,
            ),
            other => FetchError::Malformed {
                what: format!("index.json of {}", self.location()),
                why: String::new(),
                source: Some(Box::new(other)),
            },
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
            why: String::new(),
            source: Some(Box::new(e)),
        })
    }

    fn read_document(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, FetchError> {
        if desc.size() > MAX_MANIFEST_BYTES {
            return Err(FetchError::Malformed {
                what: what.to_string(),
                why: format!("declared size {} is too large for a manifest", desc.size()),
                source: None,
            });
        }
        let mut buf = Vec::new();
        self.blocking_reader(desc)?
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FetchError::Blob {
                what: what.to_string(),
                why: String::new(),
                source: Some(Box::new(e)),
            })?;
        let actual = sha256_digest(&buf);
        if actual != desc.digest().to_string() {
            return Err(FetchError::Blob {
                what: what.to_string(),
                why: format!("digest mismatch: content hashes to {actual}"),
                source: None,
            });
        }
        Ok(buf)
    }

    pub(crate) async fn resolve(&self) -> Result<Fetched, FetchError> {
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
            ParsedManifest::Image(m) => Ok(Fetched {
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
                    ParsedManifest::Image(m) => Ok(Fetched {
                        digest: chosen.digest().to_string(),
                        raw: raw2,
                        manifest: *m,
                        index_digest: Some(top.digest().to_string()),
                    }),
                    ParsedManifest::Index(_) => Err(FetchError::Malformed {
                        what,
                        why: "an index nested in an index".into(),
                        source: None,
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

fn local(what: &str, why: &str, source: Option<std::io::Error>) -> FetchError {
    FetchError::Local {
        what: what.to_string(),
        why: why.to_string(),
        source: source.map(|e| Box::new(e) as BoxError),
    }
}

/// Refuses, by name, a layout path that does not exist, is not a directory
/// or lacks what every OCI image layout has (`index.json`, `blobs/sha256`).
fn check_layout_dir(path: &Path, what: &str) -> Result<(), FetchError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(local(what, "does not exist", None));
        }
        Err(e) => return Err(local(what, "cannot be read", Some(e))),
        Ok(m) if !m.is_dir() => {
            return Err(local(
                what,
                "is not a directory (for an OCI archive file, use oci-archive:PATH)",
                None,
            ));
        }
        Ok(_) => {}
    }
    for (entry, want_dir) in [("index.json", false), ("blobs/sha256", true)] {
        match std::fs::metadata(path.join(entry)) {
            Ok(m) if m.is_dir() == want_dir => {}
            Ok(_) => {
                let kind = if want_dir { "a directory" } else { "a file" };
                return Err(local(
                    what,
                    &format!("is not an OCI image layout: its {entry} is not {kind}"),
                    None,
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(local(
                    what,
                    &format!("is not an OCI image layout: it has no {entry}"),
                    None,
                ));
            }
            Err(e) => return Err(local(what, &format!("cannot read its {entry}"), Some(e))),
        }
    }
    Ok(())
}

/// Opens and indexes an OCI archive, first telling apart what it may be
/// instead: missing, a directory, compressed, or no tar at all.
fn open_archive_file(path: &Path, what: &str) -> Result<OciArchive, FetchError> {
    let mut file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(local(what, "does not exist", None));
        }
        Err(e) => return Err(local(what, "cannot be opened", Some(e))),
        Ok(f) => f,
    };
    let meta = file
        .metadata()
        .map_err(|e| local(what, "cannot be read", Some(e)))?;
    if meta.is_dir() {
        return Err(local(
            what,
            "is a directory (for an OCI layout directory, use oci:PATH)",
            None,
        ));
    }
    let mut head = Vec::with_capacity(TAR_BLOCK);
    (&mut file)
        .take(TAR_BLOCK as u64)
        .read_to_end(&mut head)
        .map_err(|e| local(what, "cannot be read", Some(e)))?;
    if let Some(why) = not_a_tar(&head) {
        return Err(local(what, &why, None));
    }
    use std::io::Seek;
    file.rewind()
        .map_err(|e| local(what, "cannot be read", Some(e)))?;
    OciArchive::from_file(file).map_err(|e| FetchError::Local {
        what: what.to_string(),
        why: "is not a readable tar archive".into(),
        source: Some(Box::new(e)),
    })
}

/// Why `head` (a file's first block) cannot start a tar archive, if it
/// cannot: compressed data, too short, or a header whose checksum is wrong.
fn not_a_tar(head: &[u8]) -> Option<String> {
    const COMPRESSED: [(&[u8], &str); 3] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    ];
    for (magic, name) in COMPRESSED {
        if head.starts_with(magic) {
            return Some(format!(
                "is {name}-compressed; OCI archives are plain tar files (decompress it first)"
            ));
        }
    }
    if head.len() < TAR_BLOCK {
        return Some(format!(
            "is not a tar archive (it is only {} bytes long)",
            head.len()
        ));
    }
    if head.iter().all(|b| *b == 0) {
        return Some("is an empty tar archive (it holds no OCI layout)".into());
    }
    // The header checksum: the sum of all 512 bytes with the checksum field
    // (bytes 148..156) counted as spaces, stored as octal text in that field.
    let field = std::str::from_utf8(&head[148..156]).ok()?;
    let stored = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8);
    let sum: u32 = head
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                0x20
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if stored != Ok(sum) {
        return Some("is not a tar archive (its first block is not a tar header)".into());
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_header(name: &str) -> Vec<u8> {
        let mut h = vec![0u8; TAR_BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn what_is_not_a_tar_is_named() {
        assert_eq!(not_a_tar(&tar_header("index.json")), None);
        let mut bad = tar_header("index.json");
        bad[0] ^= 1;
        for (head, needle) in [
            (&[0x1f, 0x8b, 8, 0][..], "gzip-compressed"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0][..], "zstd-compressed"),
            (b"hello\n", "only 6 bytes long"),
            (&[0u8; TAR_BLOCK][..], "empty tar archive"),
            (&bad[..], "not a tar header"),
            (&[b'x'; TAR_BLOCK][..], "not a tar"),
        ] {
            let why = not_a_tar(head).expect("refused");
            assert!(why.contains(needle), "{why}");
        }
    }

    #[test]
    fn layout_dirs_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let check = |p: &Path| check_layout_dir(p, "OCI layout X").unwrap_err().to_string();
        assert!(check(&root.join("missing")).contains("does not exist"));
        std::fs::write(root.join("file"), "x").unwrap();
        assert!(check(&root.join("file")).contains("is not a directory"));
        assert!(check(root).contains("it has no index.json"));
        std::fs::write(root.join("index.json"), "{}").unwrap();
        assert!(check(root).contains("it has no blobs/sha256"));
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join("blobs/sha256"), "x").unwrap();
        assert!(check(root).contains("its blobs/sha256 is not a directory"));
        std::fs::remove_file(root.join("blobs/sha256")).unwrap();
        std::fs::create_dir(root.join("blobs/sha256")).unwrap();
        check_layout_dir(root, "OCI layout X").unwrap();
    }
}
