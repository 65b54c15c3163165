//! The admin's view of FleetLock locks (`osctl fleet locks`) and the admin's
//! way to clear one (`osctl fleet unlock`).
//!
//! A lock that failed (its deadline passed without a steady-state) keeps
//! its slot on purpose: its machine did not come back, and freeing the slot
//! would let the next one go down the same way. When the admin knows the
//! machine is gone for good (decommissioned, reinstalled under another id),
//! `unlock` releases it the way its steady-state would have — in every pool
//! of the group — instead of an `etcdctl del` of a key they would have to
//! find first.

use std::time::SystemTime;

use jiff::Timestamp;
use serde::Serialize;

use super::{FleetLock, FleetLockOptions, HOLDER_PREFIX, Refusal, group_of};
use crate::etcd::{Etcd, FLEETLOCK_ROOT, Holder, Slots};

/// One FleetLock lock, wherever it is held.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockView {
    pub group: String,
    pub id: String,
    /// The rollout whose pool holds it (taken while that rollout governed
    /// the group); `None`: the group's own pool.
    pub rollout: Option<String>,
    pub granted_at: Timestamp,
    pub deadline: Timestamp,
    /// Its deadline passed without a steady-state: the machine did not
    /// come back in time, and the lock still takes its slot.
    pub failed: bool,
}

/// Every FleetLock lock, by group and id: in the groups' own pools and, as
/// `fleetlock.<id>`, in the pools of the rollouts with `pool: <group>`.
/// Failure is judged at `now`.
pub async fn locks(etcd: &Etcd, now: SystemTime) -> Result<Vec<LockView>, Refusal> {
    let view = |group: &str, id: &str, rollout: Option<&str>, h: &Holder| LockView {
        group: group.to_string(),
        id: id.to_string(),
        rollout: rollout.map(str::to_string),
        granted_at: timestamp(h.granted_at),
        deadline: timestamp(h.deadline),
        failed: h.expired(now),
    };
    let mut out = Vec::new();
    for (group, holders) in Slots::with_root(etcd, FLEETLOCK_ROOT).all_pools().await? {
        out.extend(holders.iter().map(|h| view(&group, &h.name, None, h)));
    }
    let server = FleetLock::new(etcd.clone(), FleetLockOptions::default());
    let rollouts = server.rollouts().await?;
    let pools = Slots::new(etcd).all_pools().await?;
    for (name, r) in &rollouts {
        let Some(group) = group_of(&r.applied.rollout) else {
            continue;
        };
        for h in pools.get(name).into_iter().flatten() {
            if let Some(id) = h.name.strip_prefix(HOLDER_PREFIX) {
                out.push(view(group, id, Some(name), h));
            }
        }
    }
    out.sort_by(|a, b| (&a.group, &a.id).cmp(&(&b.group, &b.id)));
    Ok(out)
}

/// Releases `id`'s lock in `group` wherever it is held, as the machine's
/// steady-state would; whether it held one.
pub async fn unlock(etcd: &Etcd, group: &str, id: &str) -> Result<bool, Refusal> {
    FleetLock::new(etcd.clone(), FleetLockOptions::default())
        .release_everywhere(group, id)
        .await
}

fn timestamp(t: SystemTime) -> Timestamp {
    // Holder times are unix milliseconds (never before 1970); one past
    // jiff's range (year 9999) is shown as its end, which is what it means.
    Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
}
