//! The machine's deployments as one handle: store, state dirs, boot entries.
//!
//! Model: disk is the only truth. Which deployment is *booted* comes from the
//! kernel command line (`composefs=<id>`), which is *default* from
//! `loader.conf`, which is *staged* or a queued rollback from the markers in
//! `state/`; there is no separate database that could disagree with them
//! after a crash. Roles are derived by [`crate::state`] from what
//! [`crate::scan`] reads; every command that changes deployments takes the
//! lock and runs the [recovery](crate::recover) first.

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use osctl_store::{ImageRecord, Store};

use crate::DeployError;
use crate::config::Config;
use crate::layout::{self, DeploymentId};
use crate::origin::Origin;

/// Where the kernel command line is read from on a running machine.
const PROC_CMDLINE: &str = "/proc/cmdline";

/// Where the sysroot and boot dir are, and where to read the command line.
#[derive(Debug, Clone)]
pub struct SysrootOptions {
    pub sysroot: PathBuf,
    /// Default: `<sysroot>/boot`.
    pub boot_dir: Option<PathBuf>,
}

/// An open sysroot.
pub struct Sysroot {
    path: PathBuf,
    root: Dir,
    boot_path: PathBuf,
    boot: Dir,
    store: Store,
    /// Taken by the first operation that changes deployments and held for
    /// the handle's lifetime: one osctl changes them at a time. Reading
    /// (status) and pulling never wait for it.
    lock: std::sync::OnceLock<std::fs::File>,
    /// Set by [`Sysroot::installing`]: nothing is booted from this sysroot.
    installing: bool,
}

/// Where the boot dir given with `--boot-dir` is remembered.
const BOOT_DIR_FILE: &str = layout::sysroot::BOOT_DIR_FILE;

/// The lock file, relative to the sysroot.
const LOCK_FILE: &str = layout::sysroot::LOCK;

/// Written by `osctl install` (relative to the sysroot; `/osctl/seal-at-boot`
/// on the installed root filesystem): the store was built where fs-verity
/// was unavailable, but the installed filesystem has it and the first boot
/// enables it on every object ("seals" the store). While it exists, boot
/// entries demand verity (`composefs=<id>`, not `composefs=?<id>`) although
/// this store is not sealed yet. See docs/install.md.
pub const SEAL_AT_BOOT_FILE: &str = layout::sysroot::SEAL_AT_BOOT;

/// The record file kept in each deployment dir, so its image can be read
/// even after the reference was re-pulled to another digest.
pub(crate) const RECORD_FILE: &str = layout::RECORD_FILE;

impl Sysroot {
    pub fn open(opts: &SysrootOptions) -> Result<Self, DeployError> {
        let io = |p: &Path, e: std::io::Error| DeployError::Io {
            step: "opening",
            path: p.to_path_buf(),
            source: e,
        };
        let store = Store::open_or_create(&opts.sysroot)?;
        let root = Dir::open_ambient_dir(&opts.sysroot, cap_std::ambient_authority())
            .map_err(|e| io(&opts.sysroot, e))?;
        root.create_dir_all(layout::sysroot::DEPLOY)
            .map_err(|e| io(&opts.sysroot.join(layout::sysroot::DEPLOY), e))?;
        root.create_dir_all(layout::sysroot::VAR)
            .map_err(|e| io(&opts.sysroot.join(layout::sysroot::VAR), e))?;
        // The boot dir given once is remembered, so a later command without
        // --boot-dir (a gc timer, finalize at shutdown) sees the same entries.
        let recorded = root
            .read_to_string(BOOT_DIR_FILE)
            .ok()
            .map(|s| PathBuf::from(s.trim()));
        let boot_path = opts
            .boot_dir
            .clone()
            .or_else(|| recorded.clone())
            .unwrap_or_else(|| opts.sysroot.join("boot"));
        if let Some(given) = &opts.boot_dir
            && recorded.as_ref() != Some(given)
        {
            let state = root
                .open_dir(layout::sysroot::STATE)
                .map_err(|e| io(&opts.sysroot, e))?;
            let text = format!("{}\n", given.display());
            osctl_store::atomic::write_atomic(
                &state,
                layout::state_dir_name(BOOT_DIR_FILE),
                text.as_bytes(),
            )
            .map_err(|e| io(&opts.sysroot.join(BOOT_DIR_FILE), e))?;
        }
        std::fs::create_dir_all(boot_path.join(layout::ENTRIES_DIR))
            .map_err(|e| io(&boot_path, e))?;
        let boot = Dir::open_ambient_dir(&boot_path, cap_std::ambient_authority())
            .map_err(|e| io(&boot_path, e))?;
        Ok(Sysroot {
            path: opts.sysroot.clone(),
            root,
            boot_path,
            boot,
            store,
            lock: std::sync::OnceLock::new(),
            installing: false,
        })
    }

    /// Marks a sysroot being installed (`osctl install`): no deployment of
    /// it is booted, whatever the running system's command line names (the
    /// host may well run the very image being installed).
    pub fn installing(mut self) -> Self {
        self.installing = true;
        self
    }

