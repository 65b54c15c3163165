//! `osctl fsck`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_store::Store;

#[derive(Args)]
pub struct FsckArgs {}

pub async fn run(_args: FsckArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open(sysroot)?;
    let report = store.fsck().await?;
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
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
