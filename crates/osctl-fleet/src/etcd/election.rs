//! Leader election for the controller, and the fence every leader write
//! carries.
//!
//! etcd's election API does the campaigning: each candidate puts
//! `<prefix><election>/<lease hex>` bound to its own kept lease, and
//! `Campaign` returns once that key is the oldest. Leadership ends when the
//! key goes (resign, lease revoked or expired). A process can keep believing
//! it leads a little longer than it does (a stall, a lost keepalive), so
//! being told is not enough: every write a leader makes compares the leader
//! key's *create revision* ([`Fence`]). Once the key is gone, or re-created
//! by a later campaign, that compare fails and the write is refused with
//! [`EtcdError::Fenced`]: a deposed leader can write nothing.
//!
//! Loss is also signalled ([`Leadership::lost`]) so the controller stops
//! deciding: when the kept lease is lost, or a watch on the leader key sees
//! it deleted.
//!
//! Campaigns use the client without a request timeout (the etcd-client
//! crate's timeout would cancel a campaign that is rightly waiting) and are
//! re-sent after a connection error: etcd's campaign with the same lease is
//! idempotent (the key is named after the lease).
//!
//! Two limits of the election API: a campaign waiting on a member that is
//! stopped (not killed) only notices by the HTTP/2 ping, so failover to it
//! took 14.6 s instead of 2 s in a trial here. And etcd's campaign code
//! resigns a campaign whose call was cancelled (read, not reproduced here),
//! deleting the lease-named key the re-sent campaign shares: a candidate can
//! lose the leadership it just won once that member resumes. [`Leadership::lost`] fires and the fence
//! refuses its writes, so this costs a new campaign, never a double leader.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaderKey, ResignOptions, SortOrder, SortTarget,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{Etcd, jittered};
use super::error::{EtcdError, Result};
use super::lease::KeptLease;
use super::watch::{PrefixWatch, WatchEvent};

/// The election the fleet controller campaigns in (relative to the prefix).
pub const CONTROLLER_ELECTION: &str = "controller/leader";
/// First and longest wait between campaign attempts after an error.
const CAMPAIGN_BACKOFF: Duration = Duration::from_millis(100);
const CAMPAIGN_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// "This write only if leadership `key` (created at `created`) still
/// stands": the compare a leader adds to every transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    key: String,
    created: i64,
}

impl Fence {
    /// A fence on the absolute key `key` with create revision `created`.
    pub fn new(key: impl Into<String>, created: i64) -> Fence {
        Fence {
            key: key.into(),
            created,
        }
    }

    /// The absolute leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The leader key's create revision.
    pub fn created(&self) -> i64 {
        self.created
    }

    /// The compare: the leader key's create revision is unchanged.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.created)
    }
}

