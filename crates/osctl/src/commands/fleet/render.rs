//! How `fleet status`, `fleet nodes` and `fleet locks` print: tables for a person, the
//! records themselves as JSON or YAML for programs. Pure functions.

use std::fmt::Write;

use clap::ValueEnum;
use osctl_fleet::admin::{NodeView, RolloutView};
use osctl_fleet::fleetlock::LockView;
use osctl_fleet::model::{HealthState, NodeState, RolloutPhase};
use osctl_fleet::spec::Step;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Yaml,
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

pub fn rollouts(
    rollouts: &[RolloutView],
    nodes: &[NodeView],
    format: Format,
) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(rollouts)? + "\n"),
        Format::Yaml => Ok(yaml_serde::to_string(rollouts)?),
        Format::Human => Ok(rollouts_human(rollouts, nodes)),
    }
}

pub fn nodes(nodes: &[NodeView], format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(nodes)? + "\n"),
        Format::Yaml => Ok(yaml_serde::to_string(nodes)?),
        Format::Human => Ok(nodes_human(nodes)),
    }
}

pub fn locks(locks: &[LockView], format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(locks)? + "\n"),
        Format::Yaml => Ok(yaml_serde::to_string(locks)?),
        Format::Human => Ok(locks_human(locks)),
    }
}

