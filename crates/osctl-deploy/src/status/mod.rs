//! `osctl status`: the host's deployments as bootc's `BootcHost` object.
//!
//! # Model
//!
//! The state machine reads the sysroot into a [`HostView`]: plain data, one
//! [`EntryView`] (deployment id + its [`Origin`] + boot facts) per slot.
//! [`to_host`] maps it onto [`Host`], a serde model of bootc's host object
//! (`org.containers.bootc/v1`, schema `host-v1.schema.json`), which
//! [`render_json`] and [`render_yaml`] print. [`render_human`] prints a short
//! summary *from the same [`Host`]*, so the three formats cannot disagree.
//!
//! Why a model of bootc's object rather than osctl's own: tools and people
//! that drive bootc (`jq .status.booted.image.imageDigest`, fleet
//! dashboards, Ansible facts) then work on osctl unchanged. The
//! `status_format` tests hold every status shape to the bootc field names and
//! JSON types osctl promises (a table in the test).
//!
//! # Schema
//!
//! [`status_schema`] is the JSON Schema of the output, generated from these
//! types (schemars); the repository carries it as `docs/status.schema.json`
//! ([`SCHEMA_DOC`]). It is stricter than bootc's: osctl's fields are in it,
//! every object is closed, required means "osctl always prints it". The
//! tests fail when the committed file is not what the types generate and
//! print the command that rewrites it.
//!
//! # Mapping
//!
//! | host field | from |
//! |---|---|
//! | `spec.image` | [`HostView::spec_image`] (the tracked reference) |
//! | `spec.bootOrder` | `rollback` when [`HostView::rollback_queued`], else `default` |
//! | `status.type` | `bootcHost` when a deployment is booted, else `null` |
//! | entry `image` | origin `image`/`transport`, `imageVersion`, `timestamp`, `manifestDigest`, `architecture` |
//! | entry `cachedUpdate` | origin `cachedUpdate`, only when its digest differs from the entry's |
//! | entry `pinned` | origin `pinned`; `incompatible`, `softRebootCapable` are `false`, `store` is `null` |
//! | entry `downloadOnly` | staged entry: [`HostView::staged_download_only`] (the staged marker says `download-only`); `false` elsewhere |
//! | entry `composefs` | `verity` = image id, `bootType`, `bootloader`, `missingVerityAllowed` = `!verity_required`, `bootDigest` (BLS only) |
//!
//! osctl's own fields live in an `osctl` object inside each boot entry
//! ([`OsctlEntry`]: deployment id, creation time, os name, kernel, kernel
//! arguments, when updates were last checked, `/etc` merge conflicts). The
//! schema's `BootEntry` does not forbid additional properties, so the
//! output stays valid; bootc's own readers ignore the unknown key.
//!
//! Timestamps pass through unchanged in JSON/YAML (as bootc does) when
//! they are RFC 3339; a malformed one becomes `null`, because the schema
//! says `format: date-time`. The human form drops sub-second digits (as bootc
//! does) and keeps the zone as written (image timestamps are UTC in practice).
//!
//! `--booted` is [`booted_only`]: the view without staged, rollback and other
//! deployments; the tracked image and `rollbackQueued` stay, since they are
//! facts about the host.

mod from_sysroot;
mod host;
mod human;
mod schema;

pub use host::{
    API_VERSION, Assessment, BootEntry, BootEntryComposefs, BootOrder, BootTries, BootType,
    Bootloader, Health, Host, HostSpec, HostStatus, HostType, ImageReference, ImageSignature,
    ImageStatus, KIND, ObjectMeta, OsctlEntry, OsctlHostStatus, SignatureResult, SignatureStatus,
    Store,
};

pub use schema::{SCHEMA_DOC, render_schema, status_schema};

use crate::boot::Tries;
use crate::health::{HealthRecord, HealthState};
use crate::layout::DeploymentId;
use crate::origin::Origin;
use osctl_image::{SignatureCheck, SignatureVerdict};

