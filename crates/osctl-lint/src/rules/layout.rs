//! Lints about the shape of the filesystem: names, the directories systemd
//! and the root setup need, and where machine state can live.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{Kind, LintError, Rootfs, show};

/// Directories something mounts onto at boot: the kernel's API
/// filesystems, systemd's runtime directories, `/etc` and `/var` (bound by
/// the root setup, which refuses an image without them) and `/sysroot`
/// (where the root partition goes).
const API_DIRECTORIES: [&str; 8] = [
    "/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/var", "/sysroot",
];

/// Directories users and services write to, which a read-only image
/// cannot hold as real directories.
const WRITABLE_DIRS: [&str; 4] = ["/home", "/root", "/srv", "/mnt"];

pub(super) fn utf8(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems = Vec::new();
    root.walk(Path::new("/"), |path, kind| {
        let name_ok = path
            .file_name()
            .is_none_or(|n| std::str::from_utf8(n.as_bytes()).is_ok());
        if !name_ok {
            problems.push(format!("{}: name is not UTF-8", show(path)));
            // What is below carries the same bad component.
            return Ok(false);
        }
        if kind == Kind::Symlink && root.read_link(path)?.to_str().is_none() {
            problems.push(format!("{}: symlink target is not UTF-8", show(path)));
        }
        Ok(true)
    })?;
    Ok(problems)
}

pub(super) fn api_directories(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems = Vec::new();
    for dir in API_DIRECTORIES {
        match root.kind(Path::new(dir))? {
            Some(Kind::Directory) => {}
            Some(_) => problems.push(format!("{dir}: not a directory")),
            None => problems.push(format!("{dir}: missing")),
        }
    }
    Ok(problems)
}

pub(super) fn var_run(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let path = Path::new("/var/run");
    Ok(match root.kind(path)? {
        // Absent: systemd-tmpfiles makes the link at boot.
        None => Vec::new(),
        Some(Kind::Symlink) => {
            let target = root.read_link(path)?;
            if target == Path::new("/run") || target == Path::new("../run") {
                Vec::new()
            } else {
                vec![format!(
                    "/var/run: a symlink to {}, not to /run",
                    show(&target)
                )]
            }
        }
        Some(_) => vec!["/var/run: not a symlink to /run".to_owned()],
    })
}

pub(super) fn etc_usretc(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let both =
        root.kind(Path::new("/etc"))?.is_some() && root.kind(Path::new("/usr/etc"))?.is_some();
    Ok(if both {
        vec!["/usr/etc: present beside /etc".to_owned()]
    } else {
        Vec::new()
    })
}

pub(super) fn writable_dirs(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems = Vec::new();
    for dir in WRITABLE_DIRS {
        if root.kind(Path::new(dir))? == Some(Kind::Directory) {
            problems.push(format!(
                "{dir}: a directory of the image, read-only on the machine"
            ));
        }
    }
    Ok(problems)
}
