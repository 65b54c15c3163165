//! What install writes into a boot dir, and how it undoes that.
//!
//! to-disk makes a fresh ESP, but the boot dir of `install to-filesystem`
//! is often shared: an ESP that already boots another OS (its boot loader
//! at the removable-media path `EFI/BOOT/BOOT<ARCH>.EFI`, its own
//! `loader/loader.conf`). So:
//!
//! - osctl's own files are its entries (`loader/entries/osctl-*`) and its
//!   kernels (`osctl/`): [`osctl_boot_files`] finds them (a boot dir that
//!   holds some needs `--wipe`), [`remove_osctl_boot_files`] removes them;
//! - [`write_efi`] puts systemd-boot at `EFI/systemd/`, and at the
//!   removable-media path only if no other boot loader is there: replacing
//!   another OS's fallback (shim, GRUB) would take the machine from it. An
//!   older systemd-boot there is replaced; it is recognised by the
//!   `#### LoaderInfo: systemd-boot` string every systemd-boot binary holds;
//! - [`Snapshot`] records, before anything is written, the files install
//!   changes in place (`loader/loader.conf`, the files in `EFI/BOOT` and
//!   `EFI/systemd`) and which of its directories existed, so a failed
//!   install puts the boot dir back as it was.

use std::path::{Path, PathBuf};

use crate::{ArchBoot, InstallError};
use osctl_layout::{ENTRIES_DIR, ENTRY_PREFIX, KERNELS_DIR, LOADER_CONF};

/// What every systemd-boot binary contains (its `LoaderInfo` section).
const SYSTEMD_BOOT_MARKER: &[u8] = b"#### LoaderInfo: systemd-boot";
/// The removable-media directory and systemd-boot's own.
const FALLBACK_DIR: &str = "EFI/BOOT";
const SYSTEMD_DIR: &str = "EFI/systemd";

/// osctl's files in a boot dir: its entries and its kernels directory.
pub(super) fn osctl_boot_files(boot: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(boot.join(ENTRIES_DIR)) {
        found.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(ENTRY_PREFIX))
                .map(|e| e.path()),
        );
    }
    if boot.join(KERNELS_DIR).is_dir() {
        found.push(boot.join(KERNELS_DIR));
    }
    found.sort();
    found
}

pub(super) fn remove_osctl_boot_files(boot: &Path) -> Result<(), InstallError> {
    for path in osctl_boot_files(boot) {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|source| InstallError::Io {
            step: "removing",
            path,
            source,
        })?;
    }
    Ok(())
}

fn is_systemd_boot(bytes: &[u8]) -> bool {
    bytes
        .windows(SYSTEMD_BOOT_MARKER.len())
        .any(|w| w == SYSTEMD_BOOT_MARKER)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        step: "accessing",
        path: path.to_path_buf(),
        source,
    }
}

/// The regular files directly in `dir` (none if it does not exist), by
/// name, sorted.
fn files_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, InstallError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(io(dir))?;
        if e.file_type().map_err(io(dir))?.is_file() {
            files.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The `EFI/BOOT/BOOT*.EFI` files (any case: FAT ignores it) that are
/// another boot loader: neither systemd-boot nor the very bytes installed.
fn foreign_fallbacks(boot: &Path, ours: &[u8]) -> Result<Vec<String>, InstallError> {
    let mut foreign = Vec::new();
    for (name, path) in files_in(&boot.join(FALLBACK_DIR))? {
        let upper = name.to_ascii_uppercase();
        if !(upper.starts_with("BOOT") && upper.ends_with(".EFI")) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if bytes != ours && !is_systemd_boot(&bytes) {
            foreign.push(name);
        }
    }
    Ok(foreign)
}

/// Writes systemd-boot to `EFI/systemd/systemd-boot<arch>.efi`, and to the
/// removable-media path `EFI/BOOT/BOOT<ARCH>.EFI` (what firmware boots
/// without NVRAM entries) unless another boot loader is there. Returns the
/// notes for the user (the firmware must then be pointed at systemd-boot).
pub(super) fn write_efi(
    boot: &Path,
    arch: &ArchBoot,
    bytes: &[u8],
) -> Result<Vec<String>, InstallError> {
    let mut notes = Vec::new();
    let mut targets = vec![(SYSTEMD_DIR, arch.systemd_boot)];
    let foreign = foreign_fallbacks(boot, bytes)?;
    if foreign.is_empty() {
        targets.insert(0, (FALLBACK_DIR, arch.efi_fallback));
    } else {
        let shown: Vec<String> = foreign
            .iter()
            .map(|n| format!("{FALLBACK_DIR}/{n}"))
            .collect();
        notes.push(format!(
            "the boot dir's {} is another boot loader (not systemd-boot) and was left alone, so the firmware does not start systemd-boot by itself: add a boot entry for {SYSTEMD_DIR}/{sd}, e.g. `efibootmgr --create --disk <disk> --part <ESP number> --label osctl --loader '\\EFI\\systemd\\{sd}'` (`bootctl install` would also replace the fallback)",
            shown.join(", "),
            sd = arch.systemd_boot,
        ));
    }
    for (dir, name) in targets {
        let dir = boot.join(dir);
        let path = dir.join(name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, bytes))
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(io(&path))?;
    }
    Ok(notes)
}

/// The directories install may create in a boot dir, parents first.
const DIRS: [&str; 5] = ["loader", ENTRIES_DIR, "EFI", FALLBACK_DIR, SYSTEMD_DIR];

