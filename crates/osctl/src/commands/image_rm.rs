//! `osctl image rm REF`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_image::ImageRef;
use osctl_store::Store;

use crate::output::human_bytes;

#[derive(Args)]
pub struct RmArgs {
    /// The reference as `osctl image list` shows it.
    pub reference: String,
}

pub fn run(args: RmArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let imgref = ImageRef::parse(&args.reference)?;
    let store = Store::open(sysroot)?;
    let gc = store.remove(&imgref)?;
    println!(
        "Removed {} ({} objects, {} freed)",
        imgref,
        gc.objects_removed,
        human_bytes(gc.bytes_removed)
    );
    Ok(ExitCode::SUCCESS)
}
