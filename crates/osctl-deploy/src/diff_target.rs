//! What `osctl diff [FROM] [TO]` compares: each argument is a deployment
//! id (or a unique prefix of 6+ digits, as `status` shows it) or an image
//! reference with a record in the store. An argument of 6+ hex digits is
//! looked up as a deployment first; a prefix of several deployments is an
//! error even if an image of that name is stored (a name that could mean
//! two things is not guessed at). Without arguments, FROM is the
//! booted deployment and TO the staged one or, when nothing is staged, the
//! update the last `upgrade --check` recorded on the booted deployment.
//!
//! That update may not be in the store yet (`--check` fetches manifest and
//! config only). Then the target is [`DiffTarget::Pull`]: the image to pull
//! and the manifest digest it must have, so what is compared is exactly
//! what the check saw, not what the tag points to by now. A registry
//! reference is pulled by digest; a layout, archive or local storage is
//! read as named and refused before anything is written if its digest is
//! another (`Store::pull_digest`). Pulling is the caller's decision.
//!
//! Reading only, like `status`: no lock is taken, nothing is written. The
//! state is read once per argument, so a deployment and its role come
//! from the same view.

use osctl_image::ImageRef;
use osctl_store::{ImageRecord, Store};

use crate::scan::{counted, find_in};
use crate::state::DeploymentState;
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
    /// The cached update, not in the store: pull `imgref` only if it
    /// resolves to `digest` (`Store::pull_digest`).
    Pull { imgref: ImageRef, digest: String },
}

impl Sysroot {
    /// Resolves a FROM or TO argument: a deployment id first (see the
    /// module doc), else an image reference in the store.
    pub fn diff_target(&self, arg: &str) -> Result<DiffTarget, DeployError> {
        if looks_like_id(arg) {
            // One read of the state: the deployment found and its role
            // come from the same view, even if a switch runs meanwhile.
            let state = self.state()?;
            if let Some(d) = deployment_named(state.clone(), arg)? {
                return Ok(as_target(&state, d));
            }
        }
        image_diff_target(self.store(), arg)
    }

    /// The default FROM: the booted deployment.
    pub fn diff_default_from(&self) -> Result<DiffTarget, DeployError> {
        let state = self.state()?;
        let booted = state.booted.clone().ok_or(DeployError::NoDiffDefault(
            "no deployment is booted; name what to compare: osctl diff FROM TO",
        ))?;
        Ok(as_target(&state, booted))
    }

    /// The default TO: the staged deployment, else the cached update.
    pub fn diff_default_to(&self) -> Result<DiffTarget, DeployError> {
        let state = self.state()?;
        if let Some(staged) = state.staged.clone() {
            return Ok(as_target(&state, staged));
        }
        let none = || {
            DeployError::NoDiffDefault(
                "nothing is staged and `osctl upgrade --check` recorded no update; name what to compare: osctl diff FROM TO",
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
            // A layout, archive or local storage has no by-digest name;
            // the pull checks the digest before it writes anything.
            other => other.clone(),
        };
        Ok(DiffTarget::Pull { imgref, digest })
    }
}

/// An argument that is looked up as a deployment id first.
fn looks_like_id(arg: &str) -> bool {
    arg.len() >= MIN_ID_PREFIX && arg.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The shortest deployment id prefix accepted, as `osctl status` says.
const MIN_ID_PREFIX: usize = 6;

/// The deployment of `state` that `arg` names, `None` if none does. A
/// prefix of several deployments is an error, whatever else it could name.
fn deployment_named(state: DeploymentState, arg: &str) -> Result<Option<Deployment>, DeployError> {
    match find_in(counted(state), arg) {
        Ok(d) => Ok(Some(d)),
        Err(DeployError::NoSuchDeployment(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An image in `store` named by reference, as `osctl diff` takes it. A
/// reference that does not parse says why.
pub fn image_diff_target(store: &Store, arg: &str) -> Result<DiffTarget, DeployError> {
    let imgref = ImageRef::parse(arg).map_err(|source| DeployError::NotADiffReference {
        arg: arg.to_string(),
        source,
    })?;
    let record = store
        .find(&imgref)?
        .ok_or_else(|| DeployError::NotADiffTarget(arg.to_string()))?;
    Ok(DiffTarget::Image(Box::new(record)))
}

/// `d` with its role in `state`.
fn as_target(state: &DeploymentState, d: Deployment) -> DiffTarget {
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
    DiffTarget::Deployment {
        role,
        deployment: Box::new(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::DeploymentId;
    use crate::scan::test_deployment;

    fn dep(hex: &str) -> Deployment {
        let id = DeploymentId::parse(&format!("{hex:0<64}")).unwrap();
        test_deployment(id, 1, true, None)
    }

    /// Which deployment an argument names, before any image lookup: a
    /// prefix of two deployments is refused even if an image could match.
    #[test]
    fn deployment_ids_take_precedence() {
        let state = DeploymentState {
            booted: Some(dep("abcdef01")),
            rollback: Some(dep("abcdef02")),
            others: vec![dep("123456")],
            ..Default::default()
        };
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            ("abcdef01", Ok(Some("abcdef01"))),
            ("123456", Ok(Some("123456"))),
            ("abcdee", Ok(None)),
            (
                "abcdef",
                Err("'abcdef' matches several deployments; give more digits"),
            ),
            (
                "abcdef0",
                Err("'abcdef0' matches several deployments; give more digits"),
            ),
        ];
        for (arg, want) in cases {
            let got = deployment_named(state.clone(), arg)
                .map(|d| d.map(|d| d.id().as_str().trim_end_matches('0').to_string()))
                .map_err(|e| e.to_string());
            let want = want
                .map(|w| w.map(|h| h.trim_end_matches('0').to_string()))
                .map_err(str::to_string);
            assert_eq!(got, want, "{arg}");
        }
    }
}