/// Being the leader of one election; see the module docs.
#[derive(Debug)]
pub struct Leadership {
    etcd: Etcd,
    /// Always `Some` until [`Leadership::resign`] takes it.
    lease: Option<KeptLease>,
    leader: LeaderKey,
    fence: Fence,
    deposed: watch::Receiver<bool>,
    watcher: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Leadership {
    /// Campaigns in `election` (relative to the prefix, e.g.
    /// [`CONTROLLER_ELECTION`]) with `value` (who is campaigning) and a
    /// lease of `ttl`; returns once elected. Waits as long as another
    /// candidate leads; fails only if this candidate's lease is lost.
    pub async fn campaign(
        etcd: &Etcd,
        election: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Leadership> {
        if election.is_empty() || election.ends_with('/') {
            return Err(EtcdError::InvalidName {
                what: "election",
                name: election.to_string(),
                reason: "must be a non-empty key without a trailing '/'",
            });
        }
        let lease = KeptLease::grant(etcd, ttl).await?;
        let name = etcd.key(election);
        let mut backoff = CAMPAIGN_BACKOFF;
        let leader = loop {
            let mut client = etcd.blocking_client();
            tokio::select! {
                _ = lease.lost() => return Err(EtcdError::LeaseLost { lease: lease.id() }),
                r = client.campaign(name.clone(), value, lease.id()) => match r {
                    Ok(mut resp) => match resp.take_leader() {
                        Some(leader) => break leader,
                        None => return Err(EtcdError::Protocol {
                            op: "campaign",
                            key: election.to_string(),
                            detail: "elected without a leader key".into(),
                        }),
                    },
                    Err(e) => {
                        tracing::info!(election, error = %e, "etcd campaign failed, campaigning again");
                        tokio::time::sleep(jittered(backoff)).await;
                        backoff = (backoff * 2).min(CAMPAIGN_BACKOFF_MAX);
                    }
                },
            }
        };
        let key = leader.key_str().map_err(|e| EtcdError::Protocol {
            op: "campaign",
            key: election.to_string(),
            detail: format!("leader key is not UTF-8: {e}"),
        })?;
        let fence = Fence::new(key, leader.rev());
        let rel = etcd.rel_key(key.as_bytes())?;
        // Watch from the creation on, so a deletion between the campaign's
        // answer and this watch is still seen.
        let watch = PrefixWatch::start(etcd, &rel, Some(leader.rev())).await?;
        let (tx, rx) = watch::channel(false);
        let watcher = tokio::spawn(watch_leader_key(
            watch,
            rel,
            leader.rev(),
            lease.lost_signal(),
            tx,
        ));
        tracing::info!(election, key, "elected");
        Ok(Leadership {
            etcd: etcd.clone(),
            lease: Some(lease),
            leader,
            fence,
            deposed: rx,
            watcher,
        })
    }

    /// Who leads `election` now: the value of its oldest candidate key, or
    /// `None` while nobody campaigns (for status output; deciding anything on
    /// it would race, which is what the fence is for).
    pub async fn current(etcd: &Etcd, election: &str) -> Result<Option<String>> {
        let prefix = etcd.key(&format!("{election}/"));
        let resp = etcd
            .call("leader", election, |mut c| async move {
                let opts = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1);
                c.get(prefix, Some(opts)).await
            })
            .await?;
        resp.kvs()
            .first()
            .map(|kv| {
                String::from_utf8(kv.value().to_vec()).map_err(|e| EtcdError::Protocol {
                    op: "leader",
                    key: election.to_string(),
                    detail: format!("leader value is not UTF-8: {e}"),
                })
            })
            .transpose()
    }

    /// The fence to add to every write made as leader.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The leader key's lease.
    pub fn lease_id(&self) -> i64 {
        self.lease.as_ref().map_or(0, KeptLease::id)
    }

    /// Whether leadership is known to be lost (sticky).
    pub fn is_lost(&self) -> bool {
        *self.deposed.borrow()
    }

    /// Resolves once leadership is lost: the lease is lost or the leader key
    /// was deleted. Writes are fenced regardless; this is for stopping work.
    pub async fn lost(&self) {
        let mut rx = self.deposed.clone();
        // An error means the watcher task ended, which it only does after
        // signalling loss or when this value is dropped: lost either way.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Gives up leadership: deletes the leader key (another candidate is
    /// elected at once) and revokes the lease.
    pub async fn resign(mut self) -> Result<()> {
        let leader = self.leader.clone();
        let key = self.fence.key().to_string();
        self.etcd
            .call("resign", &key, |mut c| async move {
                c.resign(Some(ResignOptions::new().with_leader(leader)))
                    .await
            })
            .await?;
        self.watcher.abort();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }
}

/// Flags loss when the lease is lost or our leader key is deleted.
async fn watch_leader_key(
    mut watch: PrefixWatch,
    rel: String,
    created: i64,
    mut lease_lost: watch::Receiver<bool>,
    deposed: watch::Sender<bool>,
) {
    loop {
        tokio::select! {
            // An error means the lease keeper ended: lost too.
            _ = lease_lost.wait_for(|lost| *lost) => break,
            ev = watch.next() => match ev {
                Ok(WatchEvent::Delete { key, .. }) if key == rel => break,
                Ok(WatchEvent::Resync(listing)) => {
                    if !listing.items.iter().any(|kv| kv.key == rel && kv.create_revision == created) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Only a failed re-read after compaction gets here; the
                    // fence still guards every write, so keep watching.
                    tracing::warn!(key = %rel, error = %e, "watching the leader key");
                }
            },
        }
    }
    tracing::warn!(key = %rel, "leadership lost");
    deposed.send_replace(true);
}
