//! Machines for the deployment tests (deploy_crash.rs, deploy_recovery.rs,
//! deploy_adversarial.rs): four OS images in a registry, a scratch machine
//! and who is booted on it, the commands that move it along (switch, boot,
//! crash at a fail point, reboot), and its whole state as the crash test
//! compares it: everything osctl keeps under the sysroot and the boot dir,
//! plus what `status` and `fsck` say about it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use osctl_testutil::{Entry, Registry, RegistryOptions};
use serde_json::Value;

use super::assess::{entry_of, next_boot, use_tries};
use super::{Osctl, booted_cmd, error_lines, os_spec, push_tag, run_fails, run_ok};

/// `os:v1` … `os:v4` in a registry of their own: [`os_spec`] images whose
/// `/etc/motd` says `vN`, plus whatever `/etc` entries the test adds.
pub struct Images {
    pub registry: Registry,
    pub v1: String,
    pub v2: String,
    pub v3: String,
    pub v4: String,
}

impl Default for Images {
    fn default() -> Self {
        Self::new()
    }
}

impl Images {
    pub fn new() -> Images {
        Images::with_etc(|_| Vec::new())
    }

    /// With `etc(N)` added to the `/etc` of `os:vN`.
    pub fn with_etc(etc: impl Fn(&str) -> Vec<Entry>) -> Images {
        let registry = Registry::start(RegistryOptions::default()).unwrap();
        let push = |v: &str| {
            let mut entries = vec![Entry::file("etc/motd", format!("v{v}\n"))];
            entries.extend(etc(v));
            let spec = os_spec(&format!("{v}.0"), &["quiet"], entries);
            push_tag(&registry, &spec, &format!("os:v{v}"))
        };
        let (v1, v2, v3, v4) = (push("1"), push("2"), push("3"), push("4"));
        Images {
            registry,
            v1,
            v2,
            v3,
            v4,
        }
    }
}

/// Runs osctl with `booted` on the command line, asserting success;
/// returns stdout.
#[track_caller]
pub fn run(osctl: &Osctl, booted: Option<&str>, args: &[&str]) -> String {
    run_ok(booted_cmd(osctl, booted).args(args))
}

/// `switch --retain --progress none IMAGE`; returns the staged id.
#[track_caller]
pub fn switch(osctl: &Osctl, booted: Option<&str>, image: &str) -> String {
    run(
        osctl,
        booted,
        &["switch", "--retain", "--progress", "none", image],
    );
    roles(osctl, booted).staged.expect("something staged")
}

/// Switches to `image`, finalizes, boots it and marks it good (it is then
/// booted with an exact default and no counter); returns its id.
#[track_caller]
pub fn boot(osctl: &Osctl, booted: Option<&str>, image: &str) -> String {
    let id = switch(osctl, booted, image);
    run(osctl, booted, &["finalize"]);
    run(osctl, Some(&id), &["health", "bless"]);
    id
}

/// Runs `args` with fail point `point` armed and asserts osctl aborted
/// there (SIGABRT, as `kill -9` or a power cut would leave it).
#[track_caller]
pub fn crash_at(osctl: &Osctl, booted: Option<&str>, point: &str, args: &[&str]) {
    let out = booted_cmd(osctl, booted)
        .env(osctl_deploy::failpoint::ENV, point)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.signal() == Some(6) && stderr.contains(&format!("fail point {point} reached")),
        "{args:?} did not reach fail point {point} ({:?}): {stderr}",
        out.status
    );
}

/// `fsck` with `booted` on the command line: (exit success, stdout).
pub fn fsck(osctl: &Osctl, booted: Option<&str>) -> (bool, String) {
    let out = booted_cmd(osctl, booted).arg("fsck").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A scratch machine and who is booted on it.
pub struct Machine {
    pub osctl: Osctl,
    pub booted: Option<String>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            osctl: Osctl::new(),
            booted: None,
        }
    }

    /// Runs osctl, asserting success; returns stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        run(&self.osctl, self.booted.as_deref(), args)
    }

    /// Runs osctl, asserting it fails with one error line that contains
    /// every needle ([`super::assert_fails_naming`]); returns the line.
    #[track_caller]
    pub fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        run_fails(
            booted_cmd(&self.osctl, self.booted.as_deref()).args(args),
            needles,
        )
    }

    /// Runs osctl with fail point `point` armed; asserts it crashed there.
    #[track_caller]
    pub fn crash(&self, point: &str, args: &[&str]) {
        crash_at(&self.osctl, self.booted.as_deref(), point, args);
    }

    /// `switch --retain IMAGE`; returns the staged id.
    #[track_caller]
    pub fn switch(&self, image: &str) -> String {
        switch(&self.osctl, self.booted.as_deref(), image)
    }

    /// Switches, finalizes, boots the new deployment and marks it good.
    #[track_caller]
    pub fn boot(&mut self, image: &str) -> String {
        let id = boot(&self.osctl, self.booted.as_deref(), image);
        self.booted = Some(id.clone());
        id
    }

    /// What a reboot does: systemd-boot starts what loader.conf says (one
    /// try used if counted), the new deployment is marked good.
    #[track_caller]
    pub fn reboot(&mut self) -> String {
        let next = next_boot(&self.osctl).expect("something boots");
        if entry_of(&self.osctl, &next).contains('+') {
            use_tries(&self.osctl, &next, false);
        }
        self.booted = Some(next.clone());
        self.run(&["health", "bless"]);
        next
    }

    /// What systemd-boot does when it starts a counted entry: one try used,
    /// or all of them.
    pub fn use_tries(&self, id: &str, all: bool) {
        use_tries(&self.osctl, id, all);
    }

    pub fn roles(&self) -> Roles {
        roles(&self.osctl, self.booted.as_deref())
    }

    pub fn status(&self) -> Value {
        status(&self.osctl, self.booted.as_deref())
    }

    pub fn exists(&self, id: &str) -> bool {
        self.path(&format!("sysroot/state/deploy/{id}")).exists()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.osctl.sysroot().join(rel)
    }

    /// `fsck`: (exit success, stdout).
    pub fn fsck(&self) -> (bool, String) {
        fsck(&self.osctl, self.booted.as_deref())
    }

    /// Every file name under the boot dir's entries and the deployment
    /// state dir: what a refused command must leave alone.
    pub fn layout(&self) -> (Vec<String>, Vec<String>) {
        let names = |rel: &str| {
            let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        (names("boot/loader/entries"), names("sysroot/state/deploy"))
    }
}

