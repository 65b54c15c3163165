//! Reading the deployments off the disk: every state directory and boot
//! entry, sorted into what can be used and what cannot.
//!
//! Nothing here decides roles (that is [`crate::state`]) and nothing here
//! writes (that is the recovery, [`crate::recover`]). A file osctl cannot
//! read never makes the whole machine unreadable: the deployment it belongs
//! to is listed as [`BrokenDeployment`] with the reason, left out of every
//! decision, and reported by `status` and `fsck`.

use std::collections::HashMap;

use osctl_store::ImageRecord;

use crate::DeployError;
use crate::boot::{self, BadEntry, Tries};
use crate::health::{HEALTH_FILE, HealthRecord, HealthState};
use crate::layout::{self, DeploymentId};
use crate::markers::{self, Marker};
use crate::origin::Origin;
use crate::state::{self, DeploymentState, Facts, UnreadableMarker};
use crate::sysroot::{RECORD_FILE, Sysroot};

/// A deployment: its id, origin and the image record it was made from,
/// its boot entry's counter and its health record.
#[derive(Debug, Clone)]
pub struct Deployment {
    id: DeploymentId,
    origin: Origin,
    record: ImageRecord,
    tries: Option<Tries>,
    health: Option<HealthRecord>,
    health_unreadable: Option<String>,
}

impl Deployment {
    pub fn id(&self) -> &DeploymentId {
        &self.id
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }
    /// The boot entry's counter: `None` once the deployment was marked good
    /// (or never counted).
    pub fn tries(&self) -> Option<Tries> {
        self.tries
    }
    /// The last health record (`state/deploy/<id>/health.json`), if any.
    pub fn health(&self) -> Option<&HealthRecord> {
        self.health.as_ref()
    }
    /// Why `health.json` exists but cannot be read, if so.
    pub fn health_unreadable(&self) -> Option<&str> {
        self.health_unreadable.as_deref()
    }
    /// Failed: its boot counter ran out, or its health checks failed while
    /// it was still on trial (counted). A deployment once marked good that
    /// fails a check later is not failed: it stays the one to come back to.
    /// Meaningful for deployments that are not booted.
    pub fn failed(&self) -> bool {
        self.tries.is_some_and(|t| t.exhausted())
            || (self.tries.is_some()
                && self
                    .health
                    .as_ref()
                    .is_some_and(|h| h.state == HealthState::Failed))
    }
}

/// A state directory without a boot entry: a stage that stopped before its
/// entry (never finalized: a leftover), or a deployment whose entry went
/// missing (the boot dir not mounted, a hand edit): that one is reported,
/// never removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    pub id: DeploymentId,
    /// Its origin's `finalized` flag; `None` if the origin cannot be read.
    pub finalized: Option<bool>,
}

/// A deployment osctl cannot read: its state directory exists, but its
/// origin or image record does not parse (or cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenDeployment {
    pub id: DeploymentId,
    /// The file at fault and why, one line.
    pub why: String,
}

/// Everything under `state/deploy` and `loader/entries`, sorted out.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Readable deployments with a boot entry (and the booted one even
    /// without: it is running).
    pub deployments: Vec<Deployment>,
    /// Deployments whose origin or record cannot be read.
    pub broken: Vec<BrokenDeployment>,
    /// State directories without a boot entry.
    pub incomplete: Vec<Incomplete>,
    /// Temporaries of interrupted operations in `state/deploy` (`.tmp-<id>`
    /// being built, `.del-<id>` being removed).
    pub temporaries: Vec<String>,
    /// Entries of osctl's whose deployment has no state directory.
    pub orphan_entries: Vec<String>,
    /// Entries of osctl's that do not parse.
    pub bad_entries: Vec<BadEntry>,
}

/// Prefix of a deployment directory being built.
pub(crate) const BUILDING_PREFIX: &str = crate::layout::BUILDING_PREFIX;
/// Prefix of a deployment directory being removed.
pub(crate) const REMOVING_PREFIX: &str = crate::layout::REMOVING_PREFIX;

