//! What is mounted where, for `install to-filesystem`: the filesystem
//! holding `PATH` and the boot dir (findmnt), ext4's features (dumpe2fs),
//! and `PATH`'s content around the mount points below it.
//!
//! Why a module of its own: `PATH` is rarely a bare filesystem. The ESP is
//! often mounted at `PATH/boot/efi`, a btrfs subvolume or a bind-mounted
//! directory shows in findmnt as `/dev/sda2[/subvol]`, and the boot dir may
//! sit anywhere below `PATH`. So "is `PATH` empty", "empty it" and "undo a
//! failed install" all skip `lost+found`, the boot dir and the mount points
//! of other filesystems (with the directories leading to them): removing a
//! mount point fails with EBUSY, and what is mounted there is not ours.
//! Mount points come from `/proc/self/mountinfo` and are matched by their
//! path relative to `PATH`, so the same rules hold when `PATH` is seen
//! through the staging bind `S/sysroot`, where they are plain directories.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::InstallError;
use crate::tools::run;

/// A mounted filesystem as findmnt reports it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(super) struct Mount {
    pub target: String,
    pub source: Option<String>,
    pub fstype: Option<String>,
    pub uuid: Option<String>,
    pub partuuid: Option<String>,
}

impl Mount {
    /// SOURCE without the `[/subpath]` findmnt appends for a bind-mounted
    /// directory or a btrfs subvolume: the device itself.
    pub fn device(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        Some(split_source(source).0)
    }

    /// The directory of the filesystem that is mounted, when it is not the
    /// filesystem's top (`/subvol` of `/dev/sda2[/subvol]`).
    pub fn subpath(&self) -> Option<&str> {
        split_source(self.source.as_deref()?)
            .1
            .filter(|p| *p != "/")
    }
}

fn split_source(source: &str) -> (&str, Option<&str>) {
    match source.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
        Some((device, sub)) if !device.is_empty() => (device, Some(sub)),
        _ => (source, None),
    }
}

