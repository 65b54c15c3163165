//! The node agent: `osctl fleet agent --node NAME`, one per machine.
//!
//! It registers (a presence key bound to a kept lease), reports what the
//! machine has booted and staged and how healthy it is, and carries out the
//! one assignment the controller gives it — download and stage (never
//! disruptive), then wait for a reboot slot, then reboot, then let the boot
//! assessment speak. It decides nothing about the fleet.
//!
//! # Why a reconcile step, not a script
//!
//! Each [`Agent::step`] starts from what is true now — the machine's
//! deployments, the boot id, the assignment and slot in etcd, the agent's
//! own state file — and does the one next thing. A killed agent, a lost
//! etcd member, a reboot in the middle all end in the same place: the next
//! step reads the truth again. The only thing the agent must remember
//! itself is that it asked for a reboot, and from which boot
//! ([`state`]): that is written before the reboot command runs, so a
//! restarted agent knows a reboot for its slot was asked for. In the boot it
//! was asked from, the restarted agent runs the command again while the slot
//! stands (the first agent may have died before running it; if the machine
//! is already going down, a second `systemctl reboot` changes nothing); after
//! the reboot, never.
//!
//! # Reading the verdict after the reboot
//!
//! The boot assessment decides (osctl-deploy): the assigned digest booted
//! and marked good → `updated` (healthy since the agent first saw it so;
//! the controller applies the health gate); the old image booted (the boot
//! loader fell back) or a required check failed → `failed`, and the image
//! is never staged again for that assignment (the machine's failed-images
//! record says so too).

pub mod host;
pub mod machine;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::time::Duration;

use jiff::Timestamp;
use osctl_deploy::failpoint;
use osctl_deploy::status::Assessment;
use osctl_image::ImageRef;

use crate::etcd::{Compare, CompareOp, Etcd, EtcdError, KeptLease, SLOTS_ROOT, TxnOp};
use crate::keys;
use crate::model::{
    Assignment, Health, HealthState, ImageState, NodePhase, NodeReport, Presence, Version,
};
use crate::wake::Wake;
pub use host::Host;
use machine::{Deployed, MachineView};
use state::{AgentState, HealthyIn, Resolved};

/// How long the presence lease lives without a keepalive: a machine that
/// stops answering is unavailable after this.
pub const PRESENCE_TTL: Duration = Duration::from_secs(10);
/// How often the agent looks again when nothing woke it.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// The fail point between recording "rebooting" in the state file and
/// running the reboot command (tests/fleet_faults.rs).
pub const FAILPOINT_REBOOT_RECORDED: &str = "agent:after-reboot-recorded";
/// Download retries back off from this …
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// … to this, never in a tight loop.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What went wrong in the agent; each names its step.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{step}")]
    Deploy {
        step: &'static str,
        #[source]
        source: Box<osctl_deploy::DeployError>,
    },
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent state {}: {why}", path.display())]
    BadState { path: PathBuf, why: String },
    #[error("boot id file {} is empty", .0.display())]
    BadBootId(PathBuf),
    #[error("the machine's status is unreadable: {0}")]
    Unreadable(&'static str),
    #[error("nothing is booted from an osctl deployment here: the agent reports the booted image")]
    NothingBooted,
    #[error(transparent)]
    Reboot(osctl_deploy::reboot::RebootError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("invalid agent option: {0}")]
    Config(String),
    #[error(
        "node {node} is registered by another agent (its presence key exists and is kept alive)"
    )]
    Duplicate { node: String },
    #[error("assignment for {node}: image {image}: {why}")]
    BadAssignment {
        node: String,
        image: String,
        why: String,
    },
}

/// Wraps a deployment error with the step it failed in.
pub(crate) fn deploy_error(
    step: &'static str,
) -> impl FnOnce(osctl_deploy::DeployError) -> AgentError {
    move |source| AgentError::Deploy {
        step,
        source: Box::new(source),
    }
}

/// What the agent is started with.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub poll: Duration,
}

