//! The machine the agent runs on, seen through the same library calls as
//! `osctl switch` and `osctl status`: what is booted and staged (by image
//! digest), the booted deployment's boot assessment, the images that failed
//! here, staging an image, the reboot, and the boot id that tells a reboot
//! happened.
//!
//! Nothing here talks to etcd: the agent loop turns this view into its
//! report and carries out its assignment with these calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use osctl_deploy::status::{Assessment, BootEntry};
use osctl_deploy::test_hooks::{BOOT_ID_ENV, var};
use osctl_deploy::{StageOutcome, Sysroot, SysrootOptions};
use osctl_image::{FetchOptions, ImageRef};
use osctl_store::PullObserver;

use crate::agent::{AgentError, deploy_error};

/// Where Linux keeps the id of the current boot: a new value after every
/// boot, so a reboot is told apart from an agent restart.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// One deployment as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The reference it was pulled by.
    pub image: String,
    /// The manifest digest (`sha256:…`): what assignments name.
    pub digest: String,
    /// The deployment id.
    pub deployment: String,
}

/// The booted deployment's boot assessment, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootHealth {
    pub state: Assessment,
    /// Why it failed, one line.
    pub reason: Option<String>,
    /// When the checks last ran (RFC 3339).
    pub checked: Option<String>,
}

/// What the machine has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineView {
    pub booted: Option<Deployed>,
    pub staged: Option<Deployed>,
    /// `None`: the booted deployment has no assessment (an older one, or
    /// nothing booted).
    pub health: Option<BootHealth>,
}

/// The machine: its sysroot (`--sysroot`, `/` on a real one).
pub struct Machine {
    sysroot: Sysroot,
    path: PathBuf,
    fetch: FetchOptions,
}

impl Machine {
    /// Opens the sysroot the way the deployment commands do (creating the
    /// store and state directories on a machine never deployed to).
    pub fn open(
        sysroot: &Path,
        boot_dir: Option<&Path>,
        fetch: FetchOptions,
    ) -> Result<Machine, AgentError> {
        let opened = Sysroot::open(&SysrootOptions {
            sysroot: sysroot.to_path_buf(),
            boot_dir: boot_dir.map(Path::to_path_buf),
        })
        .map_err(deploy_error("opening the sysroot"))?;
        Ok(Machine {
            sysroot: opened,
            path: sysroot.to_path_buf(),
            fetch,
        })
    }

    /// The deployments, for what the agent does beyond staging.
    pub fn sysroot(&self) -> &Sysroot {
        &self.sysroot
    }

    /// The sysroot path, for the agent's state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is booted and staged, and the booted deployment's health.
    pub fn view(&self) -> Result<MachineView, AgentError> {
        let host_view = self
            .sysroot
            .host_view()
            .map_err(deploy_error("reading the deployments"))?;
        let host = osctl_deploy::status::to_host(&host_view);
        let booted = host.status.booted.as_ref();
        Ok(MachineView {
            booted: booted.map(deployed).transpose()?,
            staged: host.status.staged.as_ref().map(deployed).transpose()?,
            health: booted
                .and_then(|b| b.osctl.as_ref())
                .and_then(|o| o.health.as_ref())
                .map(|h| BootHealth {
                    state: h.state,
                    reason: h.reason.clone(),
                    checked: h.checked.clone(),
                }),
        })
    }

    /// The manifest digests of the images that failed on this machine (the
    /// boot assessment's record): the agent never stages one of them again
    /// for the rollout that sent it.
    pub fn failed_digests(&self) -> Result<Vec<String>, AgentError> {
        Ok(self
            .sysroot
            .failed_images()
            .map_err(deploy_error("reading the failed images"))?
            .into_iter()
            .map(|f| f.manifest_digest)
            .collect())
    }

    /// Pulls `image` (checked against the machine's signature policy like
    /// every pull) and stages it for the next boot: what `osctl switch`
    /// does, never disruptive.
    pub async fn stage(
        &self,
        image: &ImageRef,
        observer: Arc<dyn PullObserver>,
    ) -> Result<StageOutcome, AgentError> {
        self.sysroot
            .stage(image, &self.fetch, observer)
            .await
            .map_err(deploy_error("staging"))
    }

    /// Starts the reboot (`systemctl reboot`: the shutdown finalizes the
    /// staged deployment).
    pub fn reboot(&self) -> Result<(), AgentError> {
        osctl_deploy::reboot::reboot().map_err(AgentError::Reboot)
    }
}

impl super::Host for Machine {
    fn view(&self) -> Result<MachineView, AgentError> {
        Machine::view(self)
    }

    fn failed_digests(&self) -> Result<Vec<String>, AgentError> {
        Machine::failed_digests(self)
    }

    async fn stage(&self, image: &ImageRef) -> Result<String, AgentError> {
        let outcome = Machine::stage(self, image, Arc::new(osctl_store::Silent)).await?;
        Ok(outcome.id().short().to_string())
    }

    fn cancel_next(&self) -> Result<Option<String>, AgentError> {
        Ok(self
            .sysroot
            .cancel_next()
            .map_err(deploy_error("cancelling the staged deployment"))?
            .map(|id| id.short().to_string()))
    }

    fn reboot(&self) -> Result<(), AgentError> {
        Machine::reboot(self)
    }

    fn boot_id(&self) -> Result<String, AgentError> {
        boot_id()
    }

    fn load_state(&self, node: &str) -> Result<Option<super::state::AgentState>, AgentError> {
        super::state::load(&self.path, node)
    }

    fn save_state(&self, state: &super::state::AgentState) -> Result<(), AgentError> {
        super::state::save(&self.path, state)
    }
}

/// A deployment's image by digest; a deployment without an image record
/// cannot be reported and refuses (never a guessed digest).
fn deployed(entry: &BootEntry) -> Result<Deployed, AgentError> {
    let id = entry
        .osctl
        .as_ref()
        .map(|o| o.deployment_id.clone())
        .ok_or(AgentError::Unreadable("a deployment without an id"))?;
    let image = entry.image.as_ref().ok_or(AgentError::Unreadable(
        "a deployment without an image record",
    ))?;
    Ok(Deployed {
        image: image.image.image.clone(),
        digest: image.image_digest.clone(),
        deployment: id,
    })
}

/// The id of the running boot: [`BOOT_ID_PATH`], or the test hook's file.
pub fn boot_id() -> Result<String, AgentError> {
    let path = var(BOOT_ID_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BOOT_ID_PATH));
    let text = std::fs::read_to_string(&path).map_err(|source| AgentError::Io {
        step: "reading the boot id",
        path: path.clone(),
        source,
    })?;
    let id = text.trim();
    if id.is_empty() {
        return Err(AgentError::BadBootId(path));
    }
    Ok(id.to_string())
}
