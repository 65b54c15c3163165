//! A deployment's origin: what it was made from and what osctl decided
//! about it. One JSON file per deployment (`origin.json`), written with
//! write-temp + fsync + rename, so a reader sees the old or the new file.

use serde::{Deserialize, Serialize};

use crate::EtcConflict;

/// Format version of `origin.json`, bumped on incompatible changes.
pub const ORIGIN_VERSION: u32 = 1;

/// What an `upgrade --check` found for the tracked reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CachedUpdate {
    /// Manifest digest the reference resolves to now.
    pub manifest_digest: String,
    pub version: Option<String>,
    pub timestamp: Option<String>,
    pub architecture: String,
    /// When the check ran (RFC 3339, UTC).
    pub checked: String,
}

/// Everything osctl records about one deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub version: u32,
    /// The image reference without its transport (bootc's `image.image`).
    pub image: String,
    /// bootc's transport name: `registry`, `oci`, `oci-archive`.
    pub transport: String,
    pub manifest_digest: String,
    /// The composefs image id (= the deployment id).
    pub image_id: String,
    pub architecture: String,
    /// The image's `org.opencontainers.image.version` label.
    pub image_version: Option<String>,
    /// The image's creation time (config `created`).
    pub timestamp: Option<String>,
    /// `PRETTY_NAME` (or `NAME`) from the image's os-release.
    pub os_name: Option<String>,
    /// The kernel release found under `/usr/lib/modules`.
    pub kernel_version: String,
    /// sha256 over vmlinuz then initramfs: names the shared boot files dir.
    pub boot_digest: String,
    /// Kernel arguments from the image's kargs.d files, in file order.
    pub image_kargs: Vec<String>,
    /// Machine-local kernel arguments, carried from deployment to deployment.
    pub local_kargs: Vec<String>,
    /// Pinned deployments are never pruned.
    #[serde(default)]
    pub pinned: bool,
    /// Set by finalize, before the default entry can name this deployment:
    /// from then on it is one the machine may boot, and a rollback target.
    /// A deployment never finalized and not staged is abandoned (the
    /// leftovers of an interrupted or replaced switch; see
    /// [`crate::state`]). Origins written before this field existed were
    /// all finalized or staged, hence the default.
    #[serde(default = "finalized_before_the_field_existed")]
    pub finalized: bool,
    /// When the deployment was created (RFC 3339, UTC); for people only.
    pub deployed: String,
    /// Creation order: one more than the highest serial on disk when it was
    /// staged. Ordering uses this, never the clock, which may step back
    /// (a machine without a battery-backed RTC, an NTP correction).
    #[serde(default)]
    pub serial: u64,
    /// Conflicts of the /etc merge made when this deployment was finalized.
    #[serde(default)]
    pub etc_conflicts: Vec<EtcConflict>,
    /// The last `upgrade --check` result, if any.
    #[serde(default)]
    pub cached_update: Option<CachedUpdate>,
}

fn finalized_before_the_field_existed() -> bool {
    true
}

impl Origin {
    /// The reference, with its transport, ready to pull again.
    pub fn image_ref(&self) -> Result<osctl_image::ImageRef, osctl_image::FetchError> {
        match self.transport.as_str() {
            "registry" => osctl_image::ImageRef::parse(&self.image),
            t => osctl_image::ImageRef::parse(&format!("{t}:{}", self.image)),
        }
    }

    /// All kernel arguments for the boot entry, image ones first.
    pub fn kargs(&self) -> impl Iterator<Item = &str> {
        self.image_kargs
            .iter()
            .chain(&self.local_kargs)
            .map(String::as_str)
    }
}
