//! The rollout controller: `osctl fleet controller`.
//!
//! Several may run; one leads (etcd's election API). The leader repeats one
//! reconcile: bring its view (`controller/view.rs`) of every rollout, node and
//! slot up to date, let [`plan`](crate::plan::plan) decide, write the
//! decisions. The view is listed when the leader starts and kept from the
//! leader's watch after that (re-listed after a lost history, a failed watch or
//! a failed compare): re-reading the whole fleet on every wake-up was most of
//! the leader's cost. Every write the leader makes carries its leadership
//! [`Fence`] and compares what it read: a deposed leader (paused, partitioned,
//! slow) writes nothing, so there is never a second hand on the fleet, a view
//! that lags etcd makes a write fail rather than go through, and a successor
//! starts from what etcd holds — the view is a cache of etcd, nothing in it is
//! the controller's own.
//!
//! # Write order
//!
//! Within one reconcile, per rollout: first the releases of slots whose node
//! the plan has judged (back and healthy, or failed: it no longer needs its
//! slot, and if the status below is lost the next plan judges it again from the
//! same report), all in one transaction, so that a node finishing and the next
//! one starting take one reconcile, not two; then the grants (each its own
//! transaction against the pool's guard key, so the count can never pass
//! `maxUnavailable` whatever else happens); then the assignments; then the
//! status with the control requests it applied deleted (one transaction,
//! compare-and-swap on the status); last, the released slots' leases are
//! revoked (cleanup, off the path to the next grant). A status is only written
//! when every slot it counts on was granted: a status saying "rebooting" for a
//! node without a slot would read as a node that never came back.

mod view;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use osctl_image::{FetchOptions, ImageRef, Source};

use crate::admin::AppliedRollout;
use crate::agent::error_chain;
use crate::etcd::{
    CONTROLLER_ELECTION, Compare, CompareOp, Etcd, EtcdError, FLEETLOCK_ROOT, Fence, Leadership,
    MAX_BATCH, SLOTS_ROOT, Slots, TxnOp,
};
use crate::keys;
use crate::model::{NodeState, RolloutPhase};
use crate::plan::{Action, ControlRequest, NodeInput, PlanInput, Slot, plan};
use view::{HeldSlot, NodeRecords, RolloutRecords, View};

/// The leader's lease: how long a dead leader blocks a successor.
pub const LEADER_TTL: Duration = Duration::from_secs(5);
/// How often the leader reconciles when nothing else wakes it.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// How long the leader lets a burst of changes gather before it
/// reconciles: long enough for a batch of agents' reports to arrive, short
/// against a reboot.
const COALESCE: Duration = Duration::from_millis(20);
/// etcd refuses transactions with more operations than this (its default
/// `--max-txn-ops` is 128); assignments are written in chunks below it.
const MAX_TXN_OPS: usize = 100;
/// First and longest wait before campaigning again after a campaign failed
/// (etcd without a majority, the campaign's lease lost).
const CAMPAIGN_RETRY_FIRST: Duration = Duration::from_millis(200);
const CAMPAIGN_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the controller can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("rollout {rollout}: image {image}: {why}")]
    Image {
        rollout: String,
        image: String,
        why: String,
    },
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Who this controller is, in the election (host name, pid).
    pub id: String,
    /// How long a node may hold a reboot slot.
    pub reboot_deadline: Duration,
    pub tick: Duration,
    /// How the controller reads manifests to resolve a rollout's image.
    pub fetch: FetchOptions,
}

