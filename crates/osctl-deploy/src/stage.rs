//! Staging a deployment: pull, check, lay out state, install kernel, write
//! the boot entry, mark it staged. The default boot entry is not touched:
//! that happens at finalize (shutdown), so a crash or a bad image before
//! then leaves the machine booting what it booted.
//!
//! Order (each step durable before the next; fail point names in brackets):
//!
//! | step | fail point after it |
//! |---|---|
//! | 1. pull into the store | `stage:after-pull` |
//! | 2. `state/deploy/.tmp-<id>` (origin, record, /etc) renamed to `<id>` | `stage:after-state-dir` |
//! | 3. GC root for the image | `stage:after-root` |
//! | 4. kernel + initramfs into `<boot>/osctl/<digest>/` | `stage:after-kernel` |
//! | 5. BLS entry `osctl-<id>.conf` | `stage:after-entry` |
//! | 6. `state/staged` ← id | `stage:after-staged-marker` |
//!
//! A crash anywhere leaves either nothing new or a complete deployment that
//! is not the default; re-running the command finishes the job.

use std::path::Path;
use std::sync::Arc;

use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{ImageRecord, PullObserver};

use crate::DeployError;
use crate::boot::{self, BlsEntry};
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::origin::{ORIGIN_VERSION, Origin};
use crate::sysroot::{RECORD_FILE, Sysroot, write_json};

