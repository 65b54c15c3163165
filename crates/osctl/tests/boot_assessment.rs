//! Automatic fallback and boot assessment, with the real `osctl` binary, a
//! real registry and scratch sysroots: boot counters on new entries, health
//! checks (`osctl health check`), marking good (`osctl health bless`), what
//! happens when systemd-boot gives up on a deployment, and `upgrade`
//! refusing an image that failed here.
//!
//! A deployment is "booted" with `OSCTL_CMDLINE_FILE`; systemd-boot is
//! played by renaming entry files (it counts tries by renaming them) and by
//! [`next_boot`], which picks an entry the way systemd-boot does. The
//! reboot command is `touch <sysroot>/rebooted`: never the real one.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Osctl, booted_cmd, os_spec, push_tag, run_ok};
use osctl_deploy::status::{Host, render_json};
use osctl_testutil::{Entry, ImageSpec, Registry, RegistryOptions};
use serde_json::Value;

const IMAGE_CHECKS: &str = "usr/lib/osctl/health.d";
const ADMIN_CHECKS: &str = "etc/osctl/health.d";

fn spec(version: &str) -> ImageSpec {
    os_spec(
        version,
        &["console=ttyS0"],
        vec![Entry::file("etc/motd", format!("{version}\n"))],
    )
}

/// `osctl` on `osctl`'s sysroot with `booted` on the kernel command line and
/// a reboot command that only leaves a trace.
fn on(osctl: &Osctl, booted: Option<&str>) -> Command {
    let mut c = booted_cmd(osctl, booted);
    c.env(
        "OSCTL_REBOOT_COMMAND",
        format!("touch {}", reboot_trace(osctl).display()),
    );
    c
}

fn reboot_trace(osctl: &Osctl) -> PathBuf {
    osctl.sysroot().join("rebooted")
}

/// Whether the reboot command ran since the last call (the trace is removed).
fn rebooted(osctl: &Osctl) -> bool {
    std::fs::remove_file(reboot_trace(osctl)).is_ok()
}

