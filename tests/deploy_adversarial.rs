//! Hostile sequences for the deployment state machine: files that went
//! bad, a crash followed by a *different* command or a reboot, pinned and
//! re-staged deployments that stop being staged, the booted deployment's
//! own files gone or unreadable. Each test states what must hold; the
//! crash-at-every-point comparisons are in deploy_crash.rs.

use crate::util::assess::{entry_files, loader_default, next_boot, use_tries};
use crate::util::machine::{Images, Machine};

/// A command line made from the images.
type Command = fn(&Images) -> Vec<&str>;

/// v1 booted, then v2 booted (v1 the rollback).
fn booted_v2(i: &Images) -> (Machine, String, String) {
    let mut m = Machine::new();
    let v1 = m.boot(&i.v1);
    let v2 = m.boot(&i.v2);
    (m, v1, v2)
}

/// A marker that does not parse (a hand edit, a damaged disk) is never
/// guessed at, and never blocks the machine's reports or its repair:
/// `status` and `fsck` report it, every command that changes deployments
/// refuses in one line and changes nothing, and `fsck --repair` removes it.
#[test]
fn an_unreadable_marker_is_reported_refused_and_repaired() {
    let i = Images::new();
    for marker in ["staged", "rollback"] {
        let (m, v1, v2) = booted_v2(&i);
        let pending = match marker {
            "staged" => Some(m.switch(&i.v3)),
            _ => {
                m.run(&["rollback"]);
                None
            }
        };
        let file = m.path(&format!("sysroot/state/{marker}"));
        std::fs::write(&file, "not a marker\n").unwrap();
        let shown = file.display().to_string();

        let st = m.status();
        let problems = st["status"]["osctl"]["problems"].to_string();
        assert!(
            problems.contains(&shown)
                && problems.contains("unreadable marker")
                && problems.contains("fsck --repair"),
            "{marker}: {st:#}"
        );
        let (ok, out) = m.fsck();
        assert!(!ok && out.contains(&shown), "{marker}: {out}");

        let before = m.layout();
        let default = loader_default(&m.osctl);
        for args in [
            &["switch", "--progress", "none", &i.v4] as &[&str],
            &["finalize"],
            &["rollback"],
            &["gc"],
            &["health", "bless"],
        ] {
            m.fails(args, &[&shown, "unreadable marker", "osctl fsck --repair"]);
        }
        assert_eq!(
            m.layout(),
            before,
            "{marker}: a refused command changed files"
        );
        assert_eq!(loader_default(&m.osctl), default, "{marker}");

        let out = m.run(&["fsck", "--repair"]);
        assert!(
            out.contains(&format!("removed unreadable marker sysroot/state/{marker}")),
            "{marker}: {out}"
        );
        assert!(!file.exists());
        m.osctl.fsck_clean();
        let r = m.roles();
        assert_eq!(r.booted.as_deref(), Some(v2.as_str()), "{marker}");
        match pending {
            // The update the marker named is no longer staged: an
            // abandoned deployment, removed by the repair.
            Some(v3) => {
                assert_eq!((r.staged, r.rollback.as_deref()), (None, Some(v1.as_str())));
                assert!(!m.exists(&v3), "{marker}");
            }
            // The default still names v1: finalized, not booted, it is what
            // boots next, as the queued rollback made it.
            None => assert_eq!(r.staged.as_deref(), Some(v1.as_str()), "{marker}"),
        }
        m.run(&["switch", "--progress", "none", &i.v4]);
    }
}

