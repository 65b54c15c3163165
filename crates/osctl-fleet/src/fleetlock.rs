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
//! slot until that id calls steady-state (or an admin deletes the key):
//! an expired lock never frees capacity, so machines that fail to come back
//! cannot go down one after another (kube-hetzner #1182). Failure is derived
//! from the record and the clock, not written by a timer, so it holds even
//! while this server is down; error messages and metrics name failed locks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::{Method, StatusCode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::admin::{self, AdminError, AppliedRollout, NodeView};
use crate::agent::error_chain;
use crate::etcd::{Etcd, EtcdError, FLEETLOCK_ROOT, Grant, Holder, PoolRead, Slots};
use crate::http::{self, HttpError, JSON, Request, Response};
use crate::keys::{self, RolloutKey};
use crate::metrics;
use crate::model::{NodeState, RolloutPhase, RolloutStatus};
use crate::plan;
use crate::spec::Rollout;
use crate::window;

/// The header every FleetLock request carries, and its only value.
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
pub const PROTOCOL_VALUE: &str = "true";
pub const PRE_REBOOT: &str = "/v1/pre-reboot";
pub const STEADY_STATE: &str = "/v1/steady-state";
pub const METRICS: &str = "/metrics";
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
/// The longest group or id accepted (one etcd key segment each).
pub const MAX_NAME_LEN: usize = 253;

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

/// The error kinds of the protocol's `{"kind","value"}` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: no `fleet-lock-protocol: true` header.
    MissingHeader,
    /// 400: the body is not `{"client_params":{"id","group"}}`.
    BadRequest,
    /// 404: no such endpoint.
    NotFound,
    /// 405: not a POST (GET for /metrics).
    MethodNotAllowed,
    /// 400: the group is not `^[a-zA-Z0-9.-]+$`.
    GroupInvalid,
    /// 400: the id is empty or not a key segment.
    IdInvalid,
    /// 409: every slot is taken; the value names the holders.
    NoSlot,
    /// 409: the governing rollout's windows are closed; the value names the next opening.
    OutsideWindow,
    /// 409: the governing rollout is paused (or in a `pause` step).
    RolloutPaused,
    /// 409: the governing rollout is halted or rolling back; the value says why.
    RolloutHalted,
    /// 503: etcd did not answer.
    EtcdUnavailable,
    /// 500: a record in etcd cannot be read; nothing is granted (fail closed).
    StateUnreadable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingHeader => "missing_header",
            Kind::BadRequest => "bad_request",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::GroupInvalid => "group_invalid",
            Kind::IdInvalid => "id_invalid",
            Kind::NoSlot => "no_slot",
            Kind::OutsideWindow => "outside_window",
            Kind::RolloutPaused => "rollout_paused",
            Kind::RolloutHalted => "rollout_halted",
            Kind::EtcdUnavailable => "etcd_unavailable",
            Kind::StateUnreadable => "state_unreadable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::MissingHeader | Kind::BadRequest | Kind::GroupInvalid | Kind::IdInvalid => {
                StatusCode::BAD_REQUEST
            }
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::NoSlot | Kind::OutsideWindow | Kind::RolloutPaused | Kind::RolloutHalted => {
                StatusCode::CONFLICT
            }
            Kind::EtcdUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::StateUnreadable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request refused: the protocol's error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {value}", kind.as_str())]
pub struct Refusal {
    pub kind: Kind,
    pub value: String,
}

impl Refusal {
    fn new(kind: Kind, value: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            value: value.into(),
        }
    }

    /// The HTTP answer.
    pub fn response(&self) -> Response {
        let body = ErrorBody {
            kind: self.kind.as_str(),
            value: &self.value,
        };
        Response::with(
            self.kind.status(),
            JSON,
            serde_json::to_vec(&body).expect("two strings always serialise"),
        )
    }
}

impl From<AdminError> for Refusal {
    fn from(e: AdminError) -> Refusal {
        match e {
            AdminError::Etcd(e) => e.into(),
            other => Refusal::new(Kind::StateUnreadable, error_chain(&other)),
        }
    }
}

