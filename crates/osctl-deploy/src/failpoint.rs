//! Named fail points for crash testing.
//!
//! Every step of switch, upgrade, rollback, finalize and prune that changes
//! disk state has a name. With `OSCTL_FAILPOINT=<name>` in the environment,
//! osctl aborts (SIGABRT, no cleanup, no destructors) when it reaches that
//! point, exactly as a power cut or `kill -9` would leave things. The crash
//! test runs every command once per fail point and checks that the machine
//! still boots what it booted, `fsck` is clean, `status` works and the
//! command succeeds when re-run.
//!
//! An environment variable rather than the `fail` crate: one lookup, no
//! global registry to configure from outside the process, and the list of
//! names below is the single source the test iterates over.

/// The environment variable that arms a fail point.
pub const ENV: &str = "OSCTL_FAILPOINT";

/// Every fail point, in the order a full switch + finalize passes them.
pub const ALL: &[&str] = &[
    "stage:after-pull",
    "stage:after-state-dir",
    "stage:after-root",
    "stage:after-kernel",
    "stage:after-entry",
    "stage:after-staged-marker",
    "prune:after-entry-removed",
    "prune:after-state-removed",
    "finalize:after-merge",
    "finalize:after-etc-swap",
    "finalize:after-default",
    "rollback:after-default",
    "rollback:after-drop-staged",
    "pin:after-origin",
];

/// Aborts the process if `name` is the armed fail point.
pub fn hit(name: &str) {
    debug_assert!(ALL.contains(&name), "unknown fail point {name}");
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        eprintln!("osctl: fail point {name} reached; aborting");
        std::process::abort();
    }
}
