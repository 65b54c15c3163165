//! Pinning: a pinned deployment is never pruned.

use crate::DeployError;
use crate::failpoint;
use crate::layout::DeploymentId;
use crate::sysroot::Sysroot;

impl Sysroot {
    /// Sets or clears a deployment's pin; pinned deployments are never pruned.
    pub fn set_pinned(&self, prefix: &str, pinned: bool) -> Result<DeploymentId, DeployError> {
        self.lock()?;
        let d = self.find(prefix)?;
        let mut origin = d.origin().clone();
        origin.pinned = pinned;
        self.write_origin(d.id(), &origin)?;
        failpoint::hit(if pinned {
            "pin:after-origin"
        } else {
            "unpin:after-origin"
        });
        Ok(d.id().clone())
    }
}
