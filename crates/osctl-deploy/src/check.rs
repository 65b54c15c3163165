//! `osctl fsck` for deployments: what the store's check cannot see.
//!
//! Two kinds of findings, both one line naming what is at fault:
//!
//! - **damage** osctl cannot fix by itself: a deployment whose origin or
//!   record cannot be read, an entry of osctl's that does not parse, a
//!   default boot entry naming no entry, a deployment whose image has no
//!   store root;
//! - **leftovers** of an interrupted command (a crash, a power cut): the
//!   recovery of the next command that changes deployments removes them,
//!   and `osctl fsck --repair` runs that recovery now.
//!
//! Reading only: nothing here takes the lock or writes.

use crate::DeployError;
use crate::boot;
use crate::layout;
use crate::sysroot::Sysroot;

impl Sysroot {
    /// Problems `status` shows: what makes a deployment, an entry or a
    /// marker unusable (markers that do not parse, broken deployments,
    /// entries that do not parse, deployments whose entry is missing,
    /// health records that cannot be read).
    pub fn unusable(&self) -> Result<Vec<String>, DeployError> {
        let scan = self.scan()?;
        let mut out = Vec::new();
        for m in self.facts()?.unreadable_markers {
            out.push(format!(
                "{}; commands that change deployments refuse until `osctl fsck --repair` removes it",
                m.problem
            ));
        }
        for b in &scan.broken {
            out.push(format!(
                "deployment {} cannot be read: {}",
                b.id.short(),
                b.why
            ));
        }
        for e in &scan.bad_entries {
            out.push(format!(
                "boot entry {}/{} does not parse ({}); the next deployment change rewrites it",
                layout::ENTRIES_DIR,
                e.file_name,
                e.why
            ));
        }
        for inc in scan
            .incomplete
            .iter()
            .filter(|i| i.finalized != Some(false))
        {
            out.push(format!(
                "deployment {} has no boot entry in {} (is the boot partition mounted there?); osctl leaves it alone",
                inc.id.short(),
                self.boot_path().join(layout::ENTRIES_DIR).display()
            ));
        }
        for d in &scan.deployments {
            if let Some(why) = d.health_unreadable() {
                out.push(format!(
                    "deployment {}: {why} (the next `osctl health check` rewrites it)",
                    d.id().short()
                ));
            }
        }
        Ok(out)
    }

    /// Every deployment problem, damage and leftovers.
    pub fn fsck(&self) -> Result<Vec<String>, DeployError> {
        let mut out = self.unusable()?;
        let scan = self.scan()?;
        let leftover = "left by an interrupted command; the next deployment change or `osctl fsck --repair` removes it";
        for name in &scan.temporaries {
            out.push(format!("{}/{name}: {leftover}", layout::sysroot::DEPLOY));
        }
        for inc in scan
            .incomplete
            .iter()
            .filter(|i| i.finalized == Some(false))
        {
            out.push(format!(
                "deployment {} has no boot entry: {leftover}",
                inc.id.short()
            ));
        }
        if let Some(booted) = self.booted_id()?
            && scan.deployments.iter().any(|d| d.id() == &booted)
            && !self.has_entry(&booted)?
        {
            let fix = if self.boot_dir_is_osctls()? {
                "the next deployment change or `osctl fsck --repair` writes it".to_owned()
            } else {
                format!(
                    "{} has no loader.conf default of osctl's (is the boot partition mounted there?)",
                    self.boot_path().display()
                )
            };
            out.push(format!(
                "the booted deployment {} has no boot entry: {fix}",
                booted.short()
            ));
        }
        for name in &scan.orphan_entries {
            out.push(format!(
                "boot entry {}/{name} names no deployment: {leftover}",
                layout::ENTRIES_DIR
            ));
        }
        let roots = self.store().roots()?;
        for root in &roots {
            let has_state = self
                .root()
                .try_exists(format!("{}/{root}", layout::sysroot::DEPLOY))
                .map_err(|e| DeployError::Io {
                    step: "checking",
                    path: self.path().join(layout::sysroot::DEPLOY).join(root),
                    source: e,
                })?;
            if !has_state {
                out.push(format!(
                    "store root deploy/{root} keeps an image for no deployment: {leftover}"
                ));
            }
        }
        for d in &scan.deployments {
            if !roots.iter().any(|r| r == d.id().as_str()) {
                out.push(format!(
                    "deployment {} has no store root: `osctl gc` would remove its image",
                    d.id().short()
                ));
            }
        }
        for e in boot::read_entries(self.boot())? {
            for (key, file) in [("linux", &e.entry.linux), ("initrd", &e.entry.initrd)] {
                let rel = file.trim_start_matches('/');
                let present = self.boot().try_exists(rel).map_err(|err| DeployError::Io {
                    step: "checking",
                    path: self.boot_path().join(rel),
                    source: err,
                })?;
                if !present {
                    out.push(format!(
                        "boot entry {}/{}: its {key} {file} is missing",
                        layout::ENTRIES_DIR,
                        e.file_name
                    ));
                }
            }
        }
        let state = crate::state::classify(&self.facts()?, scan.deployments.clone());
        for d in &state.abandoned {
            out.push(format!(
                "deployment {} was never finalized and is not staged: {leftover}",
                d.id().short()
            ));
        }
        if state.staged_marker_stale {
            out.push(format!("state/staged no longer holds: {leftover}"));
        }
        if state.rollback_marker_stale {
            out.push(format!("state/rollback no longer holds: {leftover}"));
        }
        if !boot::is_trial(self.boot())?
            && let Some(default) = boot::read_default(self.boot())?
            && !scan.deployments.iter().any(|d| d.id() == &default)
            && !scan.broken.iter().any(|b| b.id == default)
        {
            out.push(format!(
                "{} names {}, which is not a deployment here",
                layout::LOADER_CONF,
                default.entry_file_name()
            ));
        }
        Ok(out)
    }

    /// `osctl fsck --repair` for deployments: runs the recovery (finishing
    /// or clearing what interrupted commands left) under the lock. Returns
    /// what it did, one line each.
    pub fn repair(&self) -> Result<Vec<String>, DeployError> {
        self.lock_without_recovery()?;
        Ok(self.recover(true)?.actions)
    }
}
