//! plan() against a tiny in-test fleet: nodes that stage what they are
//! assigned, reboot only while they hold a slot, and come back updated,
//! fallen back, unhealthy or not at all.

use std::collections::BTreeMap;

use super::*;
use crate::model::{Health, NodePhase};

const OLD: &str = "sha256:0ld";
const NEW: &str = "sha256:n3w";
const NAME: &str = "web";
/// 2026-12-07 is a Monday.
const START: &str = "2026-12-07T10:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

fn rollout(extra: &str) -> Rollout {
    Rollout::parse(&format!(
        "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {NAME}}}\nspec:\n  image: r.example/os:v2\n  selector: {{matchLabels: {{pool: web}}}}\n{extra}"
    ))
    .expect("test spec parses")
}

/// How a node behaves when it reboots.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Good,
    /// The boot loader falls back to the old image.
    FallBack,
    /// Boots the new image and fails its health checks.
    Unhealthy,
    /// Never comes back.
    Hang,
}

#[derive(Debug, Clone)]
struct SimNode {
    behaviour: Behaviour,
    present: bool,
    booted: String,
    staged: Option<String>,
    boot: u32,
    health: HealthState,
    health_since: Timestamp,
    assignment: Option<Assignment>,
    slot: Option<Slot>,
    report_at: Timestamp,
    /// The agent gave up on its assignment with this error.
    error: Option<String>,
    /// An image index digest and the manifest of this node's platform it
    /// resolves to: what the node stages when assigned the index.
    index: Option<(String, String)>,
}

impl SimNode {
    /// The manifest the node pulls for `digest`.
    fn manifest(&self, digest: &str) -> String {
        match &self.index {
            Some((index, manifest)) if index == digest => manifest.clone(),
            _ => digest.to_string(),
        }
    }
}

struct Sim {
    rollout: Rollout,
    nodes: BTreeMap<String, SimNode>,
    status: Option<RolloutStatus>,
    controls: Vec<ControlRequest>,
    /// The etcd revision the next control request is created at.
    revision: i64,
    now: Timestamp,
    reboots: usize,
}

impl Sim {
    fn new(extra: &str, n: usize) -> Sim {
        let now = ts(START);
        let nodes = (0..n)
            .map(|i| {
                let node = SimNode {
                    behaviour: Behaviour::Good,
                    present: true,
                    booted: OLD.into(),
                    staged: None,
                    boot: 0,
                    health: HealthState::Healthy,
                    health_since: ts("2026-12-01T00:00:00Z"),
                    assignment: None,
                    slot: None,
                    report_at: now,
                    error: None,
                    index: None,
                };
                (format!("node-{i:02}"), node)
            })
            .collect();
        Sim {
            rollout: rollout(extra),
            nodes,
            status: None,
            controls: Vec::new(),
            revision: 100,
            now,
            reboots: 0,
        }
    }

    fn node(&mut self, name: &str) -> &mut SimNode {
        self.nodes.get_mut(name).expect("test node exists")
    }

    fn input(&self) -> PlanInput {
        let nodes = self
            .nodes
            .iter()
            .map(|(name, n)| NodeInput {
                name: name.clone(),
                present: n.present,
                report: Some(report(name, n)),
                assignment: n.assignment.clone(),
                slot: n.slot.clone(),
                governed_by: None,
            })
            .collect();
        PlanInput {
            rollout: self.rollout.clone(),
            generation: 1,
            image: format!("r.example/os@{NEW}"),
            digest: NEW.into(),
            status: self.status.clone(),
            controls: self.controls.clone(),
            nodes,
            other_holders: Vec::new(),
            unreadable: Vec::new(),
            reboot_deadline: 10 * MINUTE,
        }
    }

    /// One controller round: plan, check the invariants, apply the writes.
    fn round(&mut self) -> Plan {
        let input = self.input();
        let plan = plan(&input, self.now);
        let max = self.rollout.spec.max_unavailable.resolve(self.nodes.len());
        for a in &plan.actions {
            match a {
                Action::Assign { node, assignment } => {
                    self.node(node).assignment = Some(assignment.clone())
                }
                Action::ClearAssignment { node } => self.node(node).assignment = None,
                Action::GrantSlot {
                    node,
                    deadline,
                    boot_id,
                } => {
                    let n = self.node(node);
                    let assigned = n.assignment.as_ref().map(|a| n.manifest(&a.digest));
                    assert!(n.slot.is_none(), "{node}: second slot");
                    assert_eq!(n.staged, assigned, "{node}: slot before staging");
                    assert_eq!(*boot_id, format!("{node}-boot-{}", n.boot));
                    n.slot = Some(Slot {
                        deadline: *deadline,
                        boot_id: Some(boot_id.clone()),
                    });
                }
                Action::ReleaseSlot { node } => self.node(node).slot = None,
            }
        }
        let down = self
            .nodes
            .values()
            .filter(|n| !n.present || n.health != HealthState::Healthy || n.slot.is_some())
            .count();
        assert!(
            down <= max,
            "{down} nodes down > maxUnavailable {max} at {}",
            self.now
        );
        let stored = RolloutStatus::from_json(&plan.status.to_json()).expect("status reads back");
        assert_eq!(stored, plan.status, "the status survives etcd");
        self.status = Some(plan.status.clone());
        plan
    }

