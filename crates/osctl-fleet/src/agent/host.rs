//! What the agent needs of the machine it runs on, as a trait: the real
//! machine ([`super::machine::Machine`]: a sysroot, osctl-deploy, the
//! reboot command) is one implementation; the fleet benchmark's simulated
//! machines are another, so a thousand agents run in one process with the
//! same decisions as the real one.

use std::future::Future;

use osctl_image::ImageRef;

use super::AgentError;
use super::machine::MachineView;
use super::state::AgentState;

pub trait Host: Send + Sync {
    /// What is booted and staged, and the booted deployment's health.
    fn view(&self) -> Result<MachineView, AgentError>;
    /// Digests of images that failed on this machine.
    fn failed_digests(&self) -> Result<Vec<String>, AgentError>;
    /// Pulls and stages `image` for the next boot; returns the deployment
    /// (for the log).
    fn stage(&self, image: &ImageRef) -> impl Future<Output = Result<String, AgentError>> + Send;
    /// Whatever was to boot next instead of the booted deployment no
    /// longer does; returns what was cancelled.
    fn cancel_next(&self) -> Result<Option<String>, AgentError>;
    /// Starts the reboot.
    fn reboot(&self) -> Result<(), AgentError>;
    /// The id of the running boot.
    fn boot_id(&self) -> Result<String, AgentError>;
    /// The agent's saved state for `node`, if any.
    fn load_state(&self, node: &str) -> Result<Option<AgentState>, AgentError>;
    /// Saves the agent's state durably.
    fn save_state(&self, state: &AgentState) -> Result<(), AgentError>;
}
