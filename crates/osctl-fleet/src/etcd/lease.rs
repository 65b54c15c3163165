//! A lease kept alive in the background, with a clear "lost" signal.
//!
//! An agent's presence key and the controller's election key live exactly as
//! long as their lease. The etcd-client crate's keepalive stream dies with
//! the member it runs on and is not reopened, so a naive keeper lets a
//! healthy process's lease expire whenever one member restarts. [`KeptLease`]
//! reopens the stream (on a healthy member, see the client's health task),
//! also when a keepalive goes unanswered for a second (a stopped
//! member does not close the stream, it just stays silent), and keeps a
//! conservative local deadline: the TTL counted from the *send* time of the
//! last keepalive etcd confirmed. Once that passes, or etcd says
//! the lease is gone, the lease is *lost* for good: the flag never clears,
//! keepalives stop and the lease is revoked if etcd still answers, because a
//! holder that stopped acting must not keep its keys alive either. Whoever
//! acted under the lease (a leader, an agent) waits on [`KeptLease::lost`]
//! and stops.
//!
//! A stopped member costs up to a keepalive interval, the answer timeout, a
//! health probe and, if it led the raft, an election before keepalives flow
//! again: about 3 s at a 6 s TTL, more on a loaded machine. Kept leases should
//! have TTLs of 6 s or more; a killed member is noticed at once and costs
//! much less.
//!
//! An etcd 3.4.23 trap no keeper can avoid: a raft leader that was stopped
//! (SIGSTOP, a frozen VM) and then continues revokes, as the lessor it still
//! believes it is, every lease it saw no keepalive for, and the new leader
//! commits that. A lease kept alive all along is then gone: the keeper sees
//! it (etcd answers TTL 0) and reports it lost. (Inferred from a test run:
//! the lease was there just before the old leader continued and stepped
//! down, and gone 30 ms later; restarting that member instead never lost it.)
//!
//! etcd may keep a lease longer than the local deadline (a new raft leader
//! renews every lease), never shorter, so "lost" here errs on the safe side.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::client::{Etcd, jittered};
use super::error::{EtcdError, Result};

/// Keepalives per TTL: a third of the TTL apart, so two may be lost in a
/// row before the lease is in danger.
const KEEPALIVES_PER_TTL: u32 = 3;
/// How long a keepalive (or opening the stream) may go unanswered before the
/// stream is taken for dead; etcd answers from memory, in milliseconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait between attempts at reopening the keepalive stream.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the best-effort revoke of a lost lease may take.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lease with a background keepalive; see the module docs.
#[derive(Debug)]
pub struct KeptLease {
    id: i64,
    ttl: Duration,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
    etcd: Etcd,
    reopened: Arc<AtomicU64>,
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        // Dropping without revoke: the lease simply runs out after its TTL.
        self.task.abort();
    }
}

impl KeptLease {
    /// Grants a lease of `ttl` (whole seconds, rounded up; etcd may raise it
    /// to its minimum) and starts keeping it alive.
    pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<KeptLease> {
        let (id, ttl) = grant(etcd, ttl, "lease").await?;
        Ok(Self::keep(etcd, id, ttl))
    }

    /// Starts keeping lease `id` (of `ttl`) alive.
    fn keep(etcd: &Etcd, id: i64, ttl: Duration) -> KeptLease {
        let (tx, rx) = watch::channel(false);
        let reopened = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(keep_alive(etcd.clone(), id, ttl, tx, reopened.clone()));
        KeptLease {
            id,
            ttl,
            lost: rx,
            task,
            etcd: etcd.clone(),
            reopened,
        }
    }

