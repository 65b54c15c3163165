//! `osctl fleet status [ROLLOUT] [--format human|json|yaml]`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use osctl_fleet::admin;

use super::EtcdArgs;
use super::render::{self, Format};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Only this rollout.
    pub rollout: Option<String>,
    /// Output format (default: human on a terminal, YAML otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect().await?;
    let rollouts = admin::rollouts(&etcd, args.rollout.as_deref()).await?;
    let nodes = admin::nodes(&etcd).await?;
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Human
    } else {
        Format::Yaml
    });
    print!("{}", render::rollouts(&rollouts, &nodes, format)?);
    Ok(ExitCode::SUCCESS)
}
