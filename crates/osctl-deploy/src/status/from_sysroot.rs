//! From the deployments on disk to the status model.

use crate::DeployError;
use crate::boot;
use crate::scan::Deployment;
use crate::state::DeploymentState;
use crate::status::{BootType, Bootloader, EntryView, HostView};
use crate::sysroot::Sysroot;

impl Sysroot {
    /// The host as `osctl status` shows it.
    pub fn host_view(&self) -> Result<HostView, DeployError> {
        let state = self.state()?;
        // osctl manages systemd-boot's loader.conf once it has written one.
        let bootloader = if boot::read_default(self.boot())?.is_some() {
            Bootloader::Systemd
        } else {
            Bootloader::None
        };
        let verity_required = !self.verity_optional()?;
        let entry = |d: &Deployment| EntryView {
            id: d.id().clone(),
            origin: d.origin().clone(),
            boot_type: BootType::Bls,
            bootloader,
            verity_required,
            tries: d.tries(),
            health: d.health().cloned(),
            signature: d.record().signature().cloned(),
        };
        let DeploymentState {
            booted,
            staged,
            rollback,
            others,
            failed,
            rollback_queued,
            staged_download_only,
            ..
        } = state;
        let staged = staged.as_ref().map(entry);
        let booted = booted.as_ref().map(entry);
        let spec_image = staged
            .as_ref()
            .or(booted.as_ref())
            .map(EntryView::image_reference);
        Ok(HostView {
            spec_image,
            staged,
            booted,
            rollback: rollback.as_ref().map(entry),
            other: others.iter().map(entry).collect(),
            failed: failed.iter().map(entry).collect(),
            rollback_queued,
            staged_download_only,
            problems: self.unusable()?,
        })
    }
}
