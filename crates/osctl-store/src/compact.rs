//! The image's filesystem tree in a compact form, for building its EROFS
//! image with memory that grows by tens of bytes per entry.
//!
//! composefs-rs's `FileSystem` keeps a `BTreeMap` per directory with a boxed
//! name per entry and a full `Stat` (with its own xattr map) per inode, and
//! its EROFS writer clones that tree and builds a second structure per inode
//! (boxed xattrs included) before it writes the image into memory: about
//! 1.1 KiB per entry in all (docs/performance.md). Here every node is one
//! flat 40-byte record, every directory entry a 20-byte record, names,
//! symlink targets and inline file contents live in one byte arena, object
//! ids in one table, and xattr sets are interned (almost every file has
//! none, and those that have them mostly share the same few).
//!
//! Entries are found by (directory, name) through one hash table of entry
//! indices; a directory's entries are a linked list, so emptying a directory
//! (an opaque whiteout) costs its own entries only. Removed entries stay in
//! the arena as garbage: the tree is built once from the layers and thrown
//! away, so the garbage is bounded by the layers' own entries.
//!
//! The tree is built to the same semantics as composefs-rs's `FileSystem`
//! as [`crate::image`] fills it (`process_entry`, `merge`, whiteouts,
//! implied parents, canonicalisation): the equivalence tests in
//! [`crate::erofs_write`] compare the EROFS images both paths produce.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use anyhow::{Context, ensure};
use composefs::fsverity::Sha256HashValue;
use composefs::generic_tree::{ImageError, LeafContent, Stat};
use composefs::tree::RegularFile;
use composefs_oci::tar::{TarEntry, TarItem};
use foldhash::{HashMap, HashMapExt as _};
use hashbrown::HashTable;

/// "No entry" in a link field.
pub(crate) const NONE: u32 = u32::MAX;
/// The root directory's node.
pub(crate) const ROOT: u32 = 0;
/// The interned empty xattr set.
pub(crate) const NO_XATTRS: u32 = 0;

/// What a node is; the meaning of [`Node::a`] and [`Node::b`] follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// While building: `a` is the head of the entry list. Frozen: `a` is
    /// the start of its entries in [`CompactTree::sorted`], `b` their count.
    Dir,
    /// A regular file whose bytes are in the arena at `a`, `b` long.
    Inline,
    /// A regular file in a store object: `a` indexes [`CompactTree::objects`].
    External,
    /// Target in the arena at `a`, `b` long.
    Symlink,
    /// Device number `a | b << 32`.
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One inode: metadata and what it holds. 40 bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub mtime_sec: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_nsec: u32,
    /// Index of its interned xattr set ([`NO_XATTRS`] for none).
    pub xattrs: u32,
    pub a: u32,
    pub b: u32,
    pub kind: Kind,
}

impl Node {
    pub(crate) fn rdev(&self) -> u64 {
        u64::from(self.a) | (u64::from(self.b) << 32)
    }
}

/// One directory entry. 20 bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub parent: u32,
    pub name_off: u32,
    /// The node this entry names; [`NONE`] once removed.
    pub child: u32,
    /// The next entry of the same directory ([`NONE`] at the end).
    next: u32,
    pub name_len: u16,
}

/// An xattr set: (name, value) pairs sorted by name.
pub(crate) type XattrSet = Box<[(Box<[u8]>, Box<[u8]>)]>;

/// Which xattrs a tree keeps (the rest are dropped as they are interned).
pub(crate) type XattrFilter = fn(&[u8]) -> bool;

/// See the module documentation.
pub(crate) struct CompactTree {
    pub nodes: Vec<Node>,
    pub entries: Vec<Entry>,
    /// Names, symlink targets and inline file contents.
    pub arena: Vec<u8>,
    /// Object id and file size of each external file.
    pub objects: Vec<(Sha256HashValue, u64)>,
    pub xattr_sets: Vec<XattrSet>,
    xattr_ids: HashMap<XattrSet, u32>,
    filter: XattrFilter,
    /// Entry indices, found by (parent, name). Emptied by [`Self::freeze`].
    lookup: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Frozen: each directory's entry indices, sorted by name.
    pub sorted: Vec<u32>,
}

