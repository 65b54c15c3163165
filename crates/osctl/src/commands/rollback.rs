//! `osctl rollback [--apply]`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_deploy::RollbackOutcome;

use super::deploy_common;

#[derive(Args)]
pub struct RollbackArgs {
    /// Reboot into the rollback deployment now.
    #[arg(long)]
    pub apply: bool,
}

pub fn run(args: RollbackArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        return Err(osctl_deploy::DeployError::NoRollback.into());
    };
    match sysroot.rollback()? {
        RollbackOutcome::Queued(id) => {
            println!("Next boot: rollback deployment {}", id.short())
        }
        RollbackOutcome::Undone(id) => println!(
            "Rollback undone: the booted deployment {} boots next",
            id.short()
        ),
    }
    if args.apply {
        deploy_common::apply_and_reboot(&sysroot)?;
    }
    Ok(ExitCode::SUCCESS)
}
