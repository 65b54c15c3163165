//! Finalize (at shutdown), rollback, pin and prune.
//!
//! Finalize merges `/etc` and then makes the staged entry the default. The
//! merge result is built in `state/.finalize/` and swapped with the staged
//! deployment's `etc/` in one `renameat2(RENAME_EXCHANGE)`, so the staged
//! `/etc` is always either the image's or the merged one, never half of
//! each. Its commit point is the default: before it, re-running finalize
//! redoes the (idempotent) merge from the same three inputs; after it, the
//! staged marker is a leftover the recovery removes.
//!
//! | finalize step | fail point |
//! |---|---|
//! | merged `/etc` built | `finalize:after-merge` |
//! | swapped into the staged deployment | `finalize:after-etc-swap` |
//! | origin: finalized, first in order, conflicts | `finalize:after-origin` |
//! | entry rewritten with a fresh boot counter | `finalize:after-entry` |
//! | trial sort keys (when counted) | `trial:after-fallback-key`, `trial:after-trying-key` |
//! | **default ← staged (or the trial pattern): commit** | `finalize:after-default` |
//! | staged marker removed | — |
//!
//! | rollback step | fail point |
//! |---|---|
//! | a finalized staged update un-finalized (unless kept) | `rollback:after-unfinalize` |
//! | rollback marker ← target | `rollback:after-marker` |
//! | **default ← target: commit** | `rollback:after-default` |
//! | staged marker removed | `rollback:after-staged-marker` |
//! | staged deployment dropped (unless kept: pinned, or it existed before it was staged) | `rollback:after-drop-staged` |

use std::path::Path;

use rustix::fs::RenameFlags;

use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::markers;
use crate::recover::FINALIZE_SCRATCH;
use crate::report::EtcMergeReport;
use crate::scan::Deployment;
use crate::sysroot::Sysroot;
use crate::{DeployError, merge_etc};

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
    /// The next boot is this deployment (now, or already before: rollback
    /// is idempotent).
    Queued(DeploymentId),
}

