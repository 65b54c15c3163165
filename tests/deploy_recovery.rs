//! What a machine does with the leftovers of crashes and with files that
//! went bad: it reports them, keeps working around them, and the next
//! command that changes deployments (or `fsck --repair`) clears them. And
//! the rules that keep "nothing booted" and "rollback" from meaning the
//! wrong thing.

use crate::util::assess::{on, use_tries};
use crate::util::machine::{Images, Roles, boot, crash_at, fsck, roles, run, status, switch};
use crate::util::{Osctl, assert_fails_naming, booted_cmd, run_fails, run_ok};

/// A fresh machine that booted v1 (finalized, marked good).
fn booted_v1(images: &Images) -> (Osctl, String) {
    let osctl = Osctl::new();
    let v1 = boot(&osctl, None, &images.v1);
    (osctl, v1)
}

fn staged_marker(osctl: &Osctl) -> std::path::PathBuf {
    osctl.sysroot().join("sysroot/state/staged")
}

/// Issue 9 #4: finalize crashed after the new default (its marker still
/// there), the machine booted the update, which failed and fell back. The
/// old marker must never stage it again: the next finalize changes nothing.
#[test]
fn a_finalized_update_never_becomes_staged_again() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    crash_at(&osctl, Some(&v1), "finalize:after-default", &["finalize"]);
    assert!(staged_marker(&osctl).exists(), "the crash left the marker");

    // systemd-boot tries v2 three times; it never comes up; v1 again.
    use_tries(&osctl, &v2, true);
    let r = roles(&osctl, Some(&v1));
    assert_eq!(r.staged, None, "{r:?}");
    run(&osctl, Some(&v1), &["health", "check"]);
    assert!(!staged_marker(&osctl).exists());
    let out = run(&osctl, Some(&v1), &["finalize"]);
    assert_eq!(out.trim(), "Nothing staged");
    assert_eq!(
        crate::util::assess::loader_default(&osctl),
        format!("osctl-{v1}.conf")
    );

    // The same with a rollback instead of a fallback: boot v2 (it comes
    // up), roll back to v1, reboot into v1.
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    crash_at(&osctl, Some(&v1), "finalize:after-default", &["finalize"]);
    use_tries(&osctl, &v2, false);
    run(&osctl, Some(&v2), &["rollback"]);
    let r = roles(&osctl, Some(&v1));
    assert_eq!((r.staged, r.rollback.as_deref()), (None, Some(v2.as_str())));
    assert_eq!(
        run(&osctl, Some(&v1), &["finalize"]).trim(),
        "Nothing staged"
    );
}

/// Issue 9 #3: rollback is idempotent; undoing a queued rollback is
/// `rollback --cancel`.
#[test]
fn rollback_twice_is_one_rollback() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    run(&osctl, None, &["finalize"]);
    run(&osctl, Some(&v2), &["health", "bless"]);
    let v3 = switch(&osctl, Some(&v2), &images.v3);

    let queued = Roles {
        booted: Some(v2.clone()),
        staged: None,
        rollback: Some(v1.clone()),
        rollback_queued: true,
    };
    for _ in 0..2 {
        let out = run(&osctl, Some(&v2), &["rollback"]);
        assert!(out.contains(&v1[..12]), "{out}");
        assert_eq!(roles(&osctl, Some(&v2)), queued);
    }
    assert!(
        !osctl
            .sysroot()
            .join(format!("sysroot/state/deploy/{v3}"))
            .exists(),
        "the staged update was dropped"
    );
    let out = run(&osctl, Some(&v2), &["rollback", "--cancel"]);
    assert!(out.contains("Rollback cancelled"), "{out}");
    let r = roles(&osctl, Some(&v2));
    assert!(!r.rollback_queued, "{r:?}");
    assert_eq!(
        crate::util::assess::loader_default(&osctl),
        format!("osctl-{v2}.conf")
    );
    let out = run(&osctl, Some(&v2), &["rollback", "--cancel"]);
    assert!(out.contains("No rollback is queued"), "{out}");
}

/// Issue 9 #6: a removal interrupted halfway leaks nothing for long: fsck
/// names the leftovers, the next command that changes deployments (here
/// `fsck --repair`) removes them, and gc then frees the image.
#[test]
fn an_interrupted_removal_is_reported_and_cleared() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    crash_at(
        &osctl,
        Some(&v1),
        "drop:after-rename",
        &["switch", "--progress", "none", &images.v1],
    );
    let deploy = osctl.sysroot().join("sysroot/state/deploy");
    assert!(deploy.join(format!(".del-{v2}")).exists());
    let root = osctl
        .sysroot()
        .join(format!("sysroot/composefs/images/refs/deploy/{v2}"));
    assert!(root.exists(), "the store root is still there");

    let (ok, out) = fsck(&osctl, Some(&v1));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("sysroot/state/deploy/.del-{v2}")),
        "{out}"
    );
    assert!(out.contains(&format!("store root deploy/{v2}")), "{out}");

    let out = run(&osctl, Some(&v1), &["fsck", "--repair"]);
    assert!(
        out.contains(&format!("removed leftover .del-{v2}")),
        "{out}"
    );
    assert!(!deploy.join(format!(".del-{v2}")).exists());
    assert!(!root.exists());
    osctl.fsck_clean();
}

