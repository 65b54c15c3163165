//! Reboot slots: a counting semaphore per pool, with deadlines.
//!
//! A holder is the key `<root><pool>/<holder>`, bound to a lease of its own
//! whose TTL is the slot's deadline and which nobody keeps alive: a node that
//! never comes back loses its slot when the lease runs out, so a dead holder
//! cannot block the pool forever. The record also carries the deadline as a
//! wall-clock time, so a holder that finds its key gone can tell "expired"
//! (deadline passed) from "released".
//!
//! Counting and granting must be one atomic step or two grants race past the
//! limit. Every grant therefore reads the holders *and* the pool's guard key
//! `<root><pool>` at one revision, and writes in one transaction that
//! compares the guard's mod revision (unchanged since the read) and the
//! holder key's absence, puts the holder and bumps the guard. Two grants that
//! read the same state cannot both commit; the loser re-reads and decides
//! again, after a jittered backoff so forty contenders do not collide in
//! lockstep. Releases and expiries delete without bumping the guard: that
//! only ever lowers the count, so it cannot let a grant exceed the limit (a
//! grant that read the holder still there counts one too many — the safe
//! side). [`Slots::grant_many`] grants several holders in one such
//! transaction (one read, their leases, one write), as the controller does
//! when a batch of nodes may reboot.
//!
//! One limit can span pools: a FleetLock group's locks may sit in the
//! group's own pool and in the pools of the rollouts that govern (or
//! governed) it, and both the FleetLock server and the controller count them
//! all. A grant that counted other pools is given their reads
//! ([`PoolRead`]) and compares *and bumps* each of their guards in its
//! transaction, so of two grants that counted each other's pools only one
//! commits; the other is told the count moved ([`Grant::Moved`]) and its
//! caller reads and decides again — with governance re-read too, which a
//! retry inside this module could not do. A single grant and a batch are
//! one transaction body.
//!
//! Whether an expired slot frees capacity is the controller's decision, not
//! this module's: docs/fleet.md counts such a node as failed and unavailable.
//!
//! A *durable* slot ([`Slots::grant_durable`]) has the same record and the
//! same deadline but no lease: it stays until released, and once its
//! deadline has passed it is an expired holder ([`Holder::expired`]) that
//! still counts against the limit. The FleetLock server uses these, because
//! a FleetLock client that never comes back has no controller that would
//! notice and count it as failed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::client::{Etcd, decode_json, encode_json, jittered};
use super::election::Fence;
use super::error::{EtcdError, Result};
use super::lease;

