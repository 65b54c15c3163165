//! Crash safety, by comparing whole machine states.
//!
//! Each scenario prepares a machine the same way every time and runs one
//! command. For every fail point the command passes, the test runs it on a
//! fresh copy of the scenario with that fail point armed (osctl aborts
//! there, SIGABRT, as `kill -9` would leave it) and checks:
//!
//! 1. the crash happened at that point (not before, not a usage error);
//! 2. without a re-run, `status` works (and validates against the schema)
//!    and shows the roles of either the machine before the command or the
//!    machine after a clean run — never a third;
//! 3. the default boot entry names an entry that exists;
//! 4. after re-running the command (or `gc`, where the scenario says the
//!    rest is gc's; the command and then `gc` where the crash leaves a
//!    temporary only gc may remove), the machine's *whole* state —
//!    every file under the boot dir, the deployment state, the store's
//!    records, refs and layer indexes, the object count, `status` and
//!    `fsck` — equals the state after an uninterrupted run.
//!
//! Every fail point in `osctl_store::failpoint::ALL` must be passed by some
//! scenario, except the fleet agent's ([`TESTED_ELSEWHERE`]).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

use crate::util::machine::{Images, Machine, MachineState, Roles, machine_state, roles};
use crate::util::{Osctl, booted_cmd};
use osctl_testutil::Entry;

/// The images every scenario uses: `/etc/app.conf` too, for the admin to
/// edit.
fn images() -> Images {
    Images::with_etc(|v| vec![Entry::file("etc/app.conf", format!("setting = {v}\n"))])
}

impl Machine {
    /// The admin edits /etc on the booted deployment.
    fn edit_etc(&self) {
        let booted = self.booted.as_deref().unwrap();
        let etc = self
            .osctl
            .sysroot()
            .join(format!("sysroot/state/deploy/{booted}/etc"));
        std::fs::write(etc.join("app.conf"), "setting = mine\n").unwrap();
        std::fs::write(etc.join("local.conf"), "added by the admin\n").unwrap();
    }
}

/// Points whose crash leaves a temporary file that only `gc` removes, so
/// the re-run is the command and then `gc`. A pull cannot tell a crashed
/// writer's temporary from one a concurrent pull is still writing (both
/// hold the naming lock shared); gc holds it exclusively.
const LEAVES_A_TEMPORARY_FOR_GC: &[&str] = &["pull:after-layer-index-written"];

/// Whether `path` (relative to the machine's root, as in [`MachineState`])
/// is a layer index write's temporary.
fn is_layer_index_temporary(path: &str) -> bool {
    path.strip_prefix("sysroot/osctl/layers/")
        .is_some_and(|name| name.starts_with(osctl_store::atomic::TMP_PREFIX))
}

/// One scenario: how to prepare the machine, the command, and the fail
/// points it passes.
struct Scenario {
    name: &'static str,
    setup: fn(&Images) -> (Machine, Vec<String>),
    points: &'static [&'static str],
    /// Points after which the re-run is `osctl gc`, not the command:
    /// `image rm` of a reference already gone is an error (a typo must not
    /// pass silently), so once its record and refs are gone, what is left
    /// — freeing the space — is the next gc's.
    finished_by_gc: &'static [&'static str],
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// v1 booted, /etc edited.
fn booted_v1(images: &Images) -> Machine {
    let mut m = Machine::new();
    m.boot(&images.v1);
    m.edit_etc();
    m
}

/// v1 then v2 booted (v1 the rollback).
fn booted_v2(images: &Images) -> Machine {
    let mut m = booted_v1(images);
    m.boot(&images.v2);
    m
}

