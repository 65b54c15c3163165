//! Pruning: deployments no role needs, then kernels no entry uses.

use crate::DeployError;
use crate::boot;
use crate::failpoint;
use crate::layout::{self, DeploymentId};
use crate::sysroot::Sysroot;

impl Sysroot {
    /// Removes deployments that are not booted, staged, rollback, the
    /// default or pinned (failed ones once `failed-images.json` remembers
    /// them), then kernels no boot entry uses. Returns the removed ids.
    pub fn prune(&self) -> Result<Vec<DeploymentId>, DeployError> {
        self.lock()?;
        let state = self.state()?;
        let mut removed = Vec::new();
        // Failed deployments go once failed-images.json remembers them (so
        // upgrade still refuses their image and the reason is kept).
        let remembered: Vec<String> = self
            .failed_images()?
            .into_iter()
            .map(|f| f.image_id)
            .collect();
        let failed = state
            .failed
            .iter()
            .filter(|d| remembered.iter().any(|r| r == d.id().as_str()));
        for d in state.others.iter().chain(failed) {
            if d.origin().pinned || state.default.as_ref() == Some(d.id()) {
                continue;
            }
            self.drop_deployment(d.id())?;
            removed.push(d.id().clone());
        }
        self.remove_unused_kernels()?;
        Ok(removed)
    }

    /// Removes kernel directories that no boot entry and no deployment
    /// names (an entry of a deployment osctl cannot read still counts).
    /// While a deployment is unreadable or has lost its entry, which kernel
    /// it needs is not known for sure: nothing is removed then.
    fn remove_unused_kernels(&self) -> Result<(), DeployError> {
        let scan = self.scan()?;
        if !scan.broken.is_empty() || scan.incomplete.iter().any(|i| i.finalized != Some(false)) {
            tracing::info!(
                "not removing kernels: a deployment cannot be read or has no boot entry"
            );
            failpoint::hit("prune:after-kernels");
            return Ok(());
        }
        let mut keep: Vec<String> = self
            .deployments()?
            .iter()
            .map(|d| d.origin().boot_digest.clone())
            .collect();
        for e in boot::read_entries(self.boot())? {
            if let Some(digest) = e
                .entry
                .linux
                .strip_prefix(&format!("/{}/", layout::KERNELS_DIR))
                .and_then(|rest| rest.split('/').next())
            {
                keep.push(digest.to_owned());
            }
        }
        boot::remove_unused_kernels(self.boot(), &keep)?;
        failpoint::hit("prune:after-kernels");
        Ok(())
    }
}
