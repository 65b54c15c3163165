//! Fleet rollouts with simulated machines (util/fleet.rs): real etcd, a
//! real registry, real controller and agent processes; reboots played the
//! way a machine does them.

use std::collections::BTreeSet;

use std::time::Duration;

use serde_json::Value;

use crate::util::Osctl;
use crate::util::fleet::{
    Checker, ControllerProcess, FleetEnv, SimNode, count, drive, phase, rollout_yaml, utc_hhmm,
    window_from,
};
use crate::util::machine::Images;
use crate::util::{os_spec, run_ok};
use osctl_testutil::api::resolve_digest;
use osctl_testutil::layout::write_index_layout;
use osctl_testutil::spec::{Entry, ImageSpec};

/// How long a rollout of a few simulated machines may take at most.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(240);

fn node_states(status: &Value) -> Vec<(String, String)> {
    status["status"]["nodes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["state"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a rollout spec file and applies it; returns `fleet apply`'s line.
fn apply(env: &FleetEnv, admin: &Osctl, yaml: &str) -> String {
    env.apply(admin, yaml)
}

/// A fleet of `n` machines booted on v1, each with its agent, labelled
/// `pool=web`, and a controller.
fn fleet(
    images: &Images,
    n: usize,
    env: &FleetEnv,
    admin: &Osctl,
) -> (Vec<SimNode>, ControllerProcess) {
    let mut nodes: Vec<SimNode> = (0..n)
        .map(|i| SimNode::new(&format!("web-{i:02}"), &images.v1, "pool=web"))
        .collect();
    for node in &mut nodes {
        node.start_agent(env);
    }
    (nodes, env.controller(admin, "c1", "120s"))
}

#[test]
fn canary_then_pause_until_promoted_then_the_rest_within_max_unavailable() {
    const NODES: usize = 20;
    const MAX_UNAVAILABLE: usize = 5;
    let images = Images::new();
    let v2 = resolve_digest(&images.registry, "os", "v2").unwrap();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let (mut nodes, mut controller) = fleet(&images, NODES, &env, &admin);
    let checker = Checker::start(&env, "web-v2", MAX_UNAVAILABLE);
    let out = apply(
        &env,
        &admin,
        &rollout_yaml(
            "web-v2",
            &images.v2,
            "25%",
            "  steps:\n    - canary: 1\n    - pause: {}\n    - canary: 50%\n    - pause: {duration: 2s}\n",
        ),
    );
    assert_eq!(out, "rollout/web-v2 created (generation 1)\n");

    // The canary: one node updated, then the pause holds everything else.
    let st = until(&env, &admin, &mut nodes, |st| {
        count(st, "updated") == 1
            && st["status"]["blocked"]
                .as_str()
                .is_some_and(|b| b.contains("promote"))
    });
    assert_eq!(st["status"]["digest"], v2.as_str(), "{st:#}");
    let human = run_ok(&mut env.fleet(&admin, &["status", "web-v2", "--format", "human"]));
    assert!(human.contains("blocked   paused until promoted"), "{human}");
    std::thread::sleep(Duration::from_secs(2));
    let st = env.status(&admin, "web-v2");
    assert_eq!(count(&st, "updated"), 1, "the pause holds: {st:#}");

    // Promoted: the rest, at most MAX_UNAVAILABLE at a time.
    run_ok(&mut env.fleet(&admin, &["promote", "web-v2"]));
    let st = until(&env, &admin, &mut nodes, |st| phase(st) == "completed");
    assert_eq!(count(&st, "updated"), NODES, "{st:#}");
    for n in &nodes {
        assert_eq!(n.booted_digest(), v2, "{}", n.name);
        assert_eq!(n.reboots, 1, "{}: one reboot each", n.name);
    }
    let most = checker.finish();
    assert_eq!(
        most, MAX_UNAVAILABLE,
        "the rollout used its budget, never more"
    );
    controller.kill().unwrap();
}

/// Drives the fleet (no bad images) until rollout web-v2's status
/// satisfies `done`; returns that status.
fn until(
    env: &FleetEnv,
    admin: &Osctl,
    nodes: &mut [SimNode],
    done: impl FnMut(&Value) -> bool,
) -> Value {
    drive(
        env,
        admin,
        nodes,
        "web-v2",
        &BTreeSet::new(),
        ROLLOUT_TIMEOUT,
        done,
    )
}

/// Drives the fleet until rollout web-v2 completed; returns its status.
fn complete(env: &FleetEnv, admin: &Osctl, nodes: &mut [SimNode]) -> Value {
    until(env, admin, nodes, |st| phase(st) == "completed")
}

#[test]
fn outside_its_window_a_rollout_stages_but_reboots_nobody() {
    let images = Images::new();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let (mut nodes, mut controller) = fleet(&images, 3, &env, &admin);
    let checker = Checker::start(&env, "web-v2", 1);
    // A window that opens in two hours.
    let start = utc_hhmm(120);
    let closed = window_from(120, 180);
    apply(
        &env,
        &admin,
        &rollout_yaml("web-v2", &images.v2, "1", &closed),
    );
    let st = until(&env, &admin, &mut nodes, |st| count(st, "staged") == 3);
    let blocked = st["status"]["blocked"].as_str().unwrap_or_default();
    assert!(
        blocked.starts_with("waiting for window ")
            && blocked.contains(&start)
            && blocked.ends_with(" UTC"),
        "{st:#}"
    );
    assert!(nodes.iter().all(|n| n.reboots == 0));

    // The window moved to now (a new generation, same image): it goes on
    // from where it was, staged images and all.
    let open = window_from(-60, 60);
    let out = apply(
        &env,
        &admin,
        &rollout_yaml("web-v2", &images.v2, "1", &open),
    );
    assert_eq!(out, "rollout/web-v2 configured (generation 2)\n");
    complete(&env, &admin, &mut nodes);
    assert!(nodes.iter().all(|n| n.reboots == 1));
    assert_eq!(checker.finish(), 1);
    controller.kill().unwrap();
}

#[test]
fn pause_holds_reboots_and_resume_finishes() {
    let images = Images::new();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let (mut nodes, mut controller) = fleet(&images, 3, &env, &admin);
    let checker = Checker::start(&env, "web-v2", 1);
    apply(&env, &admin, &rollout_yaml("web-v2", &images.v2, "1", ""));
    let out = run_ok(&mut env.fleet(&admin, &["pause", "web-v2"]));
    assert!(out.starts_with("rollout/web-v2: pause requested"), "{out}");
    let st = until(&env, &admin, &mut nodes, |st| {
        st["status"]["paused"] == true
            && st["pendingControls"].as_array().is_some_and(Vec::is_empty)
    });
    assert_eq!(st["status"]["blocked"], "paused", "{st:#}");
    // Paused: whatever was under way finishes, nothing new starts.
    let before: u32 = nodes.iter().map(|n| n.reboots).sum();
    assert!(before <= 1, "at most the node already under way: {before}");
    let st = until(&env, &admin, &mut nodes, |st| {
        node_states(st)
            .iter()
            .all(|(_, s)| matches!(s.as_str(), "updated" | "staged" | "assigned" | "pending"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let updated = count(&env.status(&admin, "web-v2"), "updated");
    assert!(updated <= 1, "{st:#}");
    assert_eq!(updated, count(&st, "updated"), "no reboot while paused");

    run_ok(&mut env.fleet(&admin, &["resume", "web-v2"]));
    complete(&env, &admin, &mut nodes);
    assert!(nodes.iter().all(|n| n.reboots == 1));
    checker.finish();
    controller.kill().unwrap();
}

#[test]
fn abort_withdraws_what_has_not_rebooted_and_undo_sends_the_rest_back() {
    let images = Images::new();
    let v1 = resolve_digest(&images.registry, "os", "v1").unwrap();
    let v2 = resolve_digest(&images.registry, "os", "v2").unwrap();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let (mut nodes, mut controller) = fleet(&images, 3, &env, &admin);
    let checker = Checker::start(&env, "web-v2", 1);
    apply(&env, &admin, &rollout_yaml("web-v2", &images.v2, "1", ""));
    until(&env, &admin, &mut nodes, |st| count(st, "updated") == 1);
    run_ok(&mut env.fleet(&admin, &["abort", "web-v2"]));
    let st = until(&env, &admin, &mut nodes, |st| {
        phase(st) == "aborted" && nodes_quiet(st)
    });
    // Let the agents see their assignments withdrawn.
    std::thread::sleep(Duration::from_secs(2));
    let updated: Vec<&SimNode> = nodes.iter().filter(|n| n.booted_digest() == v2).collect();
    assert!(!updated.is_empty() && updated.len() < 3, "{st:#}");
    for n in &nodes {
        if n.booted_digest() == v1 {
            let status = n.m.status();
            assert!(
                status["status"]["staged"].is_null(),
                "{}: aborted, nothing staged: {status:#}",
                n.name
            );
        }
    }

    // Undo: the nodes it updated go back to v1, one at a time.
    run_ok(&mut env.fleet(&admin, &["undo", "web-v2"]));
    until(&env, &admin, &mut nodes, |st| {
        node_states(st)
            .iter()
            .all(|(_, s)| s != "updated" && s != "reverting")
    });
    std::thread::sleep(Duration::from_secs(1));
    for n in &nodes {
        assert_eq!(n.booted_digest(), v1, "{}", n.name);
    }
    checker.finish();
    controller.kill().unwrap();
}

/// No node between assignment and the end of its reboot.
fn nodes_quiet(st: &Value) -> bool {
    node_states(st)
        .iter()
        .all(|(_, s)| !matches!(s.as_str(), "rebooting" | "verifying"))
}

#[test]
fn a_multi_arch_image_is_assigned_by_its_index_and_completes_on_each_platform() {
    const NODES: usize = 2;
    let images = Images::new();
    // os:v2-multi: an image index with this host's platform and another;
    // the nodes pull this host's manifest from it.
    let host = osctl_testutil::spec::host_oci_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let mine = os_spec("2.1", &["quiet"], vec![Entry::file("etc/motd", "v2.1\n")]);
    let theirs = ImageSpec {
        architecture: other.to_string(),
        ..os_spec(
            "2.1",
            &["quiet"],
            vec![Entry::file("etc/motd", "v2.1 other\n")],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let built = write_index_layout(
        dir.path(),
        "multi",
        &[(mine, "linux", host), (theirs, "linux", other)],
    )
    .unwrap();
    let index = images
        .registry
        .push_oci_index(dir.path(), "multi", "os:v2-multi")
        .unwrap();
    assert_eq!(index, built.index_digest);
    let manifest = built.images[0].manifest_digest.clone();

    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let (mut nodes, mut controller) = fleet(&images, NODES, &env, &admin);
    apply(
        &env,
        &admin,
        &rollout_yaml("web-v2", &images.registry.image_ref("os:v2-multi"), "1", ""),
    );
    let st = complete(&env, &admin, &mut nodes);
    // Assigned by the index, booted by this platform's manifest, and
    // counted as updated for it.
    assert_eq!(st["status"]["digest"], index.as_str(), "{st:#}");
    assert_eq!(count(&st, "updated"), NODES, "{st:#}");
    for n in &nodes {
        assert_eq!(n.booted_digest(), manifest, "{}", n.name);
        assert_eq!(n.reboots, 1, "{}: one reboot", n.name);
    }
    let reports = run_ok(&mut env.fleet(&admin, &["nodes", "--format", "json"]));
    let reports: Value = serde_json::from_str(&reports).unwrap();
    let resolved: Vec<&str> = reports
        .as_array()
        .expect("a list of nodes")
        .iter()
        .map(|n| n["report"]["booted"]["resolvedFrom"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(resolved, [index.as_str(); NODES], "{reports:#}");
    controller.kill().unwrap();
}