/// Everything `osctl status` shows, as the state machine reads it from the
/// sysroot.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// The tracked reference (the staged deployment's origin, else the
    /// booted one's); `None` on a fresh machine.
    pub spec_image: Option<ImageReference>,
    pub staged: Option<EntryView>,
    pub booted: Option<EntryView>,
    pub rollback: Option<EntryView>,
    /// Deployments kept besides those three (pinned ones).
    pub other: Vec<EntryView>,
    /// Deployments that failed (health checks, or the boot loader gave up
    /// on them); shown under `otherDeployments` with their health.
    pub failed: Vec<EntryView>,
    /// The next boot is the rollback deployment.
    pub rollback_queued: bool,
    /// The staged deployment was downloaded only (`upgrade
    /// --download-only`): finalize leaves it, it is not the next boot.
    pub staged_download_only: bool,
    /// What osctl found on disk and cannot use (a deployment whose origin
    /// does not parse, a boot entry that does not), one line each; left out
    /// of every decision.
    pub problems: Vec<String>,
}

/// One deployment. Its `/etc` merge conflicts are `origin.etc_conflicts`.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub id: DeploymentId,
    pub origin: Origin,
    /// BLS type 1 today.
    pub boot_type: BootType,
    /// `Systemd` when osctl manages systemd-boot's loader.conf, else `None`.
    pub bootloader: Bootloader,
    /// The entry says `composefs=<id>` (not `composefs=?<id>`).
    pub verity_required: bool,
    /// The boot entry's counter, while the deployment is being assessed.
    pub tries: Option<Tries>,
    /// The last health record.
    pub health: Option<HealthRecord>,
    /// The signature policy's verdict at the pull (from the deployment's
    /// copy of the image record); `None` when the record predates it.
    pub signature: Option<SignatureVerdict>,
}

impl EntryView {
    /// The reference this deployment was made from.
    pub fn image_reference(&self) -> ImageReference {
        ImageReference {
            image: self.origin.image.clone(),
            transport: self.origin.transport.clone(),
            signature: self.signature.as_ref().map(|s| match s.check {
                SignatureCheck::Verified { .. } => ImageSignature::ContainerPolicy,
                SignatureCheck::Insecure => ImageSignature::Insecure,
            }),
        }
    }

    fn signature_status(&self) -> Option<SignatureStatus> {
        let s = self.signature.as_ref()?;
        let (result, key, key_type, signed_digest, identity) = match &s.check {
            SignatureCheck::Verified {
                key,
                key_type,
                signed_digest,
                identity,
            } => (
                SignatureResult::Verified,
                Some(key.clone()),
                Some(key_type.clone()),
                Some(signed_digest.clone()),
                Some(identity.clone()),
            ),
            SignatureCheck::Insecure => (SignatureResult::Insecure, None, None, None, None),
        };
        Some(SignatureStatus {
            result,
            policy: s.policy.clone(),
            scope: s.scope.clone(),
            key,
            key_type,
            signed_digest,
            identity,
        })
    }
}

/// The host object for `view`.
pub fn to_host(view: &HostView) -> Host {
    let entry = |e: &Option<EntryView>| e.as_ref().map(|e| boot_entry(e, false));
    let mut staged = entry(&view.staged);
    if let Some(s) = &mut staged {
        s.download_only = view.staged_download_only;
    }
    Host {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: ObjectMeta {
            name: Some("host".to_owned()),
        },
        spec: HostSpec {
            image: view.spec_image.clone(),
            boot_order: if view.rollback_queued {
                BootOrder::Rollback
            } else {
                BootOrder::Default
            },
        },
        status: HostStatus {
            staged,
            booted: view.booted.as_ref().map(|e| boot_entry(e, true)),
            rollback: entry(&view.rollback),
            other_deployments: view
                .other
                .iter()
                .chain(&view.failed)
                .map(|e| boot_entry(e, false))
                .collect(),
            rollback_queued: view.rollback_queued,
            host_type: view.booted.as_ref().map(|_| HostType::BootcHost),
            osctl: (!view.problems.is_empty()).then(|| OsctlHostStatus {
                problems: view.problems.clone(),
            }),
        },
    }
}

