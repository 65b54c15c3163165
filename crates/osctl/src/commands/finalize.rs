//! `osctl finalize`: what `osctl-finalize-staged.service` runs at shutdown.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_deploy::FinalizeOutcome;

use super::deploy_common;

#[derive(Args)]
pub struct FinalizeArgs {}

pub fn run(_args: FinalizeArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        println!("Nothing staged");
        return Ok(ExitCode::SUCCESS);
    };
    match sysroot.finalize()? {
        FinalizeOutcome::NothingStaged => println!("Nothing staged"),
        // Not an error: the shutdown service runs this on every shutdown.
        FinalizeOutcome::DownloadOnly(id) => println!(
            "Deployment {} is download-only: left staged, not finalized (`osctl upgrade --from-downloaded` releases it)",
            id.short()
        ),
        FinalizeOutcome::Finalized { id, merge } => {
            println!("Deployment {} boots next", id.short());
            if let Some(report) = merge {
                println!(
                    "/etc merged: {} local changes kept, {} updated from the image, {} conflicts",
                    report.carried().len(),
                    report.updated().len(),
                    report.conflicts().len()
                );
                for c in report.conflicts() {
                    println!(
                        "  conflict: /etc/{}: {}",
                        c.path().display(),
                        c.resolution()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
