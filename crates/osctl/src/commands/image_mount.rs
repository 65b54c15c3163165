//! `osctl image mount REF DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use osctl_image::ImageRef;
use osctl_store::Store;

#[derive(Args)]
pub struct MountArgs {
    /// The reference as `osctl image list` shows it.
    pub reference: String,
    /// An existing directory to mount on; unmount with `umount DIR`.
    pub target: PathBuf,
}

pub fn run(args: MountArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    let imgref = ImageRef::parse(&args.reference)?;
    if !args.target.is_dir() {
        anyhow::bail!("mount point {} is not a directory", args.target.display());
    }
    let store = Store::open(sysroot)?;
    store.mount(&imgref, &args.target)?;
    println!(
        "Mounted {} read-only at {} ({})",
        imgref,
        args.target.display(),
        store.verity()
    );
    Ok(ExitCode::SUCCESS)
}
