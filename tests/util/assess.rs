//! Helpers of the boot assessment tests (boot_assessment.rs,
//! boot_fallback.rs): a scratch sysroot "booted" through a command-line file,
//! a stand-in for systemd-boot's entry choice and its boot counting, health
//! checks and records.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use osctl_deploy::status::{Host, render_json};
use osctl_testutil::{Entry, ImageSpec, Registry, RegistryOptions};
use serde_json::Value;

use super::{Osctl, booted_cmd, os_spec, push_tag, run_ok};

pub const IMAGE_CHECKS: &str = "usr/lib/osctl/health.d";
pub const ADMIN_CHECKS: &str = "etc/osctl/health.d";

pub fn spec(version: &str) -> ImageSpec {
    os_spec(
        version,
        &["console=ttyS0"],
        vec![Entry::file("etc/motd", format!("{version}\n"))],
    )
}

/// `osctl` on `osctl`'s sysroot with `booted` on the kernel command line and
/// a reboot command that only leaves a trace.
pub fn on(osctl: &Osctl, booted: Option<&str>) -> Command {
    let mut c = booted_cmd(osctl, booted);
    c.env(
        "OSCTL_REBOOT_COMMAND",
        format!("touch {}", reboot_trace(osctl).display()),
    );
    c
}

pub fn reboot_trace(osctl: &Osctl) -> PathBuf {
    osctl.sysroot().join("rebooted")
}

/// Whether the reboot command ran since the last call (the trace is removed).
pub fn rebooted(osctl: &Osctl) -> bool {
    std::fs::remove_file(reboot_trace(osctl)).is_ok()
}