/// What [`Sysroot::stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    /// A new deployment is staged for the next boot.
    Staged(DeploymentId),
    /// The image is the booted one: nothing to stage.
    AlreadyBooted(DeploymentId),
    /// The image was already staged.
    AlreadyStaged(DeploymentId),
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
            .ok_or_else(|| DeployError::Other(format!("bad image id {}", record.image_id())))?;
        self.lock()?;
        let state = self.state()?;
        if state.booted.as_ref().is_some_and(|b| b.id() == &id) {
            // Switching back to the booted image drops a staged one.
            if let Some(staged) = &state.staged {
                self.drop_deployment(staged.id())?;
            }
            return Ok(StageOutcome::AlreadyBooted(id));
        }
        if state.staged.as_ref().is_some_and(|s| s.id() == &id) {
            return Ok(StageOutcome::AlreadyStaged(id));
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

        // A non-booted, non-staged deployment of the same image is rebuilt
        // (it keeps its pin).
        let mut pinned = false;
        if self.root().try_exists(id.state_dir()).unwrap_or(false) {
            pinned = self.load(&id).map(|d| d.origin().pinned).unwrap_or(false);
            self.drop_deployment(&id)?;
        }
        let origin = Origin {
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
            pinned,
            deployed: now(),
            serial: self
                .deployments()?
                .iter()
                .map(|d| d.origin().serial)
                .max()
                .unwrap_or(0)
                + 1,
            etc_conflicts: Vec::new(),
            cached_update: None,
        };
        let first = self.deployments()?.is_empty();
        self.write_state_dir(&id, record, &origin, &tree)?;
        failpoint::hit("stage:after-state-dir");
        if first {
            self.seed_var(&tree)?;
        }

        self.store().add_root(id.as_str(), record)?;
        failpoint::hit("stage:after-root");

        let boot_digest = boot::install_kernel(&tree, &kernel, self.boot())?;
        let origin = Origin {
            boot_digest,
            ..origin
        };
        self.write_origin(&id, &origin)?;
        failpoint::hit("stage:after-kernel");

        // A counter only when there is something to fall back to: the
        // booted deployment (an offline sysroot boots nothing).
        let tries =
            (tries > 0 && !first && state.booted.is_some()).then(|| boot::Tries::fresh(tries));
        boot::write_entry(self.boot(), &id, &self.entry_for(&id, &origin), tries)?;
        failpoint::hit("stage:after-entry");

        // Only one staged deployment at a time: a newer switch replaces it.
        if let Some(old) = &state.staged {
            self.drop_deployment(old.id())?;
        }
        let state_dir = self
            .root()
            .open_dir(layout::STATE_DIR)
            .map_err(|e| DeployError::Io {
                path: self.path().join(layout::STATE_DIR),
                why: e.to_string(),
            })?;
        osctl_store::atomic::write_atomic(&state_dir, "staged", format!("{id}\n").as_bytes())
            .map_err(|e| DeployError::Io {
                path: self.path().join(layout::STAGED_FILE),
                why: e.to_string(),
            })?;
        failpoint::hit("stage:after-staged-marker");
        Ok(StageOutcome::Staged(id))
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
        let tmp_name = format!(".tmp-{id}");
        let tmp_rel = Path::new(layout::DEPLOY_DIR).join(&tmp_name);
        let shown = self.path().join(&tmp_rel);
        let io = |e: std::io::Error| DeployError::Io {
            path: shown.clone(),
            why: e.to_string(),
        };
        let deploy = self.root().open_dir(layout::DEPLOY_DIR).map_err(io)?;
        if deploy.try_exists(&tmp_name).map_err(io)? {
            deploy.remove_dir_all(&tmp_name).map_err(io)?;
        }
        deploy.create_dir(&tmp_name).map_err(io)?;
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
        osctl_store::atomic::sync_dir(&dir).map_err(io)?;
        deploy.rename(&tmp_name, &deploy, id.as_str()).map_err(io)?;
        osctl_store::atomic::sync_dir(&deploy).map_err(io)
    }

    /// Seeds the shared `/var` from the image, once: when the machine gets
    /// its first deployment and `/var` is still empty (as bootc does at
    /// install; afterwards `/var` belongs to the machine, like a volume).
    fn seed_var(&self, tree: &osctl_store::ImageTree) -> Result<(), DeployError> {
        let io = |e: std::io::Error| DeployError::Io {
            path: self.path().join(layout::VAR_DIR),
            why: e.to_string(),
        };
        let state = self.root().open_dir(layout::STATE_DIR).map_err(io)?;
        if state.read_dir("var").map_err(io)?.next().is_some()
            || tree.kind(Path::new("/var")) != Some(osctl_store::EntryKind::Directory)
        {
            return Ok(());
        }
        // Built aside and renamed over the empty /var: an interrupted seed
        // leaves an empty /var (seeded again next time), never half of one.
        const SEED: &str = ".var-seed";
        if state.try_exists(SEED).map_err(io)? {
            state.remove_dir_all(SEED).map_err(io)?;
        }
        state.create_dir(SEED).map_err(io)?;
        let seed = state.open_dir(SEED).map_err(io)?;
        tree.export(Path::new("/var"), &seed)?;
        osctl_store::atomic::sync_filesystem(&seed).map_err(io)?;
        state.remove_dir("var").map_err(io)?;
        state.rename(SEED, &state, "var").map_err(io)?;
        osctl_store::atomic::sync_dir(&state).map_err(io)
    }

    /// Removes a deployment that is not booted: entry first (so the boot
    /// loader never offers a deployment without state), then state, then
    /// its GC root. Kernels and store objects are left to `prune`/`gc`.
    pub(crate) fn drop_deployment(&self, id: &DeploymentId) -> Result<(), DeployError> {
        let io = |e: std::io::Error| DeployError::Io {
            path: self.path().join(id.state_dir()),
            why: e.to_string(),
        };
        // Never leave the default naming a deployment without an entry:
        // point it back at the booted deployment first.
        if boot::read_default(self.boot())?.as_ref() == Some(id)
            && let Some(booted) = self.booted_id()?.filter(|b| b != id)
        {
            boot::write_default(self.boot(), &booted)?;
        }
        // The staged marker goes before the entry: finalize must never find
        // a marker naming a deployment without an entry.
        if self.staged_id()?.as_ref() == Some(id) {
            let state_dir = self.root().open_dir(layout::STATE_DIR).map_err(io)?;
            osctl_store::atomic::remove_durably(&state_dir, "staged").map_err(io)?;
        }
        boot::remove_entry(self.boot(), id)?;
        let deploy = self.root().open_dir(layout::DEPLOY_DIR).map_err(io)?;
        if deploy.try_exists(id.as_str()).map_err(io)? {
            // Rename first: a half-deleted directory must not look like a
            // deployment (names starting with '.' are ignored).
            let doomed = format!(".del-{id}");
            deploy.rename(id.as_str(), &deploy, &doomed).map_err(io)?;
            osctl_store::atomic::sync_dir(&deploy).map_err(io)?;
            deploy.remove_dir_all(&doomed).map_err(io)?;
        }
        self.store().remove_root(id.as_str())?;
        Ok(())
    }
}

impl Sysroot {
    /// The BLS entry of a deployment. On a store without fs-verity the
    /// entry says `composefs=?<id>` (verity optional), so the initramfs does
    /// not demand what the store cannot give.
    pub(crate) fn entry_for(&self, id: &DeploymentId, origin: &Origin) -> BlsEntry {
        let mut entry = BlsEntry::for_deployment(
            id,
            &origin.boot_digest,
            origin.os_name.as_deref(),
            origin.image_version.as_deref(),
            origin.kargs(),
        );
        if self.verity_optional() {
            entry.options[0] = format!("{}=?{id}", layout::CMDLINE_KEY);
        }
        entry
    }

    /// Whether the store cannot enforce fs-verity (the host has none) and
    /// will not be sealed at first boot either (no
    /// [`SEAL_AT_BOOT_FILE`](crate::sysroot::SEAL_AT_BOOT_FILE) from
    /// `osctl install`).
    pub(crate) fn verity_optional(&self) -> bool {
        self.store().verity() == osctl_store::VerityMode::Insecure
            && !self
                .root()
                .try_exists(crate::sysroot::SEAL_AT_BOOT_FILE)
                .unwrap_or(false)
    }
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