    /// Time passes; agents act: stage what is assigned, reboot when they
    /// hold a slot (and only then), slots expire.
    fn tick(&mut self, d: Duration) {
        self.now = later(self.now, d);
        let now = self.now;
        let mut reboots = 0;
        for n in self.nodes.values_mut() {
            if n.slot.as_ref().is_some_and(|s| s.deadline <= now) {
                n.slot = None;
            }
            let Some(a) = n.assignment.clone() else {
                continue;
            };
            let want = n.manifest(&a.digest);
            if n.booted != want && n.staged.as_deref() != Some(want.as_str()) {
                n.staged = Some(want);
                n.report_at = now;
                continue;
            }
            if n.slot.is_none() || n.staged.as_deref() != Some(want.as_str()) || !n.present {
                continue;
            }
            reboots += 1;
            let staged = n.staged.take().expect("checked above");
            match n.behaviour {
                Behaviour::Hang => {
                    n.present = false;
                    continue;
                }
                Behaviour::FallBack => {}
                Behaviour::Good => n.booted = staged,
                Behaviour::Unhealthy => n.booted = staged,
            }
            n.boot += 1;
            n.health = if n.behaviour == Behaviour::Unhealthy {
                HealthState::Unhealthy
            } else {
                HealthState::Healthy
            };
            n.health_since = now;
            n.report_at = now;
        }
        self.reboots += reboots;
    }

    /// An admin's control request, stamped `at` by the admin's clock and
    /// created in etcd after every one before it.
    fn control(&mut self, action: ControlAction, at: Timestamp) {
        self.revision += 1;
        self.controls.push(ControlRequest {
            revision: self.revision,
            control: Control {
                version: Version,
                action,
                at,
            },
        });
    }

    fn run_until(&mut self, done: impl Fn(&RolloutStatus) -> bool, rounds: usize) -> Plan {
        for _ in 0..rounds {
            let plan = self.round();
            if done(&plan.status) {
                return plan;
            }
            self.tick(MINUTE);
        }
        panic!("not done after {rounds} rounds: {:?}", self.status);
    }
}

fn report(name: &str, n: &SimNode) -> NodeReport {
    let image = |digest: &str| ImageState {
        image: format!("r.example/os@{digest}"),
        digest: digest.into(),
        deployment: format!("{name}-{digest}"),
        resolved_from: n
            .index
            .as_ref()
            .filter(|(_, manifest)| manifest == digest)
            .map(|(index, _)| index.clone()),
    };
    NodeReport {
        version: Version,
        labels: BTreeMap::from([("pool".into(), "web".into())]),
        booted: image(&n.booted),
        staged: n.staged.as_deref().map(image),
        phase: if n.error.is_some() {
            NodePhase::Failed
        } else if n.staged.is_some() {
            NodePhase::WaitingSlot
        } else {
            NodePhase::Idle
        },
        health: Health {
            state: n.health,
            since: n.health_since,
        },
        boot_id: format!("{name}-boot-{}", n.boot),
        rollout: n.assignment.as_ref().map(|a| a.rollout.clone()),
        last_error: n.error.clone(),
        updated_at: n.report_at,
    }
}

fn states(st: &RolloutStatus, f: impl Fn(&NodeState) -> bool) -> Vec<String> {
    st.nodes
        .iter()
        .filter(|(_, s)| f(s))
        .map(|(n, _)| n.clone())
        .collect()
}

#[test]
fn twenty_nodes_walk_to_completion_within_max_unavailable() {
    let mut sim = Sim::new(
        "  maxUnavailable: 3\n  steps:\n    - canary: 1\n    - pause: {duration: 10m}\n    - canary: 25%\n  healthGate: {minHealthySeconds: 120}\n",
        20,
    );
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Completed, 500);
    assert!(plan.status.blocked.is_none());
    assert_eq!(sim.reboots, 20);
    assert!(
        sim.nodes
            .values()
            .all(|n| n.booted == NEW && n.slot.is_none())
    );
    assert_eq!(states(&plan.status, |s| *s == NodeState::Updated).len(), 20);
    assert_eq!(plan.status.previous.len(), 20);
    assert_eq!(plan.status.previous["node-07"].digest, OLD);
}

