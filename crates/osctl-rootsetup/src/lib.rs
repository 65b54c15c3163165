//! Root setup for the initramfs: turns the machine's root partition into the
//! deployment it was asked to boot.
//!
//! The initramfs (initramfs-tools or dracut, see `contrib/`) mounts the root
//! partition as usual and then runs `osctl-root-setup`, which reads
//! `composefs=<image id>` from the kernel command line and rearranges the
//! mounts before the initramfs switches root:
//!
//! ```text
//! before                                  after
//! <root>        the root partition        <root>          composefs image <id>, read-only
//!                                         <root>/etc      state/deploy/<id>/etc (writable)
//!                                         <root>/var      state/var (writable, shared)
//!                                         <root>/sysroot  the root partition (read-write)
//! ```
//!
//! The model: **validate everything, then mount**. Every check that can
//! reject the boot (command line, store, image, deployment state, the image's
//! fs-verity digest, the image's mount points) runs before the first mount
//! changes, and a failure after that undoes the mounts made so far, so the
//! initramfs never hands over a half-built root. The binary prints
//! `OSCTL-ROOT-SETUP-FAILED: <reason>` and reboots (boot counting can then
//! pick another entry).
//!
//! A store written on a host without fs-verity is *sealed* on the first boot
//! that demands verity ([`seal`]); after that it is a verified store.
#![forbid(unsafe_code)]

pub mod cmdline;
mod error;
pub mod seal;
mod seed;
pub mod setup;

pub use cmdline::{BootTarget, Verity};
pub use error::SetupError;
pub use setup::{Report, RootSetup};
