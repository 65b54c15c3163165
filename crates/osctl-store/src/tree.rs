//! Reading files out of a stored image without mounting it.
//!
//! Deploying needs a few things from an image: its kernel and initramfs, its
//! os-release, kargs.d files, and its pristine `/etc` and `/var` to copy.
//! Mounting the composefs image would need root and a kernel with erofs, and
//! ties every deployment test to mount privileges. Instead, [`ImageTree`]
//! rebuilds the image's directory tree from the layer splitstreams (the same
//! tree the EROFS image was made from; ~0.1 s for 17k entries) and reads file
//! contents straight from the store's objects.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions, Permissions, PermissionsExt};
use composefs::fsverity::Sha256HashValue;
use composefs::generic_tree::{Inode, LeafContent, Stat};
use composefs::tree::{FileSystem, RegularFile};
use rustix::fs::{AtFlags, FileType, Mode};
use zerocopy::IntoBytes;

use crate::import::Repo;

/// A regular file's content as the tree holds it.
type File = RegularFile<Sha256HashValue>;
use crate::{BoxError, Damage, ImageRecord, Store, StoreError};

/// Kind of an entry in an image directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Regular,
    Symlink,
    Other,
}

/// What an entry of an image tree is and holds, as [`ImageTree::walk`]
/// reports it: enough to tell two images' entries apart without reading
/// any object.
///
/// A regular file's content is either inline (small files, kept in the
/// layer splitstream itself) or a store object named by its fs-verity
/// digest. Which of the two a file gets depends only on its size, so two
/// files with the same content always have the same representation in one
/// store: comparing these values compares contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    Directory,
    /// A small regular file's bytes.
    Inline(&'a [u8]),
    /// A regular file in a store object: the object's fs-verity digest
    /// (raw bytes) and the file's size.
    Object {
        digest: &'a [u8],
        size: u64,
    },
    /// A regular file with a size and no content (not made by layer import;
    /// listed for completeness).
    Sparse(u64),
    Symlink(&'a OsStr),
    Fifo,
    Socket,
    CharacterDevice(u64),
    BlockDevice(u64),
}

/// One entry of an image tree: its absolute path in the image, content and
/// metadata. The modification time is not part of it: a rebuilt image
/// touches every file, so it says nothing about what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkEntry<'a> {
    pub content: Content<'a>,
    /// Permission bits (`st_mode & 0o7777`); the type is in `content`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: &'a std::collections::BTreeMap<Box<OsStr>, Box<[u8]>>,
}

/// An image's filesystem tree, readable without a mount.
pub struct ImageTree {
    fs: FileSystem<Sha256HashValue>,
    repo: Arc<Repo>,
    reference: String,
}

impl Store {
    /// The filesystem tree of a pulled image.
    pub fn image_tree(&self, record: &ImageRecord) -> Result<ImageTree, StoreError> {
        let (diff_ids, shown, layers) = self.layer_inputs(record)?;
        let fs = crate::image::build_tree(self.repo(), &diff_ids, &shown, &layers)?;
        Ok(ImageTree {
            fs,
            repo: self.repo().clone(),
            reference: record.reference().to_string(),
        })
    }

    /// What building `record`'s tree needs: its diff_ids in order, the
    /// names of its layers for errors, and each layer's stored stream.
    pub(crate) fn layer_inputs(&self, record: &ImageRecord) -> Result<LayerInputs, StoreError> {
        let mut layers = HashMap::new();
        for (i, l) in record.layers().iter().enumerate() {
            let missing = || StoreError::Damaged {
                image: record.reference().to_string(),
                damage: Damage::LayerMissing {
                    layer: format!("layer {} ({})", i + 1, l.digest),
                },
            };
            let d: oci_spec::image::Digest = l.diff_id.parse().map_err(|_| missing())?;
            let verity = self
                .repo()
                .has_stream(&composefs_oci::layer_content_id(&d))
                .map_err(|e| StoreError::Repo {
                    step: format!("looking up layer {} of {}", i + 1, record.reference()),
                    path: self.sysroot().join(crate::REPO_PATH),
                    source: e,
                })?
                .ok_or_else(missing)?;
            layers.insert(l.diff_id.as_str().into(), verity);
        }
        let diff_ids: Vec<String> = record.layers().iter().map(|l| l.diff_id.clone()).collect();
        let shown: Vec<String> = record
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| format!("layer {} ({}) of {}", i + 1, l.digest, record.reference()))
            .collect();
        Ok((diff_ids, shown, layers))
    }
}

