//! Staging a deployment: pull, check, lay out state, install kernel, write
//! the boot entry, mark it staged. The default boot entry is not touched
//! (it moves at finalize, at shutdown), except to undo a queued rollback or
//! a finalized update this switch replaces.
//!
//! Order (each step durable before the next; fail point after it):
//!
//! | step | fail point |
//! |---|---|
//! | 1. pull into the store | `stage:after-pull` |
//! | 2. `state/deploy/.tmp-<id>` (origin, record, /etc) renamed to `<id>` | `stage:after-state-dir` |
//! | 2a. first deployment only: `/var` seeded aside, renamed into place | `stage:after-var-seed-built`, `stage:after-var-seed` |
//! | 3. GC root for the image | `stage:after-root` |
//! | 4. kernel + initramfs into `<boot>/osctl/<digest>/` | `stage:after-kernel` |
//! | 5. origin with the boot digest (or, re-staging a deployment that exists, its new record and origin) | `stage:after-origin` |
//! | 6. BLS entry `osctl-<id>+N.conf` | `stage:after-entry` |
//! | 6a. a finalized update being replaced (unless kept: pinned, or it existed before it was staged): un-finalized | `stage:after-unfinalize-replaced` |
//! | **7. `state/staged` ← id (`existing` when re-staging one, `download-only` for `upgrade --download-only`) — the commit point** | `stage:after-marker` |
//! | 8. default back on the booted deployment (a replaced finalized update, a queued rollback) | `stage:after-default-restored` |
//! | 9. the replaced deployment dropped (unless kept) | `stage:after-replaced-dropped` |
//!
//! Until step 7 the new deployment is never finalized and not staged, so
//! [`crate::state`] treats it as abandoned (invisible) and the recovery of
//! the next locked command removes it; from step 7 on it is staged, and
//! steps 8–9 are cleanup that the recovery also finishes. A re-run of the
//! command after a crash therefore ends where a clean run ends.
//!
//! `upgrade --download-only` ([`StageOptions::download_only`]) takes the
//! same steps with a `download-only` marker (see [`crate::markers`]), and
//! refuses up front when something other than the booted deployment boots
//! next (an ordinary staged update, a queued rollback), so steps 6a, 8 and 9
//! only ever replace an earlier download-only deployment: what boots next
//! never changes. It never stages the rollback deployment in place
//! ([`StageOutcome::AlreadyDeployed`]). Staging the image of a download-only deployment without
//! `download_only` releases it instead ([`StageOutcome::Released`]: the
//! marker rewritten without the word, fail point `release:after-marker`).

use std::path::Path;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{ImageRecord, PullObserver};

use crate::DeployError;
use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::markers;
use crate::origin::{ORIGIN_VERSION, Origin};
use crate::recover::VAR_SEED_SCRATCH;

/// The shared /var, in the state dir.
const VAR_NAME: &str = layout::state_dir_name(layout::sysroot::VAR);
use crate::state::DeploymentState;
use crate::sysroot::{RECORD_FILE, Sysroot, now, write_json};

/// What [`Sysroot::stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    /// A new deployment is staged for the next boot; `replaced` is the
    /// staged deployment it took the place of (another switch's).
    Staged {
        id: DeploymentId,
        replaced: Option<DeploymentId>,
    },
    /// The image is the booted one: nothing to stage. `cancelled` is the
    /// staged update or queued rollback that no longer boots next.
    AlreadyBooted {
        id: DeploymentId,
        cancelled: Option<DeploymentId>,
    },
    /// The image already boots next (staged, or a queued rollback); with
    /// `download_only`: it is already downloaded.
    AlreadyStaged(DeploymentId),
    /// The image was downloaded only (`upgrade --download-only`); it is now
    /// an ordinary staged deployment, applied at the next shutdown.
    Released(DeploymentId),
    /// `download_only` of the rollback deployment's image: nothing to
    /// download, nothing staged. `cancelled` is the earlier download the
    /// tracked reference no longer points to, dropped.
    AlreadyDeployed {
        id: DeploymentId,
        cancelled: Option<DeploymentId>,
    },
}

