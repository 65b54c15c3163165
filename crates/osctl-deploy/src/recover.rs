//! Recovery: finishing what an interrupted operation left, at the start of
//! every operation that changes deployments (right after it takes the
//! lock).
//!
//! Every operation has one commit point (see [`crate::state`]); a crash
//! before it leaves files the rules ignore, a crash after it leaves cleanup
//! undone. Recovery does that cleanup, so the next command starts from the
//! state an uninterrupted run would have left — which is what makes a
//! re-run after a crash end exactly where a clean run ends:
//!
//! 1. boot entries of osctl's that do not parse are rewritten from the
//!    deployment's origin (keeping the boot counter in the file name), or
//!    removed when no deployment owns them; the booted deployment gets its
//!    entry back if it has none (in a boot dir with osctl's loader.conf);
//! 2. temporaries in `state/deploy` (`.tmp-<id>`, `.del-<id>`), state
//!    directories of never-finalized deployments without a boot entry, and
//!    store roots `deploy/<id>` without a state directory are removed;
//! 3. markers that no longer hold are removed; a deployment that boots
//!    next (or is booted) but was un-finalized by a command that stopped
//!    before its commit point is finalized again; a default that a
//!    committed switch superseded (a queued rollback) goes back to the
//!    booted deployment;
//! 4. abandoned deployments (never finalized, in no role) are dropped;
//! 5. outside a trial, trial sort keys left by a crash are reset.
//!
//! Nothing here guesses: a marker that does not parse stops the recovery
//! (and so every command that changes deployments) until `osctl fsck
//! --repair` removes it; a broken deployment (unreadable origin or record)
//! is left alone and reported, since it may be pinned.

use crate::DeployError;
use crate::boot;
use crate::layout;
use crate::markers;
use crate::sysroot::Sysroot;

/// What the recovery found and did, for logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub actions: Vec<String>,
}

