//! Crash-safe file replacement inside a cap-std directory.
//!
//! Every state file osctl writes goes through [`write_atomic`]: write a
//! uniquely named temporary file in the same directory, fsync it, rename it
//! over the target, fsync the directory, then fsync the file once more.
//! After a crash a reader sees either the old file or the new one, never a
//! torn one; a leftover temporary (`.tmp-*`) is ignored by readers.
//!
//! The last fsync is for FAT (the ESP, where osctl writes boot entries and
//! `loader.conf`): there a file's first cluster and size live in its
//! directory entry, and the entry a rename creates gets them only when the
//! renamed file itself is written back; an fsync of the directory leaves it
//! pointing at nothing. The VM test's power cuts found such entries empty.
//! The file being replaced is held open until then, so its clusters stay
//! allocated while its entry may still name them. On FAT a power cut
//! between the two fsyncs can still leave a new name empty (or the old
//! content under a replaced one): FAT has no atomic rename. On journalled
//! filesystems the second fsync finds nothing left to write.

use std::io::Write;

use cap_std::fs::{Dir, OpenOptions};
use rustix::fs::{Mode, OFlags, fsync, openat};

/// Prefix of temporary files; readers skip names starting with it.
pub const TMP_PREFIX: &str = osctl_layout::TMP_PREFIX;

/// Replaces `name` in `dir` with `data`, durably.
pub fn write_atomic(dir: &Dir, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = format!("{TMP_PREFIX}{}-{name}", std::process::id());
    let result = (|| {
        let mut f = dir.open_with(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        f.write_all(data)?;
        f.sync_all()?;
        // Keeps the replaced file's clusters allocated on FAT until the new
        // entry names the new ones (see the module docs).
        let replaced = match dir.open(name) {
            Ok(old) => Some(old),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        dir.rename(&tmp, dir, name)?;
        sync_dir(dir)?;
        f.sync_all()?;
        drop(replaced);
        Ok(())
    })();
    if result.is_err() {
        // The write's own error is the one to report. A temporary that
        // cannot be removed either is what a crash here would leave: named
        // by TMP_PREFIX, which readers skip. (`gc` removes the store's
        // record temporaries and the boot entries' cleanup osctl's own; in
        // other directories one stays until removed by hand.)
        let _ = dir.remove_file(&tmp);
    }
    result
}

/// Removes `name` from `dir` durably; a missing file is not an error.
pub fn remove_durably(dir: &Dir, name: &str) -> std::io::Result<()> {
    match dir.remove_file(name) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory, making renames and unlinks in it durable.
///
/// cap-std holds directories as `O_PATH` descriptors, which cannot be
/// fsynced; open the directory itself read-only for the call.
pub fn sync_dir(dir: &Dir) -> std::io::Result<()> {
    fsync(&readable(dir)?).map_err(std::io::Error::from)
}

/// Makes the rename of `name` (in `dir`) durable: fsyncs `dir`, then
/// `name` itself, which on FAT is what writes the first cluster and size
/// into the directory entry the rename created (see the module docs).
pub fn sync_renamed(dir: &Dir, name: &str) -> std::io::Result<()> {
    sync_dir(dir)?;
    let renamed = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    fsync(&renamed).map_err(std::io::Error::from)
}

/// A read-only descriptor of `dir` itself (cap-std's is `O_PATH`).
fn readable(dir: &Dir) -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Flushes the whole filesystem holding `dir` (syncfs): for trees written
/// file by file, where fsyncing each one would cost more than one syncfs.
pub fn sync_filesystem(dir: &Dir) -> std::io::Result<()> {
    rustix::fs::syncfs(&readable(dir)?).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporaries() {
        let td = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(td.path(), cap_std::ambient_authority()).unwrap();
        write_atomic(&dir, "a.json", b"one").unwrap();
        write_atomic(&dir, "a.json", b"two").unwrap();
        assert_eq!(std::fs::read(td.path().join("a.json")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(td.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        remove_durably(&dir, "a.json").unwrap();
        remove_durably(&dir, "a.json").unwrap();
        assert!(!td.path().join("a.json").exists());
    }

    #[test]
    fn syncs_renamed_files_and_directories() {
        let td = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(td.path(), cap_std::ambient_authority()).unwrap();
        dir.write(".tmp-f", b"x").unwrap();
        dir.rename(".tmp-f", &dir, "f").unwrap();
        sync_renamed(&dir, "f").unwrap();
        dir.create_dir(".tmp-d").unwrap();
        dir.rename(".tmp-d", &dir, "d").unwrap();
        sync_renamed(&dir, "d").unwrap();
        let missing = sync_renamed(&dir, ".tmp-f").unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