/// One agent, on the machine `H` ([`machine::Machine`] on a real one).
pub struct Agent<H: Host> {
    etcd: Etcd,
    options: AgentOptions,
    machine: H,
    boot_id: String,
    state: AgentState,
    lease: Option<KeptLease>,
    /// The report last written and its mod revision.
    last_report: Option<(NodeReport, i64)>,
    /// A report whose write got no answer: it may or may not have been
    /// applied.
    unsure_report: Option<NodeReport>,
    /// When a failed download may be retried, and the next backoff.
    retry: Option<(tokio::time::Instant, Duration)>,
}

/// What one step did, for the loop (and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stepped {
    /// Nothing to do until something changes.
    Waiting,
    /// The reboot command ran: the agent stops; the machine goes down.
    Rebooting,
}

impl<H: Host> Agent<H> {
    /// Reads the machine's boot id and the agent's state; does not talk to
    /// etcd yet.
    pub fn new(etcd: Etcd, options: AgentOptions, machine: H) -> Result<Agent<H>, AgentError> {
        keys::check_node_name(&options.node).map_err(AgentError::Config)?;
        let boot_id = machine.boot_id()?;
        let state = machine
            .load_state(&options.node)?
            .unwrap_or_else(|| AgentState::new(&options.node));
        Ok(Agent {
            etcd,
            options,
            machine,
            boot_id,
            state,
            lease: None,
            last_report: None,
            unsure_report: None,
            retry: None,
        })
    }

    /// Runs until the reboot command ran (then returns) or an error that a
    /// retry cannot fix.
    pub async fn run(mut self) -> Result<(), AgentError> {
        // Its assignment and its reboot slot wake the agent at once; the
        // poll is the fallback (crate::wake).
        let mut assignment = Wake::default();
        let mut slot = Wake::default();
        loop {
            assignment
                .watch(&self.etcd, Some(&keys::assignment(&self.options.node)))
                .await;
            self.watch_slot(&mut slot).await;
            match self.step().await {
                Ok(Stepped::Rebooting) => return Ok(()),
                Ok(Stepped::Waiting) => {}
                // etcd unavailable: keep the machine as it is and try again;
                // nothing the agent does without etcd is disruptive.
                Err(AgentError::Etcd(e)) => {
                    tracing::warn!(node = %self.options.node, error = %error_chain(&e), "etcd");
                }
                Err(e) => return Err(e),
            }
            // The step may have taken a new assignment, whose slot the
            // watch above did not cover: watch it before waiting, or its
            // grant waits for the poll.
            self.watch_slot(&mut slot).await;
            tokio::select! {
                () = tokio::time::sleep(self.options.poll) => {}
                () = assignment.changed() => {}
                () = slot.changed() => {}
            }
        }
    }

    /// Watches the slot of the current assignment (none without one), from
    /// the revision after the last report: a slot is only granted to a node
    /// whose report says it is staged, so a grant that came between that
    /// report and this watch's start (the controller answers in
    /// milliseconds) still wakes the agent.
    async fn watch_slot(&self, slot: &mut Wake) {
        let key = self
            .state
            .assignment
            .as_ref()
            .map(|a| format!("{SLOTS_ROOT}{}/{}", a.rollout, self.options.node));
        let after_report = self.last_report.as_ref().map(|(_, rev)| rev + 1);
        slot.watch_from(&self.etcd, key.as_deref(), after_report)
            .await;
    }

    /// One reconcile step: register if needed, read the truth, do the next
    /// thing, report.
    pub async fn step(&mut self) -> Result<Stepped, AgentError> {
        self.register().await?;
        let view = self.machine.view()?;
        let booted = view.booted.clone().ok_or(AgentError::NothingBooted)?;
        self.note_reboot();
        self.note_health(&view);
        let assignment = self
            .etcd
            .get_json::<Assignment>(&keys::assignment(&self.options.node))
            .await?
            .map(|v| v.value);
        let outcome = self.act(assignment, &view, &booted).await?;
        // The view after acting (a stage changes it).
        let reported = match self.machine.view() {
            Ok(view) => self.report(&view).await,
            Err(e) => Err(e),
        };
        if outcome == Act::Reboot {
            // The state file already says the reboot was asked for from
            // this boot, so no later step asks again: the command must run
            // now. The report is news for the controller, which goes by the
            // boot id anyway; a failed one must not cancel the reboot (it
            // did: the slot then ran out, counted as a node that never came
            // back).
            if let Err(e) = reported {
                tracing::warn!(node = %self.options.node, error = %error_chain(&e), "report before the reboot");
            }
            self.machine.reboot()?;
            return Ok(Stepped::Rebooting);
        }
        reported?;
        Ok(Stepped::Waiting)
    }

