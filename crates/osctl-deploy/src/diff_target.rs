//! What `osctl diff [FROM] [TO]` compares: each argument is a deployment
//! id (or a unique prefix of 6+ digits, as `status` shows it) or an image
//! reference with a record in the store. Without arguments, FROM is the
//! booted deployment and TO the staged one or, when nothing is staged, the
//! update the last `upgrade --check` recorded on the booted deployment.
//!
//! That update may not be in the store yet (`--check` fetches manifest and
//! config only). Then the target is [`DiffTarget::Pull`]: the image to pull
//! *by digest*, so what is compared is exactly what the check saw, not
//! what the tag points to by now. Pulling is the caller's decision.
//!
//! Reading only, like `status`: no lock is taken, nothing is written.

use osctl_image::ImageRef;
use osctl_store::ImageRecord;

use crate::sysroot::Sysroot;
use crate::{DeployError, Deployment};

/// What a deployment is to the machine, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentRole {
    Booted,
    Staged,
    Rollback,
    /// Any other deployment.
    Other,
}

/// One side of a diff, resolved.
#[derive(Debug, Clone)]
pub enum DiffTarget {
    Deployment {
        role: DeploymentRole,
        deployment: Box<Deployment>,
    },
    /// An image in the store named by reference.
    Image(Box<ImageRecord>),
    /// The update `upgrade --check` recorded, found in the store by its
    /// manifest digest.
    CachedUpdate(Box<ImageRecord>),
    /// The cached update, not in the store: pull `imgref`, which must
    /// resolve to `digest`.
    Pull { imgref: ImageRef, digest: String },
}

impl Sysroot {
    /// Resolves a FROM or TO argument.
    pub fn diff_target(&self, arg: &str) -> Result<DiffTarget, DeployError> {
        let is_id_prefix = arg.len() >= 6 && arg.bytes().all(|b| b.is_ascii_hexdigit());
        if is_id_prefix {
            match self.find(arg) {
                Ok(d) => return self.as_target(d),
                Err(DeployError::NoSuchDeployment(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let not_found = || DeployError::NotADiffTarget(arg.to_string());
        let imgref = ImageRef::parse(arg).map_err(|_| not_found())?;
        let record = self.store().find(&imgref)?.ok_or_else(not_found)?;
        Ok(DiffTarget::Image(Box::new(record)))
    }

    /// The default FROM: the booted deployment.
    pub fn diff_default_from(&self) -> Result<DiffTarget, DeployError> {
        let booted = self.state()?.booted.ok_or(DeployError::NoDiffDefault(
            "no deployment is booted; name what to compare: osctl diff FROM TO",
        ))?;
        self.as_target(booted)
    }

    /// The default TO: the staged deployment, else the cached update.
    pub fn diff_default_to(&self) -> Result<DiffTarget, DeployError> {
        let state = self.state()?;
        if let Some(staged) = state.staged {
            return self.as_target(staged);
        }
        let none = || {
            DeployError::NoDiffDefault(
                "nothing is staged and `osctl upgrade --check` recorded no update; name what to compare: osctl diff [FROM] TO",
            )
        };
        let booted = state.booted.ok_or_else(none)?;
        let update = booted.origin().cached_update.clone().ok_or_else(none)?;
        let digest = update.manifest_digest;
        let tracked = booted.origin().image_ref()?;
        // The record of the tracked reference, or of any reference, that
        // holds exactly this manifest.
        let mut held: Vec<ImageRecord> = self
            .store()
            .records()?
            .into_iter()
            .filter(|r| r.manifest_digest() == digest)
            .collect();
        held.sort_by_key(|r| r.reference() != tracked.to_string());
        if let Some(record) = held.into_iter().next() {
            return Ok(DiffTarget::CachedUpdate(Box::new(record)));
        }
        let imgref = match &tracked {
            ImageRef::Registry(r) => {
                ImageRef::parse(&format!("{}/{}@{digest}", r.registry(), r.repository()))?
            }
            // A layout or archive is read whole; its tag is checked
            // against the digest after the pull.
            other => other.clone(),
        };
        Ok(DiffTarget::Pull { imgref, digest })
    }

    fn as_target(&self, d: Deployment) -> Result<DiffTarget, DeployError> {
        let state = self.state()?;
        let is = |x: &Option<Deployment>| x.as_ref().is_some_and(|x| x.id() == d.id());
        let role = if is(&state.booted) {
            DeploymentRole::Booted
        } else if is(&state.staged) {
            DeploymentRole::Staged
        } else if is(&state.rollback) {
            DeploymentRole::Rollback
        } else {
            DeploymentRole::Other
        };
        Ok(DiffTarget::Deployment {
            role,
            deployment: Box::new(d),
        })
    }
}
