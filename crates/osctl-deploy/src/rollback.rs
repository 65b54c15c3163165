//! Rollback: the previous deployment boots next; and undoing a queued one.
//!
//! | rollback step | fail point |
//! |---|---|
//! | a finalized staged update un-finalized (unless kept) | `rollback:after-unfinalize` |
//! | rollback marker ← target | `rollback:after-marker` |
//! | **default ← target: commit** | `rollback:after-default` |
//! | staged marker removed | `rollback:after-staged-marker` |
//! | staged deployment dropped (unless kept: pinned, or it existed before it was staged) | `rollback:after-drop-staged` |
//!
//! A download-only staged deployment is dropped the same way: the admin is
//! going back, and a maintenance window (`upgrade --from-downloaded
//! --apply`) must not move the machine forward again behind their back.
//!
//! `rollback --cancel`: the default goes back to the booted deployment
//! (`rollback-cancel:after-default`, the commit), then the marker goes.

use crate::DeployError;
use crate::boot;
use crate::failpoint;
use crate::layout::DeploymentId;
use crate::markers;
use crate::sysroot::Sysroot;

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The next boot is this deployment (now, or already before: rollback
    /// is idempotent).
    Queued(DeploymentId),
}

impl Sysroot {
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
        self.write_marker(markers::ROLLBACK, target.id(), false, false)?;
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
            return Err(DeployError::NotBooted(
                "nothing is booted from this sysroot: a queued rollback cannot go back to it",
            ));
        };
        boot::write_default(self.boot(), booted.id())?;
        failpoint::hit("rollback-cancel:after-default");
        self.remove_marker(markers::ROLLBACK)?;
        Ok(Some(booted.id().clone()))
    }
}
