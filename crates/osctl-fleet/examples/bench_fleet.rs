//! The fleet benchmark (hack/bench-fleet runs it): N simulated machines,
//! each with the real agent ([`Agent`]) over an in-memory [`Host`], all in
//! this process, against one real etcd member and the real controller
//! process (`osctl fleet controller`, the binary given). A reboot takes
//! `--reboot` seconds. Reports completion time against the ideal
//! (N / maxUnavailable batches of one reboot each), etcd requests and
//! writes per node (from etcd's own metrics), the controller's CPU time and
//! peak RSS, and where a slot's time goes: the bench watches the slots and
//! reports and the simulated machines note their reboot, so each hand-over
//! is split into the agent's reaction (slot granted → reboot asked), the
//! agent's restart (machine back → "updated" reported), the controller's
//! reaction ("updated" → slot released) and the re-grant (slot released →
//! the next node's slot granted). The controller's own per-reconcile cost
//! comes from its debug log (`reconciled`, with `read_us` and `total_us`).
//!
//! Usage: bench_fleet OSCTL [--nodes 1000] [--max-unavailable 50] [--reboot 1] [--agent-poll 5]
//!
//! With `OSCTL_BENCH_TIMELINE=FILE`, every node's times are written there
//! as CSV (milliseconds after the rollout was applied).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use osctl_deploy::status::Assessment;
use osctl_fleet::admin;
use osctl_fleet::agent::machine::{BootHealth, Deployed, MachineView};
use osctl_fleet::agent::state::AgentState;
use osctl_fleet::agent::{Agent, AgentError, AgentOptions, Host};
use osctl_fleet::etcd::{Etcd, PrefixWatch, SLOTS_ROOT, WatchEvent};
use osctl_fleet::keys::{self, NodeKey};
use osctl_fleet::model::{NodePhase, NodeReport, RolloutPhase};
use osctl_fleet::spec::Rollout;
use osctl_image::ImageRef;
use osctl_testutil::etcd::EtcdCluster;
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions, write_layout};

const PREFIX: &str = "/osctl-bench/fleet/";
const OLD: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
/// The rollout's name, which is also its slot pool.
const ROLLOUT: &str = "bench";

/// When each step of one node's hand-over was seen.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    assigned: Option<Instant>,
    staged: Option<Instant>,
    granted: Option<Instant>,
    reboot_asked: Option<Instant>,
    back: Option<Instant>,
    updated: Option<Instant>,
    released: Option<Instant>,
}

/// Every node's [`Times`], by node name.
type Timeline = Arc<Mutex<BTreeMap<String, Times>>>;

/// One simulated machine (a handle: clones share it).
#[derive(Clone)]
struct SimMachine {
    name: String,
    inner: Arc<Mutex<SimState>>,
    timeline: Timeline,
}

struct SimState {
    booted: String,
    staged: Option<String>,
    boot: u32,
    good_since: Timestamp,
    state: Option<AgentState>,
    reboot_requested: bool,
}

impl SimMachine {
    fn new(name: String, timeline: Timeline) -> SimMachine {
        SimMachine {
            name,
            timeline,
            inner: Arc::new(Mutex::new(SimState {
                booted: OLD.into(),
                staged: None,
                boot: 0,
                good_since: Timestamp::now(),
                state: None,
                reboot_requested: false,
            })),
        }
    }

    /// The reboot itself: the staged image boots, healthy.
    fn come_back(&self) {
        let mut s = self.inner.lock().unwrap();
        if let Some(staged) = s.staged.take() {
            s.booted = staged;
        }
        s.boot += 1;
        s.good_since = Timestamp::now();
        s.reboot_requested = false;
        drop(s);
        self.note(|t| t.back = Some(Instant::now()));
    }

    fn note(&self, f: impl FnOnce(&mut Times)) {
        f(self
            .timeline
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default());
    }
}

fn deployed(digest: &str) -> Deployed {
    Deployed {
        image: format!("bench@{digest}"),
        digest: digest.to_string(),
        deployment: digest.trim_start_matches("sha256:").to_string(),
    }
}

