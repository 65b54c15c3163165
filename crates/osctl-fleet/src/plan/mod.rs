//! The controller's decisions, as a pure function of what etcd holds and the
//! time: [`plan`] reads the rollout, its last status, pending control
//! requests and every node of the pool, and returns the new status and the
//! writes to make (assignments, slots). It does no I/O, so the controller
//! loop is "read, plan, write in one transaction", and every rule below is
//! tested without a cluster.
//!
//! Each node walks `pending → assigned → staged → rebooting → verifying →
//! updated` (or `failed`); a revert walks the same legs inside `reverting`.
//! The rules, from docs/fleet.md:
//!
//! - Steps in order: a canary moves nodes until that many of the pool
//!   (cumulative) have finished; a timed pause resumes when it has elapsed,
//!   `pause: {}` waits for promote; then the rest of the pool.
//! - Staging is not disruptive: assignments are not limited by
//!   maxUnavailable. A reboot slot goes to a node only once it reports the
//!   assigned digest staged, only inside a window, and only while
//!   `unavailable + 1 ≤ maxUnavailable`, where unavailable counts every node
//!   that is down for any reason (no presence, no readable report, not
//!   healthy, holding a slot — other than one the same plan releases —,
//!   rebooting or verifying, failed and not back),
//!   every other holder of the rollout's slots (FleetLock clients), and
//!   every node whose report cannot be read and that no status knows (it
//!   may be in the pool: fail closed).
//! - A node carries out an assignment when its image is the assigned
//!   digest or was resolved from it: a multi-arch image is assigned by its
//!   index digest, and each node stages its platform's manifest
//!   ([`ImageState::is`]).
//! - A slot that disappeared while the node's boot id is unchanged is a
//!   failure ("did not come back before the reboot deadline") and frees no
//!   capacity: the node stays unavailable until it reports another boot.
//! - A node back on another digest, or unhealthy, failed for this image: it
//!   is never assigned it again in this rollout, even after another rollout
//!   governed it for a while.
//! - A pending node holding one of this rollout's assignments and no slot
//!   has it withdrawn (a new image starts the pool over; a halt withdraws
//!   what was not rebooted into).
//! - Control requests apply in etcd's order (create revision), never by
//!   the admin's clock.
//! - Failures over the budget halt the rollout, or roll it back (revert
//!   assignments for updated nodes, under the same slot rules).
//! - No node finishing (or starting its reboot) within progressDeadline
//!   while the rollout could move halts it; the clock stands still while
//!   paused or waiting for a window.
//! - `status.blocked` says why nothing moves whenever that is so.
//!
//! Nodes are always visited in name order, so a plan is deterministic.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::model::{
    Assignment, AssignmentKind, Control, ControlAction, Failure, HealthState, ImageState, Leg,
    NodeReport, NodeState, RolloutPhase, RolloutStatus, Version,
};
use crate::spec::{OnFailure, Rollout, Step};
use crate::window;

/// How long a node may hold a reboot slot when the controller is not told
/// otherwise: long enough for firmware, a boot and the first health checks.
pub const DEFAULT_REBOOT_DEADLINE: Duration = Duration::from_secs(15 * 60);

pub const REASON_NO_RETURN: &str = "did not come back before the reboot deadline";

/// At most this many new assignments per plan; the controller plans again
/// at once while more are due ([`Plan::more`]). A plan that assigned a
/// whole pool of a thousand nodes wrote for 0.7 s before the next plan
/// could see the first of them staged and grant their slots (hack/bench-fleet):
/// in chunks, the first nodes stage while the rest are still being
/// assigned. It is also one transaction's worth of writes.
pub const MAX_ASSIGNMENTS_PER_PLAN: usize = 100;