#[test]
fn first_round_assigns_the_canary_only() {
    let mut sim = Sim::new(
        "  maxUnavailable: 3\n  steps:\n    - canary: 2\n    - pause: {}\n",
        6,
    );
    let plan = sim.round();
    let assigned: Vec<&str> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::Assign { node, assignment } => {
                assert_eq!(assignment.kind, AssignmentKind::Update);
                assert_eq!(assignment.digest, NEW);
                assert_eq!(assignment.image, format!("r.example/os@{NEW}"));
                node.as_str()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(assigned, ["node-00", "node-01"]);
    // Nothing else can move until they stage.
    assert_eq!(plan.status.blocked, None);
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("waiting for 2 nodes to stage")
    );
}

#[test]
fn canary_pause_and_promote() {
    let mut sim = Sim::new(
        "  maxUnavailable: 2\n  steps:\n    - canary: 1\n    - pause: {}\n  healthGate: {minHealthySeconds: 60}\n",
        5,
    );
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Paused, 50);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("paused until promoted (step 2)")
    );
    assert_eq!(
        states(&plan.status, |s| *s == NodeState::Updated),
        ["node-00"]
    );
    // Paused it stays, however long.
    sim.tick(600 * MINUTE);
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.status.phase, RolloutPhase::Paused);
    sim.control(ControlAction::Promote, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.step, 2);
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Assign { .. }))
            .count(),
        4
    );
    // Read again, the same promote is not applied twice.
    let plan = sim.round();
    assert_eq!(plan.status.step, 2);
    sim.run_until(|s| s.phase == RolloutPhase::Completed, 100);
}

#[test]
fn a_timed_pause_resumes_by_itself() {
    let mut sim = Sim::new(
        "  maxUnavailable: 1\n  steps:\n    - canary: 1\n    - pause: {duration: 30m}\n",
        3,
    );
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Paused, 50);
    let blocked = plan.status.blocked.expect("a pause says so");
    assert!(blocked.starts_with("paused for 30m until "), "{blocked}");
    assert!(blocked.ends_with(" UTC (step 2)"), "{blocked}");
    let plan = sim.run_until(|s| s.phase != RolloutPhase::Paused, 40);
    assert_eq!(plan.status.step, 2);
    sim.run_until(|s| s.phase == RolloutPhase::Completed, 100);
}

#[test]
fn pause_and_resume_controls() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 3);
    sim.control(ControlAction::Pause, sim.now);
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.status.phase, RolloutPhase::Paused);
    assert_eq!(plan.status.blocked.as_deref(), Some("paused"));
    sim.tick(MINUTE);
    sim.control(ControlAction::Resume, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Progressing);
    assert_eq!(plan.actions.len(), 3);
}

#[test]
fn slots_only_inside_windows_staging_any_time() {
    // Monday 10:00 UTC; the window is Sat/Sun 02:00-05:00 in Berlin.
    let mut sim = Sim::new(
        "  maxUnavailable: 2\n  windows:\n    - {days: [Sat, Sun], start: \"02:00\", end: \"05:00\", timeZone: Europe/Berlin}\n",
        4,
    );
    let plan = sim.round();
    assert_eq!(plan.actions.len(), 4, "staging is allowed outside windows");
    sim.tick(MINUTE);
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.status.phase, RolloutPhase::Waiting);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("waiting for window Sat 02:00 Europe/Berlin")
    );
    // Waiting for a window is not a stall: days later, no deadline halt.
    sim.now = ts("2026-12-12T01:00:00Z"); // Sat 02:00 Berlin
    let plan = sim.round();
    let grants: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::GrantSlot { node, deadline, .. } => Some((node.as_str(), *deadline)),
            _ => None,
        })
        .collect();
    assert_eq!(
        grants,
        [
            ("node-00", ts("2026-12-12T01:10:00Z")),
            ("node-01", ts("2026-12-12T01:10:00Z"))
        ]
    );
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("2 unavailable ≥ maxUnavailable 2")
    );
}