/// A crash after a command un-finalized the update it was replacing (the
/// step before its commit point), then not the same command but a reboot:
/// the machine boots that update (the default still names it). It is a
/// deployment like any other from then on: once the machine moves on, it
/// is the rollback, never dropped as an abandoned one.
#[test]
fn an_update_unfinalized_by_an_interrupted_command_is_not_lost() {
    let i = Images::new();
    let cases: [(&str, &str, Command); 3] = [
        (
            "switch replacing it",
            "stage:after-unfinalize-replaced",
            |i| vec!["switch", "--progress", "none", &i.v4],
        ),
        (
            "switch back to the booted image",
            "stage:after-unfinalize-replaced",
            |i| vec!["switch", "--progress", "none", &i.v2],
        ),
        ("rollback", "rollback:after-unfinalize", |_| {
            vec!["rollback"]
        }),
    ];
    for (what, point, command) in cases {
        let (mut m, _v1, v2) = booted_v2(&i);
        let v3 = m.switch(&i.v3);
        m.run(&["finalize"]);
        m.crash(point, &command(&i));
        // Power cut: the machine boots what loader.conf names.
        assert_eq!(m.reboot(), v3, "{what}");
        m.boot(&i.v4);
        let r = m.roles();
        assert_eq!(r.rollback.as_deref(), Some(v3.as_str()), "{what}: {r:?}");
        m.run(&["gc"]);
        assert!(m.exists(&v3), "{what}: the rollback was dropped");
        assert!(!m.exists(&v2), "{what}: gc prunes the older one");
        m.osctl.fsck_clean();
    }
}

/// The same crash on an offline sysroot (nothing booted: an installer's),
/// followed by another switch: the default must never name a deployment
/// that counts as abandoned, or every later command fails ("refusing to
/// remove deployment …: the default boot entry names it").
#[test]
fn an_offline_sysroot_survives_an_interrupted_rollback() {
    let i = Images::new();
    let m = Machine::new();
    let a = m.switch(&i.v1);
    m.run(&["finalize"]);
    let b = m.switch(&i.v2);
    m.run(&["finalize"]);
    m.crash("rollback:after-unfinalize", &["rollback"]);
    let c = m.switch(&i.v3);
    m.run(&["finalize"]);
    assert_eq!(loader_default(&m.osctl), format!("osctl-{c}.conf"));
    m.run(&["gc"]);
    let r = m.roles();
    assert_eq!(
        (r.staged.as_deref(), r.rollback.as_deref()),
        (Some(c.as_str()), Some(b.as_str()))
    );
    assert!(!m.exists(&a), "gc prunes the oldest");
    m.osctl.fsck_clean();
}

/// Pinned deployments are never removed — also not when they were staged
/// and stop being staged: replaced by another switch, cancelled by a switch
/// back to the booted image, or rolled back over.
#[test]
fn a_pinned_deployment_survives_being_unstaged() {
    let i = Images::new();
    // (what, stage and pin it → its id, then the command that unstages it)
    type Stage = fn(&Images, &Machine) -> String;
    let restaged_v1: Stage = |i, m| {
        let v1 = m.roles().rollback.unwrap();
        m.run(&["pin", &v1[..12]]);
        assert_eq!(m.switch(&i.v1), v1);
        v1
    };
    fn new_v3(i: &Images, m: &Machine) -> String {
        let v3 = m.switch(&i.v3);
        m.run(&["pin", &v3[..12]]);
        v3
    }
    let finalized_v3: Stage = |i, m| {
        let v3 = new_v3(i, m);
        m.run(&["finalize"]);
        v3
    };
    let cases: [(&str, Stage, Command); 6] = [
        (
            "a pinned rollback staged again, replaced",
            restaged_v1,
            |i| vec!["switch", "--progress", "none", &i.v4],
        ),
        ("a pinned update, replaced", new_v3, |i| {
            vec!["switch", "--progress", "none", &i.v4]
        }),
        ("a pinned update, cancelled", new_v3, |i| {
            vec!["switch", "--progress", "none", &i.v2]
        }),
        ("a pinned update, rolled back over", new_v3, |_| {
            vec!["rollback"]
        }),
        ("a pinned finalized update, replaced", finalized_v3, |i| {
            vec!["switch", "--progress", "none", &i.v4]
        }),
        (
            "a pinned finalized update, rolled back over",
            finalized_v3,
            |_| vec!["rollback"],
        ),
    ];
    for (what, stage, command) in cases {
        let (m, _v1, _v2) = booted_v2(&i);
        let pinned = stage(&i, &m);
        m.run(&command(&i));
        m.run(&["gc"]);
        assert!(m.exists(&pinned), "{what}: the pinned deployment is gone");
        let st = m.status();
        let listed = ["staged", "rollback"]
            .iter()
            .any(|role| st["status"][role]["composefs"]["verity"] == pinned.as_str())
            || st["status"]["otherDeployments"]
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|d| d["composefs"]["verity"] == pinned.as_str())
                });
        assert!(listed, "{what}: status does not show it: {st:#}");
        m.osctl.fsck_clean();
    }
}

