//! The merge walk: one decision per path, recursing where the result is a
//! directory present on both sides (see the crate documentation for the rules).

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

use super::EtcMergeError;
use super::merge_report::{ChangeKind, ConflictKind, EtcConflict, EtcMergeReport};
use super::snapshot::{self, Entry, Node};

pub(crate) type Result<T> = std::result::Result<T, EtcMergeError>;

/// The tree an entry is taken from (hard links are kept within one side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    Current,
    New,
}

impl Side {
    pub(crate) fn tree(self) -> &'static str {
        match self {
            Side::Current => "current",
            Side::New => "new",
        }
    }
}

pub(crate) struct Merger<'t> {
    /// Root of the result; hard links are made relative to it.
    pub(crate) target_root: &'t Dir,
    /// First copy of each multiply-linked source file: (side, dev, ino) →
    /// its path in the target.
    pub(crate) links: HashMap<(Side, u64, u64), PathBuf>,
    pub(crate) report: EtcMergeReport,
}

impl<'t> Merger<'t> {
    pub(crate) fn new(target_root: &'t Dir) -> Self {
        Merger {
            target_root,
            links: HashMap::new(),
            report: EtcMergeReport::default(),
        }
    }

    pub(crate) fn run(mut self, old: &Dir, current: &Dir, new: &Dir) -> Result<EtcMergeReport> {
        let root = Path::new("");
        let dot = OsStr::new(".");
        let o = load(Some(old), dot, "old", root)?;
        let c = load(Some(current), dot, "current", root)?;
        let n = load(Some(new), dot, "new", root)?;
        let (Some(c), Some(n)) = (c, n) else {
            unreachable!("an open directory handle always has a `.`")
        };
        let meta = self.merge_dir_meta(root, o.as_ref(), &c, &n);
        self.merge_dir(root, Some(old), Some(current), Some(new), self.target_root)?;
        self.apply_meta(self.target_root, dot, meta, root)?;
        Ok(self.report)
    }

    /// Merges the entries of one directory of the result, `target`. A side
    /// whose directory is absent (`None`) counts as empty.
    fn merge_dir(
        &mut self,
        rel: &Path,
        old: Option<&Dir>,
        current: Option<&Dir>,
        new: Option<&Dir>,
        target: &Dir,
    ) -> Result<()> {
        let mut names: BTreeSet<OsString> = BTreeSet::new();
        for (tree, dir) in [("old", old), ("current", current), ("new", new)] {
            if let Some(dir) = dir {
                names.extend(snapshot::list(dir).map_err(EtcMergeError::io("listing", tree, rel))?);
            }
        }
        for name in &names {
            let path = rel.join(name);
            let o = load(old, name, "old", &path)?;
            let c = load(current, name, "current", &path)?;
            let n = load(new, name, "new", &path)?;
            self.merge_entry(&path, o.as_ref(), c.as_ref(), n.as_ref(), target)?;
        }
        Ok(())
    }

    fn merge_entry(
        &mut self,
        path: &Path,
        o: Option<&Entry>,
        c: Option<&Entry>,
        n: Option<&Entry>,
        target: &Dir,
    ) -> Result<()> {
        let is_dir = |e: Option<&Entry>| e.is_some_and(Entry::is_dir);

        // A directory on both sides: merge inside it.
        if let (Some(c), Some(n)) = (c, n)
            && c.is_dir()
            && n.is_dir()
        {
            let o_dir = o.filter(|o| o.is_dir());
            let meta = self.merge_dir_meta(path, o, c, n);
            let sub = self.make_dir(target, c.name, path)?;
            let od = o_dir.map(|o| open_dir(o, "old", path)).transpose()?;
            let cd = open_dir(c, "current", path)?;
            let nd = open_dir(n, "new", path)?;
            self.merge_dir(path, od.as_ref(), Some(&cd), Some(&nd), &sub)?;
            return self.apply_meta(target, c.name, meta, path);
        }

        // The image deleted a directory the admin kept.
        if let (Some(o), Some(c), None) = (o, c, n)
            && o.is_dir()
            && c.is_dir()
        {
            if same(Some(o), Some(c), "old and current", path)? {
                self.report.update(path, ChangeKind::Deleted);
                return Ok(());
            }
            self.report.conflict(EtcConflict::new(
                shown(path),
                ConflictKind::ModifiedButImageDeleted,
                "the new image deletes this directory; kept it with the admin's changes \
                 inside, entries the admin left alone were removed"
                    .to_owned(),
            ));
            let sub = self.make_dir(target, c.name, path)?;
            let od = open_dir(o, "old", path)?;
            let cd = open_dir(c, "current", path)?;
            self.merge_dir(path, Some(&od), Some(&cd), None, &sub)?;
            return self.apply_meta(target, c.name, &c.node, path);
        }

        // The admin deleted a directory: it stays deleted.
        if is_dir(o) && c.is_none() {
            let Some(n) = n else { return Ok(()) }; // deleted on both sides
            if same(o, Some(n), "old and new", path)? {
                self.report.carry(path, ChangeKind::Deleted);
            } else {
                let what = if n.is_dir() {
                    "the new image changes files in it".to_owned()
                } else {
                    format!(
                        "the new image replaces it with a {}",
                        n.node.kind.describe()
                    )
                };
                self.report.conflict(EtcConflict::new(
                    shown(path),
                    ConflictKind::DeletedButImageChanged,
                    format!("kept the admin's deletion of this directory; {what}"),
                ));
            }
            return Ok(());
        }

        // Everything else is decided for the path as a whole.
        let admin = !same(o, c, "old and current", path)?;
        let image = !same(o, n, "old and new", path)?;
        match (admin, image) {
            (false, false) => self.take(Side::New, n, target, path),
            (false, true) => {
                self.report
                    .update(path, ChangeKind::between(o.is_some(), n.is_some()));
                self.take(Side::New, n, target, path)
            }
            (true, false) => {
                self.report
                    .carry(path, ChangeKind::between(o.is_some(), c.is_some()));
                self.take(Side::Current, c, target, path)
            }
            (true, true) => {
                if !same(c, n, "current and new", path)? {
                    let (kind, resolution) = describe_conflict(o, c, n);
                    self.report
                        .conflict(EtcConflict::new(shown(path), kind, resolution));
                }
                self.take(Side::Current, c, target, path)
            }
        }
    }