fn boot_entry(e: &EntryView, booted: bool) -> BootEntry {
    let o = &e.origin;
    let cached_update = o
        .cached_update
        .as_ref()
        .filter(|u| u.manifest_digest != o.manifest_digest)
        .map(|u| ImageStatus {
            // Found by `upgrade --check`, which offers only what the policy
            // accepts; its verdict is not kept, so none is claimed here.
            image: ImageReference {
                signature: None,
                ..e.image_reference()
            },
            version: u.version.clone(),
            timestamp: valid_timestamp(u.timestamp.as_deref()),
            image_digest: u.manifest_digest.clone(),
            architecture: u.architecture.clone(),
        });
    BootEntry {
        image: Some(ImageStatus {
            image: e.image_reference(),
            version: o.image_version.clone(),
            timestamp: valid_timestamp(o.timestamp.as_deref()),
            image_digest: o.manifest_digest.clone(),
            architecture: o.architecture.clone(),
        }),
        cached_update,
        incompatible: false,
        pinned: o.pinned,
        soft_reboot_capable: false,
        download_only: false,
        store: None,
        composefs: Some(BootEntryComposefs {
            verity: e.id.as_str().to_owned(),
            boot_type: e.boot_type,
            bootloader: e.bootloader,
            missing_verity_allowed: !e.verity_required,
            boot_digest: (e.boot_type == BootType::Bls).then(|| o.boot_digest.clone()),
        }),
        osctl: Some(OsctlEntry {
            deployment_id: e.id.as_str().to_owned(),
            deployed: o.deployed.clone(),
            os_name: o.os_name.clone(),
            kernel_version: o.kernel_version.clone(),
            kargs: o.kargs().map(str::to_owned).collect(),
            local_kargs: o.local_kargs.clone(),
            update_checked: o.cached_update.as_ref().map(|u| u.checked.clone()),
            etc_conflicts: o.etc_conflicts.clone(),
            boot_tries: e.tries.map(|t| BootTries {
                left: t.left,
                done: t.done,
            }),
            health: health(e, booted),
            signature: e.signature_status(),
        }),
    }
}

/// The health block: the record, or `pending` for an entry still counting
/// whose checks have not run; `failed` whenever the counter ran out — except
/// for the booted entry: systemd-boot counts a try before booting it, so on
/// its last try the running deployment's entry already reads 0 left.
fn health(e: &EntryView, booted: bool) -> Option<Health> {
    let exhausted = !booted && e.tries.is_some_and(|t| t.exhausted());
    let state = match (&e.health, exhausted) {
        (_, true) => Assessment::Failed,
        (Some(h), false) => match h.state {
            HealthState::Checked => Assessment::Checked,
            HealthState::Good => Assessment::Good,
            HealthState::Failed => Assessment::Failed,
        },
        (None, false) if e.tries.is_some() => Assessment::Pending,
        (None, false) => return None,
    };
    let record = e.health.as_ref();
    Some(Health {
        state,
        reason: record.and_then(|h| h.reason.clone()).or_else(|| {
            exhausted.then(|| "the boot loader gave up on it (boot counter ran out)".to_owned())
        }),
        failed_check: record.and_then(|h| h.failed_check.clone()),
        checked: record.map(|h| h.at.clone()),
    })
}

/// `--booted`: only the booted deployment (the tracked image and
/// `rollback_queued` are kept).
pub fn booted_only(view: &HostView) -> HostView {
    HostView {
        spec_image: view.spec_image.clone(),
        staged: None,
        booted: view.booted.clone(),
        rollback: None,
        other: Vec::new(),
        failed: Vec::new(),
        rollback_queued: view.rollback_queued,
        staged_download_only: false,
        problems: view.problems.clone(),
    }
}

