//! `osctl gc`: prune deployments nobody needs (not booted, staged,
//! rollback or pinned), then free what no image or deployment references.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use osctl_store::Store;

use crate::output::human_bytes;

#[derive(Args)]
pub struct GcArgs {}

pub fn run(_args: GcArgs, sysroot: &Path, boot: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Deployments first: pruning one releases its image's GC root.
    if let Some(deployments) = super::deploy_common::open_existing(sysroot, boot)? {
        for id in deployments.prune()? {
            println!("Pruned deployment {}", id.short());
        }
    }
    let store = Store::open(sysroot)?;
    let r = store.gc()?;
    for d in &r.damaged {
        println!("damaged: {d}");
    }
    if !r.damaged.is_empty() {
        println!(
            "Not removing objects while an image is damaged (see osctl fsck; \
             osctl fsck --repair, then pull the image again)"
        );
    }
    println!(
        "Removed {} unreferenced objects ({}), pruned {} stale refs",
        r.objects_removed,
        human_bytes(r.bytes_removed),
        r.refs_pruned
    );
    Ok(ExitCode::SUCCESS)
}
