//! The etcd layer of the fleet: a connection that survives member failures,
//! typed JSON records written only by compare-and-swap, watches that resume,
//! kept leases, the controller's election and reboot slots.
//!
//! # The model
//!
//! etcd is the only shared state (docs/fleet.md has the key layout). This
//! layer moves records and guards their consistency; it decides nothing
//! about rollouts. Its rules come from how etcd 3.4 and the etcd-client
//! crate behave when members fail:
//!
//! * **Every write is a compare-and-swap** ([`Etcd::create`],
//!   [`Etcd::replace`], [`Etcd::delete_if`], [`Etcd::txn`]) and none is
//!   retried here: a put whose answer was lost may have been applied, so the
//!   caller re-reads and decides again. Reads are retried.
//! * **Unreadable means refused**: a value that does not parse is an
//!   [`EtcdError::Decode`] naming the key, never "absent".
//! * **Dead members are dropped**: the client's health task takes members
//!   that do not answer (or have no raft leader) out of rotation and puts
//!   them back when they recover ([`client`]).
//! * **Streams are re-created**: watches resume from the last revision seen
//!   ([`PrefixWatch`]), keepalives reopen ([`KeptLease`]).
//! * **Leaders are fenced**: a leader's writes compare its election key's
//!   create revision ([`Fence`]), so a deposed leader writes nothing.
//! * **Slots are counted in one transaction** against a guard key
//!   ([`Slots`]), and expire with a lease nobody keeps alive.

pub mod client;
pub mod election;
pub mod error;
pub mod lease;
pub mod slots;
pub mod watch;

pub use client::{DEFAULT_REQUEST_TIMEOUT, Etcd, Listing, TxnOutcome, Versioned, decode_json};
pub use election::{CONTROLLER_ELECTION, Fence, Leadership};
pub use error::EtcdError;
pub use lease::KeptLease;
pub use slots::{FLEETLOCK_ROOT, Grant, Holder, MAX_BATCH, PoolRead, SLOTS_ROOT, Slots};
pub use watch::{PrefixWatch, WatchEvent};

/// The etcd-client types a caller needs to build its own transactions.
pub use etcd_client::{Compare, CompareOp, PutOptions, TxnOp, TxnOpResponse};
