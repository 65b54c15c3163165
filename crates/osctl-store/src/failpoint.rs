//! Named fail points for crash testing.
//!
//! Every step of a command that changes disk state has a name. With
//! `OSCTL_FAILPOINT=<name>` in the environment ([test
//! hook](crate::test_hooks)), osctl aborts (SIGABRT, no cleanup, no
//! destructors) when it reaches that point, exactly as `kill -9` would
//! leave things. The crash test runs each command once per fail point and
//! compares the machine's whole state, after a re-run of the command, with
//! the state an uninterrupted run leaves (docs/deployments.md, "Crash
//! safety").
//!
//! An environment variable rather than the `fail` crate: one lookup, no
//! global registry to configure from outside the process, and the list of
//! names below is the single source the test iterates over.

use crate::test_hooks;

/// The environment variable that arms a fail point.
pub const ENV: &str = test_hooks::FAILPOINT_ENV;

/// Every fail point, grouped by the command that passes it.
pub const ALL: &[&str] = &[
    // osctl image pull (the store; switch and upgrade pull too)
    "pull:after-layers",
    // only where the image build writes a layer's index (a layer new to
    // the store, or one whose index is missing or damaged)
    "pull:after-layer-index-written",
    "pull:after-layer-index",
    "pull:after-image",
    "pull:after-record",
    // osctl image rm, osctl gc (the store)
    "rm:after-record",
    "rm:after-refs",
    "gc:after-refs-pruned",
    // osctl switch / upgrade
    "stage:after-pull",
    "stage:after-state-dir",
    "stage:after-var-seed-built",
    "stage:after-var-seed",
    "stage:after-root",
    "stage:after-kernel",
    "stage:after-origin",
    "stage:after-entry",
    "stage:after-marker",
    "stage:after-unfinalize-replaced",
    "stage:after-default-restored",
    "stage:after-replaced-dropped",
    // osctl upgrade --from-downloaded (and upgrade/switch to a downloaded image)
    "release:after-marker",
    // dropping a deployment (prune, replace, rollback, recovery)
    "drop:after-entry",
    "drop:after-rename",
    "drop:after-state",
    "drop:after-root",
    "prune:after-kernels",
    // osctl finalize
    "finalize:after-merge",
    "finalize:after-etc-swap",
    "finalize:after-origin",
    "finalize:after-entry",
    "trial:after-fallback-key",
    "trial:after-trying-key",
    "finalize:after-default",
    // osctl rollback
    "rollback:after-unfinalize",
    "rollback:after-marker",
    "rollback:after-default",
    "rollback:after-staged-marker",
    "rollback:after-drop-staged",
    "rollback-cancel:after-default",
    // osctl pin / unpin, upgrade --check
    "pin:after-origin",
    "unpin:after-origin",
    "upgrade:after-cached-update",
    // osctl health check / bless
    "assess:after-health",
    "assess:after-failed-images",
    "assess:after-default",
    "check:after-record",
    "bless:after-entry",
    "bless:after-default",
    "bless:after-health",
    "bless:after-failed-images",
    // osctl fleet agent (tests/fleet_faults.rs passes it, not the deploy crash test)
    "agent:after-reboot-recorded",
];

/// Aborts the process if `name` is the armed fail point.
pub fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unknown fail point {name}");
    if test_hooks::var(test_hooks::FAILPOINT_ENV).is_some_and(|v| v == name) {
        eprintln!("osctl: fail point {name} reached; aborting");
        std::process::abort();
    }
}