/// `switch` to the rollback deployment's image stages that deployment
/// again; changing one's mind (a switch back to the booted image, or to
/// another image) must leave it what it was — the rollback — not remove
/// it like an update that never booted. One that failed here is the
/// exception: gone, as prune would remove it.
#[test]
fn a_deployment_staged_again_stays_when_unstaged() {
    let i = Images::new();
    for (what, then) in [("cancelled", 2), ("replaced", 3)] {
        let (m, v1, _v2) = booted_v2(&i);
        assert_eq!(m.switch(&i.v1), v1);
        let image = if then == 2 { &i.v2 } else { &i.v3 };
        m.run(&["switch", "--retain", "--progress", "none", image]);
        let r = m.roles();
        assert_eq!(r.rollback.as_deref(), Some(v1.as_str()), "{what}: {r:?}");
        assert!(m.exists(&v1), "{what}");
        m.osctl.fsck_clean();
    }

    // v2 failed here (its tries ran out), is staged again, then cancelled.
    let mut m = Machine::new();
    let v1 = m.boot(&i.v1);
    let v2 = m.switch(&i.v2);
    m.run(&["finalize"]);
    use_tries(&m.osctl, &v2, true);
    m.run(&["health", "check"]);
    assert_eq!(m.switch(&i.v2), v2);
    m.run(&["switch", "--retain", "--progress", "none", &i.v1]);
    assert!(
        !m.exists(&v2),
        "a failed image staged again and cancelled goes"
    );
    assert_eq!(m.roles().booted.as_deref(), Some(v1.as_str()));
    m.osctl.fsck_clean();
}

/// The booted deployment's entry deleted (by hand, or lost with the ESP's
/// last writes): fsck says so, and the next change writes it again — so a
/// trial has the booted deployment to fall back to.
#[test]
fn the_booted_deployment_gets_its_entry_back() {
    let i = Images::new();
    let (m, _v1, v2) = booted_v2(&i);
    let entry = m.path(&format!("boot/loader/entries/osctl-{v2}.conf"));
    std::fs::remove_file(&entry).unwrap();
    let (ok, out) = m.fsck();
    assert!(
        !ok && out.contains(&format!(
            "the booted deployment {} has no boot entry",
            &v2[..12]
        )),
        "{out}"
    );
    let v3 = m.switch(&i.v3);
    assert!(entry.exists(), "the switch wrote the booted entry again");
    m.run(&["finalize"]);
    assert_eq!(loader_default(&m.osctl), "osctl-*");
    // v3 never comes up: systemd-boot falls back to v2.
    use_tries(&m.osctl, &v3, true);
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v2.as_str()));
    assert!(entry_files(&m.osctl).contains(&format!("osctl-{v2}.conf")));

    // fsck --repair writes it too.
    std::fs::remove_file(&entry).unwrap();
    let out = m.run(&["fsck", "--repair"]);
    assert!(
        out.contains(&format!(
            "wrote the missing boot entry of the booted deployment {}",
            &v2[..12]
        )),
        "{out}"
    );
    assert!(entry.exists());

    // A boot partition that is not mounted (no loader.conf of osctl's):
    // nothing is written into the empty mount point; fsck asks about it.
    let loader = m.path("boot/loader");
    let away = m.path("boot-away");
    std::fs::rename(&loader, &away).unwrap();
    m.run(&["gc"]);
    assert!(
        !loader
            .join("entries")
            .join(format!("osctl-{v2}.conf"))
            .exists()
    );
    let (ok, out) = m.fsck();
    assert!(
        !ok && out.contains("is the boot partition mounted there?"),
        "{out}"
    );
}

