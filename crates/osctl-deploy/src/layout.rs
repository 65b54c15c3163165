//! Where deployments live on disk, relative to the sysroot and boot dir.
//!
//! ```text
//! <sysroot>/
//! ├── sysroot/composefs/…                 the store (osctl-store)
//! ├── sysroot/osctl/images/…              image records (osctl-store)
//! └── sysroot/state/
//!     ├── deploy/<id>/                    one deployment; <id> = composefs image id (hex)
//!     │   ├── origin.json                 what it was deployed from (reference, digests, kargs, pin)
//!     │   └── etc/                        the deployment's /etc (merged at finalize)
//!     ├── var/                            /var, shared by every deployment
//!     ├── staged                          the update waiting for finalize (crate::markers)
//!     └── rollback                        a queued rollback (crate::markers)
//! <boot dir>/                             ESP or /boot; default <sysroot>/boot
//! ├── loader/loader.conf                  `default osctl-<id>.conf`: what boots next
//! ├── loader/entries/osctl-<id>.conf      one BLS type 1 entry per deployment
//! └── osctl/<boot digest>/vmlinuz         kernel + initramfs, shared by deployments
//!                         initramfs.img   whose pair is byte-identical
//! ```
//!
//! The deployment id is the image id because the root filesystem *is* the
//! image: two deployments of one image would boot the same tree, so they are
//! one deployment (a redeploy refreshes it). `composefs=<id>` on the kernel
//! command line names it, as in bootc's composefs backend.

use std::path::{Path, PathBuf};

/// Deployment state directory, relative to the sysroot.
pub const STATE_DIR: &str = "sysroot/state";
/// Per-deployment directories, relative to the sysroot.
pub const DEPLOY_DIR: &str = "sysroot/state/deploy";
/// The shared /var, relative to the sysroot.
pub const VAR_DIR: &str = "sysroot/state/var";
/// A deployment's origin file, relative to its directory.
pub const ORIGIN_FILE: &str = "origin.json";
/// A deployment's /etc, relative to its directory.
pub const ETC_DIR: &str = "etc";

/// BLS entries, relative to the boot dir.
pub const ENTRIES_DIR: &str = "loader/entries";
/// systemd-boot's loader configuration, relative to the boot dir.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Kernels and initramfs images, relative to the boot dir.
pub const KERNELS_DIR: &str = "osctl";

/// The kernel command-line key that names the deployment to boot.
pub const CMDLINE_KEY: &str = "composefs";

/// Prefix of osctl's BLS entry file names; entries without it are not ours.
pub const ENTRY_PREFIX: &str = "osctl-";

/// A deployment id: the composefs image id, 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| DeploymentId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, as status output shows ids.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// `sysroot/state/deploy/<id>`.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(DEPLOY_DIR).join(&self.0)
    }

    /// `osctl-<id>.conf` (without a boot counter).
    pub fn entry_file_name(&self) -> String {
        format!("{ENTRY_PREFIX}{}.conf", self.0)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        let hex = "a".repeat(64);
        let id = DeploymentId::parse(&hex).unwrap();
        assert_eq!(id.short(), "aaaaaaaaaaaa");
        assert_eq!(id.entry_file_name(), format!("osctl-{hex}.conf"));
        assert!(DeploymentId::parse(&"A".repeat(64)).is_none());
        assert!(DeploymentId::parse("abc").is_none());
        assert!(DeploymentId::parse(&format!("{}/", "a".repeat(63))).is_none());
    }
}