/// diff_ids, layer names and layer streams (see [`Store::layer_inputs`]).
pub(crate) type LayerInputs = (Vec<String>, Vec<String>, HashMap<Box<str>, Sha256HashValue>);

impl ImageTree {
    /// `path` in this image is refused: `why` in words.
    fn err(&self, path: &Path, why: impl Into<String>) -> StoreError {
        StoreError::Malformed {
            what: format!("{} in {}", path.display(), self.reference),
            why: why.into(),
        }
    }

    /// `path` in this image cannot be read or exported: `source` says why.
    fn fail(&self, path: &Path, source: impl Into<BoxError>) -> StoreError {
        StoreError::InImage {
            path: path.to_path_buf(),
            reference: self.reference.clone(),
            source: source.into(),
        }
    }

    fn lookup(&self, path: &Path) -> Option<&Inode<File>> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name()?;
        let dir = self.fs.root.get_directory_opt(parent.as_os_str()).ok()??;
        dir.lookup(name)
    }

    /// What is at `path` (absolute within the image), without following a
    /// final symlink; `None` if nothing is.
    pub fn kind(&self, path: &Path) -> Option<EntryKind> {
        if path.file_name().is_none() {
            return Some(EntryKind::Directory);
        }
        Some(match self.lookup(path)? {
            Inode::Directory(_) => EntryKind::Directory,
            Inode::Leaf(id, _) => match &self.fs.leaves[id.0].content {
                LeafContent::Regular(_) => EntryKind::Regular,
                LeafContent::Symlink(_) => EntryKind::Symlink,
                _ => EntryKind::Other,
            },
        })
    }

    /// Names in the directory at `path`, sorted; empty if it is not a directory.
    pub fn list(&self, path: &Path) -> Vec<(String, EntryKind)> {
        let Ok(Some(dir)) = self.fs.root.get_directory_opt(path.as_os_str()) else {
            return Vec::new();
        };
        dir.sorted_entries()
            .map(|(name, _)| {
                let kind = self.kind(&path.join(name)).unwrap_or(EntryKind::Other);
                (name.to_string_lossy().into_owned(), kind)
            })
            .collect()
    }

    /// The directory at `path` and every entry below it, as
    /// `(absolute path, entry)`: `path` itself first (its own metadata is
    /// part of what differs between images), then depth-first with each
    /// directory's names sorted bytewise — which is the order of
    /// [`Path`]'s `Ord` (component by component), so two walks can be
    /// merged like sorted lists. Hard links appear once per name. Empty if
    /// nothing is at `path`; an error if something is but it is not a
    /// directory (or a component leading to it is not), so a caller never
    /// takes "not a directory" for "empty".
    ///
    /// Reads nothing from the store: the tree already holds every entry's
    /// metadata and content address.
    pub fn walk(&self, path: &Path) -> Result<Vec<(PathBuf, WalkEntry<'_>)>, StoreError> {
        let mut out = Vec::new();
        let dir = match self.fs.root.get_directory_opt(path.as_os_str()) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(out),
            Err(e) => return Err(self.err(path, format!("is not a directory ({e})"))),
        };
        out.push((path.to_path_buf(), entry(Content::Directory, &dir.stat)));
        self.walk_dir(dir, path, &mut out);
        Ok(out)
    }

    fn walk_dir<'a>(
        &'a self,
        dir: &'a composefs::generic_tree::Directory<File>,
        at: &Path,
        out: &mut Vec<(PathBuf, WalkEntry<'a>)>,
    ) {
        for (name, inode) in dir.sorted_entries() {
            let here = at.join(name);
            match inode {
                Inode::Directory(sub) => {
                    out.push((here.clone(), entry(Content::Directory, &sub.stat)));
                    self.walk_dir(sub, &here, out);
                }
                Inode::Leaf(id, _) => {
                    let leaf = &self.fs.leaves[id.0];
                    let content = match &leaf.content {
                        LeafContent::Regular(RegularFile::Inline(data)) => Content::Inline(data),
                        LeafContent::Regular(
                            RegularFile::External(oid, size)
                            | RegularFile::ExternalNoVerity(oid, size),
                        ) => Content::Object {
                            digest: oid.as_bytes(),
                            size: *size,
                        },
                        LeafContent::Regular(RegularFile::Sparse(size)) => Content::Sparse(*size),
                        LeafContent::Symlink(to) => Content::Symlink(to),
                        LeafContent::Fifo => Content::Fifo,
                        LeafContent::Socket => Content::Socket,
                        LeafContent::CharacterDevice(d) => Content::CharacterDevice(*d),
                        LeafContent::BlockDevice(d) => Content::BlockDevice(*d),
                    };
                    out.push((here, entry(content, &leaf.stat)));
                }
            }
        }
    }

    /// A reader of the regular file at `path`; `None` if there is none.
    pub fn open(&self, path: &Path) -> Result<Option<Box<dyn Read + Send>>, StoreError> {
        let Some(Inode::Leaf(id, _)) = self.lookup(path) else {
            return Ok(None);
        };
        match &self.fs.leaves[id.0].content {
            LeafContent::Regular(RegularFile::Inline(data)) => {
                Ok(Some(Box::new(std::io::Cursor::new(data.to_vec()))))
            }
            LeafContent::Regular(
                RegularFile::External(oid, _) | RegularFile::ExternalNoVerity(oid, _),
            ) => {
                let fd = self
                    .repo
                    .open_object(oid)
                    .map_err(|e| self.fail(path, e.context("opening its object")))?;
                Ok(Some(Box::new(std::fs::File::from(fd))))
            }
            LeafContent::Regular(_) => Err(self.err(path, "sparse files are not supported")),
            _ => Ok(None),
        }
    }

    /// The whole regular file at `path`, if any.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut r) = self.open(path)? else {
            return Ok(None);
        };
        let mut v = Vec::new();
        r.read_to_end(&mut v).map_err(|e| self.fail(path, e))?;
        Ok(Some(v))
    }

    /// Fails if [`Self::export`] would refuse the subtree at `path`: it
    /// holds a block or character device node. A missing `path` exports
    /// nothing and passes.
    ///
    /// Device nodes are refused rather than copied: staging runs on the
    /// host, before the image ever boots, and a node the image chose (mode
    /// 0666 onto the host's disk, say) would be created in the machine's
    /// `/etc` or `/var` with the image's permissions. `/dev` is an API
    /// filesystem; an OS image has no business shipping nodes anywhere else
    /// (ostree refuses them in commits altogether). Fifos are harmless and
    /// kept with the image's mode.
    pub fn check_exportable(&self, path: &Path) -> Result<(), StoreError> {
        let Ok(Some(dir)) = self.fs.root.get_directory_opt(path.as_os_str()) else {
            return Ok(());
        };
        let mut todo = vec![(dir, path.to_path_buf())];
        while let Some((dir, at)) = todo.pop() {
            for (name, inode) in dir.sorted_entries() {
                let here = at.join(name);
                let kind = match inode {
                    Inode::Directory(sub) => {
                        todo.push((sub, here));
                        continue;
                    }
                    Inode::Leaf(id, _) => match &self.fs.leaves[id.0].content {
                        LeafContent::CharacterDevice(_) => "character device",
                        LeafContent::BlockDevice(_) => "block device",
                        _ => continue,
                    },
                };
                return Err(self.err(
                    &here,
                    format!(
                        "a {kind} node; an image may not carry device nodes in {} \
                         (docs/store.md, \"What an image may carry\")",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Copies the subtree at `path` into `target` (which must exist),
    /// keeping modes, owners, xattrs, symlinks, fifos and hard links.
    /// Nothing outside `target` is touched: every write goes through it.
    /// A subtree with a device node is refused before anything is written
    /// (see [`Self::check_exportable`]).
    pub fn export(&self, path: &Path, target: &Dir) -> Result<(), StoreError> {
        let Ok(Some(dir)) = self.fs.root.get_directory_opt(path.as_os_str()) else {
            return Err(self.err(path, "not a directory"));
        };
        self.check_exportable(path)?;
        let mut links: HashMap<usize, PathBuf> = HashMap::new();
        apply_dir_meta(target, Path::new("."), &dir.stat).map_err(|e| self.fail(path, e))?;
        self.export_dir(dir, Path::new(""), target, &mut links, path)
    }

    fn export_dir(
        &self,
        dir: &composefs::generic_tree::Directory<File>,
        rel: &Path,
        target: &Dir,
        links: &mut HashMap<usize, PathBuf>,
        shown: &Path,
    ) -> Result<(), StoreError> {
        for (name, inode) in dir.sorted_entries() {
            let here = rel.join(name);
            let fail = |e: std::io::Error| self.fail(&shown.join(&here), e);
            match inode {
                Inode::Directory(sub) => {
                    target.create_dir(&here).map_err(fail)?;
                    self.export_dir(sub, &here, target, links, shown)?;
                    apply_dir_meta(target, &here, &sub.stat).map_err(fail)?;
                }
                Inode::Leaf(id, _) => {
                    if let Some(first) = links.get(&id.0) {
                        target.hard_link(first, target, &here).map_err(fail)?;
                        continue;
                    }
                    let leaf = &self.fs.leaves[id.0];
                    self.export_leaf(&leaf.content, &leaf.stat, &here, target, &shown.join(&here))?;
                    links.insert(id.0, here);
                }
            }
        }
        Ok(())
    }

    fn export_leaf(
        &self,
        content: &LeafContent<File>,
        stat: &Stat,
        here: &Path,
        target: &Dir,
        shown: &Path,
    ) -> Result<(), StoreError> {
        let fail = |e: std::io::Error| self.fail(shown, e);
        let mode = stat.st_mode & 0o7777;
        match content {
            LeafContent::Regular(_) => {
                let mut src = self
                    .open(shown)?
                    .ok_or_else(|| self.err(shown, "unreadable"))?;
                let mut f = target
                    .open_with(here, OpenOptions::new().write(true).create_new(true))
                    .map_err(fail)?;
                std::io::copy(&mut src, &mut f).map_err(fail)?;
                f.flush().map_err(fail)?;
                set_xattrs(&f, stat).map_err(fail)?;
                drop(f);
            }
            LeafContent::Symlink(to) => {
                // cap-std refuses absolute link targets (they would escape its
                // sandbox if followed); a link is stored, not followed, here.
                rustix::fs::symlinkat(Path::new(to), target, here).map_err(|e| fail(e.into()))?;
                chown(target, here, stat).map_err(fail)?;
                return Ok(());
            }
            LeafContent::Fifo => mknod(target, here, FileType::Fifo, mode).map_err(fail)?,
            LeafContent::CharacterDevice(_) | LeafContent::BlockDevice(_) => {
                // check_exportable refused the subtree before anything was written.
                return Err(self.err(shown, "device nodes are not exported"));
            }
            LeafContent::Socket => return Ok(()), // sockets are runtime objects
        }
        chown(target, here, stat).map_err(fail)?;
        // chmod after chown: chown clears setuid/setgid bits.
        target
            .set_permissions(here, Permissions::from_mode(mode))
            .map_err(fail)
    }
}

fn entry<'a>(content: Content<'a>, stat: &'a Stat) -> WalkEntry<'a> {
    WalkEntry {
        content,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        xattrs: &stat.xattrs,
    }
}

fn apply_dir_meta(target: &Dir, here: &Path, stat: &Stat) -> std::io::Result<()> {
    chown(target, here, stat)?;
    target.set_permissions(here, Permissions::from_mode(stat.st_mode & 0o7777))?;
    let d = target.open_dir(here)?;
    let fd = rustix::fs::openat(
        &d,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    set_xattrs(&fd, stat)
}

fn chown(target: &Dir, here: &Path, stat: &Stat) -> std::io::Result<()> {
    rustix::fs::chownat(
        target,
        here,
        Some(rustix::fs::Uid::from_raw(stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(stat.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn mknod(target: &Dir, here: &Path, kind: FileType, mode: u32) -> std::io::Result<()> {
    rustix::fs::mknodat(target, here, kind, Mode::from_raw_mode(mode), 0)?;
    Ok(())
}

fn set_xattrs(fd: &impl std::os::fd::AsFd, stat: &Stat) -> std::io::Result<()> {
    for (name, value) in &stat.xattrs {
        let name: &OsStr = name;
        rustix::fs::fsetxattr(fd, name.as_bytes(), value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}
