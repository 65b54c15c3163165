//! A prefix watch that survives the member it runs on.
//!
//! An etcd watch is a stream on one member's connection; when that member
//! dies (or stops, or loses the quorum: with `require_leader` etcd cancels the
//! watch) the stream ends and the etcd-client crate does not reopen it. A
//! consumer that then re-watches "from now" silently misses what happened in
//! between, which for the controller means a node report it never sees.
//!
//! [`PrefixWatch`] remembers the revision after the last response it
//! received and reopens the watch from there, on whichever member is healthy,
//! so every change is yielded exactly once and in order. Events of one
//! response are buffered whole, and etcd never splits one revision across
//! responses (fragmenting is off), so resuming after the last response's
//! revision neither repeats nor skips. If that revision has been compacted
//! away the history is gone: the watch then reads the whole prefix and yields
//! it as [`WatchEvent::Resync`], and continues after that read's revision.
//!
//! A member that stops answering does not end the stream; a quiet stream is
//! therefore asked for progress, and reopened if the request goes unanswered.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::time::{Instant, sleep_until};

use super::client::{Etcd, Listing, Versioned, jittered};
use super::error::{EtcdError, Result};

/// First and longest wait between attempts at reopening a watch.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// After this long without a message the watch asks etcd for progress, and
/// reopens if that gets no answer within `PROGRESS_TIMEOUT`: a stopped or
/// cut-off member keeps the TCP connection open and simply says nothing, and
/// HTTP/2 pings cannot be sent often enough to notice (etcd answers pings
/// more frequent than every 5 s with GOAWAY).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// One change under the watched prefix (keys relative to the fleet prefix).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// `kv` was created or changed; `prev` is the value before, when etcd
    /// still has it.
    Put {
        kv: Versioned<Vec<u8>>,
        prev: Option<Versioned<Vec<u8>>>,
    },
    /// `key` was deleted (or its lease ran out) at `revision`.
    Delete {
        key: String,
        revision: i64,
        prev: Option<Versioned<Vec<u8>>>,
    },
    /// The history needed to resume was compacted: this is the whole prefix
    /// as of `listing.revision`; replace what you knew with it.
    Resync(Listing<Vec<u8>>),
}

/// A watch on every key under a prefix; see the module docs.
pub struct PrefixWatch {
    etcd: Etcd,
    rel_prefix: String,
    /// The revision the next (re)opened watch starts at.
    next_revision: i64,
    stream: Option<WatchStream>,
    buffer: VecDeque<WatchEvent>,
    /// Watches opened after the first (stream lost, cancelled, compacted).
    reopened: u64,
    /// When to ask for progress (or, once asked, give up on the stream).
    check_at: Instant,
    /// A progress request is outstanding and nothing came since.
    progress_asked: bool,
}

impl std::fmt::Debug for PrefixWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixWatch")
            .field("prefix", &self.rel_prefix)
            .field("next_revision", &self.next_revision)
            .finish()
    }
}

impl PrefixWatch {
    /// Watches `rel_prefix` from `start_revision` (e.g. a listing's
    /// revision plus one), or from now when `None`. Returns once etcd has
    /// confirmed the watch, so no change after this call returns is missed.
    pub async fn start(
        etcd: &Etcd,
        rel_prefix: &str,
        start_revision: Option<i64>,
    ) -> Result<PrefixWatch> {
        let mut watch = PrefixWatch {
            etcd: etcd.clone(),
            rel_prefix: rel_prefix.to_string(),
            next_revision: start_revision.unwrap_or(0),
            stream: None,
            buffer: VecDeque::new(),
            reopened: 0,
            check_at: Instant::now() + PROGRESS_INTERVAL,
            progress_asked: false,
        };
        watch.open().await?;
        Ok(watch)
    }

    /// The revision a reopened watch would start at: every change before it
    /// has been yielded (or is buffered).
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// How many times the watch was reopened after the first (for logs and
    /// metrics: a number that keeps growing means members keep failing).
    pub fn reopened(&self) -> u64 {
        self.reopened
    }