/// The booted deployment's origin.json unreadable: it must not read as
/// "nothing booted" — a switch would stage without the machine's kernel
/// arguments and boot counter, and finalize would skip the /etc merge and
/// make it the exact default. Both refuse in one line naming the file;
/// status and fsck report it; rollback (the way out) still works.
#[test]
fn an_unreadable_booted_deployment_is_never_nothing_booted() {
    let i = Images::new();
    let (m, v1, v2) = booted_v2(&i);
    let v3 = m.switch(&i.v3);
    let origin = m.path(&format!("sysroot/state/deploy/{v2}/origin.json"));
    std::fs::write(&origin, "{\"version\": 1,").unwrap();
    let shown = origin.display().to_string();

    let before = m.layout();
    let default = loader_default(&m.osctl);
    for args in [
        &["finalize"] as &[&str],
        &["switch", "--progress", "none", &i.v4],
        &["health", "check"],
        &["health", "bless"],
    ] {
        m.fails(
            args,
            &[
                &format!("the booted deployment {}", &v2[..12]),
                &shown,
                "refusing",
            ],
        );
    }
    assert_eq!(m.layout(), before, "a refused command changed files");
    assert_eq!(loader_default(&m.osctl), default);
    let st = m.status();
    assert!(
        st["status"]["osctl"]["problems"]
            .to_string()
            .contains(&shown),
        "{st:#}"
    );
    let (ok, out) = m.fsck();
    assert!(!ok && out.contains(&shown), "{out}");

    let out = m.run(&["rollback"]);
    assert!(out.contains(&v1[..12]), "{out}");
    assert_eq!(loader_default(&m.osctl), format!("osctl-{v1}.conf"));
    assert!(!m.exists(&v3), "the rollback dropped the staged update");
    assert!(origin.exists(), "the unreadable deployment is kept");
}

/// Trials meeting other commands: marking the deployment on trial good
/// while a rollback is queued leaves the rollback queued; a switch during
/// a trial gets a trial of its own with the deployment on trial as its
/// fallback, and the older good one still behind it.
#[test]
fn trials_meet_rollback_and_switch() {
    let i = Images::new();
    // v2 boots on trial (one try used).
    let mut m = Machine::new();
    let v1 = m.boot(&i.v1);
    let v2 = m.switch(&i.v2);
    m.run(&["finalize"]);
    use_tries(&m.osctl, &v2, false);
    m.booted = Some(v2.clone());
    m.run(&["rollback"]);
    m.run(&["health", "bless"]);
    let r = m.roles();
    assert!(r.rollback_queued, "{r:?}");
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v1.as_str()));
    m.run(&["rollback", "--cancel"]);
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v2.as_str()));

    // v2 on trial again, from scratch; a switch to v3 during it.
    let mut m = Machine::new();
    let v1 = m.boot(&i.v1);
    let v2 = m.switch(&i.v2);
    m.run(&["finalize"]);
    use_tries(&m.osctl, &v2, false);
    m.booted = Some(v2.clone());
    let v3 = m.switch(&i.v3);
    m.run(&["finalize"]);
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v3.as_str()));
    use_tries(&m.osctl, &v3, true);
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v2.as_str()));
    use_tries(&m.osctl, &v2, true);
    assert_eq!(next_boot(&m.osctl).as_deref(), Some(v1.as_str()));
    m.booted = Some(v1.clone());
    m.run(&["health", "check"]);
    let st = m.status();
    let failed: Vec<_> = st["status"]["otherDeployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["osctl"]["health"]["state"] == "failed")
        .map(|d| d["composefs"]["verity"].as_str().unwrap().to_owned())
        .collect();
    assert!(failed.contains(&v2) && failed.contains(&v3), "{st:#}");
    assert_eq!(loader_default(&m.osctl), format!("osctl-{v1}.conf"));
    m.osctl.fsck_clean();
}
