//! Health checks at the library level: which checks run in which order
//! (`/usr/lib/osctl/health.d`, overridden and disabled from
//! `/etc/osctl/health.d`), what their `# osctl-health:` line means, and how
//! a run ends up in the record.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use osctl_deploy::health::{
    ADMIN_CHECKS_DIR, Check, CheckResult, HealthRecord, HealthState, IMAGE_CHECKS_DIR, Outcome,
    discover, run,
};
use serde_json::json;

const DEFAULT: Duration = Duration::from_secs(60);

fn write(root: &Path, dir: &str, name: &str, text: &str, mode: u32) -> PathBuf {
    let dir = root.join(dir);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn script(root: &Path, name: &str, text: &str) -> PathBuf {
    write(root, IMAGE_CHECKS_DIR, name, text, 0o755)
}

/// The one check of a sysroot holding only `text` as `name`.
fn only_check(text: &str) -> (tempfile::TempDir, Check) {
    let root = tempfile::tempdir().unwrap();
    script(root.path(), "10-check", text);
    let mut checks = discover(root.path(), DEFAULT);
    assert_eq!(checks.len(), 1);
    (root, checks.remove(0))
}

fn run_only(text: &str) -> CheckResult {
    let (_root, check) = only_check(text);
    run(&check)
}

#[test]
fn discovery_merges_both_dirs_by_name() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    script(r, "20-b", "#!/bin/sh\n");
    script(r, "10-a", "#!/bin/sh\n");
    script(r, "30-off", "#!/bin/sh\nexit 1\n");
    script(r, ".hidden", "#!/bin/sh\nexit 1\n");
    let admin_b = write(r, ADMIN_CHECKS_DIR, "20-b", "#!/bin/sh\n", 0o755);
    write(r, ADMIN_CHECKS_DIR, "15-admin", "#!/bin/sh\n", 0o755);
    symlink("/dev/null", r.join(ADMIN_CHECKS_DIR).join("30-off")).unwrap();
    // Disabling a check the image does not have is harmless.
    symlink("/dev/null", r.join(ADMIN_CHECKS_DIR).join("99-none")).unwrap();

    let checks = discover(r, DEFAULT);
    let names: Vec<&str> = checks.iter().map(Check::name).collect();
    assert_eq!(names, ["10-a", "15-admin", "20-b"]);
    assert_eq!(checks[2].path(), admin_b, "/etc wins");
    assert_eq!(checks[0].path(), r.join(IMAGE_CHECKS_DIR).join("10-a"));
    for c in &checks {
        assert!(c.required(), "{}", c.name());
        assert_eq!(c.timeout(), DEFAULT);
    }

    // Nothing to check is fine.
    assert!(discover(tempfile::tempdir().unwrap().path(), DEFAULT).is_empty());
}

#[test]
fn header_line_sets_wanted_required_and_timeout() {
    for (text, required, timeout) in [
        ("#!/bin/sh\necho hi\n", true, DEFAULT),
        (
            "#!/bin/sh\n# osctl-health: wanted timeout=30s\n",
            false,
            Duration::from_secs(30),
        ),
        ("#!/bin/sh\n#osctl-health: wanted\n", false, DEFAULT),
        (
            "#!/bin/sh\n# osctl-health: timeout=2m required\n",
            true,
            Duration::from_secs(120),
        ),
        (
            "#!/bin/bash\nset -eu\n\n  # osctl-health: timeout=500ms wanted\n",
            false,
            Duration::from_millis(500),
        ),
        // Only a comment counts.
        ("#!/bin/sh\necho '# osctl-health: wanted'\n", true, DEFAULT),
        ("#!/bin/sh\necho osctl-health: wanted\n", true, DEFAULT),
    ] {
        let (_root, check) = only_check(text);
        assert_eq!(check.required(), required, "{text:?}");
        assert_eq!(check.timeout(), timeout, "{text:?}");
    }

    // Past the first 4 KiB, a header is not looked for.
    let late = format!("#!/bin/sh\n{}# osctl-health: wanted\n", "#\n".repeat(3000));
    let (_root, check) = only_check(&late);
    assert!(check.required());

    // A binary (no header) takes the defaults.
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        IMAGE_CHECKS_DIR,
        "10-bin",
        "\x7fELF\x02\x01\x01\0\0\0",
        0o755,
    );
    let checks = discover(root.path(), Duration::from_secs(5));
    assert!(checks[0].required());
    assert_eq!(checks[0].timeout(), Duration::from_secs(5));
}

