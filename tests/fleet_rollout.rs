//! Fleet rollouts with simulated machines (util/fleet.rs): real etcd, a
//! real registry, real controller and agent processes; reboots played the
//! way a machine does them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::util::Osctl;
use crate::util::fleet::{Checker, FleetEnv, SimNode, drive};
use crate::util::machine::Images;
use crate::util::run_ok;
use osctl_testutil::api::resolve_digest;

/// How long a rollout of a few simulated machines may take at most.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(240);

fn phase(status: &Value) -> &str {
    status["status"]["phase"].as_str().unwrap_or("")
}

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

fn count(status: &Value, state: &str) -> usize {
    node_states(status)
        .iter()
        .filter(|(_, s)| s == state)
        .count()
}

/// Writes a rollout spec file and applies it; returns `fleet apply`'s line.
fn apply(env: &FleetEnv, admin: &Osctl, yaml: &str) -> String {
    let path = admin.sysroot().join("rollout.yaml");
    std::fs::write(&path, yaml).unwrap();
    run_ok(&mut env.fleet(admin, &["apply", "-f", path.to_str().unwrap()]))
}

#[test]
fn canary_then_pause_until_promoted_then_the_rest_within_max_unavailable() {
    const NODES: usize = 8;
    const MAX_UNAVAILABLE: usize = 2;
    let images = Images::new();
    let v2 = resolve_digest(&images.registry, "os", "v2").unwrap();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let mut nodes: Vec<SimNode> = (0..NODES)
        .map(|i| SimNode::new(&format!("web-{i:02}"), &images.v1, "pool=web"))
        .collect();
    for n in &mut nodes {
        n.start_agent(&env);
    }
    let mut controller = env.controller(&admin, "c1", "120s");
    let checker = Checker::start(&env, "web-v2", MAX_UNAVAILABLE);
    let out = apply(
        &env,
        &admin,
        &format!(
            "apiVersion: osctl.dev/v1alpha1
kind: Rollout
metadata:
  name: web-v2
spec:
  image: {}
  selector:
    matchLabels: {{pool: web}}
  maxUnavailable: {MAX_UNAVAILABLE}
  steps:
    - canary: 1
    - pause: {{}}
  healthGate:
    minHealthySeconds: 1
  failureBudget: 0
",
            images.v2
        ),
    );
    assert_eq!(out, "rollout/web-v2 created (generation 1)\n");

    // The canary: one node updated, then the pause holds everything else.
    let none = BTreeSet::new();
    let st = drive(
        &env,
        &admin,
        &mut nodes,
        "web-v2",
        &none,
        ROLLOUT_TIMEOUT,
        |st| {
            count(st, "updated") == 1
                && st["status"]["blocked"]
                    .as_str()
                    .is_some_and(|b| b.contains("promote"))
        },
    );
    assert_eq!(st["status"]["digest"], v2.as_str(), "{st:#}");
    let human = run_ok(&mut env.fleet(&admin, &["status", "web-v2", "--format", "human"]));
    assert!(human.contains("blocked   paused until promoted"), "{human}");
    std::thread::sleep(Duration::from_secs(2));
    let st = env.status(&admin, "web-v2");
    assert_eq!(count(&st, "updated"), 1, "the pause holds: {st:#}");

    // Promoted: the rest, at most MAX_UNAVAILABLE at a time.
    run_ok(&mut env.fleet(&admin, &["promote", "web-v2"]));
    let st = drive(
        &env,
        &admin,
        &mut nodes,
        "web-v2",
        &none,
        ROLLOUT_TIMEOUT,
        |st| phase(st) == "completed",
    );
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
