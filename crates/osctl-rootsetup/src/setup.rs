//! The root setup itself: validate, then mount, undoing on failure.
//!
//! Mounts, in order (all targets relative to `<root>`, the directory where
//! the initramfs mounted the root partition; `<stash>` is a directory on the
//! initramfs's own root):
//!
//! 1. the root partition moves from `<root>` to `<stash>`;
//! 2. the composefs image (EROFS + the store's objects as overlayfs data-only
//!    layer, `metacopy=on,redirect_dir=on`, `verity=require` unless the
//!    command line says `?`) is attached at `<root>`, read-only;
//! 3. `<stash>/state/deploy/<id>/etc` is bind-mounted on `<root>/etc`;
//! 4. `<stash>/state/var` is bind-mounted on `<root>/var` (seeded from the
//!    image first if missing);
//! 5. `<stash>` moves to `<root>/sysroot`.
//!
//! The composefs mount is built detached (fsopen/fsmount) before anything
//! moves, so the image's own checks (EROFS superblock, overlay options,
//! the mount points it must have) fail while the initramfs's view is
//! untouched. Each later step records how to undo it.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, measure_verity_with_fallback};
use composefs::mount::{MountOptions, VerityRequirement, composefs_fsmount, mount_at};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, StatVfsMountFlags};
use rustix::io::Errno;
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount_bind, mount_change, mount_move,
    mount_remount, unmount,
};

use osctl_layout::partition;

use crate::seal::{self, SealReport};
use crate::{BootTarget, SetupError, Verity, seed};

/// Where the root setup works.
#[derive(Debug, Clone)]
pub struct RootSetup {
    root: PathBuf,
    stash: PathBuf,
}

/// What a successful root setup did.
#[derive(Debug, Clone)]
pub struct Report {
    id: String,
    verity: Verity,
    sealed: Option<SealReport>,
    seeded_var: bool,
    elapsed: Duration,
}

impl Report {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn verity(&self) -> Verity {
        self.verity
    }
    /// The first-boot seal, if this boot did it.
    pub fn sealed(&self) -> Option<&SealReport> {
        self.sealed.as_ref()
    }
    /// Whether /var was seeded from the image on this boot.
    pub fn seeded_var(&self) -> bool {
        self.seeded_var
    }
    /// Wall time of the whole setup, sealing included.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl RootSetup {
    /// `root`: where the root partition is mounted (and where the new root
    /// goes); `stash`: a directory outside it, on the initramfs's root, for
    /// the partition while the new root is assembled.
    pub fn new(root: impl Into<PathBuf>, stash: impl Into<PathBuf>) -> Self {
        RootSetup {
            root: root.into(),
            stash: stash.into(),
        }
    }

