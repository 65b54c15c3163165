//! The connection to etcd: two clients, endpoint health, typed JSON records
//! and compare-and-swap writes.
//!
//! Two clients share the endpoints: the *request* client gives every call a
//! timeout, so a read or write against a stalled cluster fails instead of
//! hanging; the *blocking* client has none, because an election campaign
//! waits as long as another candidate leads, and the etcd-client crate's
//! timeout would cancel it. Streams (watches, lease keepalives) also use the
//! blocking client, each guarded by its own timeouts.
//!
//! The etcd-client crate balances over every endpoint it was given and never
//! drops a dead one: with one of three members killed, about half the
//! requests failed until the member came back. So a background task asks
//! every configured endpoint for its status (short timeout, about once a
//! second) and removes members that do not answer, or answer without a raft
//! leader, from both clients, and adds them back once they recover. When no
//! member looks healthy all are kept: there is nothing better to try.
//!
//! Writes are never retried here: a put whose answer was lost may have been
//! applied, and applying it again could undo someone else's change. Every
//! state change is a transaction that compares revisions; after an error the
//! caller re-reads and decides again. Reads are retried a few times.

use std::collections::BTreeSet;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::Fence;
use super::error::{EtcdError, Result};

/// Default timeout of one request on the request client.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout for opening a TCP connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 ping interval and timeout, while streams are open: a stopped
/// member keeps its TCP connections open, and a missed ping ends the streams
/// on it (a waiting campaign has no other way to notice). Not more often:
/// etcd (`--grpc-keepalive-min-time`, default 5 s) answers more frequent
/// pings with GOAWAY, which killed idle watches every few seconds.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often and how patiently each endpoint's health is probed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(700);
/// Attempts and first backoff for reads (writes get one attempt).
const READ_ATTEMPTS: u32 = 3;
const READ_BACKOFF: Duration = Duration::from_millis(100);
/// Headroom over the client's own timeout before our outer timeout fires;
/// the outer one covers a request that waits for an endpoint to become ready
/// at all, which the per-connection timeout does not see.
const OUTER_TIMEOUT_SLACK: Duration = Duration::from_millis(500);

/// A record read from etcd with the revisions a compare-and-swap needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The key relative to the prefix.
    pub key: String,
    pub value: T,
    /// Revision that created the key (0 never occurs for a stored key).
    pub create_revision: i64,
    /// Revision of the last change: what [`Etcd::replace`] and
    /// [`Etcd::delete_if`] compare.
    pub mod_revision: i64,
    /// The lease the key is bound to, 0 for none.
    pub lease: i64,
}

/// All records under a prefix, read at one revision (start a watch at
/// `revision + 1` to miss nothing after this listing).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub revision: i64,
    pub items: Vec<Versioned<T>>,
}

/// The outcome of [`Etcd::txn`]: whether the compares held, the revision
/// after it, and the responses of the operations that ran (empty when the
/// compares failed).
#[derive(Debug, Clone)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub revision: i64,
    pub responses: Vec<TxnOpResponse>,
}

