//! Where things are on the root partition, as the initramfs sees it.
//!
//! ```text
//! <root partition>/                      mounted at <root> by the initramfs,
//! │                                      at /sysroot once the system runs
//! ├── composefs/                         the store (composefs repository)
//! │   ├── meta.json                      fs-verity on it = the store is sealed
//! │   ├── objects/<xx>/<rest of digest>  file contents, named by fs-verity digest
//! │   └── images/<image id>              EROFS image → ../objects/…
//! └── state/
//!     ├── deploy/<image id>/etc/         the deployment's /etc
//!     └── var/                           /var, shared by every deployment
//! ```
//!
//! These are the same places osctl-deploy writes (its paths carry the extra
//! `sysroot/` prefix because it runs inside the booted system); the host test
//! that stages with osctl and mounts with this crate keeps the two in step.

use std::path::PathBuf;

/// The composefs store.
pub const STORE_DIR: &str = "composefs";
/// Objects in the store.
pub const OBJECTS_DIR: &str = "composefs/objects";
/// Repository metadata; fs-verity on it marks a sealed (verified) store.
pub const STORE_META: &str = "composefs/meta.json";
/// The shared /var.
pub const VAR_DIR: &str = "state/var";
/// Where /var is built on first boot before it is renamed into place.
pub const VAR_SEED_DIR: &str = "state/.var-seed";

/// `composefs/images/<id>`.
pub fn image_path(id: &str) -> PathBuf {
    PathBuf::from("composefs/images").join(id)
}

/// `state/deploy/<id>/etc`.
pub fn etc_path(id: &str) -> PathBuf {
    PathBuf::from("state/deploy").join(id).join("etc")
}