/// Issue 9 #7: "nothing booted" only when the command line says so; a
/// command line that cannot be read is an error, and each test hook
/// announces itself.
#[test]
fn an_unreadable_kernel_command_line_is_an_error() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let missing = osctl.sysroot().join("no-such-cmdline");
    let out = osctl
        .cmd()
        .env("OSCTL_CMDLINE_FILE", &missing)
        .args(["switch", "--progress", "none", &images.v2])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "osctl: warning: test hook OSCTL_CMDLINE_FILE={} is active",
            missing.display()
        )),
        "{stderr}"
    );
    assert_fails_naming(
        &out,
        &[
            &missing.display().to_string(),
            "cannot read the kernel command line",
        ],
    );
    assert_eq!(roles(&osctl, Some(&v1)).staged, None, "nothing staged");

    // The other hooks announce themselves too.
    let out = booted_cmd(&osctl, Some(&v1))
        .env("OSCTL_FAILPOINT", "pin:after-origin")
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("osctl: warning: test hook OSCTL_FAILPOINT=pin:after-origin is active"),
        "{stderr}"
    );
    let out = booted_cmd(&osctl, Some(&v1))
        .env("OSCTL_REBOOT_COMMAND", "true")
        .args(["switch", "--apply", "--progress", "none", &images.v2])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("osctl: warning: test hook OSCTL_REBOOT_COMMAND=true is active"),
        "{stderr}"
    );
}

/// Issue 9 #16: on an offline sysroot (an installer's), switching again
/// keeps the default on an existing entry.
#[test]
fn an_offline_sysroot_keeps_its_default() {
    let images = Images::new();
    let osctl = Osctl::new();
    let a = switch(&osctl, None, &images.v1);
    run(&osctl, None, &["finalize"]);
    let b = switch(&osctl, None, &images.v2);
    let loader = crate::util::assess::loader_default(&osctl);
    assert_eq!(loader, format!("osctl-{a}.conf"));
    assert!(
        osctl
            .sysroot()
            .join(format!("boot/loader/entries/osctl-{a}.conf"))
            .exists()
    );
    let r = roles(&osctl, None);
    assert_eq!(
        (r.staged.as_deref(), r.rollback.as_deref()),
        (Some(b.as_str()), Some(a.as_str()))
    );
    // Switching once more replaces b, never a.
    let c = switch(&osctl, None, &images.v3);
    assert_eq!(
        crate::util::assess::loader_default(&osctl),
        format!("osctl-{a}.conf")
    );
    assert!(
        !osctl
            .sysroot()
            .join(format!("sysroot/state/deploy/{b}"))
            .exists()
    );
    run(&osctl, None, &["finalize"]);
    assert_eq!(
        crate::util::assess::loader_default(&osctl),
        format!("osctl-{c}.conf")
    );
    osctl.fsck_clean();
}

/// Issue 9 #21 and #23: one unreadable origin or boot entry never blocks
/// the machine: status and fsck report it, switch, rollback and gc work,
/// and the next change rewrites the entry.
#[test]
fn one_bad_file_does_not_block_the_machine() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = boot(&osctl, Some(&v1), &images.v2);

    // A power cut left v1's entry empty.
    let entry = osctl
        .sysroot()
        .join(format!("boot/loader/entries/osctl-{v1}.conf"));
    std::fs::write(&entry, "").unwrap();
    let st = status(&osctl, Some(&v2));
    let problems = st["status"]["osctl"]["problems"].to_string();
    assert!(
        problems.contains(&format!("osctl-{v1}.conf")) && problems.contains("no `linux` line"),
        "{st:#}"
    );
    let human = run(&osctl, Some(&v2), &["status", "--format", "human"]);
    assert!(
        human.contains(&format!(
            "Problem: boot entry loader/entries/osctl-{v1}.conf"
        )),
        "{human}"
    );
    let (ok, out) = fsck(&osctl, Some(&v2));
    assert!(!ok && out.contains(&format!("osctl-{v1}.conf")), "{out}");
    // The next change rewrites it from v1's origin.
    let v3 = boot(&osctl, Some(&v2), &images.v3);
    let text = std::fs::read_to_string(&entry).unwrap();
    assert!(text.contains(&format!("{v1} quiet")), "{text}");
    osctl.fsck_clean();

    // v1 (neither booted nor the rollback now) has its origin go bad: it is
    // reported, left out of every decision, never removed (it may be
    // pinned), and everything else works.
    let origin = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{v1}/origin.json"));
    std::fs::write(&origin, "{\"version\": 1, \"image\": ").unwrap();
    let st = status(&osctl, Some(&v3));
    let problems = st["status"]["osctl"]["problems"].to_string();
    assert!(
        problems.contains(&format!("deployment {} cannot be read", &v1[..12]))
            && problems.contains("origin.json: unreadable"),
        "{st:#}"
    );
    let (ok, out) = fsck(&osctl, Some(&v3));
    assert!(
        !ok && out.contains(&format!("deployment {} cannot be read", &v1[..12])),
        "{out}"
    );
    run(&osctl, Some(&v3), &["gc"]);
    assert!(origin.exists(), "a broken deployment is never removed");
    let out = run(&osctl, Some(&v3), &["rollback"]);
    assert!(out.contains(&v2[..12]), "{out}");
    run(&osctl, Some(&v3), &["rollback", "--cancel"]);
    // Switching to its image names the problem instead of guessing.
    run_fails(
        booted_cmd(&osctl, Some(&v3)).args(["switch", "--progress", "none", &images.v1]),
        &[&v1[..12], "cannot be read", "origin.json"],
    );
    // Another switch works.
    run(
        &osctl,
        Some(&v3),
        &["switch", "--progress", "none", &images.v2],
    );
}

