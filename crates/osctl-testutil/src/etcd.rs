//! A real etcd cluster: `/usr/bin/etcd` members on loopback (Debian's
//! `etcd-server`, 3.4.23 here).
//!
//! # The model
//!
//! The fleet code's failure handling is about what real members do when one
//! dies, stalls or loses quorum, so tests run real members instead of a fake:
//! [`EtcdCluster::start`] starts N `etcd` processes on `127.0.0.1`, each with
//! its own client and peer port and data directory in one temporary
//! directory, joined through `--initial-cluster`. Heartbeat and election
//! timeouts are a tenth of etcd's defaults so a killed leader is replaced in
//! well under a second, which keeps failover tests short.
//!
//! Faults are process-level, the way they happen to a machine: [`kill`]
//! (SIGKILL, the data directory stays), [`start_member`] (the same member
//! comes back with its data), and [`pause`]/[`resume`] (SIGSTOP/SIGCONT: a
//! member that still holds its sockets but answers nothing, which is what a
//! partitioned minority looks like from a client).
//!
//! Every member logs to `member-N.log` in the cluster directory; when a test
//! panics while the cluster is alive, [`Drop`] prints the tail of every log.
//! Dropping the value kills all members. A missing `etcd` binary is an error
//! that says how to install it: a fleet test that silently skips would pass
//! on a machine that tests nothing.
//!
//! [`kill`]: EtcdCluster::kill
//! [`start_member`]: EtcdCluster::start_member
//! [`pause`]: EtcdCluster::pause
//! [`resume`]: EtcdCluster::resume

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The etcd server binary (Debian `etcd-server`).
const ETCD: &str = "/usr/bin/etcd";
/// etcd's command-line client (Debian `etcd-client`), for health and leader.
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// Raft heartbeat in ms (etcd default 100): small, so failover is fast.
const HEARTBEAT_MS: u32 = 25;
/// Raft election timeout in ms (etcd default 1000); etcd wants ≥ 5 heartbeats.
const ELECTION_MS: u32 = 250;
/// How long a started (or restarted) cluster may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// Attempts at starting a cluster when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// Lines of each member's log printed when a test panics.
const LOG_TAIL_LINES: usize = 40;
/// etcdctl's per-command timeout: a paused member must not hang a test.
const ETCDCTL_TIMEOUT: &str = "2s";

/// One member: its name, ports, data dir, log and process (if running).
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A running etcd cluster on loopback; see the module docs.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

