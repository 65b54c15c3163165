//! The FleetLock server: `osctl fleet fleetlock`, reboot locks for machines
//! that update themselves (Fedora CoreOS's Zincati), counted in the same
//! etcd as the fleet's rollouts.
//!
//! # Protocol
//!
//! What Zincati's client speaks: `POST /v1/pre-reboot` and
//! `POST /v1/steady-state` with the header `fleet-lock-protocol: true` and
//! the body `{"client_params":{"id":"…","group":"…"}}`; 200 with an empty
//! body on success, otherwise a 4xx/5xx with `{"kind":"…","value":"…"}`
//! ([`Kind`] lists the kinds). Zincati calls steady-state at every start,
//! holding a lock or not, so a steady-state by an id that holds nothing is
//! a success. The server also answers `GET /metrics` ([`crate::metrics`]).
//!
//! # Model
//!
//! A lock is a reboot slot ([`Slots`]). A group that a running rollout
//! governs (its selector has `pool: <group>`) takes its locks in that
//! rollout's slot pool, as holder `fleetlock.<id>`, under the rollout's
//! `maxUnavailable`, windows, pause and halt: the one guard key counts
//! osctl nodes and FleetLock clients together. Any other group has a pool of
//! its own under [`FLEETLOCK_ROOT`] with `--default-slots` slots.
//!
//! Locks are **durable** slots ([`Slots::grant_durable`]): no lease, a
//! deadline in the record. A lock whose deadline passes without a
//! steady-state is *failed* — its machine did not come back — and keeps its
//! slot until that id calls steady-state (or an admin runs `fleet unlock`):
//! an expired lock never frees capacity, so machines that fail to come back
//! cannot go down one after another (kube-hetzner #1182). Failure is derived
//! from the record and the clock, not written by a timer, so it holds even
//! while this server is down; error messages and metrics name failed locks.

mod locks;
mod protocol;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;

use crate::admin::{self, AppliedRollout, NodeView};
use crate::etcd::{Etcd, EtcdError, FLEETLOCK_ROOT, Grant, Holder, PoolRead, Slots};
use crate::keys::{self, RolloutKey};
use crate::model::{NodeState, RolloutPhase, RolloutStatus};
use crate::plan;
use crate::spec::Rollout;
use crate::window;

pub use locks::{LockView, locks, unlock};
pub use protocol::{
    Kind, MAX_NAME_LEN, METRICS, PRE_REBOOT, PROTOCOL_HEADER, PROTOCOL_VALUE, Refusal,
    STEADY_STATE, check_group, check_id, serve,
};

/// The label of a rollout's selector that names a FleetLock group.
pub const GROUP_LABEL: &str = "pool";
/// How a FleetLock client is named among a rollout's slot holders.
pub const HOLDER_PREFIX: &str = "fleetlock.";
/// Slots of a group no rollout governs, unless `--default-slots` says.
pub const DEFAULT_SLOTS: usize = 1;
/// How long a lock may be held before it counts as failed.
pub const DEFAULT_REBOOT_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// How often a pre-reboot counts again when a pool of its group changed
/// between its count and its grant, and the waits between.
const MAX_RECOUNTS: u32 = 20;
const RECOUNT_BACKOFF: Duration = Duration::from_millis(10);
const RECOUNT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct FleetLockOptions {
    /// Slots per group that no rollout governs (at least 1).
    pub default_slots: usize,
    /// How long a lock may be held before it counts as failed.
    pub reboot_deadline: Duration,
}

impl Default for FleetLockOptions {
    fn default() -> FleetLockOptions {
        FleetLockOptions {
            default_slots: DEFAULT_SLOTS,
            reboot_deadline: DEFAULT_REBOOT_DEADLINE,
        }
    }
}

/// Where a group's locks are counted.
#[derive(Debug, Clone)]
enum Pool {
    /// In the slot pool of this rollout, under its rules.
    Rollout {
        name: String,
        rollout: Box<Rollout>,
        status: Option<Box<RolloutStatus>>,
    },
    /// In the group's own pool under [`FLEETLOCK_ROOT`].
    Own,
}

/// One rollout as read for the group lookup.
pub(crate) struct RolloutRead {
    applied: AppliedRollout,
    created: i64,
    status: Option<RolloutStatus>,
}

/// The FleetLock server's logic, apart from the socket.
#[derive(Debug, Clone)]
pub struct FleetLock {
    etcd: Etcd,
    options: FleetLockOptions,
}

impl FleetLock {
    pub fn new(etcd: Etcd, options: FleetLockOptions) -> FleetLock {
        FleetLock { etcd, options }
    }