/// A boot dir as it was before install wrote to it; see the module
/// documentation.
pub(super) struct Snapshot {
    /// [`DIRS`] that existed.
    existed: Vec<&'static str>,
    /// `loader/loader.conf` and the files in `EFI/BOOT` and `EFI/systemd`,
    /// relative to the boot dir; `None`: did not exist.
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Snapshot {
    pub fn take(boot: &Path) -> Result<Snapshot, InstallError> {
        let existed = DIRS.into_iter().filter(|d| boot.join(d).is_dir()).collect();
        let conf = boot.join(LOADER_CONF);
        let mut files = vec![(
            PathBuf::from(LOADER_CONF),
            match std::fs::read(&conf) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&conf)(e)),
            },
        )];
        for dir in [FALLBACK_DIR, SYSTEMD_DIR] {
            for (name, path) in files_in(&boot.join(dir))? {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                files.push((Path::new(dir).join(name), Some(bytes)));
            }
        }
        Ok(Snapshot { existed, files })
    }

    /// Puts `boot` back as it was: removes the directories install made,
    /// the files it added to `EFI/BOOT` and `EFI/systemd`, and rewrites the
    /// files it changed. Best effort: goes on after an error, returns the
    /// first.
    pub fn restore(&self, boot: &Path) -> Result<(), InstallError> {
        let mut first = None;
        let mut note = |r: Result<(), InstallError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "restoring the boot dir");
                first.get_or_insert(e);
            }
        };
        for dir in DIRS {
            let path = boot.join(dir);
            if !self.existed.contains(&dir) && path.is_dir() {
                note(std::fs::remove_dir_all(&path).map_err(io(&path)));
            }
        }
        for dir in [FALLBACK_DIR, SYSTEMD_DIR] {
            if !self.existed.contains(&dir) {
                continue;
            }
            let added = files_in(&boot.join(dir)).map(|found| {
                found
                    .into_iter()
                    .filter(|(name, _)| {
                        !self
                            .files
                            .iter()
                            .any(|(f, _)| *f == Path::new(dir).join(name))
                    })
                    .map(|(_, path)| path)
                    .collect::<Vec<_>>()
            });
            match added {
                Ok(paths) => {
                    for path in paths {
                        note(std::fs::remove_file(&path).map_err(io(&path)));
                    }
                }
                Err(e) => note(Err(e)),
            }
        }
        for (rel, before) in &self.files {
            let path = boot.join(rel);
            let now = std::fs::read(&path).ok();
            if now == *before {
                continue;
            }
            note(match before {
                Some(bytes) => std::fs::write(&path, bytes)
                    .and_then(|()| std::fs::File::open(&path)?.sync_all())
                    .map_err(io(&path)),
                None if now.is_some() => std::fs::remove_file(&path).map_err(io(&path)),
                None => Ok(()),
            });
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] = b"MZ\0new\0#### LoaderInfo: systemd-boot 257 ####";

    fn amd64() -> ArchBoot {
        ArchBoot::for_oci("amd64").unwrap()
    }

    #[test]
    fn another_fallback_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path();
        std::fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
        std::fs::write(boot.join("EFI/BOOT/bootx64.efi"), b"MZ shim").unwrap();
        let notes = write_efi(boot, &amd64(), OURS).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("EFI/BOOT/bootx64.efi"), "{notes:?}");
        assert_eq!(
            std::fs::read(boot.join("EFI/BOOT/bootx64.efi")).unwrap(),
            b"MZ shim"
        );
        assert!(!boot.join("EFI/BOOT/BOOTX64.EFI").exists());
        assert_eq!(
            std::fs::read(boot.join("EFI/systemd/systemd-bootx64.efi")).unwrap(),
            OURS
        );
    }

    #[test]
    fn systemd_boot_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path();
        std::fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
        let old = b"MZ\0old\0#### LoaderInfo: systemd-boot 252 ####";
        std::fs::write(boot.join("EFI/BOOT/BOOTX64.EFI"), old).unwrap();
        assert!(write_efi(boot, &amd64(), OURS).unwrap().is_empty());
        assert_eq!(
            std::fs::read(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            OURS
        );
    }

    #[test]
    fn a_snapshot_restores_the_boot_dir() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path();
        std::fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
        std::fs::write(boot.join("EFI/BOOT/BOOTX64.EFI"), b"MZ old systemd-boot").unwrap();
        std::fs::write(boot.join("EFI/BOOT/other.efi"), b"kept").unwrap();
        let snapshot = Snapshot::take(boot).unwrap();

        std::fs::create_dir_all(boot.join("loader/entries")).unwrap();
        std::fs::write(boot.join(LOADER_CONF), "default osctl-x.conf\n").unwrap();
        std::fs::write(boot.join("EFI/BOOT/BOOTX64.EFI"), OURS).unwrap();
        std::fs::write(boot.join("EFI/BOOT/BOOTAA64.EFI"), OURS).unwrap();
        std::fs::create_dir_all(boot.join("EFI/systemd")).unwrap();
        snapshot.restore(boot).unwrap();

        let mut names: Vec<String> = std::fs::read_dir(boot.join("EFI/BOOT"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["BOOTX64.EFI", "other.efi"]);
        assert_eq!(
            std::fs::read(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            b"MZ old systemd-boot"
        );
        assert!(!boot.join("loader").exists());
        assert!(!boot.join("EFI/systemd").exists());
    }
}
