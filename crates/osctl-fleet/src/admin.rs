//! What the admin's commands write and read: `fleet apply` (the spec, with
//! a generation that grows with every change), `fleet pause|resume|promote|
//! abort|undo` (control requests the controller applies once each), and the
//! reads behind `fleet status` and `fleet nodes`.
//!
//! Every write is a compare-and-swap: two admins applying at once both get
//! a generation of their own or one is told to retry, never a lost update.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::etcd::{Etcd, EtcdError};
use crate::keys;
use crate::model::{Assignment, Control, ControlAction, NodeReport, RolloutStatus, Version};
use crate::spec::{Rollout, SpecError};

/// `rollouts/<name>/spec`: the applied rollout and its generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppliedRollout {
    pub version: Version,
    /// 1 for the first apply, one more for every change.
    pub generation: u64,
    pub rollout: Rollout,
    pub applied_at: Timestamp,
}

impl AppliedRollout {
    pub const KIND: &'static str = "applied rollout";

    /// Reads the stored record (the spec's own rules are checked again).
    pub fn from_json(bytes: &[u8]) -> Result<AppliedRollout, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What the admin commands can fail on.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("no rollout named {0}")]
    NoRollout(String),
    #[error("rollout {name}: someone else changed it at the same time; run the command again")]
    Raced { name: String },
}

/// What `fleet apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created { generation: u64 },
    Changed { generation: u64 },
    Unchanged { generation: u64 },
}

/// Stores `rollout`: a new one at generation 1, a changed one at the next
/// generation, an identical one untouched.
pub async fn apply(etcd: &Etcd, rollout: &Rollout) -> Result<Applied, AdminError> {
    let key = keys::rollout_spec(&rollout.name);
    let current = etcd.get_json::<AppliedRollout>(&key).await?;
    let (generation, written) = match &current {
        Some(cur) if cur.value.rollout == *rollout => {
            return Ok(Applied::Unchanged {
                generation: cur.value.generation,
            });
        }
        Some(cur) => {
            let next = record(rollout, cur.value.generation + 1);
            let ok = etcd.replace(&key, &next, cur.mod_revision, None).await?;
            (next.generation, ok)
        }
        None => {
            let first = record(rollout, 1);
            (1, etcd.create(&key, &first, None, None).await?)
        }
    };
    if !written {
        return Err(AdminError::Raced {
            name: rollout.name.clone(),
        });
    }
    Ok(match current {
        Some(_) => Applied::Changed { generation },
        None => Applied::Created { generation },
    })
}

fn record(rollout: &Rollout, generation: u64) -> AppliedRollout {
    AppliedRollout {
        version: Version,
        generation,
        rollout: rollout.clone(),
        applied_at: Timestamp::now(),
    }
}

/// Queues a control request for rollout `name` (which must exist). Each
/// request is a key of its own, so two in quick succession (pause, then
/// promote) are both applied, in order.
pub async fn control(etcd: &Etcd, name: &str, action: ControlAction) -> Result<(), AdminError> {
    if etcd
        .get_json::<AppliedRollout>(&keys::rollout_spec(name))
        .await?
        .is_none()
    {
        return Err(AdminError::NoRollout(name.to_string()));
    }
    let at = Timestamp::now();
    let request = Control {
        version: Version,
        action,
        at,
    };
    let key = keys::rollout_control(name, at);
    if !etcd.create(&key, &request, None, None).await? {
        return Err(AdminError::Raced {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// One rollout as `fleet status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub name: String,
    pub applied: AppliedRollout,
    /// `None` until the controller has looked at it.
    pub status: Option<RolloutStatus>,
    /// Control requests the controller has not applied yet.
    pub pending_controls: Vec<Control>,
}

/// One node as `fleet nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// Its agent's presence lease is alive.
    pub present: bool,
    pub report: Option<NodeReport>,
    /// Why the report cannot be read, if it cannot.
    pub report_error: Option<String>,
    pub assignment: Option<Assignment>,
}

/// What one rollout's keys hold, as read.
/// Controls with their keys' create revisions (the order they apply in).
type RolloutRecords = (
    Option<AppliedRollout>,
    Option<RolloutStatus>,
    Vec<(i64, Control)>,
);

/// Every rollout (or the one named) with its status.
pub async fn rollouts(etcd: &Etcd, only: Option<&str>) -> Result<Vec<RolloutView>, AdminError> {
    let listing = etcd.list_raw(keys::ROLLOUTS).await?;
    let mut views: BTreeMap<String, RolloutRecords> = BTreeMap::new();
    for item in &listing.items {
        let Some((name, what)) = keys::parse_rollout_key(&item.key) else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let entry = views.entry(name.to_string()).or_default();
        let decode = |e: serde_json::Error| EtcdError::Decode {
            key: item.key.clone(),
            source: e,
        };
        match what {
            keys::RolloutKey::Spec => {
                entry.0 = Some(AppliedRollout::from_json(&item.value).map_err(decode)?)
            }
            keys::RolloutKey::Status => {
                entry.1 =
                    Some(serde_json::from_slice::<RolloutStatus>(&item.value).map_err(decode)?)
            }
            keys::RolloutKey::Control => entry.2.push((
                item.create_revision,
                serde_json::from_slice::<Control>(&item.value).map_err(decode)?,
            )),
        }
    }
    if let Some(name) = only
        && !views.contains_key(name)
    {
        return Err(AdminError::NoRollout(name.to_string()));
    }
    Ok(views
        .into_iter()
        // Status or controls without a spec: left over from a removed
        // rollout; nothing to show.
        .filter_map(|(name, (applied, status, mut controls))| {
            let applied = applied?;
            let last = status.as_ref().and_then(|s| s.last_control_revision);
            controls.retain(|(rev, _)| last.is_none_or(|l| *rev > l));
            controls.sort_by_key(|(rev, _)| *rev);
            Some(RolloutView {
                name,
                applied,
                status,
                pending_controls: controls.into_iter().map(|(_, c)| c).collect(),
            })
        })
        .collect())
}

/// Every node that registered or reported.
pub async fn nodes(etcd: &Etcd) -> Result<Vec<NodeView>, AdminError> {
    let listing = etcd.list_raw(keys::NODES).await?;
    let mut views: BTreeMap<String, NodeView> = BTreeMap::new();
    for item in &listing.items {
        let Some((node, what)) = keys::parse_node_key(&item.key) else {
            continue;
        };
        let view = views.entry(node.to_string()).or_insert_with(|| NodeView {
            name: node.to_string(),
            present: false,
            report: None,
            report_error: None,
            assignment: None,
        });
        match what {
            keys::NodeKey::Presence => view.present = true,
            keys::NodeKey::Report => match NodeReport::from_json(&item.value) {
                Ok(r) => view.report = Some(r),
                // Shown as such: an unreadable report is the admin's to see.
                Err(e) => view.report_error = Some(e.to_string()),
            },
            keys::NodeKey::Assignment => {
                view.assignment =
                    Some(
                        Assignment::from_json(&item.value).map_err(|e| EtcdError::Decode {
                            key: item.key.clone(),
                            source: e.source,
                        })?,
                    )
            }
        }
    }
    Ok(views.into_values().collect())
}