/// A connection to the fleet's etcd cluster under one key prefix. Cheap to
/// clone; the health task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    request: Client,
    blocking: Client,
    prefix: String,
    request_timeout: Duration,
    endpoints: Vec<String>,
    active: Arc<Mutex<BTreeSet<String>>>,
    health: JoinHandle<()>,
    /// The health checker, shared by the periodic task and
    /// [`Etcd::recheck`].
    checker: Arc<tokio::sync::Mutex<HealthChecker>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.health.abort();
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Etcd {
    /// Connects with [`DEFAULT_REQUEST_TIMEOUT`]; see [`Self::connect_with_timeout`].
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd> {
        Self::connect_with_timeout(endpoints, prefix, DEFAULT_REQUEST_TIMEOUT).await
    }

    /// Connects to `endpoints` (`http://host:port`) for keys under `prefix`
    /// (must start and end with `/`, e.g. `/osctl/fleet/`). Fails unless at
    /// least one endpoint answers; then starts the health task.
    pub async fn connect_with_timeout(
        endpoints: &[String],
        prefix: &str,
        request_timeout: Duration,
    ) -> Result<Etcd> {
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no etcd endpoints given".into()));
        }
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(EtcdError::Config(format!(
                "prefix {prefix:?} must start and end with '/'"
            )));
        }
        let base = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(H2_PING_INTERVAL, H2_PING_TIMEOUT)
            // etcd refuses pings on connections without streams.
            .with_keep_alive_while_idle(false)
            // A member cut off from the quorum answers "no leader" at once
            // (and cancels its watches) instead of serving stale reads or
            // hanging a write until the timeout.
            .with_require_leader(true);
        let connect = |opts: ConnectOptions| async move {
            Client::connect(endpoints, Some(opts))
                .await
                .map_err(|source| EtcdError::Request {
                    op: "connect",
                    key: endpoints.join(","),
                    source,
                })
        };
        let request = connect(base.clone().with_timeout(request_timeout)).await?;
        let blocking = connect(base).await?;
        let mut probes = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let probe = Client::connect(
                [ep],
                Some(
                    ConnectOptions::new()
                        .with_connect_timeout(HEALTH_TIMEOUT)
                        .with_timeout(HEALTH_TIMEOUT),
                ),
            )
            .await
            .map_err(|source| EtcdError::Request {
                op: "connect",
                key: ep.clone(),
                source,
            })?;
            probes.push((ep.clone(), probe));
        }
        let all: BTreeSet<String> = endpoints.iter().cloned().collect();
        let active = Arc::new(Mutex::new(all));
        let mut checker = HealthChecker {
            probes,
            clients: [request.clone(), blocking.clone()],
            active: active.clone(),
        };
        // The first round runs before we return, so a client starts without
        // the members that are already down, and a cluster of which nothing
        // answers is an error now rather than timeouts later.
        if checker.round().await == 0 {
            return Err(EtcdError::Unreachable {
                endpoints: endpoints.to_vec(),
            });
        }
        let checker = Arc::new(tokio::sync::Mutex::new(checker));
        let periodic = checker.clone();
        let health = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_INTERVAL).await;
                periodic.lock().await.round().await;
            }
        });
        Ok(Etcd {
            inner: Arc::new(Inner {
                request,
                blocking,
                prefix: prefix.to_string(),
                request_timeout,
                endpoints: endpoints.to_vec(),
                active,
                health,
                checker,
            }),
        })
    }

    /// The key prefix, e.g. `/osctl/fleet/`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The absolute key of `rel` (a key relative to the prefix).
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.inner.prefix)
    }

    /// The key relative to the prefix of an absolute key etcd returned.
    pub fn rel_key(&self, abs: &[u8]) -> Result<String> {
        std::str::from_utf8(abs)
            .ok()
            .and_then(|k| k.strip_prefix(self.inner.prefix.as_str()))
            .map(str::to_string)
            .ok_or_else(|| EtcdError::ForeignKey {
                key: String::from_utf8_lossy(abs).into_owned(),
                prefix: self.inner.prefix.clone(),
            })
    }

    /// Checks every member now (a stream just died or went silent), so
    /// that what is opened next goes to a member that answers; takes at
    /// most the probe timeout, or two if a periodic round is under way.
    pub(crate) async fn recheck(&self) {
        self.inner.checker.lock().await.round().await;
    }

    /// The per-request timeout of the request client.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The endpoints requests currently go to (the healthy ones, or all
    /// when none is healthy).
    pub fn active_endpoints(&self) -> Vec<String> {
        lock(&self.inner.active).iter().cloned().collect()
    }

    /// The request client (with the per-request timeout), for calls this
    /// layer does not wrap. Its writes must be transactions too.
    pub fn request_client(&self) -> Client {
        self.inner.request.clone()
    }

    /// The client without a request timeout (campaigns, streams).
    pub(crate) fn blocking_client(&self) -> Client {
        self.inner.blocking.clone()
    }

    /// Runs one request on the request client under an outer timeout and
    /// maps its error to `op` and `key`.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let after = self.inner.request_timeout + OUTER_TIMEOUT_SLACK;
        match tokio::time::timeout(after, f(self.inner.request.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(EtcdError::Request {
                op,
                key: key.to_string(),
                source,
            }),
            Err(_) => Err(EtcdError::Timeout {
                op,
                key: key.to_string(),
                after,
            }),
        }
    }

    /// Like [`Self::call`] but retried with backoff: only for reads.
    async fn read<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut delay = READ_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.call(op, key, &f).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "etcd read failed, retrying");
                    tokio::time::sleep(jittered(delay)).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the JSON record at `rel`: `None` if the key is absent, an error
    /// naming the key if its value does not parse.
    pub async fn get_json<T: DeserializeOwned>(&self, rel: &str) -> Result<Option<Versioned<T>>> {
        let key = self.key(rel);
        let mut resp = self
            .read("get", rel, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        match resp.take_kvs().into_iter().next() {
            None => Ok(None),
            Some(kv) => Ok(Some(self.decode_kv(&kv)?)),
        }
    }

    /// Reads every record under `rel_prefix` at one revision, decoding each
    /// as JSON; one value that does not parse fails the listing (use
    /// [`Self::list_raw`] to judge records one by one).
    pub async fn list_json<T: DeserializeOwned>(&self, rel_prefix: &str) -> Result<Listing<T>> {
        let raw = self.list_raw(rel_prefix).await?;
        let items = raw
            .items
            .into_iter()
            .map(|v| {
                Ok(Versioned {
                    value: decode_json(&v.key, &v.value)?,
                    key: v.key,
                    create_revision: v.create_revision,
                    mod_revision: v.mod_revision,
                    lease: v.lease,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing {
            revision: raw.revision,
            items,
        })
    }

    /// Reads every key under `rel_prefix` at one revision, values as bytes.
    pub async fn list_raw(&self, rel_prefix: &str) -> Result<Listing<Vec<u8>>> {
        let key = self.key(rel_prefix);
        let mut resp = self
            .read("list", rel_prefix, |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let items = resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                Ok(Versioned {
                    key: self.rel_key(kv.key())?,
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                    value: kv.value().to_vec(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing { revision, items })
    }

    pub(crate) fn decode_kv<T: DeserializeOwned>(
        &self,
        kv: &etcd_client::KeyValue,
    ) -> Result<Versioned<T>> {
        let key = self.rel_key(kv.key())?;
        Ok(Versioned {
            value: decode_json(&key, kv.value())?,
            key,
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
    }

    /// Ends lease `id` now (its keys are deleted with it). A lease already
    /// gone is not an error: the point is that it no longer holds.
    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        let what = format!("lease {id:x}");
        match self
            .call("lease revoke", &what, |mut c| async move {
                c.lease_revoke(id).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Request { source, .. })
                if source.to_string().contains("requested lease not found") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `rel` with `value` only if the key does not exist
    /// (create revision 0), bound to `lease` if given. `Ok(false)`: it exists.
    pub async fn create<T: Serialize>(
        &self,
        rel: &str,
        value: &T,
        lease: Option<i64>,
        fence: Option<&Fence>,
    ) -> Result<bool> {
        let key = self.key(rel);
        let bytes = encode_json(rel, value)?;
        let put = match lease {
            Some(id) => TxnOp::put(key.clone(), bytes, Some(PutOptions::new().with_lease(id))),
            None => TxnOp::put(key.clone(), bytes, None),
        };
        let cmp = Compare::create_revision(key, CompareOp::Equal, 0);
        Ok(self
            .txn_op("create", rel, vec![cmp], vec![put], fence)
            .await?
            .succeeded)
    }

    /// Replaces the value of `rel` only if its mod revision is still
    /// `expected_mod_revision`. The key loses any lease it had. `Ok(false)`:
    /// it changed (or vanished) since it was read.
    pub async fn replace<T: Serialize>(
        &self,
        rel: &str,
        value: &T,
        expected_mod_revision: i64,
        fence: Option<&Fence>,
    ) -> Result<bool> {
        self.replace_leased(rel, value, expected_mod_revision, None, fence)
            .await
    }

    /// [`Self::replace`], binding the key to `lease` (e.g. a restarted
    /// agent taking over its presence key, still bound to its old lease).
    pub async fn replace_leased<T: Serialize>(
        &self,
        rel: &str,
        value: &T,
        expected_mod_revision: i64,
        lease: Option<i64>,
        fence: Option<&Fence>,
    ) -> Result<bool> {
        let key = self.key(rel);
        let bytes = encode_json(rel, value)?;
        let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, expected_mod_revision);
        let put = TxnOp::put(key, bytes, lease.map(|id| PutOptions::new().with_lease(id)));
        Ok(self
            .txn_op("replace", rel, vec![cmp], vec![put], fence)
            .await?
            .succeeded)
    }

    /// Deletes `rel` only if its mod revision is still `mod_revision`.
    /// `Ok(false)`: it changed or is gone.
    pub async fn delete_if(
        &self,
        rel: &str,
        mod_revision: i64,
        fence: Option<&Fence>,
    ) -> Result<bool> {
        let key = self.key(rel);
        let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision);
        let del = TxnOp::delete(key, None);
        Ok(self
            .txn_op("delete", rel, vec![cmp], vec![del], fence)
            .await?
            .succeeded)
    }

    /// Whether `rel` exists, decided by the cluster's consensus rather than
    /// by a read. A linearizable read is meant to need the majority, but
    /// etcd before 3.4.42, 3.5.28 and 3.6.9 (Debian ships 3.4.23) can
    /// answer one from a read index obtained before a pause or a leader
    /// change (etcd-io/etcd#20418 and #21375): a member just cut off from
    /// the majority was seen answering a slot read here. A transaction with
    /// a write in it is a raft proposal like any write, which such a member
    /// cannot commit: this one compares the key's existence, gets it if it
    /// exists, and otherwise deletes it — which deletes nothing (it does
    /// not exist at that revision), so nothing is written and no revision
    /// is used. Not retried: the caller decides again.
    pub async fn exists_by_consensus(&self, rel: &str) -> Result<bool> {
        let key = self.key(rel);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Greater,
                0,
            )])
            .and_then(vec![TxnOp::get(key.clone(), None)])
            .or_else(vec![TxnOp::delete(key, None)]);
        let resp = self
            .call("existence check by consensus", rel, |mut c| async move {
                c.txn(txn).await
            })
            .await?;
        Ok(resp.succeeded())
    }

    /// A general transaction: `ops` run if every compare (absolute keys, see
    /// [`Self::key`]) holds. With a `fence`, its compare is added, and a
    /// failure because the fence no longer holds is [`EtcdError::Fenced`]
    /// rather than `succeeded: false`. `what` names the records for errors.
    pub async fn txn(
        &self,
        what: &str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        fence: Option<&Fence>,
    ) -> Result<TxnOutcome> {
        self.txn_op("txn", what, compares, ops, fence).await
    }

    pub(crate) async fn txn_op(
        &self,
        op: &'static str,
        what: &str,
        mut compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        fence: Option<&Fence>,
    ) -> Result<TxnOutcome> {
        let mut otherwise = Vec::new();
        if let Some(f) = fence {
            compares.push(f.compare());
            // On failure, read the fence key so a lost leadership is told
            // apart from an ordinary conflict in the same round trip.
            otherwise.push(TxnOp::get(f.key().to_string(), None));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(otherwise);
        let resp = self
            .call(op, what, |mut c| async move { c.txn(txn).await })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let responses = resp.op_responses();
        if !resp.succeeded()
            && let Some(f) = fence
        {
            let current = match responses.first() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.create_revision()),
                _ => {
                    return Err(EtcdError::Protocol {
                        op,
                        key: what.to_string(),
                        detail: "failed transaction without the fence read".into(),
                    });
                }
            };
            if current != Some(f.created()) {
                return Err(EtcdError::Fenced {
                    op,
                    key: what.to_string(),
                    fence_key: f.key().to_string(),
                    created: f.created(),
                });
            }
        }
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision,
            responses: if resp.succeeded() {
                responses
            } else {
                Vec::new()
            },
        })
    }
}

/// Parses a stored JSON value; the error names the key.
pub fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| EtcdError::Decode {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn encode_json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| EtcdError::Encode {
        key: key.to_string(),
        source,
    })
}

