//! What the deployment commands share: opening the sysroot, fetch flags,
//! and the `--apply` reboot.

use std::path::{Path, PathBuf};

use clap::Args;
use osctl_deploy::{FinalizeOutcome, StageOutcome, Sysroot, SysrootOptions};
use osctl_image::{FetchOptions, ImageRef, Platform, Transport};

/// The registry options of `switch` and `upgrade` (as in `image pull`).
#[derive(Args, Clone)]
pub struct FetchArgs {
    /// Auth file to use instead of the default search list.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Verify the registry's TLS certificate; false also allows plain HTTP.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// Directory of extra CA certificates (*.crt) for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Platform to take from a multi-arch image (default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

impl FetchArgs {
    pub fn options(&self) -> anyhow::Result<FetchOptions> {
        Ok(FetchOptions {
            authfile: self.authfile.clone(),
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            // The machine's policy, always: there is no flag to name another.
            signature_policy: None,
        })
    }
}

/// `--transport` of `switch` and `image pull`, as bootc takes it: the
/// transport of a reference given without its prefix.
#[derive(Args, Clone)]
pub struct TransportArg {
    /// Transport of IMAGE when it has no prefix: registry, oci, oci-archive
    /// or containers-storage (a prefix it has must agree).
    #[arg(long, value_name = "TRANSPORT")]
    pub transport: Option<String>,
}

impl TransportArg {
    /// Parses `image` with this transport.
    pub fn image_ref(&self, image: &str) -> anyhow::Result<ImageRef> {
        let transport = self
            .transport
            .as_deref()
            .map(Transport::parse)
            .transpose()?;
        Ok(ImageRef::parse_with_transport(image, transport)?)
    }
}

/// Opens the sysroot, creating the store and state directories if needed
/// (for commands that deploy).
pub fn open(sysroot: &Path, boot_dir: Option<&Path>) -> anyhow::Result<Sysroot> {
    Ok(Sysroot::open(&SysrootOptions {
        sysroot: sysroot.to_path_buf(),
        boot_dir: boot_dir.map(Path::to_path_buf),
    })?)
}

/// Opens the sysroot only if something was ever deployed there: commands
/// that only read or rearrange deployments must not create anything. A
/// sysroot path that does not exist (a typo in `--sysroot`) is an error.
pub fn open_existing(sysroot: &Path, boot_dir: Option<&Path>) -> anyhow::Result<Option<Sysroot>> {
    match std::fs::metadata(sysroot) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("sysroot {} is not a directory", sysroot.display()),
        Err(e) => anyhow::bail!("sysroot {}: {e}", sysroot.display()),
    }
    if !sysroot.join(osctl_deploy::layout::sysroot::DEPLOY).is_dir() {
        return Ok(None);
    }
    open(sysroot, boot_dir).map(Some)
}

/// Finalizes the staged deployment and reboots into it. A download-only
/// one is not applied: rebooting would only boot the same deployment again.
pub fn apply_and_reboot(sysroot: &Sysroot) -> anyhow::Result<()> {
    if let FinalizeOutcome::DownloadOnly(id) = sysroot.finalize()? {
        anyhow::bail!(
            "deployment {} is download-only: not rebooting into it (`osctl upgrade --from-downloaded --apply` does)",
            id.short()
        );
    }
    reboot()
}

/// Runs the reboot command (`systemctl reboot`, or the test hook's).
pub fn reboot() -> anyhow::Result<()> {
    println!("Rebooting ({})", osctl_deploy::reboot::reboot_command());
    Ok(osctl_deploy::reboot::reboot()?)
}

/// What `switch` and `upgrade` do after staging: prune old deployments
/// (unless retained) and, with `--apply`, finalize and reboot.
pub fn after_stage(
    sysroot: &Sysroot,
    outcome: &StageOutcome,
    prune: bool,
    apply: bool,
) -> anyhow::Result<()> {
    if prune {
        for id in sysroot.prune()? {
            println!("Pruned deployment {}", id.short());
        }
    }
    let something_staged = matches!(
        outcome,
        StageOutcome::Staged { .. } | StageOutcome::AlreadyStaged(_) | StageOutcome::Released(_)
    );
    if apply && something_staged {
        apply_and_reboot(sysroot)?;
    }
    Ok(())
}