/// Every file, directory and symlink that makes up the machine's state,
/// by path relative to the sysroot, with content normalised for what may
/// legitimately differ between two runs (times, durations, the scratch
/// path), plus `status --format json` and `fsck`'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    pub files: BTreeMap<String, String>,
    pub status: Value,
    pub fsck: String,
}

/// Who is who — booted, staged, rollback, and whether the rollback boots
/// next — as `status` says. After a crash without a re-run this must equal
/// the roles before the command or after a clean run. Other deployments
/// are not roles: pruning them is cleanup after a command's commit point
/// (a crash may leave one for the next prune), so they are compared only
/// after the re-run, with everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub booted: Option<String>,
    pub staged: Option<String>,
    pub rollback: Option<String>,
    pub rollback_queued: bool,
}

/// The trees that hold osctl's state (the store's objects are counted, not
/// listed: fsck checks them).
const TREES: &[&str] = &[
    "boot",
    "sysroot/state",
    "sysroot/osctl/images",
    "sysroot/osctl/layers",
    "sysroot/composefs/images",
    "sysroot/composefs/streams",
    "etc/osctl",
];
/// Files that are not state: locks.
const NOT_STATE: &[&str] = &["sysroot/state/lock", "sysroot/osctl/naming.lock"];

/// Reads the whole state of `osctl`'s machine, with `booted` on the
/// command line.
pub fn machine_state(osctl: &Osctl, booted: Option<&str>) -> MachineState {
    let root = osctl.sysroot();
    let mut files = BTreeMap::new();
    for tree in TREES {
        walk(root, &root.join(tree), &mut files);
    }
    files.insert("(objects)".into(), osctl.objects().to_string());
    MachineState {
        files,
        status: normalize(status(osctl, booted), &root.display().to_string()),
        fsck: fsck_report(osctl, booted),
    }
}

/// `status --format json` (asserting it works and validates against the
/// committed schema).
pub fn status(osctl: &Osctl, booted: Option<&str>) -> Value {
    let out = booted_cmd(osctl, booted)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && error_lines(&stderr).is_empty(),
        "status failed: {stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    super::assert_valid_status(&v);
    v
}

/// The roles `status` shows.
pub fn roles(osctl: &Osctl, booted: Option<&str>) -> Roles {
    let st = status(osctl, booted);
    let id = |v: &Value| v["composefs"]["verity"].as_str().map(str::to_owned);
    Roles {
        booted: id(&st["status"]["booted"]),
        staged: id(&st["status"]["staged"]),
        rollback: id(&st["status"]["rollback"]),
        rollback_queued: st["status"]["rollbackQueued"].as_bool().unwrap(),
    }
}

fn fsck_report(osctl: &Osctl, booted: Option<&str>) -> String {
    let out = booted_cmd(osctl, booted).arg("fsck").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let root = osctl.sysroot().display().to_string();
    format!(
        "exit {:?}\n{}",
        out.status.code(),
        stdout.replace(&root, "<SYSROOT>")
    )
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let rel = path.strip_prefix(root).unwrap().display().to_string();
    if NOT_STATE.contains(&rel.as_str()) {
        return;
    }
    let mode = meta.permissions().mode() & 0o7777;
    let owner = format!("{}:{}", meta.uid(), meta.gid());
    let shown = if meta.is_symlink() {
        format!("-> {}", std::fs::read_link(path).unwrap().display())
    } else if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for child in names {
            walk(root, &child, out);
        }
        format!("dir {mode:o} {owner}")
    } else if meta.is_file() {
        let bytes = std::fs::read(path).unwrap();
        let text =
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => serde_json::to_string_pretty(&normalize(v, &root.display().to_string()))
                    .unwrap(),
                Err(_) => String::from_utf8_lossy(&bytes)
                    .replace(&root.display().to_string(), "<SYSROOT>"),
            };
        format!("file {mode:o} {owner}\n{text}")
    } else {
        format!("special {mode:o} {owner} rdev {}", meta.rdev())
    };
    out.insert(rel, shown);
}

/// Times and durations differ between two runs of the same commands; the
/// scratch sysroot's path differs between machines.
fn normalize(v: Value, root: &str) -> Value {
    match v {
        Value::String(s) if looks_like_time(&s) => Value::String("<TIME>".into()),
        Value::String(s) => Value::String(s.replace(root, "<SYSROOT>")),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| normalize(v, root)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = if k == "millis" {
                        Value::from(0)
                    } else {
                        normalize(v, root)
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// `2026-12-06T22:42:01…`
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}