/// Where the controller's reboot slots live (relative to the prefix).
pub const SLOTS_ROOT: &str = "slots/";
/// Where the FleetLock server's holders live (same semantics).
pub const FLEETLOCK_ROOT: &str = "fleetlock/";
/// Version of the holder record this code writes and reads.
const RECORD_VERSION: u32 = 1;
/// etcd refuses more operations than this in one transaction (its default
/// `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;
/// At most this many holders are granted in one transaction (below
/// [`MAX_TXN_OPS`], with room for the guards it bumps).
pub const MAX_BATCH: usize = 100;
/// Compare-and-swap attempts before a grant or release gives up.
const MAX_CAS_ATTEMPTS: u32 = 100;
/// First and longest wait after a lost race.
const CAS_BACKOFF: Duration = Duration::from_millis(10);
const CAS_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The stored holder record (`<root><pool>/<holder>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SlotRecord {
    version: u32,
    holder: String,
    /// Unix milliseconds.
    granted_at: u64,
    /// Unix milliseconds; the lease runs out about then.
    deadline: u64,
    /// The boot the holder was granted its slot in, when the granter says
    /// (the controller, for its nodes): who reads the slot can tell a
    /// holder that rebooted from one that did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
}

/// The pool's guard record (`<root><pool>`); its content is informative,
/// its mod revision is what grants compare.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GuardRecord<'a> {
    version: u32,
    /// Which grant last bumped it (a grant in another pool bumps the
    /// guards of the pools it counted).
    last_change: &'a str,
}

/// One holder of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub granted_at: SystemTime,
    /// When the slot expires unless released before.
    pub deadline: SystemTime,
    /// The slot's lease (never kept alive); 0 for a durable slot.
    pub lease: i64,
    /// The boot it was granted in, when the granter recorded one.
    pub boot_id: Option<String>,
}

impl Holder {
    /// Whether the deadline has passed at `now` while the slot is still
    /// held: only a durable slot can be seen so (a leased one vanishes).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.deadline <= now
    }
}

/// The answer to a slot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A new slot, held until `deadline` unless released.
    Granted { deadline: SystemTime },
    /// The holder already had a slot (re-asking is harmless, as FleetLock's
    /// recursive lock wants); its deadline is not extended.
    AlreadyHeld { deadline: SystemTime },
    /// `limit` slots are taken, by these holders.
    Full { holders: Vec<Holder> },
    /// A pool the caller counted changed since it read it
    /// ([`Slots::grant_durable_within`]): nothing was granted; read again
    /// and decide again.
    Moved,
}

/// A pool's holders as read at one revision, with its guard's mod
/// revision. A grant in one pool whose limit also counted the holders of
/// other pools (the FleetLock server and the controller both count a
/// FleetLock group's locks wherever they are) is given their reads: it
/// compares each of their guards against the revision read and bumps it, so
/// two grants that counted each other's pools cannot both commit, and a
/// grant whose counted pool changed since is told [`Grant::Moved`].
#[derive(Debug, Clone)]
pub struct PoolRead {
    pub holders: Vec<Holder>,
    guard_rel: String,
    guard_revision: i64,
}

/// What a grant asks for (one holder or a batch), see [`Slots::grant_batch`].
struct Ask<'a> {
    pool: &'a str,
    /// Holders in the order they get slots, each with the boot it is
    /// granted in (recorded in its slot) when the granter knows it.
    requests: &'a [(String, Option<String>)],
    /// The limit, computed from the holders the grant compares against.
    limit: &'a (dyn Fn(&[Holder]) -> usize + Sync),
    deadline: Duration,
    /// A lease per slot (ends by itself) or a durable record.
    leased: bool,
    /// Pools whose holders the caller counted (possibly this one).
    counted: &'a [PoolRead],
}

impl<'a> Ask<'a> {
    fn new(
        pool: &'a str,
        requests: &'a [(String, Option<String>)],
        limit: &'a (dyn Fn(&[Holder]) -> usize + Sync),
        deadline: Duration,
    ) -> Ask<'a> {
        Ask {
            pool,
            requests,
            limit,
            deadline,
            leased: false,
            counted: &[],
        }
    }

    fn leased(mut self, leased: bool) -> Self {
        self.leased = leased;
        self
    }

    fn counting(mut self, counted: &'a [PoolRead]) -> Self {
        self.counted = counted;
        self
    }
}

/// How one grant transaction ended.
enum Attempt {
    /// The pool as last read (before the write), and the holders granted
    /// now with their deadlines (none when the pool was full).
    Done {
        before: Vec<Holder>,
        granted: Vec<(String, SystemTime)>,
        /// The revision of the write (0 if nothing was written): every
        /// guard it bumped has this mod revision now.
        revision: i64,
    },
    /// A counted pool changed: nothing was written.
    Moved,
}

/// The requested holders that hold a slot after a grant, in request order.
fn held_after(
    requests: &[(String, Option<String>)],
    before: &[Holder],
    granted: &[(String, SystemTime)],
) -> Vec<String> {
    requests
        .iter()
        .map(|(h, _)| h)
        .filter(|h| before.iter().any(|b| &b.name == *h) || granted.iter().any(|(g, _)| g == *h))
        .cloned()
        .collect()
}

/// The slots (or FleetLock holders) under one root; see the module docs.
#[derive(Debug, Clone)]
pub struct Slots {
    etcd: Etcd,
    root: String,
}

impl Slots {
    /// Reboot slots under [`SLOTS_ROOT`].
    pub fn new(etcd: &Etcd) -> Slots {
        Self::with_root(etcd, SLOTS_ROOT)
    }

    /// Slots under another root, e.g. [`FLEETLOCK_ROOT`] (ends with `/`).
    pub fn with_root(etcd: &Etcd, root: &str) -> Slots {
        Slots {
            etcd: etcd.clone(),
            root: root.to_string(),
        }
    }

    fn guard_rel(&self, pool: &str) -> String {
        format!("{}{pool}", self.root)
    }

    /// The key of `holder`'s slot in `pool` (relative to the prefix).
    pub fn holder_rel(&self, pool: &str, holder: &str) -> String {
        format!("{}{pool}/{holder}", self.root)
    }

    /// Grants `holder` a slot in `pool` if fewer than `limit` are held, for
    /// `deadline` (whole seconds, rounded up). With a `fence`, only while
    /// that leadership stands ([`EtcdError::Fenced`] otherwise).
    pub async fn grant(
        &self,
        pool: &str,
        holder: &str,
        limit: usize,
        deadline: Duration,
        fence: Option<&Fence>,
    ) -> Result<Grant> {
        let one = [(holder.to_string(), None)];
        let limit = |_: &[Holder]| limit;
        self.grant_one(Ask::new(pool, &one, &limit, deadline).leased(true), fence)
            .await
    }

    /// Like [`Self::grant`], but the slot has no lease: it is held until
    /// [`Self::release`]d, and past `deadline` it is an expired holder that
    /// still counts (see the module docs).
    pub async fn grant_durable(
        &self,
        pool: &str,
        holder: &str,
        limit: usize,
        deadline: Duration,
        fence: Option<&Fence>,
    ) -> Result<Grant> {
        let one = [(holder.to_string(), None)];
        let limit = |_: &[Holder]| limit;
        self.grant_one(Ask::new(pool, &one, &limit, deadline), fence)
            .await
    }

    /// Like [`Self::grant_durable`], with the limit computed by `limit`
    /// from the very holders the grant then compares against (the same
    /// read, every attempt), and under the guards of the pools in
    /// `counted` (see [`PoolRead`]): [`Grant::Moved`] if one of them
    /// changed since it was read. A limit that depends on who holds — the
    /// FleetLock server's, which subtracts the pool's nodes that are down
    /// *without* a slot — must not be computed from an earlier read: a
    /// holder whose slot expired in between would be counted neither as a
    /// holder nor as down.
    pub async fn grant_durable_within(
        &self,
        pool: &str,
        holder: &str,
        limit: &(dyn Fn(&[Holder]) -> usize + Sync),
        deadline: Duration,
        counted: &[PoolRead],
    ) -> Result<Grant> {
        let one = [(holder.to_string(), None)];
        let ask = Ask::new(pool, &one, limit, deadline).counting(counted);
        self.grant_one(ask, None).await
    }

    /// Grants slots in `pool` to as many of `holders` as fit under `limit`,
    /// in their order, in one transaction against the guard: one read, the
    /// holders' leases (one each: a release revokes its holder's lease),
    /// one write. Returns every one of `holders` that holds a slot
    /// afterwards (granted now or before). At most [`MAX_BATCH`] new
    /// holders per call (etcd's limit on operations per transaction).
    pub async fn grant_many(
        &self,
        pool: &str,
        holders: &[String],
        limit: usize,
        deadline: Duration,
        fence: Option<&Fence>,
    ) -> Result<Vec<String>> {
        let untagged: Vec<(String, Option<String>)> =
            holders.iter().map(|h| (h.clone(), None)).collect();
        let limit = |_: &[Holder]| limit;
        let ask = Ask::new(pool, &untagged, &limit, deadline).leased(true);
        match self.grant_batch(&ask, fence).await? {
            Attempt::Done {
                before, granted, ..
            } => Ok(held_after(&untagged, &before, &granted)),
            // Nothing counted, so nothing can have moved; the caller reads
            // again, as after a full pool.
            Attempt::Moved => Ok(Vec::new()),
        }
    }

    /// [`Self::grant_many`] for holders given with the boot each is granted
    /// in (recorded in its slot, [`Holder::boot_id`]), under the guards of
    /// the pools in `counted`: `None` if one of them changed since it was
    /// read (count again). After a write, `counted` is advanced past it
    /// (its guards were bumped by this grant, not moved by another), so the
    /// caller's next batch compares what it wrote.
    pub async fn grant_many_in_boots(
        &self,
        pool: &str,
        requests: &[(String, Option<String>)],
        limit: usize,
        deadline: Duration,
        counted: &mut [PoolRead],
        fence: Option<&Fence>,
    ) -> Result<Option<Vec<String>>> {
        let limit = |_: &[Holder]| limit;
        let ask = Ask::new(pool, requests, &limit, deadline)
            .leased(true)
            .counting(counted);
        let attempt = self.grant_batch(&ask, fence).await?;
        Ok(match attempt {
            Attempt::Done {
                before,
                granted,
                revision,
            } => {
                if revision != 0 {
                    for c in counted.iter_mut() {
                        c.guard_revision = revision;
                    }
                }
                Some(held_after(requests, &before, &granted))
            }
            Attempt::Moved => None,
        })
    }

    /// A grant for one holder: [`Self::grant_batch`] with a batch of one.
    async fn grant_one(&self, ask: Ask<'_>, fence: Option<&Fence>) -> Result<Grant> {
        let holder = ask.requests[0].0.clone();
        match self.grant_batch(&ask, fence).await? {
            Attempt::Moved => Ok(Grant::Moved),
            Attempt::Done {
                before, granted, ..
            } => {
                if let Some(h) = before.iter().find(|h| h.name == holder) {
                    Ok(Grant::AlreadyHeld {
                        deadline: h.deadline,
                    })
                } else if let Some((_, deadline)) = granted.into_iter().next() {
                    Ok(Grant::Granted { deadline })
                } else {
                    Ok(Grant::Full { holders: before })
                }
            }
        }
    }

    /// The one grant transaction (see the module docs): read the pool and
    /// its guard at one revision, decide who fits, write the new holders,
    /// bump the guard of this pool and of every counted one, all compared
    /// against what was read. A lost race on this pool alone is retried
    /// here after a jittered backoff; a counted pool that changed ends the
    /// attempt with [`Attempt::Moved`].
    async fn grant_batch(&self, ask: &Ask<'_>, fence: Option<&Fence>) -> Result<Attempt> {
        let pool = ask.pool;
        check_name("pool", pool)?;
        for (h, _) in ask.requests {
            check_name("holder", h)?;
        }
        let guard_rel = self.guard_rel(pool);
        // The caller's own read of this pool, if it counted it too: then
        // even this pool's change means deciding again, out there.
        let own_read = ask.counted.iter().find(|c| c.guard_rel == guard_rel);
        let others: Vec<&PoolRead> = ask
            .counted
            .iter()
            .filter(|c| c.guard_rel != guard_rel)
            .collect();
        let room = MAX_TXN_OPS.saturating_sub(1 + others.len()).min(MAX_BATCH);
        let mut backoff = CAS_BACKOFF;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (guard_rev, current) = self.read(pool).await?;
            if own_read.is_some_and(|r| r.guard_revision != guard_rev) {
                return Ok(Attempt::Moved);
            }
            let held = |h: &str| current.iter().any(|c| c.name == h);
            let free = (ask.limit)(&current)
                .saturating_sub(current.len())
                .min(room);
            let new: Vec<&(String, Option<String>)> = ask
                .requests
                .iter()
                .filter(|(h, _)| !held(h))
                .take(free)
                .collect();
            if new.is_empty() {
                return Ok(Attempt::Done {
                    before: current,
                    granted: Vec::new(),
                    revision: 0,
                });
            }
            let rels: Vec<String> = new.iter().map(|(h, _)| self.holder_rel(pool, h)).collect();
            let leases = if ask.leased {
                futures_util::future::try_join_all(
                    rels.iter()
                        .map(|rel| lease::grant(&self.etcd, ask.deadline, rel)),
                )
                .await?
            } else {
                // Whole seconds like a lease's TTL, so both kinds of slot
                // read the same.
                let d = ask.deadline;
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                vec![(0, Duration::from_secs(secs.max(1))); new.len()]
            };
            let granted_at = SystemTime::now();
            let mut compares = vec![Compare::mod_revision(
                self.etcd.key(&guard_rel),
                CompareOp::Equal,
                guard_rev,
            )];
            let mut ops = Vec::with_capacity(new.len() + 1 + others.len());
            let mut granted = Vec::with_capacity(new.len());
            for (((holder, boot_id), rel), (lease, ttl)) in new.iter().zip(rels).zip(&leases) {
                let record = SlotRecord {
                    version: RECORD_VERSION,
                    holder: holder.clone(),
                    granted_at: unix_ms(granted_at),
                    deadline: unix_ms(granted_at + *ttl),
                    boot_id: boot_id.clone(),
                };
                compares.push(Compare::create_revision(
                    self.etcd.key(&rel),
                    CompareOp::Equal,
                    0,
                ));
                ops.push(TxnOp::put(
                    self.etcd.key(&rel),
                    encode_json(&rel, &record)?,
                    (*lease != 0).then(|| PutOptions::new().with_lease(*lease)),
                ));
                granted.push((holder.clone(), granted_at + *ttl));
            }
            let bump = GuardRecord {
                version: RECORD_VERSION,
                last_change: &format!("grant in {guard_rel}"),
            };
            ops.push(TxnOp::put(
                self.etcd.key(&guard_rel),
                encode_json(&guard_rel, &bump)?,
                None,
            ));
            for other in &others {
                compares.push(Compare::mod_revision(
                    self.etcd.key(&other.guard_rel),
                    CompareOp::Equal,
                    other.guard_revision,
                ));
                ops.push(TxnOp::put(
                    self.etcd.key(&other.guard_rel),
                    encode_json(&other.guard_rel, &bump)?,
                    None,
                ));
            }
            match self
                .etcd
                .txn_op("slot grant", &guard_rel, compares, ops, fence)
                .await
            {
                Ok(o) if o.succeeded => {
                    return Ok(Attempt::Done {
                        before: current,
                        granted,
                        revision: o.revision,
                    });
                }
                Ok(_) => {
                    for (lease, _) in leases {
                        self.drop_lease(lease, &guard_rel).await;
                    }
                    if own_read.is_some() || self.moved(&others).await? {
                        return Ok(Attempt::Moved);
                    }
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(CAS_BACKOFF_MAX);
                }
                // Unknown whether it applied (see EtcdError::Request): keep
                // the leases, whose keys may exist; they end by their TTL.
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::Contention {
            op: "slot grant",
            key: guard_rel,
            attempts: MAX_CAS_ATTEMPTS,
        })
    }

    /// Whether a counted pool's guard changed since it was read.
    async fn moved(&self, counted: &[&PoolRead]) -> Result<bool> {
        if counted.is_empty() {
            return Ok(false);
        }
        let ops = counted
            .iter()
            .map(|c| TxnOp::get(self.etcd.key(&c.guard_rel), None))
            .collect();
        let outcome = self
            .etcd
            .txn_op(
                "slot guard read",
                &counted[0].guard_rel,
                Vec::new(),
                ops,
                None,
            )
            .await?;
        for (c, resp) in counted.iter().zip(&outcome.responses) {
            let TxnOpResponse::Get(get) = resp else {
                return Err(EtcdError::Protocol {
                    op: "slot guard read",
                    key: c.guard_rel.clone(),
                    detail: "a get answered by something else".into(),
                });
            };
            if get.kvs().first().map_or(0, |kv| kv.mod_revision()) != c.guard_revision {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Releases `holder`'s slot in `pool`; [`EtcdError::NotHeld`] if it has
    /// none (never held, released, or expired).
    pub async fn release(&self, pool: &str, holder: &str, fence: Option<&Fence>) -> Result<()> {
        check_name("pool", pool)?;
        check_name("holder", holder)?;
        let holder_rel = self.holder_rel(pool, holder);
        let holder_key = self.etcd.key(&holder_rel);
        let mut backoff = CAS_BACKOFF;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let key = holder_key.clone();
            let resp = self
                .etcd
                .call("slot release", &holder_rel, |mut c| async move {
                    c.get(key, None).await
                })
                .await?;
            let Some(kv) = resp.kvs().first() else {
                return Err(EtcdError::NotHeld {
                    pool: pool.to_string(),
                    holder: holder.to_string(),
                });
            };
            let lease = kv.lease();
            // The guard is not bumped: it keeps grants from racing past the
            // limit, and a release racing a grant only makes that grant
            // count one holder too many — the safe side. (An expiring lease
            // deletes its holder without touching the guard either.)
            let compares = vec![Compare::mod_revision(
                holder_key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )];
            let ops = vec![TxnOp::delete(holder_key.clone(), None)];
            let outcome = self
                .etcd
                .txn_op("slot release", &holder_rel, compares, ops, fence)
                .await?;
            if outcome.succeeded {
                self.drop_lease(lease, &holder_rel).await;
                return Ok(());
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(CAS_BACKOFF_MAX);
        }
        Err(EtcdError::Contention {
            op: "slot release",
            key: holder_rel,
            attempts: MAX_CAS_ATTEMPTS,
        })
    }

    /// The current holders of `pool`, by name.
    pub async fn holders(&self, pool: &str) -> Result<Vec<Holder>> {
        check_name("pool", pool)?;
        Ok(self.read(pool).await?.1)
    }

    /// The holders of `pool` with its guard's revision, for a grant in
    /// another pool that counts them ([`PoolRead`]).
    pub async fn read_pool(&self, pool: &str) -> Result<PoolRead> {
        check_name("pool", pool)?;
        let (guard_revision, holders) = self.read(pool).await?;
        Ok(PoolRead {
            holders,
            guard_rel: self.guard_rel(pool),
            guard_revision,
        })
    }

    /// Every pool under this root that has a guard key, with its holders,
    /// read at one revision (for metrics and status).
    pub async fn all_pools(&self) -> Result<BTreeMap<String, Vec<Holder>>> {
        let listing = self.etcd.list_raw(&self.root).await?;
        let mut pools: BTreeMap<String, Vec<Holder>> = BTreeMap::new();
        for item in &listing.items {
            let rest = item.key.strip_prefix(&self.root).unwrap_or(&item.key);
            match rest.split_once('/') {
                None => {
                    pools.entry(rest.to_string()).or_default();
                }
                Some((pool, _)) => {
                    let holder = decode_holder(&item.key, &item.value, item.lease)?;
                    pools.entry(pool.to_string()).or_default().push(holder);
                }
            }
        }
        Ok(pools)
    }

    /// The guard's mod revision (0: no guard yet) and the holders, read at
    /// one revision.
    async fn read(&self, pool: &str) -> Result<(i64, Vec<Holder>)> {
        let guard_rel = self.guard_rel(pool);
        let ops = vec![
            TxnOp::get(self.etcd.key(&guard_rel), None),
            TxnOp::get(
                self.etcd.key(&format!("{guard_rel}/")),
                Some(GetOptions::new().with_prefix()),
            ),
        ];
        let outcome = self
            .etcd
            .txn_op("slot read", &guard_rel, Vec::new(), ops, None)
            .await?;
        let (Some(TxnOpResponse::Get(guard)), Some(TxnOpResponse::Get(list))) =
            (outcome.responses.first(), outcome.responses.get(1))
        else {
            return Err(EtcdError::Protocol {
                op: "slot read",
                key: guard_rel,
                detail: "transaction without its two reads".into(),
            });
        };
        let guard_rev = guard.kvs().first().map_or(0, |kv| kv.mod_revision());
        let holders = list
            .kvs()
            .iter()
            .map(|kv| {
                let rel = self.etcd.rel_key(kv.key())?;
                decode_holder(&rel, kv.value(), kv.lease())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((guard_rev, holders))
    }

    /// Revokes a slot lease that no longer guards a key.
    async fn drop_lease(&self, lease: i64, holder_rel: &str) {
        if lease == 0 {
            return;
        }
        let r = self
            .etcd
            .call("lease revoke", holder_rel, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        if let Err(e) = r {
            // Harmless: the lease has no key (or its key was just deleted)
            // and runs out by its TTL.
            tracing::debug!(error = %e, "revoking an unused slot lease");
        }
    }
}

/// Reads one holder record (`rel` names it in errors).
pub(crate) fn decode_holder(rel: &str, value: &[u8], lease: i64) -> Result<Holder> {
    let record: SlotRecord = decode_json(rel, value)?;
    if record.version != RECORD_VERSION {
        return Err(EtcdError::Decode {
            key: rel.to_string(),
            source: serde::de::Error::custom(format!(
                "slot record version {} (this osctl reads {RECORD_VERSION})",
                record.version
            )),
        });
    }
    Ok(Holder {
        name: record.holder,
        granted_at: from_unix_ms(record.granted_at),
        deadline: from_unix_ms(record.deadline),
        lease,
        boot_id: record.boot_id,
    })
}

/// A pool or holder name must be one key segment.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.contains('/') {
        "must not contain '/'"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(EtcdError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    // Before 1970 only on a broken clock; such a deadline reads as long past.
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
