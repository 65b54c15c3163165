//! `osctl health check` and `osctl health bless`: boot assessment, run by
//! `osctl-health-check.service` (before boot-complete.target) and
//! `osctl-boot-complete.service` (after it). See docs/boot.md.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use osctl_deploy::BlessOutcome;
use osctl_deploy::health::HealthState;

use super::deploy_common;

#[derive(Subcommand)]
pub enum HealthCommand {
    /// Run the health checks of the booted deployment and record the result;
    /// reboot if a required check fails while its boot entry still counts.
    Check(CheckArgs),
    /// Mark the booted deployment good: remove its boot counter.
    Bless(BlessArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Never reboot, whatever /etc/osctl/config.toml says.
    #[arg(long)]
    pub no_reboot: bool,
}

#[derive(Args)]
pub struct BlessArgs {}

pub fn run(cmd: HealthCommand, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(sysroot) = deploy_common::open_existing(sysroot, boot)? else {
        anyhow::bail!("no osctl deployments under {}", sysroot.display());
    };
    match cmd {
        HealthCommand::Check(args) => {
            let report = sysroot.check_health()?;
            for f in report.newly_failed() {
                println!(
                    "Deployment {} ({}) failed and was left behind: {}",
                    &f.image_id[..12],
                    f.image,
                    f.reason
                );
            }
            let record = report.record();
            for c in &record.checks {
                let kind = if c.required { "required" } else { "wanted" };
                println!("  {} [{kind}, {} ms]", c.describe(), c.millis);
            }
            match record.state {
                HealthState::Failed => {
                    println!(
                        "Unhealthy: {}",
                        record
                            .reason
                            .as_deref()
                            .unwrap_or("a required check failed")
                    );
                    if report.reboot() && !args.no_reboot {
                        let left = report.tries().map(|t| t.left).unwrap_or(0);
                        println!(
                            "Rebooting: this deployment is still being assessed ({left} boot attempt{} left before the previous one boots)",
                            if left == 1 { "" } else { "s" }
                        );
                        deploy_common::reboot()?;
                    }
                    Ok(ExitCode::FAILURE)
                }
                _ => {
                    let required = record.checks.iter().filter(|c| c.required).count();
                    let wanted_failed = record
                        .checks
                        .iter()
                        .filter(|c| !c.required && !c.passed())
                        .count();
                    let note = if wanted_failed > 0 {
                        format!(", {wanted_failed} wanted checks failed")
                    } else {
                        String::new()
                    };
                    println!("Healthy: {required} required checks passed{note}");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        HealthCommand::Bless(_) => {
            match sysroot.bless()? {
                BlessOutcome::Blessed(id) => {
                    println!("Deployment {} is good: boot counter removed", id.short())
                }
                BlessOutcome::AlreadyGood(id) => {
                    println!("Deployment {} is good (no boot counter)", id.short())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
