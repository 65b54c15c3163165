//! The kernel command line the root setup reads.
//!
//! | argument | meaning |
//! |---|---|
//! | `composefs=<id>` | boot image `<id>` (64 hex digits); fs-verity **required**: the image's digest is checked by the kernel and every file is read with `verity=require` |
//! | `composefs=?<id>` | boot image `<id>`, fs-verity optional: for stores on filesystems without fs-verity; the image's digest is still checked, in software |
//! | `osctl.on-failure=reboot` | on failure print the marker and reboot (default) |
//! | `osctl.on-failure=shell` | on failure print the marker and leave the initramfs to drop to its rescue shell |
//!
//! `composefs=` is parsed by [`osctl_layout::cmdline`], the parser osctl's
//! writer uses too; `osctl.on-failure=` is the root setup's own.

pub use osctl_layout::cmdline::Verity;
use osctl_layout::cmdline::{self, CmdlineError, ComposefsArg};

use crate::SetupError;

/// The key choosing what a failed root setup does.
pub const ON_FAILURE_KEY: &str = "osctl.on-failure";

/// What to do when the root cannot be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Reboot, so that boot counting (or the admin) can pick another entry.
    Reboot,
    /// Return to the initramfs, which drops to its rescue shell.
    Shell,
}

/// What the command line asks the root setup to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTarget {
    arg: ComposefsArg,
    on_failure: OnFailure,
}

impl BootTarget {
    /// Parses a kernel command line (the contents of `/proc/cmdline`).
    pub fn parse(cmdline: &str) -> Result<Self, SetupError> {
        let arg = match cmdline::find(cmdline) {
            Ok(Some(arg)) => arg,
            Ok(None) => {
                return Err(SetupError::NoTarget {
                    key: cmdline::KEY,
                    cmdline: cmdline.trim().to_string(),
                });
            }
            Err(CmdlineError::BadValue { value }) => {
                return Err(SetupError::BadTarget {
                    key: cmdline::KEY,
                    value,
                });
            }
            Err(CmdlineError::Twice) => return Err(SetupError::TwoTargets { key: cmdline::KEY }),
        };
        let mut on_failure = OnFailure::Reboot;
        for arg in cmdline.split_ascii_whitespace() {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            if key == ON_FAILURE_KEY {
                on_failure = match value {
                    "reboot" => OnFailure::Reboot,
                    "shell" => OnFailure::Shell,
                    _ => {
                        return Err(SetupError::BadOption {
                            option: ON_FAILURE_KEY,
                            value: value.to_string(),
                            expected: "reboot, shell",
                        });
                    }
                };
            }
        }
        Ok(BootTarget { arg, on_failure })
    }

    /// The image id (also the deployment id).
    pub fn id(&self) -> &str {
        self.arg.id.as_str()
    }

    /// The deployment to boot.
    pub fn deployment(&self) -> &osctl_layout::DeploymentId {
        &self.arg.id
    }

    pub fn verity(&self) -> Verity {
        self.arg.verity
    }

    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }
}

/// What a failed setup does when the command line could not be read or
/// parsed: scans for `osctl.on-failure=` alone, defaulting to reboot.
pub fn on_failure_of(cmdline: &str) -> OnFailure {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|a| a.strip_prefix(ON_FAILURE_KEY)?.strip_prefix('='))
        .map_or(OnFailure::Reboot, |v| {
            if v == "shell" {
                OnFailure::Shell
            } else {
                OnFailure::Reboot
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn required_and_optional() {
        let t = BootTarget::parse(&format!("root=UUID=x rw composefs={ID} quiet\n")).unwrap();
        assert_eq!((t.id(), t.verity()), (ID, Verity::Required));
        assert_eq!(t.on_failure(), OnFailure::Reboot);
        let t = BootTarget::parse(&format!("composefs=?{ID} osctl.on-failure=shell")).unwrap();
        assert_eq!((t.id(), t.verity()), (ID, Verity::Optional));
        assert_eq!(t.on_failure(), OnFailure::Shell);
    }

    #[test]
    fn bad_command_lines_name_the_argument() {
        let cases = [
            (
                "root=/dev/vda2 rw",
                "no composefs=<image id> on the kernel command line (root=/dev/vda2 rw)",
            ),
            (
                "composefs=abc",
                "composefs=abc on the kernel command line: not a 64-digit lowercase hex image id",
            ),
            (
                "composefs=?",
                "composefs=? on the kernel command line: not a 64-digit lowercase hex image id",
            ),
            (
                &format!("composefs={}", ID.to_uppercase()),
                "not a 64-digit lowercase hex image id",
            ),
            (
                &format!("composefs={ID} composefs={ID}"),
                "composefs= appears more than once",
            ),
            (
                &format!("composefs={ID} osctl.on-failure=halt"),
                "osctl.on-failure=halt on the kernel command line: expected one of reboot, shell",
            ),
        ];
        for (line, want) in cases {
            let err = BootTarget::parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn on_failure_without_a_target() {
        assert_eq!(on_failure_of("osctl.on-failure=shell"), OnFailure::Shell);
        assert_eq!(on_failure_of("quiet"), OnFailure::Reboot);
    }
}
