//! Prometheus metrics, text exposition format 0.0.4.
//!
//! The model is kube-state-metrics': nothing is counted in memory; every
//! scrape reads the fleet's records from etcd (nodes, rollouts, slots,
//! FleetLock holders) and turns them into gauges, so any controller,
//! standby or FleetLock server answers the same numbers and a restart loses
//! nothing. An unreadable record fails the scrape (fail closed: a gap in the
//! graphs says more than a wrong number). The agent's metrics come from its
//! local state file instead, so they answer while etcd does not.
//!
//! Enumerations (phases, node states) are exported the kube-state-metrics
//! way: one series per possible value, 1 for the current one and 0 for the
//! others, so a query never has to know which values exist.
//!
//! The format is written by hand: `# HELP` and `# TYPE` per family, then
//! `name{label="value"} number` lines, label values escaped (`\\`, `\"`,
//! `\n`). docs/fleet.md "Metrics" lists every metric.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use std::future::Future;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use tokio::net::TcpListener;

use crate::admin::{self, AdminError};
use crate::agent::error_chain;
use crate::agent::state::AgentState;
use crate::etcd::{Etcd, FLEETLOCK_ROOT, Slots};
use crate::fleetlock::{GROUP_LABEL, HOLDER_PREFIX, METRICS};
use crate::http::{self, HttpError, Response};
use crate::model::{NodePhase, NodeState, RolloutPhase};

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The Content-Type of error answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// Every rollout phase, as status spells it.
const ROLLOUT_PHASES: [(RolloutPhase, &str); 7] = [
    (RolloutPhase::Progressing, "progressing"),
    (RolloutPhase::Paused, "paused"),
    (RolloutPhase::Waiting, "waiting"),
    (RolloutPhase::Halted, "halted"),
    (RolloutPhase::RollingBack, "rolling-back"),
    (RolloutPhase::Completed, "completed"),
    (RolloutPhase::Aborted, "aborted"),
];

/// Every node state in a rollout, as status spells it.
const NODE_STATES: [&str; 10] = [
    "pending",
    "assigned",
    "staged",
    "rebooting",
    "verifying",
    "updated",
    "failed",
    "reverting",
    "reverted",
    "skipped",
];

/// Every agent phase, as reports spell it.
const AGENT_PHASES: [(NodePhase, &str); 8] = [
    (NodePhase::Idle, "idle"),
    (NodePhase::Downloading, "downloading"),
    (NodePhase::Staged, "staged"),
    (NodePhase::WaitingSlot, "waiting-slot"),
    (NodePhase::Rebooting, "rebooting"),
    (NodePhase::Verifying, "verifying"),
    (NodePhase::Updated, "updated"),
    (NodePhase::Failed, "failed"),
];