    /// Keeps alive lease `id`, granted earlier (by this program before a
    /// restart), if etcd still has it; `None` when it is gone. What the
    /// agent does after a restart or a quick reboot: its presence key stays
    /// bound to the same lease, and nothing is written.
    pub async fn adopt(etcd: &Etcd, id: i64) -> Result<Option<KeptLease>> {
        let what = format!("lease {id:x}");
        let resp = etcd
            .call("lease time-to-live", &what, |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        // etcd answers -1 for a lease it does not know (expired or revoked).
        if resp.ttl() <= 0 || resp.granted_ttl() <= 0 {
            return Ok(None);
        }
        let ttl = Duration::from_secs(resp.granted_ttl().unsigned_abs());
        Ok(Some(Self::keep(etcd, id, ttl)))
    }

    /// The lease id, to bind keys to (`PutOptions::with_lease`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many times the keepalive stream was reopened after the first.
    pub fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    /// Whether the lease is lost (sticky).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost; at once if it already is.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        // An error means the keeper task is gone, which only happens once it
        // declared the lease lost or the lease was dropped: lost either way.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// A receiver of the lost flag, for a task that outlives this borrow.
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stops the keepalives and revokes the lease: its keys are deleted now.
    pub async fn revoke(self) -> Result<()> {
        self.task.abort();
        let id = self.id;
        let key = format!("lease {id:x}");
        self.etcd
            .call(
                "revoke",
                &key,
                |mut c| async move { c.lease_revoke(id).await },
            )
            .await
            .map(drop)
    }
}

/// Grants a lease of at least `ttl`; returns its id and the TTL etcd gave.
pub(crate) async fn grant(etcd: &Etcd, ttl: Duration, what: &str) -> Result<(i64, Duration)> {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let secs = i64::try_from(secs.max(1))
        .map_err(|_| EtcdError::Config(format!("lease TTL {ttl:?} is too long")))?;
    let resp = etcd
        .call("lease grant", what, |mut c| async move {
            c.lease_grant(secs, None).await
        })
        .await?;
    if !resp.error().is_empty() || resp.ttl() <= 0 {
        return Err(EtcdError::Protocol {
            op: "lease grant",
            key: what.to_string(),
            detail: format!("ttl {} error {:?}", resp.ttl(), resp.error()),
        });
    }
    Ok((resp.id(), Duration::from_secs(resp.ttl().unsigned_abs())))
}

/// An instant no timer reaches in practice (tokio's own "far future" idiom).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Why a keeper gave up.
enum Lost {
    Expired,
    Gone,
}

async fn keep_alive(
    etcd: Etcd,
    id: i64,
    ttl: Duration,
    lost: watch::Sender<bool>,
    reopened: Arc<AtomicU64>,
) {
    let why = keep_until_lost(&etcd, id, ttl, &reopened).await;
    match why {
        Lost::Expired => tracing::warn!(
            lease = format!("{id:x}"),
            "etcd lease not renewed within its TTL: lost"
        ),
        Lost::Gone => tracing::warn!(
            lease = format!("{id:x}"),
            "etcd says the lease is gone: lost"
        ),
    }
    lost.send_replace(true);
    let mut client = etcd.request_client();
    // Best effort: if etcd answers, the keys go now instead of at expiry; if
    // it does not, they go when etcd expires the lease by itself.
    if let Ok(Err(e)) = tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(id)).await {
        tracing::debug!(lease = format!("{id:x}"), error = %e, "revoking a lost lease");
    }
}

/// Keeps the lease alive until it is lost; returns why.
async fn keep_until_lost(etcd: &Etcd, id: i64, ttl: Duration, reopened: &AtomicU64) -> Lost {
    let interval = ttl / KEEPALIVES_PER_TTL;
    let answer = interval.min(ANSWER_TIMEOUT);
    // The grant itself counts as the first renewal (it happened just now).
    let mut expires = Instant::now() + ttl;
    let mut backoff = REOPEN_BACKOFF;
    let mut first = true;
    loop {
        if Instant::now() >= expires {
            return Lost::Expired;
        }
        if !std::mem::take(&mut first) {
            reopened.fetch_add(1, Ordering::Relaxed);
        }
        let mut client = etcd.blocking_client();
        let sent = Instant::now();
        // A stream that does not answer within `answer` is on a bad member;
        // the next try goes where the health check (just rerun) points.
        let opened =
            tokio::time::timeout_at(expires.min(sent + answer), client.lease_keep_alive(id)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
                return Lost::Gone;
            }
            Ok(Err(e)) => {
                etcd.recheck().await;
                tracing::info!(lease = format!("{id:x}"), error = %e, "opening etcd keepalive stream");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                etcd.recheck().await;
                continue;
            }
        };
        // Opening the stream renewed the lease (its first answer had ttl > 0).
        expires = expires.max(sent + ttl);
        backoff = REOPEN_BACKOFF;
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        let mut next_send = Instant::now() + interval;
        loop {
            // A keepalive unanswered for `answer`: the member is
            // stopped or cut off (the stream would just stay silent).
            let answer_by = in_flight
                .front()
                .map_or(far_future(), |sent| *sent + answer);
            tokio::select! {
                _ = sleep_until(expires) => return Lost::Expired,
                _ = sleep_until(answer_by) => break,
                _ = sleep_until(next_send) => {
                    let now = Instant::now();
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    in_flight.push_back(now);
                    next_send = now + interval;
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) if resp.ttl() <= 0 => return Lost::Gone,
                    Ok(Some(resp)) => {
                        // Answers come in order; one without a request we
                        // sent would be a protocol error, so count from now.
                        let sent = in_flight.pop_front().unwrap_or_else(Instant::now);
                        let granted = Duration::from_secs(resp.ttl().unsigned_abs());
                        expires = expires.max(sent + granted);
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        tracing::info!(
            lease = format!("{id:x}"),
            "etcd keepalive stream ended, reopening"
        );
    }
}
