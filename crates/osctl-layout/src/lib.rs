//! The on-disk contract: everything osctl writes that something else reads
//! back — the root setup in the initramfs, systemd-boot, a later osctl after
//! a crash. The writer (`osctl-store`, `osctl-deploy`) and the reader
//! (`osctl-rootsetup`) take every name from here, so they cannot drift; the
//! docs link here instead of repeating the picture.
//!
//! # The root partition
//!
//! Paths are relative to the root partition. A running system sees it at
//! `/sysroot` (the [`sysroot`] constants carry that prefix, relative to
//! `--sysroot`, default `/`); the initramfs mounts it somewhere and the root
//! setup uses the [`partition`] constants.
//!
//! ```text
//! composefs/                              the store: a composefs-rs repository (osctl-store)
//! ├── meta.json                           algorithm + format; fs-verity on it = the store is sealed
//! ├── objects/<xx>/<rest of digest>       file contents, named by their fs-verity digest
//! ├── streams/oci-layer-sha256:…          one splitstream per layer (tar headers + object refs)
//! ├── streams/oci-config-sha256:…         config + named refs to its layers and its EROFS image
//! ├── streams/refs/{osctl,deploy}/…       GC roots: a pulled reference's, a deployment's
//! ├── images/<image id>                   EROFS image (→ objects/…), mounted by its id
//! └── images/refs/{osctl,deploy}/…        GC roots of the images
//! osctl/
//! ├── images/<key>.json                   one record per pulled reference (osctl-store)
//! ├── layers/<splitstream id>.idx         a layer's entries, parsed: what image builds read
//! └── seal-at-boot                        written by install: seal the store at first boot
//! state/
//! ├── deploy/<id>/                        one deployment; <id> = its image id (DeploymentId)
//! │   ├── origin.json                     what it was made from, kargs, pin, finalized, conflicts
//! │   ├── image.json                      the record of its image
//! │   ├── health.json                     its boot assessment
//! │   └── etc/                            its /etc: bound on /etc by the root setup
//! ├── deploy/.tmp-<id>, .del-<id>         a deployment being built, being removed
//! ├── var/                                /var, shared by every deployment: bound on /var
//! ├── .var-seed/                          /var being seeded (renamed to var/ when complete)
//! ├── .finalize/                          finalize's scratch space for the /etc merge
//! ├── staged                              "<id> <generation> [existing] [download-only]": waiting for finalize
//! ├── rollback                            "<id> <generation>": a queued rollback
//! ├── failed-images.json                  images that failed here (boot assessment)
//! ├── boot-dir                            the --boot-dir given once, remembered
//! ├── fleet-agent.json                    the fleet agent's assignment and phase (osctl-fleet)
//! └── lock                                one osctl changes deployments at a time (flock)
//! ```
//!
//! # The boot directory (the ESP, or /boot)
//!
//! ```text
//! loader/loader.conf                      "default osctl-<id>.conf", or "osctl-*" during a trial
//! loader/entries/osctl-<id>[+L[-D]].conf  one BLS type 1 entry per deployment (+L-D: boot counting)
//! osctl/<boot digest>/vmlinuz             kernel and initramfs from the image's
//!                     initramfs.img       /usr/lib/modules/<kver>/, shared by identical pairs
//! ```
//!
//! # The kernel command line
//!
//! `composefs=<id>` boots deployment `<id>` with fs-verity required;
//! `composefs=?<id>` with fs-verity optional (a store on a filesystem without
//! it). [`cmdline`] parses and writes it, for both sides.
//!
//! # Rules
//!
//! - Every file is replaced atomically (write a temporary, fsync, rename,
//!   fsync the directory — and on FAT the file again); names starting with
//!   `.tmp-` are temporaries that readers skip.
//! - A deployment exists once its state directory and its boot entry do; the
//!   roles (booted, staged, rollback) follow from the command line,
//!   `loader.conf` and the two markers, by the rules in osctl-deploy's
//!   `state` module.
#![forbid(unsafe_code)]

pub mod cmdline;
mod id;

pub use id::DeploymentId;

