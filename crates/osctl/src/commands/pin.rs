//! `osctl pin ID` and `osctl unpin ID`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::deploy_common;

#[derive(Args)]
pub struct PinArgs {
    /// Deployment id (or a unique prefix of 6+ digits), as `status` shows it.
    pub id: String,
}

pub fn run(
    args: PinArgs,
    pinned: bool,
    sysroot: &Path,
    boot: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        return Err(osctl_deploy::DeployError::NoSuchDeployment(args.id).into());
    };
    let id = sysroot.set_pinned(&args.id, pinned)?;
    println!(
        "Deployment {} {}",
        id.short(),
        if pinned {
            "pinned: it is never pruned"
        } else {
            "unpinned"
        }
    );
    Ok(ExitCode::SUCCESS)
}
