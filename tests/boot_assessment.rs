//! Boot assessment, with the real `osctl` binary, a real registry and
//! scratch sysroots: boot counters on new entries, health checks (`osctl
//! health check`), marking good (`osctl health bless`), the config file.
//! What happens when systemd-boot gives up on a deployment is in
//! boot_fallback.rs; the shared helpers in util/assess.rs.
//!
//! A deployment is "booted" with `OSCTL_CMDLINE_FILE`; systemd-boot is
//! played by renaming entry files (it counts tries by renaming them) and by
//! [`next_boot`], which picks an entry the way systemd-boot does. The
//! reboot command is `touch <sysroot>/rebooted`: never the real one.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::assess::*;
use crate::util::{Osctl, push_tag, run_fails, run_ok};
use serde_json::Value;

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
    run_fails(
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
            "#!/bin/sh\n# osctl-health: timeout=3s\nsleep 30 &\necho $! > {}\necho waiting for the database\nsleep 30\n",
            pid_file.display()
        ),
    );
    // The default limit comes from the config.
    write_check(&osctl, ADMIN_CHECKS, "20-slow", "#!/bin/sh\nsleep 30\n");
    write_config(&osctl, "[health]\ntimeout = \"1s\"\n");

    // Killed at their limits: each ends "timed-out" (a check that ran to
    // its end would pass or fail instead), and not before its limit.
    let (out, stdout, stderr) = output(on(&osctl, Some(&v1)).args(["health", "check"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("10-hangs: timed out"), "{stdout}");
    let record = health_json(&osctl, &v1);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["failedCheck"], "10-hangs");
    // (3 s for the check that starts a child and writes its pid: with
    // 1 s a loaded machine could kill it before it got that far.)
    for (name, limit_ms) in [("10-hangs", 3000), ("20-slow", 1000)] {
        let c = check_result(&record, name);
        assert_eq!(c["result"], "timed-out", "{c:#}");
        let ms = c["millis"].as_u64().unwrap();
        assert!(
            ms >= limit_ms,
            "{name} was killed before its limit: {ms} ms"
        );
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
fn config_mistakes_are_one_line_errors_naming_the_file() {
    let registry = registry();
    push_tag(&registry, &spec("1.0"), "os:stable");
    let (osctl, v1) = booted_v1(&registry);
    let v2_ref = push_tag(&registry, &spec("2.0"), "os:v2");
    let file = osctl.sysroot().join("etc/osctl/config.toml");
    let file = file.to_str().unwrap();

    write_config(&osctl, "[boot]\ntrys = 2\n");
    run_fails(
        on(&osctl, Some(&v1)).args(["switch", "--progress", "none", &v2_ref]),
        &[file, "trys"],
    );
    let st = status(&osctl, Some(&v1));
    assert!(st["status"]["staged"].is_null(), "{st:#}");
    assert_eq!(loader_default(&osctl), format!("osctl-{v1}.conf"));
    osctl.fsck_clean();
    run_fails(
        on(&osctl, Some(&v1)).args(["health", "check"]),
        &[file, "trys"],
    );
    write_config(&osctl, "[health]\ntimeout = \"soon\"\n");
    run_fails(
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
    run_fails(on(&osctl, None).args(["health", "check"]), &["booted"]);
    run_fails(on(&osctl, None).args(["health", "bless"]), &["booted"]);
    let empty = Osctl::new();
    run_fails(
        on(&empty, None).args(["health", "check"]),
        &["no osctl deployments"],
    );
    assert!(!Path::new(&reboot_trace(&osctl)).exists());
}