/// Declares each path once, relative to the root partition ([`partition`])
/// and as a running system sees it below `--sysroot` ([`sysroot`]).
macro_rules! root_partition_paths {
    ($($(#[$doc:meta])* $name:ident = $path:literal;)*) => {
        /// Paths relative to the root partition (what the initramfs mounts).
        pub mod partition {
            $($(#[$doc])* pub const $name: &str = $path;)*
        }
        /// The same paths relative to a running system's root (`--sysroot`):
        /// the root partition is at `sysroot/` there.
        pub mod sysroot {
            $($(#[$doc])* pub const $name: &str = concat!("sysroot/", $path);)*
        }
    };
}

root_partition_paths! {
    /// The composefs repository.
    STORE = "composefs";
    /// Repository metadata; fs-verity on it marks a sealed store.
    STORE_META = "composefs/meta.json";
    /// The store's content objects.
    STORE_OBJECTS = "composefs/objects";
    /// The store's EROFS images, by image id.
    STORE_IMAGES = "composefs/images";
    /// Image records, one per pulled reference.
    RECORDS = "osctl/images";
    /// Layer entry indexes, one per layer splitstream (a cache the image
    /// build reads instead of the splitstream; osctl-store's layer_index).
    LAYER_INDEXES = "osctl/layers";
    /// Written by `osctl install` on a store built without fs-verity whose
    /// target filesystem has it: the first boot seals the store, and entries
    /// demand verity meanwhile.
    SEAL_AT_BOOT = "osctl/seal-at-boot";
    /// Deployment state.
    STATE = "state";
    /// One directory per deployment.
    DEPLOY = "state/deploy";
    /// The shared /var.
    VAR = "state/var";
    /// Where /var is seeded before it is renamed into place.
    VAR_SEED = "state/.var-seed";
    /// Finalize's scratch space.
    FINALIZE_SCRATCH = "state/.finalize";
    /// The staged marker.
    STAGED_MARKER = "state/staged";
    /// The rollback marker.
    ROLLBACK_MARKER = "state/rollback";
    /// Images that failed on this machine.
    FAILED_IMAGES = "state/failed-images.json";
    /// The boot dir given with `--boot-dir`, remembered.
    BOOT_DIR_FILE = "state/boot-dir";
    /// The deployment lock.
    LOCK = "state/lock";
    /// The fleet agent's own state: its assignment, its phase, the boot it
    /// asked to reboot from (survives the reboot).
    FLEET_AGENT = "state/fleet-agent.json";
}

/// The name of `path` (one of the `state/…` constants, in either view)
/// inside the state directory: `state_dir_name(partition::STAGED_MARKER)`
/// is `"staged"`. For code that works through a handle on the state dir.
pub const fn state_dir_name(path: &'static str) -> &'static str {
    let (p, s) = (partition::STATE.as_bytes(), sysroot::STATE.as_bytes());
    let b = path.as_bytes();
    let skip = if starts_with(b, s) && b.len() > s.len() && b[s.len()] == b'/' {
        s.len() + 1
    } else if starts_with(b, p) && b.len() > p.len() && b[p.len()] == b'/' {
        p.len() + 1
    } else {
        panic!("not a path in the state directory")
    };
    let (_, rest) = b.split_at(skip);
    match std::str::from_utf8(rest) {
        Ok(name) => name,
        Err(_) => panic!("paths are ASCII"),
    }
}

const fn starts_with(b: &[u8], prefix: &[u8]) -> bool {
    if b.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if b[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A deployment's origin, in its state directory.
pub const ORIGIN_FILE: &str = "origin.json";
/// The record of a deployment's image, in its state directory.
pub const RECORD_FILE: &str = "image.json";
/// A deployment's boot assessment, in its state directory.
pub const HEALTH_FILE: &str = "health.json";
/// A deployment's /etc, in its state directory.
pub const ETC_DIR: &str = "etc";
/// Prefix of a deployment directory being built.
pub const BUILDING_PREFIX: &str = ".tmp-";
/// Prefix of a deployment directory being removed.
pub const REMOVING_PREFIX: &str = ".del-";
/// Prefix of temporary files (replaced atomically); readers skip them.
pub const TMP_PREFIX: &str = ".tmp-";

/// BLS entries, relative to the boot dir.
pub const ENTRIES_DIR: &str = "loader/entries";
/// systemd-boot's configuration, relative to the boot dir.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Kernels and initramfs images, relative to the boot dir.
pub const KERNELS_DIR: &str = "osctl";
/// Prefix of osctl's entry file names; entries without it are not osctl's.
pub const ENTRY_PREFIX: &str = "osctl-";
/// The kernel's file name, in a kernel directory (and in the image's
/// `/usr/lib/modules/<kver>/`).
pub const VMLINUZ: &str = "vmlinuz";
/// The initramfs's file name, likewise.
pub const INITRAMFS: &str = "initramfs.img";
/// Where an image's initramfs carries osctl's root setup (the
/// initramfs-tools hook and the dracut module put it there; `osctl
/// container lint` looks for it), relative to the initramfs's root.
pub const INITRAMFS_ROOT_SETUP: &str = "usr/lib/osctl/osctl-root-setup";

#[cfg(test)]
mod tests {
    #[test]
    fn both_views_name_the_same_places() {
        assert_eq!(super::partition::DEPLOY, "state/deploy");
        assert_eq!(super::sysroot::DEPLOY, "sysroot/state/deploy");
        assert_eq!(
            super::sysroot::STORE_OBJECTS,
            format!("sysroot/{}", super::partition::STORE_OBJECTS)
        );
    }

    #[test]
    fn names_in_the_state_dir() {
        use super::{partition, state_dir_name, sysroot};
        assert_eq!(state_dir_name(partition::STAGED_MARKER), "staged");
        assert_eq!(state_dir_name(sysroot::VAR_SEED), ".var-seed");
        assert_eq!(
            state_dir_name(partition::FAILED_IMAGES),
            "failed-images.json"
        );
    }
}
