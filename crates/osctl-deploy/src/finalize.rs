//! Finalize, at shutdown: the staged deployment becomes the next boot.
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
//! A download-only staged deployment (`upgrade --download-only`; see
//! [`crate::markers`]) is left alone: finalize changes nothing and says so
//! ([`FinalizeOutcome::DownloadOnly`]), whether the shutdown service or the
//! admin runs it. `upgrade --from-downloaded` releases it first.

use std::path::Path;

use rustix::fs::RenameFlags;

use crate::EtcMergeReport;
use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::markers;
use crate::recover::FINALIZE_SCRATCH;
use crate::scan::Deployment;
use crate::sysroot::Sysroot;
use crate::{DeployError, merge_etc};

/// What finalize did.
#[derive(Debug, Clone)]
pub enum FinalizeOutcome {
    /// Nothing was staged (the common case at shutdown).
    NothingStaged,
    /// The staged deployment is download-only: left as it is, not the next
    /// boot (`osctl upgrade --from-downloaded` releases it).
    DownloadOnly(DeploymentId),
    /// The staged deployment is now the default boot entry.
    Finalized {
        id: DeploymentId,
        merge: Option<EtcMergeReport>,
    },
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
        if state.staged_download_only {
            return Ok(FinalizeOutcome::DownloadOnly(staged.id().clone()));
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
            step: "syncing",
            path: self.path().join(staged.id().state_dir()),
            source: e,
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
            step: "preparing",
            path: scratch_path.clone(),
            source: e,
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
}
