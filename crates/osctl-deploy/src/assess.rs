//! Boot assessment: deciding whether the booted deployment is good, marking
//! it so, and noticing when the boot loader gave up on one.
//!
//! The model is systemd's automatic boot assessment, with osctl doing both
//! ends:
//!
//! ```text
//! osctl switch/upgrade     entry osctl-<id>+3.conf        3 tries (config: [boot] tries)
//! systemd-boot, each boot  osctl-<id>+2-1.conf, +1-2, …   one try used per attempt
//! osctl health check       health.d checks → health.json  Before=boot-complete.target;
//!                                                          a failed required check fails
//!                                                          the target and, while the entry
//!                                                          still counts, reboots
//! osctl health bless       osctl-<id>.conf                After=boot-complete.target:
//!                                                          good, counter gone
//! tries run out            systemd-boot boots the previous entry by itself;
//!                          there `osctl health check` records the failure,
//!                          points loader.conf back at the running deployment and
//!                          remembers the image so `upgrade` will not stage it again
//! ```
//!
//! A deployment that never reaches userspace (its root setup fails, its init
//! crashes) writes no health record: when its tries run out, the record
//! osctl writes for it says so.

use serde::{Deserialize, Serialize};

use crate::DeployError;
use crate::boot;
use crate::failpoint;
use crate::health::{self, HEALTH_FILE, HealthRecord, HealthState};
use crate::layout::{self, DeploymentId};
use crate::scan::Deployment;
use crate::sysroot::now;
use crate::sysroot::{Sysroot, write_json};

/// Images that failed on this machine, relative to the sysroot.
pub const FAILED_IMAGES_FILE: &str = crate::layout::sysroot::FAILED_IMAGES;
/// How many failed images are remembered; older ones are forgotten (an image
/// that old is unlikely to be offered again).
const FAILED_IMAGES_KEPT: usize = 32;

/// An image that failed on this machine; `upgrade` does not stage its
/// manifest digest again unless forced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedImage {
    pub image: String,
    pub manifest_digest: String,
    pub image_id: String,
    pub reason: String,
    pub at: String,
}

/// What `osctl health check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    record: HealthRecord,
    tries: Option<boot::Tries>,
    reboot: bool,
    newly_failed: Vec<FailedImage>,
}

impl CheckReport {
    pub fn record(&self) -> &HealthRecord {
        &self.record
    }
    /// The booted entry's counter: `Some` while it is being assessed.
    pub fn tries(&self) -> Option<boot::Tries> {
        self.tries
    }
    /// A required check failed on a deployment still being assessed and the
    /// config says to reboot: the caller reboots.
    pub fn reboot(&self) -> bool {
        self.reboot
    }
    /// Deployments found failed by this run (the boot loader fell back from
    /// them).
    pub fn newly_failed(&self) -> &[FailedImage] {
        &self.newly_failed
    }
}

/// What `osctl health bless` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlessOutcome {
    /// The counter was dropped: the deployment is good.
    Blessed(DeploymentId),
    /// It had no counter (blessed before, or never counted); recorded good.
    AlreadyGood(DeploymentId),
}

impl Sysroot {
    /// Runs the booted deployment's health checks and records the result,
    /// after noticing deployments the boot loader gave up on.
    pub fn check_health(&self) -> Result<CheckReport, DeployError> {
        self.lock()?;
        self.require_readable_booted("to run its health checks")?;
        let newly_failed = self.note_failures()?;
        let state = self.state()?;
        let booted = state.booted.ok_or_else(not_booted)?;
        let config = self.config()?;
        let results: Vec<_> = health::discover(self.path(), config.check_timeout())
            .iter()
            .map(health::run)
            .collect();
        let record = HealthRecord::from_results(results, now());
        self.write_health(booted.id(), &record)?;
        failpoint::hit("check:after-record");
        let tries = booted.tries();
        // Reboot only when it can help: the booted deployment is on trial
        // (another entry comes next once its tries run out) and the boot
        // loader really counts (systemd-boot renamed the entry: a try was
        // made). Otherwise — GRUB, no boot loader, a read-only ESP — a
        // reboot would only boot the same entry again, forever.
        let on_trial = boot::is_trial(self.boot())?
            && boot::read_entries(self.boot())?
                .iter()
                .any(|e| &e.id == booted.id() && e.entry.sort_key == boot::SORT_KEY_TRYING);
        let reboot = record.state == HealthState::Failed
            && tries.is_some_and(|t| t.done > 0)
            && on_trial
            && config.reboot_on_failure();
        Ok(CheckReport {
            record,
            tries,
            reboot,
            newly_failed,
        })
    }