/// `findmnt -J` for `--target PATH` (the filesystem holding PATH) or
/// `--mountpoint PATH` (only if PATH is a mount point).
pub(super) fn findmnt(how: &str, path: &Path) -> Result<Option<Mount>, InstallError> {
    let out = Command::new("findmnt")
        .args(["-J", "-o", "TARGET,SOURCE,FSTYPE,UUID,PARTUUID", how])
        .arg(path)
        .output()
        .map_err(|e| InstallError::Tool {
            step: format!("finding the filesystem of {}", path.display()),
            tool: "findmnt".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct List {
        filesystems: Vec<Mount>,
    }
    let list: List = serde_json::from_slice(&out.stdout).map_err(|e| InstallError::Tool {
        step: format!("finding the filesystem of {}", path.display()),
        tool: "findmnt".into(),
        stderr: format!("unreadable output: {e}"),
    })?;
    Ok(list.filesystems.into_iter().next())
}

/// Whether the filesystem at `root` (`mount`) can hold fs-verity files:
/// btrfs, or ext4 with the `verity` feature, read from its device with
/// `dumpe2fs -h` (which the caller required). A device dumpe2fs cannot read
/// is an error, not a quiet "no": the entries would silently stop demanding
/// fs-verity.
pub(super) fn supports_verity(root: &Path, mount: &Mount) -> Result<bool, InstallError> {
    match mount.fstype.as_deref() {
        Some("btrfs") => Ok(true),
        Some("ext4") => {
            let device = mount.device().filter(|d| d.starts_with('/')).ok_or_else(|| {
                InstallError::Target {
                    path: root.to_path_buf(),
                    why: format!(
                        "findmnt shows no device for its ext4 filesystem ({}); cannot read its features",
                        mount.source.as_deref().unwrap_or("no SOURCE")
                    ),
                }
            })?;
            let out = run(
                &format!(
                    "reading the ext4 features of {device} (mounted at {})",
                    mount.target
                ),
                Command::new("dumpe2fs").arg("-h").arg(device),
                None,
            )?;
            Ok(out
                .lines()
                .filter_map(|l| l.strip_prefix("Filesystem features:"))
                .any(|f| f.split_whitespace().any(|w| w == "verity")))
        }
        _ => Ok(false),
    }
}

/// The mount points strictly below `root`, relative to it. `/proc` must be
/// readable: without it, wiping could empty a filesystem mounted below.
pub(super) fn mount_points_below(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|at| PathBuf::from(unescape_mountinfo(at)))
        .filter_map(|at| {
            at.strip_prefix(root)
                .ok()
                .filter(|rel| !rel.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\')
            .then(|| field.get(i + 1..i + 4))
            .flatten()
            .filter(|o| o.bytes().all(|c| (b'0'..=b'7').contains(&c)))
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// What stays in `PATH` when it is checked or emptied, by path relative to
/// `PATH`: `lost+found`, the boot dir (when it is inside `PATH`), the mount
/// points of other filesystems, and the directories leading to these.
pub(super) struct Keep {
    pub boot: Option<PathBuf>,
    pub mounts: Vec<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Left as it is, content and all.
    Whole,
    /// A directory leading to something kept: kept, its content looked at.
    Descend,
    /// Not kept.
    Other,
}

impl Keep {
    fn class(&self, rel: &Path) -> Class {
        let kept = || self.boot.iter().chain(&self.mounts);
        if rel == Path::new("lost+found") || kept().any(|k| k == rel) {
            Class::Whole
        } else if kept().any(|k| k.starts_with(rel)) {
            Class::Descend
        } else {
            Class::Other
        }
    }
}

fn read_names(dir: &Path) -> Result<Vec<OsString>, InstallError> {
    let err = |source: std::io::Error| InstallError::Io {
        step: "listing",
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(err)? {
        names.push(e.map_err(err)?.file_name());
    }
    names.sort();
    Ok(names)
}

/// Whether `path` is a directory tree of nothing but directories.
fn only_empty_dirs(path: &Path) -> Result<bool, InstallError> {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Ok(false);
    }
    for name in read_names(path)? {
        if !only_empty_dirs(&path.join(name))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Calls `f` with each path (relative to `dir`) that `keep` neither keeps
/// nor descends into: the top of everything not kept.
fn for_each_unkept(
    dir: &Path,
    keep: &Keep,
    mut f: impl FnMut(PathBuf) -> Result<(), InstallError>,
) -> Result<(), InstallError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for name in read_names(&dir.join(&rel))? {
            let rel = rel.join(name);
            match keep.class(&rel) {
                Class::Whole => {}
                Class::Descend => stack.push(rel),
                Class::Other => f(rel)?,
            }
        }
    }
    Ok(())
}

/// What makes the tree at `dir` (`PATH`, or a bind of it) not empty: the
/// paths, relative to it, of what is neither kept nor an empty directory.
pub(super) fn foreign_entries(dir: &Path, keep: &Keep) -> Result<Vec<String>, InstallError> {
    let mut found = Vec::new();
    for_each_unkept(dir, keep, |rel| {
        if !only_empty_dirs(&dir.join(&rel))? {
            found.push(rel.to_string_lossy().into_owned());
        }
        Ok(())
    })?;
    found.sort();
    Ok(found)
}

/// Removes everything in the tree at `dir` that `keep` does not keep.
pub(super) fn empty_dir(dir: &Path, keep: &Keep) -> Result<(), InstallError> {
    for_each_unkept(dir, keep, |rel| {
        let path = dir.join(&rel);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        result.map_err(|source| InstallError::Io {
            step: "emptying",
            path,
            source,
        })
    })
}

/// `path` for an fstab field: space, tab, newline and backslash as `\ooo`.
pub(super) fn fstab_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_lose_their_subpath() {
        let m = |s: &str| Mount {
            source: Some(s.into()),
            ..Mount::default()
        };
        assert_eq!(m("/dev/sda2[/subvol]").device(), Some("/dev/sda2"));
        assert_eq!(m("/dev/sda2[/subvol]").subpath(), Some("/subvol"));
        assert_eq!(m("/dev/sda2[/]").subpath(), None);
        assert_eq!(m("/dev/loop0").device(), Some("/dev/loop0"));
        assert_eq!(m("/dev/loop0").subpath(), None);
        assert_eq!(m("[weird]").device(), Some("[weird]"));
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mountinfo("/mnt/a\\040b"),
            OsString::from("/mnt/a b")
        );
        assert_eq!(unescape_mountinfo("/x\\134"), OsString::from("/x\\"));
        assert_eq!(unescape_mountinfo("/x\\04"), OsString::from("/x\\04"));
        assert_eq!(
            fstab_escape(Path::new("/sysroot/my boot")),
            "/sysroot/my\\040boot"
        );
    }

    #[test]
    fn keeps_mount_points_and_the_way_to_them() {
        let keep = Keep {
            boot: Some("boot/efi".into()),
            mounts: vec!["srv/data".into()],
        };
        assert_eq!(keep.class(Path::new("lost+found")), Class::Whole);
        assert_eq!(keep.class(Path::new("boot")), Class::Descend);
        assert_eq!(keep.class(Path::new("boot/efi")), Class::Whole);
        assert_eq!(keep.class(Path::new("boot/grub")), Class::Other);
        assert_eq!(keep.class(Path::new("srv")), Class::Descend);
        assert_eq!(keep.class(Path::new("srv/data")), Class::Whole);
        assert_eq!(keep.class(Path::new("etc")), Class::Other);
        assert_eq!(keep.class(Path::new("boot/lost+found")), Class::Other);
    }

    #[test]
    fn empties_around_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "lost+found",
            "boot/efi/EFI",
            "boot/grub",
            "srv/data",
            "empty/deeper",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("boot/efi/EFI/x"), "kept").unwrap();
        std::fs::write(d.join("srv/data/y"), "kept").unwrap();
        std::fs::write(d.join("srv/z"), "not kept").unwrap();
        std::fs::write(d.join("leftover"), "not kept").unwrap();
        let keep = Keep {
            boot: Some("boot/efi".into()),
            mounts: vec!["srv/data".into()],
        };
        assert_eq!(foreign_entries(d, &keep).unwrap(), ["leftover", "srv/z"]);
        empty_dir(d, &keep).unwrap();
        assert_eq!(foreign_entries(d, &keep).unwrap(), Vec::<String>::new());
        assert!(d.join("boot/efi/EFI/x").exists() && d.join("srv/data/y").exists());
        assert!(!d.join("boot/grub").exists() && !d.join("empty").exists());
        assert!(d.join("lost+found").is_dir());
    }
}
