//! The keys of docs/fleet.md, relative to the fleet prefix: one place
//! that spells them, for the controller, the agent, the CLI and the tests.
//! Slot keys are the etcd layer's ([`crate::etcd::SLOTS_ROOT`]).

/// Every node's keys live under this.
pub const NODES: &str = "nodes/";
/// Every rollout's keys live under this.
pub const ROLLOUTS: &str = "rollouts/";

/// What a node name may be: it is a key segment and a FleetLock id, so the
/// characters FleetLock allows for groups, plus `_`; at most 63.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "node name {name:?} must be 1 to 63 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "node name {name:?} has {c:?}: only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// `nodes/<node>/presence`: bound to the agent's lease.
pub fn presence(node: &str) -> String {
    format!("{NODES}{node}/presence")
}

/// `nodes/<node>/report`: the agent's report.
pub fn report(node: &str) -> String {
    format!("{NODES}{node}/report")
}

/// `nodes/<node>/assignment`: what the controller asks of the node.
pub fn assignment(node: &str) -> String {
    format!("{NODES}{node}/assignment")
}

/// `rollouts/<name>/spec`.
pub fn rollout_spec(name: &str) -> String {
    format!("{ROLLOUTS}{name}/spec")
}

/// `rollouts/<name>/status`.
pub fn rollout_status(name: &str) -> String {
    format!("{ROLLOUTS}{name}/status")
}

/// `rollouts/<name>/control/<at>`: one control request, named by its time
/// (nanoseconds since the epoch, zero-padded so keys sort by time).
pub fn rollout_control(name: &str, at: jiff::Timestamp) -> String {
    format!("{ROLLOUTS}{name}/control/{:020}", at.as_nanosecond())
}

/// The records of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKey {
    Presence,
    Report,
    Assignment,
}

/// The records of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutKey {
    Spec,
    Status,
    Control,
}

/// Which node and which of its records a key under [`NODES`] is; `None`
/// for a key that is none of them (written by a newer osctl, or by hand).
pub fn parse_node_key(rel: &str) -> Option<(&str, NodeKey)> {
    let rest = rel.strip_prefix(NODES)?;
    let (node, what) = rest.split_once('/')?;
    let what = match what {
        "presence" => NodeKey::Presence,
        "report" => NodeKey::Report,
        "assignment" => NodeKey::Assignment,
        _ => return None,
    };
    (!node.is_empty()).then_some((node, what))
}

/// Which rollout and which of its records a key under [`ROLLOUTS`] is.
pub fn parse_rollout_key(rel: &str) -> Option<(&str, RolloutKey)> {
    let rest = rel.strip_prefix(ROLLOUTS)?;
    let (name, what) = rest.split_once('/')?;
    let what = match what {
        "spec" => RolloutKey::Spec,
        "status" => RolloutKey::Status,
        w if w
            .strip_prefix("control/")
            .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())) =>
        {
            RolloutKey::Control
        }
        _ => return None,
    };
    (!name.is_empty()).then_some((name, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelt_once_and_read_back() {
        assert_eq!(report("n1"), "nodes/n1/report");
        assert_eq!(parse_node_key(&report("n1")), Some(("n1", NodeKey::Report)));
        assert_eq!(
            parse_node_key(&assignment("a.b")),
            Some(("a.b", NodeKey::Assignment))
        );
        assert_eq!(
            parse_rollout_key(&rollout_status("web")),
            Some(("web", RolloutKey::Status))
        );
        let at: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let control = rollout_control("web", at);
        assert_eq!(control, "rollouts/web/control/01796637600000000000");
        assert_eq!(
            parse_rollout_key(&control),
            Some(("web", RolloutKey::Control))
        );
        for bad in [
            "nodes/",
            "nodes//report",
            "nodes/n1",
            "nodes/n1/x/y",
            "nodes/n1/other",
        ] {
            assert_eq!(parse_node_key(bad), None, "{bad}");
        }
        for bad in [
            "rollouts/web",
            "rollouts/web/control/",
            "rollouts/web/control/x1",
            "rollouts//spec",
        ] {
            assert_eq!(parse_rollout_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_names_are_key_segments() {
        assert_eq!(check_node_name("web-01.example_a"), Ok(()));
        for (bad, why) in [
            ("", "1 to 63 characters"),
            ("a/b", "has '/'"),
            ("a b", "has ' '"),
            (&"x".repeat(64), "1 to 63 characters"),
        ] {
            let err = check_node_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