    /// Marks the booted deployment good: drops its entry's boot counter and
    /// records it. Refused when its health checks failed.
    pub fn bless(&self) -> Result<BlessOutcome, DeployError> {
        self.lock()?;
        self.require_readable_booted("to mark it good")?;
        let state = self.state()?;
        let booted = state.booted.clone().ok_or_else(not_booted)?;
        // A record that cannot be read may say "failed": never bless blind.
        if let Some(why) = booted.health_unreadable() {
            return Err(DeployError::HealthUnreadable {
                id: booted.id().clone(),
                why: why.to_owned(),
            });
        }
        let mut record = booted.health().cloned().unwrap_or_else(|| HealthRecord {
            state: HealthState::Checked,
            at: now(),
            reason: None,
            failed_check: None,
            checks: Vec::new(),
        });
        if record.state == HealthState::Failed {
            return Err(DeployError::HealthFailed {
                id: booted.id().clone(),
                reason: record
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no reason recorded".to_owned()),
            });
        }
        let blessed = boot::bless_entry(self.boot(), booted.id())?;
        failpoint::hit("bless:after-entry");
        // Its trial is over: it becomes the exact default. Asked after the
        // rename: on its last try the entry was "bad" (no tries left), so
        // the trial pattern resolved to the fallback until now.
        if boot::is_trial(self.boot())?
            && boot::read_default(self.boot())?.as_ref() == Some(booted.id())
        {
            boot::write_default(self.boot(), booted.id())?;
            failpoint::hit("bless:after-default");
        }
        record.state = HealthState::Good;
        record.at = now();
        self.write_health(booted.id(), &record)?;
        failpoint::hit("bless:after-health");
        // It proved good here (after `upgrade --force`, say): no longer an
        // image that failed on this machine.
        let known = self.failed_images()?;
        if known.iter().any(|f| f.image_id == booted.id().as_str()) {
            let kept: Vec<_> = known
                .into_iter()
                .filter(|f| f.image_id != booted.id().as_str())
                .collect();
            self.write_failed_images(&kept)?;
            failpoint::hit("bless:after-failed-images");
        }
        Ok(if blessed {
            BlessOutcome::Blessed(booted.id().clone())
        } else {
            BlessOutcome::AlreadyGood(booted.id().clone())
        })
    }

    /// Deployments whose boot counter ran out while another one is booted:
    /// records them failed (with why, if they left no record), remembers
    /// their images, and points the default entry back at the booted
    /// deployment if it named one of them. Returns those newly noticed.
    fn note_failures(&self) -> Result<Vec<FailedImage>, DeployError> {
        let state = self.state()?;
        let Some(booted) = &state.booted else {
            return Ok(Vec::new());
        };
        let mut known = self.failed_images()?;
        let mut noticed = Vec::new();
        for d in &state.failed {
            let exhausted = d.tries().is_some_and(|t| t.exhausted());
            if !exhausted {
                continue;
            }
            let reason = exhausted_reason(d);
            if d.health().is_none_or(|h| h.state != HealthState::Failed) {
                let record = HealthRecord {
                    state: HealthState::Failed,
                    at: now(),
                    reason: Some(reason.clone()),
                    failed_check: None,
                    checks: d.health().map(|h| h.checks.clone()).unwrap_or_default(),
                };
                self.write_health(d.id(), &record)?;
                failpoint::hit("assess:after-health");
            }
            if !known.iter().any(|f| f.image_id == d.id().as_str()) {
                let failed = FailedImage {
                    image: d.origin().image.clone(),
                    manifest_digest: d.origin().manifest_digest.clone(),
                    image_id: d.id().to_string(),
                    reason: d
                        .health()
                        .filter(|h| h.state == HealthState::Failed)
                        .and_then(|h| h.reason.clone())
                        .unwrap_or(reason),
                    at: now(),
                };
                known.push(failed.clone());
                noticed.push(failed);
            }
        }
        if !noticed.is_empty() {
            let skip = known.len().saturating_sub(FAILED_IMAGES_KEPT);
            let kept: Vec<_> = known.into_iter().skip(skip).collect();
            self.write_failed_images(&kept)?;
            failpoint::hit("assess:after-failed-images");
        }
        // The trial is over once its deployment went bad (systemd-boot
        // already fell back); an exact default also replaces one naming a
        // failed deployment. Only the deployment on trial counts: an older
        // failure still on disk must not end a later trial (that would leave
        // an exact default on an unproven deployment, which systemd-boot
        // boots even with no tries left); nor does the booted one on its
        // last try (its entry already reads 0 left).
        let trial_lost = boot::is_trial(self.boot())?
            && boot::read_entries(self.boot())?.iter().any(|e| {
                e.entry.sort_key == boot::SORT_KEY_TRYING
                    && &e.id != booted.id()
                    && e.tries.is_some_and(|t| t.exhausted())
            });
        let default_failed = state
            .default
            .as_ref()
            .is_some_and(|def| state.failed.iter().any(|d| d.id() == def));
        if trial_lost || default_failed {
            boot::write_default(self.boot(), booted.id())?;
            failpoint::hit("assess:after-default");
        }
        Ok(noticed)
    }

