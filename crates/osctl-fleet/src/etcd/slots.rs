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
/// At most this many holders are granted in one transaction: etcd refuses
/// more than 128 operations per transaction by default.
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
        self.grant_with(pool, holder, &|_| limit, deadline, fence, true)
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
        self.grant_with(pool, holder, &|_| limit, deadline, fence, false)
            .await
    }

    /// Like [`Self::grant_durable`], with the limit computed by `limit`
    /// from the very holders the grant then compares against (the same
    /// read, every attempt). A limit that depends on who holds — the
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
        fence: Option<&Fence>,
    ) -> Result<Grant> {
        self.grant_with(pool, holder, limit, deadline, fence, false)
            .await
    }

    async fn grant_with(
        &self,
        pool: &str,
        holder: &str,
        limit: &(dyn Fn(&[Holder]) -> usize + Sync),
        deadline: Duration,
        fence: Option<&Fence>,
        leased: bool,
    ) -> Result<Grant> {
        check_name("pool", pool)?;
        check_name("holder", holder)?;
        let guard_rel = self.guard_rel(pool);
        let holder_rel = self.holder_rel(pool, holder);
        let mut backoff = CAS_BACKOFF;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (guard_rev, holders) = self.read(pool).await?;
            if let Some(h) = holders.iter().find(|h| h.name == holder) {
                return Ok(Grant::AlreadyHeld {
                    deadline: h.deadline,
                });
            }
            if holders.len() >= limit(&holders) {
                return Ok(Grant::Full { holders });
            }
            let (lease, ttl) = if leased {
                lease::grant(&self.etcd, deadline, &holder_rel).await?
            } else {
                // Whole seconds like a lease's TTL, so both kinds of slot
                // read the same.
                let secs = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
                (0, Duration::from_secs(secs.max(1)))
            };
            let granted_at = SystemTime::now();
            let deadline_at = granted_at + ttl;
            let record = SlotRecord {
                version: RECORD_VERSION,
                holder: holder.to_string(),
                granted_at: unix_ms(granted_at),
                deadline: unix_ms(deadline_at),
                boot_id: None,
            };
            let guard = GuardRecord {
                version: RECORD_VERSION,
                last_change: "grant",
            };
            let compares = vec![
                Compare::mod_revision(self.etcd.key(&guard_rel), CompareOp::Equal, guard_rev),
                Compare::create_revision(self.etcd.key(&holder_rel), CompareOp::Equal, 0),
            ];
            let ops = vec![
                TxnOp::put(
                    self.etcd.key(&holder_rel),
                    encode_json(&holder_rel, &record)?,
                    (lease != 0).then(|| PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(
                    self.etcd.key(&guard_rel),
                    encode_json(&guard_rel, &guard)?,
                    None,
                ),
            ];
            let outcome = self
                .etcd
                .txn_op("slot grant", &holder_rel, compares, ops, fence)
                .await;
            match outcome {
                Ok(o) if o.succeeded => {
                    return Ok(Grant::Granted {
                        deadline: deadline_at,
                    });
                }
                Ok(_) => {
                    self.drop_lease(lease, &holder_rel).await;
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(CAS_BACKOFF_MAX);
                }
                Err(e) => {
                    // Unknown whether the grant applied (see EtcdError::Request):
                    // keep the lease, whose key may exist; it ends by its TTL.
                    return Err(e);
                }
            }
        }
        Err(EtcdError::Contention {
            op: "slot grant",
            key: holder_rel,
            attempts: MAX_CAS_ATTEMPTS,
        })
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
        self.grant_many_in_boots(pool, &untagged, limit, deadline, fence)
            .await
    }

    /// [`Self::grant_many`] for holders given with the boot each is granted
    /// in (recorded in its slot, [`Holder::boot_id`]).
    pub async fn grant_many_in_boots(
        &self,
        pool: &str,
        requests: &[(String, Option<String>)],
        limit: usize,
        deadline: Duration,
        fence: Option<&Fence>,
    ) -> Result<Vec<String>> {
        check_name("pool", pool)?;
        for (h, _) in requests {
            check_name("holder", h)?;
        }
        let holders: Vec<String> = requests.iter().map(|(h, _)| h.clone()).collect();
        let boot_of = |h: &str| {
            requests
                .iter()
                .find(|(name, _)| name == h)
                .and_then(|(_, b)| b.clone())
        };
        let guard_rel = self.guard_rel(pool);
        let mut backoff = CAS_BACKOFF;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (guard_rev, current) = self.read(pool).await?;
            let held = |h: &String| current.iter().any(|c| &c.name == h);
            let mut granted: Vec<String> = holders.iter().filter(|h| held(h)).cloned().collect();
            let free = limit.saturating_sub(current.len()).min(MAX_BATCH);
            let new: Vec<&String> = holders.iter().filter(|h| !held(h)).take(free).collect();
            if new.is_empty() {
                return Ok(granted);
            }
            let rels: Vec<String> = new.iter().map(|h| self.holder_rel(pool, h)).collect();
            let leases = futures_util::future::try_join_all(
                rels.iter()
                    .map(|rel| lease::grant(&self.etcd, deadline, rel)),
            )
            .await?;
            let granted_at = SystemTime::now();
            let mut compares = vec![Compare::mod_revision(
                self.etcd.key(&guard_rel),
                CompareOp::Equal,
                guard_rev,
            )];
            let mut ops = Vec::with_capacity(new.len() + 1);
            for (holder, (lease, ttl)) in new.iter().zip(&leases) {
                let rel = self.holder_rel(pool, holder);
                let record = SlotRecord {
                    version: RECORD_VERSION,
                    holder: holder.to_string(),
                    granted_at: unix_ms(granted_at),
                    deadline: unix_ms(granted_at + *ttl),
                    boot_id: boot_of(holder),
                };
                compares.push(Compare::create_revision(
                    self.etcd.key(&rel),
                    CompareOp::Equal,
                    0,
                ));
                ops.push(TxnOp::put(
                    self.etcd.key(&rel),
                    encode_json(&rel, &record)?,
                    Some(PutOptions::new().with_lease(*lease)),
                ));
            }
            let guard = GuardRecord {
                version: RECORD_VERSION,
                last_change: "grant",
            };
            ops.push(TxnOp::put(
                self.etcd.key(&guard_rel),
                encode_json(&guard_rel, &guard)?,
                None,
            ));
            match self
                .etcd
                .txn_op("slot grant", &guard_rel, compares, ops, fence)
                .await
            {
                Ok(o) if o.succeeded => {
                    granted.extend(new.into_iter().cloned());
                    return Ok(granted);
                }
                Ok(_) => {
                    for (lease, _) in leases {
                        self.drop_lease(lease, &guard_rel).await;
                    }
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(CAS_BACKOFF_MAX);
                }
                // Unknown whether it applied: the leases end by their TTL.
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::Contention {
            op: "slot grant",
            key: guard_rel,
            attempts: MAX_CAS_ATTEMPTS,
        })
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
