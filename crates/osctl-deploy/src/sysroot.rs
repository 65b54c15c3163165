//! The machine's deployments as one handle: store, state dirs, boot entries.
//!
//! Model: disk is the only truth. Which deployment is *booted* comes from the
//! kernel command line (`composefs=<id>`), which is *default* from
//! `loader.conf`, which is *staged* from `state/staged`; there is no separate
//! database that could disagree with them after a crash. Everything else is
//! derived ([`Sysroot::state`]).

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use osctl_store::{ImageRecord, Store};

use crate::DeployError;
use crate::boot;
use crate::config::Config;
use crate::health::{HEALTH_FILE, HealthRecord, HealthState};
use crate::layout::{self, DeploymentId};
use crate::origin::Origin;

/// Environment variable naming a file to read the kernel command line from
/// instead of `/proc/cmdline`: how tests "boot" a deployment.
pub const CMDLINE_ENV: &str = "OSCTL_CMDLINE_FILE";

/// A deployment: its id, origin and the image record it was made from,
/// its boot entry's counter and its health record.
#[derive(Debug, Clone)]
pub struct Deployment {
    id: DeploymentId,
    origin: Origin,
    record: ImageRecord,
    tries: Option<boot::Tries>,
    health: Option<HealthRecord>,
}

impl Deployment {
    pub fn id(&self) -> &DeploymentId {
        &self.id
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }
    /// The boot entry's counter: `None` once the deployment was marked good
    /// (or never counted).
    pub fn tries(&self) -> Option<boot::Tries> {
        self.tries
    }
    /// The last health record (`state/deploy/<id>/health.json`), if any.
    pub fn health(&self) -> Option<&HealthRecord> {
        self.health.as_ref()
    }
    /// Failed: its boot counter ran out, or its health checks failed while
    /// it was still on trial (counted). A deployment once marked good that
    /// fails a check later is not failed: it stays the one to come back to.
    /// Meaningful for deployments that are not booted.
    pub fn failed(&self) -> bool {
        self.tries.is_some_and(|t| t.exhausted())
            || (self.tries.is_some()
                && self
                    .health
                    .as_ref()
                    .is_some_and(|h| h.state == HealthState::Failed))
    }
}

/// Who is who among the deployments.
#[derive(Debug, Clone, Default)]
pub struct DeploymentState {
    pub booted: Option<Deployment>,
    pub staged: Option<Deployment>,
    pub rollback: Option<Deployment>,
    pub others: Vec<Deployment>,
    /// Deployments that failed (health checks, or boot counter run out);
    /// never staged or rollback.
    pub failed: Vec<Deployment>,
    /// The next boot is the rollback deployment.
    pub rollback_queued: bool,
    /// The deployment the boot loader starts next, if any.
    pub default: Option<DeploymentId>,
}

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
const BOOT_DIR_FILE: &str = "sysroot/state/boot-dir";

/// The lock file, relative to the sysroot.
const LOCK_FILE: &str = "sysroot/state/lock";

/// Written by `osctl install` (relative to the sysroot; `/osctl/seal-at-boot`
/// on the installed root filesystem): the store was built where fs-verity
/// was unavailable, but the installed filesystem has it and the first boot
/// enables it on every object ("seals" the store). While it exists, boot
/// entries demand verity (`composefs=<id>`, not `composefs=?<id>`) although
/// this store is not sealed yet. See docs/install.md.
pub const SEAL_AT_BOOT_FILE: &str = "sysroot/osctl/seal-at-boot";

/// The record file kept in each deployment dir, so its image can be read
/// even after the reference was re-pulled to another digest.
pub(crate) const RECORD_FILE: &str = "image.json";