/// The arena is addressed with u32 offsets.
const ARENA_MAX: usize = u32::MAX as usize;
/// Room [`CompactTree::reserve`] adds for implied parent directories: one
/// per this many entries, and at least this many, of about this length.
const IMPLIED_SHARE: usize = 100;
const IMPLIED_MIN: usize = 64;
const IMPLIED_NAME_BYTES: usize = 16;

/// Keeps every xattr (a tree made from another, already filtered).
#[cfg(test)]
fn keep_all(_: &[u8]) -> bool {
    true
}

impl CompactTree {
    /// An empty tree whose root has composefs's "uninitialized" metadata
    /// (mode 0), keeping only the xattrs `filter` accepts.
    pub(crate) fn new(filter: XattrFilter) -> Self {
        let mut tree = CompactTree {
            nodes: Vec::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            objects: Vec::new(),
            xattr_sets: vec![Box::default()],
            xattr_ids: HashMap::from_iter([(XattrSet::default(), NO_XATTRS)]),
            filter,
            lookup: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            sorted: Vec::new(),
        };
        let root = tree.node(&Stat::uninitialized(), Kind::Dir, NONE, 0);
        debug_assert_eq!(root, ROOT);
        tree
    }

    pub(crate) fn name(&self, entry: u32) -> &[u8] {
        let e = &self.entries[entry as usize];
        self.bytes(e.name_off, u32::from(e.name_len))
    }

    pub(crate) fn bytes(&self, off: u32, len: u32) -> &[u8] {
        &self.arena[off as usize..off as usize + len as usize]
    }

    fn store(&mut self, bytes: &[u8]) -> anyhow::Result<u32> {
        let off = self.arena.len();
        ensure!(
            off + bytes.len() <= ARENA_MAX,
            "the image's names and inline contents exceed {ARENA_MAX} bytes"
        );
        self.arena.extend_from_slice(bytes);
        Ok(off as u32)
    }

    fn intern_xattrs(&mut self, stat: &Stat) -> u32 {
        let filter = self.filter;
        let set: XattrSet = stat
            .xattrs
            .iter()
            .filter(|(name, _)| filter(name.as_bytes()))
            .map(|(name, value)| (Box::from(name.as_bytes()), value.clone()))
            .collect();
        if let Some(id) = self.xattr_ids.get(&set) {
            return *id;
        }
        let id = self.xattr_sets.len() as u32;
        self.xattr_sets.push(set.clone());
        self.xattr_ids.insert(set, id);
        id
    }

    fn set_meta(&mut self, node: u32, stat: &Stat) {
        let xattrs = self.intern_xattrs(stat);
        let n = &mut self.nodes[node as usize];
        n.mode = stat.st_mode;
        n.uid = stat.st_uid;
        n.gid = stat.st_gid;
        n.mtime_sec = stat.st_mtim_sec;
        n.mtime_nsec = stat.st_mtim_nsec;
        n.xattrs = xattrs;
    }