/// Everything the controller read for one rollout.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub rollout: Rollout,
    /// The generation of the applied spec.
    pub generation: u64,
    /// The image to assign, by digest (`registry/os@sha256:…`).
    pub image: String,
    /// The digest the spec's image resolved to.
    pub digest: String,
    /// The last status written; `None` when the rollout was just applied.
    pub status: Option<RolloutStatus>,
    /// Control requests not yet deleted; those at or below
    /// `status.last_control_revision` were applied already and are ignored.
    pub controls: Vec<ControlRequest>,
    /// Every node the selector matches, in any order.
    pub nodes: Vec<NodeInput>,
    /// Holders of this rollout's reboot slots that are not its nodes
    /// (FleetLock clients of the group it governs): each is a machine down
    /// or about to go down, so each counts against maxUnavailable.
    pub other_holders: Vec<String>,
    /// Nodes whose report cannot be read and that the status does not know:
    /// their labels are unknown, so they may be in the pool, and an
    /// unreadable node is unavailable (fail closed): each counts against
    /// maxUnavailable.
    pub unreadable: Vec<String>,
    /// The TTL of a granted slot's lease.
    pub reboot_deadline: Duration,
}

/// One node as etcd has it.
#[derive(Debug, Clone)]
pub struct NodeInput {
    pub name: String,
    /// Its presence key exists (the agent's lease is alive).
    pub present: bool,
    /// Its report; `None` when missing or unreadable (it is unavailable).
    pub report: Option<NodeReport>,
    pub assignment: Option<Assignment>,
    /// Its slot key, when one exists.
    pub slot: Option<Slot>,
    /// The rollout governing the node, when known; another rollout's node is
    /// skipped.
    pub governed_by: Option<String>,
}

/// A control request and the etcd create revision of its key: requests
/// are applied in revision order, the order etcd took them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    pub revision: i64,
    pub control: Control,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub deadline: Timestamp,
    /// The boot the slot was granted in (the node's boot id then); `None`
    /// for a slot recorded without one.
    pub boot_id: Option<String>,
}

/// The controller's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    /// More assignments were due than [`MAX_ASSIGNMENTS_PER_PLAN`]: plan
    /// again without waiting.
    pub more: bool,
}

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Assign {
        node: String,
        assignment: Assignment,
    },
    ClearAssignment {
        node: String,
    },
    GrantSlot {
        node: String,
        deadline: Timestamp,
        /// The boot the node reboots from, recorded with the slot: if the
        /// status saying so is lost, the next plan still knows which boot
        /// the node had to leave.
        boot_id: String,
    },
    ReleaseSlot {
        node: String,
    },
}

/// Decides the next status and writes for one rollout at `now`.
pub fn plan(input: &PlanInput, now: Timestamp) -> Plan {
    let mut p = Planner::new(input, now);
    p.apply_controls();
    p.observe_all();
    p.decide();
    p.finish()
}

