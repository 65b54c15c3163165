//! Building a layered image's filesystem tree and committing it as EROFS.
//!
//! composefs-oci's `create_filesystem` does this too, but it requires every
//! parent directory of an entry to appear in the layers first. Real layers do
//! not always list them (tools that append single files, layers that rely on
//! a lower layer's directory which a later whiteout removed, …), and container
//! runtimes create such parents implicitly as `0755 root:root`, as `tar -x`
//! does. osctl does the same, so an image that runs in podman also deploys.
//! A whiteout in a directory that does not exist hides nothing and creates
//! nothing; a layer's whiteouts apply to the layers below it only.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use composefs::fsverity::Sha256HashValue;
use std::ffi::OsStr;

use composefs::erofs::writer::ValidatedFileSystem;
use composefs::fsverity::FsVerityHashValue;
use composefs::generic_tree::LeafContent;
use composefs::generic_tree::{
    ImageError, OciTransformOptions, XattrFiltering, is_allowed_container_xattr,
};
use composefs::tree::{FileSystem, RegularFile, Stat};
use composefs_oci::LAYER_CONTENT_TYPE;
use composefs_oci::tar::{TarEntry, TarItem};

use composefs::fsverity::FsVerityHasher;

use composefs::splitstream::SplitStreamReader;

use crate::compact::{CompactTree, ROOT};
use crate::erofs_write;
use crate::import::Repo;
use crate::layer_index::{self, IndexReader, IndexWriter};
use crate::object::{self, VerityStream};
use crate::{BoxError, StoreError, error, limits};

/// Mode of a directory a layer implies but does not list (`tar -x` as root).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Where [`build_image`] works: the store (for errors) and the layer
/// indexes ([`crate::layer_index`]).
pub(crate) struct BuildPaths<'a> {
    pub store: &'a Path,
    pub index_dir: &'a Path,
}

/// Applies the layers (in `diff_ids` order) to an empty tree, then commits it
/// and records it in the config stream. Blocking: run off the async threads.
pub(crate) fn build_image(
    repo: &Arc<Repo>,
    paths: BuildPaths<'_>,
    config_raw: &[u8],
    diff_ids: &[String],
    shown: &[String],
    layers: HashMap<Box<str>, Sha256HashValue>,
    ref_name: &str,
) -> Result<Sha256HashValue, StoreError> {
    let BuildPaths {
        store: store_path,
        index_dir,
    } = paths;
    let write_err = |step: &str, e: anyhow::Error| error::repo_write_error(store_path, step, e);
    let image_id = if erofs_write::supported(repo.format_config().default) {
        let tree = build_compact(repo, Some(index_dir), diff_ids, shown, &layers)?;
        commit_compact(repo, store_path, tree, ref_name)?
    } else {
        commit_with_composefs(repo, store_path, diff_ids, shown, &layers, ref_name)?
    };
    // The config stream names its layers and the image, so GC walking from
    // the config (rooted by the record's ref) keeps all of them.
    let (config_digest, _) = composefs_oci::write_config_raw(
        repo,
        config_raw,
        layers,
        Some(&image_id),
        None,
        &HashMap::new(),
    )
    .map_err(|e| write_err("writing the config", e))?;
    repo.name_stream(&format!("oci-config-{config_digest}"), ref_name)
        .map_err(|e| write_err("naming the config stream", e))?;
    tracing::debug!("image committed; syncing the store");
    repo.sync().map_err(|e| write_err("syncing the store", e))?;
    Ok(image_id)
}

