//! The leader's view of the fleet, kept from its watch instead of re-read.
//!
//! # The model
//!
//! The leader used to list every node, rollout and slot on each wake-up:
//! 3,000 keys for 1,000 nodes, read, sent and decoded a few hundred times
//! per rollout, which was most of what the leader (and etcd) did. The view
//! lists the fleet prefix once — when a leader starts, after the watch lost
//! its history (compaction), after the watch failed, and after any write of
//! the leader failed its compare — and from then on applies the watch's
//! events. [`PrefixWatch`] starts at the listing's revision + 1 and yields
//! every later change once and in order, so the view is always what a
//! listing at [`View::revision`] would have returned.
//!
//! # Why a view that lags is safe
//!
//! A listing is stale the moment it is read, and the controller never
//! relied on it being fresh: every write of the leader is fenced and
//! compares what it read (an assignment's and the status's mod revision), a
//! grant re-reads the pool under its guard. A view that has not yet applied
//! an event in flight is the same as a listing read a moment earlier: a
//! write based on it fails its compare, never goes through wrongly; the
//! leader then marks the view stale ([`View::invalidate`]) and the next
//! reconcile lists again. What the view must not do is miss the leader's own
//! writes, or the next plan would start from its previous status and fail
//! every compare: before planning, [`View::refresh`] waits until the watch
//! has delivered the revision of the leader's last write (and lists again if
//! that takes longer than [`CATCH_UP_TIMEOUT`]).
//!
//! Records are decoded once, when their event arrives. One that does not
//! decode is kept as unreadable, and [`View::check`] turns it into the error
//! a listing would have raised: the leader refuses to plan on what it cannot
//! read (fail closed), exactly as before.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::admin::AppliedRollout;
use crate::etcd::{
    Etcd, EtcdError, Holder, Listing, PrefixWatch, SLOTS_ROOT, Versioned, WatchEvent,
};
use crate::keys::{self, NodeKey, RolloutKey};
use crate::model::{Assignment, Control, NodeReport, RolloutStatus};

/// How long [`View::refresh`] waits for the watch to deliver the leader's
/// own last write before it gives up on the watch and lists instead: far
/// above the milliseconds an event takes, far below a reboot.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// The fleet prefix as a whole: nodes, rollouts and slots, in one listing
/// and one watch, so they are read at one revision.
const EVERYTHING: &str = "";

/// Everything under the nodes prefix about one node.
#[derive(Debug, Default)]
pub struct NodeRecords {
    pub present: bool,
    /// `None` when the report is missing or unreadable (the plan counts
    /// such a node unavailable).
    pub report: Option<NodeReport>,
    /// A report key exists, readable or not: such a node is known to the
    /// controller even when its report cannot be read.
    report_key: bool,
    pub assignment: Option<(Assignment, i64)>,
}

impl NodeRecords {
    /// A report exists and cannot be read: the node's labels are unknown,
    /// so every rollout counts it unavailable.
    pub fn report_unreadable(&self) -> bool {
        self.report_key && self.report.is_none()
    }

    fn is_empty(&self) -> bool {
        !self.present && !self.report_key && self.assignment.is_none()
    }
}

/// Everything under the rollouts prefix about one rollout.
#[derive(Debug, Default)]
pub struct RolloutRecords {
    /// The applied spec and its create revision (which orders rollouts).
    pub applied: Option<(AppliedRollout, i64)>,
    pub status: Option<(RolloutStatus, i64)>,
    /// Control requests by key, each with its create revision (the
    /// order they apply in: etcd's, not the admin's clock).
    pub controls: BTreeMap<String, (i64, Control)>,
}

impl RolloutRecords {
    fn is_empty(&self) -> bool {
        self.applied.is_none() && self.status.is_none() && self.controls.is_empty()
    }
}