pub fn output(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("running osctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

pub fn status(osctl: &Osctl, booted: Option<&str>) -> Value {
    let out = run_ok(on(osctl, booted).args(["status", "--format", "json"]));
    serde_json::from_str(&out).unwrap()
}

pub fn human_status(osctl: &Osctl, booted: Option<&str>) -> String {
    run_ok(on(osctl, booted).args(["status", "--format", "human"]))
}

pub fn staged_id(osctl: &Osctl, booted: Option<&str>) -> String {
    status(osctl, booted)["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .expect("a staged deployment")
        .to_string()
}

pub fn short(id: &str) -> &str {
    &id[..12]
}

pub fn entries_dir(osctl: &Osctl) -> PathBuf {
    osctl.sysroot().join("boot/loader/entries")
}

/// The file names in `loader/entries`, sorted.
pub fn entry_files(osctl: &Osctl) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(entries_dir(osctl))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The one entry file of deployment `id`.
#[track_caller]
pub fn entry_of(osctl: &Osctl, id: &str) -> String {
    let mine: Vec<String> = entry_files(osctl)
        .into_iter()
        .filter(|n| n.starts_with(&format!("osctl-{id}")))
        .collect();
    assert_eq!(mine.len(), 1, "one entry file for {id}: {mine:?}");
    mine[0].clone()
}

/// What systemd-boot does at boot with a counted entry: one try used
/// (`+L-D` → `+(L-1)-(D+1)`), or all of them.
pub fn use_tries(osctl: &Osctl, id: &str, all: bool) {
    let old = entry_of(osctl, id);
    let counter = old
        .trim_end_matches(".conf")
        .split_once('+')
        .unwrap_or_else(|| panic!("{old} has no counter"))
        .1;
    let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
    let (left, done): (u32, u32) = (left.parse().unwrap(), done.parse().unwrap());
    let (left, done) = if all {
        (0, done + left)
    } else {
        (left - 1, done + 1)
    };
    let new = format!("osctl-{id}+{left}-{done}.conf");
    std::fs::rename(entries_dir(osctl).join(&old), entries_dir(osctl).join(new)).unwrap();
}

pub fn loader_default(osctl: &Osctl) -> String {
    let text = std::fs::read_to_string(osctl.sysroot().join("boot/loader/loader.conf")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("default"))
        .map(|v| v.trim().to_string())
        .next_back()
        .unwrap_or_else(|| panic!("no default line: {text}"))
}

/// The deployment systemd-boot starts: loader.conf's `default` (a glob)
/// matched against the entry ids (file names without the counter) in
/// systemd-boot's order — entries without tries left last, then by
/// `sort-key`, then newest `version` first, then id. A `default` naming a
/// bad entry exactly still boots it (systemd-boot does not second-guess it).
pub fn next_boot(osctl: &Osctl) -> Option<String> {
    struct E {
        id: String,
        bad: bool,
        sort_key: String,
        version: String,
    }
    let mut found = Vec::new();
    for name in entry_files(osctl) {
        let Some(stem) = name.strip_suffix(".conf") else {
            continue;
        };
        let (base, bad) = match stem.split_once('+') {
            Some((base, counter)) => (base, counter.split('-').next() == Some("0")),
            None => (stem, false),
        };
        let text = std::fs::read_to_string(entries_dir(osctl).join(&name)).unwrap();
        let key = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        found.push(E {
            id: format!("{base}.conf"),
            bad,
            sort_key: key("sort-key "),
            version: key("version "),
        });
    }
    found.sort_by(|a, b| {
        a.bad
            .cmp(&b.bad)
            .then(a.sort_key.cmp(&b.sort_key))
            .then(b.version.cmp(&a.version))
            .then(b.id.cmp(&a.id))
    });
    let pattern = loader_default(osctl);
    found
        .iter()
        .find(|e| glob(&pattern, &e.id))
        .map(|e| e.id["osctl-".len()..e.id.len() - ".conf".len()].to_string())
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(s) = s.strip_prefix(head) else {
                return false;
            };
            (0..=s.len()).any(|i| s.is_char_boundary(i) && glob(rest, &s[i..]))
        }
    }
}

pub fn health_json(osctl: &Osctl, id: &str) -> Value {
    let path = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/health.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn has_health_json(osctl: &Osctl, id: &str) -> bool {
    osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/health.json"))
        .exists()
}

/// The check named `name` in a health record.
pub fn check_result<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {record:#}"))
}

pub fn check_names(record: &Value) -> Vec<String> {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Writes an executable check `name` into `dir` (relative to the sysroot).
pub fn write_check(osctl: &Osctl, dir: &str, name: &str, script: &str) -> PathBuf {
    let dir = osctl.sysroot().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn remove_checks(osctl: &Osctl) {
    for dir in [IMAGE_CHECKS, ADMIN_CHECKS] {
        let _ = std::fs::remove_dir_all(osctl.sysroot().join(dir));
    }
}

pub fn write_config(osctl: &Osctl, text: &str) {
    let path = osctl.sysroot().join("etc/osctl/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn remove_config(osctl: &Osctl) {
    let _ = std::fs::remove_file(osctl.sysroot().join("etc/osctl/config.toml"));
}

pub fn manifest_digest(osctl: &Osctl, id: &str) -> String {
    let path = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/origin.json"));
    let origin: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    origin["manifestDigest"].as_str().unwrap().to_string()
}

pub fn failed_images(osctl: &Osctl) -> Vec<Value> {
    let path = osctl.sysroot().join("sysroot/state/failed-images.json");
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone(),
        Err(_) => Vec::new(),
    }
}

/// The boot entry of deployment `id` in a status, wherever it sits.
pub fn status_entry<'a>(st: &'a Value, id: &str) -> &'a Value {
    let s = &st["status"];
    [&s["staged"], &s["booted"], &s["rollback"]]
        .into_iter()
        .chain(s["otherDeployments"].as_array().unwrap())
        .find(|e| e["composefs"]["verity"] == id)
        .unwrap_or_else(|| panic!("{id} not in status: {st:#}"))
}

/// `osctl status --format json` validates against docs/status.schema.json
/// (osctl-deploy's `status_format` tests check that schema keeps bootc's
/// names and types), and is a render of osctl's status model: it parses as
/// that model and renders back unchanged.
#[track_caller]
pub fn assert_bootc_shaped(osctl: &Osctl, booted: Option<&str>) {
    let out = run_ok(on(osctl, booted).args(["status", "--format", "json"]));
    super::assert_valid_status(&serde_json::from_str(&out).unwrap());
    let host: Host = serde_json::from_str(&out).unwrap();
    let again: Value = serde_json::from_str(&render_json(&host)).unwrap();
    assert_eq!(again, serde_json::from_str::<Value>(&out).unwrap());
    assert_eq!(host.kind, "BootcHost");
}

/// A fresh machine deploys `os:stable` (v1 at first) and boots it.
pub fn booted_v1(registry: &Registry) -> (Osctl, String) {
    let osctl = Osctl::new();
    let stable = registry.image_ref("os:stable");
    run_ok(on(&osctl, None).args(["switch", "--progress", "none", &stable]));
    let v1 = staged_id(&osctl, None);
    run_ok(on(&osctl, None).arg("finalize"));
    (osctl, v1)
}

/// v1 booted, v2 (pushed to `os:stable`) upgraded to and finalized: on
/// trial for the next boot.
pub fn v2_on_trial(registry: &Registry) -> (Osctl, String, String) {
    push_tag(registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(registry);
    push_tag(registry, &spec("2.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let v2 = staged_id(&osctl, Some(&v1));
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    (osctl, v1, v2)
}

pub fn registry() -> Registry {
    Registry::start(RegistryOptions::default()).unwrap()
}
