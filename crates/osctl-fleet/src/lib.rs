//! Fleet rollouts on etcd (docs/fleet.md has the model, the key layout and
//! the agent's state machine).
//!
//! The crate is split by who decides and who does: the rollout spec and the
//! records kept in etcd are plain data; the controller's decisions are a
//! pure function of those records and the time, so every rule (steps,
//! maxUnavailable, windows, failure budget) is tested without a cluster; the
//! etcd layer only moves records, with every state change a transaction.

pub mod admin;
pub mod agent;
pub mod controller;
pub mod etcd;
pub mod fleetlock;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod spec;
pub mod wake;
pub mod window;