/// Issue 9 #21: two switches one after the other: the second says it
/// replaced the first.
#[test]
fn a_second_switch_says_what_it_replaced() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    let out = run(
        &osctl,
        Some(&v1),
        &["switch", "--progress", "none", &images.v3],
    );
    assert!(
        out.contains(&format!("Replaced the staged deployment {}", &v2[..12])),
        "{out}"
    );
}

/// Issue 9 #21: a --sysroot that does not exist is an error for status too.
#[test]
fn status_of_a_missing_sysroot_is_an_error() {
    let osctl = Osctl::new();
    let missing = osctl.sysroot().join("nope");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osctl"))
        .arg("--sysroot")
        .arg(&missing)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    assert_fails_naming(
        &out,
        &[
            &format!("sysroot {}", missing.display()),
            "No such file or directory",
        ],
    );
}

/// Issue 9 #9: a health record that cannot be read never lets bless mark
/// the deployment good.
#[test]
fn bless_refuses_an_unreadable_health_record() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = switch(&osctl, Some(&v1), &images.v2);
    run(&osctl, Some(&v1), &["finalize"]);
    use_tries(&osctl, &v2, false);
    let health = osctl
        .sysroot()
        .join(format!("sysroot/state/deploy/{v2}/health.json"));
    std::fs::write(&health, "{\"state\": \"fail").unwrap();
    let entry_before = crate::util::assess::entry_of(&osctl, &v2);
    let err = run_fails(
        booted_cmd(&osctl, Some(&v2)).args(["health", "bless"]),
        &[
            "health.json: unreadable",
            "not marking deployment",
            &v2[..12],
        ],
    );
    assert!(err.contains("osctl health check"), "{err}");
    assert_eq!(
        crate::util::assess::entry_of(&osctl, &v2),
        entry_before,
        "still counted"
    );
    let st = status(&osctl, Some(&v2));
    assert!(
        st["status"]["osctl"]["problems"]
            .to_string()
            .contains("health.json"),
        "{st:#}"
    );
    // A check run writes a good record; then bless works.
    run_ok(on(&osctl, Some(&v2)).args(["health", "check"]));
    run(&osctl, Some(&v2), &["health", "bless"]);
    assert_eq!(
        crate::util::assess::entry_of(&osctl, &v2),
        format!("osctl-{v2}.conf")
    );
}

/// A boot dir that lost osctl's entries (the ESP not mounted, a hand
/// cleanup) makes no deployment look like a leftover: commands remove
/// nothing, status and fsck say what is missing, and once the entries are
/// back all is as before.
#[test]
fn missing_entries_never_remove_deployments() {
    let images = Images::new();
    let (osctl, v1) = booted_v1(&images);
    let v2 = boot(&osctl, Some(&v1), &images.v2);
    let entries = osctl.sysroot().join("boot/loader/entries");
    let saved = osctl.sysroot().join("saved-entries");
    std::fs::rename(&entries, &saved).unwrap();
    std::fs::create_dir(&entries).unwrap();

    run(&osctl, Some(&v2), &["pin", &v2[..12]]);
    run(&osctl, Some(&v2), &["gc"]);
    let v1_state = osctl.sysroot().join(format!("sysroot/state/deploy/{v1}"));
    assert!(v1_state.join("origin.json").exists(), "v1 was removed");
    let kernels = std::fs::read_dir(osctl.sysroot().join("boot/osctl"))
        .unwrap()
        .count();
    assert_eq!(kernels, 2, "v1's kernel was removed");
    let st = status(&osctl, Some(&v2));
    let problems = st["status"]["osctl"]["problems"].to_string();
    assert!(
        problems.contains(&format!("deployment {} has no boot entry", &v1[..12]))
            && problems.contains("is the boot partition mounted there?"),
        "{st:#}"
    );
    let (ok, out) = fsck(&osctl, Some(&v2));
    assert!(
        !ok && out.contains(&format!("deployment {} has no boot entry", &v1[..12])),
        "{out}"
    );

    std::fs::remove_dir_all(&entries).unwrap();
    std::fs::rename(&saved, &entries).unwrap();
    let r = roles(&osctl, Some(&v2));
    assert_eq!(r.rollback.as_deref(), Some(v1.as_str()));
    osctl.fsck_clean();
}
