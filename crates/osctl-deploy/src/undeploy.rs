//! Removing one deployment from disk.
//!
//! Callers first make the deployment irrelevant (not booted, not staged,
//! not the rollback; see [`crate::state`]); this only removes its files, in
//! an order where every crash leaves something the recovery recognises:
//!
//! | step | fail point after it | a crash leaves |
//! |---|---|---|
//! | default moved off it, markers naming it removed | — | an abandoned or other deployment |
//! | `state/deploy/<id>` renamed to `.del-<id>` (the commit) | `drop:after-rename` | a temporary and an entry without a deployment |
//! | boot entry removed | `drop:after-entry` | a temporary |
//! | `.del-<id>` removed | `drop:after-state` | a store root without state |
//! | store root `deploy/<id>` removed | `drop:after-root` | nothing |
//!
//! The state dir goes first, not the entry: a deployment whose entry is
//! missing but whose state is whole is never taken for a leftover (a boot
//! dir that is not mounted would make every deployment look like one), so
//! only the rename decides that a deployment is being removed.
//!
//! Kernels and store objects are left to `prune` and `gc`.

use crate::DeployError;
use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::markers;
use crate::scan::REMOVING_PREFIX;
use crate::state::DeploymentState;
use crate::sysroot::Sysroot;

impl Sysroot {
    /// Removes deployment `id`, which must not be booted. If the default
    /// entry names it, the default moves to the booted deployment first;
    /// with nothing booted, a deployment the default names is refused (the
    /// default must always name an existing entry).
    pub(crate) fn drop_deployment(&self, id: &DeploymentId) -> Result<(), DeployError> {
        let booted = self.booted_id()?;
        if booted.as_ref() == Some(id) {
            return Err(DeployError::RemoveBooted(id.clone()));
        }
        if boot::read_default(self.boot())?.as_ref() == Some(id) {
            let Some(booted) = &booted else {
                return Err(DeployError::RemoveDefault(id.clone()));
            };
            boot::write_default(self.boot(), booted)?;
        }
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        let shown = self.path().join(layout::sysroot::STATE);
        for name in [markers::STAGED, markers::ROLLBACK] {
            let marker = markers::read(&state_dir, name, &shown).map_err(|e| {
                DeployError::UnreadableMarker {
                    problem: crate::error::one_line(&e),
                }
            })?;
            if marker.is_some_and(|m| &m.id == id) {
                markers::remove(&state_dir, name).map_err(|e| DeployError::Io {
                    step: "removing",
                    path: shown.join(name),
                    source: e,
                })?;
            }
        }
        let retired = self.retire_state_dir(id.as_str())?;
        boot::remove_entry(self.boot(), id)?;
        failpoint::hit("drop:after-entry");
        if let Some(retired) = retired {
            self.remove_retired(&retired)?;
        }
        self.store().remove_root(id.as_str())?;
        failpoint::hit("drop:after-root");
        Ok(())
    }

    /// Removes `state/deploy/<name>` (a deployment or a temporary): renamed
    /// to `.del-<id>` first, so a half-deleted directory never looks like a
    /// deployment.
    pub(crate) fn remove_state_dir(&self, name: &str) -> Result<(), DeployError> {
        match self.retire_state_dir(name)? {
            Some(retired) => self.remove_retired(&retired),
            None => Ok(()),
        }
    }

    /// Renames `state/deploy/<name>` to `.del-<id>` (durably) and returns
    /// the new name; `None` if there is no such directory. A `.del-` name
    /// is returned as it is.
    fn retire_state_dir(&self, name: &str) -> Result<Option<String>, DeployError> {
        let deploy_path = self.path().join(layout::sysroot::DEPLOY);
        let io = |e: std::io::Error| DeployError::Io {
            step: "removing",
            path: deploy_path.join(name),
            source: e,
        };
        let deploy = self.open_state(layout::sysroot::DEPLOY)?;
        if !deploy.try_exists(name).map_err(io)? {
            return Ok(None);
        }
        if name.starts_with(REMOVING_PREFIX) {
            return Ok(Some(name.to_owned()));
        }
        let id = name.trim_start_matches(crate::scan::BUILDING_PREFIX);
        let retired = format!("{REMOVING_PREFIX}{id}");
        if deploy.try_exists(&retired).map_err(io)? {
            deploy.remove_dir_all(&retired).map_err(io)?;
        }
        deploy.rename(name, &deploy, &retired).map_err(io)?;
        osctl_store::atomic::sync_dir(&deploy).map_err(io)?;
        failpoint::hit("drop:after-rename");
        Ok(Some(retired))
    }

    /// Removes a retired (`.del-<id>`) deployment directory.
    fn remove_retired(&self, retired: &str) -> Result<(), DeployError> {
        let deploy_path = self.path().join(layout::sysroot::DEPLOY);
        let io = |e: std::io::Error| DeployError::Io {
            step: "removing",
            path: deploy_path.join(retired),
            source: e,
        };
        let deploy = self.open_state(layout::sysroot::DEPLOY)?;
        deploy.remove_dir_all(retired).map_err(io)?;
        osctl_store::atomic::sync_dir(&deploy).map_err(io)?;
        failpoint::hit("drop:after-state");
        Ok(())
    }
}

impl Sysroot {
    /// Whether the staged deployment stays when it stops being staged (a
    /// switch replaces it, a rollback or a switch back to the booted image
    /// cancels it): when it is pinned, or when it existed before it was
    /// staged and is still pending (its marker says so) and its image did
    /// not fail here (staging gave it a fresh counter and dropped its
    /// health record; `failed-images.json` still knows, and prune would
    /// remove it). Otherwise it is an update that never booted, and is
    /// dropped. A finalized update (the default, waiting for the reboot)
    /// has no marker left to say it existed before: unless pinned, it is
    /// dropped.
    pub(crate) fn kept_when_unstaged(
        &self,
        state: &DeploymentState,
        staged: &crate::scan::Deployment,
    ) -> Result<bool, DeployError> {
        if staged.origin().pinned {
            return Ok(true);
        }
        if !(state.staged_pending && state.staged_existing) {
            return Ok(false);
        }
        let failed_here = self
            .failed_images()?
            .iter()
            .any(|f| f.image_id == staged.id().as_str());
        Ok(!failed_here)
    }
}