#[test]
fn failures_over_budget_halt() {
    let mut sim = Sim::new("  maxUnavailable: 2\n  failureBudget: 1\n", 6);
    sim.node("node-00").behaviour = Behaviour::FallBack;
    sim.node("node-01").behaviour = Behaviour::Unhealthy;
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Halted, 30);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("halted: 2 failures > budget 1")
    );
    let reasons: Vec<(&str, &str)> = plan
        .status
        .failures
        .iter()
        .map(|f| (f.node.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "node-00",
                "came back on sha256:0ld instead of sha256:n3w (the boot loader fell back)"
            ),
            ("node-01", "unhealthy after the reboot"),
        ]
    );
    // Halted: no new slot, whatever happens next.
    for _ in 0..20 {
        sim.tick(MINUTE);
        let plan = sim.round();
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::GrantSlot { .. } | Action::Assign { .. })),
            "{:?}",
            plan.actions
        );
        assert_eq!(plan.status.phase, RolloutPhase::Halted);
    }
    // And nothing stays assigned where it was not rebooted into: an
    // unrelated reboot must not boot the image that failed. (The failed
    // nodes keep theirs: it records what failed there.)
    let status = sim.status.clone().expect("a status");
    let assigned: Vec<&String> = sim
        .nodes
        .iter()
        .filter(|(name, n)| {
            n.assignment.is_some()
                && n.booted != NEW
                && !matches!(status.nodes.get(*name), Some(NodeState::Failed { .. }))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(assigned.is_empty(), "still assigned: {assigned:?}");
}

#[test]
fn a_node_that_fell_back_is_never_assigned_again() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 5\n", 3);
    sim.node("node-01").behaviour = Behaviour::FallBack;
    let mut assigned_after_failure = 0;
    for _ in 0..100 {
        let plan = sim.round();
        let failed = matches!(
            plan.status.nodes.get("node-01"),
            Some(NodeState::Failed { .. })
        );
        if failed {
            assigned_after_failure += plan
                .actions
                .iter()
                .filter(|a| matches!(a, Action::Assign { node, .. } if node == "node-01"))
                .count();
        }
        if plan.status.phase == RolloutPhase::Completed {
            break;
        }
        sim.tick(MINUTE);
    }
    let st = sim.status.clone().expect("planned");
    assert_eq!(st.phase, RolloutPhase::Completed);
    assert_eq!(assigned_after_failure, 0);
    assert_eq!(sim.node("node-01").booted, OLD);
    assert_eq!(st.failures.len(), 1);
}

#[test]
fn an_expired_slot_is_a_failure_and_frees_no_capacity() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 3\n", 3);
    sim.node("node-00").behaviour = Behaviour::Hang;
    // Assign, stage, grant node-00 its slot; it goes down and never returns.
    let plan = sim.run_until(
        |s| matches!(s.nodes.get("node-00"), Some(NodeState::Failed { .. })),
        30,
    );
    assert_eq!(plan.status.failures[0].reason, REASON_NO_RETURN);
    assert_eq!(plan.status.failures[0].node, "node-00");
    // The others stay staged: node-00 is still down.
    for _ in 0..30 {
        sim.tick(MINUTE);
        let plan = sim.round();
        assert_eq!(plan.actions, []);
        assert_eq!(
            plan.status.blocked.as_deref(),
            Some("1 unavailable ≥ maxUnavailable 1")
        );
    }
    // It comes back (a new boot, healthy, on the old image): capacity returns.
    let n = sim.node("node-00");
    n.present = true;
    n.boot += 1;
    let plan = sim.round();
    assert_eq!(
        plan.actions,
        [Action::GrantSlot {
            node: "node-01".into(),
            deadline: later(sim.now, 10 * MINUTE),
            boot_id: "node-01-boot-0".into(),
        }]
    );
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Completed, 60);
    assert!(matches!(
        plan.status.nodes["node-00"],
        NodeState::Failed { .. }
    ));
}

#[test]
fn rollback_reverts_updated_nodes_within_max_unavailable() {
    let mut sim = Sim::new(
        "  maxUnavailable: 2\n  failureBudget: 0\n  onFailure: rollback\n  steps:\n    - canary: 4\n",
        8,
    );
    sim.node("node-04").behaviour = Behaviour::Unhealthy;
    // The canary goes through; node-04 fails after the canary step.
    sim.run_until(|s| s.phase == RolloutPhase::RollingBack, 100);
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Halted, 200);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("halted: rolled back after 1 failure > budget 0")
    );
    for (name, n) in &sim.nodes {
        if name == "node-04" {
            assert_eq!(n.booted, NEW, "the failed node is left to its own fallback");
        } else {
            assert_eq!(n.booted, OLD, "{name} went back");
        }
    }
    // node-05 rebooted alongside node-04 (maxUnavailable 2) and was
    // updated before the failure; node-06 and node-07 had only staged.
    assert_eq!(
        states(&plan.status, |s| *s == NodeState::Reverted),
        ["node-00", "node-01", "node-02", "node-03", "node-05"]
    );
    assert_eq!(
        states(&plan.status, |s| *s == NodeState::Pending),
        ["node-06", "node-07"]
    );
    assert!(sim.nodes.values().all(|n| n.slot.is_none()));
}

