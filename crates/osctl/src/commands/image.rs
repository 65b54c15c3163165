//! `osctl image …`: the image subcommands.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{image_list, image_mount, image_pull, image_rm};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image into the store (registry, oci:, oci-archive:,
    /// containers-storage:).
    Pull(image_pull::PullArgs),
    /// List the images in the store.
    #[command(alias = "ls")]
    List(image_list::ListArgs),
    /// Remove an image and free the space only it used.
    Rm(image_rm::RmArgs),
    /// Mount an image read-only to inspect it.
    Mount(image_mount::MountArgs),
}

pub async fn run(cmd: ImageCommand, sysroot: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Pull(a) => image_pull::run(a, sysroot).await,
        ImageCommand::List(a) => image_list::run(a, sysroot),
        ImageCommand::Rm(a) => image_rm::run(a, sysroot),
        ImageCommand::Mount(a) => image_mount::run(a, sysroot),
    }
}