impl Sysroot {
    pub fn open(opts: &SysrootOptions) -> Result<Self, DeployError> {
        let io = |p: &Path, e: std::io::Error| DeployError::Io {
            path: p.to_path_buf(),
            why: e.to_string(),
        };
        let store = Store::open_or_create(&opts.sysroot)?;
        let root = Dir::open_ambient_dir(&opts.sysroot, cap_std::ambient_authority())
            .map_err(|e| io(&opts.sysroot, e))?;
        root.create_dir_all(layout::DEPLOY_DIR)
            .map_err(|e| io(&opts.sysroot.join(layout::DEPLOY_DIR), e))?;
        root.create_dir_all(layout::VAR_DIR)
            .map_err(|e| io(&opts.sysroot.join(layout::VAR_DIR), e))?;
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
                .open_dir(layout::STATE_DIR)
                .map_err(|e| io(&opts.sysroot, e))?;
            let text = format!("{}\n", given.display());
            osctl_store::atomic::write_atomic(&state, "boot-dir", text.as_bytes())
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

    /// Waits for and takes the deployment lock (idempotent). Every
    /// operation that changes deployments or boot entries calls it first.
    pub(crate) fn lock(&self) -> Result<(), DeployError> {
        if self.lock.get().is_some() {
            return Ok(());
        }
        let lock_path = self.path.join(LOCK_FILE);
        let io = |e: std::io::Error| DeployError::Io {
            path: lock_path.clone(),
            why: e.to_string(),
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
        let _ = self.lock.set(file);
        Ok(())
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
    pub fn booted_id(&self) -> Result<Option<DeploymentId>, DeployError> {
        if self.installing {
            return Ok(None);
        }
        let file = std::env::var_os(CMDLINE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
        let cmdline = match std::fs::read_to_string(&file) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DeployError::Io {
                    path: file,
                    why: e.to_string(),
                });
            }
        };
        Ok(booted_from_cmdline(&cmdline).filter(|id| self.exists(id)))
    }

    fn exists(&self, id: &DeploymentId) -> bool {
        self.root
            .try_exists(id.state_dir().join(layout::ORIGIN_FILE))
            .unwrap_or(false)
    }

    /// The staged deployment's id, if one is staged and still exists.
    pub fn staged_id(&self) -> Result<Option<DeploymentId>, DeployError> {
        match self.root.read_to_string(layout::STAGED_FILE) {
            Ok(s) => Ok(DeploymentId::parse(s.trim()).filter(|id| self.exists(id))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DeployError::Io {
                path: self.path.join(layout::STAGED_FILE),
                why: e.to_string(),
            }),
        }
    }

    /// Every deployment, newest (highest serial) first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, DeployError> {
        let dir_path = self.path.join(layout::DEPLOY_DIR);
        let io = |e: std::io::Error| DeployError::Io {
            path: dir_path.clone(),
            why: e.to_string(),
        };
        let with_entries = self.entry_counters()?;
        let mut out = Vec::new();
        for entry in self.root.read_dir(layout::DEPLOY_DIR).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporaries of an interrupted stage start with '.'; ignore.
            let Some(id) = DeploymentId::parse(&name) else {
                continue;
            };
            // A deployment is complete once its boot entry exists (the last
            // step of staging before the marker); an interrupted stage's
            // leftovers are not deployments, and prune removes them.
            let Some(tries) = with_entries.get(&id) else {
                continue;
            };
            if !self.exists(&id) {
                continue;
            }
            let mut d = self.load_without_entry(&id)?;
            d.tries = *tries;
            out.push(d);
        }
        out.sort_by(|a, b| b.origin.serial.cmp(&a.origin.serial).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Ids that have a boot entry, with the entry's boot counter.
    fn entry_counters(
        &self,
    ) -> Result<std::collections::HashMap<DeploymentId, Option<boot::Tries>>, DeployError> {
        Ok(boot::read_entries(&self.boot)?
            .into_iter()
            .map(|e| (e.id, e.tries))
            .collect())
    }

    /// `/etc/osctl/config.toml` of this sysroot.
    pub fn config(&self) -> Result<Config, DeployError> {
        Config::load(&self.root, &self.path)
    }

    /// State directories without a boot entry: what an interrupted stage
    /// leaves behind.
    pub(crate) fn incomplete(&self) -> Result<Vec<DeploymentId>, DeployError> {
        let with_entries = self.entry_counters()?;
        let mut out = Vec::new();
        let Ok(rd) = self.root.read_dir(layout::DEPLOY_DIR) else {
            return Ok(out);
        };
        for entry in rd.flatten() {
            if let Some(id) = DeploymentId::parse(&entry.file_name().to_string_lossy())
                && !with_entries.contains_key(&id)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Loads one deployment: origin, record, health and entry counter.
    pub fn load(&self, id: &DeploymentId) -> Result<Deployment, DeployError> {
        let mut d = self.load_without_entry(id)?;
        d.tries = self.entry_counters()?.get(id).copied().flatten();
        Ok(d)
    }

    /// [`Sysroot::load`] without looking at the boot entries.
    fn load_without_entry(&self, id: &DeploymentId) -> Result<Deployment, DeployError> {
        let dir = id.state_dir();
        let read = |name: &str| -> Result<Vec<u8>, DeployError> {
            self.root.read(dir.join(name)).map_err(|e| DeployError::Io {
                path: self.path.join(&dir).join(name),
                why: e.to_string(),
            })
        };
        let parse_err = |name: &str, e: serde_json::Error| DeployError::Io {
            path: self.path.join(&dir).join(name),
            why: format!("unreadable: {e}"),
        };
        let origin: Origin = serde_json::from_slice(&read(layout::ORIGIN_FILE)?)
            .map_err(|e| parse_err(layout::ORIGIN_FILE, e))?;
        let record: ImageRecord =
            serde_json::from_slice(&read(RECORD_FILE)?).map_err(|e| parse_err(RECORD_FILE, e))?;
        // A health record that cannot be read is reported as missing: it is
        // advisory, and the next check run rewrites it.
        let health = self
            .root
            .read(dir.join(HEALTH_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(Deployment {
            id: id.clone(),
            origin,
            record,
            tries: None,
            health,
        })
    }

    /// Replaces a deployment's origin file atomically.
    pub fn write_origin(&self, id: &DeploymentId, origin: &Origin) -> Result<(), DeployError> {
        let dir = self
            .root
            .open_dir(id.state_dir())
            .map_err(|e| DeployError::Io {
                path: self.path.join(id.state_dir()),
                why: e.to_string(),
            })?;
        write_json(&dir, layout::ORIGIN_FILE, origin).map_err(|e| DeployError::Io {
            path: self.path.join(id.state_dir()).join(layout::ORIGIN_FILE),
            why: e.to_string(),
        })
    }

    /// Booted, staged, rollback and the rest, derived from disk.
    ///
    /// - *staged*: named by `state/staged`; or, once finalized, the default
    ///   entry when it is newer than the booted deployment (it boots next).
    /// - *rollback*: the default entry when it is older than the booted
    ///   deployment (then `rollback_queued`); otherwise the newest other one.
    pub fn state(&self) -> Result<DeploymentState, DeployError> {
        let booted = self.booted_id()?;
        let marked = self.staged_id()?.filter(|s| Some(s) != booted.as_ref());
        let default = boot::read_default(&self.boot)?;
        let mut state = DeploymentState {
            default: default.clone(),
            ..Default::default()
        };
        let mut rest = Vec::new();
        for d in self.deployments()? {
            if Some(&d.id) == booted.as_ref() {
                state.booted = Some(d);
            } else if d.failed() && Some(&d.id) != marked.as_ref() {
                state.failed.push(d);
            } else {
                rest.push(d);
            }
        }
        let take = |rest: &mut Vec<Deployment>, id: &DeploymentId| {
            rest.iter()
                .position(|d| &d.id == id)
                .map(|i| rest.remove(i))
        };
        if let Some(id) = &marked {
            state.staged = take(&mut rest, id);
        }
        if let Some(def) = default.as_ref().filter(|d| Some(*d) != booted.as_ref()) {
            // With nothing booted (a fresh install, a scratch sysroot) the
            // default simply boots next.
            let newer = match (&state.booted, rest.iter().find(|d| &d.id == def)) {
                (Some(b), Some(d)) => d.origin.serial > b.origin.serial,
                (None, Some(_)) => true,
                _ => false,
            };
            if newer && state.staged.is_none() {
                state.staged = take(&mut rest, def);
            } else if !newer
                && state.booted.is_some()
                && let Some(d) = take(&mut rest, def)
            {
                state.rollback = Some(d);
                state.rollback_queued = true;
            }
        }
        if state.rollback.is_none() && !rest.is_empty() {
            state.rollback = Some(rest.remove(0));
        }
        state.others = rest;
        Ok(state)
    }

    /// Finds a deployment by full id or a unique prefix of 6+ digits.
    pub fn find(&self, prefix: &str) -> Result<Deployment, DeployError> {
        let all = self.deployments()?;
        let hits: Vec<&Deployment> = all
            .iter()
            .filter(|d| prefix.len() >= 6 && d.id.as_str().starts_with(prefix))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(DeployError::NoSuchDeployment(prefix.to_string())),
            _ => Err(DeployError::Ambiguous(prefix.to_string())),
        }
    }
}

/// `composefs=<hex>` or `composefs=?<hex>` (verity optional) from a command line.
pub fn booted_from_cmdline(cmdline: &str) -> Option<DeploymentId> {
    cmdline.split_whitespace().find_map(|arg| {
        let value = arg.strip_prefix(layout::CMDLINE_KEY)?.strip_prefix('=')?;
        DeploymentId::parse(value.trim_start_matches('?'))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_the_booted_deployment() {
        let id = "b".repeat(64);
        let line = format!("BOOT_IMAGE=/x ro composefs=?{id} quiet\n");
        assert_eq!(booted_from_cmdline(&line).unwrap().as_str(), id);
        assert!(booted_from_cmdline("ro quiet composefs.digest=abc").is_none());
        assert!(booted_from_cmdline("composefs=nothex").is_none());
    }
}
