//! The deployment id.

use std::path::{Path, PathBuf};

use crate::{ENTRY_PREFIX, ETC_DIR, partition, sysroot};

/// A deployment id: the composefs image id (the EROFS image's fs-verity
/// digest), 64 lowercase hex digits. The root filesystem *is* the image, so
/// two deployments of one image would boot the same tree: the image id
/// names the deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        is_image_id(s).then(|| DeploymentId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, as status output shows ids.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// `sysroot/state/deploy/<id>`, relative to a running system's root.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(sysroot::DEPLOY).join(&self.0)
    }

    /// `state/deploy/<id>/etc`, relative to the root partition.
    pub fn etc_on_partition(&self) -> PathBuf {
        Path::new(partition::DEPLOY).join(&self.0).join(ETC_DIR)
    }

    /// `composefs/images/<id>`, relative to the root partition.
    pub fn image_on_partition(&self) -> PathBuf {
        Path::new(partition::STORE_IMAGES).join(&self.0)
    }

    /// `osctl-<id>.conf` (the entry without a boot counter).
    pub fn entry_file_name(&self) -> String {
        format!("{ENTRY_PREFIX}{}.conf", self.0)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Exactly 64 lowercase hex digits.
pub(crate) fn is_image_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
        assert_eq!(
            id.state_dir(),
            Path::new(&format!("sysroot/state/deploy/{hex}"))
        );
        assert_eq!(
            id.etc_on_partition(),
            Path::new(&format!("state/deploy/{hex}/etc"))
        );
        for bad in [
            "A".repeat(64),
            "abc".to_owned(),
            format!("{}/", "a".repeat(63)),
            format!("../{}", "a".repeat(61)),
            "g".repeat(64),
        ] {
            assert!(DeploymentId::parse(&bad).is_none(), "{bad}");
        }
    }
}