fn node_state_name(state: &NodeState) -> &'static str {
    match state {
        NodeState::Pending => "pending",
        NodeState::Assigned => "assigned",
        NodeState::Staged => "staged",
        NodeState::Rebooting { .. } => "rebooting",
        NodeState::Verifying { .. } => "verifying",
        NodeState::Updated => "updated",
        NodeState::Failed { .. } => "failed",
        NodeState::Reverting { .. } => "reverting",
        NodeState::Reverted => "reverted",
        NodeState::Skipped { .. } => "skipped",
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its HELP and TYPE lines (every family here is a gauge).
    pub fn gauge(&mut self, name: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                self.out.push_str(&escape_label(v));
                self.out.push('"');
            }
            self.out.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The fleet's metrics, read from etcd now.
pub async fn fleet_metrics(etcd: &Etcd, now: SystemTime) -> Result<String, AdminError> {
    let nodes = admin::nodes(etcd).await?;
    let rollouts = admin::rollouts(etcd, None).await?;
    let slot_pools = Slots::new(etcd).all_pools().await?;
    let lock_pools = Slots::with_root(etcd, FLEETLOCK_ROOT).all_pools().await?;
    let mut m = Exposition::new();

    m.gauge(
        "osctl_fleet_nodes",
        "Nodes known to the fleet, by whether their agent's presence lease is alive.",
    );
    let present = nodes.iter().filter(|n| n.present).count() as u64;
    m.sample("osctl_fleet_nodes", &[("state", "present")], present);
    m.sample(
        "osctl_fleet_nodes",
        &[("state", "absent")],
        nodes.len() as u64 - present,
    );

    m.gauge(
        "osctl_fleet_rollout_nodes",
        "Nodes of a rollout in each state of its status.",
    );
    for r in &rollouts {
        let mut counts: BTreeMap<&str, u64> = NODE_STATES.iter().map(|s| (*s, 0)).collect();
        if let Some(status) = &r.status {
            for state in status.nodes.values() {
                *counts.entry(node_state_name(state)).or_default() += 1;
            }
        }
        for state in NODE_STATES {
            m.sample(
                "osctl_fleet_rollout_nodes",
                &[("rollout", &r.name), ("state", state)],
                counts[state],
            );
        }
    }

    m.gauge(
        "osctl_fleet_rollout_phase",
        "1 for a rollout's current phase, 0 for the others (all 0 before the controller has looked at it).",
    );
    for r in &rollouts {
        let current = r.status.as_ref().map(|s| s.phase);
        for (phase, name) in ROLLOUT_PHASES {
            m.sample(
                "osctl_fleet_rollout_phase",
                &[("rollout", &r.name), ("phase", name)],
                u64::from(current == Some(phase)),
            );
        }
    }

    m.gauge(
        "osctl_fleet_rollout_failures",
        "Failures a rollout has counted against its failure budget.",
    );
    for r in &rollouts {
        let failures = r.status.as_ref().map_or(0, |s| s.failures.len());
        m.sample(
            "osctl_fleet_rollout_failures",
            &[("rollout", &r.name)],
            failures as u64,
        );
    }

    m.gauge(
        "osctl_fleet_slot_holders",
        "Reboot slots held in a rollout's pool (nodes and FleetLock clients).",
    );
    for (pool, holders) in &slot_pools {
        m.sample(
            "osctl_fleet_slot_holders",
            &[("pool", pool)],
            holders.len() as u64,
        );
    }

    // FleetLock locks by group, wherever they are held: in the group's own
    // pool, and as `fleetlock.<id>` in the pools of the rollouts with
    // `pool: <group>` (held in whichever pool governed the group when they
    // were taken; docs/fleet.md). (held, failed) per group.
    let mut locks: BTreeMap<String, (u64, u64)> = lock_pools
        .iter()
        .map(|(group, holders)| {
            let failed = holders.iter().filter(|h| h.expired(now)).count() as u64;
            (group.clone(), (holders.len() as u64, failed))
        })
        .collect();
    for r in &rollouts {
        let Some(group) = r.applied.rollout.spec.match_labels.get(GROUP_LABEL) else {
            continue;
        };
        let counts = locks.entry(group.clone()).or_default();
        for h in slot_pools.get(&r.name).into_iter().flatten() {
            if h.name.starts_with(HOLDER_PREFIX) {
                counts.0 += 1;
                counts.1 += u64::from(h.expired(now));
            }
        }
    }
    m.gauge(
        "osctl_fleet_fleetlock_holders",
        "FleetLock locks held, by group (in the group's own pool or in a rollout's pool).",
    );
    for (group, (held, _)) in &locks {
        m.sample("osctl_fleet_fleetlock_holders", &[("group", group)], *held);
    }
    m.gauge(
        "osctl_fleet_fleetlock_failures",
        "FleetLock locks whose deadline passed before their holder called steady-state; each still takes a slot.",
    );
    for (group, (_, failed)) in &locks {
        m.sample(
            "osctl_fleet_fleetlock_failures",
            &[("group", group)],
            *failed,
        );
    }
    Ok(m.finish())
}

/// The agent's metrics, from its state file and the booted image's digest
/// (`""` when nothing osctl deployed is booted).
pub fn agent_metrics(state: &AgentState, booted_digest: &str) -> String {
    let mut m = Exposition::new();
    m.gauge(
        "osctl_fleet_agent_phase",
        "1 for the agent's current phase, 0 for the others.",
    );
    for (phase, name) in AGENT_PHASES {
        m.sample(
            "osctl_fleet_agent_phase",
            &[("phase", name)],
            u64::from(state.phase == phase),
        );
    }
    m.gauge(
        "osctl_fleet_agent_info",
        "Always 1; the labels say which node this agent is and what it booted.",
    );
    m.sample(
        "osctl_fleet_agent_info",
        &[("node", &state.node), ("booted_digest", booted_digest)],
        1,
    );
    m.finish()
}

/// Serves `GET /metrics` on `listener`, each scrape answered by `scrape`
/// (an error becomes a 500 with its text: the scrape fails, visibly).
pub async fn serve<F, Fut>(listener: TcpListener, scrape: F) -> Result<(), HttpError>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let scrape = Arc::new(scrape);
    http::serve(listener, move |req| {
        let scrape = Arc::clone(&scrape);
        async move {
            if req.path != METRICS {
                return Response::with(
                    StatusCode::NOT_FOUND,
                    TEXT,
                    format!("no endpoint {}: only {METRICS}\n", req.path).into_bytes(),
                );
            }
            if req.method != Method::GET {
                return Response::with(
                    StatusCode::METHOD_NOT_ALLOWED,
                    TEXT,
                    format!("{METRICS} takes GET, not {}\n", req.method).into_bytes(),
                );
            }
            match scrape().await {
                Ok(text) => Response::with(StatusCode::OK, CONTENT_TYPE, text.into_bytes()),
                Err(e) => Response::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("{e}\n").into_bytes(),
                ),
            }
        }
    })
    .await
}