impl StageOutcome {
    /// The deployment of the image that was staged.
    pub fn id(&self) -> &DeploymentId {
        match self {
            StageOutcome::Staged { id, .. }
            | StageOutcome::AlreadyBooted { id, .. }
            | StageOutcome::AlreadyStaged(id)
            | StageOutcome::Released(id)
            | StageOutcome::AlreadyDeployed { id, .. } => id,
        }
    }
}

/// Options of [`Sysroot::stage_record_with`].
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// The new deployment's machine-local kernel arguments. `None` (switch,
    /// upgrade): carried over from the booted deployment; `osctl install`
    /// gives the first deployment's (`root=UUID=… rw`, `--karg`s).
    pub local_kargs: Option<Vec<String>>,
    /// Boot attempts the new entry gets (systemd-boot boot counting).
    /// `None`: `[boot] tries` from /etc/osctl/config.toml; `Some(0)`: no
    /// counter (`osctl install`: there is nothing to fall back to).
    pub boot_tries: Option<u32>,
    /// `upgrade --download-only`: staged with a `download-only` marker, so
    /// finalize leaves it; refused while something other than the booted
    /// deployment boots next.
    pub download_only: bool,
}

impl Sysroot {
    /// Pulls `imgref` and stages it as the next deployment.
    pub async fn stage(
        &self,
        imgref: &ImageRef,
        fetch: &FetchOptions,
        observer: Arc<dyn PullObserver>,
    ) -> Result<StageOutcome, DeployError> {
        let outcome = self.store().pull(imgref, fetch, observer).await?;
        failpoint::hit("stage:after-pull");
        self.stage_record(imgref, outcome.record())
    }

    /// Stages an image already in the store.
    pub fn stage_record(
        &self,
        imgref: &ImageRef,
        record: &ImageRecord,
    ) -> Result<StageOutcome, DeployError> {
        self.stage_record_with(imgref, record, &StageOptions::default())
    }