#[test]
fn undo_rolls_back_and_abort_clears_unstarted_assignments() {
    let mut sim = Sim::new(
        "  maxUnavailable: 1\n  steps:\n    - canary: 1\n    - pause: {}\n",
        3,
    );
    sim.run_until(|s| s.phase == RolloutPhase::Paused, 50);
    sim.control(ControlAction::Undo, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::RollingBack);
    let Action::Assign { node, assignment } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(
        (node.as_str(), assignment.kind, assignment.digest.as_str()),
        ("node-00", AssignmentKind::Revert, OLD)
    );
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Halted, 50);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("halted: rolled back (undo)")
    );

    let mut sim = Sim::new("  maxUnavailable: 1\n", 3);
    sim.round();
    sim.tick(MINUTE);
    sim.control(ControlAction::Abort, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Aborted);
    assert_eq!(plan.status.blocked.as_deref(), Some("aborted"));
    assert_eq!(
        plan.actions,
        ["node-00", "node-01", "node-02"].map(|n| Action::ClearAssignment { node: n.into() })
    );
}

#[test]
fn progress_deadline_halts_a_stalled_rollout() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  progressDeadline: 30m\n", 2);
    // Nobody ever stages: the agents are stuck.
    sim.round();
    sim.now = later(sim.now, 31 * MINUTE);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Halted);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("halted: no node finished within progressDeadline 30m")
    );
    sim.control(ControlAction::Resume, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Progressing);
}

#[test]
fn another_rollouts_nodes_are_skipped_and_shown() {
    let sim = Sim::new("  maxUnavailable: 1\n", 3);
    let mut input = sim.input();
    input.nodes[1].governed_by = Some("db-canary".into());
    let plan = plan(&input, sim.now);
    assert_eq!(
        plan.status.nodes["node-01"],
        NodeState::Skipped {
            governed_by: "db-canary".into()
        }
    );
    let assigned: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(assigned, ["node-00", "node-02"]);
}

#[test]
fn unavailable_nodes_use_up_capacity() {
    let mut sim = Sim::new("  maxUnavailable: 3\n", 6);
    sim.round();
    sim.tick(MINUTE); // all staged
    sim.node("node-03").present = false;
    sim.node("node-04").health = HealthState::Unhealthy;
    sim.node("node-05").health = HealthState::Unknown;
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert_eq!(
        plan.status.blocked.as_deref(),
        Some("3 unavailable ≥ maxUnavailable 3")
    );
    // An unreadable report is unavailable too.
    sim.node("node-05").health = HealthState::Healthy;
    let mut input = sim.input();
    input.nodes[5].report = None;
    let planned = super::plan(&input, sim.now);
    assert_eq!(planned.actions, []);
    assert_eq!(
        planned.status.blocked.as_deref(),
        Some("3 unavailable ≥ maxUnavailable 3")
    );
}

#[test]
fn a_lost_status_write_is_recovered_from_the_slot() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 2);
    sim.round();
    sim.tick(MINUTE); // staged
    let before = sim.status.clone();
    let plan = sim.round();
    assert!(
        matches!(plan.actions[..], [Action::GrantSlot { .. }]),
        "{:?}",
        plan.actions
    );
    // The slot was written, the status was not: the next round must see
    // node-00 rebooting from the slot, and grant nothing more.
    sim.status = before;
    let plan = sim.round();
    assert_eq!(plan.actions, []);
    assert!(matches!(
        plan.status.nodes["node-00"],
        NodeState::Rebooting { .. }
    ));
    assert_eq!(plan.status.nodes["node-01"], NodeState::Staged);
    sim.run_until(|s| s.phase == RolloutPhase::Completed, 30);
}

#[test]
fn a_node_on_its_old_boot_keeps_its_slot_until_the_deadline() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 1\n", 1);
    sim.round();
    sim.tick(MINUTE);
    sim.round(); // slot granted
    // The agent has not rebooted yet: same boot id, slot still there.
    for _ in 0..9 {
        sim.now = later(sim.now, MINUTE);
        let plan = sim.round();
        assert_eq!(plan.actions, []);
        assert!(matches!(
            plan.status.nodes["node-00"],
            NodeState::Rebooting { .. }
        ));
        assert_eq!(
            plan.status.blocked.as_deref(),
            Some("waiting for 1 node to reboot and stay healthy for 60s")
        );
    }
    sim.tick(MINUTE); // the slot expires
    let plan = sim.round();
    assert!(matches!(
        &plan.status.nodes["node-00"],
        NodeState::Failed { reason, boot_id: Some(b), .. }
            if reason == REASON_NO_RETURN && b == "node-00-boot-0"
    ));
}