fn locks_human(locks: &[LockView]) -> String {
    let mut out = String::new();
    if locks.is_empty() {
        out.push_str("No FleetLock locks.\n");
        return out;
    }
    let group_w = locks
        .iter()
        .map(|l| l.group.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let id_w = locks.iter().map(|l| l.id.len()).max().unwrap_or(2).max(2);
    writeln!(
        out,
        "{:group_w$}  {:id_w$}  {:24}  {:20}  {:20}  STATE",
        "GROUP", "ID", "POOL", "GRANTED", "DEADLINE"
    )
    .unwrap();
    for l in locks {
        let pool = match &l.rollout {
            Some(r) => format!("rollout {r}"),
            None => "own".to_string(),
        };
        let state = if l.failed {
            "FAILED: not back by its deadline (fleet unlock once it is gone)"
        } else {
            "held"
        };
        writeln!(
            out,
            "{:group_w$}  {:id_w$}  {pool:24}  {:20}  {:20}  {state}",
            l.group,
            l.id,
            l.granted_at.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            l.deadline.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
        .unwrap();
    }
    out
}

fn phase_name(p: RolloutPhase) -> &'static str {
    match p {
        RolloutPhase::Progressing => "progressing",
        RolloutPhase::Paused => "paused",
        RolloutPhase::Waiting => "waiting",
        RolloutPhase::Halted => "halted",
        RolloutPhase::RollingBack => "rolling back",
        RolloutPhase::Completed => "completed",
        RolloutPhase::Aborted => "aborted",
    }
}

fn step_name(step: Option<&Step>) -> String {
    match step {
        None => "the rest".into(),
        Some(Step::Canary(q)) => format!("canary {q}"),
        Some(Step::Pause(None)) => "pause until promoted".into(),
        Some(Step::Pause(Some(d))) => {
            format!("pause {}", humantime::format_duration(*d))
        }
    }
}

fn node_state(s: &NodeState) -> String {
    match s {
        NodeState::Pending => "pending".into(),
        NodeState::Assigned => "downloading".into(),
        NodeState::Staged => "staged, waiting for a slot".into(),
        NodeState::Rebooting { slot_deadline, .. } => {
            format!("rebooting (slot until {slot_deadline})")
        }
        NodeState::Verifying { booted_at } => format!("verifying (booted {booted_at})"),
        NodeState::Updated => "updated".into(),
        NodeState::Failed { reason, .. } => format!("failed: {reason}"),
        NodeState::Reverting { .. } => "reverting".into(),
        NodeState::Reverted => "reverted".into(),
        NodeState::Skipped { governed_by } => format!("governed by rollout {governed_by}"),
    }
}

fn rollouts_human(rollouts: &[RolloutView], nodes: &[NodeView]) -> String {
    let mut out = String::new();
    if rollouts.is_empty() {
        out.push_str("No rollouts.\n");
    }
    for r in rollouts {
        let spec = &r.applied.rollout.spec;
        writeln!(
            out,
            "rollout/{}  (generation {})",
            r.name, r.applied.generation
        )
        .unwrap();
        let Some(st) = &r.status else {
            writeln!(out, "  image     {}", spec.image).unwrap();
            writeln!(
                out,
                "  phase     not started: no controller has picked it up yet"
            )
            .unwrap();
            out.push('\n');
            continue;
        };
        writeln!(out, "  image     {} ({})", spec.image, short(&st.digest)).unwrap();
        let total = spec.steps.len();
        writeln!(
            out,
            "  phase     {}, step {}/{} ({})",
            phase_name(st.phase),
            (st.step + 1).min(total + 1),
            total + 1,
            step_name(spec.steps.get(st.step))
        )
        .unwrap();
        writeln!(
            out,
            "  blocked   {}",
            st.blocked.as_deref().unwrap_or("no: progressing")
        )
        .unwrap();
        writeln!(
            out,
            "  failures  {} (budget {}, then {})",
            st.failures.len(),
            spec.failure_budget,
            match spec.on_failure {
                osctl_fleet::spec::OnFailure::Halt => "halt",
                osctl_fleet::spec::OnFailure::Rollback => "roll back",
            }
        )
        .unwrap();
        for f in &st.failures {
            writeln!(out, "            {}: {} ({})", f.node, f.reason, f.at).unwrap();
        }
        if !r.pending_controls.is_empty() {
            let names: Vec<String> = r
                .pending_controls
                .iter()
                .map(|c| format!("{:?}", c.action).to_lowercase())
                .collect();
            writeln!(out, "  pending   {}", names.join(", ")).unwrap();
        }
        let width = st.nodes.keys().map(String::len).max().unwrap_or(4).max(4);
        writeln!(
            out,
            "  {:width$}  {:12}  {:9}  STATE",
            "NODE", "BOOTED", "HEALTH"
        )
        .unwrap();
        for (name, state) in &st.nodes {
            let node = nodes.iter().find(|n| &n.name == name);
            let report = node.and_then(|n| n.report.as_ref());
            let booted = report.map_or("-", |r| short(&r.booted.digest));
            let health = match (
                node.is_some_and(|n| n.present),
                report.map(|r| r.health.state),
            ) {
                (false, _) => "absent",
                (true, Some(HealthState::Healthy)) => "healthy",
                (true, Some(HealthState::Unhealthy)) => "unhealthy",
                (true, _) => "unknown",
            };
            writeln!(
                out,
                "  {name:width$}  {booted:12}  {health:9}  {}",
                node_state(state)
            )
            .unwrap();
        }
        out.push('\n');
    }
    out
}

fn nodes_human(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    if nodes.is_empty() {
        out.push_str("No nodes.\n");
        return out;
    }
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:7}  {:12}  {:12}  {:12}  ROLLOUT  LABELS",
        "NODE", "PRESENT", "BOOTED", "STAGED", "PHASE"
    )
    .unwrap();
    for n in nodes {
        let present = if n.present { "yes" } else { "no" };
        match (&n.report, &n.report_error) {
            (Some(r), _) => {
                let labels: Vec<String> =
                    r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(
                    out,
                    "{:width$}  {present:7}  {:12}  {:12}  {:12}  {}  {}",
                    n.name,
                    short(&r.booted.digest),
                    r.staged.as_ref().map_or("-", |s| short(&s.digest)),
                    format!("{:?}", r.phase).to_lowercase(),
                    r.rollout.as_deref().unwrap_or("-"),
                    labels.join(",")
                )
                .unwrap();
                if let Some(e) = &r.last_error {
                    writeln!(out, "{:width$}  last error: {e}", "").unwrap();
                }
            }
            (None, Some(e)) => writeln!(
                out,
                "{:width$}  {present:7}  report unreadable: {e}",
                n.name
            )
            .unwrap(),
            (None, None) => writeln!(out, "{:width$}  {present:7}  no report yet", n.name).unwrap(),
        }
    }
    out
}
