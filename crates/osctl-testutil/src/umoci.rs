//! OCI layouts built by umoci, an independent implementation.
//!
//! Our own tar writer and manifest code (`layout.rs`) could share a
//! misunderstanding with osctl's reader; a layout made by umoci from a real
//! directory cannot. The flow is umoci's documented one: `umoci init` makes
//! the layout, `umoci new` an empty image, then each [`UmociStep`] becomes
//! one `umoci insert` layer (umoci writes whiteouts and opaque markers
//! itself). umoci stores gzip layers with OCI media types.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::layout::{BuiltImage, read_layout_image};

/// One `umoci insert` invocation, i.e. one layer.
#[derive(Clone, Debug)]
pub enum UmociStep {
    /// Copy the host path `source` (file or directory) to `target` in the image.
    Insert { source: PathBuf, target: String },
    /// Like `Insert`, but `target` is made opaque first (`--opaque`), hiding
    /// what lower layers had under it.
    InsertOpaque { source: PathBuf, target: String },
    /// Delete `target` (`--whiteout`).
    Whiteout { target: String },
}

/// Makes a new layout at `layout_dir` (must not exist yet) whose image
/// `tag` has one layer holding the contents of `rootfs` (a directory copied
/// to `/`, ownership, modes and xattrs included), plus one layer per `steps`.
pub fn build_layout_with_umoci(
    layout_dir: &Path,
    tag: &str,
    rootfs: &Path,
    steps: &[UmociStep],
) -> Result<BuiltImage> {
    crate::run(
        Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(layout_dir),
    )?;
    let image = format!("{}:{tag}", layout_dir.display());
    crate::run(Command::new("umoci").args(["new", "--image", &image]))?;
    crate::run(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(rootfs)
            .arg("/"),
    )?;
    for step in steps {
        let mut cmd = Command::new("umoci");
        cmd.args(["insert", "--image", &image]);
        match step {
            UmociStep::Insert { source, target } => cmd.arg(source).arg(target),
            UmociStep::InsertOpaque { source, target } => {
                cmd.arg("--opaque").arg(source).arg(target)
            }
            UmociStep::Whiteout { target } => cmd.args(["--whiteout", target]),
        };
        crate::run(&mut cmd)?;
    }
    read_layout_image(layout_dir, tag)
}
