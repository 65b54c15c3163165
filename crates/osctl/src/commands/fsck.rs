//! `osctl fsck [--repair]`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_store::Store;

use super::deploy_common;

#[derive(Args)]
pub struct FsckArgs {
    /// Remove damaged objects and the layer streams and images that depend
    /// on them, so that pulling the images it names again restores them;
    /// finish or clear what interrupted deployment commands left. Exits 1
    /// when something is left to do by hand (images to pull again).
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(args: FsckArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    // One store handle for everything: composefs-rs's exclusive lock (gc,
    // repair) would wait forever on a second handle's shared lock.
    let deployments = deploy_common::open_existing(sysroot, boot)?;
    let own_store;
    let store = match &deployments {
        Some(d) => d.store(),
        None => {
            own_store = Store::open(sysroot)?;
            &own_store
        }
    };
    // Deployments are repaired first (the recovery may drop a deployment,
    // and with it a store root), then checked with the store.
    if args.repair
        && let Some(d) = &deployments
    {
        for action in d.repair()? {
            println!("repaired: {action}");
        }
    }
    let deployment_problems = match &deployments {
        Some(d) => d.fsck()?,
        None => Vec::new(),
    };
    let (report, repair) = if args.repair {
        let (report, repair) = store.repair().await?;
        (report, Some(repair))
    } else {
        (store.fsck().await?, None)
    };
    for p in report.problems.iter().chain(&deployment_problems) {
        println!("problem: {p}");
    }
    println!(
        "{} objects and {} images checked, {} problem(s) ({})",
        report.objects_checked,
        report.images_checked,
        report.problems.len() + deployment_problems.len(),
        store.verity()
    );
    let Some(repair) = repair else {
        return Ok(if report.is_ok() && deployment_problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    };
    for o in &repair.objects_removed {
        println!("removed damaged object {o}");
    }
    for s in &repair.streams_removed {
        println!("removed stream {s}");
    }
    for i in &repair.indexes_removed {
        println!("removed layer index {i}");
    }
    for r in &repair.to_repull {
        println!("pull again: {r}");
    }
    println!(
        "Repaired: {} objects and {} streams removed; {} image(s) to pull again",
        repair.objects_removed.len(),
        repair.streams_removed.len(),
        repair.to_repull.len()
    );
    // Like e2fsck: success only when nothing is left for the admin. What
    // repair cannot do itself is pulling images again, records that do not
    // parse (`image rm` or a re-pull mends those) and deployments it must
    // not touch (broken ones, ones without a boot entry).
    let broken_records = store.scan_records()?.broken.len();
    let left = repair.to_repull.len() + broken_records + deployment_problems.len();
    if left == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    println!("{left} thing(s) left to do by hand (above)");
    Ok(ExitCode::FAILURE)
}
