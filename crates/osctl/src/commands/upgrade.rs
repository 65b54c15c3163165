//! `osctl upgrade [--check] [--apply]`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_deploy::{StageOutcome, UpdateCheck};

use super::deploy_common::{self, FetchArgs};
use super::switch::report;
use crate::progress::{self, ProgressMode};

#[derive(Args)]
pub struct UpgradeArgs {
    /// Only check: fetch manifest and config, download no layers, record
    /// the result for `status` (cachedUpdate).
    #[arg(long, conflicts_with = "apply")]
    pub check: bool,
    /// Finalize and reboot into the update now.
    #[arg(long)]
    pub apply: bool,
    /// Stage the image even if it failed on this machine before (its
    /// health checks failed or it did not boot).
    #[arg(long, conflicts_with = "check")]
    pub force: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub async fn run(
    args: UpgradeArgs,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let fetch = args.fetch.options()?;
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        return Err(osctl_deploy::DeployError::NothingTracked.into());
    };
    if args.check {
        match sysroot.check_update(&fetch).await? {
            UpdateCheck::UpToDate { image } => println!("No update available for {image}"),
            UpdateCheck::Available { image, update } => println!(
                "Update available for {image}: {}{}",
                update.manifest_digest,
                update
                    .version
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (imgref, _) = sysroot.tracked()?;
    let outcome = sysroot
        .upgrade(&fetch, progress::observer(args.progress), args.force)
        .await?;
    match &outcome {
        StageOutcome::AlreadyBooted {
            cancelled: None, ..
        } => println!("No update available for {imgref}"),
        other => report(other, &imgref.to_string()),
    }
    deploy_common::after_stage(&sysroot, &outcome, true, args.apply)?;
    Ok(ExitCode::SUCCESS)
}