    fn node(&mut self, stat: &Stat, kind: Kind, a: u32, b: u32) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            mtime_sec: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_nsec: 0,
            xattrs: NO_XATTRS,
            a,
            b,
            kind,
        });
        self.set_meta(id, stat);
        id
    }

    /// A new node for a leaf's content.
    fn leaf(
        &mut self,
        stat: &Stat,
        content: &LeafContent<RegularFile<Sha256HashValue>>,
    ) -> anyhow::Result<u32> {
        let split = |rdev: u64| (rdev as u32, (rdev >> 32) as u32);
        let (kind, a, b) = match content {
            LeafContent::Regular(RegularFile::Inline(data)) => {
                (Kind::Inline, self.store(data)?, data.len() as u32)
            }
            LeafContent::Regular(RegularFile::External(id, size)) => {
                self.objects.push((id.clone(), *size));
                (Kind::External, (self.objects.len() - 1) as u32, 0)
            }
            LeafContent::Regular(RegularFile::ExternalNoVerity(..) | RegularFile::Sparse(_)) => {
                anyhow::bail!("a regular file without content or without a verity digest")
            }
            LeafContent::Symlink(target) => (
                Kind::Symlink,
                self.store(target.as_bytes())?,
                target.len() as u32,
            ),
            LeafContent::CharacterDevice(rdev) => {
                let (a, b) = split(*rdev);
                (Kind::CharDevice, a, b)
            }
            LeafContent::BlockDevice(rdev) => {
                let (a, b) = split(*rdev);
                (Kind::BlockDevice, a, b)
            }
            LeafContent::Fifo => (Kind::Fifo, 0, 0),
            LeafContent::Socket => (Kind::Socket, 0, 0),
        };
        Ok(self.node(stat, kind, a, b))
    }

    fn hash(hasher: &foldhash::fast::RandomState, parent: u32, name: &[u8]) -> u64 {
        hasher.hash_one((parent, name))
    }

    /// The entry `name` of directory node `dir`.
    fn find(&self, dir: u32, name: &[u8]) -> Option<u32> {
        let hash = Self::hash(&self.hasher, dir, name);
        self.lookup
            .find(hash, |&e| {
                self.entries[e as usize].parent == dir && self.name(e) == name
            })
            .copied()
    }

    /// The node named `name` in directory node `dir`.
    pub(crate) fn child(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.find(dir, name).map(|e| self.entries[e as usize].child)
    }

    fn is_dir(&self, node: u32) -> bool {
        self.nodes[node as usize].kind == Kind::Dir
    }

    /// Adds entry `name` → `child` to `dir`, which has no entry `name`.
    fn add_entry(&mut self, dir: u32, name: &[u8], child: u32) -> anyhow::Result<()> {
        let name_len =
            u16::try_from(name.len()).with_context(|| format!("a name of {} bytes", name.len()))?;
        let name_off = self.store(name)?;
        let idx = self.entries.len() as u32;
        let head = &mut self.nodes[dir as usize].a;
        self.entries.push(Entry {
            parent: dir,
            name_off,
            child,
            next: *head,
            name_len,
        });
        *head = idx;
        let hash = Self::hash(&self.hasher, dir, name);
        let (entries, arena, hasher) = (&self.entries, &self.arena, &self.hasher);
        self.lookup.insert_unique(hash, idx, |&e| {
            let e = &entries[e as usize];
            let name = &arena[e.name_off as usize..e.name_off as usize + usize::from(e.name_len)];
            Self::hash(hasher, e.parent, name)
        });
        Ok(())
    }

    /// Drops entry `idx` from the lookup table and marks it removed.
    fn drop_entry(&mut self, idx: u32) {
        let e = self.entries[idx as usize];
        let hash = Self::hash(&self.hasher, e.parent, self.name(idx));
        // Every live entry is in the table (added with it, dropped here
        // once: callers skip removed entries), so it is always found.
        if let Ok(found) = self.lookup.find_entry(hash, |&x| x == idx) {
            found.remove();
        }
        self.entries[idx as usize].child = NONE;
    }

    /// Removes `name` from `dir`, if it is there.
    pub(crate) fn remove(&mut self, dir: u32, name: &[u8]) {
        if let Some(idx) = self.find(dir, name) {
            self.drop_entry(idx);
        }
    }

    /// Removes every entry of `dir`.
    pub(crate) fn clear(&mut self, dir: u32) {
        let mut idx = self.nodes[dir as usize].a;
        while idx != NONE {
            if self.entries[idx as usize].child != NONE {
                self.drop_entry(idx);
            }
            idx = self.entries[idx as usize].next;
        }
        self.nodes[dir as usize].a = NONE;
    }

    /// Whether `dir` has an entry.
    pub(crate) fn has_entries(&self, dir: u32) -> bool {
        let mut idx = self.nodes[dir as usize].a;
        while idx != NONE {
            if self.entries[idx as usize].child != NONE {
                return true;
            }
            idx = self.entries[idx as usize].next;
        }
        false
    }

    /// composefs's `Directory::insert`: `name` in `dir` now names `child`,
    /// replacing what it named.
    fn insert(&mut self, dir: u32, name: &[u8], child: u32) -> anyhow::Result<()> {
        match self.find(dir, name) {
            Some(idx) => {
                self.entries[idx as usize].child = child;
                Ok(())
            }
            None => self.add_entry(dir, name, child),
        }
    }

    /// The directory at `path`, or the first missing component's name.
    /// The lookups below differ only in what a missing component means.
    fn walk_dir<'p>(&self, path: &'p Path) -> Result<Result<u32, &'p OsStr>, ImageError> {
        let mut dir = ROOT;
        for component in path.components() {
            match component {
                Component::RootDir => {}
                Component::Prefix(..) | Component::CurDir | Component::ParentDir => {
                    return Err(ImageError::InvalidFilename(path.as_os_str().into()));
                }
                Component::Normal(name) => match self.child(dir, name.as_bytes()) {
                    Some(node) if self.is_dir(node) => dir = node,
                    Some(_) => return Err(ImageError::NotADirectory(name.into())),
                    None => return Ok(Err(name)),
                },
            }
        }
        Ok(Ok(dir))
    }

    /// The directory at `path`, `None` if a component is missing; composefs's
    /// `get_directory_opt`.
    pub(crate) fn dir_opt(&self, path: &Path) -> Result<Option<u32>, ImageError> {
        Ok(self.walk_dir(path)?.ok())
    }

    /// composefs's `get_directory` (a missing directory names the whole path).
    fn dir(&self, path: &Path) -> Result<u32, ImageError> {
        self.dir_opt(path)?
            .ok_or_else(|| ImageError::NotFound(path.as_os_str().into()))
    }

    /// composefs's `get_directory_mut` (a missing directory names the
    /// missing component).
    fn dir_mut(&self, path: &Path) -> Result<u32, ImageError> {
        self.walk_dir(path)?
            .map_err(|missing| ImageError::NotFound(missing.into()))
    }

    /// composefs's `split`/`split_mut`: the directory holding `path`, and
    /// its file name.
    fn split<'p>(&self, path: &'p Path, for_write: bool) -> Result<(u32, &'p OsStr), ImageError> {
        let Some(name) = path.file_name() else {
            return Err(ImageError::InvalidFilename(path.as_os_str().into()));
        };
        let dir = match path.parent() {
            Some(parent) if for_write => self.dir_mut(parent)?,
            Some(parent) => self.dir(parent)?,
            None => ROOT,
        };
        Ok((dir, name))
    }

    /// composefs-oci's `process_entry`: one (non-whiteout) tar entry applied
    /// to the tree.
    pub(crate) fn process_entry(
        &mut self,
        entry: &TarEntry<Sha256HashValue>,
    ) -> anyhow::Result<()> {
        if entry.path.file_name().is_none() {
            ensure!(
                matches!(entry.item, TarItem::Directory),
                "Unpacking layer tar: filename {:?} must be a directory",
                entry.path
            );
            self.set_meta(ROOT, &entry.stat);
            return Ok(());
        }
        // A new directory over an existing one only takes its metadata; it
        // is created below once the parent is known.
        let leaf = match &entry.item {
            TarItem::Directory => None,
            TarItem::Leaf(content) => Some(self.leaf(&entry.stat, content)?),
            TarItem::Hardlink(target) => {
                let (dir, name) = self.split(Path::new(target), false)?;
                match self.child(dir, name.as_bytes()) {
                    Some(node) if self.is_dir(node) => {
                        return Err(ImageError::IsADirectory(name.into()).into());
                    }
                    Some(node) => Some(node),
                    None => return Err(ImageError::NotFound(name.into()).into()),
                }
            }
        };
        let (dir, name) = self
            .split(&entry.path, true)
            .with_context(|| format!("Error unpacking container layer file {:?}", entry.path))?;
        let name = name.as_bytes();
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                self.clear(dir);
            } else {
                self.remove(dir, hidden);
            }
            return Ok(());
        }
        match leaf {
            Some(node) => self.insert(dir, name, node),
            None => match self.child(dir, name) {
                Some(old) if self.is_dir(old) => {
                    self.set_meta(old, &entry.stat);
                    Ok(())
                }
                _ => {
                    let node = self.node(&entry.stat, Kind::Dir, NONE, 0);
                    self.insert(dir, name, node)
                }
            },
        }
    }

    /// The same tree as `fs` (the equivalence tests).
    #[cfg(test)]
    pub(crate) fn from_filesystem(
        fs: &composefs::tree::FileSystem<Sha256HashValue>,
    ) -> anyhow::Result<Self> {
        let mut tree = CompactTree::new(keep_all);
        tree.set_meta(ROOT, &fs.root.stat);
        let mut leaves = vec![NONE; fs.leaves.len()];
        let mut todo = vec![(&fs.root, ROOT)];
        while let Some((dir, node)) = todo.pop() {
            for (name, inode) in dir.sorted_entries() {
                let child = match inode {
                    composefs::tree::Inode::Directory(sub) => {
                        let child = tree.node(&sub.stat, Kind::Dir, NONE, 0);
                        todo.push((sub, child));
                        child
                    }
                    composefs::tree::Inode::Leaf(id, _) => {
                        if leaves[id.0] == NONE {
                            let leaf = &fs.leaves[id.0];
                            leaves[id.0] = tree.leaf(&leaf.stat, &leaf.content)?;
                        }
                        leaves[id.0]
                    }
                };
                tree.add_entry(node, name.as_bytes(), child)?;
            }
        }
        Ok(tree)
    }

    /// composefs's `add_overlay_whiteouts` (the V1 format's 256 whiteout
    /// stubs, `00` to `ff`, in the root): character devices 0 with mode
    /// 0644, the root's owner and mtime, and of its xattrs only
    /// `security.selinux`.
    pub(crate) fn add_overlay_whiteouts(&mut self) -> anyhow::Result<()> {
        let root = self.nodes[ROOT as usize];
        let selinux = self.xattr_sets[root.xattrs as usize]
            .iter()
            .find(|(name, _)| &**name == b"security.selinux")
            .cloned();
        let stat = Stat {
            st_mode: 0o644,
            st_uid: root.uid,
            st_gid: root.gid,
            st_mtim_sec: root.mtime_sec,
            st_mtim_nsec: root.mtime_nsec,
            xattrs: selinux
                .into_iter()
                .map(|(name, value)| (Box::from(OsStr::from_bytes(&name)), value))
                .collect(),
        };
        for i in 0..=255u8 {
            let name = format!("{i:02x}");
            if self.find(ROOT, name.as_bytes()).is_none() {
                let node = self.node(&stat, Kind::CharDevice, 0, 0);
                self.add_entry(ROOT, name.as_bytes(), node)?;
            }
        }
        Ok(())
    }

    /// Makes room, once, for `entries` more entries (and nodes), `objects`
    /// more object ids and `bytes` more arena bytes, plus a little for the
    /// parent directories a layer implies without listing them.
    pub(crate) fn reserve(
        &mut self,
        entries: usize,
        objects: usize,
        bytes: usize,
    ) -> anyhow::Result<()> {
        let implied = entries / IMPLIED_SHARE + IMPLIED_MIN;
        ensure!(
            self.arena.len() + bytes <= ARENA_MAX,
            "the image's names and inline contents exceed {ARENA_MAX} bytes"
        );
        self.nodes.reserve_exact(entries + implied);
        self.entries.reserve_exact(entries + implied);
        self.objects.reserve_exact(objects);
        self.arena
            .reserve_exact(bytes + implied * IMPLIED_NAME_BYTES);
        let (list, arena, hasher) = (&self.entries, &self.arena, &self.hasher);
        self.lookup.reserve(entries + implied, |&e| {
            let e = &list[e as usize];
            let name = &arena[e.name_off as usize..e.name_off as usize + usize::from(e.name_len)];
            Self::hash(hasher, e.parent, name)
        });
        Ok(())
    }

    /// Ends building: sorts each reachable directory's entries by name into
    /// [`Self::sorted`] and drops the lookup table.
    pub(crate) fn freeze(&mut self) {
        self.lookup = HashTable::new();
        self.xattr_ids = HashMap::new();
        // Growth by doubling left up to half of each table unused; the
        // writer's own tables come next, so give that back first.
        self.nodes.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.arena.shrink_to_fit();
        self.objects.shrink_to_fit();
        self.sorted.reserve_exact(self.entries.len());
        let mut todo = vec![ROOT];
        let mut list = Vec::new();
        while let Some(dir) = todo.pop() {
            list.clear();
            let mut idx = self.nodes[dir as usize].a;
            while idx != NONE {
                let e = self.entries[idx as usize];
                if e.child != NONE {
                    list.push(idx);
                    if self.is_dir(e.child) {
                        todo.push(e.child);
                    }
                }
                idx = e.next;
            }
            list.sort_unstable_by(|a, b| self.name(*a).cmp(self.name(*b)));
            let node = &mut self.nodes[dir as usize];
            node.a = self.sorted.len() as u32;
            node.b = list.len() as u32;
            self.sorted.extend_from_slice(&list);
        }
    }

    /// A frozen directory's entries, sorted by name.
    pub(crate) fn dir_entries(&self, dir: u32) -> &[u32] {
        let n = &self.nodes[dir as usize];
        &self.sorted[n.a as usize..(n.a + n.b) as usize]
    }
}
