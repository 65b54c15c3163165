//! One rollout whose members are simulated machines (util/fleet.rs) and a
//! real QEMU guest: the VM test's registry VM (tests/vm/scenarios.sh), whose
//! agent reaches this test's etcd through QEMU's user networking
//! (`restrict=on`, a `guestfwd` to 127.0.0.1), stages the rollout's image
//! under the guest's signature policy, takes a reboot slot, reboots for
//! real (`systemctl reboot`; osctl-finalize-staged.service finalizes on the
//! way down), passes its health checks and reports.
//!
//! `tests/vm/lifecycle` runs this test (it is ignored by a plain `cargo
//! test`: without the guest there is nothing to test) and tells it, in
//! the environment:
//! - `OSCTL_VM_FLEET_DIR`: where this test writes `etcd-port` (the port the
//!   guest's forward connects to, once etcd is up) and, on success,
//!   `summary` (one line for the VM test's result), after which it keeps
//!   etcd up until the VM test writes `release` (the guest is done);
//! - `OSCTL_VM_FLEET_BASE`: the image the simulated machines start on;
//! - `OSCTL_VM_FLEET_IMAGE` and `OSCTL_VM_FLEET_DIGEST`: the image the
//!   rollout sends out (in the host's registry, signed) and its manifest
//!   digest.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use osctl_fleet::admin;
use serde_json::Value;

use crate::util::Osctl;
use crate::util::fleet::{
    Checker, FleetEnv, SimNode, count, drive, holds_slot, phase, rollout_yaml,
};

/// The guest's node name (tests/vm/guest-step).
const GUEST: &str = "vm-guest";
/// The rollout (tests/vm/guest-step waits for it to complete).
const ROLLOUT: &str = "fleet-vm";
/// Simulated machines beside the guest.
const SIMULATED: usize = 3;
/// How long the guest may take to join: the registry VM's earlier boots
/// come first (TCG: minutes).
const JOIN_TIMEOUT: Duration = Duration::from_secs(1200);
/// How long the rollout may take: the guest downloads through QEMU's user
/// networking and reboots under TCG.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(900);
/// A TCG guest's reboot (shutdown with finalize, firmware, boot, health
/// checks) takes a minute or two; a slot not back by then is a failure.
const REBOOT_DEADLINE: &str = "600s";
/// How long etcd stays up after the rollout for the guest's last checks
/// when the VM test never says it is done (it stops this test anyway).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(900);

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: tests/vm/lifecycle runs this test"))
}

/// `PORT` of `http://127.0.0.1:PORT`.
fn port_of(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map(|(_, port)| port)
        .unwrap_or_else(|| panic!("no port in {endpoint}"))
}

/// `text` into `path`: a temporary file beside it, renamed over it, so the
/// reader (the guest's forward) never sees half a port.
fn put(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What the test watches of the guest while the rollout runs: the boot ids
/// it reported, in order, and whether it held a reboot slot before its
/// boot id changed.
#[derive(Default)]
struct GuestWatch {
    boot_ids: Vec<String>,
    held_slot: bool,
}

#[test]
#[ignore = "needs the VM test's guest: tests/vm/lifecycle runs it"]
fn fleet_rollout_with_a_real_guest() {
    let dir = PathBuf::from(var("OSCTL_VM_FLEET_DIR"));
    let base = var("OSCTL_VM_FLEET_BASE");
    let image = var("OSCTL_VM_FLEET_IMAGE");
    let digest = var("OSCTL_VM_FLEET_DIGEST");
    let env = FleetEnv::new(1);
    put(&dir.join("etcd-port"), port_of(&env.endpoints()));
    let admin = Osctl::new();
    let mut nodes: Vec<SimNode> = (0..SIMULATED)
        .map(|i| SimNode::new(&format!("web-{i:02}"), &base, "pool=web"))
        .collect();
    for node in &mut nodes {
        node.start_agent(&env);
    }
    let _controller = env.controller(&admin, "c1", REBOOT_DEADLINE);
    let joined = env.wait_for_node(GUEST, JOIN_TIMEOUT);
    assert_eq!(
        joined.labels.get("pool").map(String::as_str),
        Some("web"),
        "{joined:?}"
    );
    let started = Instant::now();
    let checker = Checker::start(&env, ROLLOUT, 1);
    let out = env.apply(&admin, &rollout_yaml(ROLLOUT, &image, "1", ""));
    assert_eq!(out, format!("rollout/{ROLLOUT} created (generation 1)\n"));

    let etcd = env.connect();
    let mut guest = GuestWatch {
        boot_ids: vec![joined.boot_id.clone()],
        held_slot: false,
    };
    let st = drive(
        &env,
        &admin,
        &mut nodes,
        ROLLOUT,
        &BTreeSet::new(),
        ROLLOUT_TIMEOUT,
        |st: &Value| {
            // Reads that fail (etcd busy) prove nothing; the next poll counts.
            if let Ok(true) = holds_slot(&env, &etcd, ROLLOUT, GUEST) {
                guest.held_slot = true;
            }
            if let Ok(all) = env.block_on(admin::nodes(&etcd))
                && let Some(report) = all
                    .into_iter()
                    .find(|n| n.name == GUEST)
                    .and_then(|n| n.report)
                && guest.boot_ids.last() != Some(&report.boot_id)
            {
                assert!(
                    guest.held_slot,
                    "{GUEST} reported a new boot ({}) without holding a reboot slot",
                    report.boot_id
                );
                guest.boot_ids.push(report.boot_id);
            }
            phase(st) == "completed"
        },
    );
    let took = started.elapsed();
    let most = checker.finish();

    assert_eq!(st["status"]["digest"], digest.as_str(), "{st:#}");
    assert_eq!(count(&st, "updated"), SIMULATED + 1, "{st:#}");
    assert_eq!(st["status"]["nodes"][GUEST]["state"], "updated", "{st:#}");
    for n in &nodes {
        assert_eq!(n.booted_digest(), digest, "{}", n.name);
        assert_eq!(n.reboots, 1, "{}: one reboot", n.name);
    }
    let report = env
        .block_on(admin::nodes(&etcd))
        .unwrap()
        .into_iter()
        .find(|n| n.name == GUEST)
        .and_then(|n| n.report)
        .expect("the guest's report");
    assert_eq!(report.booted.digest, digest, "{report:?}");
    assert_eq!(
        guest.boot_ids.len(),
        2,
        "{GUEST}: one real reboot: {:?}",
        guest.boot_ids
    );
    assert_eq!(most, 1, "one machine at a time, the guest among them");
    put(
        &dir.join("summary"),
        &format!(
            "{} machines ({SIMULATED} simulated + {GUEST}) updated to {} in {:.0} s; \
             {GUEST} rebooted once, holding a slot (boot {} → {}); never more than {most} slot holder",
            SIMULATED + 1,
            &digest[..19],
            took.as_secs_f64(),
            short(&guest.boot_ids[0]),
            short(&guest.boot_ids[1]),
        ),
    );
    // The guest checks, after the boot the rollout gave it, that its agent
    // runs and that the fleet says the rollout completed: both need this
    // etcd. Ending here would stop it under the guest's feet (its agent
    // then exits for lack of etcd — seen as "the agent runs again" failing
    // when the rollout finished before the guest's checks).
    let release = dir.join("release");
    let waiting = Instant::now();
    while !release.exists() && waiting.elapsed() < RELEASE_TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first 8 characters of a boot id.
fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