#[test]
fn a_header_that_does_not_parse_is_required_with_the_default_and_says_so() {
    for (text, why) in [
        (
            "#!/bin/sh\n# osctl-health: wanted timeout=30\necho ran\n",
            "timeout '30'",
        ),
        (
            "#!/bin/sh\n# osctl-health: wnated\necho ran\n",
            "unknown word 'wnated'",
        ),
        (
            "#!/bin/sh\n# osctl-health: wanted timeout=0s\necho ran\n",
            "must be more than zero",
        ),
    ] {
        let (_root, check) = only_check(text);
        let problem = check.problem().expect("a problem");
        assert!(problem.contains(why), "{problem}");
        assert!(!problem.contains('\n'), "{problem}");
        assert!(check.required(), "{text:?}: a typo must not relax a check");
        assert_eq!(check.timeout(), DEFAULT, "{text:?}");
        let result = run(&check);
        assert_eq!(result.outcome, Outcome::Passed, "{text:?}");
        assert!(
            result.output.contains("osctl-health"),
            "the problem is part of the result: {text:?}: {:?}",
            result.output
        );
        assert!(result.output.ends_with("ran\n"), "{:?}", result.output);
    }
    let (_root, check) = only_check("#!/bin/sh\n# osctl-health: wanted\n");
    assert_eq!(check.problem(), None);
}

#[test]
fn outcomes() {
    let r = run_only("#!/bin/sh\necho fine\n");
    assert_eq!(r.outcome, Outcome::Passed);
    assert!(r.passed());
    assert_eq!(r.output, "fine\n");
    assert_eq!(r.describe(), "10-check: passed");

    let r = run_only("#!/bin/sh\necho out\necho 'bad thing happened' >&2\necho\nexit 7\n");
    assert_eq!(r.outcome, Outcome::Failed { code: Some(7) });
    assert_eq!(
        r.output, "out\nbad thing happened\n\n",
        "stdout and stderr, in order"
    );
    assert_eq!(
        r.describe(),
        "10-check: exit status 7 (bad thing happened)",
        "the last non-empty line"
    );

    let r = run_only("#!/bin/sh\nkill -9 $$\n");
    assert_eq!(r.outcome, Outcome::Failed { code: None });
    assert_eq!(r.describe(), "10-check: killed by a signal");

    // No input: a check reading stdin gets end of file at once.
    let r = run_only("#!/bin/sh\nif read line; then exit 1; fi\n");
    assert_eq!(r.outcome, Outcome::Passed);
}

#[test]
fn a_check_that_cannot_run_is_not_run() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        IMAGE_CHECKS_DIR,
        "10-noexec",
        "#!/bin/sh\ntrue\n",
        0o644,
    );
    write(
        root.path(),
        IMAGE_CHECKS_DIR,
        "20-nointerp",
        "#!/nonexistent/interpreter\n",
        0o755,
    );
    let results: Vec<CheckResult> = discover(root.path(), DEFAULT).iter().map(run).collect();
    for r in &results {
        let Outcome::NotRun { why } = &r.outcome else {
            panic!("{} should not run: {:?}", r.name, r.outcome);
        };
        assert!(!why.is_empty());
        assert!(r.describe().contains("could not run"), "{}", r.describe());
    }
    assert!(
        matches!(&results[0].outcome, Outcome::NotRun { why } if why.contains("ermission")),
        "{:?}",
        results[0].outcome
    );
    let record = HealthRecord::from_results(results, "2026-01-01T00:00:00Z".into());
    assert_eq!(record.state, HealthState::Failed);
    assert_eq!(record.failed_check.as_deref(), Some("10-noexec"));
}

#[test]
fn output_keeps_the_tail() {
    let r = run_only(
        "#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do echo \"noise line $i\"; i=$((i+1)); done\necho 'the real error' >&2\nexit 1\n",
    );
    assert!(r.output.len() <= 2048, "{} bytes kept", r.output.len());
    assert!(r.output.len() > 1000, "{} bytes kept", r.output.len());
    assert!(r.output.ends_with("noise line 499\nthe real error\n"));
    assert!(!r.output.contains("noise line 0\n"));
    assert_eq!(r.describe(), "10-check: exit status 1 (the real error)");

    // Cut inside a multi-byte character: still text.
    let r = run_only("#!/bin/sh\ni=0\nwhile [ $i -lt 1500 ]; do printf 'é'; i=$((i+1)); done\n");
    assert!(r.output.len() <= 2048, "{:?}: {:?}", r.outcome, r.output);
    assert!(r.output.ends_with('é'), "{:?}: {:?}", r.outcome, r.output);
}