/// The image of `tree`, streamed into a new store object by our own
/// writer ([`erofs_write`]) and named `ref_name`: memory does not grow with
/// the image's size.
fn commit_compact(
    repo: &Repo,
    store_path: &Path,
    mut tree: CompactTree,
    ref_name: &str,
) -> Result<Sha256HashValue, StoreError> {
    let write_err = |step: &str, e: anyhow::Error| error::repo_write_error(store_path, step, e);
    let tmp = repo
        .create_object_tmpfile()
        .map_err(|e| write_err("creating the EROFS image file", e))?;
    let mut file = std::fs::File::from(tmp);
    let mut verity = VerityStream::new();
    let size = {
        let tee = Tee {
            file: &mut file,
            verity: &mut verity,
        };
        let out = std::io::BufWriter::with_capacity(IMAGE_WRITE_BUFFER, tee);
        erofs_write::write_image(&mut tree, out).map_err(|e| match e {
            erofs_write::Failure::Invalid(e) => StoreError::Unparsable {
                what: "building the image filesystem".into(),
                source: e.into(),
            },
            erofs_write::Failure::Write(e) => write_err("writing the EROFS image", e),
        })?
    };
    drop(tree);
    let image_id = verity.finish();
    // composefs-rs does not rewrite an object whose name already exists; a
    // damaged copy of this very image would stay.
    remove_if_damaged_object(repo, &image_id)
        .map_err(|e| error::write_error(store_path, "replacing a damaged EROFS image", e))?;
    if repo.is_insecure() {
        // The digest is the one just computed from the written bytes;
        // composefs-rs would read the image back to compute it again.
        let objects = repo
            .objects_dir()
            .map_err(|e| write_err("opening the objects directory", e.into()))?;
        object::link_tmpfile(objects.as_fd(), &file, &image_id, &Cell::new(false))
            .map_err(|(step, e)| error::write_error(store_path, step, e.into()))?;
    } else {
        let (written, _) = repo
            .finalize_object_tmpfile(file, size)
            .map_err(|e| write_err("storing the EROFS image", e))?;
        if written != image_id {
            return Err(write_err(
                "storing the EROFS image",
                anyhow::anyhow!(
                    "stored as {} but written as {}",
                    written.to_hex(),
                    image_id.to_hex()
                ),
            ));
        }
    }
    let image_path = format!("images/{}", image_id.to_hex());
    repo.symlink(
        &image_path,
        format!("objects/{}", image_id.to_object_pathname()),
    )
    .map_err(|e| write_err("linking the EROFS image", e))?;
    repo.symlink(format!("images/refs/{ref_name}"), &image_path)
        .map_err(|e| write_err("naming the EROFS image", e))?;
    Ok(image_id)
}

/// Write buffer of the streamed EROFS image.
const IMAGE_WRITE_BUFFER: usize = 256 * 1024;

/// Writes to the image file and its fs-verity digest at once.
struct Tee<'a> {
    file: &'a mut std::fs::File,
    verity: &'a mut VerityStream,
}

impl std::io::Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all(buf)?;
        self.verity.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// composefs-rs's path, for store formats our writer does not make: the
/// whole tree, cloned by the writer, and the image in memory.
fn commit_with_composefs(
    repo: &Repo,
    store_path: &Path,
    diff_ids: &[String],
    shown: &[String],
    layers: &HashMap<Box<str>, Sha256HashValue>,
    ref_name: &str,
) -> Result<Sha256HashValue, StoreError> {
    let (bytes, image_id) = image_bytes_with_composefs(repo, diff_ids, shown, layers)?;
    remove_if_damaged(repo, &image_id, &bytes)
        .map_err(|e| error::write_error(store_path, "replacing a damaged EROFS image", e))?;
    let written = repo
        .write_image(Some(ref_name), &bytes)
        .map_err(|e| error::repo_write_error(store_path, "writing the EROFS image", e))?;
    debug_assert_eq!(written, image_id);
    Ok(image_id)
}

/// The EROFS image composefs-rs makes of the layers, and its id.
pub(crate) fn image_bytes_with_composefs(
    repo: &Repo,
    diff_ids: &[String],
    shown: &[String],
    layers: &HashMap<Box<str>, Sha256HashValue>,
) -> Result<(Box<[u8]>, Sha256HashValue), StoreError> {
    let fs = build_tree(repo, diff_ids, shown, layers)?;
    let fs = ValidatedFileSystem::new(fs).map_err(|e| StoreError::Unparsable {
        what: "building the image filesystem".into(),
        source: e.into(),
    })?;
    Ok(fs.compute_image_bytes(repo.format_config().default))
}