    /// `pre-reboot`: lock for `id` in `group`, or say why not. Counted
    /// again from the top — governance included — whenever a pool of the
    /// group changed between the count and the grant ([`Grant::Moved`]):
    /// a rollout that started governing the group in between, or the
    /// controller granting in a pool this count included.
    pub async fn pre_reboot(&self, group: &str, id: &str, now: Timestamp) -> Result<(), Refusal> {
        check_group(group)?;
        check_id(id)?;
        let mut backoff = RECOUNT_BACKOFF;
        for _ in 0..MAX_RECOUNTS {
            match self.try_pre_reboot(group, id, now).await? {
                Grant::Moved => {
                    tokio::time::sleep(crate::etcd::client::jittered(backoff)).await;
                    backoff = (backoff * 2).min(RECOUNT_BACKOFF_MAX);
                }
                grant => return self.granted(group, grant),
            }
        }
        Err(EtcdError::Contention {
            op: "fleetlock pre-reboot",
            key: format!("{FLEETLOCK_ROOT}{group}"),
            attempts: MAX_RECOUNTS,
        }
        .into())
    }

    /// One count and grant; [`Grant::Full`] of a pool with other locks
    /// of the group elsewhere is answered here, with them named.
    async fn try_pre_reboot(
        &self,
        group: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Grant, Refusal> {
        let deadline = self.options.reboot_deadline;
        let rollouts = self.rollouts().await?;
        let pool = pool_of(group, &rollouts);
        // The group's locks in every pool it may have had: its own, and
        // those of every rollout with `pool: <group>`. Governance changes
        // (a rollout starts, completes, halts) while locks are held; a
        // machine holding a lock in one pool is rebooting whatever pool
        // the group counts in now. The grant compares every pool counted
        // here (`counted`), the one it grants in too.
        let (locks, counted) = self.group_locks(group, &rollouts).await?;
        // Recursive across those pools, and a failed lock's holder keeps
        // its place.
        if let Some(held) = locks.iter().find(|l| l.id == id) {
            return Ok(Grant::AlreadyHeld {
                deadline: held.deadline,
            });
        }
        let here = match &pool {
            Pool::Own => None,
            Pool::Rollout { name, .. } => Some(name.as_str()),
        };
        let elsewhere: Vec<String> = locks
            .iter()
            .filter(|l| l.rollout.as_deref() != here)
            .map(GroupLock::describe)
            .collect();
        match pool {
            Pool::Own => {
                let slots = Slots::with_root(&self.etcd, FLEETLOCK_ROOT);
                let limit = self.options.default_slots.saturating_sub(elsewhere.len());
                let grant = slots
                    .grant_durable_within(group, id, &|_| limit, deadline, &counted)
                    .await?;
                if let Grant::Full { holders } = &grant
                    && !elsewhere.is_empty()
                {
                    return Err(Refusal::new(
                        Kind::NoSlot,
                        describe_own_full(group, holders, &elsewhere, SystemTime::now()),
                    ));
                }
                if let Grant::Granted { deadline } = &grant {
                    tracing::info!(group, id, deadline = %stamp(*deadline), "fleetlock: lock granted in the group's own pool");
                }
                Ok(grant)
            }
            Pool::Rollout {
                name,
                rollout,
                status,
            } => {
                let holder = format!("{HOLDER_PREFIX}{id}");
                let slots = Slots::new(&self.etcd);
                may_reboot(group, &name, &rollout, status.as_deref(), now)?;
                // The rollout's own rule: slots only while unavailable + 1
                // ≤ maxUnavailable, where nodes down without a slot count
                // too (a node whose slot expired is one of them), and so
                // do the group's locks held in another pool.
                let pool = status.as_deref().map_or(0, pool_size);
                let max = rollout.spec.max_unavailable.resolve(pool);
                let views = self.node_views(status.as_deref()).await?;
                let down = |holders: &[Holder]| {
                    let mut down = down_nodes(status.as_deref(), &views, holders);
                    down.extend(elsewhere.iter().cloned());
                    down
                };
                // Who is down without a slot depends on who holds one: the
                // limit is computed from the very holders the grant compares
                // against, so a slot expiring in between is counted once,
                // as a holder or as its node down.
                let limit = |holders: &[Holder]| max.saturating_sub(down(holders).len());
                let grant = slots
                    .grant_durable_within(&name, &holder, &limit, deadline, &counted)
                    .await?;
                if let Grant::Full { holders } = &grant {
                    return Err(Refusal::new(
                        Kind::NoSlot,
                        describe_rollout_full(
                            group,
                            &name,
                            max,
                            holders,
                            &down(holders),
                            SystemTime::now(),
                        ),
                    ));
                }
                if let Grant::Granted { deadline } = &grant {
                    tracing::info!(group, id, rollout = %name, deadline = %stamp(*deadline), "fleetlock: lock granted in the rollout's pool");
                }
                Ok(grant)
            }
        }
    }

    /// Every lock of `group`'s clients: in the group's own pool and in the
    /// pools of the rollouts with `pool: <group>`, with each pool's read
    /// (what a grant that counted them compares).
    async fn group_locks(
        &self,
        group: &str,
        rollouts: &BTreeMap<String, RolloutRead>,
    ) -> Result<(Vec<GroupLock>, Vec<PoolRead>), Refusal> {
        let own = Slots::with_root(&self.etcd, FLEETLOCK_ROOT)
            .read_pool(group)
            .await?;
        let mut locks: Vec<GroupLock> = own
            .holders
            .iter()
            .map(|h| GroupLock {
                id: h.name.clone(),
                rollout: None,
                deadline: h.deadline,
            })
            .collect();
        let mut counted = vec![own];
        let slots = Slots::new(&self.etcd);
        for (name, _) in rollouts
            .iter()
            .filter(|(_, r)| group_of(&r.applied.rollout) == Some(group))
        {
            let read = slots.read_pool(name).await?;
            for h in &read.holders {
                if let Some(id) = h.name.strip_prefix(HOLDER_PREFIX) {
                    locks.push(GroupLock {
                        id: id.to_string(),
                        rollout: Some(name.clone()),
                        deadline: h.deadline,
                    });
                }
            }
            counted.push(read);
        }
        Ok((locks, counted))
    }

    fn granted(&self, group: &str, grant: Grant) -> Result<(), Refusal> {
        // A full rollout pool, and a full own pool with locks elsewhere,
        // were answered by the count, which also logged the grant.
        match grant {
            Grant::Granted { .. } | Grant::AlreadyHeld { .. } => Ok(()),
            Grant::Full { holders } => Err(Refusal::new(
                Kind::NoSlot,
                describe_full(group, &holders, SystemTime::now()),
            )),
            // pre_reboot counts again on Moved; it never gets here.
            Grant::Moved => Err(Refusal::new(
                Kind::EtcdUnavailable,
                format!("the locks of group {group} changed while they were counted"),
            )),
        }
    }

    /// Every node's presence and report, when a rollout's status names
    /// nodes to judge.
    async fn node_views(
        &self,
        status: Option<&RolloutStatus>,
    ) -> Result<BTreeMap<String, NodeView>, Refusal> {
        if status.is_none() {
            return Ok(BTreeMap::new());
        }
        Ok(admin::nodes(&self.etcd)
            .await?
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect())
    }

    /// `steady-state`: releases `id`'s lock in `group` wherever it is held
    /// (the group's own pool and the pools of the rollouts with `pool:
    /// <group>`, in case governance changed while it was held). Holding
    /// nothing is a success: Zincati calls this at every start.
    pub async fn steady_state(&self, group: &str, id: &str) -> Result<(), Refusal> {
        self.release_everywhere(group, id).await.map(|_| ())
    }

    /// Releases `id`'s lock in `group` in every pool it may be held in;
    /// whether there was one.
    pub(crate) async fn release_everywhere(&self, group: &str, id: &str) -> Result<bool, Refusal> {
        check_group(group)?;
        check_id(id)?;
        let mut released =
            release(&Slots::with_root(&self.etcd, FLEETLOCK_ROOT), group, id).await?;
        let holder = format!("{HOLDER_PREFIX}{id}");
        for (name, _) in self
            .rollouts()
            .await?
            .into_iter()
            .filter(|(_, r)| group_of(&r.applied.rollout) == Some(group))
        {
            released |= release(&Slots::new(&self.etcd), &name, &holder).await?;
        }
        if released {
            tracing::info!(group, id, "fleetlock: lock released");
        }
        Ok(released)
    }

    /// Every rollout's spec and status; an unreadable one refuses.
    pub(crate) async fn rollouts(&self) -> Result<BTreeMap<String, RolloutRead>, Refusal> {
        let listing = self.etcd.list_raw(keys::ROLLOUTS).await?;
        let mut specs = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for item in &listing.items {
            let unreadable = |why: String| {
                Refusal::new(
                    Kind::StateUnreadable,
                    format!("etcd value at {} cannot be read: {why}", item.key),
                )
            };
            match keys::parse_rollout_key(&item.key) {
                Some((name, RolloutKey::Spec)) => {
                    let applied = AppliedRollout::from_json(&item.value)
                        .map_err(|e| unreadable(e.to_string()))?;
                    specs.insert(name.to_string(), (applied, item.create_revision));
                }
                Some((name, RolloutKey::Status)) => {
                    let status = RolloutStatus::from_json(&item.value)
                        .map_err(|e| unreadable(e.to_string()))?;
                    statuses.insert(name.to_string(), status);
                }
                Some((_, RolloutKey::Control)) | None => {}
            }
        }
        Ok(specs
            .into_iter()
            .map(|(name, (applied, created))| {
                let status = statuses.remove(&name);
                (
                    name,
                    RolloutRead {
                        applied,
                        created,
                        status,
                    },
                )
            })
            .collect())
    }
}

/// Where `group`'s locks are counted: the oldest running rollout that
/// governs it and is not halted; a halted one only if no other governs.
fn pool_of(group: &str, rollouts: &BTreeMap<String, RolloutRead>) -> Pool {
    let mut running: Vec<(&String, &RolloutRead)> = rollouts
        .iter()
        .filter(|(_, r)| group_of(&r.applied.rollout) == Some(group) && !finished(r))
        .collect();
    running.sort_by_key(|(_, r)| r.created);
    let pick = running
        .iter()
        .position(|(_, r)| !halted(r))
        .or(if running.is_empty() { None } else { Some(0) });
    match pick {
        None => Pool::Own,
        Some(i) => {
            let (name, r) = running[i];
            Pool::Rollout {
                name: name.clone(),
                rollout: Box::new(r.applied.rollout.clone()),
                status: current_status(r).cloned().map(Box::new),
            }
        }
    }
}

/// One lock of a group's client, and the rollout whose pool holds it
/// (`None`: the group's own pool).
struct GroupLock {
    id: String,
    rollout: Option<String>,
    deadline: SystemTime,
}

impl GroupLock {
    /// How a refusal names it.
    fn describe(&self) -> String {
        match &self.rollout {
            Some(r) => format!("fleetlock client {} holding a lock in rollout {r}", self.id),
            None => format!(
                "fleetlock client {} holding a lock in the group's own pool",
                self.id
            ),
        }
    }
}

/// The nodes of the rollout's pool that count as unavailable without
/// holding a slot in `holders` (by the controller's rule,
/// [`plan::unavailable`]), as "node N down".
fn down_nodes(
    status: Option<&RolloutStatus>,
    views: &BTreeMap<String, NodeView>,
    holders: &[Holder],
) -> Vec<String> {
    let Some(status) = status else {
        return Vec::new();
    };
    status
        .nodes
        .iter()
        .filter(|(_, state)| !matches!(state, NodeState::Skipped { .. }))
        .filter(|(node, state)| {
            if holders.iter().any(|h| &h.name == *node) {
                return false;
            }
            let view = views.get(*node);
            plan::unavailable(
                view.is_some_and(|v| v.present),
                view.and_then(|v| v.report.as_ref()),
                false,
                state,
            )
        })
        .map(|(node, _)| format!("node {node} down"))
        .collect()
}

/// The FleetLock group a rollout governs: its selector's `pool` label.
pub fn group_of(rollout: &Rollout) -> Option<&str> {
    rollout
        .spec
        .match_labels
        .get(GROUP_LABEL)
        .map(String::as_str)
}

/// The status of the applied generation, if the controller wrote one.
fn current_status(r: &RolloutRead) -> Option<&RolloutStatus> {
    r.status
        .as_ref()
        .filter(|s| s.generation == r.applied.generation)
}

fn finished(r: &RolloutRead) -> bool {
    current_status(r)
        .is_some_and(|s| matches!(s.phase, RolloutPhase::Completed | RolloutPhase::Aborted))
}

fn halted(r: &RolloutRead) -> bool {
    current_status(r)
        .is_some_and(|s| matches!(s.phase, RolloutPhase::Halted | RolloutPhase::RollingBack))
}

/// Whether the rollout lets a machine of `group` reboot at `now`.
fn may_reboot(
    group: &str,
    name: &str,
    rollout: &Rollout,
    status: Option<&RolloutStatus>,
    now: Timestamp,
) -> Result<(), Refusal> {
    if let Some(s) = status {
        match s.phase {
            RolloutPhase::Halted | RolloutPhase::RollingBack => {
                let why = s
                    .halted
                    .clone()
                    .or_else(|| s.blocked.clone())
                    .unwrap_or_else(|| format!("{} failures", s.failures.len()));
                let phase = if s.phase == RolloutPhase::Halted {
                    "halted"
                } else {
                    "rolling back"
                };
                return Err(Refusal::new(
                    Kind::RolloutHalted,
                    format!("group {group} is governed by rollout {name}, which is {phase}: {why}"),
                ));
            }
            RolloutPhase::Paused => {
                let why = s.blocked.clone().unwrap_or_else(|| "paused".to_string());
                return Err(Refusal::new(
                    Kind::RolloutPaused,
                    format!("group {group} is governed by rollout {name}, which is paused: {why}"),
                ));
            }
            _ if s.paused => {
                return Err(Refusal::new(
                    Kind::RolloutPaused,
                    format!(
                        "group {group} is governed by rollout {name}, which is paused (fleet resume)"
                    ),
                ));
            }
            _ => {}
        }
    }
    if let Some(at) = window::next_opening(&rollout.spec.windows, now) {
        return Err(Refusal::new(
            Kind::OutsideWindow,
            format!(
                "group {group} is governed by rollout {name}, which reboots only in its windows; the next opens {}",
                window::describe_opening(&at)
            ),
        ));
    }
    Ok(())
}

/// The nodes a rollout governs (not those another rollout governs).
fn pool_size(status: &RolloutStatus) -> usize {
    status
        .nodes
        .values()
        .filter(|s| !matches!(s, NodeState::Skipped { .. }))
        .count()
}

/// "group web (rollout r): maxUnavailable 2 reached: …": the holders, then
/// what else is down ("node n4 down", the group's locks in other pools).
fn describe_rollout_full(
    group: &str,
    rollout: &str,
    max: usize,
    holders: &[Holder],
    down: &[String],
    now: SystemTime,
) -> String {
    let mut s = format!("group {group} (rollout {rollout}): maxUnavailable {max} reached:");
    describe_holders(&mut s, Some(rollout), holders, now);
    for (i, what) in down.iter().enumerate() {
        let sep = if i == 0 && holders.is_empty() {
            " "
        } else {
            "; "
        };
        // Writing to a String cannot fail.
        let _ = write!(s, "{sep}{what}");
    }
    s
}

/// "group web: all 1 slots are taken: …" when the group's locks in a
/// rollout's pool take some of its own slots.
fn describe_own_full(
    group: &str,
    holders: &[Holder],
    elsewhere: &[String],
    now: SystemTime,
) -> String {
    let mut s = format!("group {group}: all slots are taken:");
    describe_holders(&mut s, None, holders, now);
    for (i, lock) in elsewhere.iter().enumerate() {
        let sep = if i == 0 && holders.is_empty() {
            " "
        } else {
            "; "
        };
        // Writing to a String cannot fail.
        let _ = write!(s, "{sep}{lock}");
    }
    s
}

/// "group web: all 2 slots are taken: …", naming every holder and which
/// have failed.
fn describe_full(group: &str, holders: &[Holder], now: SystemTime) -> String {
    let mut s = format!("group {group}: all {} slots are taken:", holders.len());
    describe_holders(&mut s, None, holders, now);
    s
}

/// Appends every holder, until when, and which have failed.
fn describe_holders(s: &mut String, rollout: Option<&str>, holders: &[Holder], now: SystemTime) {
    for (i, h) in holders.iter().enumerate() {
        let who = match (rollout, h.name.strip_prefix(HOLDER_PREFIX)) {
            (None, _) => h.name.clone(),
            (Some(_), Some(id)) => format!("fleetlock client {id}"),
            (Some(_), None) => format!("node {}", h.name),
        };
        let sep = if i == 0 { " " } else { "; " };
        // Writing to a String cannot fail.
        let _ = if h.expired(now) {
            write!(
                s,
                "{sep}{who} FAILED (its lock expired at {} without steady-state; it keeps its slot until {who} calls steady-state)",
                stamp(h.deadline)
            )
        } else {
            write!(s, "{sep}{who} (until {})", stamp(h.deadline))
        };
    }
}

fn stamp(t: SystemTime) -> String {
    match Timestamp::try_from(t) {
        Ok(ts) => ts.to_string(),
        // Outside jiff's range only on a broken clock; say so rather than guess.
        Err(_) => format!("{t:?}"),
    }
}

async fn release(slots: &Slots, pool: &str, holder: &str) -> Result<bool, Refusal> {
    match slots.release(pool, holder, None).await {
        Ok(()) => Ok(true),
        Err(EtcdError::NotHeld { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
