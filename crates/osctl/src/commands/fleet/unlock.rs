//! `osctl fleet unlock GROUP ID`: clears a FleetLock lock whose machine
//! will not call steady-state (see osctl_fleet::fleetlock's locks module).

use std::process::ExitCode;

use clap::Args;
use osctl_fleet::fleetlock;

use super::EtcdArgs;

#[derive(Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The FleetLock group (Zincati's `group`).
    pub group: String,
    /// The machine's FleetLock id (Zincati's `id`).
    pub id: String,
}

pub async fn run(args: UnlockArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect().await?;
    if !fleetlock::unlock(&etcd, &args.group, &args.id).await? {
        anyhow::bail!(
            "group {} holds no lock of id {} (see `osctl fleet locks`)",
            args.group,
            args.id
        );
    }
    println!("lock of {} in group {} released", args.id, args.group);
    Ok(ExitCode::SUCCESS)
}
