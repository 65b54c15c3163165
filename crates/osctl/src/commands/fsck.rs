//! `osctl fsck [--repair]`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_store::Store;

#[derive(Args)]
pub struct FsckArgs {
    /// Remove damaged objects and the layer streams and images that depend
    /// on them, so that pulling the images it names again restores them.
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(args: FsckArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open(sysroot)?;
    let (report, repair) = if args.repair {
        let (report, repair) = store.repair().await?;
        (report, Some(repair))
    } else {
        (store.fsck().await?, None)
    };
    for p in &report.problems {
        println!("problem: {p}");
    }
    println!(
        "{} objects and {} images checked, {} problem(s) ({})",
        report.objects_checked,
        report.images_checked,
        report.problems.len(),
        store.verity()
    );
    let Some(repair) = repair else {
        return Ok(if report.is_ok() {
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
    for r in &repair.to_repull {
        println!("pull again: {r}");
    }
    println!(
        "Repaired: {} objects and {} streams removed; {} image(s) to pull again",
        repair.objects_removed.len(),
        repair.streams_removed.len(),
        repair.to_repull.len()
    );
    Ok(ExitCode::SUCCESS)
}