impl Sysroot {
    /// Reads every deployment and entry. Only I/O failures on the
    /// directories themselves are errors; a bad file marks its deployment
    /// broken or its entry bad.
    pub fn scan(&self) -> Result<Scan, DeployError> {
        let (entries, bad_entries) = boot::read_all_entries(self.boot())?;
        let mut tries: HashMap<DeploymentId, Option<Tries>> = HashMap::new();
        for e in &entries {
            tries.insert(e.id.clone(), e.tries);
        }
        for e in &bad_entries {
            tries.entry(e.id.clone()).or_insert(e.tries);
        }
        let booted = self.booted_id()?;
        let dir_path = self.path().join(layout::sysroot::DEPLOY);
        let io = |e: std::io::Error| DeployError::Io {
            step: "listing",
            path: dir_path.clone(),
            source: e,
        };
        let mut scan = Scan {
            bad_entries,
            ..Default::default()
        };
        let mut with_state = Vec::new();
        for dirent in self.root().read_dir(layout::sysroot::DEPLOY).map_err(io)? {
            let name = dirent
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.starts_with(BUILDING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                scan.temporaries.push(name);
                continue;
            }
            let Some(id) = DeploymentId::parse(&name) else {
                continue;
            };
            with_state.push(id.clone());
            let entry = tries.get(&id).copied();
            if entry.is_none() && booted.as_ref() != Some(&id) {
                let finalized = self.read_deployment(&id).ok().map(|d| d.origin().finalized);
                scan.incomplete.push(Incomplete { id, finalized });
                continue;
            }
            match self.read_deployment(&id) {
                Ok(mut d) => {
                    d.tries = entry.flatten();
                    scan.deployments.push(d);
                }
                Err(why) => scan.broken.push(BrokenDeployment { id, why }),
            }
        }
        let mut orphans: Vec<String> = entries
            .iter()
            .filter(|e| !with_state.contains(&e.id))
            .map(|e| e.file_name.clone())
            .collect();
        orphans.extend(
            scan.bad_entries
                .iter()
                .filter(|e| !with_state.contains(&e.id))
                .map(|e| e.file_name.clone()),
        );
        orphans.sort();
        scan.orphan_entries = orphans;
        scan.temporaries.sort();
        scan.incomplete.sort_by(|a, b| a.id.cmp(&b.id));
        scan.broken.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(scan)
    }

    /// Reads one deployment's state directory (without its entry's
    /// counter). The error is one line naming the file at fault.
    fn read_deployment(&self, id: &DeploymentId) -> Result<Deployment, String> {
        let dir = id.state_dir();
        let shown = |name: &str| self.path().join(&dir).join(name).display().to_string();
        let read = |name: &str| -> Result<Vec<u8>, String> {
            self.root()
                .read(dir.join(name))
                .map_err(|e| format!("{}: {e}", shown(name)))
        };
        let origin: Origin = serde_json::from_slice(&read(layout::ORIGIN_FILE)?)
            .map_err(|e| format!("{}: unreadable: {e}", shown(layout::ORIGIN_FILE)))?;
        let record: ImageRecord = serde_json::from_slice(&read(RECORD_FILE)?)
            .map_err(|e| format!("{}: unreadable: {e}", shown(RECORD_FILE)))?;
        if record.image_id() != id.as_str() || origin.image_id != id.as_str() {
            return Err(format!(
                "{}: names image {}, not this deployment",
                shown(RECORD_FILE),
                record.image_id()
            ));
        }
        // A health record that cannot be read is kept as such: it never
        // counts as good (bless refuses), and the next check rewrites it.
        let (health, health_unreadable) = match self.root().read(dir.join(HEALTH_FILE)) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(h) => (Some(h), None),
                Err(e) => (
                    None,
                    Some(format!("{}: unreadable: {e}", shown(HEALTH_FILE))),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(format!("{}: {e}", shown(HEALTH_FILE)))),
        };
        Ok(Deployment {
            id: id.clone(),
            origin,
            record,
            tries: None,
            health,
            health_unreadable,
        })
    }

    /// What [`state::classify`] reads besides the deployments.
    ///
    /// A marker that does not parse is not guessed at: it is left out of
    /// the facts and listed in [`Facts::unreadable_markers`], so that
    /// `status` and `fsck` still work and report it, while the recovery
    /// refuses every change until `osctl fsck --repair` removes it.
    pub(crate) fn facts(&self) -> Result<Facts, DeployError> {
        let state_dir = self.open_state(layout::sysroot::STATE)?;
        let shown = self.path().join(layout::sysroot::STATE);
        let mut unreadable_markers = Vec::new();
        let mut marker = |name: &'static str| -> Result<Option<Marker>, DeployError> {
            match markers::read(&state_dir, name, &shown) {
                Ok(m) => Ok(m),
                Err(e @ markers::MarkerError::Malformed { .. }) => {
                    unreadable_markers.push(UnreadableMarker {
                        name,
                        problem: crate::error::one_line(&e),
                    });
                    Ok(None)
                }
                Err(e) => Err(DeployError::UnreadableMarker {
                    problem: crate::error::one_line(&e),
                }),
            }
        };
        let staged_marker = marker(markers::STAGED)?;
        let rollback_marker = marker(markers::ROLLBACK)?;
        Ok(Facts {
            booted: self.booted_id()?,
            default: boot::read_default(self.boot())?,
            default_exact: !boot::is_trial(self.boot())?,
            trial_trying: boot::trying(self.boot())?,
            staged_marker,
            rollback_marker,
            unreadable_markers,
        })
    }

    /// Booted, staged, rollback and the rest, derived from disk by the rules
    /// in [`crate::state`].
    pub fn state(&self) -> Result<DeploymentState, DeployError> {
        Ok(state::classify(&self.facts()?, self.scan()?.deployments))
    }

    /// The deployments that count (booted, staged, rollback, others,
    /// failed), newest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, DeployError> {
        Ok(counted(self.state()?))
    }

    /// Finds a deployment that counts by full id or a unique prefix of 6+
    /// digits.
    pub fn find(&self, prefix: &str) -> Result<Deployment, DeployError> {
        find_in(self.deployments()?, prefix)
    }
}

