//! OCI image layouts written from [`ImageSpec`]s.
//!
//! # The model
//!
//! [`write_layout`] writes an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/*`) from an [`ImageSpec`] (see [`crate::spec`] for how
//! layers are encoded); several tags can share one layout. Blobs are written
//! under a temporary name and renamed to their digest when complete, and the
//! config and manifests are deterministic (fixed `created`), so the same spec
//! gives the same manifest digest on every run.
//!
//! A layout is what skopeo pushes (see
//! [`crate::registry::Registry::push_oci_layout`]) and what `oci:` readers
//! (osctl, umoci) take directly; [`write_oci_archive`] and
//! [`write_dir_transport`] repackage it for skopeo's other transports.
//! [`crate::build_layout_with_umoci`] makes a layout with umoci instead, for a
//! path independent of our tar writer.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use tar::EntryType;

use crate::spec::{Hashing, encode_layer_to, layer_media_type};
use crate::tarwriter::{EntryHeader, TarWriter};

pub use crate::expected::{expected_tree, try_expected_tree};
pub use crate::spec::{
    Compression, EncodedLayer, Entry, ImageSpec, Layer, encode_layer, generated_content,
    host_oci_arch, layer_tar, write_layer_tar,
};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// What [`write_layout`] wrote, for assertions and for building variants.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub layout_dir: PathBuf,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// Uncompressed digests, in layer order (= the config's rootfs.diff_ids).
    pub diff_ids: Vec<String>,
    pub layer_media_types: Vec<String>,
}

impl BuiltImage {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        layout_blob_path(&self.layout_dir, digest)
    }
    pub fn layer_path(&self, index: usize) -> PathBuf {
        self.blob_path(&self.layer_digests[index])
    }
}

#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub layout_dir: PathBuf,
    pub index_digest: String,
    pub index_media_type: String,
    /// One per platform, in the order given.
    pub images: Vec<BuiltImage>,
}

/// Path of a blob inside an OCI layout.
pub fn layout_blob_path(layout_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    layout_dir.join("blobs/sha256").join(hex)
}

/// Writes `spec` into the OCI layout at `dir` (created if needed; an existing
/// layout keeps its other tags) and tags its manifest `tag` in index.json.
pub fn write_layout(dir: &Path, tag: &str, spec: &ImageSpec) -> Result<BuiltImage> {
    init_layout(dir)?;
    let image = write_image_blobs(dir, spec)?;
    let desc = descriptor(
        &image.manifest_media_type,
        &image.manifest_digest,
        image.manifest_size,
    );
    tag_in_index(dir, tag, desc)?;
    Ok(image)
}

