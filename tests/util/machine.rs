//! A machine's whole state, as the crash test compares it: everything osctl
//! keeps under the sysroot and the boot dir, plus what `status` and `fsck`
//! say about it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use super::{Osctl, booted_cmd, error_lines};

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
        fsck: fsck(osctl, booted),
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

fn fsck(osctl: &Osctl, booted: Option<&str>) -> String {
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
