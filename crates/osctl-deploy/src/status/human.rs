//! The human form of `osctl status`, rendered from the [`Host`] model so it
//! shows exactly what the JSON shows.
//!
//! One block per present slot (staged, booted, rollback), as bootc lays it
//! out: a header `● Booted image: REF` (`●` marks the booted one), then
//! `Label: value` rows whose colons line up under the header's. Sub-second
//! digits of timestamps are dropped. Then one line each for other
//! deployments and a queued rollback.

use std::fmt::Write as _;
use std::path::Path;

use super::{
    Assessment, BootEntry, Host, ImageReference, ImageStatus, SignatureResult, SignatureStatus,
    split_rfc3339,
};
use crate::{ConflictKind, EtcConflict};

/// At most this many `/etc` conflicts or other deployments are listed;
/// beyond it only the count is shown.
const LIST_MAX: usize = 3;

pub(super) fn render(host: &Host) -> String {
    let st = &host.status;
    let mut blocks: Vec<String> = [
        ("Staged", &st.staged, false),
        ("Booted", &st.booted, true),
        ("Rollback", &st.rollback, false),
    ]
    .into_iter()
    .filter_map(|(slot, entry, booted)| Some(entry_block(slot, entry.as_ref()?, booted)))
    .collect();

    let mut tail = String::new();
    let failed = |e: &&BootEntry| {
        e.osctl
            .as_ref()
            .and_then(|o| o.health.as_ref())
            .is_some_and(|h| h.state == Assessment::Failed)
    };
    let (bad, kept): (Vec<&BootEntry>, Vec<&BootEntry>) =
        st.other_deployments.iter().partition(failed);
    if !kept.is_empty() {
        let kept: Vec<BootEntry> = kept.into_iter().cloned().collect();
        // Writing to a String cannot fail.
        let _ = writeln!(tail, "Other deployments: {}", others(&kept));
    }
    for e in bad {
        // Writing to a String cannot fail.
        let _ = writeln!(tail, "Failed deployment: {}", failed_line(e));
    }
    if st.rollback_queued {
        tail.push_str("Rollback queued: the next boot is the rollback deployment\n");
    }
    for p in st.osctl.iter().flat_map(|o| &o.problems) {
        // Writing to a String cannot fail.
        let _ = writeln!(tail, "Problem: {p}");
    }
    if blocks.is_empty() && tail.is_empty() {
        return "No deployments yet (osctl switch IMAGE deploys one).\n".to_owned();
    }
    if !tail.is_empty() {
        blocks.push(tail);
    }
    blocks.join("\n")
}

/// The header and aligned rows of one slot.
fn entry_block(slot: &str, entry: &BootEntry, booted: bool) -> String {
    let header = format!("{} {slot} image", if booted { '●' } else { ' ' });
    let width = header.chars().count();
    let mut out = String::new();
    // An empty label continues the previous row's list.
    let mut row = |label: &str, value: &str| {
        let colon = if label.is_empty() { ' ' } else { ':' };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{label:>width$}{colon} {value}");
    };
    row(
        &header,
        &entry
            .image
            .as_ref()
            .map_or("(unknown)".to_owned(), |i| reference(&i.image)),
    );
    if let Some(image) = &entry.image {
        row(
            "Digest",
            &format!("{} ({})", image.image_digest, image.architecture),
        );
        if let Some((label, value)) = version(image) {
            row(label, &value);
        }
    }
    if let Some(osctl) = &entry.osctl {
        row("Signature", &signature(osctl.signature.as_ref()));
        row("Kernel", &osctl.kernel_version);
        row("Deployment", short(&osctl.deployment_id));
        if let Some(h) = &osctl.health {
            let mut value = h.state.as_str().to_owned();
            if let Some(t) = osctl.boot_tries {
                let plural = |n: u32| if n == 1 { "" } else { "s" };
                // Writing to a String cannot fail.
                let _ = write!(
                    value,
                    " ({} boot attempt{} left, {} made)",
                    t.left,
                    plural(t.left),
                    t.done
                );
            }
            if let Some(reason) = &h.reason {
                // Writing to a String cannot fail.
                let _ = write!(value, ": {reason}");
            }
            row("Health", &value);
        }
    }
    if entry.download_only {
        row(
            "Download only",
            "yes: not applied at shutdown (osctl upgrade --from-downloaded releases it)",
        );
    }
    if entry.pinned {
        row("Pinned", "yes");
    }
    if let Some(update) = &entry.cached_update {
        let value = version(update).map_or_else(|| update.image_digest.clone(), |(_, v)| v);
        row("Update", &value);
    }
    let conflicts = entry.osctl.as_ref().map_or(&[][..], |o| &o.etc_conflicts);
    if conflicts.len() > LIST_MAX {
        let n = conflicts.len();
        row(
            "/etc conflicts",
            &format!("{n} (run osctl status --format yaml for the list)"),
        );
    } else {
        for (i, c) in conflicts.iter().enumerate() {
            row(if i == 0 { "/etc conflicts" } else { "" }, &conflict(c));
        }
    }
    out
}

