//! `osctl fleet locks [--format human|json|yaml]`: FleetLock locks.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use osctl_fleet::fleetlock;

use super::EtcdArgs;
use super::render::{self, Format};

#[derive(Args)]
pub struct LocksArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Output format (default: human on a terminal, YAML otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub async fn run(args: LocksArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect().await?;
    let locks = fleetlock::locks(&etcd, SystemTime::now()).await?;
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Human
    } else {
        Format::Yaml
    });
    print!("{}", render::locks(&locks, format)?);
    Ok(ExitCode::SUCCESS)
}
