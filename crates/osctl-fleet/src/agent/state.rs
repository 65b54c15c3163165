//! The agent's own state on the machine, `state/fleet-agent.json` under the
//! sysroot: the assignment it is carrying out, its phase, and — when it
//! asked for a reboot — the boot id it asked from. It is what survives the
//! reboot: a boot id other than the one recorded says the reboot happened;
//! the same one says the agent was only restarted (and must not reboot a
//! second time for the same slot).
//!
//! Written like every osctl state file: temporary, fsync, rename, fsync the
//! directory. A file that cannot be read stops the agent (fail closed): an
//! agent that forgot it asked for a reboot could ask again.

use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use jiff::Timestamp;
use osctl_deploy::layout::sysroot::{FLEET_AGENT, STATE};
use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::model::{Assignment, NodePhase, Version};

/// The file's name in the state directory.
const FILE_NAME: &str = osctl_deploy::layout::state_dir_name(FLEET_AGENT);

/// What the agent keeps on the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentState {
    pub version: Version,
    /// The node name it registered as: a state file left by another name is
    /// refused rather than carried over.
    pub node: String,
    /// The assignment being carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    pub phase: NodePhase,
    /// The boot id the agent asked to reboot from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_from: Option<String>,
    /// When the booted deployment was first seen healthy in this boot: the
    /// start of the health gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<HealthyIn>,
    /// The last error, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The lease the agent's presence key is bound to: a restarted agent
    /// ends it instead of waiting for it to run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_lease: Option<i64>,
    /// The manifest an assignment's image index resolved to here, when the
    /// agent last staged one: deployments record the manifest digest only,
    /// and this is how the agent (and through its report, the controller)
    /// knows that manifest is what the assignment asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
}

/// An image index digest and the manifest of this machine's platform it
/// resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resolved {
    /// The digest the assignment named (an image index's).
    pub from: String,
    /// The manifest digest staged for it.
    pub digest: String,
}

/// Healthy since `since`, in boot `boot_id` (a new boot starts over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthyIn {
    pub boot_id: String,
    pub since: Timestamp,
}

impl AgentState {
    /// A new agent's state: idle, nothing assigned.
    pub fn new(node: &str) -> AgentState {
        AgentState {
            version: Version,
            node: node.to_string(),
            assignment: None,
            phase: NodePhase::Idle,
            reboot_from: None,
            healthy_since: None,
            last_error: None,
            presence_lease: None,
            resolved: None,
        }
    }

    /// Parses the file's text; the loader names the file.
    pub fn parse(text: &str) -> Result<AgentState, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Reads the state of `node` from the sysroot; `None` when there is none
/// yet. A file for another node name refuses.
pub fn load(sysroot: &Path, node: &str) -> Result<Option<AgentState>, AgentError> {
    let path = sysroot.join(FLEET_AGENT);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AgentError::Io {
                step: "reading the agent state",
                path,
                source,
            });
        }
    };
    let state = AgentState::parse(&text).map_err(|source| AgentError::BadState {
        path: path.clone(),
        why: source.to_string(),
    })?;
    if state.node != node {
        return Err(AgentError::BadState {
            path,
            why: format!(
                "it belongs to node {:?}, not {node:?} (remove it to re-register this machine)",
                state.node
            ),
        });
    }
    Ok(Some(state))
}

/// Replaces the state file atomically.
pub fn save(sysroot: &Path, state: &AgentState) -> Result<(), AgentError> {
    let dir_path = sysroot.join(STATE);
    let io = |step: &'static str, source: std::io::Error| AgentError::Io {
        step,
        path: sysroot.join(FLEET_AGENT),
        source,
    };
    std::fs::create_dir_all(&dir_path).map_err(|e| io("creating the state directory", e))?;
    let dir = Dir::open_ambient_dir(&dir_path, ambient_authority())
        .map_err(|e| io("opening the state directory", e))?;
    let mut bytes = serde_json::to_vec_pretty(state)
        .expect("the agent state has string keys only: it always serialises");
    bytes.push(b'\n');
    osctl_store::atomic::write_atomic(&dir, FILE_NAME, &bytes)
        .map_err(|e| io("writing the agent state", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AssignmentKind;

    fn assignment() -> Assignment {
        Assignment {
            version: Version,
            rollout: "web".into(),
            generation: 3,
            image: "registry.example/os@sha256:aa".into(),
            digest: "sha256:aa".into(),
            kind: AssignmentKind::Update,
        }
    }

    #[test]
    fn survives_a_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "n1").unwrap(), None);
        let mut state = AgentState::new("n1");
        state.assignment = Some(assignment());
        state.phase = NodePhase::Rebooting;
        state.reboot_from = Some("boot-a".into());
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path(), "n1").unwrap(), Some(state));
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &AgentState::new("n1")).unwrap();
        let err = load(dir.path(), "n2").unwrap_err().to_string();
        assert!(err.contains("belongs to node \"n1\", not \"n2\""), "{err}");
        let path = dir.path().join(FLEET_AGENT);
        for (text, why) in [
            ("{", "EOF while parsing"),
            (
                r#"{"version":2,"node":"n1","phase":"idle"}"#,
                "version 2 is not known",
            ),
            (
                r#"{"version":1,"node":"n1","phase":"idle","extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"version":1,"node":"n1","phase":"asleep"}"#,
                "unknown variant `asleep`",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = load(dir.path(), "n1").unwrap_err().to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains(why),
                "{text}: {err}"
            );
        }
    }
}