#[test]
fn a_new_image_restarts_the_pool_and_reverts_to_the_image_it_replaces() {
    let mut sim = Sim::new("  maxUnavailable: 2\n", 3);
    sim.run_until(|s| s.phase == RolloutPhase::Completed, 30);
    let mut input = sim.input();
    input.generation = 2;
    input.digest = "sha256:n3w3r".into();
    input.image = "r.example/os@sha256:n3w3r".into();
    let planned = super::plan(&input, sim.now);
    assert_eq!(planned.status.generation, 2);
    assert_eq!(planned.status.previous["node-00"].digest, NEW);
    assert_eq!(
        states(&planned.status, |s| *s == NodeState::Assigned),
        ["node-00", "node-01", "node-02"]
    );
    // Another generation with the same image keeps the nodes' progress.
    let mut input = sim.input();
    input.generation = 2;
    let planned = super::plan(&input, sim.now);
    assert_eq!(planned.status.phase, RolloutPhase::Completed);
    assert_eq!(planned.actions, []);
}

#[test]
fn an_agent_that_gives_up_fails_its_node_with_its_error() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 1\n", 2);
    sim.round();
    sim.node("node-01").error = Some("no space to stage: 1.2 GiB needed, 300 MiB free".into());
    let plan = sim.round();
    assert_eq!(
        plan.status
            .failures
            .iter()
            .map(|f| (f.node.as_str(), f.reason.as_str()))
            .collect::<Vec<_>>(),
        [("node-01", "no space to stage: 1.2 GiB needed, 300 MiB free")]
    );
    // Not assigned again, even though its assignment is still there.
    assert_eq!(plan.actions, []);
}

#[test]
fn a_node_granted_its_reboot_before_an_abort_finishes_and_frees_its_slot() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 3);
    sim.run_until(
        |s| states(s, |n| matches!(n, NodeState::Rebooting { .. })).len() == 1,
        20,
    );
    let rebooting = states(sim.status.as_ref().unwrap(), |n| {
        matches!(n, NodeState::Rebooting { .. })
    })
    .remove(0);
    // The abort arrives while the node holds its slot; it reboots anyway
    // (it had permission), and the aborted rollout still follows it.
    sim.control(ControlAction::Abort, sim.now);
    sim.round();
    sim.tick(MINUTE);
    let plan = sim.run_until(
        |s| matches!(s.nodes.get(&rebooting), Some(NodeState::Updated)),
        20,
    );
    assert_eq!(plan.status.phase, RolloutPhase::Aborted);
    assert!(
        sim.nodes[&rebooting].slot.is_none(),
        "its slot was released"
    );
    let others: Vec<_> = sim
        .nodes
        .iter()
        .filter(|(name, _)| **name != rebooting)
        .map(|(name, n)| (name.clone(), n.assignment.is_some(), n.booted == NEW))
        .collect();
    assert!(
        others.iter().all(|(_, assigned, new)| !assigned && !new),
        "the others were withdrawn and never rebooted: {others:?}"
    );
}

#[test]
fn reverts_pin_the_previous_image_by_digest() {
    for (image, want) in [
        ("r.example/os:v1", "r.example/os@sha256:aa"),
        ("r.example:5000/os:v1", "r.example:5000/os@sha256:aa"),
        ("r.example:5000/team/os", "r.example:5000/team/os@sha256:aa"),
        ("r.example/os@sha256:bb", "r.example/os@sha256:aa"),
        ("r.example/os:v1@sha256:bb", "r.example/os@sha256:aa"),
    ] {
        assert_eq!(super::pin(image, "sha256:aa"), want, "{image}");
    }
}

#[test]
fn an_image_index_completes_on_each_nodes_platform_manifest() {
    // The rollout's digest is an image index's; every node stages and
    // boots the manifest of its own platform and says which index that
    // came from.
    const AMD64: &str = "sha256:n3w-amd64";
    const ARM64: &str = "sha256:n3w-arm64";
    let mut sim = Sim::new(
        "  maxUnavailable: 2\n  healthGate: {minHealthySeconds: 60}\n",
        4,
    );
    for (i, n) in sim.nodes.values_mut().enumerate() {
        let manifest = if i % 2 == 0 { AMD64 } else { ARM64 };
        n.index = Some((NEW.into(), manifest.into()));
    }
    let plan = sim.run_until(|s| s.phase == RolloutPhase::Completed, 30);
    assert_eq!(states(&plan.status, |s| *s == NodeState::Updated).len(), 4);
    let booted: Vec<(&str, &str)> = sim
        .nodes
        .iter()
        .map(|(name, n)| (name.as_str(), n.booted.as_str()))
        .collect();
    assert_eq!(
        booted,
        [
            ("node-00", AMD64),
            ("node-01", ARM64),
            ("node-02", AMD64),
            ("node-03", ARM64)
        ]
    );
    assert_eq!(sim.reboots, 4);
    assert!(
        plan.status.failures.is_empty(),
        "{:?}",
        plan.status.failures
    );
    // A manifest that does not say it came from the index is another image.
    let mut input = sim.input();
    input.status = None;
    for n in &mut input.nodes {
        if let Some(r) = &mut n.report {
            r.booted.resolved_from = None;
        }
    }
    let planned = super::plan(&input, sim.now);
    assert_eq!(
        states(&planned.status, |s| *s == NodeState::Assigned),
        ["node-00", "node-01", "node-02", "node-03"]
    );
}

