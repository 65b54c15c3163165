//! `osctl fleet nodes [--format human|json|yaml]`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use osctl_fleet::admin;

use super::EtcdArgs;
use super::render::{self, Format};

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Output format (default: human on a terminal, YAML otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let etcd = args.etcd.connect().await?;
    let nodes = admin::nodes(&etcd).await?;
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Human
    } else {
        Format::Yaml
    });
    print!("{}", render::nodes(&nodes, format)?);
    Ok(ExitCode::SUCCESS)
}
