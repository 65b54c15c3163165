//! Building a layered image's filesystem tree and committing it as EROFS.
//!
//! composefs-oci's `create_filesystem` does this too, but it requires every
//! parent directory of an entry to appear in the layers first. Real layers do
//! not always list them (tools that append single files, layers that rely on
//! a lower layer's directory which a later whiteout removed, …), and container
//! runtimes create such parents implicitly as `0755 root:root`, as `tar -x`
//! does. osctl does the same, so an image that runs in podman also deploys.
//! A whiteout in a directory that does not exist hides nothing and creates
//! nothing.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use composefs::fsverity::Sha256HashValue;
use std::ffi::OsStr;

use composefs::generic_tree::{
    ImageError, OciTransformOptions, XattrFiltering, is_allowed_container_xattr,
};
use composefs::tree::{FileSystem, Stat};
use composefs_oci::LAYER_CONTENT_TYPE;
use composefs_oci::tar::{TarEntry, TarItem};

use crate::StoreError;
use crate::import::Repo;

/// Mode of a directory a layer implies but does not list (`tar -x` as root).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Applies the layers (in `diff_ids` order) to an empty tree, then commits it
/// and records it in the config stream. Blocking: run off the async threads.
pub(crate) fn build_image(
    repo: &Arc<Repo>,
    config_raw: &[u8],
    diff_ids: &[String],
    layers: HashMap<Box<str>, Sha256HashValue>,
    ref_name: &str,
) -> Result<Sha256HashValue, StoreError> {
    let repo_err = |step: &str, e: anyhow::Error| StoreError::Repo(format!("{step}: {e:#}"));
    let fs = build_tree(repo, diff_ids, &layers)?;
    let image_id = fs
        .commit_image(repo, Some(ref_name))
        .map_err(|e| repo_err("writing the EROFS image", e))?;
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
    .map_err(|e| repo_err("writing the config", e))?;
    repo.name_stream(&format!("oci-config-{config_digest}"), ref_name)
        .map_err(|e| repo_err("naming the config stream", e))?;
    tracing::debug!("image committed; syncing the store");
    repo.sync().map_err(|e| repo_err("syncing the store", e))?;
    Ok(image_id)
}

/// The image's filesystem tree: the layers applied in order, made
/// canonical. Reads only the layers' splitstreams, never file contents.
pub(crate) fn build_tree(
    repo: &Repo,
    diff_ids: &[String],
    layers: &HashMap<Box<str>, Sha256HashValue>,
) -> Result<FileSystem<Sha256HashValue>, StoreError> {
    let mut fs = FileSystem::new(Stat::uninitialized());
    for (i, diff_id) in diff_ids.iter().enumerate() {
        let bad = |e: String| StoreError::Malformed(format!("layer {} ({diff_id}): {e}", i + 1));
        let verity = layers
            .get(diff_id.as_str())
            .ok_or_else(|| bad("not in the store".into()))?;
        let mut stream = repo
            .open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))
            .map_err(|e| bad(format!("{e:#}")))?;
        while let Some(entry) =
            composefs_oci::tar::get_entry(&mut stream).map_err(|e| bad(format!("{e:#}")))?
        {
            if !ensure_parents(&mut fs, &entry).map_err(|e| bad(format!("{e:#}")))? {
                continue;
            }
            composefs_oci::image::process_entry(&mut fs, entry)
                .map_err(|e| bad(format!("{e:#}")))?;
        }
    }
    canonicalize(&mut fs)
        .map_err(|e| StoreError::Malformed(format!("building the image filesystem: {e}")))?;
    Ok(fs)
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

/// Creates the missing parent directories of `entry`. Returns false when the
/// entry should be skipped: a whiteout under a directory that does not exist.
fn ensure_parents(
    fs: &mut FileSystem<Sha256HashValue>,
    entry: &TarEntry<Sha256HashValue>,
) -> anyhow::Result<bool> {
    let Some(parent) = entry.path.parent() else {
        return Ok(true);
    };
    if fs.root.get_directory_opt(parent.as_os_str())?.is_some() {
        return Ok(true);
    }
    let is_whiteout = entry
        .path
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b".wh."));
    if is_whiteout {
        return Ok(false);
    }
    let mut missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|a| a.file_name().is_some())
        .collect();
    missing.reverse();
    for dir in missing {
        if fs.root.get_directory_opt(dir.as_os_str())?.is_none() {
            let implied = TarEntry {
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
            };
            composefs_oci::image::process_entry(fs, implied)?;
        }
    }
    Ok(true)
}