/// The deployments of `s` that count (booted, staged, rollback, others,
/// failed), newest first.
pub(crate) fn counted(s: DeploymentState) -> Vec<Deployment> {
    let mut all: Vec<Deployment> = [s.booted, s.staged, s.rollback]
        .into_iter()
        .flatten()
        .chain(s.others)
        .chain(s.failed)
        .collect();
    all.sort_by(|a, b| {
        b.origin()
            .serial
            .cmp(&a.origin().serial)
            .then(a.id().cmp(b.id()))
    });
    all
}

/// The deployment of `all` with id `prefix` (full, or a unique prefix of
/// 6+ digits).
pub(crate) fn find_in(all: Vec<Deployment>, prefix: &str) -> Result<Deployment, DeployError> {
    let mut hits = all
        .into_iter()
        .filter(|d| prefix.len() >= 6 && d.id().as_str().starts_with(prefix));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(DeployError::NoSuchDeployment(prefix.to_string())),
        (Some(_), Some(_)) => Err(DeployError::Ambiguous(prefix.to_string())),
    }
}

#[cfg(test)]
impl Deployment {
    /// The same deployment, pinned.
    pub(crate) fn pinned(mut self) -> Deployment {
        self.origin.pinned = true;
        self
    }
}

#[cfg(test)]
pub(crate) fn test_deployment(
    id: DeploymentId,
    serial: u64,
    finalized: bool,
    tries: Option<Tries>,
) -> Deployment {
    let origin: Origin = serde_json::from_value(serde_json::json!({
        "version": 1, "image": "r/os:1", "transport": "registry",
        "manifestDigest": format!("sha256:{}", "0".repeat(64)), "imageId": id.as_str(), "architecture": "amd64",
        "imageVersion": null, "timestamp": null, "osName": null, "kernelVersion": "6.1",
        "bootDigest": "b", "imageKargs": [], "localKargs": [], "deployed": "now",
        "serial": serial, "finalized": finalized,
    }))
    .expect("origin fixture");
    let record: ImageRecord = serde_json::from_value(serde_json::json!({
        "version": 1, "reference": "r/os:1", "transport": "registry",
        "manifestDigest": format!("sha256:{}", "0".repeat(64)),
        "configDigest": format!("sha256:{}", "1".repeat(64)), "imageId": id.as_str(),
        "layers": [], "architecture": "amd64", "os": "linux", "pulled": "now",
        "manifest": "{}", "config": "{}",
    }))
    .expect("record fixture");
    Deployment {
        id,
        origin,
        record,
        tries,
        health: None,
        health_unreadable: None,
    }
}