/// Writes a multi-platform image index tagged `tag`. The `(os, arch)` of each
/// tuple goes into the index's platform descriptor; the config keeps the
/// spec's own values, so a test can make them disagree on purpose. The index
/// is a Docker manifest list when every spec asks for Docker media types.
pub fn write_index_layout(
    dir: &Path,
    tag: &str,
    images: &[(ImageSpec, &str, &str)],
) -> Result<BuiltIndex> {
    init_layout(dir)?;
    let docker = !images.is_empty() && images.iter().all(|(spec, _, _)| spec.docker_media_types);
    let mut built = Vec::new();
    let mut manifests = Vec::new();
    for (spec, os, arch) in images {
        let image = write_image_blobs(dir, spec)?;
        let mut desc = descriptor(
            &image.manifest_media_type,
            &image.manifest_digest,
            image.manifest_size,
        );
        desc["platform"] = json!({ "os": os, "architecture": arch });
        manifests.push(desc);
        built.push(image);
    }
    let media_type = if docker {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let index = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
    let (digest, size) = write_blob(dir, &serde_json::to_vec_pretty(&index)?)?;
    tag_in_index(dir, tag, descriptor(media_type, &digest, size))?;
    Ok(BuiltIndex {
        layout_dir: dir.into(),
        index_digest: digest,
        index_media_type: media_type.into(),
        images: built,
    })
}

/// Writes the layout at `layout_dir` as one uncompressed tar, the form the
/// `oci-archive:` transport reads (layout files at the archive's top level).
pub fn write_oci_archive(layout_dir: &Path, out_tar: &Path) -> Result<()> {
    let file = File::create(out_tar).with_context(|| format!("creating {}", out_tar.display()))?;
    let mut tar = TarWriter::new(BufWriter::new(file));
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(layout_dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        children.sort();
        for name in children {
            let rel = rel.join(name);
            let abs = layout_dir.join(&rel);
            let name = rel.to_string_lossy().into_owned();
            if abs.is_dir() {
                let name = format!("{name}/");
                let mut h = EntryHeader::new(name.as_bytes(), EntryType::Directory);
                h.mode = 0o755;
                tar.append(&h, &mut io::empty())?;
                stack.push(rel);
            } else {
                let mut f = File::open(&abs)?;
                let mut h = EntryHeader::new(name.as_bytes(), EntryType::Regular);
                h.size = f.metadata()?.len();
                tar.append(&h, &mut f)?;
            }
        }
    }
    tar.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// Reads back the image tagged `tag` from any OCI layout (e.g. one umoci or
/// skopeo wrote), in the same shape [`write_layout`] returns.
pub fn read_layout_image(dir: &Path, tag: &str) -> Result<BuiltImage> {
    let desc = tagged_descriptor(dir, tag)?;
    let manifest_digest = str_field(&desc, "digest")?;
    let manifest: Value = read_json(&layout_blob_path(dir, &manifest_digest))?;
    let config_digest = str_field(&manifest["config"], "digest")?;
    let config: Value = read_json(&layout_blob_path(dir, &config_digest))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    Ok(BuiltImage {
        layout_dir: dir.into(),
        manifest_media_type: str_field(&desc, "mediaType")?,
        manifest_size: desc["size"].as_u64().context("descriptor without size")?,
        manifest_digest,
        config_digest,
        layer_digests: layers
            .iter()
            .map(|l| str_field(l, "digest"))
            .collect::<Result<_>>()?,
        layer_media_types: layers
            .iter()
            .map(|l| str_field(l, "mediaType"))
            .collect::<Result<_>>()?,
        diff_ids: config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                d.as_str()
                    .map(String::from)
                    .context("diff_id is not a string")
            })
            .collect::<Result<_>>()?,
    })
}

/// Writes the image or index tagged `tag` in `layout_dir` in the layout of
/// skopeo's `dir:` transport (`manifest.json`, `<hex>.manifest.json` per
/// index entry, blobs named by hex digest), hard-linking blobs when possible.
///
/// Why: skopeo 1.9's `oci:` transport only looks at index.json entries with
/// OCI media types, so a layout holding a Docker manifest or manifest list
/// cannot be pushed from there; `dir:` copies any manifest verbatim.
pub fn write_dir_transport(layout_dir: &Path, tag: &str, out_dir: &Path) -> Result<()> {
    let desc = tagged_descriptor(layout_dir, tag)?;
    fs::create_dir_all(out_dir)?;
    fs::write(
        out_dir.join("version"),
        "Directory Transport Version: 1.1\n",
    )?;
    let top = str_field(&desc, "digest")?;
    link_blob(layout_dir, &top, &out_dir.join("manifest.json"))?;
    let top_json: Value = read_json(&layout_blob_path(layout_dir, &top))?;
    let mut manifests = vec![top_json.clone()];
    for instance in top_json["manifests"].as_array().into_iter().flatten() {
        let digest = str_field(instance, "digest")?;
        let name = format!("{}.manifest.json", crate::digest_hex(&digest)?);
        link_blob(layout_dir, &digest, &out_dir.join(name))?;
        manifests.push(read_json(&layout_blob_path(layout_dir, &digest))?);
    }
    for manifest in &manifests {
        let blobs = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(Some(&manifest["config"]));
        for blob in blobs.filter(|b| b.is_object()) {
            let digest = str_field(blob, "digest")?;
            link_blob(
                layout_dir,
                &digest,
                &out_dir.join(crate::digest_hex(&digest)?),
            )?;
        }
    }
    Ok(())
}

