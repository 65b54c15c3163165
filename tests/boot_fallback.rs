//! Automatic fallback on a scratch sysroot: systemd-boot's boot counting is
//! played by renaming entry files (as systemd-boot does), its choice of
//! entry by a stand-in that follows its sort order; then osctl must notice
//! the failure, report it, restore an exact default, refuse the image for
//! upgrades, and never end a later trial because of an old failure.

use crate::util::assess::*;
use crate::util::{push_tag, run_fails, run_ok};

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
    run_fails(on(&osctl, Some(&v1)).arg("rollback"), &["no rollback"]);
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
    let err = run_fails(
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
