//! The one error type of the etcd layer.
//!
//! Every variant names the operation and the key (relative to the fleet
//! prefix, as the rest of the crate spells keys) so a log line says what was
//! being read or written; the etcd client's own error stays the source.

use std::time::Duration;

/// What went wrong talking to etcd, and on which key.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoints or the prefix given to [`super::Etcd::connect`] are unusable.
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    /// No configured endpoint answered a status request when connecting.
    #[error("no etcd endpoint of {endpoints:?} answered a status request")]
    Unreachable { endpoints: Vec<String> },
    /// etcd (or the connection to it) failed the request. For a write this
    /// means *unknown*: the change may have been applied; re-read, never
    /// blindly repeat.
    #[error("etcd {op} of {key} failed")]
    Request {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    /// No answer within the request timeout (a partitioned minority, a
    /// stopped member, no endpoint left). Same caveat as `Request` for writes.
    #[error("etcd {op} of {key}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    /// A stored value is not the JSON this version understands: refused,
    /// never read as absent.
    #[error("etcd value at {key} cannot be read")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("encoding the value for {key}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// etcd returned a key outside the prefix or not UTF-8.
    #[error("etcd returned key {key:?}, which is not a UTF-8 key under {prefix}")]
    ForeignKey { key: String, prefix: String },
    /// The write carried a leadership fence and the leadership is gone: this
    /// process is no longer the leader and must stop writing.
    #[error(
        "etcd {op} of {key} refused: leadership {fence_key} (created at revision {created}) is gone"
    )]
    Fenced {
        op: &'static str,
        key: String,
        fence_key: String,
        created: i64,
    },
    /// Releasing a reboot slot the holder does not hold.
    #[error("{holder} holds no reboot slot in pool {pool}")]
    NotHeld { pool: String, holder: String },
    /// A pool, holder or election name that cannot be a key segment.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// A kept lease ran out or etcd dropped it; whoever relied on it must
    /// stop acting on its behalf.
    #[error("etcd lease {lease:x} is lost")]
    LeaseLost { lease: i64 },
    /// A compare-and-swap loop lost too many races in a row.
    #[error("etcd {op} of {key}: gave up after {attempts} compare-and-swap conflicts")]
    Contention {
        op: &'static str,
        key: String,
        attempts: u32,
    },
    /// etcd answered with something the protocol does not allow (e.g. a
    /// campaign without a leader key).
    #[error("etcd {op} of {key}: unexpected answer: {detail}")]
    Protocol {
        op: &'static str,
        key: String,
        detail: String,
    },
}

/// Shorthand for results of this layer.
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;