/// Campaigns, leads until the leadership is lost, campaigns again; returns
/// only on an error etcd cannot recover from.
pub async fn run(etcd: Etcd, options: ControllerOptions) -> Result<(), ControllerError> {
    let mut retry = CAMPAIGN_RETRY_FIRST;
    loop {
        let leadership = match Leadership::campaign(
            &etcd,
            CONTROLLER_ELECTION,
            &options.id,
            LEADER_TTL,
        )
        .await
        {
            Ok(l) => l,
            // Leadership is mostly lost because etcd lost its majority,
            // and then the next campaign's lease grant fails too: wait
            // for etcd instead of leaving the fleet without a controller.
            Err(e) if campaign_may_succeed_later(&e) => {
                tracing::warn!(id = %options.id, error = %error_chain(&e), retry_in = ?retry, "campaign failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(CAMPAIGN_RETRY_MAX);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        retry = CAMPAIGN_RETRY_FIRST;
        tracing::info!(id = %options.id, "leading the fleet");
        let fence = leadership.fence();
        // Listed at the first reconcile, kept from its watch after that;
        // any change in the fleet (a report, a control, an applied spec)
        // wakes the leader at once, the tick is the fallback. A new term
        // starts from a new listing: nothing is carried over.
        let mut view = View::default();
        // The revision of this leader's last write: the next plan waits
        // until the view holds it.
        let mut written = 0;
        loop {
            if leadership.is_lost() {
                tracing::warn!(id = %options.id, "leadership lost");
                break;
            }
            match reconcile(
                &etcd,
                &fence,
                &options,
                &mut view,
                &mut written,
                Timestamp::now(),
            )
            .await
            {
                // Assignments left over and written cleanly: the next plan
                // at once, not after a wake-up (a conflict relists first
                // and waits, so this is never a loop without writes).
                Ok(true) => continue,
                Ok(false) => {}
                Err(ControllerError::Etcd(e @ EtcdError::Fenced { .. })) => {
                    tracing::warn!(id = %options.id, error = %e, "deposed");
                    break;
                }
                Err(e) => {
                    // Whatever failed, the view may now disagree with etcd
                    // (a write whose answer was lost): read it all again.
                    view.invalidate();
                    tracing::warn!(error = %error_chain(&e), "reconcile");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(options.tick) => {}
                () = leadership.lost() => {}
                () = view.changed() => {
                    // Let a burst (a batch of agents reporting) arrive
                    // before planning again.
                    tokio::time::sleep(COALESCE).await;
                }
            }
        }
    }
}

/// Whether a failed campaign is worth repeating: everything but a bad
/// election name or configuration, which no retry changes.
fn campaign_may_succeed_later(e: &EtcdError) -> bool {
    !matches!(
        e,
        EtcdError::Config(_) | EtcdError::InvalidName { .. } | EtcdError::Encode { .. }
    )
}

/// What the writes of one reconcile tell the view.
#[derive(Debug, Default)]
struct Written {
    /// The revision of the last write that went through.
    revision: i64,
    /// A write failed its compare, or a grant found the pool fuller than
    /// the view said: the view disagrees with etcd.
    conflict: bool,
    /// Time spent planning (for the debug log: the rest is I/O).
    planning: Duration,
    /// A plan left assignments for the next (plan::MAX_ASSIGNMENTS_PER_PLAN).
    more: bool,
}

/// One reconcile of every rollout at `now`, on `view` brought up to date
/// (at least to `written`, the leader's last write, which it moves on).
/// True when a plan left assignments for the next one and nothing
/// conflicted.
async fn reconcile(
    etcd: &Etcd,
    fence: &Fence,
    options: &ControllerOptions,
    view: &mut View,
    written: &mut i64,
    now: Timestamp,
) -> Result<bool, ControllerError> {
    let started = std::time::Instant::now();
    view.refresh(etcd, *written).await?;
    let read = started.elapsed();
    // Fail closed, as a listing did: no plan on records that do not read.
    view.check(keys::NODES)?;
    view.check(keys::ROLLOUTS)?;
    let governing = governing(&view.nodes, &view.rollouts);
    let no_holders = BTreeMap::new();
    let mut outcome = Written::default();
    for (name, records) in &view.rollouts {
        let Some((applied, _)) = &records.applied else {
            continue;
        };
        let holders = view.slots.get(name).unwrap_or(&no_holders);
        // Other rollouts of the same FleetLock group: their pools may hold
        // the group's locks.
        let group = crate::fleetlock::group_of(&applied.rollout);
        let same_group: Vec<&str> = view
            .rollouts
            .iter()
            .filter(|(other, r)| {
                *other != name
                    && group.is_some()
                    && r.applied
                        .as_ref()
                        .is_some_and(|(a, _)| crate::fleetlock::group_of(&a.rollout) == group)
            })
            .map(|(other, _)| other.as_str())
            .collect();
        let result = match view.check(&format!("{SLOTS_ROOT}{name}/")) {
            Ok(()) => {
                reconcile_rollout(
                    etcd,
                    fence,
                    options,
                    now,
                    name,
                    applied,
                    records,
                    &view.nodes,
                    holders,
                    &governing,
                    &same_group,
                    &mut outcome,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            // One rollout's trouble (an image that does not resolve) must
            // not stop the others; a lost leadership stops everything.
            if matches!(e, ControllerError::Etcd(EtcdError::Fenced { .. })) {
                return Err(e);
            }
            if matches!(e, ControllerError::Etcd(_)) {
                outcome.conflict = true;
            }
            tracing::warn!(rollout = %name, error = %error_chain(&e), "rollout not reconciled");
        }
    }
    *written = (*written).max(outcome.revision);
    if outcome.conflict {
        view.invalidate();
    }
    // What one wake-up costs (hack/bench-fleet reads these).
    tracing::debug!(
        revision = view.revision(),
        read_us = read.as_micros(),
        plan_us = outcome.planning.as_micros(),
        total_us = started.elapsed().as_micros(),
        "reconciled"
    );
    Ok(outcome.more && !outcome.conflict)
}

#[allow(clippy::too_many_arguments)]
async fn reconcile_rollout(
    etcd: &Etcd,
    fence: &Fence,
    options: &ControllerOptions,
    now: Timestamp,
    name: &str,
    applied: &AppliedRollout,
    records: &RolloutRecords,
    nodes: &BTreeMap<String, NodeRecords>,
    holders: &BTreeMap<String, HeldSlot>,
    governing: &BTreeMap<String, String>,
    same_group: &[&str],
    outcome: &mut Written,
) -> Result<(), ControllerError> {
    let status = records.status.as_ref().map(|(s, _)| s.clone());
    let status_rev = records.status.as_ref().map(|(_, r)| *r);
    let pending_controls = records
        .controls
        .values()
        .filter(|(rev, _)| {
            status
                .as_ref()
                .and_then(|s| s.last_control_revision)
                .is_none_or(|last| *rev > last)
        })
        .count();
    // A finished rollout is looked at again only when asked to (undo). An
    // aborted one is followed until no node is between its slot and its
    // verdict: a node that was granted its reboot before the abort still
    // reboots, and its slot must be released and its outcome recorded.
    if let Some(s) = &status
        && s.generation == applied.generation
        && pending_controls == 0
        && (s.phase == RolloutPhase::Completed
            || (s.phase == RolloutPhase::Aborted && !s.nodes.values().any(in_flight)))
    {
        return Ok(());
    }
    let (image, digest) = match &status {
        Some(s) if s.generation == applied.generation && !s.digest.is_empty() => (
            pinned(name, &applied.rollout.spec.image_ref, &s.digest)?,
            s.digest.clone(),
        ),
        _ => resolve(name, &applied.rollout.spec.image_ref, &options.fetch).await?,
    };
    // The locks of the rollout's FleetLock group held outside this pool:
    // in the group's own pool (taken before this rollout governed it) and,
    // as `fleetlock.<id>`, in the pools of other rollouts of the group
    // (taken while one of those governed it). Those machines are rebooting
    // too. The grants below compare these pools' guards, so a lock taken
    // after this read fails them and the next reconcile counts it.
    let mut counted = Vec::new();
    let mut group_locks = Vec::new();
    if let Some(group) = crate::fleetlock::group_of(&applied.rollout) {
        let own = Slots::with_root(etcd, FLEETLOCK_ROOT)
            .read_pool(group)
            .await?;
        group_locks.extend(
            own.holders
                .iter()
                .map(|h| format!("{FLEETLOCK_ROOT}{group}/{}", h.name)),
        );
        counted.push(own);
        for other in same_group {
            let read = Slots::new(etcd).read_pool(other).await?;
            group_locks.extend(
                read.holders
                    .iter()
                    .filter(|h| h.name.starts_with(crate::fleetlock::HOLDER_PREFIX))
                    .map(|h| format!("{SLOTS_ROOT}{other}/{}", h.name)),
            );
            counted.push(read);
        }
    }
    let slot_of = |node: &str| {
        holders
            .values()
            .find(|h| h.holder.name == node)
            .map(|h| Slot {
                deadline: timestamp(h.holder.deadline),
                boot_id: h.holder.boot_id.clone(),
            })
    };
    let mut inputs = Vec::new();
    let mut unreadable = Vec::new();
    for (node, rec) in nodes {
        let selected = rec
            .report
            .as_ref()
            .is_some_and(|r| applied.rollout.spec.selects(&r.labels));
        let known = status.as_ref().is_some_and(|s| s.nodes.contains_key(node));
        if !selected && !known {
            if rec.report_unreadable() {
                unreadable.push(node.clone());
            }
            continue;
        }
        inputs.push(NodeInput {
            name: node.clone(),
            present: rec.present,
            report: rec.report.clone(),
            assignment: rec.assignment.as_ref().map(|(a, _)| a.clone()),
            slot: slot_of(node),
            governed_by: governing.get(node).cloned(),
        });
    }
    let input = PlanInput {
        rollout: applied.rollout.clone(),
        generation: applied.generation,
        image,
        digest,
        status: status.clone(),
        controls: records
            .controls
            .values()
            .map(|(revision, c)| ControlRequest {
                revision: *revision,
                control: c.clone(),
            })
            .collect(),
        other_holders: holders
            .values()
            .filter(|h| !inputs.iter().any(|n| n.name == h.holder.name))
            .map(|h| h.holder.name.clone())
            .chain(group_locks)
            .collect(),
        unreadable,
        nodes: inputs,
        reboot_deadline: options.reboot_deadline,
    };
    let planning = std::time::Instant::now();
    let decided = plan(&input, now);
    outcome.planning += planning.elapsed();
    outcome.more |= decided.more;
    // The semaphore's cap, from the same pool the plan counts: the nodes
    // this rollout governs (a percent of nodes other rollouts govern would
    // raise it past what the plan allows).
    let pool = input
        .nodes
        .iter()
        .filter(|n| n.governed_by.as_deref().is_none_or(|g| g == name))
        .count();
    let limit = applied.rollout.spec.max_unavailable.resolve(pool);

    // 1. Releases: the plan judged these nodes; their slots go to the next,
    // in one transaction against the holder keys as the view has them (a
    // slot that changed since — expired, say — fails it, and the next
    // reconcile lists again). Like every release, the guard is not bumped
    // (etcd/slots.rs). Their leases are revoked after the status, off the
    // path from a node's verdict to the next node's grant.
    let slots = Slots::new(etcd);
    let mut released_leases = Vec::new();
    let mut releases = Vec::new();
    for action in &decided.actions {
        let Action::ReleaseSlot { node } = action else {
            continue;
        };
        let Some(held) = holders.get(node) else {
            continue;
        };
        let key = etcd.key(&slots.holder_rel(name, node));
        releases.push((
            Compare::mod_revision(key.clone(), CompareOp::Equal, held.mod_revision),
            TxnOp::delete(key, None),
        ));
        released_leases.push(held.holder.lease);
    }
    // The plan gave the released slots' capacity to its grants: a release
    // that failed its compare (the slot changed: expired, say) leaves
    // that capacity taken, so no grant goes out before the next plan.
    if !write_chunked(etcd, fence, name, releases, outcome).await? {
        return Ok(());
    }
    // 2. Grants, a batch per transaction: every one must hold before the
    // status may say so.
    let wanted: Vec<(String, Option<String>)> = decided
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::GrantSlot { node, boot_id, .. } => Some((node.clone(), Some(boot_id.clone()))),
            _ => None,
        })
        .collect();
    for batch in wanted.chunks(MAX_BATCH) {
        let granted = slots
            .grant_many_in_boots(
                name,
                batch,
                limit,
                options.reboot_deadline,
                &mut counted,
                Some(fence),
            )
            .await?;
        let Some(granted) = granted else {
            tracing::info!(rollout = %name, "a FleetLock lock of the group was taken while counted; planning again");
            outcome.conflict = true;
            return Ok(());
        };
        if granted.len() < batch.len() {
            tracing::warn!(rollout = %name, wanted = batch.len(), granted = granted.len(), limit, "pool full; planning again");
            outcome.conflict = true;
            return Ok(());
        }
    }
    // 3. Assignments, in chunks etcd accepts.
    let mut assignments = Vec::new();
    for action in &decided.actions {
        let (node, op) = match action {
            Action::Assign { node, assignment } => (
                node,
                TxnOp::put(
                    etcd.key(&keys::assignment(node)),
                    assignment.to_json(),
                    None,
                ),
            ),
            Action::ClearAssignment { node } => {
                (node, TxnOp::delete(etcd.key(&keys::assignment(node)), None))
            }
            _ => continue,
        };
        // Against the assignment as read: nothing else writes it, so a
        // mismatch means a second leader — the fence catches that first.
        let key = etcd.key(&keys::assignment(node));
        let compare = match nodes.get(node).and_then(|r| r.assignment.as_ref()) {
            Some((_, rev)) => Compare::mod_revision(key, CompareOp::Equal, *rev),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        assignments.push((compare, op));
    }
    write_chunked(etcd, fence, name, assignments, outcome).await?;
    // 4. The status, with the controls it applied deleted.
    let mut new_status = decided.status;
    let unchanged = status.as_ref().is_some_and(|old| {
        let mut a = old.clone();
        a.updated_at = new_status.updated_at;
        a == new_status
    });
    let applied_controls: Vec<&String> = records
        .controls
        .iter()
        .filter(|(_, (rev, _))| {
            new_status
                .last_control_revision
                .is_some_and(|last| *rev <= last)
        })
        .map(|(k, _)| k)
        .collect();
    if !unchanged || !applied_controls.is_empty() {
        new_status.updated_at = now;
        let key = etcd.key(&keys::rollout_status(name));
        let mut compares = vec![match status_rev {
            Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        }];
        let mut ops = vec![TxnOp::put(key, new_status.to_json(), None)];
        for k in applied_controls {
            compares.push(Compare::create_revision(etcd.key(k), CompareOp::Greater, 0));
            ops.push(TxnOp::delete(etcd.key(k), None));
        }
        write(etcd, fence, name, compares, ops, outcome).await?;
    }
    // 5. The released slots' leases: they guard no key any more, and would
    // otherwise live until the reboot deadline.
    let revokes = released_leases
        .into_iter()
        .filter(|&lease| lease != 0)
        .map(|lease| etcd.revoke_lease(lease));
    for r in futures_util::future::join_all(revokes).await {
        if let Err(e) = r {
            // Harmless: the lease ends by its TTL.
            tracing::debug!(rollout = %name, error = %error_chain(&e), "revoking a released slot's lease");
        }
    }
    Ok(())
}

/// A node between its reboot slot and its verdict.
fn in_flight(state: &NodeState) -> bool {
    matches!(
        state,
        NodeState::Rebooting { .. } | NodeState::Verifying { .. } | NodeState::Reverting { .. }
    )
}

/// One fenced transaction; a failed compare is logged and marks the view
/// stale (the next reconcile lists again), a lost fence is an error.
/// `writes` (each a compare and its operation) in transactions of at most
/// [`MAX_TXN_OPS`] operations, in order; true when every one went through.
async fn write_chunked(
    etcd: &Etcd,
    fence: &Fence,
    rollout: &str,
    writes: Vec<(Compare, TxnOp)>,
    written: &mut Written,
) -> Result<bool, ControllerError> {
    let mut writes = writes.into_iter().peekable();
    let mut all = true;
    while writes.peek().is_some() {
        let (compares, ops): (Vec<Compare>, Vec<TxnOp>) = writes.by_ref().take(MAX_TXN_OPS).unzip();
        all &= write(etcd, fence, rollout, compares, ops, written).await?;
    }
    Ok(all)
}

async fn write(
    etcd: &Etcd,
    fence: &Fence,
    rollout: &str,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    written: &mut Written,
) -> Result<bool, ControllerError> {
    let what = format!("rollout {rollout}");
    let outcome = etcd.txn(&what, compares, ops, Some(fence)).await?;
    if outcome.succeeded {
        // A transaction that wrote: the header's revision is its own.
        written.revision = written.revision.max(outcome.revision);
    } else {
        tracing::info!(%rollout, "records changed since read; reconciling again");
        written.conflict = true;
    }
    Ok(outcome.succeeded)
}

/// Which rollout governs each node: a node mid-reboot stays with the
/// rollout that gave it its slot; otherwise, of the rollouts still running
/// whose selector matches it, the one applied first (lowest create
/// revision) keeps it until it is finished; a later rollout for the same
/// pool takes over the nodes once the earlier one completed, was aborted or
/// halted — so a halted rollout never blocks the one that fixes it.
fn governing(
    nodes: &BTreeMap<String, NodeRecords>,
    rollouts: &BTreeMap<String, RolloutRecords>,
) -> BTreeMap<String, String> {
    let mut running: Vec<(&str, i64, &AppliedRollout)> = rollouts
        .iter()
        .filter_map(|(name, r)| {
            let (applied, created) = r.applied.as_ref()?;
            let done = r.status.as_ref().is_some_and(|(s, _)| {
                s.generation == applied.generation
                    && matches!(
                        s.phase,
                        RolloutPhase::Completed | RolloutPhase::Aborted | RolloutPhase::Halted
                    )
            });
            (!done).then_some((name.as_str(), *created, applied))
        })
        .collect();
    running.sort_by_key(|(_, created, _)| *created);
    let mut out = BTreeMap::new();
    // A node between its slot and its verdict stays with the rollout that
    // sent it, whatever that rollout's phase: handing it to another one
    // mid-reboot would let that one count it available and reboot a second
    // node beside it.
    for (name, r) in rollouts {
        if let Some((s, _)) = &r.status {
            for (node, state) in &s.nodes {
                if in_flight(state) {
                    out.entry(node.clone()).or_insert_with(|| name.clone());
                }
            }
        }
    }
    for (node, rec) in nodes {
        let Some(report) = &rec.report else { continue };
        if out.contains_key(node) {
            continue;
        }
        if let Some((name, _, _)) = running
            .iter()
            .find(|(_, _, a)| a.rollout.spec.selects(&report.labels))
        {
            out.insert(node.clone(), name.to_string());
        }
    }
    out
}

/// Resolves a rollout's image to its manifest digest, through the machine's
/// signature policy like every pull: an image the controller's policy
/// refuses never reaches a node.
async fn resolve(
    rollout: &str,
    image: &ImageRef,
    fetch: &FetchOptions,
) -> Result<(String, String), ControllerError> {
    let err = |why: String| ControllerError::Image {
        rollout: rollout.to_string(),
        image: image.to_string(),
        why,
    };
    let source = Source::open(image, fetch)
        .await
        .map_err(|e| err(error_chain(&e)))?;
    let resolved = source.resolve().await.map_err(|e| err(error_chain(&e)))?;
    // The digest a node pulls: the index's when there is one (each node
    // picks its platform), else the manifest's.
    let digest = resolved
        .index_digest()
        .unwrap_or(resolved.digest())
        .to_string();
    Ok((pinned(rollout, image, &digest)?, digest))
}

/// `image` pinned to `digest`: the reference nodes pull.
fn pinned(rollout: &str, image: &ImageRef, digest: &str) -> Result<String, ControllerError> {
    match image {
        ImageRef::Registry(r) => Ok(format!("{}/{}@{digest}", r.registry(), r.repository())),
        other => Err(ControllerError::Image {
            rollout: rollout.to_string(),
            image: other.to_string(),
            why: "fleet rollouts need a registry image (nodes pull it by digest)".into(),
        }),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    // A deadline before 1970 or past jiff's range is only a broken clock;
    // such a slot reads as expired long ago.
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}