/// `base` scaled by a random factor in [0.5, 1.5): contenders that collided
/// once should not collide again in lockstep. The randomness is std's
/// per-process SipHash keys, which is plenty for spreading retries.
pub(crate) fn jittered(base: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (r % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a set of endpoint names, which
    // is still consistent; keep using it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Probes every endpoint and moves the clients' endpoint sets to the
/// healthy ones.
struct HealthChecker {
    probes: Vec<(String, Client)>,
    clients: [Client; 2],
    active: Arc<Mutex<BTreeSet<String>>>,
}

impl HealthChecker {
    /// One round; returns how many endpoints are healthy.
    async fn round(&mut self) -> usize {
        let checks = self.probes.iter().map(|(ep, probe)| {
            let mut probe = probe.clone();
            async move {
                let healthy = match tokio::time::timeout(HEALTH_TIMEOUT, probe.status()).await {
                    // Leader 0: the member is cut off from the quorum (or
                    // electing); requests through it would only fail.
                    Ok(Ok(status)) => status.leader() != 0,
                    Ok(Err(_)) | Err(_) => false,
                };
                (ep.clone(), healthy)
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let healthy: BTreeSet<String> = results
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(ep, _)| ep)
            .collect();
        let wanted = if healthy.is_empty() {
            self.probes.iter().map(|(ep, _)| ep.clone()).collect()
        } else {
            healthy.clone()
        };
        let current = lock(&self.active).clone();
        for ep in wanted.difference(&current) {
            tracing::info!(endpoint = %ep, "etcd endpoint back in use");
            for c in &self.clients {
                if let Err(e) = c.add_endpoint(ep).await {
                    tracing::warn!(endpoint = %ep, error = %e, "adding etcd endpoint");
                }
            }
        }
        for ep in current.difference(&wanted) {
            tracing::warn!(endpoint = %ep, "etcd endpoint unhealthy, not used until it recovers");
            for c in &self.clients {
                if let Err(e) = c.remove_endpoint(ep).await {
                    tracing::warn!(endpoint = %ep, error = %e, "removing etcd endpoint");
                }
            }
        }
        *lock(&self.active) = wanted;
        healthy.len()
    }
}