impl Sysroot {
    /// Merges `/etc` into the staged deployment and makes it the default.
    pub fn finalize(&self) -> Result<FinalizeOutcome, DeployError> {
        self.lock()?;
        self.require_readable_booted("to finalize")?;
        let state = self.state()?;
        let Some(staged) = state.staged.clone() else {
            return Ok(FinalizeOutcome::NothingStaged);
        };
        if !state.staged_pending {
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

        let mut origin = staged.origin().clone();
        origin.finalized = true;
        let newest_other = self
            .deployments()?
            .iter()
            .filter(|d| d.id() != staged.id())
            .map(|d| d.origin().serial)
            .max()
            .unwrap_or(0);
        origin.serial = origin.serial.max(newest_other + 1);
        if let Some(report) = &merge {
            origin.etc_conflicts = report.conflicts().to_vec();
        }
        self.write_origin(staged.id(), &origin)?;
        failpoint::hit("finalize:after-origin");
        // The merged /etc and the origin live on the root filesystem, the
        // default on the ESP: flush the former before the latter can name
        // them.
        let staged_dir = self.open_state(&staged.id().state_dir().to_string_lossy())?;
        osctl_store::atomic::sync_filesystem(&staged_dir).map_err(|e| DeployError::Io {
            path: self.path().join(staged.id().state_dir()),
            why: e.to_string(),
        })?;

        // A fresh counter whenever there is a deployment to fall back to;
        // the entry is rewritten too, which heals one lost to a crash.
        let tries = self.staged_tries(state.booted.is_some())?;
        boot::write_entry(
            self.boot(),
            staged.id(),
            &self.entry_for(staged.id(), &origin)?,
            tries,
        )?;
        failpoint::hit("finalize:after-entry");
        // A counted entry boots on trial: systemd-boot falls back to the
        // booted deployment by itself if its tries run out.
        match (&tries, &state.booted) {
            (Some(_), Some(booted)) => {
                boot::write_trial_default(self.boot(), staged.id(), booted.id())?
            }
            _ => boot::write_default(self.boot(), staged.id())?,
        }
        failpoint::hit("finalize:after-default");
        self.remove_marker(markers::STAGED)?;
        Ok(FinalizeOutcome::Finalized {
            id: staged.id().clone(),
            merge,
        })
    }

    /// old = booted image's /etc, current = booted deployment's /etc,
    /// new = staged image's /etc → merged, swapped into the staged deployment.
    fn merge_etc_into(
        &self,
        booted: &Deployment,
        staged: &Deployment,
    ) -> Result<EtcMergeReport, DeployError> {
        let scratch_rel = Path::new(layout::sysroot::STATE).join(FINALIZE_SCRATCH);
        let scratch_path = self.path().join(&scratch_rel);
        let io = |e: std::io::Error| DeployError::Io {
            path: scratch_path.clone(),
            why: e.to_string(),
        };
        if self.root().try_exists(&scratch_rel).map_err(io)? {
            self.root().remove_dir_all(&scratch_rel).map_err(io)?;
        }
        self.root().create_dir_all(&scratch_rel).map_err(io)?;
        let scratch = self.open_state(&scratch_rel.to_string_lossy())?;
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
        self.root().remove_dir_all(&scratch_rel).map_err(io)?;
        Ok(report)
    }

    /// Makes the rollback deployment boot next, dropping a staged one.
    /// Idempotent: with a rollback already queued it changes nothing (a
    /// queued rollback is cancelled with [`Sysroot::cancel_rollback`]).
    pub fn rollback(&self) -> Result<RollbackOutcome, DeployError> {
        self.lock()?;
        let state = self.state()?;
        let Some(target) = state.rollback.clone() else {
            return Err(DeployError::NoRollback);
        };
        if state.rollback_queued {
            return Ok(RollbackOutcome::Queued(target.id().clone()));
        }
        // A finalized update (the default, or a pending one whose finalize
        // stopped before the default) stops counting before the commit, so
        // it is abandoned, never a rollback target of its own — unless it
        // is kept (pinned, or it existed before it was staged: see
        // `kept_when_unstaged`).
        let staged_kept = state
            .staged
            .as_ref()
            .map(|s| self.kept_when_unstaged(&state, s))
            .transpose()?
            .unwrap_or(false);
        if let Some(staged) = state
            .staged
            .as_ref()
            .filter(|s| s.origin().finalized && !staged_kept)
        {
            self.set_finalized(staged, false)?;
            failpoint::hit("rollback:after-unfinalize");
        }
        self.write_marker(markers::ROLLBACK, target.id(), false)?;
        failpoint::hit("rollback:after-marker");
        boot::write_default(self.boot(), target.id())?;
        failpoint::hit("rollback:after-default");
        if state.staged_pending {
            self.remove_marker(markers::STAGED)?;
            failpoint::hit("rollback:after-staged-marker");
        }
        if let Some(staged) = state.staged.as_ref().filter(|_| !staged_kept) {
            self.drop_deployment(staged.id())?;
            failpoint::hit("rollback:after-drop-staged");
        }
        Ok(RollbackOutcome::Queued(target.id().clone()))
    }

    /// Cancels a queued rollback: the booted deployment boots next again.
    /// Returns it, or `None` when no rollback was queued (idempotent, like
    /// rollback itself: a re-run after a crash succeeds).
    pub fn cancel_rollback(&self) -> Result<Option<DeploymentId>, DeployError> {
        self.lock()?;
        let state = self.state()?;
        if !state.rollback_queued {
            return Ok(None);
        }
        let Some(booted) = &state.booted else {
            return Err(DeployError::Other(
                "nothing is booted from this sysroot: a queued rollback cannot go back to it"
                    .into(),
            ));
        };
        boot::write_default(self.boot(), booted.id())?;
        failpoint::hit("rollback-cancel:after-default");
        self.remove_marker(markers::ROLLBACK)?;
        Ok(Some(booted.id().clone()))
    }

    /// Sets or clears a deployment's pin; pinned deployments are never pruned.
    pub fn set_pinned(&self, prefix: &str, pinned: bool) -> Result<DeploymentId, DeployError> {
        self.lock()?;
        let d = self.find(prefix)?;
        let mut origin = d.origin().clone();
        origin.pinned = pinned;
        self.write_origin(d.id(), &origin)?;
        failpoint::hit(if pinned {
            "pin:after-origin"
        } else {
            "unpin:after-origin"
        });
        Ok(d.id().clone())
    }

    /// Removes deployments that are not booted, staged, rollback, the
    /// default or pinned (failed ones once `failed-images.json` remembers
    /// them), then kernels no boot entry uses. Returns the removed ids.
    pub fn prune(&self) -> Result<Vec<DeploymentId>, DeployError> {
        self.lock()?;
        let state = self.state()?;
        let mut removed = Vec::new();
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
            self.drop_deployment(d.id())?;
            removed.push(d.id().clone());
        }
        self.remove_unused_kernels()?;
        Ok(removed)
    }

    /// Removes kernel directories that no boot entry and no deployment
    /// names (an entry of a deployment osctl cannot read still counts).
    /// While a deployment is unreadable or has lost its entry, which kernel
    /// it needs is not known for sure: nothing is removed then.
    fn remove_unused_kernels(&self) -> Result<(), DeployError> {
        let scan = self.scan()?;
        if !scan.broken.is_empty() || scan.incomplete.iter().any(|i| i.finalized != Some(false)) {
            tracing::info!(
                "not removing kernels: a deployment cannot be read or has no boot entry"
            );
            failpoint::hit("prune:after-kernels");
            return Ok(());
        }
        let mut keep: Vec<String> = self
            .deployments()?
            .iter()
            .map(|d| d.origin().boot_digest.clone())
            .collect();
        for e in boot::read_entries(self.boot())? {
            if let Some(digest) = e
                .entry
                .linux
                .strip_prefix(&format!("/{}/", layout::KERNELS_DIR))
                .and_then(|rest| rest.split('/').next())
            {
                keep.push(digest.to_owned());
            }
        }
        boot::remove_unused_kernels(self.boot(), &keep)?;
        failpoint::hit("prune:after-kernels");
        Ok(())
    }
}