    /// Creates the presence key under a kept lease, once, and again when
    /// the lease was lost (etcd unreachable for longer than its TTL).
    async fn register(&mut self) -> Result<(), AgentError> {
        if self.lease.as_ref().is_some_and(|l| !l.is_lost()) {
            return Ok(());
        }
        // The lease of this agent's previous run (restarted, or a reboot
        // shorter than the TTL) still holding the presence key: keep it,
        // and nothing is written.
        if let Some(id) = self.state.presence_lease
            && let Some(lease) = KeptLease::adopt(&self.etcd, id).await?
        {
            let current = self
                .etcd
                .get_json::<Presence>(&keys::presence(&self.options.node))
                .await?;
            if current.is_some_and(|p| p.lease == id) {
                self.lease = Some(lease);
                return Ok(());
            }
        }
        let lease = KeptLease::grant(&self.etcd, PRESENCE_TTL).await?;
        let presence = Presence {
            version: Version,
            boot_id: self.boot_id.clone(),
            since: Timestamp::now(),
        };
        let key = keys::presence(&self.options.node);
        if !self
            .etcd
            .create(&key, &presence, Some(lease.id()), None)
            .await?
        {
            // The presence of this agent's previous run (killed, or the
            // machine went down) lives until its lease runs out; its lease
            // id is in the state file, so end it now instead of waiting.
            // Anyone else's presence is kept alive and stays.
            if let Some(old) = self.state.presence_lease.filter(|&id| id != lease.id()) {
                self.etcd.revoke_lease(old).await?;
            }
            let deadline = tokio::time::Instant::now() + PRESENCE_TTL * 2;
            while !self
                .etcd
                .create(&key, &presence, Some(lease.id()), None)
                .await?
            {
                // A create whose answer was lost may have been applied: a
                // key bound to our own lease is ours, not a second agent's.
                if self
                    .etcd
                    .get_json::<Presence>(&key)
                    .await?
                    .is_some_and(|p| p.lease == lease.id())
                {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    lease.revoke().await?;
                    return Err(AgentError::Duplicate {
                        node: self.options.node.clone(),
                    });
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        self.state.presence_lease = Some(lease.id());
        self.save()?;
        self.lease = Some(lease);
        Ok(())
    }

    /// A boot id other than the one the reboot was asked from: it happened.
    fn note_reboot(&mut self) {
        if self.state.phase == NodePhase::Rebooting
            && self.state.reboot_from.as_deref() != Some(self.boot_id.as_str())
        {
            self.state.phase = NodePhase::Verifying;
            self.state.reboot_from = None;
        }
    }

    /// Starts the health gate's clock the first time this boot is seen
    /// good; a new boot starts it over.
    fn note_health(&mut self, view: &MachineView) {
        let good = view
            .health
            .as_ref()
            .is_some_and(|h| h.state == Assessment::Good);
        let this_boot = self
            .state
            .healthy_since
            .as_ref()
            .is_some_and(|h| h.boot_id == self.boot_id);
        if !good {
            self.state.healthy_since = None;
        } else if !this_boot {
            self.state.healthy_since = Some(HealthyIn {
                boot_id: self.boot_id.clone(),
                since: Timestamp::now(),
            });
        }
    }

    /// The next thing to do for `assignment`.
    async fn act(
        &mut self,
        assignment: Option<Assignment>,
        view: &MachineView,
        booted: &Deployed,
    ) -> Result<Act, AgentError> {
        let Some(assignment) = assignment else {
            return self.withdrawn(view);
        };
        if self.state.assignment.as_ref() != Some(&assignment) {
            // A new assignment (or a new generation of one) starts over,
            // except that a reboot asked for stays asked for.
            if self.state.phase != NodePhase::Rebooting {
                self.state.phase = NodePhase::Idle;
            }
            self.state.assignment = Some(assignment.clone());
            self.state.last_error = None;
            self.retry = None;
            self.save()?;
        }
        let target = assignment.digest.as_str();
        if self.is_target(booted, target) {
            self.state.phase = match view.health.as_ref().map(|h| h.state) {
                Some(Assessment::Good) => NodePhase::Updated,
                Some(Assessment::Failed) => {
                    self.state.last_error = view
                        .health
                        .as_ref()
                        .and_then(|h| h.reason.clone())
                        .or(Some("a required health check failed".into()));
                    NodePhase::Failed
                }
                _ => NodePhase::Verifying,
            };
            self.save()?;
            return Ok(Act::Nothing);
        }
        if self.state.phase == NodePhase::Rebooting {
            // Asked for in this boot and it did not happen yet: the agent
            // that asked died before the command ran (nobody else reboots
            // this machine, and the slot would run out as a node that never
            // came back), or the machine is going down right now. Both are
            // served by running the command again, as long as the slot
            // stands for the image staged.
            if view.staged.as_ref().is_some_and(|s| s.digest == target)
                && self.slot_granted(&assignment).await?
            {
                return Ok(Act::Reboot);
            }
            return Ok(Act::Nothing);
        }
        if self.state.phase == NodePhase::Verifying || self.state.phase == NodePhase::Failed {
            // Rebooted for it and came back on another image: the boot
            // loader fell back. Failed for this assignment, for good.
            if self.state.phase == NodePhase::Verifying {
                self.state.last_error = Some(format!(
                    "booted {} ({}) instead of {target}: the assigned image did not come up and the boot loader fell back",
                    booted.image, booted.digest
                ));
                self.state.phase = NodePhase::Failed;
                self.save()?;
            }
            return Ok(Act::Nothing);
        }
        let resolved = self
            .state
            .resolved
            .as_ref()
            .filter(|r| r.from == target)
            .map(|r| r.digest.clone());
        if self
            .machine
            .failed_digests()?
            .iter()
            .any(|d| d == target || resolved.as_ref() == Some(d))
        {
            self.state.phase = NodePhase::Failed;
            self.state.last_error = Some(format!(
                "{target} failed on this machine before (state/failed-images.json): not staged again"
            ));
            self.save()?;
            return Ok(Act::Nothing);
        }
        if view
            .staged
            .as_ref()
            .is_some_and(|s| self.is_target(s, target))
        {
            if self.slot_granted(&assignment).await? {
                self.state.phase = NodePhase::Rebooting;
                self.state.reboot_from = Some(self.boot_id.clone());
                // Before the reboot command: a restarted agent must know.
                self.save()?;
                failpoint::hit(FAILPOINT_REBOOT_RECORDED);
                return Ok(Act::Reboot);
            }
            self.state.phase = NodePhase::WaitingSlot;
            self.save()?;
            return Ok(Act::Nothing);
        }
        self.download(&assignment).await
    }

    /// The assignment is gone (aborted, or another rollout took the node):
    /// a staged image not yet rebooted into must not boot by surprise at the
    /// next unrelated reboot.
    fn withdrawn(&mut self, view: &MachineView) -> Result<Act, AgentError> {
        let Some(old) = self.state.assignment.take() else {
            return Ok(Act::Nothing);
        };
        if matches!(
            self.state.phase,
            NodePhase::Downloading | NodePhase::Staged | NodePhase::WaitingSlot
        ) && view
            .staged
            .as_ref()
            .is_some_and(|s| self.is_target(s, &old.digest))
        {
            let cancelled = self.machine.cancel_next()?;
            tracing::info!(node = %self.options.node, rollout = %old.rollout, ?cancelled, "assignment withdrawn; staged deployment cancelled");
        }
        self.state.phase = NodePhase::Idle;
        self.state.last_error = None;
        self.save()?;
        Ok(Act::Nothing)
    }

    /// Pulls and stages the assigned image, backing off after a failure.
    async fn download(&mut self, assignment: &Assignment) -> Result<Act, AgentError> {
        if let Some((at, _)) = self.retry
            && tokio::time::Instant::now() < at
        {
            return Ok(Act::Nothing);
        }
        let image = ImageRef::parse(&assignment.image).map_err(|e| AgentError::BadAssignment {
            node: self.options.node.clone(),
            image: assignment.image.clone(),
            why: e.to_string(),
        })?;
        self.state.phase = NodePhase::Downloading;
        self.save()?;
        // Say so before the (long) pull.
        let view = self.machine.view()?;
        self.report(&view).await?;
        match self.machine.stage(&image).await {
            Ok(id) => {
                tracing::info!(node = %self.options.node, image = %assignment.image, %id, "staged");
                self.note_resolved(assignment)?;
                // Staged means waiting for a slot: one report says both.
                self.state.phase = NodePhase::WaitingSlot;
                self.state.last_error = None;
                self.retry = None;
            }
            Err(e) => {
                let backoff = self
                    .retry
                    .map_or(RETRY_FIRST, |(_, b)| (b * 2).min(RETRY_MAX));
                self.retry = Some((tokio::time::Instant::now() + backoff, backoff));
                let why = error_chain(&e);
                tracing::warn!(node = %self.options.node, image = %assignment.image, error = %why, retry_in = ?backoff, "download failed");
                self.state.last_error = Some(why);
            }
        }
        self.save()?;
        Ok(Act::Nothing)
    }

    /// Whether `d` is the image the digest `target` names: that manifest,
    /// or the manifest an image index `target` resolved to here.
    fn is_target(&self, d: &Deployed, target: &str) -> bool {
        d.digest == target
            || self
                .state
                .resolved
                .as_ref()
                .is_some_and(|r| r.from == target && r.digest == d.digest)
    }

    /// After staging `assignment`: when its digest is not the manifest's
    /// (an image index, resolved to this machine's platform by the pull),
    /// remembers which manifest it became. What was staged is the staged
    /// deployment, or the booted one when the image is already booted.
    fn note_resolved(&mut self, assignment: &Assignment) -> Result<(), AgentError> {
        let view = self.machine.view()?;
        let Some(d) = view.staged.or(view.booted) else {
            return Err(AgentError::NothingBooted);
        };
        if d.digest != assignment.digest {
            self.state.resolved = Some(Resolved {
                from: assignment.digest.clone(),
                digest: d.digest,
            });
        }
        Ok(())
    }

    /// Whether the controller granted this node its reboot slot. A slot
    /// only counts when a majority of etcd confirms it, never on the word
    /// of a partitioned member — and a linearizable read is not enough for
    /// that on the etcd versions in use (see
    /// [`crate::etcd::Etcd::exists_by_consensus`]).
    ///
    /// A waiting agent asks on every wake-up, so it reads first (cheap) and
    /// only a slot the read says exists is confirmed by consensus (a raft
    /// proposal, a WAL write on every member): once per reboot, not once
    /// per wake-up of every waiting machine — which, with a thousand
    /// machines waiting, more than halved the benchmark's speed.
    async fn slot_granted(&self, assignment: &Assignment) -> Result<bool, AgentError> {
        let key = format!("{SLOTS_ROOT}{}/{}", assignment.rollout, self.options.node);
        if self
            .etcd
            .get_json::<serde_json::Value>(&key)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        Ok(self.etcd.exists_by_consensus(&key).await?)
    }

    /// Writes the report when it changed (compare-and-swap on the last one
    /// written: a second agent under the same name is caught here too).
    async fn report(&mut self, view: &MachineView) -> Result<(), AgentError> {
        let booted = view.booted.as_ref().ok_or(AgentError::NothingBooted)?;
        let health = match (
            &self.state.healthy_since,
            view.health.as_ref().map(|h| h.state),
        ) {
            (Some(h), Some(Assessment::Good)) => Health {
                state: HealthState::Healthy,
                since: h.since,
            },
            (_, Some(Assessment::Failed)) => Health {
                state: HealthState::Unhealthy,
                since: Timestamp::now(),
            },
            _ => Health {
                state: HealthState::Unknown,
                since: Timestamp::now(),
            },
        };
        let image_state = |d: &Deployed| ImageState {
            image: d.image.clone(),
            digest: d.digest.clone(),
            deployment: d.deployment.clone(),
            resolved_from: self
                .state
                .resolved
                .as_ref()
                .filter(|r| r.digest == d.digest)
                .map(|r| r.from.clone()),
        };
        let mut report = NodeReport {
            version: Version,
            labels: self.options.labels.clone(),
            booted: image_state(booted),
            staged: view.staged.as_ref().map(image_state),
            phase: self.state.phase,
            health,
            boot_id: self.boot_id.clone(),
            rollout: self.state.assignment.as_ref().map(|a| a.rollout.clone()),
            last_error: self.state.last_error.clone(),
            updated_at: Timestamp::now(),
        };
        let key = keys::report(&self.options.node);
        self.settle_unsure_report(&key).await?;
        let previous = match &self.last_report {
            Some((last, rev)) => {
                if same_report(last, &report) {
                    return Ok(());
                }
                // Unhealthy/unknown "since" is not news by itself.
                if last.health.state == report.health.state {
                    report.health.since = last.health.since;
                }
                Some(*rev)
            }
            // First report of this process: take over whatever is there
            // (the previous run's), by its revision.
            None => self
                .etcd
                .get_json::<serde_json::Value>(&key)
                .await?
                .map(|v| v.mod_revision),
        };
        let abs = self.etcd.key(&key);
        let compare = match previous {
            Some(rev) => Compare::mod_revision(abs.clone(), CompareOp::Equal, rev),
            None => Compare::create_revision(abs.clone(), CompareOp::Equal, 0),
        };
        let put = TxnOp::put(abs, report.to_json(), None);
        let outcome = match self.etcd.txn(&key, vec![compare], vec![put], None).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.unsure_report = Some(report);
                return Err(e.into());
            }
        };
        if !outcome.succeeded {
            self.last_report = None;
            return Err(AgentError::Duplicate {
                node: self.options.node.clone(),
            });
        }
        // The put is the transaction's only write: its revision is the
        // report's mod revision.
        let rev = outcome.revision;
        self.last_report = Some((report, rev));
        Ok(())
    }

    /// After a report write without an answer, finds out whether it was
    /// applied: the key holds exactly that report → it was, and its
    /// revision is ours; the key is unchanged → it was not; anything else
    /// → another agent wrote it. Without this, the next compare against the
    /// revision before the lost write failed, and the agent took its own
    /// write for a second agent and exited (seen when etcd lost its
    /// majority mid-write).
    async fn settle_unsure_report(&mut self, key: &str) -> Result<(), AgentError> {
        let Some(attempted) = self.unsure_report.take() else {
            return Ok(());
        };
        let current = match self.etcd.get_json::<NodeReport>(key).await {
            Ok(current) => current,
            Err(e) => {
                self.unsure_report = Some(attempted);
                return Err(e.into());
            }
        };
        let known = self.last_report.as_ref().map(|(_, rev)| *rev);
        match current {
            Some(v) if v.value == attempted => {
                self.last_report = Some((attempted, v.mod_revision));
            }
            // Nothing written yet by this process: the next report takes
            // over whatever is there, as a first report does.
            _ if known.is_none() => {}
            Some(v) if known == Some(v.mod_revision) => {}
            _ => {
                self.last_report = None;
                return Err(AgentError::Duplicate {
                    node: self.options.node.clone(),
                });
            }
        }
        Ok(())
    }

    fn save(&self) -> Result<(), AgentError> {
        self.machine.save_state(&self.state)
    }

    /// The agent's state, for tests and status.
    pub fn state(&self) -> &AgentState {
        &self.state
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Nothing,
    Reboot,
}

/// Equal but for the time written.
fn same_report(a: &NodeReport, b: &NodeReport) -> bool {
    let mut b = b.clone();
    b.updated_at = a.updated_at;
    if a.health.state == b.health.state {
        b.health.since = a.health.since;
    }
    *a == b
}

/// An error and its sources on one line: osctl-store's `one_line`, the
/// form every osctl crate logs and records errors in.
pub use osctl_store::one_line as error_chain;