/// Removes the object `id` if it exists with content whose fs-verity
/// digest is not `id` (read in blocks, not into memory).
fn remove_if_damaged_object(repo: &Repo, id: &Sha256HashValue) -> std::io::Result<()> {
    let objects = repo.objects_dir()?;
    let fd = match rustix::fs::openat(
        objects,
        id.to_object_pathname().as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut hasher = FsVerityHasher::<Sha256HashValue>::new();
    std::io::copy(&mut std::fs::File::from(fd), &mut hasher)?;
    if hasher.digest() != *id {
        tracing::warn!("replacing a damaged copy of EROFS image {}", id.to_hex());
        remove_object(repo, id)?;
    }
    Ok(())
}

/// Removes the object `id`; a missing object is not an error.
pub(crate) fn remove_object(repo: &Repo, id: &Sha256HashValue) -> std::io::Result<()> {
    let objects = repo.objects_dir()?;
    match rustix::fs::unlinkat(
        objects,
        id.to_object_pathname().as_str(),
        rustix::fs::AtFlags::empty(),
    ) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the object `id` if it exists with content other than `bytes`: a
/// damaged copy (truncated, overwritten) that composefs-rs would otherwise
/// keep in place of a good one.
pub(crate) fn remove_if_damaged(
    repo: &Repo,
    id: &Sha256HashValue,
    bytes: &[u8],
) -> std::io::Result<()> {
    let objects = repo.objects_dir()?;
    let path = id.to_object_pathname();
    let fd = match rustix::fs::openat(
        objects,
        path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut stored = Vec::with_capacity(bytes.len());
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut stored)?;
    if stored != bytes {
        tracing::warn!("replacing a damaged copy of EROFS image {}", id.to_hex());
        remove_object(repo, id)?;
    }
    Ok(())
}

/// The splitstream of the layer with `diff_id`; `shown` names the layer
/// when it is not in the store.
fn stored_layer<'a>(
    layers: &'a HashMap<Box<str>, Sha256HashValue>,
    diff_id: &str,
    shown: &str,
) -> Result<&'a Sha256HashValue, StoreError> {
    layers.get(diff_id).ok_or_else(|| StoreError::Malformed {
        what: shown.to_string(),
        why: "not in the store".into(),
    })
}

/// The image's filesystem tree: the layers applied in order, made
/// canonical. Reads only the layers' splitstreams, never file contents.
/// `shown[i]` names layer `i` in errors ("layer 2 (sha256:…) of REF").
///
/// Each layer is read twice: first for its whiteouts and opaque markers,
/// then for everything else. The OCI image spec has a layer's whiteouts
/// apply to the layers below it only, wherever they sit in the tar; applied
/// in tar order, a whiteout after an entry of its own layer would delete it
/// (and an opaque marker would empty what the layer just put in the
/// directory). Two passes keep the memory use of one.
pub(crate) fn build_tree(
    repo: &Repo,
    diff_ids: &[String],
    shown: &[String],
    layers: &HashMap<Box<str>, Sha256HashValue>,
) -> Result<FileSystem<Sha256HashValue>, StoreError> {
    let mut fs = FileSystem::new(Stat::uninitialized());
    for (i, diff_id) in diff_ids.iter().enumerate() {
        let bad = |source: BoxError| StoreError::Unparsable {
            what: shown[i].clone(),
            source,
        };
        let verity = stored_layer(layers, diff_id, &shown[i])?;
        for whiteouts in [true, false] {
            let mut stream = repo
                .open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))
                .map_err(|e| bad(e.into()))?;
            while let Some(entry) =
                composefs_oci::tar::get_entry(&mut stream).map_err(|e| bad(e.into()))?
            {
                match (whiteout(&entry), whiteouts) {
                    (Some(w), true) => apply_whiteout(&mut fs, &entry, w),
                    (None, false) => {
                        // Layers imported before these limits existed are
                        // checked here, before a tree walk can recurse too
                        // deep.
                        check_limits(&entry).map_err(|why| StoreError::Malformed {
                            what: shown[i].clone(),
                            why,
                        })?;
                        let at = describe(&entry);
                        ensure_parents(&mut fs, &entry)
                            .and_then(|()| composefs_oci::image::process_entry(&mut fs, entry))
                            .map_err(|e| StoreError::Unparsable {
                                what: format!("{}: {at}", shown[i]),
                                source: e.into(),
                            })?;
                    }
                    _ => {}
                }
            }
        }
    }
    canonicalize(&mut fs).map_err(|e| StoreError::Unparsable {
        what: "building the image filesystem".into(),
        source: e.into(),
    })?;
    Ok(fs)
}

