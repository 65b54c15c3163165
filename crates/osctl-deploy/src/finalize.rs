//! Finalize (at shutdown), rollback, pin and prune.
//!
//! Finalize merges `/etc` and then makes the staged entry the default. The
//! merge result is built in `state/.finalize/` and swapped with the staged
//! deployment's `etc/` in one `renameat2(RENAME_EXCHANGE)`, so the staged
//! `/etc` is always either the image's or the merged one, never half of
//! each. The staged marker goes last: until then, re-running finalize
//! redoes the (idempotent) merge from the same three inputs.

use std::path::Path;

use cap_std::fs::Dir;
use rustix::fs::RenameFlags;

use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::report::EtcMergeReport;
use crate::sysroot::{Deployment, Sysroot};
use crate::{DeployError, merge_etc};

/// Scratch space for finalize, relative to the sysroot.
const FINALIZE_DIR: &str = "sysroot/state/.finalize";

/// What finalize did.
#[derive(Debug, Clone)]
pub enum FinalizeOutcome {
    /// Nothing was staged (the common case at shutdown).
    NothingStaged,
    /// The staged deployment is now the default boot entry.
    Finalized {
        id: DeploymentId,
        merge: Option<EtcMergeReport>,
    },
}

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The next boot is this (older) deployment.
    Queued(DeploymentId),
    /// A queued rollback was undone: the booted deployment boots next again.
    Undone(DeploymentId),
}

impl Sysroot {
    /// Merges `/etc` into the staged deployment and makes it the default.
    pub fn finalize(&self) -> Result<FinalizeOutcome, DeployError> {
        self.lock()?;
        let state = self.state()?;
        let Some(staged) = state.staged.clone() else {
            return Ok(FinalizeOutcome::NothingStaged);
        };
        if self.staged_id()?.as_ref() != Some(staged.id()) {
            // Already finalized (the default), waiting for the reboot.
            return Ok(FinalizeOutcome::Finalized {
                id: staged.id().clone(),
                merge: None,
            });
        }
        let merge = match &state.booted {
            Some(booted) => Some(self.merge_etc_into(booted, &staged)?),
            None => None,
        };
        failpoint::hit("finalize:after-etc-swap");
        // The merged /etc lives on the root filesystem, the default on the
        // ESP: flush the former before the latter can name it. Rewriting
        // the entry first heals one lost to a crash of an earlier run.
        let staged_dir = self.open_state(&staged.id().state_dir().to_string_lossy())?;
        osctl_store::atomic::sync_filesystem(&staged_dir).map_err(|e| DeployError::Io {
            path: self.path().join(staged.id().state_dir()),
            why: e.to_string(),
        })?;
        // Keeps the entry's boot counter (a lost entry gets a fresh one).
        let tries = match boot::read_entries(self.boot())?
            .into_iter()
            .find(|e| &e.id == staged.id())
        {
            Some(e) => e.tries,
            None => {
                let n = self.config()?.boot_tries();
                (n > 0).then(|| boot::Tries::fresh(n))
            }
        };
        boot::write_entry(
            self.boot(),
            staged.id(),
            &self.entry_for(staged.id(), staged.origin()),
            tries,
        )?;
        // A counted entry boots on trial: systemd-boot falls back to the
        // booted deployment by itself if its tries run out.
        match (&tries, &state.booted) {
            (Some(_), Some(booted)) => {
                boot::write_trial_default(self.boot(), staged.id(), booted.id())?
            }
            _ => boot::write_default(self.boot(), staged.id())?,
        }
        failpoint::hit("finalize:after-default");
        let state_dir = self.open_state(layout::STATE_DIR)?;
        osctl_store::atomic::remove_durably(&state_dir, "staged").map_err(|e| DeployError::Io {
            path: self.path().join(layout::STAGED_FILE),
            why: e.to_string(),
        })?;
        Ok(FinalizeOutcome::Finalized {
            id: staged.id().clone(),
            merge,
        })
    }

    /// Opens `rel` (relative to the sysroot), the error naming the path.
    pub(crate) fn open_state(&self, rel: &str) -> Result<Dir, DeployError> {
        self.root().open_dir(rel).map_err(|e| DeployError::Io {
            path: self.path().join(rel),
            why: e.to_string(),
        })
    }

