//! Waking up when etcd changes instead of on the next poll.
//!
//! The agent works by "read everything, decide, write" (see its module docs),
//! which is correct whenever it runs; a watch only makes it run sooner. So a
//! watch that fails is dropped and started again later, and the poll interval
//! stays as the fallback: nothing depends on an event being seen. Bursts are
//! coalesced: after the first event, whatever else has already arrived is
//! taken too. (The controller's watch is more than a wake-up: it keeps the
//! leader's view, `controller/view.rs`.)

use std::time::Duration;

use crate::agent::error_chain;
use crate::etcd::{Etcd, PrefixWatch};

/// At most this many queued events are taken with the one that woke us.
const DRAIN_MAX: usize = 10_000;

/// An optional watch on one prefix.
#[derive(Default)]
pub struct Wake {
    prefix: Option<String>,
    watch: Option<PrefixWatch>,
}

impl Wake {
    /// Watches `prefix` (relative to the fleet prefix) from now on; a
    /// different prefix replaces the watch, `None` drops it. A watch that
    /// cannot be started is logged and tried again at the next call.
    pub async fn watch(&mut self, etcd: &Etcd, prefix: Option<&str>) {
        self.watch_from(etcd, prefix, None).await;
    }

    /// Like [`Self::watch`], but a watch started now starts at revision
    /// `from` (when given): a change made between a read at `from - 1` and
    /// this call still wakes the caller, instead of waiting for the poll.
    pub async fn watch_from(&mut self, etcd: &Etcd, prefix: Option<&str>, from: Option<i64>) {
        if self.prefix.as_deref() != prefix {
            self.watch = None;
            self.prefix = prefix.map(str::to_string);
        }
        if self.watch.is_none()
            && let Some(p) = &self.prefix
        {
            match PrefixWatch::start(etcd, p, from).await {
                Ok(w) => self.watch = Some(w),
                Err(e) => {
                    tracing::debug!(prefix = %p, error = %error_chain(&e), "watch not started")
                }
            }
        }
    }

    /// Waits for a change under the prefix (and takes every change already
    /// queued behind it); never returns without a watch.
    pub async fn changed(&mut self) {
        let Some(w) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        if let Err(e) = w.next().await {
            tracing::debug!(error = %error_chain(&e), "watch failed; polling until it is back");
            self.watch = None;
            return;
        }
        for _ in 0..DRAIN_MAX {
            match tokio::time::timeout(Duration::ZERO, w.next()).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    self.watch = None;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