    /// Decides whose metadata a directory present in `current` and `new`
    /// gets, and reports it.
    fn merge_dir_meta<'e>(
        &mut self,
        path: &Path,
        o: Option<&Entry>,
        c: &'e Entry,
        n: &'e Entry,
    ) -> &'e Node {
        let o_dir = o.filter(|o| o.is_dir());
        let admin = o_dir.is_none_or(|o| !o.node.same_meta(&c.node));
        let image = o_dir.is_none_or(|o| !o.node.same_meta(&n.node));
        match (admin, image) {
            (false, false) => &n.node,
            (false, true) => {
                self.report.update(&shown(path), ChangeKind::Modified);
                &n.node
            }
            (true, false) => {
                self.report.carry(&shown(path), ChangeKind::Modified);
                &c.node
            }
            (true, true) => {
                if !c.node.same_meta(&n.node) {
                    let (kind, _) = describe_conflict(o, Some(c), Some(n));
                    self.report.conflict(EtcConflict::new(
                        shown(path),
                        kind,
                        "kept the admin's mode, owner and xattrs of this directory; \
                         its entries were merged one by one"
                            .to_owned(),
                    ));
                }
                &c.node
            }
        }
    }

    /// Writes `entry` (if any) taken from `side` into `target`.
    fn take(&mut self, side: Side, entry: Option<&Entry>, target: &Dir, path: &Path) -> Result<()> {
        match entry {
            Some(entry) => self.copy_entry(side, entry, target, path),
            None => Ok(()),
        }
    }
}

/// The conflict kind for a path both sides changed, and the resolution text
/// (the admin's version, `c`, is always the one kept).
fn describe_conflict(
    o: Option<&Entry>,
    c: Option<&Entry>,
    n: Option<&Entry>,
) -> (ConflictKind, String) {
    let kind_of = |e: &Entry| e.node.kind.describe();
    match (o, c, n) {
        (_, None, Some(n)) => (
            ConflictKind::DeletedButImageChanged,
            format!(
                "kept the admin's deletion; the new image's {} was not installed",
                kind_of(n)
            ),
        ),
        (_, Some(c), None) => (
            ConflictKind::ModifiedButImageDeleted,
            format!("kept the admin's {}; the new image deletes it", kind_of(c)),
        ),
        (None, Some(c), Some(n)) => (
            ConflictKind::BothAdded,
            format!(
                "kept the admin's {}; the new image's {} was not installed",
                kind_of(c),
                kind_of(n)
            ),
        ),
        (Some(o), Some(c), Some(n)) if o.node.kind != c.node.kind || o.node.kind != n.node.kind => {
            (
                ConflictKind::TypeChanged,
                format!(
                    "was a {}; kept the admin's {}, the new image's {} was not installed",
                    kind_of(o),
                    kind_of(c),
                    kind_of(n)
                ),
            )
        }
        _ => (
            ConflictKind::BothModified,
            format!(
                "kept the admin's {}; the new image's change was not applied",
                match c {
                    Some(c) => kind_of(c),
                    None => "version",
                }
            ),
        ),
    }
}

/// Whether two optional entries are the same (both absent counts as same).
fn same(a: Option<&Entry>, b: Option<&Entry>, trees: &'static str, path: &Path) -> Result<bool> {
    match (a, b) {
        (None, None) => Ok(true),
        (Some(a), Some(b)) => {
            snapshot::same_entry(a, b).map_err(EtcMergeError::io("comparing", trees, path))
        }
        _ => Ok(false),
    }
}

/// Snapshot of `dir/name` in `tree`, if `dir` exists and has it.
fn load<'a>(
    dir: Option<&'a Dir>,
    name: &'a OsStr,
    tree: &'static str,
    path: &Path,
) -> Result<Option<Entry<'a>>> {
    let Some(dir) = dir else { return Ok(None) };
    let node = snapshot::inspect(dir, name).map_err(EtcMergeError::io("inspecting", tree, path))?;
    Ok(node.map(|node| Entry { dir, name, node }))
}

pub(crate) fn open_dir(entry: &Entry, tree: &'static str, path: &Path) -> Result<Dir> {
    snapshot::open_dir(entry.dir, entry.name).map_err(EtcMergeError::io("opening", tree, path))
}

/// Report path: relative to `/etc`, `.` for `/etc` itself.
pub(crate) fn shown(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_owned()
    }
}