#[test]
fn a_new_image_withdraws_assignments_not_rebooted_into() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 3);
    sim.round(); // all three assigned
    sim.tick(MINUTE); // all three staged
    let plan = sim.round();
    assert!(
        matches!(&plan.actions[..], [Action::GrantSlot { node, .. }] if node == "node-00"),
        "{:?}",
        plan.actions
    );
    // A new generation names another image, with a canary of one: node-00
    // is mid-reboot (it keeps its slot and its assignment), node-01 gets
    // the new image, node-02 must not keep the old one staged.
    sim.rollout = rollout("  maxUnavailable: 1\n  steps:\n    - canary: 1\n    - pause: {}\n");
    let mut input = sim.input();
    input.generation = 2;
    input.digest = "sha256:n3w3r".into();
    input.image = "r.example/os@sha256:n3w3r".into();
    let planned = super::plan(&input, sim.now);
    let actions: Vec<(&str, Option<&str>)> = planned
        .actions
        .iter()
        .map(|a| match a {
            Action::Assign { node, assignment } => {
                (node.as_str(), Some(assignment.digest.as_str()))
            }
            Action::ClearAssignment { node } => (node.as_str(), None),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        actions,
        [("node-01", Some("sha256:n3w3r")), ("node-02", None)]
    );
}

#[test]
fn controls_apply_in_etcd_order_not_by_the_admins_clock() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 3);
    sim.control(ControlAction::Pause, sim.now);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Paused);
    assert_eq!(plan.status.last_control_revision, Some(101));
    // A second admin's clock is a minute behind: its abort, made after the
    // pause, is stamped before it. It is still applied.
    sim.tick(MINUTE);
    let behind = ts("2026-12-07T09:59:00Z");
    sim.control(ControlAction::Abort, behind);
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Aborted);
    assert_eq!(plan.status.last_control_revision, Some(102));
    assert_eq!(plan.status.last_control_at, Some(behind));
    // Read again (the delete not seen yet), neither applies twice: a
    // resume created before the abort stays ignored.
    sim.controls.insert(
        0,
        ControlRequest {
            revision: 99,
            control: Control {
                version: Version,
                action: ControlAction::Resume,
                at: sim.now,
            },
        },
    );
    let plan = sim.round();
    assert_eq!(plan.status.phase, RolloutPhase::Aborted);
    assert_eq!(plan.status.last_control_revision, Some(102));
}

#[test]
fn fleetlock_holders_and_unreadable_nodes_count_as_unavailable() {
    let mut sim = Sim::new("  maxUnavailable: 2\n", 4);
    sim.round();
    sim.tick(MINUTE); // all staged
    let grants = |input: &PlanInput| -> Vec<String> {
        super::plan(input, ts(START))
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::GrantSlot { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    };
    let input = sim.input();
    assert_eq!(grants(&input), ["node-00", "node-01"]);
    // A FleetLock client of the group holds one of the rollout's slots.
    let mut input = sim.input();
    input.other_holders = vec!["fleetlock.zincati-7".into()];
    assert_eq!(grants(&input), ["node-00"]);
    // And a node whose report cannot be read may be in the pool: down.
    input.unreadable = vec!["node-99".into()];
    assert_eq!(grants(&input), Vec::<String>::new());
    let planned = super::plan(&input, sim.now);
    assert_eq!(
        planned.status.blocked.as_deref(),
        Some("2 unavailable ≥ maxUnavailable 2")
    );
}

#[test]
fn a_failure_stands_after_the_node_passed_through_another_rollout() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 5\n", 2);
    sim.node("node-00").behaviour = Behaviour::FallBack;
    sim.run_until(
        |s| matches!(s.nodes.get("node-00"), Some(NodeState::Failed { .. })),
        30,
    );
    // Another rollout governs node-00 for a while, then lets go of it.
    let mut input = sim.input();
    input.nodes[0].governed_by = Some("db-fix".into());
    let planned = super::plan(&input, sim.now);
    assert_eq!(
        planned.status.nodes["node-00"],
        NodeState::Skipped {
            governed_by: "db-fix".into()
        }
    );
    sim.status = Some(planned.status);
    let plan = sim.round();
    assert!(
        matches!(
            &plan.status.nodes["node-00"],
            NodeState::Failed { reason, .. } if reason.contains("the boot loader fell back")
        ),
        "{:?}",
        plan.status.nodes["node-00"]
    );
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Assign { node, .. } if node == "node-00")),
        "{:?}",
        plan.actions
    );
}