const SWITCH_POINTS: &[&str] = &[
    "stage:after-pull",
    "stage:after-state-dir",
    "stage:after-root",
    "stage:after-kernel",
    "stage:after-origin",
    "stage:after-entry",
    "stage:after-marker",
];
fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "switch",
            setup: |i| {
                let m = booted_v1(i);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v2]),
                )
            },
            points: SWITCH_POINTS,
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch pulling",
            setup: |i| {
                let m = booted_v1(i);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &[
                "pull:after-layers",
                "pull:after-layer-index",
                "pull:after-image",
                "pull:after-record",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            // v1 → v2 → v3 booted; with v4 staged, v2 is the rollback and
            // v1 goes.
            name: "switch with pruning",
            setup: |i| {
                let mut m = booted_v2(i);
                m.boot(&i.v3);
                (m, words(&["switch", "--progress", "none", &i.v4]))
            },
            points: &[
                "stage:after-marker",
                "drop:after-state",
                "prune:after-kernels",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "first switch of an offline sysroot",
            setup: |i| {
                (
                    Machine::new(),
                    words(&["switch", "--progress", "none", &i.v1]),
                )
            },
            points: &[
                "stage:after-state-dir",
                "stage:after-var-seed-built",
                "stage:after-var-seed",
                "stage:after-marker",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "offline sysroot: switch beside the default",
            setup: |i| {
                let m = Machine::new();
                m.switch(&i.v1);
                m.run(&["finalize"]);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v2]),
                )
            },
            points: &["stage:after-entry", "stage:after-marker"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch replacing a pending update",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &[
                "stage:after-entry",
                "stage:after-marker",
                "stage:after-replaced-dropped",
                "drop:after-entry",
                "drop:after-rename",
                "drop:after-state",
                "drop:after-root",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch replacing a finalized update",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.run(&["finalize"]);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &[
                "stage:after-entry",
                "stage:after-unfinalize-replaced",
                "stage:after-marker",
                "stage:after-default-restored",
                "stage:after-replaced-dropped",
                "drop:after-state",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch during a queued rollback",
            setup: |i| {
                let m = booted_v2(i);
                m.run(&["rollback"]);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &[
                "stage:after-entry",
                "stage:after-marker",
                "stage:after-default-restored",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch back to the booted image",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.run(&["finalize"]);
                (m, words(&["switch", "--progress", "none", &i.v1]))
            },
            points: &[
                "stage:after-unfinalize-replaced",
                "stage:after-default-restored",
                "stage:after-replaced-dropped",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch to the rollback deployment's image",
            setup: |i| {
                let m = booted_v2(i);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v1]),
                )
            },
            points: &[
                "stage:after-origin",
                "stage:after-entry",
                "stage:after-marker",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            // The rollback's image under another reference: the deployment
            // is staged again in place with a new record (the pull of the
            // new reference), written before the origin.
            name: "switch to the rollback deployment's image under another reference",
            setup: |i| {
                retag(i, "os:v1", "os:v1-again");
                let m = booted_v2(i);
                let again = i.registry.image_ref("os:v1-again");
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &again]),
                )
            },
            points: &[
                "stage:after-pull",
                "stage:after-kernel",
                "stage:after-origin",
                "stage:after-entry",
                "stage:after-marker",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "finalize on trial",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                (m, words(&["finalize"]))
            },
            points: &[
                "finalize:after-merge",
                "finalize:after-etc-swap",
                "finalize:after-origin",
                "finalize:after-entry",
                "trial:after-fallback-key",
                "trial:after-trying-key",
                "finalize:after-default",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "finalize without boot counting",
            setup: |i| {
                let m = booted_v1(i);
                write_config(&m, "[boot]\ntries = 0\n");
                m.switch(&i.v2);
                (m, words(&["finalize"]))
            },
            points: &["finalize:after-origin", "finalize:after-default"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback with a pending update",
            setup: |i| {
                let m = booted_v2(i);
                m.switch(&i.v3);
                (m, words(&["rollback"]))
            },
            points: &[
                "rollback:after-marker",
                "rollback:after-default",
                "rollback:after-staged-marker",
                "rollback:after-drop-staged",
                "drop:after-entry",
                "drop:after-rename",
                "drop:after-state",
                "drop:after-root",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback with a finalized update",
            setup: |i| {
                let m = booted_v2(i);
                m.switch(&i.v3);
                m.run(&["finalize"]);
                (m, words(&["rollback"]))
            },
            points: &[
                "rollback:after-unfinalize",
                "rollback:after-marker",
                "rollback:after-default",
                "rollback:after-drop-staged",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback --cancel",
            setup: |i| {
                let m = booted_v2(i);
                m.run(&["rollback"]);
                (m, words(&["rollback", "--cancel"]))
            },
            points: &["rollback-cancel:after-default"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "pin",
            setup: |i| {
                let m = booted_v2(i);
                let v1 = roles(&m.osctl, m.booted.as_deref()).rollback.unwrap();
                (m, words(&["pin", &v1[..12]]))
            },
            points: &["pin:after-origin"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "unpin",
            setup: |i| {
                let m = booted_v2(i);
                let v1 = roles(&m.osctl, m.booted.as_deref()).rollback.unwrap();
                m.run(&["pin", &v1[..12]]);
                (m, words(&["unpin", &v1[..12]]))
            },
            points: &["unpin:after-origin"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "upgrade --check",
            setup: |i| {
                let tag = "os:check";
                retag(i, "os:v1", tag);
                let mut m = Machine::new();
                m.boot(&i.registry.image_ref(tag));
                retag(i, "os:v2", tag);
                (m, words(&["upgrade", "--check"]))
            },
            points: &["upgrade:after-cached-update"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "upgrade",
            setup: |i| {
                let tag = "os:upgrade";
                retag(i, "os:v1", tag);
                let mut m = Machine::new();
                m.boot(&i.registry.image_ref(tag));
                retag(i, "os:v2", tag);
                (m, words(&["upgrade", "--progress", "none"]))
            },
            points: &[
                "stage:after-pull",
                "stage:after-marker",
                "prune:after-kernels",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "upgrade --download-only",
            setup: |i| {
                let m = tracking_v1(i, "os:dl-first");
                retag(i, "os:v2", "os:dl-first");
                (m, words(DOWNLOAD_ONLY))
            },
            points: &[
                "stage:after-pull",
                "stage:after-state-dir",
                "stage:after-root",
                "stage:after-kernel",
                "stage:after-origin",
                "stage:after-entry",
                "stage:after-marker",
                "prune:after-kernels",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "upgrade --download-only replacing an older download",
            setup: |i| {
                let m = tracking_v1(i, "os:dl-newer");
                retag(i, "os:v2", "os:dl-newer");
                m.run(DOWNLOAD_ONLY);
                retag(i, "os:v3", "os:dl-newer");
                (m, words(DOWNLOAD_ONLY))
            },
            points: &[
                "stage:after-entry",
                "stage:after-marker",
                "drop:after-entry",
                "drop:after-rename",
                "drop:after-state",
                "drop:after-root",
                "stage:after-replaced-dropped",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            // Once the marker is rewritten there is nothing downloaded
            // left: a re-run is refused (an admin's script must not think
            // it released something), so gc finishes.
            name: "upgrade --from-downloaded",
            setup: |i| {
                let m = tracking_v1(i, "os:dl-release");
                retag(i, "os:v2", "os:dl-release");
                m.run(DOWNLOAD_ONLY);
                (m, words(&["upgrade", "--from-downloaded"]))
            },
            points: &["release:after-marker"],
            finished_by_gc: &["release:after-marker"],
        },
        Scenario {
            name: "upgrade to the downloaded image releases it",
            setup: |i| {
                let m = tracking_v1(i, "os:dl-upgrade");
                retag(i, "os:v2", "os:dl-upgrade");
                m.run(DOWNLOAD_ONLY);
                (m, words(&["upgrade", "--progress", "none"]))
            },
            points: &["release:after-marker", "prune:after-kernels"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback dropping a download",
            setup: |i| {
                let mut m = tracking_v1(i, "os:dl-rollback");
                retag(i, "os:v2", "os:dl-rollback");
                m.boot(&i.registry.image_ref("os:dl-rollback"));
                retag(i, "os:v3", "os:dl-rollback");
                m.run(DOWNLOAD_ONLY);
                (m, words(&["rollback"]))
            },
            points: &[
                "rollback:after-marker",
                "rollback:after-default",
                "rollback:after-staged-marker",
                "rollback:after-drop-staged",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "gc prunes an old deployment",
            setup: |i| {
                let mut m = booted_v2(i);
                m.boot(&i.v3);
                (m, words(&["gc"]))
            },
            points: &[
                "drop:after-entry",
                "drop:after-rename",
                "drop:after-state",
                "drop:after-root",
                "prune:after-kernels",
                "gc:after-refs-pruned",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "image pull",
            setup: |i| {
                let m = booted_v1(i);
                (m, words(&["image", "pull", "--progress", "none", &i.v2]))
            },
            points: &[
                "pull:after-layers",
                "pull:after-layer-index-written",
                "pull:after-layer-index",
                "pull:after-image",
                "pull:after-record",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "image rm",
            setup: |i| {
                let m = booted_v1(i);
                m.run(&["image", "pull", "--progress", "none", &i.v2]);
                (m, words(&["image", "rm", &i.v2]))
            },
            points: &["rm:after-record", "rm:after-refs", "gc:after-refs-pruned"],
            finished_by_gc: &["rm:after-refs", "gc:after-refs-pruned"],
        },
        Scenario {
            name: "health check after a fallback",
            setup: |i| {
                let m = booted_v1(i);
                let v2 = m.switch(&i.v2);
                m.run(&["finalize"]);
                // systemd-boot tried v2 three times; it never came up.
                m.use_tries(&v2, true);
                (m, words(&["health", "check"]))
            },
            points: &[
                "assess:after-health",
                "assess:after-failed-images",
                "assess:after-default",
                "check:after-record",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "health bless on trial",
            setup: |i| {
                let mut m = booted_v1(i);
                let v2 = m.switch(&i.v2);
                m.run(&["finalize"]);
                m.use_tries(&v2, false);
                m.booted = Some(v2);
                m.run(&["health", "check"]);
                (m, words(&["health", "bless"]))
            },
            points: &[
                "bless:after-entry",
                "bless:after-default",
                "bless:after-health",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "health bless of an image that failed before",
            setup: |i| {
                let mut m = booted_v1(i);
                let v2 = m.switch(&i.v2);
                m.run(&["finalize"]);
                m.use_tries(&v2, true);
                m.run(&["health", "check"]);
                // Switched to again (not refused, unlike upgrade), and this
                // time it comes up.
                m.switch(&i.v2);
                m.run(&["finalize"]);
                m.use_tries(&v2, false);
                m.booted = Some(v2);
                m.run(&["health", "check"]);
                (m, words(&["health", "bless"]))
            },
            points: &["bless:after-health", "bless:after-failed-images"],
            finished_by_gc: &[],
        },
    ]
}

/// Scenarios that start from a crash and run a *different* command (or the
/// same one on a different machine): the recovery that command runs first
/// must finish or undo what the crash left — and crashing inside that
/// recovery (its drops pass the `drop:*` points) must be survivable too.
fn after_crash_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "gc after a switch that stopped before its marker",
            setup: |i| {
                let m = booted_v1(i);
                m.crash(
                    "stage:after-entry",
                    &["switch", "--retain", "--progress", "none", &i.v2],
                );
                (m, words(&["gc"]))
            },
            points: &[
                "drop:after-entry",
                "drop:after-rename",
                "drop:after-state",
                "drop:after-root",
                "prune:after-kernels",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch after one that stopped having un-finalized the update",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.run(&["finalize"]);
                m.crash(
                    "stage:after-unfinalize-replaced",
                    &["switch", "--retain", "--progress", "none", &i.v3],
                );
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v4]),
                )
            },
            points: &[
                "stage:after-entry",
                "stage:after-unfinalize-replaced",
                "stage:after-marker",
                "stage:after-default-restored",
                "stage:after-replaced-dropped",
                "drop:after-rename",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback after a finalize that stopped between its trial keys",
            setup: |i| {
                let m = booted_v2(i);
                m.switch(&i.v3);
                m.crash("trial:after-fallback-key", &["finalize"]);
                (m, words(&["rollback"]))
            },
            points: &[
                "rollback:after-marker",
                "rollback:after-default",
                "rollback:after-staged-marker",
                "drop:after-entry",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch replacing an update whose finalize stopped before its default",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.crash("finalize:after-entry", &["finalize"]);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &[
                "stage:after-unfinalize-replaced",
                "stage:after-marker",
                "stage:after-replaced-dropped",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch back to the booted image after a finalize that stopped",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.crash("finalize:after-origin", &["finalize"]);
                (m, words(&["switch", "--progress", "none", &i.v1]))
            },
            points: &[
                "stage:after-unfinalize-replaced",
                "drop:after-entry",
                "stage:after-replaced-dropped",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "finalize after a rollback that stopped at its marker",
            setup: |i| {
                let m = booted_v2(i);
                m.switch(&i.v3);
                m.crash("rollback:after-marker", &["rollback"]);
                (m, words(&["finalize"]))
            },
            points: &[
                "finalize:after-merge",
                "finalize:after-etc-swap",
                "trial:after-trying-key",
                "finalize:after-default",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "health check after a finalize that stopped before its default",
            setup: |i| {
                let m = booted_v1(i);
                m.switch(&i.v2);
                m.crash("trial:after-trying-key", &["finalize"]);
                (m, words(&["health", "check"]))
            },
            points: &["check:after-record"],
            finished_by_gc: &[],
        },
        Scenario {
            name: "switch replacing a pinned finalized update",
            setup: |i| {
                let m = booted_v1(i);
                let v2 = m.switch(&i.v2);
                m.run(&["pin", &v2[..12]]);
                m.run(&["finalize"]);
                (m, words(&["switch", "--progress", "none", &i.v3]))
            },
            points: &[
                "stage:after-entry",
                "stage:after-marker",
                "stage:after-default-restored",
                "prune:after-kernels",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "rollback over a deployment staged again",
            setup: |i| {
                let mut m = booted_v2(i);
                m.boot(&i.v3);
                m.switch(&i.v1);
                (m, words(&["rollback"]))
            },
            points: &[
                "rollback:after-marker",
                "rollback:after-default",
                "rollback:after-staged-marker",
            ],
            finished_by_gc: &[],
        },
        Scenario {
            name: "offline sysroot: switch after an interrupted rollback",
            setup: |i| {
                let m = Machine::new();
                m.switch(&i.v1);
                m.run(&["finalize"]);
                m.switch(&i.v2);
                m.run(&["finalize"]);
                m.crash("rollback:after-unfinalize", &["rollback"]);
                (
                    m,
                    words(&["switch", "--retain", "--progress", "none", &i.v3]),
                )
            },
            points: &["stage:after-entry", "stage:after-marker"],
            finished_by_gc: &[],
        },
    ]
}

/// `upgrade --download-only`.
const DOWNLOAD_ONLY: &[&str] = &["upgrade", "--download-only", "--progress", "none"];

/// v1 booted from `tag` (pointed at `os:v1`), /etc edited: a machine
/// whose upgrades follow `tag`. Each scenario has a tag of its own, since
/// setups run again for every fail point.
fn tracking_v1(images: &Images, tag: &str) -> Machine {
    retag(images, "os:v1", tag);
    let mut m = Machine::new();
    m.boot(&images.registry.image_ref(tag));
    m.edit_etc();
    m
}

/// Points `tag` at the image tagged `from` (same digest, so the result is
/// the same on every machine).
fn retag(images: &Images, from: &str, tag: &str) {
    images
        .registry
        .copy_tag(from, tag)
        .unwrap_or_else(|e| panic!("retag {from} → {tag}: {e}"));
}

fn write_config(m: &Machine, text: &str) {
    crate::util::assess::write_config(&m.osctl, text);
}

/// Whether loader.conf's default, if exact, names an existing entry.
fn default_names_an_entry(osctl: &Osctl) -> Result<(), String> {
    let loader = osctl.sysroot().join("boot/loader/loader.conf");
    let Ok(text) = std::fs::read_to_string(&loader) else {
        return Ok(());
    };
    let Some(value) = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("default "))
        .next_back()
    else {
        return Ok(());
    };
    if value.contains('*') {
        return Ok(());
    }
    let stem = value.trim().trim_end_matches(".conf");
    let found = std::fs::read_dir(osctl.sysroot().join("boot/loader/entries"))
        .unwrap()
        .flatten()
        .any(|e| {
            let name = e.file_name().into_string().unwrap();
            name == format!("{stem}.conf") || name.starts_with(&format!("{stem}+"))
        });
    if found {
        Ok(())
    } else {
        Err(format!("loader.conf names {value}, which does not exist"))
    }
}

/// Fail points of processes other than a deploy command, with their own
/// crash tests: the fleet agent's (tests/fleet_faults.rs).
const TESTED_ELSEWHERE: &[&str] = &[osctl_fleet::agent::FAILPOINT_REBOOT_RECORDED];

#[test]
fn every_fail_point_ends_where_a_clean_run_ends() {
    let images = images();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut checks = 0;
    for scenario in scenarios().into_iter().chain(after_crash_scenarios()) {
        // The reference: before, and after an uninterrupted run.
        let (clean, command) = (scenario.setup)(&images);
        let booted = clean.booted.clone();
        let before: Roles = roles(&clean.osctl, booted.as_deref());
        clean.run(&command.iter().map(String::as_str).collect::<Vec<_>>());
        let after_roles = roles(&clean.osctl, booted.as_deref());
        let after: MachineState = machine_state(&clean.osctl, booted.as_deref());
        assert!(
            after.fsck.starts_with("exit Some(0)") && after.fsck.contains(" 0 problem(s)"),
            "{}: a clean run leaves fsck unhappy:\n{}",
            scenario.name,
            after.fsck
        );

        for point in scenario.points {
            let what = format!("{} at {point}", scenario.name);
            let (m, cmd) = (scenario.setup)(&images);
            assert_eq!(cmd, command, "{what}: setup is not deterministic");
            let out = booted_cmd(&m.osctl, booted.as_deref())
                .env(osctl_deploy::failpoint::ENV, point)
                .args(&command)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.signal() == Some(6)
                    && stderr.contains(&format!("fail point {point} reached")),
                "{what}: not reached by {command:?}: {stderr}"
            );
            reached.insert(point);

            let crashed = roles(&m.osctl, booted.as_deref());
            assert!(
                crashed == before || crashed == after_roles,
                "{what}: a third state after the crash:\n{crashed:#?}\nbefore: {before:#?}\nafter a clean run: {after_roles:#?}"
            );
            if let Err(e) = default_names_an_entry(&m.osctl) {
                panic!("{what}: {e}");
            }

            if scenario.finished_by_gc.contains(point) {
                m.run(&["gc"]);
            } else {
                m.run(&command.iter().map(String::as_str).collect::<Vec<_>>());
                if LEAVES_A_TEMPORARY_FOR_GC.contains(point) {
                    // The temporary is all gc is left to remove: the
                    // re-run equals a clean run in everything else.
                    let mut rerun = machine_state(&m.osctl, booted.as_deref());
                    let before = rerun.files.len();
                    rerun
                        .files
                        .retain(|path, _| !is_layer_index_temporary(path));
                    assert!(
                        rerun.files.len() < before,
                        "{what}: no temporary left for gc"
                    );
                    assert_same(&what, &rerun, &after);
                    m.run(&["gc"]);
                }
            }
            let rerun = machine_state(&m.osctl, booted.as_deref());
            assert_same(&what, &rerun, &after);
            checks += 1;
        }
    }
    let all: BTreeSet<&str> = osctl_deploy::failpoint::ALL
        .iter()
        .copied()
        .filter(|p| !TESTED_ELSEWHERE.contains(p))
        .collect();
    let untested: Vec<_> = all.difference(&reached).collect();
    assert!(
        untested.is_empty(),
        "fail points no scenario passes: {untested:?}"
    );
    eprintln!(
        "{} fail points, {checks} crashes: each re-run ended exactly where a clean run ends",
        reached.len()
    );
}

/// Equal machine states, or a panic naming the first difference.
#[track_caller]
fn assert_same(what: &str, got: &MachineState, want: &MachineState) {
    for (path, w) in &want.files {
        match got.files.get(path) {
            None => panic!("{what}: after the re-run {path} is missing; a clean run has:\n{w}"),
            Some(g) if g != w => {
                panic!("{what}: after the re-run {path} differs:\n{g}\nclean run:\n{w}")
            }
            Some(_) => {}
        }
    }
    for path in got.files.keys() {
        assert!(
            want.files.contains_key(path),
            "{what}: after the re-run {path} exists, a clean run has none:\n{}",
            got.files[path]
        );
    }
    assert_eq!(got.status, want.status, "{what}: status differs");
    assert_eq!(got.fsck, want.fsck, "{what}: fsck differs");
}
