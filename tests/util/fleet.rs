//! Simulated fleets for the fleet tests (fleet_*.rs): a real etcd, a real
//! registry, real `osctl fleet controller` and `osctl fleet agent`
//! processes, each agent on a scratch machine of its own.
//!
//! A machine's reboot is what a real one does, step by step, played by
//! [`SimNode::reboot`] when the agent ran its reboot command (a `touch` of a
//! marker): the agent process stops (the machine goes down), `osctl
//! finalize` runs (the shutdown unit), systemd-boot picks the next entry by
//! loader.conf and boot counting ([`next_boot`]), the machine gets a new
//! boot id, the booted image's health checks run (`osctl health check` —
//! which reboots again on failure while the entry has tries, and so falls
//! back by itself), a passing boot is marked good (`osctl health bless`),
//! and the agent starts again. An image is "bad" when the test says so: its
//! machines get a failing required check in `/usr/lib/osctl/health.d`, as if
//! the image shipped it.
//!
//! A [`Checker`] reads etcd every few milliseconds throughout a test and
//! records the first moment more nodes hold reboot slots than the rollout
//! allows; every reboot first asserts that the node holds a slot confirmed
//! by etcd's majority.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osctl_fleet::etcd::Etcd;
use osctl_fleet::model::NodeReport;
use osctl_testutil::etcd::EtcdCluster;
use serde_json::Value;

use super::assess::{IMAGE_CHECKS, next_boot, use_tries, write_check};
use super::machine::Machine;
use super::{booted_cmd, run_ok};

/// Where the marker the reboot command leaves is, in a machine's dir.
const REBOOT_MARKER: &str = "reboot-requested";
/// The boot id file of a simulated machine.
const BOOT_ID_FILE: &str = "boot_id";
/// The failing check a bad image ships.
const BAD_CHECK: &str = "90-fleet-test-bad-image";

/// The fleet's shared parts: etcd and the key prefix.
pub struct FleetEnv {
    pub etcd: EtcdCluster,
    pub prefix: String,
    runtime: tokio::runtime::Runtime,
    /// Every node whose agent was ever started here.
    agents: Mutex<BTreeSet<String>>,
}