impl Host for SimMachine {
    fn view(&self) -> Result<MachineView, AgentError> {
        let s = self.inner.lock().unwrap();
        Ok(MachineView {
            booted: Some(deployed(&s.booted)),
            staged: s.staged.as_deref().map(deployed),
            health: Some(BootHealth {
                state: Assessment::Good,
                reason: None,
                checked: Some(s.good_since.to_string()),
            }),
        })
    }

    fn failed_digests(&self) -> Result<Vec<String>, AgentError> {
        Ok(Vec::new())
    }

    async fn stage(&self, image: &ImageRef) -> Result<String, AgentError> {
        let text = image.to_string();
        let digest = text
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or(text);
        self.inner.lock().unwrap().staged = Some(digest.clone());
        Ok(digest)
    }

    fn cancel_next(&self) -> Result<Option<String>, AgentError> {
        Ok(self.inner.lock().unwrap().staged.take())
    }

    fn reboot(&self) -> Result<(), AgentError> {
        self.inner.lock().unwrap().reboot_requested = true;
        self.note(|t| t.reboot_asked = Some(Instant::now()));
        Ok(())
    }

    fn boot_id(&self) -> Result<String, AgentError> {
        Ok(format!("boot-{}", self.inner.lock().unwrap().boot))
    }

    fn load_state(&self, _node: &str) -> Result<Option<AgentState>, AgentError> {
        Ok(self.inner.lock().unwrap().state.clone())
    }

    fn save_state(&self, state: &AgentState) -> Result<(), AgentError> {
        self.inner.lock().unwrap().state = Some(state.clone());
        Ok(())
    }
}

