//! Health checks: what decides that a booted deployment is good.
//!
//! A check is an executable in `/usr/lib/osctl/health.d/` (shipped in the
//! image) or `/etc/osctl/health.d/` (the admin's). A file in `/etc` replaces
//! the image's check of the same name; a symlink to `/dev/null` there turns
//! it off (the systemd convention for units). Checks run one at a time in
//! name order, each with a time limit, with no input; exit status 0 passes.
//!
//! A check is **required** unless it says otherwise: a required check that
//! fails (or times out, or cannot run) fails the deployment. A **wanted**
//! check's failure is recorded and shown in `osctl status` but does not fail
//! the deployment. Both properties come from a comment line near the top of
//! the check (scripts; a binary takes the defaults):
//!
//! ```sh
//! #!/bin/sh
//! # osctl-health: wanted timeout=30s
//! curl -fsS http://127.0.0.1:8080/healthz
//! ```
//!
//! The results are recorded per deployment in
//! `state/deploy/<id>/health.json` ([`HealthRecord`]), the file the fleet
//! agent (and `osctl status`) reads.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::parse_duration;

/// Checks shipped in the image, relative to the sysroot.
pub const IMAGE_CHECKS_DIR: &str = "usr/lib/osctl/health.d";
/// The admin's checks, relative to the sysroot; they override by name.
pub const ADMIN_CHECKS_DIR: &str = "etc/osctl/health.d";
/// A deployment's health record, relative to its state directory.
pub const HEALTH_FILE: &str = crate::layout::HEALTH_FILE;

/// How much of a check's output is kept for the record: enough for the
/// error a check prints, not a log.
const OUTPUT_TAIL: usize = 2048;
/// How many leading bytes of a check are searched for its `osctl-health:`
/// line.
const HEADER_BYTES: usize = 4096;
/// How often a running check is polled for exit.
const POLL: Duration = Duration::from_millis(20);

/// One check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    name: String,
    path: PathBuf,
    required: bool,
    timeout: Duration,
    /// What is wrong with its `osctl-health:` line, if anything.
    problem: Option<String>,
}

impl Check {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn required(&self) -> bool {
        self.required
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Why its `osctl-health:` line was ignored (it then runs as required
    /// with the default timeout); the first line of its recorded output.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// The checks of the system rooted at `sysroot`, in the order they run.
/// A check whose header does not parse is still run, as required with the
/// default timeout, and the problem is part of its result.
pub fn discover(sysroot: &Path, default_timeout: Duration) -> Vec<Check> {
    let mut by_name = std::collections::BTreeMap::new();
    for dir in [IMAGE_CHECKS_DIR, ADMIN_CHECKS_DIR] {
        let Ok(entries) = std::fs::read_dir(sysroot.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            by_name.insert(name, entry.path());
        }
    }
    let mut checks = Vec::new();
    for (name, path) in by_name {
        // `ln -s /dev/null /etc/osctl/health.d/NAME` disables NAME.
        if std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null")) {
            continue;
        }
        // A line that does not parse is ignored as a whole: a typo must
        // not make a required check wanted, nor give it another limit.
        let (required, timeout, problem) = match header(&path) {
            Ok(Some((required, timeout))) => (required, timeout, None),
            Ok(None) => (true, None, None),
            Err(why) => (true, None, Some(why)),
        };
        checks.push(Check {
            name,
            path,
            required,
            timeout: timeout.unwrap_or(default_timeout),
            problem,
        });
    }
    checks
}

/// `# osctl-health: wanted|required timeout=DURATION` near the top of the
/// file; `None` when there is no such line (or the file cannot be read:
/// running it will say why), the problem when it does not parse.
fn header(path: &Path) -> Result<Option<(bool, Option<Duration>)>, String> {
    let mut head = Vec::with_capacity(HEADER_BYTES);
    let read =
        std::fs::File::open(path).and_then(|f| f.take(HEADER_BYTES as u64).read_to_end(&mut head));
    if read.is_err() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&head);
    let Some(line) = text
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .find_map(|l| l.split_once("osctl-health:").map(|(_, rest)| rest))
    else {
        return Ok(None);
    };
    let bad = |why: String| {
        format!(
            "osctl: ignoring its `osctl-health:{line}` line ({why}): run as required with the default timeout"
        )
    };
    let mut required = true;
    let mut timeout = None;
    for word in line.split_whitespace() {
        match word {
            "wanted" => required = false,
            "required" => required = true,
            w => match w.strip_prefix("timeout=") {
                Some(t) => {
                    timeout = Some(parse_duration(t).map_err(|e| bad(format!("timeout {e}")))?)
                }
                None => return Err(bad(format!("unknown word '{w}'"))),
            },
        }
    }
    Ok(Some((required, timeout)))
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Outcome {
    Passed,
    /// Exited non-zero (or was killed by a signal: `code` is `None`).
    Failed {
        code: Option<i32>,
    },
    TimedOut,
    /// Could not be started (not executable, missing interpreter, …).
    NotRun {
        why: String,
    },
}

/// One check's result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub name: String,
    pub required: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub millis: u64,
    /// The end of what the check printed (stdout and stderr).
    #[serde(default)]
    pub output: String,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    /// "50-app: exit status 1", "50-app: timed out after 30s", …
    pub fn describe(&self) -> String {
        let what = match &self.outcome {
            Outcome::Passed => "passed".to_string(),
            Outcome::Failed { code: Some(c) } => format!("exit status {c}"),
            Outcome::Failed { code: None } => "killed by a signal".to_string(),
            Outcome::TimedOut => "timed out".to_string(),
            Outcome::NotRun { why } => format!("could not run: {why}"),
        };
        let last = self.output.lines().rev().find(|l| !l.trim().is_empty());
        match last {
            Some(l) if !self.passed() => format!("{}: {what} ({})", self.name, l.trim()),
            _ => format!("{}: {what}", self.name),
        }
    }
}

/// Runs `check` with its time limit; its process group is killed at the
/// limit, so a check's children do not outlive it.
pub fn run(check: &Check) -> CheckResult {
    let started = Instant::now();
    let result = |outcome: Outcome, output: String| CheckResult {
        name: check.name.clone(),
        required: check.required,
        outcome,
        millis: started.elapsed().as_millis() as u64,
        output,
    };
    let out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return result(Outcome::NotRun { why: e.to_string() }, String::new()),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return result(Outcome::NotRun { why: e.to_string() }, String::new()),
    };
    let mut out_reader = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return result(Outcome::NotRun { why: e.to_string() }, String::new()),
    };
    // A header problem leads the output (the check's own lines follow: the
    // descriptors share one file offset), so the record says why the
    // check's line was ignored.
    if let Some(problem) = &check.problem {
        use std::io::Write;
        // The verdict does not depend on this note: a failed write loses
        // only the explanation of the ignored header line, which is
        // recorded nowhere else (the check itself still runs and is judged).
        let _ = writeln!(out_reader, "{problem}");
    }
    let spawned = Command::new(&check.path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let output = tail(&mut out_reader);
            return result(Outcome::NotRun { why: e.to_string() }, output);
        }
    };
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Outcome::Passed,
            Ok(Some(status)) => {
                break Outcome::Failed {
                    code: status.code(),
                };
            }
            Ok(None) if started.elapsed() >= check.timeout => {
                if let Some(why) = kill_check(&mut child) {
                    break Outcome::NotRun { why };
                }
                break Outcome::TimedOut;
            }
            Ok(None) => std::thread::sleep(POLL),
            // Whether it still runs is unknown: it must not outlive its
            // assessment, so it is killed all the same.
            Err(e) => {
                let why = match kill_check(&mut child) {
                    Some(kill) => format!("waiting for it: {e}; {kill}"),
                    None => format!("waiting for it: {e} (killed)"),
                };
                break Outcome::NotRun { why };
            }
        }
    };
    let output = tail(&mut out_reader);
    result(outcome, output)
}