/// A slot holder as the view has it.
#[derive(Debug)]
pub struct HeldSlot {
    pub holder: Holder,
    /// The holder key's mod revision: a release compares it.
    pub mod_revision: i64,
}

/// The leader's view; see the module docs.
#[derive(Default)]
pub struct View {
    watch: Option<PrefixWatch>,
    /// Every change up to this revision is applied (0: never listed).
    revision: i64,
    /// Must be listed again before the next plan.
    stale: bool,
    pub nodes: BTreeMap<String, NodeRecords>,
    pub rollouts: BTreeMap<String, RolloutRecords>,
    /// Slot holders by pool, then by the holder key's last segment.
    pub slots: BTreeMap<String, BTreeMap<String, HeldSlot>>,
    /// Keys whose value does not decode, with why.
    unreadable: BTreeMap<String, String>,
}

impl View {
    /// The revision the view is as of.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Makes the next [`Self::refresh`] list everything again (a write
    /// failed its compare: the view and etcd disagree).
    pub fn invalidate(&mut self) {
        self.stale = true;
    }

    /// Brings the view up to date before a plan: lists when it never was
    /// or is stale, else applies every event already delivered and waits
    /// until the view holds revision `at_least` (the leader's last write).
    pub async fn refresh(&mut self, etcd: &Etcd, at_least: i64) -> Result<(), EtcdError> {
        if self.watch.is_none() || self.revision == 0 {
            self.stale = true;
        }
        if !self.stale {
            self.drain().await;
            let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
            while !self.stale && self.revision < at_least {
                if tokio::time::timeout_at(deadline, self.next_event())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        view = self.revision,
                        wanted = at_least,
                        "the watch did not deliver the leader's own write in time; listing again"
                    );
                    self.stale = true;
                }
            }
        }
        if self.stale {
            self.relist(etcd).await?;
        }
        Ok(())
    }

    /// Waits for the next change and applies it, with every change already
    /// queued behind it (a burst of reports is one wake-up). Without a
    /// watch it waits forever: the leader's tick lists again.
    pub async fn changed(&mut self) {
        if self.watch.is_none() {
            return std::future::pending().await;
        }
        self.next_event().await;
        self.drain().await;
    }

    /// The error a listing would have raised for an unreadable record under
    /// `prefix` (relative), if there is one.
    pub fn check(&self, prefix: &str) -> Result<(), EtcdError> {
        match self.unreadable.range(prefix.to_string()..).next() {
            Some((key, why)) if key.starts_with(prefix) => Err(EtcdError::Decode {
                key: key.clone(),
                source: serde::de::Error::custom(why),
            }),
            _ => Ok(()),
        }
    }

    /// Lists the prefix and watches from the revision after the listing.
    async fn relist(&mut self, etcd: &Etcd) -> Result<(), EtcdError> {
        // The old watch may hold events older than the new listing, which
        // must not be applied over it.
        self.watch = None;
        let listing = etcd.list_raw(EVERYTHING).await?;
        let watch = PrefixWatch::start(etcd, EVERYTHING, Some(listing.revision + 1)).await?;
        self.replace(listing);
        self.watch = Some(watch);
        self.stale = false;
        Ok(())
    }

    /// Waits for one event and applies it; a failed watch (only an error a
    /// retry cannot fix ends it, see [`PrefixWatch::next`]) makes the view
    /// stale.
    async fn next_event(&mut self) {
        let Some(watch) = self.watch.as_mut() else {
            self.stale = true;
            return;
        };
        match watch.next().await {
            Ok(event) => self.apply(event),
            Err(e) => {
                tracing::warn!(error = %crate::agent::error_chain(&e), "the leader's watch failed; listing again");
                self.watch = None;
                self.stale = true;
            }
        }
    }

    /// Applies the events already delivered, without waiting.
    async fn drain(&mut self) {
        while self.watch.is_some() && !self.stale {
            let Some(watch) = self.watch.as_mut() else {
                return;
            };
            // Polled once: an event already received is ready at once;
            // `next` loses nothing when dropped before it is (it yields
            // only from its buffer, synchronously).
            match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                Ok(Ok(event)) => self.apply(event),
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::agent::error_chain(&e), "the leader's watch failed; listing again");
                    self.watch = None;
                    self.stale = true;
                }
                Err(_) => return,
            }
        }
    }

    fn apply(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Put { kv, .. } => {
                self.revision = self.revision.max(kv.mod_revision);
                self.put(&kv);
            }
            WatchEvent::Delete { key, revision, .. } => {
                self.revision = self.revision.max(revision);
                self.delete(&key);
            }
            WatchEvent::Resync(listing) => self.replace(listing),
        }
    }

    /// Replaces everything with `listing`.
    fn replace(&mut self, listing: Listing<Vec<u8>>) {
        self.nodes.clear();
        self.rollouts.clear();
        self.slots.clear();
        self.unreadable.clear();
        for item in &listing.items {
            self.put(item);
        }
        self.revision = listing.revision;
    }

    fn put(&mut self, item: &Versioned<Vec<u8>>) {
        let key = item.key.as_str();
        self.unreadable.remove(key);
        if let Some((node, what)) = keys::parse_node_key(key) {
            let rec = self.nodes.entry(node.to_string()).or_default();
            match what {
                NodeKey::Presence => rec.present = true,
                NodeKey::Report => {
                    rec.report_key = true;
                    rec.report = match NodeReport::from_json(&item.value) {
                        Ok(r) => Some(r),
                        // Unreadable: the node is unavailable (the plan
                        // counts it so); not a reason to stop planning.
                        Err(e) => {
                            tracing::warn!(key, error = %e, "node report");
                            None
                        }
                    };
                }
                NodeKey::Assignment => {
                    rec.assignment = match Assignment::from_json(&item.value) {
                        Ok(a) => Some((a, item.mod_revision)),
                        Err(e) => note_unreadable(&mut self.unreadable, key, e.source.to_string()),
                    };
                }
            }
            // An unreadable assignment alone makes no node, as in a
            // listing read by the same rules.
            if rec.is_empty() {
                self.nodes.remove(node);
            }
        } else if let Some((name, what)) = keys::parse_rollout_key(key) {
            let rec = self.rollouts.entry(name.to_string()).or_default();
            match what {
                RolloutKey::Spec => {
                    rec.applied = match AppliedRollout::from_json(&item.value) {
                        Ok(a) => Some((a, item.create_revision)),
                        Err(e) => note_unreadable(&mut self.unreadable, key, e.to_string()),
                    };
                }
                RolloutKey::Status => {
                    rec.status = match RolloutStatus::from_json(&item.value) {
                        Ok(s) => Some((s, item.mod_revision)),
                        Err(e) => note_unreadable(&mut self.unreadable, key, e.source.to_string()),
                    };
                }
                RolloutKey::Control => match Control::from_json(&item.value) {
                    Ok(c) => {
                        rec.controls
                            .insert(key.to_string(), (item.create_revision, c));
                    }
                    Err(e) => {
                        rec.controls.remove(key);
                        note_unreadable::<()>(&mut self.unreadable, key, e.source.to_string());
                    }
                },
            }
            if rec.is_empty() {
                self.rollouts.remove(name);
            }
        } else if let Some((pool, holder)) = slot_key(key) {
            match crate::etcd::slots::decode_holder(key, &item.value, item.lease) {
                Ok(h) => {
                    self.slots.entry(pool.to_string()).or_default().insert(
                        holder.to_string(),
                        HeldSlot {
                            holder: h,
                            mod_revision: item.mod_revision,
                        },
                    );
                }
                Err(e) => {
                    self.remove_slot(pool, holder);
                    let why = match e {
                        EtcdError::Decode { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    note_unreadable::<()>(&mut self.unreadable, key, why);
                }
            }
        }
    }

    /// Forgets a holder, and its pool once it has none (as a listing
    /// without the key would have it).
    fn remove_slot(&mut self, pool: &str, holder: &str) {
        if let Some(holders) = self.slots.get_mut(pool) {
            holders.remove(holder);
            if holders.is_empty() {
                self.slots.remove(pool);
            }
        }
    }

    fn delete(&mut self, key: &str) {
        self.unreadable.remove(key);
        if let Some((node, what)) = keys::parse_node_key(key) {
            if let Some(rec) = self.nodes.get_mut(node) {
                match what {
                    NodeKey::Presence => rec.present = false,
                    NodeKey::Report => {
                        rec.report_key = false;
                        rec.report = None;
                    }
                    NodeKey::Assignment => rec.assignment = None,
                }
                if rec.is_empty() {
                    self.nodes.remove(node);
                }
            }
        } else if let Some((name, what)) = keys::parse_rollout_key(key) {
            if let Some(rec) = self.rollouts.get_mut(name) {
                match what {
                    RolloutKey::Spec => rec.applied = None,
                    RolloutKey::Status => rec.status = None,
                    RolloutKey::Control => {
                        rec.controls.remove(key);
                    }
                }
                if rec.is_empty() {
                    self.rollouts.remove(name);
                }
            }
        } else if let Some((pool, holder)) = slot_key(key) {
            self.remove_slot(pool, holder);
        }
    }
}

/// Notes `key` as unreadable in `set`; the record reads as absent until
/// [`View::check`] refuses to plan on it.
fn note_unreadable<T>(set: &mut BTreeMap<String, String>, key: &str, why: String) -> Option<T> {
    tracing::warn!(key, error = %why, "unreadable fleet record");
    set.insert(key.to_string(), why);
    None
}

/// `slots/<pool>/<holder>` → (pool, holder); the pool's guard key
/// (`slots/<pool>`) and anything else → `None`.
fn slot_key(rel: &str) -> Option<(&str, &str)> {
    let (pool, holder) = rel.strip_prefix(SLOTS_ROOT)?.split_once('/')?;
    (!pool.is_empty() && !holder.is_empty() && !holder.contains('/')).then_some((pool, holder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::TxnOp;
    use osctl_testutil::EtcdCluster;

    /// What a step does, its change, and the prefixes `check` refuses
    /// afterwards with the key it names.
    type Step = (
        &'static str,
        Change,
        &'static [(&'static str, &'static str)],
    );

    /// One change a step makes to etcd.
    enum Change {
        Put(&'static str, &'static str),
        Delete(&'static str),
    }

    const HOLDER: &str = r#"{"version":1,"holder":"n1","grantedAt":1000,"deadline":2000}"#;
    const SPEC: &str = "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\nspec:\n  image: registry.example/os:v2\n  selector:\n    matchLabels: {pool: web}\n  maxUnavailable: 1\n";

    /// Everything the view holds, for comparing two views.
    fn contents(v: &View) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            v.nodes, v.rollouts, v.slots, v.unreadable
        )
    }

    /// A view kept from events holds, after each change, exactly what a
    /// view listed afresh holds — including the records it cannot read,
    /// which `check` refuses under their prefix only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_keep_the_view_equal_to_a_fresh_listing() {
        let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("starting etcd: {e:#}"));
        let etcd = Etcd::connect(&cluster.endpoints(), "/test/view/")
            .await
            .unwrap();
        put(&etcd, &keys::presence("n1"), "{}").await;
        let mut view = View::default();
        view.refresh(&etcd, 0).await.unwrap();
        assert!(view.nodes["n1"].present);

        let rollout = crate::spec::Rollout::parse(SPEC).unwrap();
        crate::admin::apply(&etcd, &rollout).await.unwrap();
        const BAD_ASSIGNMENT: (&str, &str) = ("nodes/", "nodes/n2/assignment");
        const BAD_SLOT: (&str, &str) = ("slots/web/", "slots/web/n2");
        let steps: &[Step] = &[
            ("a second node", Change::Put("nodes/n2/presence", "{}"), &[]),
            (
                "its report does not read",
                Change::Put("nodes/n2/report", "not json"),
                &[],
            ),
            (
                "its assignment does not read",
                Change::Put("nodes/n2/assignment", "{"),
                &[BAD_ASSIGNMENT],
            ),
            (
                "a slot is granted",
                Change::Put("slots/web/n1", HOLDER),
                &[BAD_ASSIGNMENT],
            ),
            (
                "a slot that does not read",
                Change::Put("slots/web/n2", "[]"),
                &[BAD_ASSIGNMENT, BAD_SLOT],
            ),
            (
                "a slot is released",
                Change::Delete("slots/web/n1"),
                &[BAD_ASSIGNMENT, BAD_SLOT],
            ),
            (
                "the unreadable slot is released",
                Change::Delete("slots/web/n2"),
                &[BAD_ASSIGNMENT],
            ),
            (
                "the assignment is withdrawn",
                Change::Delete("nodes/n2/assignment"),
                &[],
            ),
            (
                "the node goes away",
                Change::Delete("nodes/n2/presence"),
                &[],
            ),
            ("and its report", Change::Delete("nodes/n2/report"), &[]),
            (
                "an unreadable assignment alone",
                Change::Put("nodes/n3/assignment", "{"),
                &[("nodes/", "nodes/n3/assignment")],
            ),
            (
                "its node registers",
                Change::Put("nodes/n3/presence", "{}"),
                &[("nodes/", "nodes/n3/assignment")],
            ),
            (
                "and goes away",
                Change::Delete("nodes/n3/presence"),
                &[("nodes/", "nodes/n3/assignment")],
            ),
            (
                "the assignment is withdrawn",
                Change::Delete("nodes/n3/assignment"),
                &[],
            ),
            (
                "an unreadable status",
                Change::Put("rollouts/web/status", "{}"),
                &[("rollouts/", "rollouts/web/status")],
            ),
            (
                "is replaced by nothing",
                Change::Delete("rollouts/web/status"),
                &[],
            ),
            (
                "the rollout is deleted",
                Change::Delete("rollouts/web/spec"),
                &[],
            ),
        ];
        for (what, change, refused) in steps {
            match change {
                Change::Put(key, value) => put(&etcd, key, value).await,
                Change::Delete(key) => {
                    etcd.txn(
                        key,
                        Vec::new(),
                        vec![TxnOp::delete(etcd.key(key), None)],
                        None,
                    )
                    .await
                    .unwrap();
                }
            }
            let now = etcd.list_raw(EVERYTHING).await.unwrap().revision;
            view.refresh(&etcd, now).await.unwrap();
            let mut fresh = View::default();
            fresh.refresh(&etcd, 0).await.unwrap();
            assert_eq!(view.revision(), now, "{what}");
            assert_eq!(contents(&view), contents(&fresh), "{what}");
            for prefix in ["nodes/", "rollouts/", "slots/web/"] {
                let expected = refused
                    .iter()
                    .find(|(p, _)| *p == prefix)
                    .map(|(_, key)| format!("etcd value at {key} cannot be read"));
                let got = view.check(prefix).err().map(|e| e.to_string());
                assert_eq!(got, expected, "{what}: {prefix}");
            }
        }
        assert!(view.nodes.keys().eq(["n1"]), "{:?}", view.nodes.keys());
        assert!(view.rollouts.is_empty() && view.slots.is_empty());
    }

    async fn put(etcd: &Etcd, key: &str, value: &str) {
        etcd.txn(
            key,
            Vec::new(),
            vec![TxnOp::put(etcd.key(key), value.as_bytes().to_vec(), None)],
            None,
        )
        .await
        .unwrap();
    }
}