/// Serves the fleet's metrics from `etcd` on `listener` (the controller's
/// `--metrics`).
pub async fn serve_fleet(etcd: Etcd, listener: TcpListener) -> Result<(), HttpError> {
    serve(listener, move || {
        let etcd = etcd.clone();
        async move {
            fleet_metrics(&etcd, SystemTime::now())
                .await
                .map_err(|e| error_chain(&e))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_and_spells_samples() {
        let mut m = Exposition::new();
        m.gauge("x_total", "a \\ help\nline");
        m.sample("x_total", &[], 3);
        m.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "")], 0);
        assert_eq!(
            m.finish(),
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total gauge\nx_total 3\nx_total{a=\"q\\\"b\\\\c\\nd\",b=\"\"} 0\n"
        );
    }

    #[test]
    fn every_enumeration_is_spelt_as_serde_spells_it() {
        for (phase, name) in ROLLOUT_PHASES {
            assert_eq!(serde_json::to_value(phase).unwrap(), name);
        }
        for (phase, name) in AGENT_PHASES {
            assert_eq!(serde_json::to_value(phase).unwrap(), name);
        }
        let state = NodeState::Failed {
            reason: "r".into(),
            at: "2026-12-07T10:00:00Z".parse().unwrap(),
            boot_id: None,
        };
        assert_eq!(
            serde_json::to_value(&state).unwrap()["state"],
            node_state_name(&state)
        );
        assert!(NODE_STATES.contains(&node_state_name(&state)));
    }

    #[test]
    fn agent_metrics_name_the_phase_and_the_booted_digest() {
        let mut state = AgentState::new("web-1");
        state.phase = NodePhase::WaitingSlot;
        let text = agent_metrics(&state, "sha256:aa");
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "osctl_fleet_agent_phase{phase=\"idle\"} 0",
                "osctl_fleet_agent_phase{phase=\"downloading\"} 0",
                "osctl_fleet_agent_phase{phase=\"staged\"} 0",
                "osctl_fleet_agent_phase{phase=\"waiting-slot\"} 1",
                "osctl_fleet_agent_phase{phase=\"rebooting\"} 0",
                "osctl_fleet_agent_phase{phase=\"verifying\"} 0",
                "osctl_fleet_agent_phase{phase=\"updated\"} 0",
                "osctl_fleet_agent_phase{phase=\"failed\"} 0",
                "osctl_fleet_agent_info{node=\"web-1\",booted_digest=\"sha256:aa\"} 1",
            ]
        );
    }
}