/// Pretty-printed JSON, ending with a newline.
pub fn render_json(host: &Host) -> String {
    let mut out = serde_json::to_string_pretty(host).expect("the host model always serialises");
    out.push('\n');
    out
}

/// YAML, ending with a newline.
pub fn render_yaml(host: &Host) -> String {
    yaml_serde::to_string(host).expect("the host model always serialises")
}

/// The short human-readable summary, ending with a newline.
pub fn render_human(view: &HostView) -> String {
    human::render(&to_host(view))
}

/// `s` if it is an RFC 3339 date-time, else `None`.
fn valid_timestamp(s: Option<&str>) -> Option<String> {
    s.filter(|s| split_rfc3339(s).is_some()).map(str::to_owned)
}

/// Splits an RFC 3339 date-time into `(date 'T' time-to-seconds, zone)`,
/// dropping any fraction: `2023-10-14T19:22:15.42Z` → (`2023-10-14T19:22:15`, `Z`).
///
/// As strict as JSON Schema's `format: date-time` (RFC 3339 section 5.6 with
/// 5.7's rules): the day must exist in its month, and a leap second (`:60`)
/// is only valid at 23:59 UTC.
pub(crate) fn split_rfc3339(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > LEAP_SECOND
    {
        return None;
    }
    let mut zone = 19;
    if b[zone] == b'.' {
        zone += 1;
        let start = zone;
        while zone < b.len() && b[zone].is_ascii_digit() {
            zone += 1;
        }
        if zone == start {
            return None;
        }
    }
    let tz = &s[zone..];
    // The zone's offset east of UTC, in minutes.
    let offset = if matches!(tz, "Z" | "z") {
        0
    } else {
        let t = tz.as_bytes();
        let well_formed = t.len() == 6
            && matches!(t[0], b'+' | b'-')
            && digits(zone + 1..zone + 3)
            && t[3] == b':'
            && digits(zone + 4..zone + 6);
        if !well_formed {
            return None;
        }
        let (oh, om) = (num(zone + 1..zone + 3), num(zone + 4..zone + 6));
        if oh > 23 || om > 59 {
            return None;
        }
        let minutes = (oh * 60 + om) as i64;
        if t[0] == b'-' { -minutes } else { minutes }
    };
    if second == LEAP_SECOND {
        let utc = ((hour * 60 + minute) as i64 - offset).rem_euclid(MINUTES_PER_DAY);
        if utc != LAST_MINUTE_OF_DAY {
            return None;
        }
    }
    Some((&s[..19], tz))
}

/// The seconds value of a leap second.
const LEAP_SECOND: u32 = 60;
const MINUTES_PER_DAY: i64 = 24 * 60;
/// 23:59, the only minute (in UTC) a leap second can end.
const LAST_MINUTE_OF_DAY: i64 = MINUTES_PER_DAY - 1;

/// Days in `month` (1–12) of `year`, Gregorian.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::split_rfc3339;

    #[test]
    fn rfc3339_split() {
        assert_eq!(
            split_rfc3339("2023-10-14T19:22:15.42Z"),
            Some(("2023-10-14T19:22:15", "Z"))
        );
        assert_eq!(
            split_rfc3339("2026-11-25T10:00:00+01:00"),
            Some(("2026-11-25T10:00:00", "+01:00"))
        );
        // A leap second: 23:59:60 in UTC, here given in UTC-01:00.
        assert_eq!(
            split_rfc3339("2016-12-31T22:59:60-01:00"),
            Some(("2016-12-31T22:59:60", "-01:00"))
        );
        assert_eq!(
            split_rfc3339("2024-02-29T00:00:00Z"),
            Some(("2024-02-29T00:00:00", "Z"))
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25 10:00:00Z",
            "2026-13-25T10:00:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00+1:00",
            "2026-11-25T10:00:00Zjunk",
            "２026-11-25T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-06-31T10:00:00Z",
            "2026-11-25T10:00:60Z",
            "2016-12-31T23:59:60+01:00",
        ] {
            assert_eq!(split_rfc3339(bad), None, "{bad:?}");
        }
    }
}