struct Args {
    osctl: String,
    nodes: usize,
    max_unavailable: usize,
    reboot: Duration,
    agent_poll: Duration,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let osctl = it
        .next()
        .context("usage: bench_fleet OSCTL [--nodes N] [--max-unavailable M] [--reboot SECS]")?;
    let mut a = Args {
        osctl,
        nodes: 1000,
        max_unavailable: 50,
        reboot: Duration::from_secs(1),
        agent_poll: Duration::from_secs(5),
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = value.parse()?,
            "--max-unavailable" => a.max_unavailable = value.parse()?,
            "--reboot" => a.reboot = Duration::from_secs_f64(value.parse()?),
            "--agent-poll" => a.agent_poll = Duration::from_secs_f64(value.parse()?),
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(a)
}

/// Sums the samples of `name` in etcd's metrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// etcd's Prometheus metrics, over plain HTTP/1.0 on its client port.
fn etcd_metrics(endpoint: &str) -> Result<String> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("etcd's metrics answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("etcd /metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// (user + system CPU seconds, peak RSS in KiB) of a process.
fn usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    Ok((ticks / hz, hwm))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let cluster = EtcdCluster::start(1)?;
    let endpoints = cluster.endpoints();
    let registry = Registry::start(RegistryOptions::default())?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec::new(vec![Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/motd", "bench v2\n"),
    ])]);
    write_layout(layout.path(), "v2", &spec)?;
    registry.push_oci_layout(layout.path(), "v2", "os:v2")?;
    let image = registry.image_ref("os:v2");
    let policy = layout.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )?;

    let etcd = Etcd::connect(&endpoints, PREFIX).await?;
    let timeline = Timeline::default();
    let machines: Vec<SimMachine> = (0..a.nodes)
        .map(|i| SimMachine::new(node_name(i), timeline.clone()))
        .collect();
    let labels = BTreeMap::from([("pool".to_string(), "bench".to_string())]);
    for (i, machine) in machines.iter().enumerate() {
        let (etcd, machine, labels) = (etcd.clone(), machine.clone(), labels.clone());
        let (reboot, poll) = (a.reboot, a.agent_poll);
        tokio::spawn(async move {
            loop {
                let options = AgentOptions {
                    node: node_name(i),
                    labels: labels.clone(),
                    poll,
                };
                let agent = match Agent::new(etcd.clone(), options, machine.clone()) {
                    Ok(agent) => agent,
                    Err(e) => panic!("agent n{i:04}: {e}"),
                };
                if let Err(e) = agent.run().await {
                    panic!("agent n{i:04}: {e}");
                }
                // It asked for its reboot: the machine is down for a while.
                tokio::time::sleep(reboot).await;
                machine.come_back();
            }
        });
    }
    // Every node registered and reported before the rollout starts.
    let start = Instant::now();
    loop {
        let nodes = admin::nodes(&etcd).await?;
        if nodes.iter().filter(|n| n.report.is_some()).count() == a.nodes {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {} nodes reported", nodes.len(), a.nodes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} agents registered in {:.1} s",
        a.nodes,
        start.elapsed().as_secs_f64()
    );

    let mut controller = std::process::Command::new(&a.osctl)
        .args(["fleet", "controller", "--tick", "200ms", "--id", "bench"])
        .env("OSCTL_ETCD", endpoints.join(","))
        .env("OSCTL_FLEET_PREFIX", PREFIX)
        .env("CONTAINERS_POLICY_JSON", &policy)
        .env("OSCTL_LOG", "warn,osctl_fleet::controller=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the controller")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reconciles = read_reconciles(
        controller.stderr.take().context("controller stderr")?,
        ready_tx,
    );
    // A rollout is applied to a controller that runs already: wait until it
    // leads and has listed the fleet (its first reconcile), so the rollout's
    // time does not include the controller's start.
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60)))
        .await?
        .context("the controller did not lead and reconcile within 60 s")?;
    let watch = PrefixWatch::start(&etcd, "", None).await?;
    tokio::spawn(follow(watch, timeline.clone()));
    let before = etcd_metrics(&endpoints[0])?;
    let rollout = Rollout::parse(&format!(
        "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {ROLLOUT}\nspec:\n  image: {image}\n  selector:\n    matchLabels: {{pool: bench}}\n  maxUnavailable: {}\n  healthGate:\n    minHealthySeconds: 0\n",
        a.max_unavailable
    ))?;
    let applied_at = Instant::now();
    admin::apply(&etcd, &rollout).await?;
    loop {
        let views = admin::rollouts(&etcd, Some(ROLLOUT)).await?;
        if views[0]
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RolloutPhase::Completed)
        {
            break;
        }
        if applied_at.elapsed() > Duration::from_secs(3600) {
            bail!("the rollout did not complete in an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = applied_at.elapsed().as_secs_f64();
    let after = etcd_metrics(&endpoints[0])?;
    let (cpu, rss) = usage(controller.id())?;
    controller.kill()?;
    controller.wait()?;

    let n = a.nodes as f64;
    let batches = (a.nodes as f64 / a.max_unavailable as f64).ceil();
    let ideal = batches * a.reboot.as_secs_f64();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let writes = delta("etcd_mvcc_put_total") + delta("etcd_mvcc_delete_total");
    let requests = delta("grpc_server_handled_total");
    println!("nodes                      {}", a.nodes);
    println!("maxUnavailable             {}", a.max_unavailable);
    println!("simulated reboot           {:.1} s", a.reboot.as_secs_f64());
    println!(
        "agent poll (fallback)      {:.1} s",
        a.agent_poll.as_secs_f64()
    );
    println!("completion                 {took:.1} s");
    println!("ideal ({batches} batches)        {ideal:.1} s");
    println!("ratio to ideal             {:.2}x", took / ideal);
    println!("etcd requests per node     {:.1}", requests / n);
    println!("etcd writes per node       {:.1}", writes / n);
    println!("controller CPU (user+sys)  {cpu:.1} s");
    println!("controller peak RSS        {:.1} MiB", rss as f64 / 1024.0);
    // The controller's stderr ends with its kill, and so does the reader.
    let reconciles = reconciles
        .join()
        .map_err(|_| anyhow::anyhow!("the controller log reader panicked"))?;
    let count = reconciles.len().max(1) as f64;
    let read: f64 = reconciles.iter().map(|r| r.read as f64).sum();
    let plan: f64 = reconciles
        .iter()
        .filter_map(|r| r.plan)
        .map(|p| p as f64)
        .sum();
    let total: f64 = reconciles.iter().map(|r| r.total as f64).sum();
    println!("controller reconciles      {}", reconciles.len());
    println!(
        "  mean read / plan / whole {:.1} / {:.1} / {:.1} ms (all: {:.1} s)",
        read / count / 1000.0,
        plan / count / 1000.0,
        total / count / 1000.0,
        total / 1e6
    );
    let times: Vec<Times> = timeline.lock().unwrap().values().copied().collect();
    if let Some(path) = std::env::var_os("OSCTL_BENCH_TIMELINE") {
        write_timeline(&path, applied_at, &timeline.lock().unwrap())?;
    }
    let span = |from: fn(&Times) -> Option<Instant>, to: fn(&Times) -> Option<Instant>| {
        let spans: Vec<f64> = times
            .iter()
            .filter_map(|t| Some(to(t)?.checked_duration_since(from(t)?)?.as_secs_f64()))
            .collect();
        mean_p90(spans)
    };
    // The rollout's start: how long until the first batch could reboot.
    let nth = |at: fn(&Times) -> Option<Instant>, n: usize| {
        let mut all: Vec<Instant> = times.iter().filter_map(at).collect();
        all.sort();
        all.get(n.saturating_sub(1)).map_or("-".to_string(), |t| {
            format!("{:.0}", t.duration_since(applied_at).as_secs_f64() * 1000.0)
        })
    };
    let batch = a.max_unavailable;
    println!("start (ms after apply):");
    println!(
        "  first / last assignment  {} / {}",
        nth(|t| t.assigned, 1),
        nth(|t| t.assigned, a.nodes)
    );
    println!(
        "  first / {batch}th staged     {} / {}",
        nth(|t| t.staged, 1),
        nth(|t| t.staged, batch)
    );
    println!(
        "  first / {batch}th grant      {} / {}",
        nth(|t| t.granted, 1),
        nth(|t| t.granted, batch)
    );
    println!("per node (mean / p90, ms):");
    println!(
        "  slot granted → reboot    {}",
        span(|t| t.granted, |t| t.reboot_asked)
    );
    println!(
        "  machine back → updated   {}",
        span(|t| t.back, |t| t.updated)
    );
    println!(
        "  updated → slot released  {}",
        span(|t| t.updated, |t| t.released)
    );
    println!(
        "  slot held (whole)        {}",
        span(|t| t.granted, |t| t.released)
    );
    // Each release lets the next node in: the time from a release to the
    // first grant after it, while nodes were still waiting.
    let mut grants: Vec<Instant> = times.iter().filter_map(|t| t.granted).collect();
    let mut releases: Vec<Instant> = times.iter().filter_map(|t| t.released).collect();
    grants.sort();
    releases.sort();
    let last_grant = grants.last().copied();
    let regrant: Vec<f64> = releases
        .iter()
        .filter(|r| last_grant.is_some_and(|l| **r < l))
        .filter_map(|r| {
            let next = grants.iter().find(|g| *g >= r)?;
            Some(next.duration_since(*r).as_secs_f64())
        })
        .collect();
    println!("  slot released → regrant  {}", mean_p90(regrant));
    let held: f64 = times
        .iter()
        .filter_map(|t| {
            Some(
                t.released?
                    .checked_duration_since(t.granted?)?
                    .as_secs_f64(),
            )
        })
        .sum();
    println!(
        "mean slots held            {:.1} of {}",
        held / took,
        a.max_unavailable
    );
    Ok(())
}

/// Writes every node's times (ms after the rollout was applied) as CSV,
/// for a closer look than the means give.
fn write_timeline(
    path: &std::ffi::OsStr,
    start: Instant,
    timeline: &BTreeMap<String, Times>,
) -> Result<()> {
    let ms = |t: Option<Instant>| {
        t.map(|t| format!("{:.0}", t.duration_since(start).as_secs_f64() * 1000.0))
            .unwrap_or_default()
    };
    let mut out = String::from("node,granted,reboot_asked,back,updated,released\n");
    for (node, t) in timeline {
        out.push_str(&format!(
            "{node},{},{},{},{},{}\n",
            ms(t.granted),
            ms(t.reboot_asked),
            ms(t.back),
            ms(t.updated),
            ms(t.released)
        ));
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.to_string_lossy()))
}

