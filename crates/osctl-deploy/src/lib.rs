//! osctl deployments: the *deploy* step of the data path.
//!
//! ```text
//!  store record ─▶ Sysroot::stage ─▶ state/deploy/<id> + boot entry + staged marker
//!                  Sysroot::finalize ─▶ /etc merged, loader.conf default ← id
//!                  Sysroot::rollback / prune / set_pinned / check_update
//! ```
//!
//! - [`sysroot`]: the deployments on disk and who is booted, staged, rollback
//!   (derived from the kernel command line, `loader.conf` and `state/staged`;
//!   no database that could disagree with them after a crash);
//! - `stage`, `finalize`, `upgrade`: the operations, each step durable before
//!   the next, with [`failpoint`]s for crash tests;
//! - [`boot`]: kernels, kargs.d, BLS entries and `loader.conf`;
//! - [`status`]: bootc's `BootcHost` model and its renderings;
//! - [`merge_etc`]: the three-way `/etc` merge, described below;
//! - [`install`]: `osctl install to-disk|to-filesystem`, a first deployment
//!   written onto a new disk or a mounted filesystem.
//!
//! The layout on disk is in [`layout`] and docs/deployments.md.
//!
#![forbid(unsafe_code)]

mod assess;
pub mod boot;
mod check;
pub mod config;
mod diff_target;
mod download_only;
mod entries;
mod error;
mod etc_merge;
mod finalize;
mod markers;
mod pin;
mod prune;
mod recover;
mod rollback;
mod scan;
pub mod state;
mod undeploy;
pub use osctl_layout as layout;
pub use osctl_store::{failpoint, test_hooks};
pub mod health;
pub mod origin;
pub mod reboot;
mod stage;
pub mod status;
pub mod sysroot;
mod upgrade;

pub use assess::{BlessOutcome, CheckReport, FAILED_IMAGES_FILE, FailedImage};
pub use diff_target::{DeploymentRole, DiffTarget, image_diff_target};
pub use error::{DeployError, NextBoot};
pub use finalize::FinalizeOutcome;
pub use rollback::RollbackOutcome;
pub use scan::{BrokenDeployment, Deployment, Incomplete, Scan};
pub use stage::{StageOptions, StageOutcome};
pub use state::DeploymentState;
pub use sysroot::{SEAL_AT_BOOT_FILE, Sysroot, SysrootOptions};
pub use upgrade::UpdateCheck;

pub use etc_merge::{
    ChangeKind, ConflictKind, EtcChange, EtcConflict, EtcMergeError, EtcMergeReport, EtcSkipped,
    merge_etc,
};