    /// [`Sysroot::stage_record`] with options.
    pub fn stage_record_with(
        &self,
        imgref: &ImageRef,
        record: &ImageRecord,
        options: &StageOptions,
    ) -> Result<StageOutcome, DeployError> {
        let id = DeploymentId::parse(record.image_id())
            .ok_or_else(|| DeployError::BadImageId(record.image_id().to_owned()))?;
        self.lock()?;
        self.require_readable_booted("to stage")?;
        let state = self.state()?;
        if options.download_only {
            Self::download_only_allowed(&state)?;
        }
        if state.booted.as_ref().is_some_and(|b| b.id() == &id) {
            let cancelled = self.cancel_next_boot(&state)?;
            return Ok(StageOutcome::AlreadyBooted { id, cancelled });
        }
        let boots_next = state.staged.as_ref().map(|d| d.id()) == Some(&id)
            || (state.rollback_queued && state.rollback.as_ref().map(|d| d.id()) == Some(&id));
        if state.staged_download_only
            && !options.download_only
            && state.staged.as_ref().map(|d| d.id()) == Some(&id)
        {
            self.release_staged(&id, state.staged_existing)?;
            return Ok(StageOutcome::Released(id));
        }
        if boots_next {
            return Ok(StageOutcome::AlreadyStaged(id));
        }
        // A download of the rollback's image would stage the rollback in
        // place: it would stop being the rollback (`rollback` refusing,
        // status showing none) and lose its health record, for a download
        // that is not needed. Like a download of the booted image, it drops
        // an earlier download instead (the only thing that can boot next
        // here, see `download_only_allowed`). Other deployments (pinned,
        // failed) have no role to lose: they are staged in place as before.
        if options.download_only && state.rollback.as_ref().is_some_and(|d| d.id() == &id) {
            let cancelled = self.cancel_next_boot(&state)?;
            return Ok(StageOutcome::AlreadyDeployed { id, cancelled });
        }
        if let Some(broken) = self.scan()?.broken.into_iter().find(|b| b.id == id) {
            return Err(DeployError::BrokenDeployment {
                id,
                image: imgref.to_string(),
                why: broken.why,
            });
        }

        // Everything that can reject the image happens before any write.
        let tree = self.store().image_tree(record)?;
        self.store().check_image(record)?;
        let name = imgref.to_string();
        let kernel = boot::find_kernel(&tree, &name)?;
        let image_kargs = boot::image_kargs(&tree, &name, std::env::consts::ARCH)?;
        let os_name = boot::os_release_name(&tree)?;
        let tries = match options.boot_tries {
            Some(n) => n,
            None => self.config()?.boot_tries(),
        };
        let local_kargs = match &options.local_kargs {
            Some(given) => given.clone(),
            None => state
                .booted
                .as_ref()
                .map(|b| b.origin().local_kargs.clone())
                .unwrap_or_default(),
        };
        // A deployment of this image that exists (a rollback, a pinned or a
        // failed one) is staged again in place: its files stay until
        // finalize merges /etc into it, so nothing it is now changes before
        // the commit point.
        let existing = state
            .rollback
            .iter()
            .chain(&state.others)
            .chain(&state.failed)
            .find(|d| d.id() == &id)
            .cloned();
        let all: Vec<_> = [&state.booted, &state.staged, &state.rollback]
            .into_iter()
            .flatten()
            .chain(&state.others)
            .chain(&state.failed)
            .collect();
        let serial = all.iter().map(|d| d.origin().serial).max().unwrap_or(0) + 1;
        let first = all.is_empty();
        let mut origin = Origin {
            version: ORIGIN_VERSION,
            image: imgref.name(),
            transport: imgref.transport().to_string(),
            manifest_digest: record.manifest_digest().to_string(),
            image_id: id.to_string(),
            architecture: record.architecture().to_string(),
            image_version: record
                .labels()
                .get("org.opencontainers.image.version")
                .cloned(),
            timestamp: record.created().map(str::to_string),
            os_name,
            kernel_version: kernel.version().to_string(),
            boot_digest: String::new(),
            image_kargs,
            local_kargs,
            pinned: false,
            finalized: false,
            deployed: now(),
            serial,
            etc_conflicts: Vec::new(),
            cached_update: None,
        };
        if let Some(d) = &existing {
            // It keeps what it is: pinned, finalized, its place in the
            // order (finalize moves it to the front).
            origin.pinned = d.origin().pinned;
            origin.finalized = d.origin().finalized;
            origin.serial = d.origin().serial;
            origin.etc_conflicts = d.origin().etc_conflicts.clone();
        } else {
            self.write_state_dir(&id, record, &origin, &tree)?;
            failpoint::hit("stage:after-state-dir");
            if first {
                self.seed_var(&tree)?;
            }
            self.store().add_root(id.as_str(), record)?;
            failpoint::hit("stage:after-root");
        }
        origin.boot_digest = boot::install_kernel(&tree, &kernel, self.boot())?;
        failpoint::hit("stage:after-kernel");
        if existing.is_some() {
            // Its record is the pull that staged it now: the same image, but
            // maybe another reference and another signature verdict (an
            // image first deployed from an `oci:` layout, now from a
            // registry whose policy verified it). Written with its origin,
            // before the commit point, as the origin is.
            self.write_deployment_record(&id, record)?;
        }
        self.write_origin(&id, &origin)?;
        failpoint::hit("stage:after-origin");

        // A new entry counts tries only when there is something to fall
        // back to (the booted deployment); an existing one keeps its
        // counter until finalize gives it a fresh one.
        let entry_tries = match &existing {
            Some(d) => d.tries(),
            None => (tries > 0 && state.booted.is_some()).then(|| boot::Tries::fresh(tries)),
        };
        boot::write_entry(
            self.boot(),
            &id,
            &self.entry_for(&id, &origin)?,
            entry_tries,
        )?;
        failpoint::hit("stage:after-entry");

        // What this switch replaces is dropped after the commit. If it is
        // finalized — the default, waiting for the reboot, or a pending
        // update whose finalize stopped before making it the default — it
        // is un-finalized first, so that once the marker names the new
        // deployment the old one counts as abandoned, never as a rollback
        // target that never booted. One that is kept
        // ([`Sysroot::kept_when_unstaged`]) is neither. With nothing
        // booted, the default is what the machine boots: it stays.
        let replaced = state
            .staged
            .clone()
            .filter(|_| state.booted.is_some() || state.staged_pending);
        let replaced_kept = match &replaced {
            Some(old) => self.kept_when_unstaged(&state, old)?,
            None => false,
        };
        if let Some(old) = replaced
            .as_ref()
            .filter(|old| old.origin().finalized && !replaced_kept)
        {
            self.set_finalized(old, false)?;
            failpoint::hit("stage:after-unfinalize-replaced");
        }

        self.write_marker(
            markers::STAGED,
            &id,
            existing.is_some(),
            options.download_only,
        )?;
        failpoint::hit("stage:after-marker");
        if existing.is_some() {
            // Its old counter (used up, or gone when it was marked good)
            // gives way to a fresh one now that it is staged.
            self.fresh_staged_start(&id, &origin, entry_tries, state.booted.is_some())?;
        }

        // Cleanup: the default goes back to the booted deployment if a
        // replaced finalized update or a queued rollback holds it.
        if let Some(booted) = &state.booted
            && state.default.as_ref().is_some_and(|d| d != booted.id())
        {
            boot::write_default(self.boot(), booted.id())?;
            failpoint::hit("stage:after-default-restored");
        }
        if state.rollback_queued {
            self.remove_marker(markers::ROLLBACK)?;
        }
        if let Some(old) = replaced.as_ref().filter(|_| !replaced_kept) {
            self.drop_deployment(old.id())?;
            failpoint::hit("stage:after-replaced-dropped");
        }
        Ok(StageOutcome::Staged {
            id,
            replaced: replaced.map(|d| d.id().clone()),
        })
    }

