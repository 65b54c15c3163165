//! `osctl fleet fleetlock` and `fleet controller --metrics` as processes:
//! a FleetLock client and a Prometheus scrape over plain HTTP/1.1 on
//! loopback, against a real etcd.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use osctl_testutil::EtcdCluster;
use osctl_testutil::api::resolve_digest;

use osctl_fleet::etcd::{Grant, Slots};
use osctl_fleet::fleetlock::HOLDER_PREFIX;

use crate::util::fleet::{
    Checker, FleetEnv, SimNode, count, drive, phase, rollout_yaml, window_from,
};
use crate::util::machine::{Images, Machine};
use crate::util::{Osctl, booted_cmd, run_ok};

/// How long a server may take to start listening: a guard against hangs.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A child process killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Already exited is fine: either way it is gone.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request as a plain HTTP/1.1 client sends it; the status line's code
/// and the body.
fn request(port: u16, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nfleet-lock-protocol: true\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get(port: u16, path: &str) -> (u16, String) {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// Starts `osctl fleet <args>` and waits until `port` accepts.
fn start(osctl: &Osctl, args: &[&str], port: u16) -> Server {
    start_cmd(osctl.cmd(), args, port)
}

/// [`start`] with `cmd` as the osctl to run (a machine "booted" by it).
fn start_cmd(mut cmd: Command, args: &[&str], port: u16) -> Server {
    let mut child = Server(
        cmd.args(["fleet"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("osctl fleet {args:?} exited: {status}");
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "osctl fleet {args:?} not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `osctl fleet fleetlock` on `port` for the fleet `/t/` of `endpoints`,
/// with `extra` options.
fn start_fleetlock(osctl: &Osctl, endpoints: &str, port: u16, extra: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "fleetlock",
        "--etcd",
        endpoints,
        "--prefix",
        "/t/",
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    start(osctl, &args, port)
}

#[test]
fn fleet_fleetlock_and_controller_metrics_over_http() {
    let etcd = EtcdCluster::start(1).unwrap();
    let endpoints = etcd.endpoints().join(",");
    let osctl = Osctl::new();
    let lock_port = free_port();
    let _fleetlock = start_fleetlock(&osctl, &endpoints, lock_port, &["--default-slots", "1"]);

    let a = r#"{"client_params":{"id":"a","group":"web"}}"#;
    let b = r#"{"client_params":{"id":"b","group":"web"}}"#;
    assert_eq!(post(lock_port, "/v1/pre-reboot", a), (200, String::new()));
    let (code, body) = post(lock_port, "/v1/pre-reboot", b);
    assert_eq!(code, 409);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["kind"], "no_slot");
    assert!(
        json["value"]
            .as_str()
            .unwrap()
            .starts_with("group web: all 1 slots are taken: a (until "),
        "{body}"
    );

    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let _controller = start(
        &osctl,
        &[
            "controller",
            "--etcd",
            &endpoints,
            "--prefix",
            "/t/",
            "--metrics",
            &metrics,
        ],
        metrics_port,
    );
    for port in [lock_port, metrics_port] {
        let (code, body) = get(port, "/metrics");
        assert_eq!(code, 200, "{body}");
        let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"osctl_fleet_nodes{state="present"} 0"#,
                r#"osctl_fleet_nodes{state="absent"} 0"#,
                r#"osctl_fleet_fleetlock_holders{group="web"} 1"#,
                r#"osctl_fleet_fleetlock_failures{group="web"} 0"#,
            ],
            "port {port}"
        );
    }

    assert_eq!(post(lock_port, "/v1/steady-state", a), (200, String::new()));
    assert_eq!(post(lock_port, "/v1/pre-reboot", b), (200, String::new()));
}

#[test]
fn fleet_agent_metrics_over_http() {
    let etcd = EtcdCluster::start(1).unwrap();
    let endpoints = etcd.endpoints().join(",");
    // A machine booted on v1 (an agent refuses one where nothing is).
    let images = Images::new();
    let v1 = resolve_digest(&images.registry, "os", "v1").unwrap();
    let mut m = Machine::new();
    m.boot(&images.v1);
    let boot_id = m.osctl.sysroot().join("boot_id");
    std::fs::write(&boot_id, "boot-1\n").unwrap();
    let mut cmd = booted_cmd(&m.osctl, m.booted.as_deref());
    cmd.env("OSCTL_BOOT_ID_FILE", &boot_id);
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let _agent = start_cmd(
        cmd,
        &[
            "agent",
            "--etcd",
            &endpoints,
            "--prefix",
            "/t/",
            "--node",
            "n1",
            "--labels",
            "pool=web",
            "--metrics",
            &metrics,
        ],
        port,
    );
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
    // Nothing assigned: idle, on v1.
    let info = format!(r#"osctl_fleet_agent_info{{node="n1",booted_digest="{v1}"}} 1"#);
    assert_eq!(
        samples,
        [
            r#"osctl_fleet_agent_phase{phase="idle"} 1"#,
            r#"osctl_fleet_agent_phase{phase="downloading"} 0"#,
            r#"osctl_fleet_agent_phase{phase="staged"} 0"#,
            r#"osctl_fleet_agent_phase{phase="waiting-slot"} 0"#,
            r#"osctl_fleet_agent_phase{phase="rebooting"} 0"#,
            r#"osctl_fleet_agent_phase{phase="verifying"} 0"#,
            r#"osctl_fleet_agent_phase{phase="updated"} 0"#,
            r#"osctl_fleet_agent_phase{phase="failed"} 0"#,
            info.as_str(),
        ]
    );
}

/// A FleetLock client's lock taken while one rollout governed the group is
/// still a machine rebooting when the next rollout of the group governs it:
/// the controller counts it against the new rollout's maxUnavailable (the
/// FleetLock server already did) and reboots nobody until it is released.
#[test]
fn a_fleetlock_lock_in_an_earlier_rollouts_pool_holds_the_next_rollout() {
    const TIMEOUT: Duration = Duration::from_secs(240);
    let images = Images::new();
    let env = FleetEnv::new(1);
    let admin = Osctl::new();
    let mut nodes: Vec<SimNode> = (0..2)
        .map(|i| SimNode::new(&format!("web-{i:02}"), &images.v1, "pool=web"))
        .collect();
    for node in &mut nodes {
        node.start_agent(&env);
    }
    let mut controller = env.controller(&admin, "c1", "120s");
    // web-old governs group web (its window opens in two hours: it reboots
    // nobody); a Zincati machine of the group takes its lock in web-old's
    // pool, as the FleetLock server does, and web-old is aborted.
    let closed = window_from(120, 180);
    env.apply(&admin, &rollout_yaml("web-old", &images.v2, "1", &closed));
    let quiet = BTreeSet::new();
    drive(&env, &admin, &mut nodes, "web-old", &quiet, TIMEOUT, |st| {
        !phase(st).is_empty()
    });
    let etcd = env.connect();
    let lock = format!("{HOLDER_PREFIX}zincati-1");
    let granted = env
        .block_on(Slots::new(&etcd).grant_durable(
            "web-old",
            &lock,
            1,
            Duration::from_secs(600),
            None,
        ))
        .unwrap();
    assert!(matches!(granted, Grant::Granted { .. }), "{granted:?}");
    run_ok(&mut env.fleet(&admin, &["abort", "web-old"]));
    drive(&env, &admin, &mut nodes, "web-old", &quiet, TIMEOUT, |st| {
        phase(st) == "aborted"
    });

    let checker = Checker::start(&env, "web-v2", 1);
    env.apply(&admin, &rollout_yaml("web-v2", &images.v2, "1", ""));
    let st = drive(&env, &admin, &mut nodes, "web-v2", &quiet, TIMEOUT, |st| {
        count(st, "staged") + count(st, "rebooting") + count(st, "updated") == 2
            && st["status"]["blocked"].as_str().is_some()
    });
    assert_eq!(
        st["status"]["blocked"], "1 unavailable ≥ maxUnavailable 1",
        "the lock in web-old's pool fills web-v2's budget: {st:#}"
    );
    assert_eq!(count(&st, "staged"), 2, "{st:#}");
    assert!(nodes.iter().all(|n| n.reboots == 0), "{st:#}");
    assert!(
        env.block_on(Slots::new(&etcd).holders("web-v2"))
            .unwrap()
            .is_empty()
    );

    // Back in steady state, the machine gives its lock back: web-v2 goes on.
    env.block_on(Slots::new(&etcd).release("web-old", &lock, None))
        .unwrap();
    drive(&env, &admin, &mut nodes, "web-v2", &quiet, TIMEOUT, |st| {
        phase(st) == "completed"
    });
    assert!(nodes.iter().all(|n| n.reboots == 1));
    assert_eq!(checker.finish(), 1);
    controller.kill().unwrap();
}

/// `fleet locks` shows a lock that failed (its machine not back by its
/// deadline), and `fleet unlock` — the admin's way once that machine is
/// gone — frees its slot for the next machine; an id that holds nothing is
/// refused by name.
#[test]
fn fleet_locks_shows_a_failed_lock_and_fleet_unlock_frees_it() {
    let etcd = EtcdCluster::start(1).unwrap();
    let endpoints = etcd.endpoints().join(",");
    let osctl = Osctl::new();
    let port = free_port();
    let _fleetlock = start_fleetlock(&osctl, &endpoints, port, &["--reboot-deadline", "1s"]);
    let fleet = |args: &[&str]| {
        let mut cmd = osctl.cmd();
        cmd.args(["fleet"])
            .args(args)
            .args(["--etcd", &endpoints, "--prefix", "/t/"]);
        cmd.output().unwrap()
    };
    let a = r#"{"client_params":{"id":"a","group":"web"}}"#;
    let b = r#"{"client_params":{"id":"b","group":"web"}}"#;
    assert_eq!(post(port, "/v1/pre-reboot", a), (200, String::new()));

    // a never comes back: once its deadline passed, it is FAILED and still
    // holds the group's one slot.
    let started = Instant::now();
    let listed = loop {
        let out = fleet(&["locks", "--format", "json"]);
        assert!(out.status.success(), "{out:?}");
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if listed[0]["failed"] == true {
            break listed;
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "a never failed: {listed:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let locks = listed.as_array().unwrap();
    assert_eq!(locks.len(), 1, "{listed:#}");
    assert_eq!(
        (&locks[0]["group"], &locks[0]["id"], &locks[0]["rollout"]),
        (
            &serde_json::json!("web"),
            &serde_json::json!("a"),
            &serde_json::Value::Null
        ),
        "{listed:#}"
    );
    let human = fleet(&["locks", "--format", "human"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let row = human.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("web    a   own ")
            && row.ends_with("FAILED: not back by its deadline (fleet unlock once it is gone)"),
        "{human}"
    );
    let (code, body) = post(port, "/v1/pre-reboot", b);
    assert!(code == 409 && body.contains("a FAILED"), "{code} {body}");

    // The admin clears it: b may reboot now.
    let out = fleet(&["unlock", "web", "a"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lock of a in group web released\n"
    );
    assert_eq!(post(port, "/v1/pre-reboot", b), (200, String::new()));

    // Nothing to clear, or not an id: refused, naming what is wrong.
    for (args, want) in [
        (
            ["unlock", "web", "a"],
            "group web holds no lock of id a (see `osctl fleet locks`)",
        ),
        (["unlock", "web", "a b"], "id_invalid: id \"a b\" has ' '"),
    ] {
        let out = fleet(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