fn output(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("running osctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Runs a command that must fail with one `error:` line naming every
/// `needle`; returns the line.
#[track_caller]
fn fails(cmd: &mut Command, needles: &[&str]) -> String {
    let (out, stdout, stderr) = output(cmd);
    assert!(!out.status.success(), "{cmd:?} should fail: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error should mention {n:?}: {stderr}");
    }
    lines[0].to_string()
}

fn status(osctl: &Osctl, booted: Option<&str>) -> Value {
    let out = run_ok(on(osctl, booted).args(["status", "--format", "json"]));
    serde_json::from_str(&out).unwrap()
}

fn human_status(osctl: &Osctl, booted: Option<&str>) -> String {
    run_ok(on(osctl, booted).args(["status", "--format", "human"]))
}

fn staged_id(osctl: &Osctl, booted: Option<&str>) -> String {
    status(osctl, booted)["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .expect("a staged deployment")
        .to_string()
}

fn short(id: &str) -> &str {
    &id[..12]
}

fn entries_dir(osctl: &Osctl) -> PathBuf {
    osctl.sysroot().join("boot/loader/entries")
}

/// The file names in `loader/entries`, sorted.
fn entry_files(osctl: &Osctl) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(entries_dir(osctl))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The one entry file of deployment `id`.
#[track_caller]
fn entry_of(osctl: &Osctl, id: &str) -> String {
    let mine: Vec<String> = entry_files(osctl)
        .into_iter()
        .filter(|n| n.starts_with(&format!("osctl-{id}")))
        .collect();
    assert_eq!(mine.len(), 1, "one entry file for {id}: {mine:?}");
    mine[0].clone()
}

/// What systemd-boot does at boot with a counted entry: one try used
/// (`+L-D` → `+(L-1)-(D+1)`), or all of them.
fn use_tries(osctl: &Osctl, id: &str, all: bool) {
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

fn loader_default(osctl: &Osctl) -> String {
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
fn next_boot(osctl: &Osctl) -> Option<String> {
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
fn glob(pattern: &str, s: &str) -> bool {
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

fn health_json(osctl: &Osctl, id: &str) -> Value {
    let path = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/health.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn has_health_json(osctl: &Osctl, id: &str) -> bool {
    osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/health.json"))
        .exists()
}

/// The check named `name` in a health record.
fn check_result<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {record:#}"))
}

fn check_names(record: &Value) -> Vec<String> {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Writes an executable check `name` into `dir` (relative to the sysroot).
fn write_check(osctl: &Osctl, dir: &str, name: &str, script: &str) -> PathBuf {
    let dir = osctl.sysroot().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn remove_checks(osctl: &Osctl) {
    for dir in [IMAGE_CHECKS, ADMIN_CHECKS] {
        let _ = std::fs::remove_dir_all(osctl.sysroot().join(dir));
    }
}

fn write_config(osctl: &Osctl, text: &str) {
    let path = osctl.sysroot().join("etc/osctl/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn remove_config(osctl: &Osctl) {
    let _ = std::fs::remove_file(osctl.sysroot().join("etc/osctl/config.toml"));
}

fn manifest_digest(osctl: &Osctl, id: &str) -> String {
    let path = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{id}/origin.json"));
    let origin: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    origin["manifestDigest"].as_str().unwrap().to_string()
}

fn failed_images(osctl: &Osctl) -> Vec<Value> {
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
fn status_entry<'a>(st: &'a Value, id: &str) -> &'a Value {
    let s = &st["status"];
    [&s["staged"], &s["booted"], &s["rollback"]]
        .into_iter()
        .chain(s["otherDeployments"].as_array().unwrap())
        .find(|e| e["composefs"]["verity"] == id)
        .unwrap_or_else(|| panic!("{id} not in status: {st:#}"))
}

/// `osctl status --format json` is a render of osctl's status model, every
/// render of which is checked against bootc's schema in osctl-deploy's
/// `status_format` tests (a failed deployment in `otherDeployments`
/// included): the output parses as that model and renders back unchanged.
#[track_caller]
fn assert_bootc_shaped(osctl: &Osctl, booted: Option<&str>) {
    let out = run_ok(on(osctl, booted).args(["status", "--format", "json"]));
    let host: Host = serde_json::from_str(&out).unwrap();
    let again: Value = serde_json::from_str(&render_json(&host)).unwrap();
    assert_eq!(again, serde_json::from_str::<Value>(&out).unwrap());
    assert_eq!(host.kind, "BootcHost");
}

/// A fresh machine deploys `os:stable` (v1 at first) and boots it.
fn booted_v1(registry: &Registry) -> (Osctl, String) {
    let osctl = Osctl::new();
    let stable = registry.image_ref("os:stable");
    run_ok(on(&osctl, None).args(["switch", "--progress", "none", &stable]));
    let v1 = staged_id(&osctl, None);
    run_ok(on(&osctl, None).arg("finalize"));
    (osctl, v1)
}

/// v1 booted, v2 (pushed to `os:stable`) upgraded to and finalized: on
/// trial for the next boot.
fn v2_on_trial(registry: &Registry) -> (Osctl, String, String) {
    push_tag(registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(registry);
    push_tag(registry, &spec("2.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let v2 = staged_id(&osctl, Some(&v1));
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    (osctl, v1, v2)
}

fn registry() -> Registry {
    Registry::start(RegistryOptions::default()).unwrap()
}

#[test]
fn new_deployments_get_a_boot_counter_from_the_config() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let stable = registry.image_ref("os:stable");
    let v3_ref = push_tag(&registry, &spec("3.0"), "os:v3");
    let osctl = Osctl::new();

    // The first deployment has nothing to fall back to: no counter.
    run_ok(on(&osctl, None).args(["switch", "--progress", "none", &stable]));
    let v1 = staged_id(&osctl, None);
    assert_eq!(entry_files(&osctl), [format!("osctl-{v1}.conf")]);
    run_ok(on(&osctl, None).arg("finalize"));
    assert_eq!(entry_files(&osctl), [format!("osctl-{v1}.conf")]);
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v1.as_str()));

    // v2: three tries by default, kept by finalize.
    push_tag(&registry, &spec("2.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let v2 = staged_id(&osctl, Some(&v1));
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+3.conf"));
    assert_eq!(entry_of(&osctl, &v1), format!("osctl-{v1}.conf"));
    assert_eq!(
        next_boot(&osctl).as_deref(),
        Some(v1.as_str()),
        "staging changes nothing"
    );
    let st = status(&osctl, Some(&v1));
    let staged = &st["status"]["staged"]["osctl"];
    assert_eq!(
        staged["bootTries"],
        serde_json::json!({"left": 3, "done": 0})
    );
    assert_eq!(staged["health"]["state"], "pending");
    let booted = &st["status"]["booted"]["osctl"];
    assert!(booted.get("bootTries").is_none(), "{booted:#}");
    assert!(booted.get("health").is_none(), "{booted:#}");
    assert_bootc_shaped(&osctl, Some(&v1));

    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+3.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));
    let human = human_status(&osctl, Some(&v1));
    assert!(
        human.contains("Health: pending (3 boot attempts left, 0 made)"),
        "{human}"
    );

    // [boot] tries from the sysroot's /etc/osctl/config.toml.
    write_config(&osctl, "[boot]\ntries = 2\n");
    run_ok(on(&osctl, Some(&v1)).args(["switch", "--progress", "none", &v3_ref]));
    let v3 = staged_id(&osctl, Some(&v1));
    assert_eq!(entry_of(&osctl, &v3), format!("osctl-{v3}+2.conf"));
    assert!(
        !entry_files(&osctl).iter().any(|n| n.contains(&v2)),
        "the replaced v2 is gone: {:?}",
        entry_files(&osctl)
    );
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    assert_eq!(entry_of(&osctl, &v3), format!("osctl-{v3}+2.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v3.as_str()));

    // tries = 0: no counting.
    write_config(&osctl, "[boot]\ntries = 0\n");
    run_ok(on(&osctl, Some(&v1)).args(["switch", "--progress", "none", &stable]));
    let v2_again = staged_id(&osctl, Some(&v1));
    assert_eq!(v2_again, v2);
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}.conf"));
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    assert_eq!(loader_default(&osctl), format!("osctl-{v2}.conf"));
    let st = status(&osctl, Some(&v1));
    assert!(
        st["status"]["staged"]["osctl"].get("health").is_none(),
        "an uncounted deployment is not being assessed: {st:#}"
    );
    osctl.fsck_clean();
}

#[test]
fn healthy_deployment_is_checked_then_marked_good() {
    let registry = registry();
    let (osctl, v1, v2) = v2_on_trial(&registry);
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "10-ok",
        "#!/bin/sh\necho all services up\n",
    );
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "20-cache",
        "#!/bin/sh\n# osctl-health: wanted\necho 'cache is cold' >&2\nexit 3\n",
    );

    // Boot v2 (systemd-boot used one try).
    use_tries(&osctl, &v2, false);
    let out = run_ok(on(&osctl, Some(&v2)).args(["health", "check"]));
    assert!(out.contains("Healthy"), "{out}");
    assert!(
        out.contains("20-cache: exit status 3 (cache is cold)"),
        "{out}"
    );
    assert!(!rebooted(&osctl), "a healthy deployment does not reboot");
    let record = health_json(&osctl, &v2);
    assert_eq!(record["state"], "checked");
    assert_eq!(record["failedCheck"], Value::Null);
    assert_eq!(check_names(&record), ["10-ok", "20-cache"]);
    let ok = check_result(&record, "10-ok");
    assert_eq!(ok["result"], "passed");
    assert_eq!(ok["required"], true);
    assert!(ok["output"].as_str().unwrap().contains("all services up"));
    let wanted = check_result(&record, "20-cache");
    assert_eq!(wanted["result"], "failed");
    assert_eq!(wanted["code"], 3);
    assert_eq!(wanted["required"], false);
    assert!(wanted["output"].as_str().unwrap().contains("cache is cold"));
    let st = status(&osctl, Some(&v2));
    let booted = &st["status"]["booted"]["osctl"];
    assert_eq!(booted["health"]["state"], "checked");
    assert_eq!(
        booted["bootTries"],
        serde_json::json!({"left": 2, "done": 1})
    );
    assert!(booted["health"]["checked"].as_str().unwrap().contains('T'));
    let human = human_status(&osctl, Some(&v2));
    assert!(
        human.contains("Health: checked (2 boot attempts left, 1 made)"),
        "{human}"
    );

    // boot-complete.target reached: bless.
    let out = run_ok(on(&osctl, Some(&v2)).args(["health", "bless"]));
    assert!(out.contains(short(&v2)) && out.contains("good"), "{out}");
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}.conf"));
    assert_eq!(loader_default(&osctl), format!("osctl-{v2}.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));
    let record = health_json(&osctl, &v2);
    assert_eq!(record["state"], "good");
    assert_eq!(check_names(&record), ["10-ok", "20-cache"], "results kept");
    let st = status(&osctl, Some(&v2));
    let booted = &st["status"]["booted"]["osctl"];
    assert_eq!(booted["health"]["state"], "good");
    assert!(booted.get("bootTries").is_none(), "{booted:#}");
    assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v1.as_str());
    assert_bootc_shaped(&osctl, Some(&v2));
    // Twice is fine.
    let out = run_ok(on(&osctl, Some(&v2)).args(["health", "bless"]));
    assert!(out.contains("no boot counter"), "{out}");
    assert_eq!(health_json(&osctl, &v2)["state"], "good");
    assert!(!rebooted(&osctl));
    osctl.fsck_clean();
}

#[test]
fn failing_required_check_reboots_while_the_entry_counts() {
    let registry = registry();
    let (osctl, _v1, v2) = v2_on_trial(&registry);
    write_check(&osctl, IMAGE_CHECKS, "10-ok", "#!/bin/sh\ntrue\n");
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "50-app",
        "#!/bin/sh\necho starting app\necho 'app: connection refused on :8080' >&2\nexit 1\n",
    );
    use_tries(&osctl, &v2, false);

    let (out, stdout, _) = output(on(&osctl, Some(&v2)).args(["health", "check"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Unhealthy"), "{stdout}");
    assert!(stdout.contains("Rebooting"), "{stdout}");
    assert!(rebooted(&osctl), "the reboot command ran");
    let record = health_json(&osctl, &v2);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["failedCheck"], "50-app");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("50-app") && reason.contains("connection refused on :8080"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");
    let st = status(&osctl, Some(&v2));
    let health = &st["status"]["booted"]["osctl"]["health"];
    assert_eq!(health["state"], "failed");
    assert_eq!(health["failedCheck"], "50-app");
    assert_eq!(health["reason"], reason);
    assert_bootc_shaped(&osctl, Some(&v2));

    // --no-reboot only reports.
    let (out, stdout, _) = output(on(&osctl, Some(&v2)).args(["health", "check", "--no-reboot"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!stdout.contains("Rebooting"), "{stdout}");
    assert!(!rebooted(&osctl));
    // So does `[health] reboot-on-failure = false`.
    write_config(&osctl, "[health]\nreboot-on-failure = false\n");
    let (out, _, _) = output(on(&osctl, Some(&v2)).args(["health", "check"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(!rebooted(&osctl));
    remove_config(&osctl);

    // A failed deployment is not marked good.
    fails(
        on(&osctl, Some(&v2)).args(["health", "bless"]),
        &[short(&v2), "50-app", "not marking it good"],
    );
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+2-1.conf"));

    // Fixed (the check passes now): checked, blessed.
    write_check(&osctl, IMAGE_CHECKS, "50-app", "#!/bin/sh\ntrue\n");
    run_ok(on(&osctl, Some(&v2)).args(["health", "check"]));
    run_ok(on(&osctl, Some(&v2)).args(["health", "bless"]));
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}.conf"));

    // A good deployment whose check fails later: reported, no reboot (there
    // is no counter left to run down).
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "50-app",
        "#!/bin/sh\necho 'disk full' >&2\nexit 1\n",
    );
    let (out, stdout, _) = output(on(&osctl, Some(&v2)).args(["health", "check"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Unhealthy"), "{stdout}");
    assert!(!stdout.contains("Rebooting"), "{stdout}");
    assert!(!rebooted(&osctl), "a blessed deployment is never rebooted");
    assert_eq!(health_json(&osctl, &v2)["state"], "failed");
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}.conf"));
}

#[test]
fn a_hung_check_is_killed_with_its_children() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(&registry);
    let pid_file = osctl.sysroot().join("child.pid");
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "10-hangs",
        &format!(
            "#!/bin/sh\n# osctl-health: timeout=1s\nsleep 30 &\necho $! > {}\necho waiting for the database\nsleep 30\n",
            pid_file.display()
        ),
    );
    // The default limit comes from the config.
    write_check(&osctl, ADMIN_CHECKS, "20-slow", "#!/bin/sh\nsleep 30\n");
    write_config(&osctl, "[health]\ntimeout = \"1s\"\n");

    let started = Instant::now();
    let (out, stdout, stderr) = output(on(&osctl, Some(&v1)).args(["health", "check"]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "two 1 s limits took {took:?}"
    );
    assert!(stdout.contains("10-hangs: timed out"), "{stdout}");
    let record = health_json(&osctl, &v1);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["failedCheck"], "10-hangs");
    for name in ["10-hangs", "20-slow"] {
        let c = check_result(&record, name);
        assert_eq!(c["result"], "timed-out", "{c:#}");
        let ms = c["millis"].as_u64().unwrap();
        assert!((1000..5000).contains(&ms), "{name} ran {ms} ms");
    }
    assert!(
        check_result(&record, "10-hangs")["output"]
            .as_str()
            .unwrap()
            .contains("waiting for the database")
    );
    // The check's background child died with it.
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the check's child {pid} outlived it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!rebooted(&osctl), "v1 has no counter: no reboot");
}

/// Running (a zombie waiting for its reaper does not count).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        }
        Err(_) => false,
    }
}

#[test]
fn etc_overrides_and_disables_image_checks() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(&registry);
    write_check(&osctl, IMAGE_CHECKS, "10-image", "#!/bin/sh\necho image\n");
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "20-svc",
        "#!/bin/sh\necho 'image version fails'\nexit 1\n",
    );
    write_check(&osctl, IMAGE_CHECKS, "30-noisy", "#!/bin/sh\nexit 1\n");
    write_check(&osctl, IMAGE_CHECKS, ".hidden", "#!/bin/sh\nexit 1\n");
    write_check(
        &osctl,
        ADMIN_CHECKS,
        "20-svc",
        "#!/bin/sh\necho 'admin version'\n",
    );
    write_check(&osctl, ADMIN_CHECKS, "40-local", "#!/bin/sh\necho local\n");
    symlink(
        "/dev/null",
        osctl.sysroot().join(ADMIN_CHECKS).join("30-noisy"),
    )
    .unwrap();

    let out = run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    assert!(out.contains("Healthy: 3 required checks passed"), "{out}");
    let record = health_json(&osctl, &v1);
    assert_eq!(record["state"], "checked");
    assert_eq!(check_names(&record), ["10-image", "20-svc", "40-local"]);
    assert_eq!(
        check_result(&record, "20-svc")["output"],
        "admin version\n",
        "/etc replaces the image's check"
    );
}

#[test]
fn systemd_boot_falls_back_from_a_deployment_that_never_came_up() {
    let registry = registry();
    let (osctl, v1, v2) = v2_on_trial(&registry);
    let v2_digest = manifest_digest(&osctl, &v2);
    assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));

    // v2's kernel panics three times: systemd-boot used up its tries and
    // boots v1 by itself.
    for _ in 0..3 {
        use_tries(&osctl, &v2, false);
    }
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+0-3.conf"));
    assert_eq!(
        next_boot(&osctl).as_deref(),
        Some(v1.as_str()),
        "systemd-boot must fall back without osctl's help"
    );

    assert!(!has_health_json(&osctl, &v2), "v2 never ran its checks");

    // Back on v1, the health check notices.
    let out = run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    assert!(
        out.contains(short(&v2)) && out.contains("failed"),
        "the failure is reported: {out}"
    );
    let record = health_json(&osctl, &v2);
    assert_eq!(record["state"], "failed");
    let reason = record["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("never reached userspace"), "{reason}");
    assert!(reason.contains('3'), "names the attempts: {reason}");
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v1.as_str()));
    let failed = failed_images(&osctl);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["manifestDigest"], v2_digest.as_str());
    assert_eq!(failed[0]["imageId"], v2.as_str());
    assert!(!rebooted(&osctl));

    // Status: v2 is a failed other deployment, never staged or rollback.
    let st = status(&osctl, Some(&v1));
    assert_eq!(st["status"]["booted"]["composefs"]["verity"], v1.as_str());
    assert!(st["status"]["staged"].is_null(), "{st:#}");
    assert!(st["status"]["rollback"].is_null(), "{st:#}");
    assert_eq!(st["status"]["rollbackQueued"], false);
    let others = st["status"]["otherDeployments"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{st:#}");
    let health = &others[0]["osctl"]["health"];
    assert_eq!(others[0]["composefs"]["verity"], v2.as_str());
    assert_eq!(health["state"], "failed");
    assert_eq!(health["reason"], reason.as_str());
    assert_eq!(
        others[0]["osctl"]["bootTries"],
        serde_json::json!({"left": 0, "done": 3})
    );
    assert_bootc_shaped(&osctl, Some(&v1));
    let human = human_status(&osctl, Some(&v1));
    assert!(
        human.contains(&format!(
            "Failed deployment: {} (2.0): {reason}",
            short(&v2)
        )),
        "{human}"
    );
    assert!(!human.contains("Other deployments"), "{human}");

    // Nothing to roll back to: v2 is never offered.
    fails(on(&osctl, Some(&v1)).arg("rollback"), &["no rollback"]);
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));

    // Noticed once.
    let out = run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    assert!(!out.contains(short(&v2)), "{out}");
    assert_eq!(failed_images(&osctl).len(), 1);
    assert_eq!(health_json(&osctl, &v2)["reason"], reason.as_str());
    osctl.fsck_clean();
}

#[test]
fn fallback_after_failed_checks_names_the_check_and_rollback_skips_it() {
    let registry = registry();
    push_tag(&registry, &spec("0.9"), "os:stable");
    let (osctl, v0) = booted_v1(&registry);
    // v0 → v1 (blessed) → v2, so v0 is v1's rollback.
    push_tag(&registry, &spec("1.0"), "os:stable");
    run_ok(on(&osctl, Some(&v0)).args(["upgrade", "--progress", "none"]));
    let v1 = staged_id(&osctl, Some(&v0));
    run_ok(on(&osctl, Some(&v0)).arg("finalize"));
    use_tries(&osctl, &v1, false);
    run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    run_ok(on(&osctl, Some(&v1)).args(["health", "bless"]));
    push_tag(&registry, &spec("2.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let v2 = staged_id(&osctl, Some(&v1));
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));

    // v2 boots three times, its check fails each time, osctl reboots.
    write_check(
        &osctl,
        IMAGE_CHECKS,
        "50-app",
        "#!/bin/sh\necho 'app: missing config' >&2\nexit 2\n",
    );
    for _ in 0..3 {
        assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));
        use_tries(&osctl, &v2, false);
        let (out, stdout, _) = output(on(&osctl, Some(&v2)).args(["health", "check"]));
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(rebooted(&osctl), "{stdout}");
    }
    assert_eq!(next_boot(&osctl).as_deref(), Some(v1.as_str()));

    // v1 is back (its image has no such check).
    remove_checks(&osctl);
    run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    let record = health_json(&osctl, &v2);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["failedCheck"], "50-app");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("50-app") && reason.contains("missing config"),
        "{reason}"
    );
    let failed = failed_images(&osctl);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("50-app"),
        "{failed:?}"
    );
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));
    let st = status(&osctl, Some(&v1));
    assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v0.as_str());
    let v2_entry = status_entry(&st, &v2);
    assert_eq!(v2_entry["osctl"]["health"]["failedCheck"], "50-app");
    assert_bootc_shaped(&osctl, Some(&v1));

    // v2 is newer than v0, but rollback picks v0.
    let out = run_ok(on(&osctl, Some(&v1)).arg("rollback"));
    assert!(out.contains(short(&v0)), "{out}");
    assert_eq!(loader_default(&osctl), format!("osctl-{v0}.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v0.as_str()));
    osctl.fsck_clean();
}

#[test]
fn upgrade_refuses_an_image_that_failed_here() {
    let registry = registry();
    let (osctl, v1, v2) = v2_on_trial(&registry);
    use_tries(&osctl, &v2, true);
    run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    assert_eq!(health_json(&osctl, &v2)["state"], "failed");

    // os:stable still points at v2.
    let err = fails(
        on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]),
        &[
            "failed on this machine",
            "--force",
            &manifest_digest(&osctl, &v2),
        ],
    );
    assert!(err.contains("never reached userspace"), "{err}");
    let st = status(&osctl, Some(&v1));
    assert!(st["status"]["staged"].is_null(), "nothing staged: {st:#}");
    assert!(!osctl.sysroot().join("sysroot/state/staged").exists());
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));

    // --force stages it again, with fresh tries.
    let out = run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--force", "--progress", "none"]));
    assert!(out.contains("Staged"), "{out}");
    assert_eq!(staged_id(&osctl, Some(&v1)), v2);
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+3.conf"));
    let st = status(&osctl, Some(&v1));
    assert_eq!(
        st["status"]["staged"]["osctl"]["health"]["state"],
        "pending"
    );
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));

    // This time it comes up and is marked good; upgrades are back to normal.
    use_tries(&osctl, &v2, false);
    let out = run_ok(on(&osctl, Some(&v2)).args(["upgrade", "--progress", "none"]));
    assert!(
        out.contains("No update available"),
        "the booted image is not an update, failed before or not: {out}"
    );
    run_ok(on(&osctl, Some(&v2)).args(["health", "check"]));
    run_ok(on(&osctl, Some(&v2)).args(["health", "bless"]));
    let out = run_ok(on(&osctl, Some(&v2)).args(["upgrade", "--progress", "none"]));
    assert!(out.contains("No update available"), "{out}");
    // It proved good here: it is no longer remembered as failed.
    assert!(
        !failed_images(&osctl)
            .iter()
            .any(|f| f["imageId"] == v2.as_str()),
        "{:?}",
        failed_images(&osctl)
    );
    let st = status(&osctl, Some(&v2));
    assert_eq!(st["status"]["booted"]["osctl"]["health"]["state"], "good");
    osctl.fsck_clean();
}

