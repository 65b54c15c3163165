//! `osctl gc`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_store::Store;

use crate::output::human_bytes;

#[derive(Args)]
pub struct GcArgs {}

pub fn run(_args: GcArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open(sysroot)?;
    let r = store.gc()?;
    println!(
        "Removed {} unreferenced objects ({}), pruned {} stale refs",
        r.objects_removed,
        human_bytes(r.bytes_removed),
        r.refs_pruned
    );
    Ok(ExitCode::SUCCESS)
}