impl Sysroot {
    /// Runs the recovery (the caller holds the lock). A marker that does
    /// not parse stops it before it changes anything — what the marker
    /// said decides which deployments may go — unless `repair` (`osctl
    /// fsck --repair`, an explicit request) removes such markers first.
    pub(crate) fn recover(&self, repair: bool) -> Result<Recovered, DeployError> {
        let mut done = Recovered::default();
        let facts = self.facts()?;
        if let Some(bad) = facts.unreadable_markers.first()
            && !repair
        {
            return Err(DeployError::UnreadableMarker {
                problem: bad.problem.clone(),
            });
        }
        for bad in &facts.unreadable_markers {
            self.remove_marker(bad.name)?;
            done.actions.push(format!(
                "removed unreadable marker {}/{} (what it named is no longer staged or queued)",
                layout::sysroot::STATE,
                bad.name
            ));
        }
        let scan = self.scan()?;
        let booted = self.booted_id()?;

        // 1. Entries.
        for bad in &scan.bad_entries {
            // (Bad entries of broken deployments stay: their origin cannot
            // rebuild them. Those of no deployment are orphans, below.)
            if let Some(d) = scan.deployments.iter().find(|d| d.id() == &bad.id) {
                boot::write_entry(
                    self.boot(),
                    d.id(),
                    &self.entry_for(d.id(), d.origin())?,
                    bad.tries,
                )?;
                done.actions
                    .push(format!("rewrote unreadable boot entry {}", bad.file_name));
            }
        }
        // The booted deployment without any entry (deleted by hand, lost
        // with the ESP's last writes): without one, the next trial has
        // nothing to fall back to and a default naming it names nothing.
        // Written plain (no counter: it runs), kernel files reinstalled
        // from its image if they went too — but only into a boot dir that
        // is evidently the one the machine boots from (osctl's loader.conf
        // default is there): a boot partition that is not mounted is
        // reported by fsck, never written into.
        if let Some(d) = booted
            .as_ref()
            .and_then(|b| scan.deployments.iter().find(|d| d.id() == b))
            && !self.has_entry(d.id())?
            && self.boot_dir_is_osctls()?
        {
            let tree = self.store().image_tree(d.record())?;
            let kernel = boot::find_kernel(&tree, &d.origin().image)?;
            let mut origin = d.origin().clone();
            origin.boot_digest = boot::install_kernel(&tree, &kernel, self.boot())?;
            boot::write_entry(self.boot(), d.id(), &self.entry_for(d.id(), &origin)?, None)?;
            done.actions.push(format!(
                "wrote the missing boot entry of the booted deployment {}",
                d.id().short()
            ));
        }
        for name in &scan.orphan_entries {
            let id = name
                .strip_prefix(layout::ENTRY_PREFIX)
                .and_then(|s| s.get(..64))
                .and_then(layout::DeploymentId::parse);
            let Some(id) = id else { continue };
            if boot::read_default(self.boot())?.as_ref() == Some(&id) {
                match &booted {
                    Some(b) => boot::write_default(self.boot(), b)?,
                    // Offline with the default on an entry without state:
                    // nothing better to point at; fsck reports it.
                    None => continue,
                }
            }
            boot::remove_entry(self.boot(), &id)?;
            done.actions
                .push(format!("removed boot entry {name} (no deployment)"));
        }

        // 2. Leftovers in state/deploy and the store.
        for name in &scan.temporaries {
            self.remove_state_dir(name)?;
            done.actions.push(format!("removed leftover {name}"));
        }
        // Only a stage's leftover: a finalized deployment without its entry
        // (a boot dir that is not mounted?) is reported by fsck, not removed.
        for inc in scan
            .incomplete
            .iter()
            .filter(|i| i.finalized == Some(false))
        {
            self.remove_state_dir(inc.id.as_str())?;
            self.store().remove_root(inc.id.as_str())?;
            done.actions.push(format!(
                "removed deployment {} (an interrupted switch: no boot entry)",
                inc.id.short()
            ));
        }
        for root in self.store().roots()? {
            if !self
                .root()
                .try_exists(layout::sysroot::DEPLOY.to_owned() + "/" + &root)
                .map_err(|e| DeployError::Io {
                    step: "checking",
                    path: self.path().join(layout::sysroot::DEPLOY).join(&root),
                    source: e,
                })?
            {
                self.store().remove_root(&root)?;
                done.actions
                    .push(format!("removed store root deploy/{root} (no deployment)"));
            }
        }
        for scratch in [FINALIZE_SCRATCH, VAR_SEED_SCRATCH] {
            let io = |e: std::io::Error| DeployError::Io {
                step: "removing",
                path: self.path().join(layout::sysroot::STATE).join(scratch),
                source: e,
            };
            let state_dir = self.open_state(layout::sysroot::STATE)?;
            if state_dir.try_exists(scratch).map_err(io)? {
                state_dir.remove_dir_all(scratch).map_err(io)?;
                osctl_store::atomic::sync_dir(&state_dir).map_err(io)?;
                done.actions.push(format!("removed leftover {scratch}"));
            }
        }

        // 3. and 4. Markers and abandoned deployments.
        let state = self.state()?;
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        for (stale, name) in [
            (state.staged_marker_stale, markers::STAGED),
            (state.rollback_marker_stale, markers::ROLLBACK),
        ] {
            if stale {
                markers::remove(&state_dir, name).map_err(|e| DeployError::Io {
                    step: "removing",
                    path: self.path().join(layout::sysroot::STATE).join(name),
                    source: e,
                })?;
                done.actions
                    .push(format!("removed stale marker state/{name}"));
            }
        }
        // Un-finalizing the update a command replaces (a switch over a
        // finalized update, a rollback, a switch back to the booted image)
        // happens before that command's commit point. If it stopped there,
        // the update still boots next: it is finalized again, or it would
        // be dropped as abandoned once the machine booted it and moved on.
        // The booted deployment counts as finalized whatever its origin
        // says: it runs.
        let boots_next = state
            .staged
            .as_ref()
            .filter(|_| !state.staged_pending && !state.rollback_queued);
        for d in state.booted.iter().chain(boots_next) {
            if !d.origin().finalized {
                self.set_finalized(d, true)?;
                done.actions.push(format!(
                    "deployment {} finalized again (an interrupted command had un-finalized it)",
                    d.id().short()
                ));
            }
        }
        // A switch committed (its marker won) but the default still names
        // what it replaced (a queued rollback): back to the booted one.
        if state.staged_pending
            && let Some(booted) = &state.booted
            && state.default.as_ref().is_some_and(|d| {
                d != booted.id() && state.staged.as_ref().map(|s| s.id()) != Some(d)
            })
            && !state
                .abandoned
                .iter()
                .any(|a| state.default.as_ref() == Some(a.id()))
        {
            boot::write_default(self.boot(), booted.id())?;
            done.actions
                .push("default boot entry back on the booted deployment".to_owned());
        }
        for d in &state.abandoned {
            self.drop_deployment(d.id())?;
            done.actions.push(format!(
                "removed deployment {} (abandoned: never finalized)",
                d.id().short()
            ));
        }

        // A staged entry never carries a used counter (a deployment staged
        // again after it failed or was marked good gets a fresh one). What
        // counts is whether a deployment is booted at all, readable or not:
        // one whose origin went bad must not cost the update its counter.
        if state.staged_pending
            && let Some(staged) = &state.staged
        {
            self.fresh_staged_start(
                staged.id(),
                staged.origin(),
                staged.tries(),
                booted.is_some(),
            )?;
        }

        // 5. Trial keys.
        if !boot::is_trial(self.boot())? {
            boot::normalize_sort_keys(self.boot())?;
        }
        for a in &done.actions {
            tracing::info!("recovery: {a}");
        }
        Ok(done)
    }
}

