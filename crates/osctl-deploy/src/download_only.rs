//! "Stage now, apply later": `osctl upgrade --download-only` and
//! `--from-downloaded`.
//!
//! # Model
//!
//! A download-only update is an ordinary staged deployment whose staged
//! marker carries the word `download-only` ([`crate::markers`]). Staging it
//! is [`Sysroot::stage_record_with`] with
//! [`StageOptions::download_only`](crate::StageOptions::download_only):
//! the same steps and fail points, the marker the commit point. Finalize
//! sees the word and leaves the deployment alone, so neither the shutdown
//! finalize nor a plain reboot makes it the next boot. Releasing it
//! ([`Sysroot::release_downloaded`]) rewrites the marker without the word —
//! one atomic write (`release:after-marker`) — after which it is an
//! ordinary staged update that the next finalize applies.
//!
//! Why a word in the marker rather than a state of its own: the marker is
//! already what says "staged", is written atomically, and goes stale by the
//! rules of [`crate::state`] together with everything it claims. A separate
//! file could survive its deployment or miss it after a crash.
//!
//! # Interactions (each deliberate; docs/deployments.md has the table)
//!
//! - `--download-only` never changes what boots next: while an ordinary
//!   staged update or a queued rollback boots next it refuses
//!   ([`DeployError::NextBootPlanned`]) before downloading anything —
//!   unless that update is the image the reference points to (released
//!   without `--apply`, or staged by hand): then it changes nothing
//!   (`AlreadyStaged`), so that a download-only timer does not fail until
//!   the reboot;
//! - `--download-only` of the image already downloaded changes nothing; of
//!   a newer image it replaces the older download (dropped, as a replaced
//!   update is);
//! - `--download-only` of the rollback deployment's image stages nothing
//!   ([`StageOutcome::AlreadyDeployed`](crate::StageOutcome::AlreadyDeployed)):
//!   staged in place, the rollback would stop being the rollback and lose
//!   its health record, and there is nothing to download; an older download
//!   is dropped, as when the image is the booted one;
//! - a plain `upgrade` or `switch` to the downloaded image releases it (the
//!   admin asked for it to boot next); to another image replaces it; to the
//!   booted image drops it (there is nothing to update to);
//! - `rollback` drops it, as it drops a staged update: an admin going back
//!   does not want a maintenance window to move the machine forward again
//!   behind their back;
//! - `pin`, `prune`, `gc` and the recovery of every locked command keep it
//!   (it is staged: its image has a GC root, and the marker holds).

use crate::DeployError;
use crate::error::NextBoot;
use crate::failpoint;
use crate::layout::DeploymentId;
use crate::markers;
use crate::state::DeploymentState;
use crate::sysroot::Sysroot;

impl Sysroot {
    /// Refuses `--download-only` while something other than the booted
    /// deployment boots next; read without the lock, so that nothing is
    /// downloaded for an update that would be refused (staging checks again
    /// under the lock).
    pub fn check_download_only(&self) -> Result<(), DeployError> {
        Self::download_only_allowed(&self.state()?)
    }

    /// `--download-only` leaves the next boot as it is: refused when an
    /// ordinary staged update (pending, or finalized and waiting for the
    /// reboot) or a queued rollback would have to be cancelled.
    pub(crate) fn download_only_allowed(state: &DeploymentState) -> Result<(), DeployError> {
        if state.rollback_queued
            && let Some(target) = &state.rollback
        {
            return Err(DeployError::NextBootPlanned(NextBoot::Rollback(
                target.id().clone(),
            )));
        }
        match &state.staged {
            Some(staged) if !state.staged_download_only => Err(DeployError::NextBootPlanned(
                NextBoot::Staged(staged.id().clone()),
            )),
            _ => Ok(()),
        }
    }

    /// `upgrade --from-downloaded`: the download-only deployment becomes an
    /// ordinary staged one, applied by the next finalize. Returns its id.
    pub fn release_downloaded(&self) -> Result<DeploymentId, DeployError> {
        self.lock()?;
        self.require_readable_booted("to release a downloaded update")?;
        let state = self.state()?;
        let Some(staged) = state.staged.as_ref().filter(|_| state.staged_download_only) else {
            return Err(DeployError::NothingDownloaded);
        };
        self.release_staged(staged.id(), state.staged_existing)?;
        Ok(staged.id().clone())
    }

    /// Rewrites the staged marker without `download-only` (keeping
    /// `existing`): the commit point of a release.
    pub(crate) fn release_staged(
        &self,
        id: &DeploymentId,
        existing: bool,
    ) -> Result<(), DeployError> {
        self.write_marker(markers::STAGED, id, existing, false)?;
        failpoint::hit("release:after-marker");
        Ok(())
    }
}