impl From<EtcdError> for Refusal {
    fn from(e: EtcdError) -> Refusal {
        let kind = match &e {
            EtcdError::Decode { .. }
            | EtcdError::Encode { .. }
            | EtcdError::ForeignKey { .. }
            | EtcdError::Protocol { .. }
            | EtcdError::Config(_) => Kind::StateUnreadable,
            EtcdError::InvalidName { .. } => Kind::IdInvalid,
            _ => Kind::EtcdUnavailable,
        };
        Refusal::new(kind, error_chain(&e))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    value: &'a str,
}

/// The request body. Unknown fields are accepted: a newer client may send
/// more, and refusing it would stop its reboots for no reason.
#[derive(Debug, Deserialize)]
struct Body {
    client_params: ClientParams,
}

#[derive(Debug, Deserialize)]
struct ClientParams {
    id: String,
    group: String,
}

/// A group: `^[a-zA-Z0-9.-]+$` (the protocol's rule), at most [`MAX_NAME_LEN`].
pub fn check_group(group: &str) -> Result<(), Refusal> {
    if group.is_empty() || group.len() > MAX_NAME_LEN {
        return Err(Refusal::new(
            Kind::GroupInvalid,
            format!("group {group:?} must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if let Some(c) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
    {
        return Err(Refusal::new(
            Kind::GroupInvalid,
            format!("group {group:?} has {c:?}: only letters, digits, '.' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// An id: one key segment, printable, at most [`MAX_NAME_LEN`].
pub fn check_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > MAX_NAME_LEN {
        return Err(Refusal::new(
            Kind::IdInvalid,
            format!("id {id:?} must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
    {
        return Err(Refusal::new(
            Kind::IdInvalid,
            format!("id {id:?} has {c:?}: only letters, digits, '.', '-', '_' and ':' are allowed"),
        ));
    }
    Ok(())
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
struct RolloutRead {
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

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request) -> Response {
        match (req.method.clone(), req.path.as_str()) {
            (Method::GET, METRICS) => {
                match metrics::fleet_metrics(&self.etcd, SystemTime::now()).await {
                    Ok(text) => {
                        Response::with(StatusCode::OK, metrics::CONTENT_TYPE, text.into_bytes())
                    }
                    Err(e) => Response::with(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        format!("{}\n", error_chain(&e)).into_bytes(),
                    ),
                }
            }
            (Method::POST, PRE_REBOOT | STEADY_STATE) => {
                let pre_reboot = req.path == PRE_REBOOT;
                let result = match parse_request(&req) {
                    Ok((group, id)) if pre_reboot => {
                        self.pre_reboot(&group, &id, Timestamp::now()).await
                    }
                    Ok((group, id)) => self.steady_state(&group, &id).await,
                    Err(r) => Err(r),
                };
                match result {
                    Ok(()) => Response::empty_ok(),
                    Err(r) => {
                        tracing::info!(path = %req.path, refusal = %r, "fleetlock request refused");
                        r.response()
                    }
                }
            }
            (_, PRE_REBOOT | STEADY_STATE) => Refusal::new(
                Kind::MethodNotAllowed,
                format!("{} takes POST, not {}", req.path, req.method),
            )
            .response(),
            (_, METRICS) => Refusal::new(
                Kind::MethodNotAllowed,
                format!("{METRICS} takes GET, not {}", req.method),
            )
            .response(),
            (_, path) => Refusal::new(
                Kind::NotFound,
                format!("no endpoint {path}: {PRE_REBOOT}, {STEADY_STATE} and {METRICS} exist"),
            )
            .response(),
        }
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
        Ok(())
    }

    /// Every rollout's spec and status; an unreadable one refuses.
    async fn rollouts(&self) -> Result<BTreeMap<String, RolloutRead>, Refusal> {
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

/// The group and id of a FleetLock request, or the refusal.
fn parse_request(req: &Request) -> Result<(String, String), Refusal> {
    match req.headers.get(PROTOCOL_HEADER) {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(PROTOCOL_VALUE.as_bytes()) => {}
        Some(v) => {
            return Err(Refusal::new(
                Kind::MissingHeader,
                format!("header {PROTOCOL_HEADER} is {v:?}; it must be \"{PROTOCOL_VALUE}\""),
            ));
        }
        None => {
            return Err(Refusal::new(
                Kind::MissingHeader,
                format!("header {PROTOCOL_HEADER}: {PROTOCOL_VALUE} is required"),
            ));
        }
    }
    let body: Body = serde_json::from_slice(&req.body).map_err(|e| {
        Refusal::new(
            Kind::BadRequest,
            format!("body is not {{\"client_params\":{{\"id\":…,\"group\":…}}}}: {e}"),
        )
    })?;
    check_group(&body.client_params.group)?;
    check_id(&body.client_params.id)?;
    Ok((body.client_params.group, body.client_params.id))
}

/// Serves FleetLock and `/metrics` on `listener` until accepting fails.
pub async fn serve(server: FleetLock, listener: TcpListener) -> Result<(), HttpError> {
    let server = Arc::new(server);
    http::serve(listener, move |req| {
        let server = Arc::clone(&server);
        async move { server.handle(req).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_ids_follow_the_protocol() {
        assert_eq!(check_group("web.eu-1"), Ok(()));
        assert_eq!(check_id("0123abcd_x:y"), Ok(()));
        for (group, why) in [
            ("", "must be 1 to 253 characters long"),
            (
                "a_b",
                "has '_': only letters, digits, '.' and '-' are allowed",
            ),
            ("a/b", "has '/'"),
        ] {
            let r = check_group(group).unwrap_err();
            assert_eq!(r.kind, Kind::GroupInvalid);
            assert!(r.value.contains(why), "{group}: {}", r.value);
        }
        for (id, why) in [
            ("", "must be 1 to 253 characters long"),
            ("a/b", "has '/'"),
            ("a b", "has ' '"),
        ] {
            let r = check_id(id).unwrap_err();
            assert_eq!(r.kind, Kind::IdInvalid);
            assert!(r.value.contains(why), "{id}: {}", r.value);
        }
    }

    #[test]
    fn refusals_are_the_protocols_json() {
        let r = Refusal::new(Kind::NoSlot, "group web: all 1 slots are taken: a");
        let resp = r.response();
        assert_eq!(resp.status, StatusCode::CONFLICT);
        assert_eq!(resp.content_type, Some(JSON));
        assert_eq!(
            String::from_utf8(resp.body).unwrap(),
            r#"{"kind":"no_slot","value":"group web: all 1 slots are taken: a"}"#
        );
    }
}
