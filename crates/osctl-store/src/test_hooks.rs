//! The environment variables that change what osctl does, for test
//! harnesses and field debugging. They stay in the shipped binary (the VM
//! test and crash tests drive the real `osctl`), and each one announces
//! itself on stderr when it is set, so a machine never runs with one by
//! accident unnoticed. docs/test-hooks.md lists them for users.
//!
//! | variable | effect |
//! |---|---|
//! | [`FAILPOINT_ENV`] `=<name>` | abort (SIGABRT, no cleanup) at that [fail point](crate::failpoint) |
//! | [`CMDLINE_ENV`] `=<file>` | read the kernel command line from `<file>` instead of `/proc/cmdline`: which deployment is "booted" |
//! | [`REBOOT_ENV`] `=<command>` | run `<command>` instead of `systemctl reboot` (`--apply`, a failed health check) |
//! | [`BOOT_ID_ENV`] `=<file>` | read the boot id from `<file>` instead of `/proc/sys/kernel/random/boot_id`: whether the machine rebooted (the fleet agent) |

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::Mutex;

/// Arms a fail point.
pub const FAILPOINT_ENV: &str = "OSCTL_FAILPOINT";
/// Names a file to read the kernel command line from.
pub const CMDLINE_ENV: &str = "OSCTL_CMDLINE_FILE";
/// Replaces the reboot command.
pub const REBOOT_ENV: &str = "OSCTL_REBOOT_COMMAND";

/// Names a file to read the boot id from.
pub const BOOT_ID_ENV: &str = "OSCTL_BOOT_ID_FILE";

/// Every hook, for [`announce`].
pub const ALL: &[&str] = &[FAILPOINT_ENV, CMDLINE_ENV, REBOOT_ENV, BOOT_ID_ENV];

/// Hooks already announced by this process.
static ANNOUNCED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The value of test hook `name`, if set; the first lookup of a set hook
/// prints `osctl: warning: test hook NAME=VALUE is active` on stderr.
pub fn var(name: &'static str) -> Option<OsString> {
    let value = std::env::var_os(name)?;
    // A poisoned lock only means another thread panicked while printing;
    // the set is still usable.
    let mut announced = ANNOUNCED.lock().unwrap_or_else(|e| e.into_inner());
    if announced.get_or_insert_with(HashSet::new).insert(name) {
        eprintln!(
            "osctl: warning: test hook {name}={} is active (docs/test-hooks.md)",
            value.to_string_lossy()
        );
    }
    Some(value)
}

/// Announces every hook that is set (a program calls this once at start,
/// so a hook is reported even by a command that never consults it).
pub fn announce() {
    for name in ALL {
        var(name);
    }
}