#[test]
fn time_limit_kills_the_check_and_its_children() {
    let root = tempfile::tempdir().unwrap();
    let pid_file = root.path().join("child.pid");
    script(
        root.path(),
        "10-hang",
        &format!(
            "#!/bin/sh\n# osctl-health: timeout=2s\nsleep 30 &\necho $! > {}\necho hanging\nsleep 30\n",
            pid_file.display()
        ),
    );
    let checks = discover(root.path(), DEFAULT);
    // Killed at its limit: a check that ran to its end would pass instead,
    // and it is not killed before the limit. (2 s: with 300 ms a loaded
    // machine once killed the script before it had written its child's pid.)
    let r = run(&checks[0]);
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert!(r.millis >= 2000, "killed before its limit: {} ms", r.millis);
    assert_eq!(r.output, "hanging\n");
    assert_eq!(r.describe(), "10-hang: timed out (hanging)");
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()));
        if state.is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "child {pid} survived the time limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wanted_failures_do_not_fail_the_record() {
    let root = tempfile::tempdir().unwrap();
    script(root.path(), "10-ok", "#!/bin/sh\n");
    script(
        root.path(),
        "20-wanted",
        "#!/bin/sh\n# osctl-health: wanted\necho meh\nexit 1\n",
    );
    let results: Vec<CheckResult> = discover(root.path(), DEFAULT).iter().map(run).collect();
    let record = HealthRecord::from_results(results.clone(), "2026-01-01T00:00:00Z".into());
    assert_eq!(record.state, HealthState::Checked);
    assert_eq!(record.reason, None);
    assert_eq!(record.failed_check, None);

    // The first failed required check is the reason.
    script(
        root.path(),
        "30-req",
        "#!/bin/sh\necho 'first' >&2\nexit 4\n",
    );
    script(root.path(), "40-req", "#!/bin/sh\nexit 5\n");
    let results: Vec<CheckResult> = discover(root.path(), DEFAULT).iter().map(run).collect();
    let record = HealthRecord::from_results(results, "2026-01-01T00:00:00Z".into());
    assert_eq!(record.state, HealthState::Failed);
    assert_eq!(record.failed_check.as_deref(), Some("30-req"));
    assert_eq!(
        record.reason.as_deref(),
        Some("health check 30-req: exit status 4 (first)")
    );
}

#[test]
fn record_json_shape() {
    let root = tempfile::tempdir().unwrap();
    script(root.path(), "10-ok", "#!/bin/sh\necho ok\n");
    script(
        root.path(),
        "20-slow",
        "#!/bin/sh\n# osctl-health: wanted timeout=100ms\nsleep 5\n",
    );
    write(root.path(), IMAGE_CHECKS_DIR, "30-noexec", "", 0o644);
    script(root.path(), "40-fails", "#!/bin/sh\nexit 9\n");
    let results: Vec<CheckResult> = discover(root.path(), DEFAULT).iter().map(run).collect();
    let record = HealthRecord::from_results(results, "2026-01-01T00:00:00Z".into());
    let mut v = serde_json::to_value(&record).unwrap();
    for c in v["checks"].as_array_mut().unwrap() {
        assert!(c["millis"].is_u64());
        c["millis"] = json!(0);
        if c["result"] == "not-run" {
            assert!(c["why"].is_string());
            c["why"] = json!("…");
        }
    }
    assert_eq!(
        v,
        json!({
            "state": "failed",
            "at": "2026-01-01T00:00:00Z",
            "reason": "health check 30-noexec: could not run: …"
                .replace('…', match &record.checks[2].outcome {
                    Outcome::NotRun { why } => why,
                    _ => unreachable!(),
                }),
            "failedCheck": "30-noexec",
            "checks": [
                {"name": "10-ok", "required": true, "result": "passed", "millis": 0, "output": "ok\n"},
                {"name": "20-slow", "required": false, "result": "timed-out", "millis": 0, "output": ""},
                {"name": "30-noexec", "required": true, "result": "not-run", "why": "…", "millis": 0, "output": ""},
                {"name": "40-fails", "required": true, "result": "failed", "code": 9, "millis": 0, "output": ""},
            ]
        })
    );
    // And back.
    let text = serde_json::to_string(&record).unwrap();
    let back: HealthRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, record);
    // A record from an older osctl without optional fields still reads.
    let old: HealthRecord =
        serde_json::from_value(json!({"state": "good", "at": "2026-01-01T00:00:00Z"})).unwrap();
    assert_eq!(old.state, HealthState::Good);
    assert!(old.checks.is_empty());
}
