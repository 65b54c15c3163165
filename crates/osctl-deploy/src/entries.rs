//! The boot entry of a deployment, and the counter a staged one carries.

use crate::DeployError;
use crate::boot::{self, BlsEntry};
use crate::layout::DeploymentId;
use crate::layout::cmdline::Verity;
use crate::origin::Origin;
use crate::sysroot::Sysroot;

impl Sysroot {
    /// The BLS entry of a deployment. On a store without fs-verity the
    /// entry says `composefs=?<id>` (verity optional), so the initramfs does
    /// not demand what the store cannot give.
    pub(crate) fn entry_for(
        &self,
        id: &DeploymentId,
        origin: &Origin,
    ) -> Result<BlsEntry, DeployError> {
        let verity = if self.verity_optional()? {
            Verity::Optional
        } else {
            Verity::Required
        };
        Ok(BlsEntry::for_deployment(
            id,
            verity,
            &origin.boot_digest,
            origin.os_name.as_deref(),
            origin.image_version.as_deref(),
            origin.kargs(),
        ))
    }

    /// Whether the store cannot enforce fs-verity (the host has none) and
    /// will not be sealed at first boot either (no
    /// [`SEAL_AT_BOOT_FILE`](crate::sysroot::SEAL_AT_BOOT_FILE) from
    /// `osctl install`). A marker osctl cannot check is an error: guessing "optional" would
    /// write entries that let a tampered store boot.
    pub(crate) fn verity_optional(&self) -> Result<bool, DeployError> {
        if self.store().verity() != osctl_store::VerityMode::Insecure {
            return Ok(false);
        }
        let sealed_at_boot = self
            .root()
            .try_exists(crate::sysroot::SEAL_AT_BOOT_FILE)
            .map_err(|e| DeployError::Io {
                step: "checking",
                path: self.path().join(crate::sysroot::SEAL_AT_BOOT_FILE),
                source: e,
            })?;
        Ok(!sealed_at_boot)
    }

    /// The counter a staged entry carries: fresh whenever there is a booted
    /// deployment to fall back to and the config asks for tries.
    pub(crate) fn staged_tries(&self, booted: bool) -> Result<Option<boot::Tries>, DeployError> {
        if !booted {
            return Ok(None);
        }
        let n = self.config()?.boot_tries();
        Ok((n > 0).then(|| boot::Tries::fresh(n)))
    }

    /// A staged deployment starts afresh: its entry gets the counter a
    /// staged entry carries (if `current` is not it), and a health record
    /// from an earlier life (it failed, or was marked good, before it was
    /// staged again) goes.
    pub(crate) fn fresh_staged_start(
        &self,
        id: &DeploymentId,
        origin: &Origin,
        current: Option<boot::Tries>,
        booted: bool,
    ) -> Result<(), DeployError> {
        let want = self.staged_tries(booted)?;
        if current != want {
            boot::write_entry(self.boot(), id, &self.entry_for(id, origin)?, want)?;
        }
        let dir = self.open_state(&id.state_dir().to_string_lossy())?;
        osctl_store::atomic::remove_durably(&dir, crate::health::HEALTH_FILE).map_err(|e| {
            DeployError::Io {
                step: "removing",
                path: self
                    .path()
                    .join(id.state_dir())
                    .join(crate::health::HEALTH_FILE),
                source: e,
            }
        })
    }
}
