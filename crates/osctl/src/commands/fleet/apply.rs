//! `osctl fleet apply -f ROLLOUT.yaml`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use osctl_fleet::admin::{self, Applied};
use osctl_fleet::spec::Rollout;

use super::EtcdArgs;

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The rollout spec (YAML; `-` reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the rollout spec from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let rollout = Rollout::parse(&text).with_context(|| format!("{}", args.file.display()))?;
    let etcd = args.etcd.connect().await?;
    match admin::apply(&etcd, &rollout).await? {
        Applied::Created { generation } => {
            println!("rollout/{} created (generation {generation})", rollout.name)
        }
        Applied::Changed { generation } => {
            println!(
                "rollout/{} configured (generation {generation})",
                rollout.name
            )
        }
        Applied::Unchanged { generation } => {
            println!(
                "rollout/{} unchanged (generation {generation})",
                rollout.name
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}