    /// The next change. Reopens the watch as often as needed (with backoff)
    /// and so only returns an error for what a retry cannot fix: a key that
    /// is not ours, or a failed re-read after compaction.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        let mut backoff = REOPEN_BACKOFF;
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                return Ok(ev);
            }
            if self.stream.is_none() {
                self.reopened += 1;
                self.etcd.recheck().await;
                if let Err(e) = self.open().await {
                    tracing::warn!(prefix = %self.rel_prefix, error = %e, "reopening etcd watch");
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                }
                continue;
            }
            let stream = self.stream.as_mut().expect("checked above");
            let msg = tokio::select! {
                msg = stream.message() => msg,
                () = sleep_until(self.check_at) => {
                    if self.progress_asked {
                        tracing::info!(prefix = %self.rel_prefix, "etcd watch stream silent, reopening");
                        self.stream = None;
                    } else if let Err(e) = stream.request_progress().await {
                        tracing::info!(prefix = %self.rel_prefix, error = %e, "etcd watch stream failed, reopening");
                        self.stream = None;
                    } else {
                        self.progress_asked = true;
                        self.check_at = Instant::now() + PROGRESS_TIMEOUT;
                    }
                    continue;
                }
            };
            self.heard();
            match msg {
                Ok(Some(resp)) => {
                    if self.handle(resp).await? {
                        backoff = REOPEN_BACKOFF;
                    }
                }
                Ok(None) => {
                    tracing::info!(prefix = %self.rel_prefix, "etcd watch stream ended, reopening");
                    self.stream = None;
                }
                Err(e) => {
                    tracing::info!(prefix = %self.rel_prefix, error = %e, "etcd watch stream failed, reopening");
                    self.stream = None;
                }
            }
        }
    }

    /// The stream spoke: it is alive; ask again after a quiet interval.
    fn heard(&mut self) {
        self.progress_asked = false;
        self.check_at = Instant::now() + PROGRESS_INTERVAL;
    }

    /// Handles one response; false if the watch was cancelled.
    async fn handle(&mut self, resp: WatchResponse) -> Result<bool> {
        if resp.canceled() {
            self.stream = None;
            if resp.compact_revision() > 0 {
                tracing::warn!(
                    prefix = %self.rel_prefix,
                    wanted = self.next_revision,
                    compacted = resp.compact_revision(),
                    "etcd watch history compacted, re-reading the prefix"
                );
                let listing = self.etcd.list_raw(&self.rel_prefix).await?;
                self.next_revision = listing.revision + 1;
                self.buffer.push_back(WatchEvent::Resync(listing));
            } else {
                tracing::info!(prefix = %self.rel_prefix, reason = resp.cancel_reason(), "etcd cancelled the watch, reopening");
            }
            return Ok(false);
        }
        if resp.events().is_empty() {
            // Creation or an answer to a progress request. The latter's
            // revision is not used to move `next_revision` on: etcd before
            // 3.4.25 could send it ahead of events of that revision.
            return Ok(true);
        }
        for ev in resp.events() {
            let kv = ev.kv().ok_or_else(|| EtcdError::Protocol {
                op: "watch",
                key: self.rel_prefix.clone(),
                detail: "event without a key".into(),
            })?;
            let prev = ev.prev_kv().map(|p| raw(&self.etcd, p)).transpose()?;
            self.next_revision = self.next_revision.max(kv.mod_revision() + 1);
            self.buffer.push_back(match ev.event_type() {
                EventType::Put => WatchEvent::Put {
                    kv: raw(&self.etcd, kv)?,
                    prev,
                },
                EventType::Delete => WatchEvent::Delete {
                    key: self.etcd.rel_key(kv.key())?,
                    revision: kv.mod_revision(),
                    prev,
                },
            });
        }
        Ok(true)
    }

    /// Opens the watch at `next_revision` (or now) and waits for etcd to
    /// confirm it.
    async fn open(&mut self) -> Result<()> {
        let key = self.etcd.key(&self.rel_prefix);
        let mut opts = WatchOptions::new().with_prefix().with_prev_key();
        if self.next_revision > 0 {
            opts = opts.with_start_revision(self.next_revision);
        }
        let timeout = self.etcd.request_timeout();
        let mut client = self.etcd.blocking_client();
        let timed_out = || EtcdError::Timeout {
            op: "watch",
            key: self.rel_prefix.clone(),
            after: timeout,
        };
        let mut stream = tokio::time::timeout(timeout, client.watch(key, Some(opts)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| EtcdError::Request {
                op: "watch",
                key: self.rel_prefix.clone(),
                source,
            })?;
        let created = tokio::time::timeout(timeout, stream.message())
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| EtcdError::Request {
                op: "watch",
                key: self.rel_prefix.clone(),
                source,
            })?
            .ok_or_else(|| EtcdError::Protocol {
                op: "watch",
                key: self.rel_prefix.clone(),
                detail: "stream ended before the watch was created".into(),
            })?;
        if !created.created() {
            return Err(EtcdError::Protocol {
                op: "watch",
                key: self.rel_prefix.clone(),
                detail: "first watch response is not the creation".into(),
            });
        }
        if self.next_revision == 0 {
            let rev = created.header().map(|h| h.revision()).unwrap_or_default();
            self.next_revision = rev + 1;
        }
        self.stream = Some(stream);
        self.heard();
        // A creation can come back already cancelled (compacted start).
        self.handle(created).await?;
        Ok(())
    }
}

fn raw(etcd: &Etcd, kv: &etcd_client::KeyValue) -> Result<Versioned<Vec<u8>>> {
    Ok(Versioned {
        key: etcd.rel_key(kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}