impl Sysroot {
    /// Whether loader.conf in the boot dir has a `default` line of
    /// osctl's (an entry or the trial pattern): the boot dir is the one
    /// osctl manages, not an empty mount point.
    pub(crate) fn boot_dir_is_osctls(&self) -> Result<bool, DeployError> {
        Ok(boot::is_trial(self.boot())? || boot::read_default(self.boot())?.is_some())
    }

    /// Whether deployment `id` has an entry file (readable or not).
    pub(crate) fn has_entry(&self, id: &layout::DeploymentId) -> Result<bool, DeployError> {
        let (entries, bad) = boot::read_all_entries(self.boot())?;
        Ok(entries.iter().any(|e| &e.id == id) || bad.iter().any(|e| &e.id == id))
    }

    /// Refuses when the booted deployment cannot be read (its origin or
    /// record does not parse): the rules would take the machine for one
    /// with nothing booted, and a switch would then stage without the
    /// machine's kernel arguments and without a boot counter, and finalize
    /// would skip the `/etc` merge. `what` is the refused action.
    pub(crate) fn require_readable_booted(&self, what: &'static str) -> Result<(), DeployError> {
        let Some(booted) = self.booted_id()? else {
            return Ok(());
        };
        match self.scan()?.broken.into_iter().find(|b| b.id == booted) {
            None => Ok(()),
            Some(broken) => Err(DeployError::BootedUnreadable {
                id: booted,
                why: broken.why,
                what,
            }),
        }
    }
}

/// Finalize's scratch space, relative to the state dir.
pub(crate) const FINALIZE_SCRATCH: &str =
    crate::layout::state_dir_name(crate::layout::partition::FINALIZE_SCRATCH);
/// Where `/var` is seeded before it is renamed into place, relative to the
/// state dir.
pub(crate) const VAR_SEED_SCRATCH: &str =
    crate::layout::state_dir_name(crate::layout::partition::VAR_SEED);
