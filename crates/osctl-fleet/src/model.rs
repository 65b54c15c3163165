//! The JSON records kept in etcd (docs/fleet.md "Keys in etcd").
//!
//! Every record carries `version: 1`. A reader refuses a version it does not
//! know and any field it does not know (`deny_unknown_fields`): a record it
//! cannot read fully is unreadable, and unreadable state is refused, never
//! defaulted (a node whose report is unreadable is unavailable). A change of
//! shape bumps the version. Field names are camelCase, enum values
//! kebab-case, times RFC 3339 (jiff's `Timestamp`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The record version this osctl writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// A record that cannot be read; names the kind of record.
#[derive(Debug, thiserror::Error)]
#[error("unreadable {kind}: {source}")]
pub struct ModelError {
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// The `version` field: always written as [`RECORD_VERSION`], anything else
/// refused on read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(RECORD_VERSION)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let v = u64::deserialize(d)?;
        if v != u64::from(RECORD_VERSION) {
            return Err(serde::de::Error::custom(format!(
                "version {v} is not known (this osctl reads version {RECORD_VERSION})"
            )));
        }
        Ok(Version)
    }
}

macro_rules! record {
    ($ty:ident, $kind:literal) => {
        impl $ty {
            /// What this record is called in errors.
            pub const KIND: &'static str = $kind;

            /// Reads the record; refuses another version or unknown fields.
            pub fn from_json(bytes: &[u8]) -> Result<$ty, ModelError> {
                serde_json::from_slice(bytes).map_err(|source| ModelError {
                    kind: $kind,
                    source,
                })
            }

            /// The JSON stored in etcd.
            pub fn to_json(&self) -> Vec<u8> {
                serde_json::to_vec(self)
                    .expect("records have string keys and no floats: they always serialise")
            }
        }
    };
}

/// An image as a node has it: the reference it came from, its digest, the
/// deployment holding it.
///
/// `digest` is always the manifest's (what the machine booted or staged).
/// An assignment may name an image index instead (a multi-arch image: the
/// controller cannot know each node's platform), and each node pulls the
/// manifest of its own platform from it; `resolved_from` is then the index
/// digest that manifest was resolved from on this node, so the controller
/// can tell the node carries out what it was asked ([`ImageState::is`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageState {
    pub image: String,
    pub digest: String,
    pub deployment: String,
    /// The image index digest `digest` was resolved from, when the agent
    /// staged it for an assignment naming an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_from: Option<String>,
}

impl ImageState {
    /// Whether this is the image `digest` names: its manifest digest, or
    /// the index digest it was resolved from.
    pub fn is(&self, digest: &str) -> bool {
        self.digest == digest || self.resolved_from.as_deref() == Some(digest)
    }
}

/// The agent's phase (docs/fleet.md "The agent").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodePhase {
    Idle,
    Downloading,
    Staged,
    WaitingSlot,
    Rebooting,
    Verifying,
    Updated,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    Healthy,
    Unhealthy,
    Unknown,
}

/// The boot assessment of the booted deployment, and since when it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    pub state: HealthState,
    pub since: Timestamp,
}

/// `nodes/<node>/report`, written by the node's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeReport {
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    pub booted: ImageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<ImageState>,
    pub phase: NodePhase,
    pub health: Health,
    pub boot_id: String,
    /// The rollout whose assignment the agent is carrying out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}
record!(NodeReport, "node report");

/// `nodes/<node>/presence`, bound to the agent's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Presence {
    pub version: Version,
    pub boot_id: String,
    pub since: Timestamp,
}
record!(Presence, "presence");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssignmentKind {
    /// Stage the rollout's image.
    Update,
    /// Go back to the image the node ran before the rollout.
    Revert,
}

/// `nodes/<node>/assignment`, written by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    pub version: Version,
    pub rollout: String,
    pub generation: u64,
    /// The image to stage, by digest where the transport has digests.
    pub image: String,
    pub digest: String,
    pub kind: AssignmentKind,
}
record!(Assignment, "assignment");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutPhase {
    Progressing,
    Paused,
    /// Waiting for a maintenance window.
    Waiting,
    Halted,
    RollingBack,
    Completed,
    Aborted,
}

/// Where a node is on its way to its assigned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "leg",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Leg {
    /// The assignment is written; the node downloads and stages.
    Assigned,
    /// The node reported the assigned image staged; it waits for a slot.
    Staged,
    /// The node holds a slot; `boot_id` is the boot it must leave.
    Rebooting {
        slot_deadline: Timestamp,
        boot_id: String,
    },
    /// The node came back (new boot id); the health gate runs.
    Verifying { booted_at: Timestamp },
}

/// A node's state in one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "state",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum NodeState {
    /// Not touched yet.
    Pending,
    Assigned,
    Staged,
    Rebooting {
        slot_deadline: Timestamp,
        boot_id: String,
    },
    Verifying {
        booted_at: Timestamp,
    },
    /// Booted the rollout's digest and passed the health gate.
    Updated,
    /// Failed for this rollout's image: never assigned it again.
    /// `boot_id` is set when the node did not come back: it stays
    /// unavailable until it reports another boot.
    Failed {
        reason: String,
        at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    },
    /// On its way back to its previous image.
    Reverting {
        leg: Leg,
    },
    /// Back on its previous image and healthy.
    Reverted,
    /// Governed by another rollout: not touched by this one.
    Skipped {
        governed_by: String,
    },
}

/// One failure, as status lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failure {
    pub node: String,
    pub reason: String,
    pub at: Timestamp,
}

