//! `osctl fleet fleetlock --etcd URL… --listen ADDR:PORT`: the FleetLock
//! server for machines that reboot themselves (Zincati), counted in the
//! fleet's etcd (docs/fleet.md "FleetLock"). It also serves `/metrics`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use osctl_fleet::fleetlock::{self, FleetLock, FleetLockOptions};

use super::EtcdArgs;

#[derive(Args)]
pub struct FleetLockArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Where to listen, plain HTTP (e.g. 0.0.0.0:8080).
    #[arg(long)]
    pub listen: String,
    /// Slots of a group no rollout governs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub default_slots: u32,
    /// How long a lock may be held before it counts as failed (e.g. 15m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub reboot_deadline: Duration,
}

pub async fn run(args: FleetLockArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect_waiting().await?;
    let listener = osctl_fleet::http::bind(&args.listen).await?;
    let local = listener
        .local_addr()
        .with_context(|| format!("reading the address bound for {}", args.listen))?;
    tracing::info!(%local, "fleetlock: serving");
    let server = FleetLock::new(
        etcd,
        FleetLockOptions {
            default_slots: args.default_slots as usize,
            reboot_deadline: args.reboot_deadline,
        },
    );
    fleetlock::serve(server, listener).await?;
    Ok(ExitCode::SUCCESS)
}