#[test]
fn a_lost_status_write_is_recovered_with_the_boot_the_slot_was_granted_in() {
    let mut sim = Sim::new("  maxUnavailable: 1\n  failureBudget: 1\n", 1);
    sim.node("node-00").behaviour = Behaviour::FallBack;
    sim.round();
    sim.tick(MINUTE); // staged
    let before = sim.status.clone();
    let plan = sim.round();
    assert!(
        matches!(&plan.actions[..], [Action::GrantSlot { boot_id, .. }] if boot_id == "node-00-boot-0"),
        "{:?}",
        plan.actions
    );
    // The status saying so is lost; the node reboots and falls back.
    sim.status = before;
    sim.tick(MINUTE);
    assert_eq!(sim.node("node-00").boot, 1);
    let plan = sim.round();
    let reasons: Vec<&str> = plan
        .status
        .failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        ["came back on sha256:0ld instead of sha256:n3w (the boot loader fell back)"]
    );
    assert_eq!(
        plan.actions,
        [Action::ReleaseSlot {
            node: "node-00".into()
        }]
    );
}

/// The nodes of `plan`'s actions of one kind, in order.
fn acted_on(plan: &Plan, kind: fn(&Action) -> Option<&String>) -> Vec<String> {
    plan.actions.iter().filter_map(kind).cloned().collect()
}

fn assigned(a: &Action) -> Option<&String> {
    match a {
        Action::Assign { node, .. } => Some(node),
        _ => None,
    }
}

fn granted(a: &Action) -> Option<&String> {
    match a {
        Action::GrantSlot { node, .. } => Some(node),
        _ => None,
    }
}

fn released(a: &Action) -> Option<&String> {
    match a {
        Action::ReleaseSlot { node } => Some(node),
        _ => None,
    }
}

#[test]
fn a_large_pool_is_assigned_in_chunks_and_the_first_chunk_gets_slots_first() {
    let mut sim = Sim::new("  maxUnavailable: 5\n", 250);
    let names: Vec<String> = sim.nodes.keys().cloned().collect();
    let plan = sim.round();
    assert_eq!(acted_on(&plan, assigned), names[..MAX_ASSIGNMENTS_PER_PLAN]);
    assert!(plan.more, "150 nodes left to assign");
    assert_eq!(plan.status.blocked, None);
    assert_eq!(
        states(&plan.status, |s| *s == NodeState::Assigned),
        names[..MAX_ASSIGNMENTS_PER_PLAN]
    );
    // The first chunk stages while the controller assigns the next: their
    // slots come in the same plan.
    sim.tick(Duration::from_secs(1));
    let plan = sim.round();
    assert_eq!(acted_on(&plan, assigned), names[100..200]);
    assert_eq!(acted_on(&plan, granted), names[..5]);
    assert!(plan.more);
    let plan = sim.round();
    assert_eq!(acted_on(&plan, assigned), names[200..]);
    assert!(!plan.more, "everything assigned");
    let plan = sim.round();
    assert_eq!(acted_on(&plan, assigned), Vec::<String>::new());
    assert!(!plan.more);
    sim.run_until(|s| s.phase == RolloutPhase::Completed, 500);
    assert_eq!(sim.reboots, 250);
}

#[test]
fn a_released_slot_goes_to_the_next_node_in_the_same_plan() {
    let mut sim = Sim::new("  maxUnavailable: 1\n", 2);
    let mut rounds = 0;
    let plan = loop {
        let plan = sim.round();
        if !acted_on(&plan, released).is_empty() {
            break plan;
        }
        rounds += 1;
        assert!(rounds < 50, "node-00 never released: {:?}", sim.status);
        sim.tick(MINUTE);
    };
    assert_eq!(acted_on(&plan, released), ["node-00"]);
    assert_eq!(sim.nodes["node-00"].booted, NEW);
    assert_eq!(acted_on(&plan, granted), ["node-01"], "{:?}", plan.status);
}