    /// Whatever was to boot next instead of the booted deployment (a staged
    /// update, a queued rollback) no longer does — what `switch` to the
    /// booted image does, without a pull. The fleet agent calls it when its
    /// assignment is withdrawn before the reboot. Returns what was cancelled.
    pub fn cancel_next(&self) -> Result<Option<DeploymentId>, DeployError> {
        self.lock()?;
        self.require_readable_booted("to cancel the next boot")?;
        let state = self.state()?;
        self.cancel_next_boot(&state)
    }

    /// `switch` to the booted image: whatever was to boot next instead (a
    /// staged update, a queued rollback) no longer does. Returns it.
    fn cancel_next_boot(
        &self,
        state: &DeploymentState,
    ) -> Result<Option<DeploymentId>, DeployError> {
        let Some(booted) = &state.booted else {
            return Ok(None);
        };
        if let Some(staged) = &state.staged {
            // As when a switch replaces it (see `stage_record_with`).
            let kept = self.kept_when_unstaged(state, staged)?;
            if staged.origin().finalized && !kept {
                self.set_finalized(staged, false)?;
                failpoint::hit("stage:after-unfinalize-replaced");
            }
            if state.staged_pending {
                self.remove_marker(markers::STAGED)?;
            } else {
                boot::write_default(self.boot(), booted.id())?;
                failpoint::hit("stage:after-default-restored");
            }
            if !kept {
                self.drop_deployment(staged.id())?;
                failpoint::hit("stage:after-replaced-dropped");
            }
            return Ok(Some(staged.id().clone()));
        }
        if state.rollback_queued
            && let Some(rollback) = &state.rollback
        {
            boot::write_default(self.boot(), booted.id())?;
            failpoint::hit("stage:after-default-restored");
            self.remove_marker(markers::ROLLBACK)?;
            return Ok(Some(rollback.id().clone()));
        }
        Ok(None)
    }

