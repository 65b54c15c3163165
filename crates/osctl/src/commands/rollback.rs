//! `osctl rollback [--apply]`, `osctl rollback --cancel`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_deploy::RollbackOutcome;

use super::deploy_common;

#[derive(Args)]
pub struct RollbackArgs {
    /// Reboot into the rollback deployment now.
    #[arg(long, conflicts_with = "cancel")]
    pub apply: bool,
    /// Undo a queued rollback: the booted deployment boots next again.
    #[arg(long)]
    pub cancel: bool,
}

pub fn run(args: RollbackArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        return Err(osctl_deploy::DeployError::NoRollback.into());
    };
    if args.cancel {
        match sysroot.cancel_rollback()? {
            Some(booted) => println!(
                "Rollback cancelled: the booted deployment {} boots next",
                booted.short()
            ),
            None => println!("No rollback is queued: nothing to cancel"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match sysroot.rollback()? {
        RollbackOutcome::Queued(id) => {
            println!("Next boot: rollback deployment {}", id.short())
        }
    }
    if args.apply {
        deploy_common::apply_and_reboot(&sysroot)?;
    }
    Ok(ExitCode::SUCCESS)
}