#[test]
fn an_old_failure_does_not_end_a_later_trial() {
    let registry = registry();
    let (osctl, v1, v2) = v2_on_trial(&registry);
    use_tries(&osctl, &v2, true);
    run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));

    // A fixed v3 comes along while the failed v2 is still around (pinned:
    // otherwise staging v3 prunes it, see the next test).
    run_ok(on(&osctl, Some(&v1)).args(["pin", &v2]));
    push_tag(&registry, &spec("3.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let v3 = staged_id(&osctl, Some(&v1));
    run_ok(on(&osctl, Some(&v1)).arg("finalize"));
    assert_eq!(entry_of(&osctl, &v3), format!("osctl-{v3}+3.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v3.as_str()));
    let st = status(&osctl, Some(&v1));
    assert_eq!(st["status"]["staged"]["composefs"]["verity"], v3.as_str());
    assert_eq!(status_entry(&st, &v2)["osctl"]["health"]["state"], "failed");

    // v3 boots; its checks pass but boot-complete.target is not reached yet.
    use_tries(&osctl, &v3, false);
    run_ok(on(&osctl, Some(&v3)).args(["health", "check"]));
    // If v3 now hangs on its next boots, systemd-boot must still fall back
    // to v1: the check on v3 must not have ended v3's trial because of v2.
    use_tries(&osctl, &v3, true);
    assert_eq!(
        next_boot(&osctl).as_deref(),
        Some(v1.as_str()),
        "loader.conf: {}",
        loader_default(&osctl)
    );
}

#[test]
fn a_failed_deployment_is_pruned_by_the_next_stage_but_remembered() {
    let registry = registry();
    let (osctl, v1, v2) = v2_on_trial(&registry);
    use_tries(&osctl, &v2, true);
    run_ok(on(&osctl, Some(&v1)).args(["health", "check"]));
    let st = status(&osctl, Some(&v1));
    assert_eq!(status_entry(&st, &v2)["osctl"]["health"]["state"], "failed");

    push_tag(&registry, &spec("3.0"), "os:stable");
    run_ok(on(&osctl, Some(&v1)).args(["upgrade", "--progress", "none"]));
    let st = status(&osctl, Some(&v1));
    let listed = serde_json::to_string(&st).unwrap();
    assert!(!listed.contains(&v2), "v2 was pruned: {st:#}");
    assert!(
        !osctl
            .sysroot()
            .join("sysroot/state/deploy")
            .join(&v2)
            .exists()
    );
    assert!(
        failed_images(&osctl)
            .iter()
            .any(|f| f["imageId"] == v2.as_str()),
        "still remembered: {:?}",
        failed_images(&osctl)
    );
    osctl.fsck_clean();
}

#[test]
fn last_boot_attempt_is_still_being_assessed() {
    let registry = registry();
    let (osctl, _v1, v2) = v2_on_trial(&registry);
    // systemd-boot renames the entry before starting it: on the last try
    // the running deployment's entry says no tries left.
    use_tries(&osctl, &v2, false);
    use_tries(&osctl, &v2, false);
    use_tries(&osctl, &v2, false);
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+0-3.conf"));
    let st = status(&osctl, Some(&v2));
    let booted = &st["status"]["booted"]["osctl"];
    assert_eq!(booted["health"]["state"], "pending", "{booted:#}");
    run_ok(on(&osctl, Some(&v2)).args(["health", "check"]));
    let st = status(&osctl, Some(&v2));
    assert_eq!(
        st["status"]["booted"]["osctl"]["health"]["state"],
        "checked"
    );
    run_ok(on(&osctl, Some(&v2)).args(["health", "bless"]));
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}.conf"));
    assert_eq!(next_boot(&osctl).as_deref(), Some(v2.as_str()));
    assert_eq!(
        loader_default(&osctl),
        format!("osctl-{v2}.conf"),
        "the trial is over"
    );
    assert_eq!(health_json(&osctl, &v2)["state"], "good");
}

#[test]
fn config_mistakes_are_one_line_errors_naming_the_file() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(&registry);
    let v2_ref = push_tag(&registry, &spec("2.0"), "os:v2");
    let file = osctl.sysroot().join("etc/osctl/config.toml");
    let file = file.to_str().unwrap();

    write_config(&osctl, "[boot]\ntrys = 2\n");
    fails(
        on(&osctl, Some(&v1)).args(["switch", "--progress", "none", &v2_ref]),
        &[file, "trys"],
    );
    let st = status(&osctl, Some(&v1));
    assert!(st["status"]["staged"].is_null(), "{st:#}");
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));
    osctl.fsck_clean();
    fails(
        on(&osctl, Some(&v1)).args(["health", "check"]),
        &[file, "trys"],
    );
    write_config(&osctl, "[health]\ntimeout = \"soon\"\n");
    fails(
        on(&osctl, Some(&v1)).args(["health", "check"]),
        &[file, "health.timeout"],
    );

    // Fixed: the same switch goes through.
    write_config(&osctl, "[boot]\ntries = 2\n");
    run_ok(on(&osctl, Some(&v1)).args(["switch", "--progress", "none", &v2_ref]));
    let v2 = staged_id(&osctl, Some(&v1));
    assert_eq!(entry_of(&osctl, &v2), format!("osctl-{v2}+2.conf"));
    osctl.fsck_clean();
}

#[test]
fn health_commands_need_a_booted_deployment() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let (osctl, _v1) = booted_v1(&registry);
    fails(on(&osctl, None).args(["health", "check"]), &["booted"]);
    fails(on(&osctl, None).args(["health", "bless"]), &["booted"]);
    let empty = Osctl::new();
    fails(
        on(&empty, None).args(["health", "check"]),
        &["no osctl deployments"],
    );
    assert!(!Path::new(&reboot_trace(&osctl)).exists());
}