impl FleetEnv {
    pub fn new(members: usize) -> FleetEnv {
        FleetEnv {
            etcd: EtcdCluster::start(members).expect("starting etcd"),
            prefix: "/osctl-test/fleet/".to_string(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            agents: Mutex::new(BTreeSet::new()),
        }
    }

    /// Waits until every node whose agent was started has registered and
    /// reported: a rollout applied before that would pick its canaries
    /// from whoever was quick, which a loaded machine makes anyone.
    pub fn wait_for_reports(&self) {
        let etcd = self.connect();
        let want = self.agents.lock().unwrap().clone();
        let start = Instant::now();
        loop {
            let nodes = self
                .block_on(osctl_fleet::admin::nodes(&etcd))
                .expect("reading the nodes");
            let ready: BTreeSet<String> = nodes
                .into_iter()
                .filter(|n| n.present && n.report.is_some())
                .map(|n| n.name)
                .collect();
            if want.is_subset(&ready) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "agents not reporting: {:?}",
                want.difference(&ready).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoints(&self) -> String {
        self.etcd.endpoints().join(",")
    }

    /// A library connection, for reading what the processes wrote.
    pub fn connect(&self) -> Etcd {
        self.runtime
            .block_on(Etcd::connect(&self.etcd.endpoints(), &self.prefix))
            .expect("connecting to etcd")
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// `osctl fleet ARGS…` against this fleet (on a throwaway sysroot).
    pub fn fleet(&self, osctl: &super::Osctl, args: &[&str]) -> Command {
        let mut c = osctl.cmd();
        c.arg("fleet")
            .args(args)
            .env("OSCTL_ETCD", self.endpoints())
            .env("OSCTL_FLEET_PREFIX", &self.prefix);
        c
    }

    /// The rollout's status, or `None` while `fleet status` cannot read it
    /// (etcd without a majority).
    pub fn try_status(&self, osctl: &super::Osctl, rollout: &str) -> Option<Value> {
        let out = self
            .fleet(osctl, &["status", rollout, "--format", "json"])
            .output()
            .expect("running osctl");
        if !out.status.success() {
            return None;
        }
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(all[0].clone())
    }

    /// Starts a controller process.
    pub fn controller(
        &self,
        osctl: &super::Osctl,
        id: &str,
        reboot_deadline: &str,
    ) -> ControllerProcess {
        let log =
            std::fs::File::create(osctl.sysroot().join(format!("controller-{id}.log"))).unwrap();
        self.fleet(
            osctl,
            &[
                "controller",
                "--id",
                id,
                "--tick",
                "200ms",
                "--reboot-deadline",
                reboot_deadline,
            ],
        )
        .env("OSCTL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(ControllerProcess)
        .expect("starting the controller")
    }

    /// Writes `yaml` to a spec file in the admin's sysroot and applies it
    /// (after every started agent reported, see [`wait_for_reports`]);
    /// returns `fleet apply`'s output.
    ///
    /// [`wait_for_reports`]: FleetEnv::wait_for_reports
    pub fn apply(&self, admin: &super::Osctl, yaml: &str) -> String {
        self.wait_for_reports();
        let path = admin.sysroot().join("rollout.yaml");
        std::fs::write(&path, yaml).unwrap();
        run_ok(&mut self.fleet(admin, &["apply", "-f", path.to_str().unwrap()]))
    }

    /// Waits until `node` (an agent this test did not start: a real
    /// machine) is present and has reported; returns its report.
    pub fn wait_for_node(&self, node: &str, timeout: Duration) -> NodeReport {
        let etcd = self.connect();
        let start = Instant::now();
        loop {
            // A read that fails (etcd busy) is asked again; the timeout ends it.
            if let Ok(nodes) = self.block_on(osctl_fleet::admin::nodes(&etcd))
                && let Some(n) = nodes.into_iter().find(|n| n.name == node)
                && n.present
                && let Some(report) = n.report
            {
                return report;
            }
            assert!(
                start.elapsed() < timeout,
                "node {node} did not join the fleet within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The rollout's status as `fleet status --format json` shows it.
    pub fn status(&self, osctl: &super::Osctl, rollout: &str) -> Value {
        let out = run_ok(&mut self.fleet(osctl, &["status", rollout, "--format", "json"]));
        let all: Value = serde_json::from_str(&out).unwrap();
        all[0].clone()
    }
}

/// A controller process; killed and reaped when dropped, so a failing test
/// leaves none behind (a controller outlives an unreachable etcd on
/// purpose: it campaigns again until etcd answers).
pub struct ControllerProcess(Child);

impl ControllerProcess {
    /// Kills it (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(drop)
    }

    /// Its exit status if it exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        // Already gone is fine: killed by the test or exited by itself.
        if self.0.kill().is_ok() {
            // Reaping a killed child cannot fail in a way worth a panic in drop.
            let _ = self.0.wait();
        }
    }
}

/// One simulated machine: a scratch sysroot booted on v1, its agent.
pub struct SimNode {
    pub name: String,
    pub m: Machine,
    labels: String,
    agent: Option<Child>,
    pub reboots: u32,
    boots: u32,
    /// The digest booted at each boot after the first, in order.
    pub booted_log: Vec<String>,
    /// Powered off for good: [`drive`] plays nothing for it any more.
    pub powered_off: bool,
}

impl SimNode {
    /// A machine booted on `image` (marked good), boot counting with one
    /// try per new deployment (a bad image falls back after one boot).
    pub fn new(name: &str, image: &str, labels: &str) -> SimNode {
        let mut m = Machine::new();
        std::fs::create_dir_all(m.osctl.sysroot().join("etc/osctl")).unwrap();
        std::fs::write(
            m.osctl.sysroot().join("etc/osctl/config.toml"),
            "[boot]\ntries = 1\n",
        )
        .unwrap();
        m.boot(image);
        let node = SimNode {
            name: name.to_string(),
            m,
            labels: labels.to_string(),
            agent: None,
            reboots: 0,
            boots: 0,
            booted_log: Vec::new(),
            powered_off: false,
        };
        node.new_boot_id();
        node
    }

    fn dir(&self) -> PathBuf {
        self.m.osctl.sysroot().to_path_buf()
    }

    fn new_boot_id(&self) -> String {
        let id = format!("{}-boot-{}", self.name, self.boots);
        std::fs::write(self.dir().join(BOOT_ID_FILE), format!("{id}\n")).unwrap();
        id
    }

    /// `osctl` on this machine as booted now, with its boot id and a
    /// reboot command that leaves the marker.
    fn cmd(&self) -> Command {
        let mut c = booted_cmd(&self.m.osctl, self.m.booted.as_deref());
        c.env("OSCTL_BOOT_ID_FILE", self.dir().join(BOOT_ID_FILE));
        c.env(
            "OSCTL_REBOOT_COMMAND",
            format!("touch {}", self.dir().join(REBOOT_MARKER).display()),
        );
        c
    }

    pub fn start_agent(&mut self, env: &FleetEnv) {
        self.spawn_agent(env, None);
    }

    /// Starts the agent with fail point `point` armed: it aborts there
    /// (SIGABRT, no cleanup), as `kill -9` at that moment would leave it.
    pub fn start_agent_armed(&mut self, env: &FleetEnv, point: &str) {
        self.spawn_agent(env, Some(point));
    }

    fn spawn_agent(&mut self, env: &FleetEnv, fail_point: Option<&str>) {
        assert!(self.agent.is_none(), "{}: agent already running", self.name);
        env.agents.lock().unwrap().insert(self.name.clone());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("agent.log"))
            .unwrap();
        let mut c = self.cmd();
        c.args([
            "fleet",
            "agent",
            "--node",
            &self.name,
            "--labels",
            &self.labels,
            "--poll",
            "200ms",
        ])
        .env("OSCTL_ETCD", env.endpoints())
        .env("OSCTL_FLEET_PREFIX", &env.prefix)
        .env("OSCTL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(point) = fail_point {
            c.env(osctl_deploy::failpoint::ENV, point);
        }
        self.agent = Some(c.spawn().expect("starting the agent"));
    }

    /// Kills the agent as a power cut or `kill -9` would.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The machine goes down after its reboot command and never comes
    /// back: the agent is gone, [`drive`] leaves it alone.
    pub fn power_off(&mut self) {
        self.kill_agent();
        self.powered_off = true;
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("agent.log")).unwrap_or_default()
    }

    /// The agent exited by itself (after its reboot command, or an error).
    pub fn agent_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.agent.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn reboot_requested(&self) -> bool {
        self.dir().join(REBOOT_MARKER).exists()
    }

    /// What a failure message needs to say about this machine: the
    /// deployment it boots as the test sees it, the images it booted, its
    /// boot entries and what `status` says.
    pub fn describe(&self) -> String {
        let entries = std::fs::read_dir(self.dir().join("boot/loader/entries"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let status = self
            .cmd()
            .args(["status", "--format", "human"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| format!("status did not run: {e}"));
        format!(
            "{}: booted (as the test plays it) {:?}, booted before {:?}, {} reboots; entries {entries:?}\n{status}",
            self.name, self.m.booted, self.booted_log, self.reboots
        )
    }

    /// The booted deployment's manifest digest.
    pub fn booted_digest(&self) -> String {
        let st = self.m.status();
        st["status"]["booted"]["image"]["imageDigest"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no booted digest: {st}", self.name))
            .to_string()
    }

    /// Plays the reboot the agent asked for (see the module doc); `bad`
    /// are the digests of images whose health check fails. Returns the
    /// digest booted in the end.
    pub fn reboot(&mut self, env: &FleetEnv, bad: &BTreeSet<String>) -> String {
        self.kill_agent();
        loop {
            std::fs::remove_file(self.dir().join(REBOOT_MARKER)).ok();
            self.reboots += 1;
            // The shutdown unit.
            run_ok(self.cmd().arg("finalize"));
            // systemd-boot.
            let next = next_boot(&self.m.osctl).expect("something boots");
            if super::assess::entry_of(&self.m.osctl, &next).contains('+') {
                use_tries(&self.m.osctl, &next, false);
            }
            self.m.booted = Some(next);
            self.boots += 1;
            self.new_boot_id();
            self.booted_log.push(self.booted_digest());
            // The image's health checks.
            let check = self.dir().join(IMAGE_CHECKS).join(BAD_CHECK);
            if bad.contains(&self.booted_digest()) {
                write_check(
                    &self.m.osctl,
                    IMAGE_CHECKS,
                    BAD_CHECK,
                    "#!/bin/sh\necho 'the test made this image bad' >&2\nexit 1\n",
                );
            } else if check.exists() {
                std::fs::remove_file(&check).unwrap();
            }
            let out = self.cmd().args(["health", "check"]).output().unwrap();
            if self.reboot_requested() {
                // Unhealthy with tries left: reboots again.
                continue;
            }
            if out.status.success() {
                run_ok(self.cmd().args(["health", "bless"]));
            }
            break;
        }
        self.start_agent(env);
        self.booted_digest()
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// Rollout `name` of `image` to the nodes labelled `pool=web`, a one-second
/// health gate, `extra` (more spec lines, indented by two) appended.
pub fn rollout_yaml(name: &str, image: &str, max_unavailable: &str, extra: &str) -> String {
    format!(
        "apiVersion: osctl.dev/v1alpha1
kind: Rollout
metadata:
  name: {name}
spec:
  image: {image}
  selector:
    matchLabels: {{pool: web}}
  maxUnavailable: {max_unavailable}
  healthGate:
    minHealthySeconds: 1
{extra}"
    )
}

/// `HH:MM` in UTC, `minutes` from now.
pub fn utc_hhmm(minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute_of_day = ((now / 60 + minutes) % (24 * 60) + 24 * 60) % (24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// A rollout spec's `windows:` (for [`rollout_yaml`]'s `extra`): every day,
/// from `start` to `end` minutes from now, UTC.
pub fn window_from(start: i64, end: i64) -> String {
    format!(
        "  windows:\n    - days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]\n      start: \"{}\"\n      end: \"{}\"\n      timeZone: UTC\n",
        utc_hhmm(start),
        utc_hhmm(end)
    )
}

/// A rollout status's phase (`fleet status --format json`).
pub fn phase(st: &Value) -> &str {
    st["status"]["phase"].as_str().unwrap_or("")
}

/// How many nodes a rollout status lists in `state`.
pub fn count(st: &Value, state: &str) -> usize {
    st["status"]["nodes"]
        .as_object()
        .map_or(0, |m| m.values().filter(|v| v["state"] == state).count())
}

/// Watches etcd throughout a test: the most slot holders seen at once in
/// a pool, and the first moment a limit was passed.
pub struct Checker {
    stop: Arc<AtomicBool>,
    violation: Arc<Mutex<Option<String>>>,
    most: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checker {
    /// Polls `pool`'s slot holders every 20 ms; more than `limit` at once
    /// is a violation.
    pub fn start(env: &FleetEnv, pool: &str, limit: usize) -> Checker {
        let endpoints = env.etcd.endpoints();
        let prefix = env.prefix.clone();
        let pool = pool.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let violation = Arc::new(Mutex::new(None));
        let most = Arc::new(Mutex::new(0));
        let (s, v, m) = (stop.clone(), violation.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let etcd = Etcd::connect(&endpoints, &prefix).await.unwrap();
                let slots = osctl_fleet::etcd::Slots::new(&etcd);
                while !s.load(Ordering::Relaxed) {
                    // A read that fails (a member down) proves nothing
                    // either way; the next one counts.
                    if let Ok(holders) = slots.holders(&pool).await {
                        let mut most = m.lock().unwrap();
                        *most = (*most).max(holders.len());
                        if holders.len() > limit {
                            let names: Vec<_> = holders.iter().map(|h| h.name.clone()).collect();
                            v.lock().unwrap().get_or_insert(format!(
                                "{} slot holders in {pool} at once (limit {limit}): {names:?}",
                                holders.len()
                            ));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        });
        Checker {
            stop,
            violation,
            most,
            thread: Some(thread),
        }
    }

    /// Stops, and fails the test if a limit was ever passed; returns the
    /// most holders seen at once.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        if let Some(v) = self.violation.lock().unwrap().take() {
            panic!("checker: {v}");
        }
        *self.most.lock().unwrap()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether `node` holds a slot in `pool`, as its agent asks: by consensus
/// (`Etcd::exists_by_consensus`), which a member cut off from the majority
/// cannot answer — not even once, as a linearizable read of etcd 3.4.23
/// could.
pub fn holds_slot(
    env: &FleetEnv,
    etcd: &Etcd,
    pool: &str,
    node: &str,
) -> Result<bool, osctl_fleet::etcd::EtcdError> {
    env.block_on(
        etcd.exists_by_consensus(&format!("{}{pool}/{node}", osctl_fleet::etcd::SLOTS_ROOT)),
    )
}

/// Drives a fleet until `done(status)` holds or `timeout` passes: plays
/// every reboot an agent asks for (after checking its slot), restarts
/// nothing else, leaves powered-off nodes alone. While etcd cannot confirm
/// a slot (no majority), the machine waits: its reboot is played only once
/// the majority confirms it holds one. Returns the last status.
pub fn drive(
    env: &FleetEnv,
    osctl: &super::Osctl,
    nodes: &mut [SimNode],
    rollout: &str,
    bad: &BTreeSet<String>,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let etcd = env.connect();
    let start = Instant::now();
    loop {
        for node in nodes.iter_mut() {
            if node.powered_off {
                continue;
            }
            if node.reboot_requested() {
                match holds_slot(env, &etcd, rollout, &node.name) {
                    Ok(held) => assert!(held, "{} rebooted without a reboot slot", node.name),
                    // Proves nothing either way: ask again next round.
                    Err(_) => continue,
                }
                node.reboot(env, bad);
            } else if let Some(exit) = node.agent_exited() {
                panic!(
                    "{}: agent exited ({exit}) without asking for a reboot: {}\n{}",
                    node.name,
                    std::fs::read_to_string(node.dir().join("agent.log")).unwrap_or_default(),
                    node.describe()
                );
            }
        }
        let status = env.try_status(osctl, rollout);
        if let Some(status) = &status
            && done(status)
        {
            return status.clone();
        }
        assert!(
            start.elapsed() < timeout,
            "rollout {rollout} did not get there in {timeout:?}: {status:#?}\n{}",
            logs(osctl, nodes)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many lines of each log a failed [`drive`] shows.
const LOG_TAIL: usize = 25;

/// The tails of the controllers' logs (in the admin's sysroot) and of
/// every agent's, for a test that got stuck.
fn logs(osctl: &super::Osctl, nodes: &[SimNode]) -> String {
    let tail = |path: &std::path::Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    };
    let mut out = String::new();
    let mut controllers: Vec<PathBuf> = std::fs::read_dir(osctl.sysroot())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    controllers.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("controller-"))
    });
    controllers.sort();
    for p in controllers {
        out.push_str(&format!("--- {}\n{}\n", p.display(), tail(&p)));
    }
    for n in nodes {
        out.push_str(&format!(
            "--- agent {}\n{}\n",
            n.name,
            tail(&n.dir().join("agent.log"))
        ));
    }
    out
}