/// [`build_tree`] into a [`CompactTree`]: the same layers, the same
/// rules, the same tree, in a fraction of the memory (see
/// [`crate::compact`]). The two are kept equal by the equivalence tests of
/// [`crate::erofs_write`].
///
/// With `index_dir`, each layer's entries come from its index
/// ([`crate::layer_index`]) when it has a valid one; otherwise from its
/// splitstream, and the whiteout pass writes the index on the way, which
/// the second pass then reads. Without, from the splitstreams only (the
/// equivalence tests' reference path).
pub(crate) fn build_compact(
    repo: &Repo,
    index_dir: Option<&Path>,
    diff_ids: &[String],
    shown: &[String],
    layers: &HashMap<Box<str>, Sha256HashValue>,
) -> Result<CompactTree, StoreError> {
    let mut tree = CompactTree::new(kept_xattr);
    for (i, diff_id) in diff_ids.iter().enumerate() {
        let bad = |source: BoxError| StoreError::Unparsable {
            what: shown[i].clone(),
            source,
        };
        let verity = stored_layer(layers, diff_id, &shown[i])?;
        let (wanted, indexed) = whiteout_pass(repo, index_dir, verity, &mut tree).map_err(&bad)?;
        tree.reserve(wanted.entries, wanted.objects, wanted.bytes)
            .map_err(|e| bad(e.into()))?;
        let mut source = match (index_dir, indexed) {
            (Some(dir), true) => match IndexReader::open(dir, verity) {
                Ok(Some(reader)) => Source::Index(reader),
                Ok(None) => {
                    return Err(bad(format!(
                        "its index {} disappeared during the build",
                        layer_index::index_path(dir, verity).display()
                    )
                    .into()));
                }
                Err(e) => return Err(bad(e.into())),
            },
            _ => Source::Stream(open_layer(repo, verity).map_err(&bad)?),
        };
        while let Some(entry) = source.next().map_err(&bad)? {
            if whiteout(&entry).is_some() {
                continue;
            }
            check_limits(&entry).map_err(|why| StoreError::Malformed {
                what: shown[i].clone(),
                why,
            })?;
            ensure_parents_compact(&mut tree, &entry)
                .and_then(|()| tree.process_entry(&entry))
                .map_err(|e| StoreError::Unparsable {
                    what: format!("{}: {}", shown[i], describe(&entry)),
                    source: e.into(),
                })?;
        }
    }
    canonicalize_compact(&mut tree).map_err(|e| StoreError::Unparsable {
        what: "building the image filesystem".into(),
        source: e.into(),
    })?;
    Ok(tree)
}

/// A layer's entries, from its splitstream or its index.
enum Source {
    Stream(SplitStreamReader<Sha256HashValue>),
    Index(IndexReader),
}

impl Source {
    fn next(&mut self) -> Result<Option<TarEntry<Sha256HashValue>>, BoxError> {
        match self {
            Source::Stream(stream) => Ok(composefs_oci::tar::get_entry(stream)?),
            Source::Index(index) => Ok(index.next_entry()?),
        }
    }
}

fn open_layer(
    repo: &Repo,
    verity: &Sha256HashValue,
) -> Result<SplitStreamReader<Sha256HashValue>, BoxError> {
    Ok(repo.open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))?)
}