    /// Images that failed on this machine, oldest first.
    pub fn failed_images(&self) -> Result<Vec<FailedImage>, DeployError> {
        match self.root().read(FAILED_IMAGES_FILE) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DeployError::Unreadable {
                path: self.path().join(FAILED_IMAGES_FILE),
                source: Box::new(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(DeployError::Io {
                step: "reading",
                path: self.path().join(FAILED_IMAGES_FILE),
                source: e,
            }),
        }
    }

    /// The failure recorded for `manifest_digest`, from the remembered
    /// images or a failed deployment still on disk.
    /// `None` for the booted or staged deployment's image: staging it again
    /// is a no-op (`AlreadyBooted`, `AlreadyStaged`), not an update to
    /// refuse, whatever it did before (`upgrade --force`, then it came up).
    pub fn failure_of(&self, manifest_digest: &str) -> Result<Option<FailedImage>, DeployError> {
        let state = self.state()?;
        if [&state.booted, &state.staged]
            .into_iter()
            .flatten()
            .any(|d| d.origin().manifest_digest == manifest_digest)
        {
            return Ok(None);
        }
        if let Some(f) = self
            .failed_images()?
            .into_iter()
            .rev()
            .find(|f| f.manifest_digest == manifest_digest)
        {
            return Ok(Some(f));
        }
        Ok(state
            .failed
            .iter()
            .find(|d| d.origin().manifest_digest == manifest_digest)
            .map(|d| FailedImage {
                image: d.origin().image.clone(),
                manifest_digest: manifest_digest.to_string(),
                image_id: d.id().to_string(),
                reason: d
                    .health()
                    .and_then(|h| h.reason.clone())
                    .unwrap_or_else(|| exhausted_reason(d)),
                at: d.health().map(|h| h.at.clone()).unwrap_or_default(),
            }))
    }

    /// Replaces `failed-images.json` (atomically).
    fn write_failed_images(&self, images: &[FailedImage]) -> Result<(), DeployError> {
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        write_json(
            &state_dir,
            layout::state_dir_name(FAILED_IMAGES_FILE),
            &images,
        )
        .map_err(|e| DeployError::Io {
            step: "writing",
            path: self.path().join(FAILED_IMAGES_FILE),
            source: e,
        })
    }

    fn write_health(&self, id: &DeploymentId, record: &HealthRecord) -> Result<(), DeployError> {
        let dir = self.open_state(&id.state_dir().to_string_lossy())?;
        write_json(&dir, HEALTH_FILE, record).map_err(|e| DeployError::Io {
            step: "writing",
            path: self.path().join(id.state_dir()).join(HEALTH_FILE),
            source: e,
        })
    }
}

/// Why a deployment whose counter ran out failed, from what it left behind.
fn exhausted_reason(d: &Deployment) -> String {
    let tries = d.tries().map(|t| t.done).unwrap_or(0);
    match d.health().map(|h| h.state) {
        Some(HealthState::Failed) => d
            .health()
            .and_then(|h| h.reason.clone())
            .unwrap_or_else(|| "its health checks failed".into()),
        Some(HealthState::Checked) => format!(
            "its checks passed but boot-complete.target was never reached in {tries} boot attempts"
        ),
        _ => format!(
            "it never reached userspace in {tries} boot attempts (no health report: the kernel, initramfs or root setup failed)"
        ),
    }
}

fn not_booted() -> DeployError {
    DeployError::NotBooted(
        "no osctl deployment is booted (the kernel command line names none): nothing to assess",
    )
}
