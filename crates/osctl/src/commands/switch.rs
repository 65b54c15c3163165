//! `osctl switch IMAGE [--apply] [--retain]`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_deploy::StageOutcome;

use super::deploy_common::{self, FetchArgs, TransportArg};
use crate::progress::{self, ProgressMode};

#[derive(Args)]
pub struct SwitchArgs {
    /// The image to deploy (same forms as `image pull`).
    pub image: String,
    /// Finalize and reboot into it now.
    #[arg(long)]
    pub apply: bool,
    /// Keep old deployments instead of pruning those no longer needed.
    #[arg(long)]
    pub retain: bool,
    #[command(flatten)]
    pub transport: TransportArg,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// How to show progress: bars on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub async fn run(
    args: SwitchArgs,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let imgref = args.transport.image_ref(&args.image)?;
    let fetch = args.fetch.options()?;
    let sysroot = deploy_common::open(sysroot, boot)?;
    let outcome = sysroot
        .stage(&imgref, &fetch, progress::observer(args.progress))
        .await?;
    report(&outcome, &imgref.to_string());
    deploy_common::after_stage(&sysroot, &outcome, !args.retain, args.apply)?;
    Ok(ExitCode::SUCCESS)
}

pub fn report(outcome: &StageOutcome, image: &str) {
    match outcome {
        StageOutcome::Staged { id, replaced } => {
            if let Some(old) = replaced {
                println!(
                    "Replaced the staged deployment {} (it will not boot)",
                    old.short()
                );
            }
            println!(
                "Staged {image} as deployment {}; it boots after the next reboot",
                id.short()
            )
        }
        StageOutcome::AlreadyStaged(id) => {
            println!("{image} already boots next (deployment {})", id.short())
        }
        StageOutcome::Released(id) => println!(
            "{image} was downloaded only (deployment {}); now staged: it boots after the next reboot",
            id.short()
        ),
        // Only `upgrade --download-only` gets it; it reports it itself.
        StageOutcome::AlreadyDeployed { id, .. } => {
            println!("{image} is deployment {} already", id.short())
        }
        StageOutcome::AlreadyBooted { id, cancelled } => {
            println!(
                "{image} is the booted deployment ({}); nothing staged",
                id.short()
            );
            if let Some(old) = cancelled {
                println!(
                    "Deployment {} is no longer staged or queued: the booted one boots next",
                    old.short()
                );
            }
        }
    }
}