/// Singular or plural of "node" / "failure" for status sentences.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `t + d`; a deadline past the end of time is the end of time.
fn later(t: Timestamp, d: Duration) -> Timestamp {
    // Only spans with calendar units can fail to add; a std Duration
    // saturates, so an error here cannot happen and MAX is the saturated
    // answer anyway.
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// How long since `since` (zero when it is in the future).
fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    let d = now.duration_since(since);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// A node's leg and the kind of image it is going to, when it is on the way.
fn leg_of(state: &NodeState) -> Option<(AssignmentKind, Leg)> {
    let leg = match state {
        NodeState::Assigned => Leg::Assigned,
        NodeState::Staged => Leg::Staged,
        NodeState::Rebooting {
            slot_deadline,
            boot_id,
        } => Leg::Rebooting {
            slot_deadline: *slot_deadline,
            boot_id: boot_id.clone(),
        },
        NodeState::Verifying { booted_at } => Leg::Verifying {
            booted_at: *booted_at,
        },
        NodeState::Reverting { leg } => return Some((AssignmentKind::Revert, leg.clone())),
        _ => return None,
    };
    Some((AssignmentKind::Update, leg))
}

fn with_leg(kind: AssignmentKind, leg: Leg) -> NodeState {
    match (kind, leg) {
        (AssignmentKind::Revert, leg) => NodeState::Reverting { leg },
        (AssignmentKind::Update, Leg::Assigned) => NodeState::Assigned,
        (AssignmentKind::Update, Leg::Staged) => NodeState::Staged,
        (
            AssignmentKind::Update,
            Leg::Rebooting {
                slot_deadline,
                boot_id,
            },
        ) => NodeState::Rebooting {
            slot_deadline,
            boot_id,
        },
        (AssignmentKind::Update, Leg::Verifying { booted_at }) => {
            NodeState::Verifying { booted_at }
        }
    }
}

/// Whether a node counts against maxUnavailable: no presence, no readable
/// or healthy report, holding a slot, rebooting or verifying, or failed
/// without coming back (down until it reports another boot). The FleetLock
/// server counts a rollout's nodes by the same rule.
pub fn unavailable(
    present: bool,
    report: Option<&NodeReport>,
    holds_slot: bool,
    state: &NodeState,
) -> bool {
    if !present || !healthy(report) || holds_slot {
        return true;
    }
    match state {
        NodeState::Rebooting { .. } | NodeState::Verifying { .. } => true,
        NodeState::Reverting { leg } => {
            matches!(leg, Leg::Rebooting { .. } | Leg::Verifying { .. })
        }
        // Did not come back: down until it reports another boot.
        NodeState::Failed {
            boot_id: Some(b), ..
        } => report.is_none_or(|r| &r.boot_id == b),
        _ => false,
    }
}

fn healthy(report: Option<&NodeReport>) -> bool {
    report.is_some_and(|r| r.health.state == HealthState::Healthy)
}

struct Planner<'a> {
    input: &'a PlanInput,
    now: Timestamp,
    st: RolloutStatus,
    actions: Vec<Action>,
    /// The pool: nodes this rollout governs, by name.
    pool: BTreeMap<&'a str, &'a NodeInput>,
    /// Why nothing moves, when a rule stopped something that was due.
    blocked: Option<String>,
    /// Waiting for a window (phase `waiting`).
    waiting: bool,
    /// Held by a pause step.
    pause_step: bool,
    /// Assignments were left for the next plan.
    more: bool,
    /// Nodes whose slots this plan releases: no longer down for its
    /// grants (see [`Planner::release`]).
    releasing: std::collections::BTreeSet<String>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput, now: Timestamp) -> Planner<'a> {
        let fresh = || RolloutStatus {
            version: Version,
            generation: input.generation,
            phase: RolloutPhase::Progressing,
            step: 0,
            step_started_at: now,
            digest: input.digest.clone(),
            previous: BTreeMap::new(),
            nodes: BTreeMap::new(),
            failures: Vec::new(),
            blocked: None,
            paused: false,
            halted: None,
            last_progress_at: now,
            last_control_at: None,
            last_control_revision: None,
            updated_at: now,
        };
        let st = match &input.status {
            // A new generation with the same digest changes limits or steps:
            // the nodes' progress stands.
            Some(prev) if prev.digest == input.digest => RolloutStatus {
                generation: input.generation,
                ..prev.clone()
            },
            // Another image: a new rollout over the pool. A revert goes to
            // what a node runs when the new image is assigned to it (the
            // last image it ran well), not to what it ran before the old one.
            Some(_) | None => fresh(),
        };
        let mut pool = BTreeMap::new();
        for n in &input.nodes {
            match &n.governed_by {
                Some(other) if *other != input.rollout.name => {}
                _ => {
                    pool.insert(n.name.as_str(), n);
                }
            }
        }
        Planner {
            input,
            now,
            st,
            actions: Vec::new(),
            pool,
            blocked: None,
            waiting: false,
            pause_step: false,
            more: false,
            releasing: Default::default(),
        }
    }

    fn spec(&self) -> &'a crate::spec::RolloutSpec {
        &self.input.rollout.spec
    }

    fn apply_controls(&mut self) {
        // In the order etcd took them (create revision), never by the
        // admin's clock: two admins' clocks disagree, and a request stamped
        // before the last one applied is still news.
        let mut controls: Vec<&ControlRequest> = self
            .input
            .controls
            .iter()
            .filter(|c| {
                self.st
                    .last_control_revision
                    .is_none_or(|last| c.revision > last)
            })
            .collect();
        controls.sort_by_key(|c| c.revision);
        for ControlRequest {
            revision,
            control: c,
        } in controls
        {
            self.st.last_control_revision = Some(*revision);
            self.st.last_control_at = Some(c.at);
            let terminal = matches!(
                self.st.phase,
                RolloutPhase::Aborted | RolloutPhase::RollingBack
            );
            match c.action {
                ControlAction::Pause => self.st.paused = true,
                ControlAction::Resume => {
                    self.st.paused = false;
                    self.st.halted = None;
                    self.st.last_progress_at = self.now;
                }
                ControlAction::Promote => {
                    if matches!(self.spec().steps.get(self.st.step), Some(Step::Pause(_))) {
                        self.advance_step();
                    }
                }
                ControlAction::Abort if !terminal => self.st.phase = RolloutPhase::Aborted,
                ControlAction::Undo if self.st.phase != RolloutPhase::RollingBack => {
                    self.st.phase = RolloutPhase::RollingBack;
                    self.st.halted = None;
                }
                ControlAction::Abort | ControlAction::Undo => {}
            }
        }
    }

    fn advance_step(&mut self) {
        self.st.step += 1;
        self.st.step_started_at = self.now;
        self.st.last_progress_at = self.now;
    }

    fn state(&self, name: &str) -> NodeState {
        self.st
            .nodes
            .get(name)
            .cloned()
            .unwrap_or(NodeState::Pending)
    }

    fn set(&mut self, name: &str, state: NodeState) {
        self.st.nodes.insert(name.to_string(), state);
    }

    fn fail(&mut self, name: &str, reason: String, boot_id: Option<String>) {
        self.st.failures.push(Failure {
            node: name.to_string(),
            reason: reason.clone(),
            at: self.now,
        });
        self.set(
            name,
            NodeState::Failed {
                reason,
                at: self.now,
                boot_id,
            },
        );
    }

    /// The assignment a node on `kind`'s way should hold.
    fn assignment(&self, name: &str, kind: AssignmentKind) -> Option<Assignment> {
        let (image, digest) = match kind {
            AssignmentKind::Update => (self.input.image.clone(), self.input.digest.clone()),
            AssignmentKind::Revert => {
                // By digest, like every assignment: the tag the node was on
                // may have moved since.
                let prev = self.st.previous.get(name)?;
                (pin(&prev.image, &prev.digest), prev.digest.clone())
            }
        };
        Some(Assignment {
            version: Version,
            rollout: self.input.rollout.name.clone(),
            generation: self.input.generation,
            image,
            digest,
            kind,
        })
    }

    fn assign(&mut self, name: &str, kind: AssignmentKind) -> bool {
        let Some(assignment) = self.assignment(name, kind) else {
            return false;
        };
        self.actions.push(Action::Assign {
            node: name.to_string(),
            assignment,
        });
        true
    }

    fn observe_all(&mut self) {
        // Nodes that left the pool are forgotten; nodes of another rollout
        // are shown as such.
        let input = self.input;
        let mut nodes = BTreeMap::new();
        for n in &input.nodes {
            if let Some(other) = &n.governed_by
                && *other != input.rollout.name
            {
                nodes.insert(
                    n.name.clone(),
                    NodeState::Skipped {
                        governed_by: other.clone(),
                    },
                );
            } else if let Some(s) = self.st.nodes.get(&n.name) {
                nodes.insert(n.name.clone(), s.clone());
            }
        }
        self.st.nodes = nodes;
        let pool: Vec<&NodeInput> = self.pool.values().copied().collect();
        for n in pool {
            if let NodeState::Skipped { .. } = self.state(&n.name) {
                // Its other rollout let go of it: it is ours again. A
                // failure it had here stands (the status keeps every
                // failure): the image that failed on it is never assigned
                // to it again in this rollout.
                let back = match self.st.failures.iter().rev().find(|f| f.node == n.name) {
                    Some(f) => NodeState::Failed {
                        reason: f.reason.clone(),
                        at: f.at,
                        boot_id: None,
                    },
                    None => NodeState::Pending,
                };
                self.set(&n.name, back);
            }
            self.observe(n);
        }
    }

    /// Moves one node along its way from what it reports.
    fn observe(&mut self, n: &NodeInput) {
        let name = n.name.as_str();
        let report = n.report.as_ref();
        let state = self.state(name);
        if matches!(
            state,
            NodeState::Updated | NodeState::Reverted | NodeState::Failed { .. }
        ) && n.slot.is_some()
        {
            self.release(name);
        }
        let Some((kind, mut leg)) = leg_of(&state) else {
            return;
        };
        let Some(want) = self.assignment(name, kind) else {
            return;
        };
        let (goal, min_healthy) = (want.digest.clone(), self.spec().min_healthy_seconds);
        if matches!(leg, Leg::Assigned | Leg::Staged) {
            // The agent gave up on it (it retries with backoff itself; a
            // phase `failed` is its verdict).
            if let Some(r) = report
                && r.phase == crate::model::NodePhase::Failed
                && r.rollout.as_deref() == Some(self.input.rollout.name.as_str())
                && !r.booted.is(&goal)
            {
                let why = r
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the agent reported failed".into());
                self.fail(name, why, None);
                return;
            }
            let held = n.assignment.as_ref();
            let same = held.is_some_and(|a| {
                a.rollout == want.rollout && a.digest == want.digest && a.kind == want.kind
            });
            if !same {
                // Lost or overwritten: write it again (the agent resumes).
                self.assign(name, kind);
            }
        }
        if leg == Leg::Assigned
            && report.is_some_and(|r| r.staged.as_ref().is_some_and(|s| s.is(&goal)))
        {
            leg = Leg::Staged;
        }
        if matches!(leg, Leg::Assigned | Leg::Staged)
            && let (Some(slot), Some(r)) = (&n.slot, report)
        {
            // A slot we granted but did not record (the status write was
            // lost; slots go only to staged nodes, and the round that saw
            // a node staged may have granted it too): it is rebooting from
            // the boot the slot was granted in — not the one it reports
            // now, which may already be the boot it came back in (and,
            // fallen back, it would look like a node still waiting to
            // reboot until its slot ran out).
            match (&slot.boot_id, &leg) {
                (Some(b), _) => {
                    leg = Leg::Rebooting {
                        slot_deadline: slot.deadline,
                        boot_id: b.clone(),
                    }
                }
                // A slot recorded without its boot: the boot reported now,
                // unless the node is already on the image.
                (None, Leg::Staged) if r.booted.is(&goal) => {
                    leg = Leg::Verifying {
                        booted_at: self.now,
                    }
                }
                (None, Leg::Staged) => {
                    leg = Leg::Rebooting {
                        slot_deadline: slot.deadline,
                        boot_id: r.boot_id.clone(),
                    }
                }
                (None, _) => {}
            }
        }
        if let Leg::Rebooting { boot_id, .. } = &leg {
            if let Some(r) = report
                && r.boot_id != *boot_id
            {
                leg = Leg::Verifying {
                    booted_at: self.now,
                };
            } else if n.slot.is_none() {
                self.fail(name, REASON_NO_RETURN.into(), Some(boot_id.clone()));
                return;
            }
        }
        if let Leg::Verifying { .. } = leg
            && let Some(r) = report
        {
            if !r.booted.is(&goal) {
                let why = format!(
                    "came back on {} instead of {goal} (the boot loader fell back)",
                    r.booted.digest
                );
                self.fail(name, why, None);
                if n.slot.is_some() {
                    self.release(name);
                }
                return;
            }
            match r.health.state {
                HealthState::Unhealthy => {
                    self.fail(name, "unhealthy after the reboot".into(), None);
                    if n.slot.is_some() {
                        self.release(name);
                    }
                    return;
                }
                HealthState::Healthy
                    if elapsed(self.now, r.health.since) >= Duration::from_secs(min_healthy) =>
                {
                    let done = match kind {
                        AssignmentKind::Update => NodeState::Updated,
                        AssignmentKind::Revert => NodeState::Reverted,
                    };
                    self.set(name, done);
                    self.st.last_progress_at = self.now;
                    if n.slot.is_some() {
                        self.release(name);
                    }
                    return;
                }
                HealthState::Healthy | HealthState::Unknown => {}
            }
        }
        self.set(name, with_leg(kind, leg));
    }

    /// Whether a node counts against maxUnavailable.
    fn unavailable(&self, n: &NodeInput) -> bool {
        unavailable(
            n.present,
            n.report.as_ref(),
            n.slot.is_some() && !self.releasing.contains(&n.name),
            &self.state(&n.name),
        )
    }

    /// Releases a judged node's slot. Its capacity goes to the grants of
    /// this same plan: the controller writes every release before any
    /// grant and grants nothing when a release did not go through, so a
    /// grant never relies on a release that did not happen. (Counted as
    /// held until the next plan, each freed slot stood idle for a whole
    /// wake-up: 2.6 of 50 slots on average in hack/bench-fleet.)
    fn release(&mut self, name: &str) {
        self.actions.push(Action::ReleaseSlot { node: name.into() });
        self.releasing.insert(name.to_string());
    }

    fn count_states(&self, f: impl Fn(&NodeState) -> bool) -> usize {
        self.pool.keys().filter(|n| f(&self.state(n))).count()
    }

    fn decide(&mut self) {
        let spec = self.spec();
        let over_budget = self.st.failures.len() > spec.failure_budget as usize;
        if over_budget
            && spec.on_failure == OnFailure::Rollback
            && self.st.halted.is_none()
            && self.st.phase != RolloutPhase::Aborted
        {
            self.st.phase = RolloutPhase::RollingBack;
        }
        match self.st.phase {
            RolloutPhase::Aborted => {
                self.unassign_unstarted(AssignmentKind::Update);
                self.blocked = Some("aborted".into());
            }
            RolloutPhase::RollingBack => self.roll_back(),
            _ if over_budget || self.st.halted.is_some() => {
                // An image that failed elsewhere must not stay staged where
                // it was not rebooted into yet: the next unrelated reboot
                // would boot it without a slot. Resume assigns again.
                self.unassign_unstarted(AssignmentKind::Update);
                let why = self.st.halted.clone().unwrap_or_else(|| {
                    format!(
                        "{} > budget {}",
                        count(self.st.failures.len(), "failure"),
                        spec.failure_budget
                    )
                });
                self.blocked = Some(format!("halted: {why}"));
            }
            _ if self.st.paused => {
                self.blocked = Some("paused".into());
                self.st.last_progress_at = self.now;
            }
            _ => self.progress(),
        }
    }

    /// Clears the assignments of nodes that have not rebooted for them yet.
    fn unassign_unstarted(&mut self, kind: AssignmentKind) {
        let names: Vec<&str> = self.pool.keys().copied().collect();
        for name in names {
            if let Some((k, Leg::Assigned | Leg::Staged)) = leg_of(&self.state(name))
                && k == kind
            {
                self.actions
                    .push(Action::ClearAssignment { node: name.into() });
                self.set(name, NodeState::Pending);
            }
        }
    }

    fn roll_back(&mut self) {
        self.unassign_unstarted(AssignmentKind::Update);
        let names: Vec<&str> = self.pool.keys().copied().collect();
        for name in names {
            if self.state(name) == NodeState::Updated && self.assign(name, AssignmentKind::Revert) {
                self.set(name, NodeState::Reverting { leg: Leg::Assigned });
            }
        }
        let moving = self.count_states(|s| {
            matches!(
                s,
                NodeState::Rebooting { .. }
                    | NodeState::Verifying { .. }
                    | NodeState::Reverting { .. }
            )
        });
        // Updated nodes left have no previous image recorded: nothing to
        // go back to.
        if moving == 0 {
            let failures = self.st.failures.len();
            let why = if failures > self.spec().failure_budget as usize {
                format!(
                    "rolled back after {} > budget {}",
                    count(failures, "failure"),
                    self.spec().failure_budget
                )
            } else {
                "rolled back (undo)".into()
            };
            self.st.phase = RolloutPhase::Halted;
            self.st.halted = Some(why.clone());
            self.blocked = Some(format!("halted: {why}"));
            return;
        }
        self.grant_slots(AssignmentKind::Revert);
    }

    fn progress(&mut self) {
        // Completed is recomputed: a node that joined the pool reopens it.
        self.st.phase = RolloutPhase::Progressing;
        let spec = self.spec();
        let pool = self.pool.len();
        if pool == 0 {
            self.blocked = Some("no node matches the selector".into());
            return;
        }
        // The steps in force: how many nodes may be on their way or done.
        let target = loop {
            let finished =
                self.count_states(|s| matches!(s, NodeState::Updated | NodeState::Failed { .. }));
            match spec.steps.get(self.st.step) {
                None => break pool,
                Some(Step::Canary(q)) => {
                    let target = q.resolve(pool).min(pool);
                    if finished >= target {
                        self.advance_step();
                        continue;
                    }
                    break target;
                }
                Some(Step::Pause(Some(d))) => {
                    let until = later(self.st.step_started_at, *d);
                    if self.now >= until {
                        self.advance_step();
                        continue;
                    }
                    let until = until.to_zoned_datetime(jiff::tz::TimeZone::UTC);
                    self.block_step(format!(
                        "paused for {} until {} UTC (step {})",
                        humantime::format_duration(*d),
                        until.strftime("%H:%M"),
                        self.st.step + 1
                    ));
                    return;
                }
                Some(Step::Pause(None)) => {
                    self.block_step(format!("paused until promoted (step {})", self.st.step + 1));
                    return;
                }
            }
        };
        let touched = self.count_states(|s| !matches!(s, NodeState::Pending));
        let mut room = target.saturating_sub(touched);
        let mut assigned = 0;
        let names: Vec<&'a NodeInput> = self.pool.values().copied().collect();
        for n in names {
            if room == 0 {
                break;
            }
            if self.state(&n.name) != NodeState::Pending || self.unavailable(n) {
                continue;
            }
            let Some(r) = &n.report else { continue };
            if r.booted.is(&self.input.digest) {
                room -= 1;
                self.set(&n.name, NodeState::Updated);
                self.st.last_progress_at = self.now;
                continue;
            }
            if assigned == MAX_ASSIGNMENTS_PER_PLAN {
                self.more = true;
                break;
            }
            room -= 1;
            assigned += 1;
            self.st
                .previous
                .entry(n.name.clone())
                .or_insert_with(|| ImageState::clone(&r.booted));
            self.assign(&n.name, AssignmentKind::Update);
            self.set(&n.name, NodeState::Assigned);
        }
        self.grant_slots(AssignmentKind::Update);

        let left =
            self.count_states(|s| !matches!(s, NodeState::Updated | NodeState::Failed { .. }));
        if left == 0 {
            self.st.phase = RolloutPhase::Completed;
            return;
        }
        if !self.waiting && elapsed(self.now, self.st.last_progress_at) > spec.progress_deadline {
            let why = format!(
                "no node finished within progressDeadline {}",
                humantime::format_duration(spec.progress_deadline)
            );
            self.blocked = Some(format!("halted: {why}"));
            self.st.halted = Some(why);
        }
    }

    fn block_step(&mut self, why: String) {
        self.pause_step = true;
        self.blocked = Some(why);
        self.st.last_progress_at = self.now;
    }

    /// Grants slots to staged nodes of `kind` in name order, inside a window
    /// and within maxUnavailable.
    fn grant_slots(&mut self, kind: AssignmentKind) {
        let staged: Vec<&'a NodeInput> = self
            .pool
            .values()
            .copied()
            .filter(|n| leg_of(&self.state(&n.name)) == Some((kind, Leg::Staged)))
            .collect();
        if staged.is_empty() {
            return;
        }
        let spec = self.spec();
        if let Some(opens) = window::next_opening(&spec.windows, self.now) {
            self.waiting = true;
            self.st.last_progress_at = self.now;
            self.blocked = Some(format!(
                "waiting for window {}",
                window::describe_opening(&opens)
            ));
            return;
        }
        let max = spec.max_unavailable.resolve(self.pool.len());
        // FleetLock clients holding this rollout's slots and nodes that
        // cannot be read are down as surely as the pool's own.
        let mut down = self.pool.values().filter(|n| self.unavailable(n)).count()
            + self.input.other_holders.len()
            + self.input.unreadable.len();
        for n in staged {
            // A node already down cannot use a slot; it waits to come back.
            if self.unavailable(n) {
                continue;
            }
            let Some(r) = &n.report else { continue };
            if down + 1 > max {
                self.blocked = Some(format!("{down} unavailable ≥ maxUnavailable {max}"));
                return;
            }
            let deadline = later(self.now, self.input.reboot_deadline);
            self.actions.push(Action::GrantSlot {
                node: n.name.clone(),
                deadline,
                boot_id: r.boot_id.clone(),
            });
            let leg = Leg::Rebooting {
                slot_deadline: deadline,
                boot_id: r.boot_id.clone(),
            };
            self.set(&n.name, with_leg(kind, leg));
            // A node starting its reboot restarts the progress clock: the
            // deadline measures how long the nodes in flight take.
            self.st.last_progress_at = self.now;
            down += 1;
        }
    }

    /// Withdraws what a pending node still holds from this rollout: an
    /// assignment for an image this rollout no longer rolls out (a new
    /// generation with another image starts the pool over), or one whose
    /// withdrawal was lost. Staged and not rebooted into, it would boot at
    /// the node's next unrelated reboot, without a slot. A node holding a
    /// slot is mid-reboot and keeps what it has.
    fn withdraw_stale(&mut self) {
        let name = self.input.rollout.name.as_str();
        let pool: Vec<&'a NodeInput> = self.pool.values().copied().collect();
        for n in pool {
            let stale = n.slot.is_none()
                && self.state(&n.name) == NodeState::Pending
                && n.assignment.as_ref().is_some_and(|a| a.rollout == name);
            let decided = self.actions.iter().any(|a| {
                matches!(a, Action::Assign { node, .. } | Action::ClearAssignment { node } if *node == n.name)
            });
            if stale && !decided {
                self.actions.push(Action::ClearAssignment {
                    node: n.name.clone(),
                });
            }
        }
    }

    fn finish(mut self) -> Plan {
        self.withdraw_stale();
        let spec = self.spec();
        let over_budget = self.st.failures.len() > spec.failure_budget as usize;
        self.st.phase = match self.st.phase {
            RolloutPhase::Aborted => RolloutPhase::Aborted,
            RolloutPhase::RollingBack => RolloutPhase::RollingBack,
            _ if self.st.halted.is_some() || over_budget => RolloutPhase::Halted,
            RolloutPhase::Completed if self.blocked.is_none() => RolloutPhase::Completed,
            _ if self.st.paused || self.pause_step => RolloutPhase::Paused,
            _ if self.waiting => RolloutPhase::Waiting,
            _ => RolloutPhase::Progressing,
        };
        if self.blocked.is_none()
            && self.actions.is_empty()
            && self.st.phase != RolloutPhase::Completed
        {
            self.blocked = Some(self.why_idle());
        }
        self.st.blocked = self.blocked;
        self.st.updated_at = self.now;
        Plan {
            status: self.st,
            actions: self.actions,
            more: self.more,
        }
    }

    /// Why nothing moved when no rule said so: the nodes being waited for.
    fn why_idle(&self) -> String {
        let staging = self.count_states(|s| matches!(leg_of(s), Some((_, Leg::Assigned))));
        if staging > 0 {
            return format!("waiting for {} to stage", count(staging, "node"));
        }
        let back = self.count_states(|s| {
            matches!(
                leg_of(s),
                Some((_, Leg::Rebooting { .. } | Leg::Verifying { .. }))
            )
        });
        if back > 0 {
            return format!(
                "waiting for {} to reboot and stay healthy for {}s",
                count(back, "node"),
                self.spec().min_healthy_seconds
            );
        }
        let down = self
            .pool
            .values()
            .filter(|n| self.state(&n.name) == NodeState::Pending && self.unavailable(n))
            .count();
        if down > 0 {
            return format!(
                "waiting for {} to be available",
                count(down, "pending node")
            );
        }
        let staged = self.count_states(|s| matches!(leg_of(s), Some((_, Leg::Staged))));
        format!(
            "waiting for {} to be able to reboot",
            count(staged, "staged node")
        )
    }
}

/// `image` (a reference as a node reported it) pinned to `digest`: its
/// repository with `@digest`, any tag or digest it had dropped.
fn pin(image: &str, digest: &str) -> String {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    // A tag is a ':' after the last '/' (a registry port comes before it).
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    format!("{repo}@{digest}")
}

#[cfg(test)]
mod tests;
