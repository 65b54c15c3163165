//! `osctl upgrade [--check] [--apply] [--download-only | --from-downloaded]`.

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
    /// Download and stage the update, but do not apply it at shutdown:
    /// `--from-downloaded` releases it (e.g. in a maintenance window).
    #[arg(long, conflicts_with_all = ["check", "apply"])]
    pub download_only: bool,
    /// Release the update `--download-only` staged, without contacting the
    /// registry: it is applied at the next shutdown (now, with `--apply`).
    #[arg(long, conflicts_with_all = ["check", "download_only", "force"])]
    pub from_downloaded: bool,
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
        return Err(match args.from_downloaded {
            true => osctl_deploy::DeployError::NothingDownloaded,
            false => osctl_deploy::DeployError::NothingTracked,
        }
        .into());
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
            UpdateCheck::Refused { image, digest, why } => {
                println!("Update for {image} refused: {digest}: {why}");
                return Ok(ExitCode::FAILURE);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.from_downloaded {
        let id = sysroot.release_downloaded()?;
        println!(
            "Released the downloaded deployment {}: it boots after the next reboot",
            id.short()
        );
        // No pruning: releasing changes no deployment's role.
        deploy_common::after_stage(&sysroot, &StageOutcome::Released(id), false, args.apply)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (imgref, _) = sysroot.tracked()?;
    let outcome = sysroot
        .upgrade(
            &fetch,
            progress::observer(args.progress),
            args.force,
            args.download_only,
        )
        .await?;
    match &outcome {
        StageOutcome::AlreadyBooted {
            cancelled: None, ..
        } => println!("No update available for {imgref}"),
        StageOutcome::Staged { id, replaced } if args.download_only => {
            if let Some(old) = replaced {
                println!("Replaced the downloaded deployment {}", old.short());
            }
            println!(
                "Downloaded {imgref} as deployment {}; not applied at shutdown until `osctl upgrade --from-downloaded`",
                id.short()
            );
        }
        // Still download-only: this download's own image. Otherwise an
        // update of the same image boots next already (report below).
        StageOutcome::AlreadyStaged(id)
            if args.download_only && sysroot.state()?.staged_download_only =>
        {
            println!(
                "{imgref} is already downloaded (deployment {}); not applied at shutdown until `osctl upgrade --from-downloaded`",
                id.short()
            )
        }
        StageOutcome::AlreadyDeployed { id, cancelled } => {
            if let Some(old) = cancelled {
                println!(
                    "Dropped the downloaded deployment {}: {imgref} no longer points to it",
                    old.short()
                );
            }
            println!(
                "{imgref} is deployment {} on this machine already (the rollback): nothing downloaded (`osctl rollback` boots it)",
                id.short()
            );
        }
        other => report(other, &imgref.to_string()),
    }
    deploy_common::after_stage(&sysroot, &outcome, true, args.apply)?;
    Ok(ExitCode::SUCCESS)
}