impl EtcdCluster {
    /// Starts `members` etcd members and waits until every one is healthy.
    pub fn start(members: usize) -> Result<EtcdCluster> {
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        if !Path::new(ETCD).exists() {
            bail!(
                "{ETCD} is missing: the fleet tests need a real etcd (run hack/install-deps, \
                 which installs Debian's etcd-server)"
            );
        }
        if !Path::new(ETCDCTL).exists() {
            bail!("{ETCDCTL} is missing: run hack/install-deps (Debian's etcd-client)");
        }
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let cluster = Self::spawn(members)?;
            match cluster.wait_healthy() {
                Ok(()) => return Ok(cluster),
                Err(e) if cluster.port_was_taken() => last_err = Some(e),
                Err(e) => return Err(e.context(cluster.log_tails())),
            }
        }
        Err(last_err
            .expect("at least one attempt ran")
            .context(format!("{START_ATTEMPTS} attempts found ports taken")))
    }

    fn spawn(members: usize) -> Result<EtcdCluster> {
        let dir = crate::tempdir();
        let ports = free_ports(2 * members)?;
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_path: dir.path().join(format!("member-{i}.log")),
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per cluster so members of two tests can never join each other.
        let token = format!(
            "osctl-test-{}",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
            token,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn_member(i)?;
        }
        Ok(cluster)
    }

    fn spawn_member(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .with_context(|| format!("opening {}", m.log_path.display()))?;
        let log2 = log
            .try_clone()
            .with_context(|| format!("duplicating {}", m.log_path.display()))?;
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("spawning {ETCD} for member {}", m.name))?;
        let m = &mut self.members[i];
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Client URLs of all members (`http://127.0.0.1:PORT`), killed ones included.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The log file of member `i`.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// SIGKILLs member `i` (its data directory stays for [`Self::start_member`]).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = self.member_mut(i)?;
        let mut child = m
            .child
            .take()
            .with_context(|| format!("member {i} is not running"))?;
        child
            .kill()
            .with_context(|| format!("killing etcd member {i}"))?;
        child
            .wait()
            .with_context(|| format!("reaping etcd member {i}"))?;
        m.paused = false;
        Ok(())
    }

    /// Restarts killed member `i` with its data directory and waits until the
    /// whole cluster is healthy again.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        if self.member_mut(i)?.child.is_some() {
            bail!("member {i} is already running");
        }
        self.spawn_member(i)?;
        self.wait_healthy().map_err(|e| e.context(self.log_tails()))
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, rustix::process::Signal::STOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONTs a paused member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, rustix::process::Signal::CONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&mut self, i: usize, sig: rustix::process::Signal) -> Result<()> {
        let m = self.member_mut(i)?;
        let child = m
            .child
            .as_ref()
            .with_context(|| format!("member {i} is not running"))?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32)
            .with_context(|| format!("member {i} has pid 0"))?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("sending {sig:?} to etcd member {i}"))
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .with_context(|| format!("no member {i} in a cluster of {n}"))
    }

    /// Index of the current raft leader, asked of the running, unpaused
    /// members with `etcdctl endpoint status`.
    pub fn leader(&self) -> Result<usize> {
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .collect();
        if live.is_empty() {
            bail!("no member is running");
        }
        let endpoints = self.endpoints();
        let live_eps: Vec<&str> = live.iter().map(|&i| endpoints[i].as_str()).collect();
        let out = crate::run(
            Command::new(ETCDCTL)
                .arg(format!("--endpoints={}", live_eps.join(",")))
                .arg(format!("--command-timeout={ETCDCTL_TIMEOUT}"))
                .args(["endpoint", "status", "-w", "json"]),
        )?;
        let statuses: Value = serde_json::from_slice(&out.stdout)
            .context("parsing `etcdctl endpoint status -w json`")?;
        let statuses = statuses
            .as_array()
            .context("`etcdctl endpoint status -w json` is not a list")?;
        for s in statuses {
            let member_id = &s["Status"]["header"]["member_id"];
            let leader = &s["Status"]["leader"];
            if member_id.is_u64() && member_id == leader {
                let ep = s["Endpoint"].as_str().context("status without Endpoint")?;
                return endpoints
                    .iter()
                    .position(|e| e == ep)
                    .with_context(|| format!("leader endpoint {ep} is not a member"));
            }
        }
        bail!("no running member is the leader: {statuses:?}")
    }

    /// Waits until every running, unpaused member answers `endpoint health`
    /// (a quorum read through it).
    pub fn wait_healthy(&self) -> Result<()> {
        let endpoints = self.endpoints();
        let live: Vec<&str> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .map(|i| endpoints[i].as_str())
            .collect();
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < HEALTHY_WITHIN {
            let out = Command::new(ETCDCTL)
                .arg(format!("--endpoints={}", live.join(",")))
                .arg(format!("--command-timeout={ETCDCTL_TIMEOUT}"))
                .args(["endpoint", "health"])
                .output()
                .with_context(|| format!("running {ETCDCTL} endpoint health"))?;
            if out.status.success() {
                return Ok(());
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            sleep(Duration::from_millis(100));
        }
        bail!(
            "etcd members {live:?} not healthy within {HEALTHY_WITHIN:?}; last answer: {}",
            last.trim()
        )
    }

    fn port_was_taken(&self) -> bool {
        self.members.iter().any(|m| {
            std::fs::read_to_string(&m.log_path)
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// The last lines of every member's log, for error messages.
    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let log = std::fs::read_to_string(&m.log_path)
                .unwrap_or_else(|e| format!("(cannot read {}: {e})", m.log_path.display()));
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            s.push_str(&format!(
                "--- etcd member {i} ({}) ---\n{}\n",
                m.log_path.display(),
                tail.join("\n")
            ));
        }
        s
    }

    /// The cluster's temporary directory (data dirs and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // Best effort in Drop: a member that already exited needs no kill,
                // and there is no caller to report to.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago: all
/// listeners are held at once so the ports differ from each other.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("local_addr")?.port()))
        .collect()
}