/// `rollouts/<name>/status`, written by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStatus {
    pub version: Version,
    /// The spec generation this status is for.
    pub generation: u64,
    pub phase: RolloutPhase,
    /// Index into `spec.steps` of the step in force; `steps.len()` once all
    /// are done ("the rest").
    pub step: usize,
    /// When the step in force began (a timed pause counts from here).
    pub step_started_at: Timestamp,
    /// The digest the image resolved to.
    pub digest: String,
    /// The image each touched node ran before this rollout, for revert.
    #[serde(default)]
    pub previous: BTreeMap<String, ImageState>,
    pub nodes: BTreeMap<String, NodeState>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Why progress is blocked, in a sentence; `None` while it moves.
    #[serde(default)]
    pub blocked: Option<String>,
    /// Paused by `fleet pause` (until `fleet resume`).
    #[serde(default)]
    pub paused: bool,
    /// Why the rollout is halted when that is not the failure budget
    /// (progress deadline, rolled back); cleared by resume.
    #[serde(default)]
    pub halted: Option<String>,
    /// The last time a node finished, a step advanced or the rollout was
    /// resumed: the progress deadline counts from here.
    pub last_progress_at: Timestamp,
    /// When the newest control request applied was made (the admin's
    /// clock, for people: ordering goes by `last_control_revision`).
    #[serde(default)]
    pub last_control_at: Option<Timestamp>,
    /// The etcd create revision of the newest control request applied;
    /// requests at or below it are ignored (a control read twice is applied
    /// once). etcd's revision, not the admin's clock: an abort made on a
    /// machine whose clock is behind must not be taken for an old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_control_revision: Option<i64>,
    pub updated_at: Timestamp,
}
record!(RolloutStatus, "rollout status");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlAction {
    Pause,
    Resume,
    Promote,
    Abort,
    Undo,
}

/// `rollouts/<name>/control`, written by `fleet pause|resume|promote|abort|undo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Control {
    pub version: Version,
    pub action: ControlAction,
    pub at: Timestamp,
}
record!(Control, "control request");

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn records_round_trip_in_their_documented_shape() {
        let report = NodeReport {
            version: Version,
            labels: BTreeMap::from([("pool".into(), "web".into())]),
            booted: ImageState {
                image: "r.example/os:v1".into(),
                digest: "sha256:aa".into(),
                deployment: "d1".into(),
                resolved_from: None,
            },
            staged: None,
            phase: NodePhase::WaitingSlot,
            health: Health {
                state: HealthState::Healthy,
                since: ts("2026-12-07T10:00:00Z"),
            },
            boot_id: "b1".into(),
            rollout: Some("web".into()),
            last_error: None,
            updated_at: ts("2026-12-07T10:01:00Z"),
        };
        let json = String::from_utf8(report.to_json()).expect("utf-8");
        assert_eq!(
            json,
            r#"{"version":1,"labels":{"pool":"web"},"booted":{"image":"r.example/os:v1","digest":"sha256:aa","deployment":"d1"},"phase":"waiting-slot","health":{"state":"healthy","since":"2026-12-07T10:00:00Z"},"bootId":"b1","rollout":"web","updatedAt":"2026-12-07T10:01:00Z"}"#
        );
        assert_eq!(
            NodeReport::from_json(json.as_bytes()).expect("reads back"),
            report
        );

        let state = NodeState::Reverting {
            leg: Leg::Rebooting {
                slot_deadline: ts("2026-12-07T10:10:00Z"),
                boot_id: "b1".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&state).expect("serialises"),
            r#"{"state":"reverting","leg":{"leg":"rebooting","slotDeadline":"2026-12-07T10:10:00Z","bootId":"b1"}}"#
        );
        let control = Control {
            version: Version,
            action: ControlAction::Promote,
            at: ts("2026-12-07T10:00:00Z"),
        };
        assert_eq!(
            String::from_utf8(control.to_json()).expect("utf-8"),
            r#"{"version":1,"action":"promote","at":"2026-12-07T10:00:00Z"}"#
        );
    }

    type Reader = fn(&[u8]) -> Result<(), ModelError>;

    #[test]
    fn unreadable_records_are_refused_with_their_kind() {
        let cases: [(&str, Reader, &str); 5] = [
            (
                r#"{"version":2,"bootId":"b","since":"2026-12-07T10:00:00Z"}"#,
                |b| Presence::from_json(b).map(drop),
                "unreadable presence: version 2 is not known (this osctl reads version 1) at line 1 column 12",
            ),
            (
                r#"{"bootId":"b","since":"2026-12-07T10:00:00Z"}"#,
                |b| Presence::from_json(b).map(drop),
                "unreadable presence: missing field `version` at line 1 column 45",
            ),
            (
                r#"{"version":1,"action":"reboot","at":"2026-12-07T10:00:00Z"}"#,
                |b| Control::from_json(b).map(drop),
                "unreadable control request: unknown variant `reboot`, expected one of `pause`, `resume`, `promote`, `abort`, `undo` at line 1 column 30",
            ),
            (
                r#"{"version":1,"rollout":"r","generation":1,"image":"i","digest":"d","kind":"update","extra":1}"#,
                |b| Assignment::from_json(b).map(drop),
                "unreadable assignment: unknown field `extra`, expected one of `version`, `rollout`, `generation`, `image`, `digest`, `kind` at line 1 column 90",
            ),
            (
                "not json",
                |b| NodeReport::from_json(b).map(drop),
                "unreadable node report: expected ident at line 1 column 2",
            ),
        ];
        for (json, read, want) in cases {
            let err = read(json.as_bytes()).expect_err(want);
            assert_eq!(err.to_string(), want);
        }
    }
}