    /// Waits for and takes the deployment lock (idempotent), then runs the
    /// [recovery](crate::recover) once: whatever an interrupted command left
    /// is finished or cleared before this one looks at the machine. Every
    /// operation that changes deployments or boot entries calls it first.
    pub(crate) fn lock(&self) -> Result<(), DeployError> {
        if self.lock_without_recovery()? {
            self.recover(false)?;
        }
        Ok(())
    }

    /// Takes the deployment lock; returns whether this call took it (false:
    /// this handle already held it).
    pub(crate) fn lock_without_recovery(&self) -> Result<bool, DeployError> {
        if self.lock.get().is_some() {
            return Ok(false);
        }
        let lock_path = self.path.join(LOCK_FILE);
        let io = |e: std::io::Error| DeployError::Io {
            step: "locking",
            path: lock_path.clone(),
            source: e,
        };
        let file = self
            .root
            .open_with(
                LOCK_FILE,
                cap_std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true),
            )
            .map_err(io)?
            .into_std();
        // Another osctl (an upgrade timer, finalize at shutdown) waits here
        // rather than interleaving its writes with ours.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        if self.lock.set(file).is_err() {
            unreachable!(
                "the lock is only set here, after checking it is unset, and Sysroot is not Sync"
            );
        }
        Ok(true)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn root(&self) -> &Dir {
        &self.root
    }
    pub fn boot(&self) -> &Dir {
        &self.boot
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn boot_path(&self) -> &Path {
        &self.boot_path
    }

    /// The deployment named on the kernel command line, if it exists here.
    ///
    /// The command line is `/proc/cmdline` (or the file named by the
    /// [`CMDLINE_ENV`](crate::test_hooks::CMDLINE_ENV) test hook). Not being
    /// able to read it is an error, never "nothing booted": on a running
    /// machine that would stage without its kernel arguments and finalize
    /// without merging `/etc`. A command line without `composefs=`, or
    /// naming a deployment this sysroot does not have, is an offline
    /// sysroot (an installer's, an image builder's).
    pub fn booted_id(&self) -> Result<Option<DeploymentId>, DeployError> {
        if self.installing {
            return Ok(None);
        }
        let file = crate::test_hooks::var(crate::test_hooks::CMDLINE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(PROC_CMDLINE));
        let cmdline = std::fs::read_to_string(&file).map_err(|e| DeployError::Cmdline {
            path: file.clone(),
            source: e,
        })?;
        let arg = crate::layout::cmdline::find(&cmdline).map_err(|e| DeployError::BadCmdline {
            path: file.clone(),
            source: e,
        })?;
        let Some(id) = arg.map(|a| a.id) else {
            return Ok(None);
        };
        let exists = self
            .root
            .try_exists(id.state_dir())
            .map_err(|e| DeployError::Io {
                step: "checking",
                path: self.path.join(id.state_dir()),
                source: e,
            })?;
        Ok(exists.then_some(id))
    }

    /// `/etc/osctl/config.toml` of this sysroot.
    pub fn config(&self) -> Result<Config, DeployError> {
        Config::load(&self.root, &self.path)
    }

    /// Opens `rel` (relative to the sysroot), the error naming the path.
    pub(crate) fn open_state(&self, rel: &str) -> Result<Dir, DeployError> {
        self.root.open_dir(rel).map_err(|e| DeployError::Io {
            step: "opening",
            path: self.path.join(rel),
            source: e,
        })
    }

    /// Replaces a deployment's origin file atomically.
    pub fn write_origin(&self, id: &DeploymentId, origin: &Origin) -> Result<(), DeployError> {
        self.write_deployment_file(id, layout::ORIGIN_FILE, origin)
    }

    /// Replaces a deployment's copy of its image record atomically: what
    /// `status` reports about the pull that staged it (the reference, the
    /// signature policy's verdict).
    pub(crate) fn write_deployment_record(
        &self,
        id: &DeploymentId,
        record: &ImageRecord,
    ) -> Result<(), DeployError> {
        self.write_deployment_file(id, RECORD_FILE, record)
    }

    /// Replaces JSON file `name` in deployment `id`'s state directory
    /// atomically, the error naming the file.
    fn write_deployment_file<T: serde::Serialize>(
        &self,
        id: &DeploymentId,
        name: &str,
        value: &T,
    ) -> Result<(), DeployError> {
        let dir = self
            .root
            .open_dir(id.state_dir())
            .map_err(|e| DeployError::Io {
                step: "opening",
                path: self.path.join(id.state_dir()),
                source: e,
            })?;
        write_json(&dir, name, value).map_err(|e| DeployError::Io {
            step: "writing",
            path: self.path.join(id.state_dir()).join(name),
            source: e,
        })
    }

    /// Sets deployment `d`'s `finalized` flag in its origin.
    pub(crate) fn set_finalized(
        &self,
        d: &crate::scan::Deployment,
        finalized: bool,
    ) -> Result<(), DeployError> {
        let mut origin = d.origin().clone();
        origin.finalized = finalized;
        self.write_origin(d.id(), &origin)
    }
}

/// Serialises `value` as pretty JSON and replaces `name` in `dir` atomically.
pub(crate) fn write_json(
    dir: &Dir,
    name: &str,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut data = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    data.push(b'\n');
    osctl_store::atomic::write_atomic(dir, name, &data)
}

/// Now, in RFC 3339 (UTC, microseconds): when a record or origin was written.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