/// `verified (ECDSA P-256 key sha256:0123456789ab)`, `not verified (the
/// policy accepts anything)`, or `unknown` for an image pulled before
/// osctl checked signatures.
fn signature(s: Option<&SignatureStatus>) -> String {
    match s {
        Some(s) if s.result == SignatureResult::Verified => format!(
            "verified ({} key {})",
            s.key_type.as_deref().unwrap_or("unknown"),
            s.key.as_deref().map_or("(unknown)", short_digest)
        ),
        Some(_) => "not verified (the policy accepts anything)".to_owned(),
        None => "unknown (pulled before osctl checked signatures)".to_owned(),
    }
}

/// `sha256:` and the first 12 hex digits.
fn short_digest(d: &str) -> &str {
    d.get(..7 + 12).unwrap_or(d)
}

/// `image` for the registry transport (the default), else `transport:image`.
fn reference(r: &ImageReference) -> String {
    if r.transport == "registry" {
        r.image.clone()
    } else {
        format!("{}:{}", r.transport, r.image)
    }
}

/// `("Version", "2.0 (time)")`, `("Version", "2.0")`, `("Timestamp", "time")`.
fn version(image: &ImageStatus) -> Option<(&'static str, String)> {
    let time = image.timestamp.as_deref().map(seconds);
    match (&image.version, time) {
        (Some(v), Some(t)) => Some(("Version", format!("{v} ({t})"))),
        (Some(v), None) => Some(("Version", v.clone())),
        (None, Some(t)) => Some(("Timestamp", t)),
        (None, None) => None,
    }
}

/// An RFC 3339 time without sub-second digits; anything else as it is.
fn seconds(t: &str) -> String {
    split_rfc3339(t).map_or_else(|| t.to_owned(), |(time, zone)| format!("{time}{zone}"))
}

/// The first 12 digits of a deployment id, as osctl shows ids.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `/etc/ssh/sshd_config (both modified)`.
fn conflict(c: &EtcConflict) -> String {
    let path = match c.path() {
        p if p.as_os_str().is_empty() || p == Path::new(".") => "/etc".to_owned(),
        p => Path::new("/etc").join(p).display().to_string(),
    };
    let kind = match c.kind() {
        ConflictKind::BothModified => "both modified",
        ConflictKind::BothAdded => "both added",
        ConflictKind::TypeChanged => "file type changed",
        ConflictKind::DeletedButImageChanged => "deleted here, changed by the image",
        ConflictKind::ModifiedButImageDeleted => "changed here, deleted by the image",
    };
    format!("{path} ({kind})")
}

/// `0123456789ab (2.0): health check 50-app: exit status 1 (…)`.
fn failed_line(e: &BootEntry) -> String {
    let mut line = others(std::slice::from_ref(e));
    if let Some(reason) = e
        .osctl
        .as_ref()
        .and_then(|o| o.health.as_ref())
        .and_then(|h| h.reason.as_deref())
    {
        // Writing to a String cannot fail.
        let _ = write!(line, ": {reason}");
    }
    line
}

/// `0123456789ab (1.0, pinned), …`
fn others(entries: &[BootEntry]) -> String {
    if entries.len() > LIST_MAX {
        return format!(
            "{} (run osctl status --format yaml for the list)",
            entries.len()
        );
    }
    let one = |e: &BootEntry| {
        let id = e
            .osctl
            .as_ref()
            .map(|o| o.deployment_id.as_str())
            .or(e.composefs.as_ref().map(|c| c.verity.as_str()))
            .map_or("?", short);
        let mut notes: Vec<&str> = e
            .image
            .as_ref()
            .and_then(|i| i.version.as_deref())
            .into_iter()
            .collect();
        if e.pinned {
            notes.push("pinned");
        }
        if notes.is_empty() {
            id.to_owned()
        } else {
            format!("{id} ({})", notes.join(", "))
        }
    };
    entries.iter().map(one).collect::<Vec<_>>().join(", ")
}