/// The first pass over a layer: applies its whiteouts to the tree and
/// counts what its other entries need. Reads the layer's index if it has
/// a valid one (the whiteouts are applied only once the whole index has
/// checked out); else its splitstream, writing the index on the way when
/// `index_dir` is given. Returns the counts and whether the layer now has
/// a valid index.
fn whiteout_pass(
    repo: &Repo,
    index_dir: Option<&Path>,
    verity: &Sha256HashValue,
    tree: &mut CompactTree,
) -> Result<(Wanted, bool), BoxError> {
    let Some(dir) = index_dir else {
        return stream_whiteout_pass(repo, verity, tree, None);
    };
    match IndexReader::open(dir, verity) {
        Ok(Some(mut reader)) => {
            let mut wanted = Wanted::default();
            let mut whiteouts = Vec::new();
            let read = loop {
                match reader.next_entry() {
                    Ok(Some(entry)) if whiteout(&entry).is_some() => whiteouts.push(entry),
                    Ok(Some(entry)) => wanted.count(&entry),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match read {
                Ok(()) => {
                    for entry in &whiteouts {
                        if let Some(w) = whiteout(entry) {
                            apply_whiteout_compact(tree, entry, w);
                        }
                    }
                    return Ok((wanted, true));
                }
                Err(e) => tracing::warn!("{e}; making it again from the layer's splitstream"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; making it again from the layer's splitstream"),
    }
    let size = repo
        .objects_dir()
        .and_then(|objects| layer_index::stream_size(objects.as_fd(), verity));
    let writer = match size
        .map_err(std::io::Error::from)
        .map_err(|source| layer_index::IndexError::Io {
            path: layer_index::index_path(dir, verity),
            step: "sizing its splitstream",
            source,
        })
        .and_then(|size| IndexWriter::create(dir, verity, size))
    {
        Ok(w) => Some(w),
        Err(e) => {
            // The index only saves time: the layer is read from its
            // splitstream, as before there were indexes.
            tracing::warn!("{e}; reading the layer from its splitstream");
            None
        }
    };
    stream_whiteout_pass(repo, verity, tree, writer)
}

/// [`whiteout_pass`] over the splitstream, handing every entry to `writer`.
fn stream_whiteout_pass(
    repo: &Repo,
    verity: &Sha256HashValue,
    tree: &mut CompactTree,
    mut writer: Option<IndexWriter>,
) -> Result<(Wanted, bool), BoxError> {
    let mut wanted = Wanted::default();
    let mut stream = open_layer(repo, verity)?;
    loop {
        let entry = match composefs_oci::tar::get_entry(&mut stream) {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                if let Some(w) = writer {
                    w.abandon();
                }
                return Err(e.into());
            }
        };
        if let Some(w) = &mut writer
            && let Err(e) = w.push(&entry)
        {
            // An entry the index cannot hold (the build refuses it below)
            // or a failed write: no index for this layer.
            tracing::warn!("{e}; not indexing this layer");
            if let Some(w) = writer.take() {
                w.abandon();
            }
        }
        match whiteout(&entry) {
            Some(w) => apply_whiteout_compact(tree, &entry, w),
            None => wanted.count(&entry),
        }
    }
    let Some(w) = writer else {
        return Ok((wanted, false));
    };
    match w.commit() {
        Ok(()) => Ok((wanted, true)),
        Err(e) => {
            tracing::warn!("{e}; reading the layer from its splitstream");
            Ok((wanted, false))
        }
    }
}

/// What a layer's entries will add to a [`CompactTree`] at most, counted
/// in the whiteout pass so the tree's tables grow once per layer by what
/// they need instead of doubling (which leaves up to half of them unused at
/// the build's peak).
#[derive(Default)]
struct Wanted {
    entries: usize,
    objects: usize,
    bytes: usize,
}

impl Wanted {
    fn count(&mut self, entry: &TarEntry<Sha256HashValue>) {
        self.entries += 1;
        self.bytes += entry.path.file_name().map_or(0, |n| n.len());
        match &entry.item {
            TarItem::Leaf(LeafContent::Regular(RegularFile::External(..))) => self.objects += 1,
            TarItem::Leaf(LeafContent::Regular(RegularFile::Inline(data))) => {
                self.bytes += data.len()
            }
            TarItem::Leaf(LeafContent::Symlink(target)) => self.bytes += target.len(),
            _ => {}
        }
    }
}

/// The xattrs [`canonicalize`] keeps.
fn kept_xattr(name: &[u8]) -> bool {
    is_allowed_container_xattr(OsStr::from_bytes(name)) || name.starts_with(b"user.")
}

/// [`apply_whiteout`] on a [`CompactTree`].
fn apply_whiteout_compact(tree: &mut CompactTree, entry: &TarEntry<Sha256HashValue>, w: Whiteout) {
    let Some(parent) = entry.path.parent() else {
        return;
    };
    let Ok(Some(dir)) = tree.dir_opt(parent) else {
        return;
    };
    match w {
        Whiteout::Opaque => tree.clear(dir),
        Whiteout::Name(name) if !name.is_empty() => tree.remove(dir, name.as_bytes()),
        Whiteout::Name(_) => {}
    }
}

/// [`ensure_parents`] on a [`CompactTree`].
fn ensure_parents_compact(
    tree: &mut CompactTree,
    entry: &TarEntry<Sha256HashValue>,
) -> anyhow::Result<()> {
    create_missing_parents(
        tree,
        entry,
        |tree, dir| Ok(tree.dir_opt(dir)?.is_some()),
        |tree, dir| tree.process_entry(&implied_dir(dir)),
    )
}

/// [`canonicalize`] on a [`CompactTree`] (its xattrs were filtered as
/// they were added).
fn canonicalize_compact(tree: &mut CompactTree) -> Result<(), ImageError> {
    if let Some(usr) = tree.dir_opt(Path::new("usr"))? {
        // composefs's transform_for_oci: the root takes /usr's metadata, and
        // /run is emptied and takes /usr's mtime.
        let usr = tree.nodes[usr as usize];
        let root = &mut tree.nodes[ROOT as usize];
        root.mode = usr.mode;
        root.uid = usr.uid;
        root.gid = usr.gid;
        root.mtime_sec = usr.mtime_sec;
        root.mtime_nsec = usr.mtime_nsec;
        root.xattrs = usr.xattrs;
        if let Some(run) = tree.dir_opt(Path::new("run"))? {
            let node = &mut tree.nodes[run as usize];
            node.mtime_sec = usr.mtime_sec;
            node.mtime_nsec = usr.mtime_nsec;
            tree.clear(run);
        }
        return Ok(());
    }
    let root = &mut tree.nodes[ROOT as usize];
    if root.mode == 0 {
        root.mode = IMPLICIT_DIR_MODE;
    }
    if let Some(run) = tree.dir_opt(Path::new("run"))?
        && tree.has_entries(run)
    {
        tree.clear(run);
    }
    Ok(())
}

/// What a whiteout entry removes.
enum Whiteout<'a> {
    /// `.wh.<name>`: `name` in the entry's directory.
    Name(&'a OsStr),
    /// `.wh..wh..opq`: everything lower layers put in the directory.
    Opaque,
}

fn whiteout(entry: &TarEntry<Sha256HashValue>) -> Option<Whiteout<'_>> {
    let name = entry.path.file_name()?.as_bytes().strip_prefix(b".wh.")?;
    Some(if name == b".wh..opq" {
        Whiteout::Opaque
    } else {
        Whiteout::Name(OsStr::from_bytes(name))
    })
}

/// Applies a whiteout to what the lower layers built. One whose directory
/// does not exist, or is not a directory, hides nothing and creates
/// nothing; so does `.wh.` with an empty name.
fn apply_whiteout(
    fs: &mut FileSystem<Sha256HashValue>,
    entry: &TarEntry<Sha256HashValue>,
    w: Whiteout,
) {
    let Some(parent) = entry.path.parent() else {
        return;
    };
    if !matches!(fs.root.get_directory_opt(parent.as_os_str()), Ok(Some(_))) {
        return;
    }
    let Ok(dir) = fs.root.get_directory_mut(parent.as_os_str()) else {
        return;
    };
    match w {
        Whiteout::Opaque => dir.clear(),
        Whiteout::Name(name) if !name.is_empty() => dir.remove(name),
        Whiteout::Name(_) => {}
    }
}

/// "tar entry 'usr/l' (hard link to 'usr/t')", for errors.
fn describe(entry: &TarEntry<Sha256HashValue>) -> String {
    let path = limits::shown(entry.path.as_os_str().as_bytes());
    let path = path.trim_start_matches('/');
    match &entry.item {
        TarItem::Hardlink(target) => format!(
            "tar entry '{path}' (hard link to '{}')",
            limits::shown(target.as_bytes()).trim_start_matches('/')
        ),
        _ => format!("tar entry '{path}'"),
    }
}

/// The limits of [`crate::limits`] on one entry of a stored layer.
fn check_limits(entry: &TarEntry<Sha256HashValue>) -> Result<(), String> {
    let path = entry.path.as_os_str().as_bytes();
    limits::check_path(path, "tar entry")?;
    if let TarItem::Leaf(LeafContent::Symlink(target)) = &entry.item {
        limits::check_symlink_target(path, target.as_bytes())?;
    }
    for (name, value) in &entry.stat.xattrs {
        limits::check_xattr(path, name.as_bytes(), value)?;
    }
    Ok(())
}

/// What a container runtime would present, made deterministic (composefs
/// `transform_for_oci`, as bootc's composefs backend applies it):
/// - the root directory takes `/usr`'s metadata (layers rarely carry `./`);
/// - `/run` is emptied: it is a tmpfs at runtime, and build tools leave
///   mount-point stubs in it;
/// - xattrs: `security.capability` and `user.*` are kept; others are dropped
///   (`security.selinux` labels leak from the build host and are relabelled
///   from policy on the target; `trusted.*` is reserved for overlayfs).
///
/// An image without `/usr` (not an OS image, but pullable for inspection)
/// gets a `0755 root:root` root instead of failing.
fn canonicalize(fs: &mut FileSystem<Sha256HashValue>) -> Result<(), ImageError> {
    let options = OciTransformOptions {
        xattrs: XattrFiltering::KeepUserXattrs,
    };
    if fs.root.get_directory_opt(OsStr::new("usr"))?.is_some() {
        return fs.transform_for_oci(&options);
    }
    if fs.root.stat.st_mode == 0 {
        fs.root.stat.st_mode = IMPLICIT_DIR_MODE;
    }
    if let Some(run) = fs.root.get_directory_opt(OsStr::new("run"))?
        && run.entries().next().is_some()
    {
        fs.root.get_directory_mut(OsStr::new("run"))?.clear();
    }
    fs.filter_xattrs(|name| {
        is_allowed_container_xattr(name) || name.as_encoded_bytes().starts_with(b"user.")
    });
    fs.compact();
    Ok(())
}

/// Creates the missing parent directories of `entry`, as `tar -x` does.
fn ensure_parents(
    fs: &mut FileSystem<Sha256HashValue>,
    entry: &TarEntry<Sha256HashValue>,
) -> anyhow::Result<()> {
    create_missing_parents(
        fs,
        entry,
        |fs, dir| Ok(fs.root.get_directory_opt(dir.as_os_str())?.is_some()),
        |fs, dir| composefs_oci::image::process_entry(fs, implied_dir(dir)),
    )
}

/// The walk both trees share: `entry`'s parent and each missing ancestor,
/// top down, made with `make` where `is_dir` says there is none.
fn create_missing_parents<T>(
    tree: &mut T,
    entry: &TarEntry<Sha256HashValue>,
    is_dir: impl Fn(&T, &Path) -> anyhow::Result<bool>,
    mut make: impl FnMut(&mut T, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(parent) = entry.path.parent() else {
        return Ok(());
    };
    if is_dir(tree, parent)? {
        return Ok(());
    }
    let mut missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|a| a.file_name().is_some())
        .collect();
    missing.reverse();
    for dir in missing {
        if !is_dir(tree, dir)? {
            make(tree, dir)?;
        }
    }
    Ok(())
}

/// The entry of a directory a layer implies but does not list.
fn implied_dir(dir: &Path) -> TarEntry<Sha256HashValue> {
    TarEntry {
        path: dir.to_path_buf(),
        stat: Stat {
            st_mode: IMPLICIT_DIR_MODE,
            st_uid: 0,
            st_gid: 0,
            st_mtim_sec: 0,
            st_mtim_nsec: 0,
            xattrs: Default::default(),
        },
        item: TarItem::Directory,
    }
}