    /// old = booted image's /etc, current = booted deployment's /etc,
    /// new = staged image's /etc → merged, swapped into the staged deployment.
    fn merge_etc_into(
        &self,
        booted: &Deployment,
        staged: &Deployment,
    ) -> Result<EtcMergeReport, DeployError> {
        let scratch_path = self.path().join(FINALIZE_DIR);
        let io = |e: std::io::Error| DeployError::Io {
            path: scratch_path.clone(),
            why: e.to_string(),
        };
        if self.root().try_exists(FINALIZE_DIR).map_err(io)? {
            self.root().remove_dir_all(FINALIZE_DIR).map_err(io)?;
        }
        self.root().create_dir_all(FINALIZE_DIR).map_err(io)?;
        let scratch = self.open_state(FINALIZE_DIR)?;
        for d in ["old", "new", "merged"] {
            scratch.create_dir(d).map_err(io)?;
        }
        let export = |d: &Deployment, into: &str| -> Result<(), DeployError> {
            let tree = self.store().image_tree(d.record())?;
            if tree.kind(Path::new("/etc")).is_some() {
                tree.export(Path::new("/etc"), &scratch.open_dir(into).map_err(io)?)?;
            }
            Ok(())
        };
        export(booted, "old")?;
        export(staged, "new")?;
        let current = self.open_state(
            &booted
                .id()
                .state_dir()
                .join(layout::ETC_DIR)
                .to_string_lossy(),
        )?;
        let report = merge_etc(
            &scratch.open_dir("old").map_err(io)?,
            &current,
            &scratch.open_dir("new").map_err(io)?,
            &scratch.open_dir("merged").map_err(io)?,
        )?;
        osctl_store::atomic::sync_dir(&scratch).map_err(io)?;
        failpoint::hit("finalize:after-merge");

        let staged_dir = self.open_state(&staged.id().state_dir().to_string_lossy())?;
        rustix::fs::renameat_with(
            &scratch,
            "merged",
            &staged_dir,
            layout::ETC_DIR,
            RenameFlags::EXCHANGE,
        )
        .map_err(|e| io(e.into()))?;
        osctl_store::atomic::sync_dir(&staged_dir).map_err(io)?;
        let mut origin = staged.origin().clone();
        origin.etc_conflicts = report.conflicts().to_vec();
        self.write_origin(staged.id(), &origin)?;
        self.root().remove_dir_all(FINALIZE_DIR).map_err(io)?;
        Ok(report)
    }

    /// Makes the rollback deployment boot next (dropping a staged one), or
    /// undoes a queued rollback.
    pub fn rollback(&self) -> Result<RollbackOutcome, DeployError> {
        self.lock()?;
        let state = self.state()?;
        if state.rollback_queued
            && let Some(booted) = &state.booted
        {
            boot::write_default(self.boot(), booted.id())?;
            failpoint::hit("rollback:after-default");
            return Ok(RollbackOutcome::Undone(booted.id().clone()));
        }
        let Some(rollback) = state.rollback else {
            return Err(DeployError::NoRollback);
        };
        // Default first: dropping a finalized staged deployment must never
        // leave the default naming it.
        boot::write_default(self.boot(), rollback.id())?;
        failpoint::hit("rollback:after-default");
        if let Some(staged) = &state.staged {
            self.drop_deployment(staged.id())?;
            failpoint::hit("rollback:after-drop-staged");
        }
        Ok(RollbackOutcome::Queued(rollback.id().clone()))
    }

    /// Sets or clears a deployment's pin; pinned deployments are never pruned.
    pub fn set_pinned(&self, prefix: &str, pinned: bool) -> Result<DeploymentId, DeployError> {
        self.lock()?;
        let d = self.find(prefix)?;
        let mut origin = d.origin().clone();
        origin.pinned = pinned;
        self.write_origin(d.id(), &origin)?;
        failpoint::hit("pin:after-origin");
        Ok(d.id().clone())
    }

    /// Removes deployments that are not booted, staged, rollback or pinned
    /// (failed ones once `failed-images.json` remembers them), then kernels
    /// no remaining deployment uses. Returns the removed ids.
    pub fn prune(&self) -> Result<Vec<DeploymentId>, DeployError> {
        self.lock()?;
        let state = self.state()?;
        let mut removed = Vec::new();
        // Leftovers of an interrupted stage (state without an entry).
        for id in self.incomplete()? {
            self.drop_deployment(&id)?;
            removed.push(id);
        }
        // Failed deployments go once failed-images.json remembers them (so
        // upgrade still refuses their image and the reason is kept).
        let remembered: Vec<String> = self
            .failed_images()?
            .into_iter()
            .map(|f| f.image_id)
            .collect();
        let failed = state
            .failed
            .iter()
            .filter(|d| remembered.iter().any(|r| r == d.id().as_str()));
        for d in state.others.iter().chain(failed) {
            if d.origin().pinned || state.default.as_ref() == Some(d.id()) {
                continue;
            }
            boot::remove_entry(self.boot(), d.id())?;
            failpoint::hit("prune:after-entry-removed");
            self.drop_deployment(d.id())?;
            failpoint::hit("prune:after-state-removed");
            removed.push(d.id().clone());
        }
        let keep: Vec<String> = self
            .deployments()?
            .iter()
            .map(|d| d.origin().boot_digest.clone())
            .collect();
        boot::remove_unused_kernels(self.boot(), &keep)?;
        Ok(removed)
    }
}