fn node_name(i: usize) -> String {
    format!("n{i:04}")
}

/// "mean / p90" of `spans` (seconds), in milliseconds.
fn mean_p90(mut spans: Vec<f64>) -> String {
    if spans.is_empty() {
        return "-".into();
    }
    spans.sort_by(f64::total_cmp);
    let mean = spans.iter().sum::<f64>() / spans.len() as f64;
    let p90 = spans[(spans.len() * 9 / 10).min(spans.len() - 1)];
    format!("{:.0} / {:.0}", mean * 1000.0, p90 * 1000.0)
}

/// Notes when each node's slot is granted and released and when it reports
/// "updated", as the watch delivers them.
async fn follow(mut watch: PrefixWatch, timeline: Timeline) {
    let slots = format!("{SLOTS_ROOT}{ROLLOUT}/");
    loop {
        let event = match watch.next().await {
            Ok(e) => e,
            Err(e) => panic!("bench watch: {e}"),
        };
        let now = Instant::now();
        let mut timeline = timeline.lock().unwrap();
        match event {
            WatchEvent::Put { kv, prev } => {
                if let Some(node) = kv.key.strip_prefix(&slots) {
                    if prev.is_none() {
                        timeline.entry(node.to_string()).or_default().granted = Some(now);
                    }
                } else if let Some((node, key)) = keys::parse_node_key(&kv.key) {
                    let t = timeline.entry(node.to_string()).or_default();
                    match key {
                        NodeKey::Assignment => {
                            t.assigned.get_or_insert(now);
                        }
                        NodeKey::Report => {
                            match NodeReport::from_json(&kv.value).map(|r| r.phase) {
                                Ok(NodePhase::Updated) => {
                                    t.updated.get_or_insert(now);
                                }
                                Ok(NodePhase::Staged | NodePhase::WaitingSlot) => {
                                    t.staged.get_or_insert(now);
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            }
            WatchEvent::Delete { key, .. } => {
                if let Some(node) = key.strip_prefix(&slots) {
                    timeline.entry(node.to_string()).or_default().released = Some(now);
                }
            }
            WatchEvent::Resync(_) => panic!("bench watch: history compacted mid-run"),
        }
    }
}

/// One reconcile's times, in microseconds, from the controller's log.
struct Reconciled {
    read: u64,
    /// Logged since the controller keeps its view (not before).
    plan: Option<u64>,
    total: u64,
}

/// Reads the controller's log (its stderr) on a thread of its own and
/// returns, when the log ends, each reconcile's times; other lines are
/// passed through to our stderr.
fn read_reconciles(
    stderr: std::process::ChildStderr,
    first: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Reconciled>> {
    let mut copy = std::env::var_os("OSCTL_BENCH_CONTROLLER_LOG")
        .map(|path| std::fs::File::create(&path).expect("OSCTL_BENCH_CONTROLLER_LOG"));
    std::thread::spawn(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = &mut copy {
                use std::io::Write;
                writeln!(f, "{line}").expect("OSCTL_BENCH_CONTROLLER_LOG");
            }
            let field = |name: &str| -> Option<u64> {
                let rest = line.split_once(&format!(" {name}="))?.1;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            match (
                line.contains("reconciled"),
                field("read_us"),
                field("total_us"),
            ) {
                (true, Some(read), Some(total)) => {
                    if out.is_empty() {
                        // Nobody may be waiting any more (a failed run).
                        first.send(()).ok();
                    }
                    out.push(Reconciled {
                        read,
                        plan: field("plan_us"),
                        total,
                    })
                }
                _ => eprintln!("controller: {line}"),
            }
        }
        out
    })
}