    pub fn run(&self, target: &BootTarget) -> Result<Report, SetupError> {
        let started = Instant::now();
        let root = &self.root;
        let id = target.id();

        // 1. Everything that can reject the boot, before any mount changes.
        let store = root.join(partition::STORE);
        if !store.is_dir() {
            return Err(SetupError::NoStore(store));
        }
        let image = root.join(target.deployment().image_on_partition());
        if !image.exists() {
            return Err(SetupError::NoImage {
                id: id.to_string(),
                path: image,
            });
        }
        let etc = target.deployment().etc_on_partition();
        if !root.join(&etc).is_dir() {
            return Err(SetupError::NoDeployment {
                id: id.to_string(),
                path: root.join(etc.parent().unwrap_or(&etc)),
            });
        }
        make_writable(root)?;
        let sealed = match target.verity() {
            Verity::Required => {
                let sealed = seal::seal(root)?;
                let found = seal::measured(&image).map_err(|_| SetupError::ImageUnsealed {
                    id: id.to_string(),
                    path: image.clone(),
                })?;
                check_digest(id, &found)?;
                sealed
            }
            Verity::Optional => {
                // No kernel verity to lean on: the image's digest is still
                // checked, in software (an EROFS image is a few MiB).
                let file = File::open(&image).map_err(SetupError::io("opening", &image))?;
                let found = measure_verity_with_fallback::<Sha256HashValue>(&file)
                    .map_err(SetupError::io("hashing", &image))?;
                check_digest(id, &found.to_hex())?;
                None
            }
        };
        let mounted = self.mount_image(target, &image)?;
        for (dir, what) in [
            ("sysroot", "the root partition"),
            ("etc", "the deployment's /etc"),
            ("var", "/var"),
        ] {
            let is_dir = rustix::fs::statat(&mounted, dir, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                .unwrap_or(false);
            if !is_dir {
                return Err(SetupError::NoMountPoint {
                    id: id.to_string(),
                    dir,
                    what,
                });
            }
        }

        // 2. Mounts, each one undone if a later one fails.
        let mut undo = Undo::default();
        let result = self.assemble(mounted, &etc, &mut undo);
        match result {
            Ok(seeded_var) => Ok(Report {
                id: id.to_string(),
                verity: target.verity(),
                sealed,
                seeded_var,
                elapsed: started.elapsed(),
            }),
            Err(e) => {
                undo.run();
                Err(e)
            }
        }
    }

    /// Builds the composefs mount, detached.
    fn mount_image(&self, target: &BootTarget, image: &Path) -> Result<OwnedFd, SetupError> {
        let image_fd = rustix::fs::open(image, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(SetupError::io("opening", image))?;
        let objects = self.root.join(partition::STORE_OBJECTS);
        let objects_fd = rustix::fs::open(
            &objects,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(SetupError::io("opening", &objects))?;
        let verity = match target.verity() {
            Verity::Required => VerityRequirement::Required,
            Verity::Optional => VerityRequirement::Disabled,
        };
        composefs_fsmount(
            image_fd,
            target.id(),
            &[objects_fd.as_fd()],
            verity,
            &MountOptions::default(),
        )
        .map_err(|e| {
            // The digest check above reads fs-verity's stored digest, not
            // the data: altered blocks surface here, as EIO from the kernel
            // verifying what EROFS reads.
            if verity == VerityRequirement::Required
                && e.raw_os_error() == Some(Errno::IO.raw_os_error())
            {
                SetupError::ImageCorrupt {
                    id: target.id().to_string(),
                    why: e.to_string(),
                }
            } else {
                SetupError::io("mounting composefs image", image)(e)
            }
        })
    }

    /// Steps 1–5 of the module docs; returns whether /var was seeded.
    fn assemble(&self, mounted: OwnedFd, etc: &Path, undo: &mut Undo) -> Result<bool, SetupError> {
        let (root, stash) = (&self.root, &self.stash);
        std::fs::create_dir_all(stash).map_err(SetupError::io("creating", stash))?;
        move_mount(root, stash)?;
        undo.push(Step::MovedRoot {
            from: root.clone(),
            to: stash.clone(),
        });

        mount_at(&mounted, CWD, root).map_err(SetupError::io("attaching the image at", root))?;
        undo.push(Step::Mounted(root.clone()));

        let var = stash.join(partition::VAR);
        let seeded = if var.is_dir() {
            false
        } else {
            let seed_dir = stash.join(partition::VAR_SEED);
            if seed_dir.exists() {
                std::fs::remove_dir_all(&seed_dir)
                    .map_err(SetupError::io("removing", &seed_dir))?;
            }
            seed::copy_tree(&root.join("var"), &seed_dir)?;
            // Contents on disk before the name: after a power cut /var is
            // either complete or absent (and seeded again), never empty files.
            let state = stash.join("state");
            let state_dir =
                std::fs::File::open(&state).map_err(SetupError::io("opening", &state))?;
            rustix::fs::syncfs(&state_dir).map_err(SetupError::io("syncing", &state))?;
            std::fs::rename(&seed_dir, &var)
                .map_err(SetupError::io("renaming into place", &var))?;
            rustix::fs::fsync(&state_dir).map_err(SetupError::io("syncing", &state))?;
            true
        };

        for (from, to) in [(stash.join(etc), root.join("etc")), (var, root.join("var"))] {
            mount_bind(&from, &to).map_err(SetupError::io("bind-mounting", &from))?;
            undo.push(Step::Mounted(to));
        }

        let sysroot = root.join("sysroot");
        move_mount(stash, &sysroot)?;
        // Nothing to undo from here on: the root is complete.
        undo.clear();
        // Only tidiness: the empty stash is on the initramfs's root, which
        // is freed at switch-root whether or not it is still there.
        let _ = std::fs::remove_dir(stash);
        Ok(seeded)
    }
}

fn check_digest(id: &str, found: &str) -> Result<(), SetupError> {
    if found == id {
        Ok(())
    } else {
        Err(SetupError::ImageTampered {
            id: id.to_string(),
            found: found.to_string(),
        })
    }
}

/// Remounts the root partition read-write if the initramfs mounted it
/// read-only (`ro` on the command line): sealing, /etc and /var write to it.
fn make_writable(root: &Path) -> Result<(), SetupError> {
    let st = rustix::fs::statvfs(root).map_err(SetupError::io("reading mount flags of", root))?;
    if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
        mount_remount(root, MountFlags::empty(), "")
            .map_err(SetupError::io("remounting read-write", root))?;
    }
    Ok(())
}

/// `mount --move`; a shared parent mount (systemd makes `/` shared, also in
/// a dracut initramfs) refuses moves with EINVAL, so `/` is made private
/// once and the move retried.
fn move_mount(from: &Path, to: &Path) -> Result<(), SetupError> {
    match mount_move(from, to) {
        Err(Errno::INVAL) => {
            mount_change("/", MountPropagationFlags::PRIVATE)
                .map_err(SetupError::io("making private", "/"))?;
            mount_move(from, to)
        }
        other => other,
    }
    .map_err(|source| SetupError::MoveMount {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

/// A mount change to take back.
enum Step {
    MovedRoot { from: PathBuf, to: PathBuf },
    Mounted(PathBuf),
}

/// Mount changes made so far, undone in reverse order on failure.
#[derive(Default)]
struct Undo(Vec<Step>);

impl Undo {
    fn push(&mut self, step: Step) {
        self.0.push(step);
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// Best effort: the setup already failed, and the error it reports is
    /// the first one, not an undo error.
    fn run(&mut self) {
        while let Some(step) = self.0.pop() {
            match step {
                Step::Mounted(at) => {
                    let _ = unmount(&at, UnmountFlags::DETACH);
                }
                Step::MovedRoot { from, to } => {
                    let _ = mount_move(&to, &from);
                    let _ = std::fs::remove_dir(&to);
                }
            }
        }
    }
}
