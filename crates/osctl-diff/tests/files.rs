//! Merging two tree walks: each kind of difference, and the order of paths
//! when one side has a subtree the other lacks.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use osctl_diff::files::diff_walks;
use osctl_diff::{Aspect, FileChange, Kind};
use osctl_store::{Content, WalkEntry};

type Xattrs = BTreeMap<Box<OsStr>, Box<[u8]>>;

/// Two objects' fs-verity digests.
static DIGEST_A: [u8; 32] = [1; 32];
static DIGEST_B: [u8; 32] = [2; 32];

fn entry<'a>(content: Content<'a>, mode: u32, uid: u32, xattrs: &'a Xattrs) -> WalkEntry<'a> {
    WalkEntry {
        content,
        mode,
        uid,
        gid: uid,
        xattrs,
    }
}

fn change(path: &str, kind: Kind, what: &[Aspect]) -> FileChange {
    FileChange {
        path: PathBuf::from(path),
        kind,
        what: what.to_vec(),
    }
}

#[test]
fn every_kind_of_difference_in_path_order() {
    let none = Xattrs::new();
    let mut tagged = Xattrs::new();
    tagged.insert(OsStr::new("user.a").into(), b"1".to_vec().into());
    let obj = |digest: &'static [u8; 32]| Content::Object { digest, size: 4096 };
    let (a, b) = (&DIGEST_A, &DIGEST_B);
    let from = vec![
        (
            PathBuf::from("/u/a"),
            entry(Content::Directory, 0o755, 0, &none),
        ),
        (
            PathBuf::from("/u/a/child"),
            entry(Content::Inline(b"x"), 0o644, 0, &none),
        ),
        (PathBuf::from("/u/a.txt"), entry(obj(a), 0o644, 0, &none)),
        (
            PathBuf::from("/u/link"),
            entry(Content::Symlink(OsStr::new("t1")), 0o777, 0, &none),
        ),
        (
            PathBuf::from("/u/mode"),
            entry(Content::Inline(b"m"), 0o644, 0, &none),
        ),
        (PathBuf::from("/u/same"), entry(obj(a), 0o644, 0, &none)),
        (
            PathBuf::from("/u/several"),
            entry(Content::Inline(b"1"), 0o644, 0, &none),
        ),
    ];
    let to = vec![
        (
            PathBuf::from("/u/a"),
            entry(Content::Inline(b"now a file"), 0o755, 0, &none),
        ),
        (PathBuf::from("/u/a.txt"), entry(obj(b), 0o644, 0, &none)),
        (PathBuf::from("/u/b"), entry(Content::Fifo, 0o644, 0, &none)),
        (
            PathBuf::from("/u/link"),
            entry(Content::Symlink(OsStr::new("t2")), 0o777, 0, &none),
        ),
        (
            PathBuf::from("/u/mode"),
            entry(Content::Inline(b"m"), 0o4755, 0, &none),
        ),
        (PathBuf::from("/u/same"), entry(obj(a), 0o644, 0, &none)),
        (
            PathBuf::from("/u/several"),
            entry(Content::Inline(b"2"), 0o600, 7, &tagged),
        ),
    ];
    let want = vec![
        change("/u/a", Kind::Changed, &[Aspect::Type]),
        change("/u/a/child", Kind::Removed, &[]),
        change("/u/a.txt", Kind::Changed, &[Aspect::Content]),
        change("/u/b", Kind::Added, &[]),
        change("/u/link", Kind::Changed, &[Aspect::Target]),
        change("/u/mode", Kind::Changed, &[Aspect::Mode]),
        change(
            "/u/several",
            Kind::Changed,
            &[Aspect::Content, Aspect::Mode, Aspect::Owner, Aspect::Xattrs],
        ),
    ];
    assert_eq!(diff_walks(&from, &to), want);
    // And back: added and removed swap, changes stay.
    let back: Vec<FileChange> = want
        .iter()
        .map(|c| FileChange {
            kind: match c.kind {
                Kind::Added => Kind::Removed,
                Kind::Removed => Kind::Added,
                Kind::Changed => Kind::Changed,
            },
            ..c.clone()
        })
        .collect();
    assert_eq!(diff_walks(&to, &from), back);
}

#[test]
fn identical_and_empty_walks_differ_in_nothing() {
    let none = Xattrs::new();
    let one = vec![(
        PathBuf::from("/e/x"),
        entry(Content::Inline(b"x"), 0o644, 0, &none),
    )];
    assert_eq!(diff_walks(&one, &one), vec![]);
    assert_eq!(diff_walks(&[], &[]), vec![]);
    assert_eq!(
        diff_walks(&[], &one),
        vec![change("/e/x", Kind::Added, &[])]
    );
}