    /// Builds `state/deploy/<id>` under a temporary name and renames it into
    /// place, so the directory either is complete or does not exist.
    fn write_state_dir(
        &self,
        id: &DeploymentId,
        record: &ImageRecord,
        origin: &Origin,
        tree: &osctl_store::ImageTree,
    ) -> Result<(), DeployError> {
        let tmp_name = format!("{}{id}", crate::scan::BUILDING_PREFIX);
        let tmp_rel = Path::new(layout::sysroot::DEPLOY).join(&tmp_name);
        let shown = self.path().join(&tmp_rel);
        let io = |e: std::io::Error| DeployError::Io {
            step: "building",
            path: shown.clone(),
            source: e,
        };
        let deploy = self.root().open_dir(layout::sysroot::DEPLOY).map_err(io)?;
        if deploy.try_exists(&tmp_name).map_err(io)? {
            deploy.remove_dir_all(&tmp_name).map_err(io)?;
        }
        deploy.create_dir(&tmp_name).map_err(io)?;
        let built = (|| {
            let dir = deploy.open_dir(&tmp_name).map_err(io)?;
            write_json(&dir, RECORD_FILE, record).map_err(io)?;
            write_json(&dir, layout::ORIGIN_FILE, origin).map_err(io)?;
            dir.create_dir(layout::ETC_DIR).map_err(io)?;
            if tree.kind(Path::new("/etc")).is_some() {
                let etc = dir.open_dir(layout::ETC_DIR).map_err(io)?;
                tree.export(Path::new("/etc"), &etc)?;
            }
            // The exported /etc must be on disk before the directory can count.
            osctl_store::atomic::sync_filesystem(&dir).map_err(io)?;
            osctl_store::atomic::sync_dir(&dir).map_err(io)
        })();
        if let Err(e) = built {
            // Nothing else refers to it: a failed export must not leave it.
            if let Err(cleanup) = deploy.remove_dir_all(&tmp_name) {
                tracing::warn!("removing {}: {cleanup}", shown.display());
            }
            return Err(e);
        }
        deploy.rename(&tmp_name, &deploy, id.as_str()).map_err(io)?;
        osctl_store::atomic::sync_dir(&deploy).map_err(io)
    }

    /// Seeds the shared `/var` from the image, once: when the machine gets
    /// its first deployment and `/var` is still empty (as bootc does at
    /// install; afterwards `/var` belongs to the machine, like a volume).
    fn seed_var(&self, tree: &osctl_store::ImageTree) -> Result<(), DeployError> {
        let io = |e: std::io::Error| DeployError::Io {
            step: "seeding",
            path: self.path().join(layout::sysroot::VAR),
            source: e,
        };
        let state = self.root().open_dir(layout::sysroot::STATE).map_err(io)?;
        if state.read_dir(VAR_NAME).map_err(io)?.next().is_some()
            || tree.kind(Path::new("/var")) != Some(osctl_store::EntryKind::Directory)
        {
            return Ok(());
        }
        // Built aside and renamed over the empty /var: an interrupted seed
        // leaves an empty /var (seeded again next time), never half of one.
        if state.try_exists(VAR_SEED_SCRATCH).map_err(io)? {
            state.remove_dir_all(VAR_SEED_SCRATCH).map_err(io)?;
        }
        state.create_dir(VAR_SEED_SCRATCH).map_err(io)?;
        let seed = state.open_dir(VAR_SEED_SCRATCH).map_err(io)?;
        tree.export(Path::new("/var"), &seed)?;
        osctl_store::atomic::sync_filesystem(&seed).map_err(io)?;
        failpoint::hit("stage:after-var-seed-built");
        state.remove_dir(VAR_NAME).map_err(io)?;
        state
            .rename(VAR_SEED_SCRATCH, &state, VAR_NAME)
            .map_err(io)?;
        osctl_store::atomic::sync_dir(&state).map_err(io)?;
        failpoint::hit("stage:after-var-seed");
        Ok(())
    }
}