/// Kills a check's whole process group and reaps it. Returns why that
/// failed, if it did (a group already gone is not a failure).
fn kill_check(child: &mut std::process::Child) -> Option<String> {
    let pgid = rustix::process::Pid::from_child(child);
    let killed = match rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => None,
        Err(e) => Some(format!("killing its process group: {e}")),
    };
    match child.wait() {
        Ok(_) => killed,
        Err(e) => Some(format!(
            "{}reaping it: {e}",
            killed.map(|k| format!("{k}; ")).unwrap_or_default()
        )),
    }
}

/// The last [`OUTPUT_TAIL`] bytes written to `file`, as text.
fn tail(file: &mut std::fs::File) -> String {
    use std::io::{Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_TAIL as u64);
    let mut buf = Vec::new();
    // The output tail is what the record shows of a check beside its
    // verdict, which never depends on it: unreadable output shows as less
    // (or no) output, not as a failed check.
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A deployment's health, as `state/deploy/<id>/health.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// Booted, checks passed, waiting for boot-complete.target to mark it
    /// good.
    Checked,
    /// Marked good: its boot entry has no counter any more.
    Good,
    /// A required check failed, or it never became healthy within its tries.
    Failed,
}

/// The record the fleet agent and `osctl status` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    pub state: HealthState,
    /// When this record was written (RFC 3339).
    pub at: String,
    /// Why it failed, one line (the first failed required check, or that
    /// it never reached userspace).
    #[serde(default)]
    pub reason: Option<String>,
    /// The name of the first failed required check, if one failed.
    #[serde(default)]
    pub failed_check: Option<String>,
    /// The last run's results, required and wanted.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

impl HealthRecord {
    /// The record for a finished run of `results`.
    pub fn from_results(results: Vec<CheckResult>, at: String) -> HealthRecord {
        let failed = results.iter().find(|r| r.required && !r.passed());
        HealthRecord {
            state: if failed.is_some() {
                HealthState::Failed
            } else {
                HealthState::Checked
            },
            at,
            reason: failed.map(|r| format!("health check {}", r.describe())),
            failed_check: failed.map(|r| r.name.clone()),
            checks: results,
        }
    }
}