fn link_blob(layout_dir: &Path, digest: &str, dest: &Path) -> Result<()> {
    let src = layout_blob_path(layout_dir, digest);
    if dest.exists() {
        return Ok(());
    }
    if fs::hard_link(&src, dest).is_err() {
        fs::copy(&src, dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    }
    Ok(())
}

/// The media type of the manifest tagged `tag` in a layout's index.json.
pub fn tagged_media_type(layout_dir: &Path, tag: &str) -> Result<String> {
    str_field(&tagged_descriptor(layout_dir, tag)?, "mediaType")
}

/// The index.json descriptor tagged `tag` in a layout.
fn tagged_descriptor(layout_dir: &Path, tag: &str) -> Result<Value> {
    let index: Value = read_json(&layout_dir.join("index.json"))?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .with_context(|| format!("no tag {tag:?} in {}/index.json", layout_dir.display()))
}

fn write_image_blobs(dir: &Path, spec: &ImageSpec) -> Result<BuiltImage> {
    let docker = spec.docker_media_types;
    let (mut layer_descs, mut layer_digests, mut diff_ids, mut media_types) =
        (vec![], vec![], vec![], vec![]);
    for (i, layer) in spec.layers.iter().enumerate() {
        let media_type = layer_media_type(layer, docker)?;
        let blob = BlobFile::create(dir)?;
        let (blob, diff_id) =
            encode_layer_to(layer, blob).with_context(|| format!("writing layer {i}"))?;
        let (digest, size) = blob.persist()?;
        layer_descs.push(descriptor(&media_type, &digest, size));
        layer_digests.push(digest);
        diff_ids.push(diff_id);
        media_types.push(media_type);
    }

    let created = "2023-11-14T22:13:20Z"; // = tarwriter::MTIME, fixed for stable digests
    let mut container_config =
        json!({ "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] });
    if !spec.labels.is_empty() {
        container_config["Labels"] = json!(spec.labels);
    }
    let history: Vec<Value> = (0..spec.layers.len())
        .map(|i| json!({ "created": created, "created_by": format!("osctl-testutil layer {i}") }))
        .collect();
    let config = json!({
        "created": created,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let (config_digest, config_size) = write_blob(dir, &serde_json::to_vec(&config)?)?;

    let (manifest_mt, config_mt) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_mt,
        "config": descriptor(config_mt, &config_digest, config_size),
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = write_blob(dir, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(BuiltImage {
        layout_dir: dir.into(),
        manifest_digest,
        manifest_media_type: manifest_mt.into(),
        manifest_size,
        config_digest,
        layer_digests,
        diff_ids,
        layer_media_types: media_types,
    })
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

fn init_layout(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating layout {}", dir.display()))?;
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let index = dir.join("index.json");
    if !index.exists() {
        fs::write(
            &index,
            serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [] }))?,
        )?;
    }
    Ok(())
}

/// Points `tag` at `desc` in index.json, replacing an earlier use of the tag.
fn tag_in_index(dir: &Path, tag: &str, mut desc: Value) -> Result<()> {
    let path = dir.join("index.json");
    let mut index: Value = read_json(&path)?;
    desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let manifests = index["manifests"]
        .as_array_mut()
        .context("index.json without manifests")?;
    manifests.retain(|d| d["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(desc);
    fs::write(&path, serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let mut blob = BlobFile::create(dir)?;
    blob.write_all(bytes)?;
    blob.persist()
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn str_field(v: &Value, field: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(String::from)
        .with_context(|| format!("missing string field {field:?} in {v}"))
}

/// A blob being written under a temporary name in `blobs/sha256/`, renamed
/// to its digest once complete, so a half-written blob never has a valid name.
struct BlobFile {
    out: Hashing<BufWriter<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl BlobFile {
    fn create(layout: &Path) -> Result<BlobFile> {
        let dir = layout.join("blobs/sha256");
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
        Ok(BlobFile {
            out: Hashing::new(BufWriter::new(tmp)),
            dir,
        })
    }
    fn persist(self) -> Result<(String, u64)> {
        let digest = self.out.digest();
        let len = self.out.len;
        let tmp = self.out.inner.into_inner().map_err(|e| e.into_error())?;
        let dest = self.dir.join(crate::digest_hex(&digest)?);
        tmp.persist(&dest)
            .with_context(|| format!("renaming blob to {}", dest.display()))?;
        Ok((digest, len))
    }
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
