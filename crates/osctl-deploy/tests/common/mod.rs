//! Three real trees (old, current, new) and an empty target in a temp dir,
//! with helpers to build them and to inspect the result. Tests run as root
//! (chown, trusted/security xattrs, mknod).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use osctl_deploy::{ChangeKind, ConflictKind, EtcMergeError, EtcMergeReport, merge_etc};

pub struct Trees {
    pub tmp: tempfile::TempDir,
    pub old: PathBuf,
    pub current: PathBuf,
    pub new: PathBuf,
    pub target: PathBuf,
}

impl Trees {
    pub fn new() -> Trees {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let p = tmp.path().join(name);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        Trees {
            old: mk("old"),
            current: mk("current"),
            new: mk("new"),
            target: mk("target"),
            tmp,
        }
    }

    /// The three input trees, to build a common starting point.
    pub fn inputs(&self) -> [&Path; 3] {
        [&self.old, &self.current, &self.new]
    }

    /// Runs `f` on old, current and new alike.
    pub fn each(&self, f: impl Fn(&Path)) {
        for root in self.inputs() {
            f(root)
        }
    }

    pub fn try_merge(&self) -> Result<EtcMergeReport, EtcMergeError> {
        let open = |p: &Path| Dir::open_ambient_dir(p, ambient_authority()).unwrap();
        merge_etc(
            &open(&self.old),
            &open(&self.current),
            &open(&self.new),
            &open(&self.target),
        )
    }

    pub fn merge(&self) -> EtcMergeReport {
        self.try_merge().expect("merge")
    }

    /// Path in the result.
    pub fn out(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }
}

/// Writes `content` to `root/rel` with mode 0644, creating parent dirs (0755).
pub fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, content).unwrap();
    chmod(root, rel, 0o644);
}

pub fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
    chmod(root, rel, 0o755);
}

pub fn remove(root: &Path, rel: &str) {
    let p = root.join(rel);
    if fs::symlink_metadata(&p).unwrap().is_dir() {
        fs::remove_dir_all(p).unwrap();
    } else {
        fs::remove_file(p).unwrap();
    }
}

pub fn link(root: &Path, rel: &str, target: &str) {
    symlink(target, root.join(rel)).unwrap();
}

pub fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(root: &Path, rel: &str, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
}

pub fn set_xattr(root: &Path, rel: &str, key: &str, value: &[u8]) {
    rustix::fs::lsetxattr(root.join(rel), key, value, rustix::fs::XattrFlags::empty()).unwrap();
}

pub fn get_xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, key, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {}: {e}", path.display()),
    }
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn mode(path: &Path) -> u32 {
    meta(path).mode() & 0o7777
}

pub fn owner(path: &Path) -> (u32, u32) {
    let m = meta(path);
    (m.uid(), m.gid())
}

pub fn read_link(path: &Path) -> PathBuf {
    fs::read_link(path).unwrap()
}

/// Every path in a report list with its kind, as `(path, kind)` strings.
pub fn changes(list: &[osctl_deploy::EtcChange]) -> Vec<(String, ChangeKind)> {
    list.iter()
        .map(|c| (c.path().to_string_lossy().into_owned(), c.kind()))
        .collect()
}

pub fn conflicts(report: &EtcMergeReport) -> Vec<(String, ConflictKind)> {
    report
        .conflicts()
        .iter()
        .map(|c| {
            assert!(!c.resolution().is_empty());
            (c.path().to_string_lossy().into_owned(), c.kind())
        })
        .collect()
}

/// Names in a result directory, sorted.
pub fn names(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
