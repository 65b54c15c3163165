//! `osctl fleet …`: rollouts across many machines, on etcd (docs/fleet.md).
//! One file per command; each parses its arguments and calls osctl-fleet.

pub mod agent;
pub mod apply;
pub mod control;
pub mod controller;
pub mod fleetlock;
pub mod locks;
pub mod nodes;
pub mod render;
pub mod status;
pub mod unlock;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use osctl_fleet::etcd::{Etcd, EtcdError};

/// Where a fleet keeps its state when `--prefix` does not say.
pub const DEFAULT_PREFIX: &str = "/osctl/fleet/";

/// The etcd connection every fleet command takes.
#[derive(Args, Clone)]
pub struct EtcdArgs {
    /// etcd endpoints (http://HOST:PORT), comma-separated.
    #[arg(long, env = "OSCTL_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// Key prefix of this fleet in etcd (several fleets can share a cluster).
    #[arg(long, env = "OSCTL_FLEET_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
}

/// First and longest wait between connection attempts of a service while
/// no etcd endpoint answers.
const CONNECT_RETRY_FIRST: Duration = Duration::from_secs(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

impl EtcdArgs {
    /// Connects once: a command an admin runs fails at once when etcd does
    /// not answer.
    pub async fn connect(&self) -> anyhow::Result<Etcd> {
        Ok(Etcd::connect(&self.etcd, &self.prefix).await?)
    }

    /// Connects, waiting for etcd while no endpoint answers: for the
    /// services (agent, controller, FleetLock server). At boot the network
    /// may come up after them, and an etcd that is down for a while is no
    /// reason for a service to exit and be restarted blind. A bad endpoint
    /// or prefix is an error at once.
    pub async fn connect_waiting(&self) -> anyhow::Result<Etcd> {
        let mut wait = CONNECT_RETRY_FIRST;
        loop {
            match Etcd::connect(&self.etcd, &self.prefix).await {
                Ok(etcd) => return Ok(etcd),
                Err(e @ EtcdError::Unreachable { .. }) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "etcd unreachable; waiting for it");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(CONNECT_RETRY_MAX);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Run the rollout controller (several may run; one leads).
    Controller(controller::ControllerArgs),
    /// Run this machine's fleet agent.
    Agent(agent::AgentArgs),
    /// Serve FleetLock (Zincati's reboot locks) and /metrics on etcd.
    Fleetlock(fleetlock::FleetLockArgs),
    /// Apply a rollout spec (YAML).
    Apply(apply::ApplyArgs),
    /// Show rollouts: phase, step, nodes, and why progress is blocked.
    Status(status::StatusArgs),
    /// Show the fleet's nodes.
    Nodes(nodes::NodesArgs),
    /// Show FleetLock locks: group, id, the pool holding them, failed or not.
    Locks(locks::LocksArgs),
    /// Release a FleetLock lock whose machine will not (a failed lock of a
    /// machine that is gone).
    Unlock(unlock::UnlockArgs),
    /// Pause a rollout: no new reboots until `resume`.
    Pause(control::ControlArgs),
    /// Resume a paused or halted rollout.
    Resume(control::ControlArgs),
    /// End a `pause: {}` step now.
    Promote(control::ControlArgs),
    /// Stop a rollout: no new assignments; nodes not yet rebooting drop theirs.
    Abort(control::ControlArgs),
    /// Send the nodes a rollout updated back to their previous image.
    Undo(control::ControlArgs),
}

pub async fn run(
    cmd: FleetCommand,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use osctl_fleet::model::ControlAction;
    match cmd {
        FleetCommand::Controller(a) => controller::run(a).await,
        FleetCommand::Agent(a) => agent::run(a, sysroot, boot).await,
        FleetCommand::Fleetlock(a) => fleetlock::run(a).await,
        FleetCommand::Apply(a) => apply::run(a).await,
        FleetCommand::Status(a) => status::run(a).await,
        FleetCommand::Nodes(a) => nodes::run(a).await,
        FleetCommand::Locks(a) => locks::run(a).await,
        FleetCommand::Unlock(a) => unlock::run(a).await,
        FleetCommand::Pause(a) => control::run(a, ControlAction::Pause).await,
        FleetCommand::Resume(a) => control::run(a, ControlAction::Resume).await,
        FleetCommand::Promote(a) => control::run(a, ControlAction::Promote).await,
        FleetCommand::Abort(a) => control::run(a, ControlAction::Abort).await,
        FleetCommand::Undo(a) => control::run(a, ControlAction::Undo).await,
    }
}
