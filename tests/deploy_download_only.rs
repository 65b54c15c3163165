//! "Stage now, apply later": `osctl upgrade --download-only` stages an
//! update that neither the shutdown finalize nor a reboot applies, and
//! `upgrade --from-downloaded [--apply]` releases it. Every other command
//! meets a downloaded update deliberately (docs/deployments.md has the
//! table): these tests walk each interaction on a scratch machine tracking
//! a tag in a real registry, and hold the refusals to their exact one-line
//! messages with the machine's whole state unchanged.

use crate::util::assess::{next_boot, on, rebooted};
use crate::util::machine::{Images, Machine, MachineState, machine_state};
use crate::util::run_ok;

/// The tag the machines track; each test moves it along.
const TAG: &str = "os:tracked";
const DOWNLOAD: &[&str] = &["upgrade", "--download-only", "--progress", "none"];
const UPGRADE: &[&str] = &["upgrade", "--progress", "none"];
const RELEASE: &[&str] = &["upgrade", "--from-downloaded"];
const NOTHING_DOWNLOADED: &str = "error: nothing downloaded: no download-only update is staged (`osctl upgrade --download-only` downloads one)";

/// Points [`TAG`] at `os:vN`.
fn retag(images: &Images, from: &str) {
    images
        .registry
        .copy_tag(from, TAG)
        .unwrap_or_else(|e| panic!("retag {from} → {TAG}: {e}"));
}

/// v1 booted from [`TAG`], which now points at `next`.
fn tracking(images: &Images, next: &str) -> Machine {
    retag(images, "os:v1");
    let mut m = Machine::new();
    m.boot(&images.registry.image_ref(TAG));
    retag(images, next);
    m
}

/// [`tracking`] `os:v2`, downloaded only; returns the machine and v2's id.
fn downloaded_v2(images: &Images) -> (Machine, String) {
    let m = tracking(images, "os:v2");
    m.run(DOWNLOAD);
    let v2 = m.roles().staged.expect("the download is staged");
    (m, v2)
}

fn short(id: &str) -> &str {
    &id[..12]
}

fn state(m: &Machine) -> MachineState {
    machine_state(&m.osctl, m.booted.as_deref())
}

/// `status`'s `downloadOnly` of the staged entry (`None`: nothing staged).
fn staged_download_only(m: &Machine) -> Option<bool> {
    m.status()["status"]["staged"]["downloadOnly"].as_bool()
}

#[track_caller]
fn assert_unchanged(what: &str, m: &Machine, before: &MachineState) {
    assert!(
        &state(m) == before,
        "{what} changed the machine:\n{:#?}\nbefore:\n{before:#?}",
        state(m)
    );
}

fn downloaded_line(reference: &str, id: &str) -> String {
    format!(
        "Downloaded {reference} as deployment {}; not applied at shutdown until `osctl upgrade --from-downloaded`\n",
        short(id)
    )
}

#[test]
fn a_download_waits_for_its_release_then_finalize_applies_it() {
    let images = Images::new();
    let mut m = tracking(&images, "os:v2");
    let reference = images.registry.image_ref(TAG);
    let v1 = m.booted.clone().unwrap();
    let loader = m.path("boot/loader/loader.conf");
    let default_before = std::fs::read_to_string(&loader).unwrap();

    let out = m.run(DOWNLOAD);
    let v2 = m.roles().staged.expect("staged");
    assert_eq!(out, downloaded_line(&reference, &v2));
    let st = m.status();
    assert_eq!(st["status"]["staged"]["composefs"]["verity"], v2.as_str());
    assert_eq!(st["status"]["staged"]["downloadOnly"], true);
    assert_eq!(st["status"]["booted"]["downloadOnly"], false);
    let human = m.run(&["status", "--format", "human"]);
    assert!(
        human.contains(
            " Download only: yes: not applied at shutdown (osctl upgrade --from-downloaded releases it)\n"
        ),
        "{human}"
    );
    assert_eq!(std::fs::read_to_string(&loader).unwrap(), default_before);
    assert_eq!(next_boot(&m.osctl), Some(v1.clone()));

    // The shutdown service (or the admin) runs finalize: it says so and
    // leaves everything as it is.
    let before = state(&m);
    let out = m.run(&["finalize"]);
    assert_eq!(
        out,
        format!(
            "Deployment {} is download-only: left staged, not finalized (`osctl upgrade --from-downloaded` releases it)\n",
            short(&v2)
        )
    );
    assert_unchanged("finalize", &m, &before);

    // A plain reboot starts v1 again; the download is still there.
    assert_eq!(m.reboot(), v1);
    assert_eq!(m.roles().staged.as_deref(), Some(v2.as_str()));
    assert_eq!(staged_download_only(&m), Some(true));

    // Downloading again: already there, nothing changes.
    let before = state(&m);
    let out = m.run(DOWNLOAD);
    assert_eq!(
        out,
        format!(
            "{reference} is already downloaded (deployment {}); not applied at shutdown until `osctl upgrade --from-downloaded`\n",
            short(&v2)
        )
    );
    assert_unchanged("a second --download-only", &m, &before);

    // Released: an ordinary staged update, which finalize applies.
    let out = m.run(RELEASE);
    assert_eq!(
        out,
        format!(
            "Released the downloaded deployment {}: it boots after the next reboot\n",
            short(&v2)
        )
    );
    assert_eq!(staged_download_only(&m), Some(false));
    assert_eq!(m.roles().staged.as_deref(), Some(v2.as_str()));
    let out = m.run(&["finalize"]);
    assert!(
        out.starts_with(&format!("Deployment {} boots next\n", short(&v2))),
        "{out}"
    );
    assert_eq!(next_boot(&m.osctl), Some(v2.clone()));
    assert_eq!(m.reboot(), v2);
    assert_eq!(m.status()["status"]["staged"], serde_json::Value::Null);
    let (ok, report) = m.fsck();
    assert!(ok, "{report}");
}

#[test]
fn from_downloaded_apply_finalizes_and_reboots() {
    let images = Images::new();
    let (m, v2) = downloaded_v2(&images);
    let out =
        run_ok(on(&m.osctl, m.booted.as_deref()).args(["upgrade", "--from-downloaded", "--apply"]));
    assert!(
        out.starts_with(&format!(
            "Released the downloaded deployment {}: it boots after the next reboot\n",
            short(&v2)
        )),
        "{out}"
    );
    assert!(rebooted(&m.osctl), "the reboot command ran: {out}");
    assert_eq!(next_boot(&m.osctl), Some(v2));
}

/// A plain `upgrade` or `switch` replaces or releases a download; `switch`
/// to the booted image and `rollback` drop it; `pin`, `gc` and the
/// recovery keep it.
#[test]
fn every_command_meets_a_download_deliberately() {
    let images = Images::new();
    let reference = images.registry.image_ref(TAG);

    // Plain upgrade to the downloaded image: released, as asked.
    let (m, v2) = downloaded_v2(&images);
    let out = m.run(UPGRADE);
    assert_eq!(
        out,
        format!(
            "{reference} was downloaded only (deployment {}); now staged: it boots after the next reboot\n",
            short(&v2)
        )
    );
    assert_eq!(staged_download_only(&m), Some(false));
    m.run(&["finalize"]);
    assert_eq!(next_boot(&m.osctl), Some(v2));

    // Plain upgrade when a newer image appeared: the newer one is staged
    // for the next boot and the download dropped.
    let (m, v2) = downloaded_v2(&images);
    retag(&images, "os:v3");
    let out = m.run(UPGRADE);
    let v3 = m.roles().staged.unwrap();
    assert_eq!(
        out,
        format!(
            "Replaced the staged deployment {} (it will not boot)\nStaged {reference} as deployment {}; it boots after the next reboot\n",
            short(&v2),
            short(&v3)
        )
    );
    assert_ne!(v3, v2);
    assert!(!m.exists(&v2), "the replaced download is dropped");
    assert_eq!(staged_download_only(&m), Some(false));

    // --download-only when a newer image appeared: the newer download
    // replaces the older one.
    let (m, v2) = downloaded_v2(&images);
    retag(&images, "os:v3");
    let out = m.run(DOWNLOAD);
    let v3 = m.roles().staged.unwrap();
    assert_eq!(
        out,
        format!(
            "Replaced the downloaded deployment {}\n{}",
            short(&v2),
            downloaded_line(&reference, &v3)
        )
    );
    assert!(!m.exists(&v2));
    assert_eq!(staged_download_only(&m), Some(true));

    // switch back to the booted image: nothing to update to, the download
    // goes.
    let (m, v2) = downloaded_v2(&images);
    let v1 = m.booted.clone().unwrap();
    let out = m.run(&["switch", "--progress", "none", &images.v1]);
    assert_eq!(
        out,
        format!(
            "{} is the booted deployment ({}); nothing staged\nDeployment {} is no longer staged or queued: the booted one boots next\n",
            images.v1,
            short(&v1),
            short(&v2)
        )
    );
    assert_eq!(m.roles().staged, None);
    assert!(!m.exists(&v2));

    // rollback drops the download like a staged update.
    let mut m = tracking(&images, "os:v2");
    let v1 = m.booted.clone().unwrap();
    m.boot(&images.registry.image_ref(TAG));
    retag(&images, "os:v3");
    m.run(DOWNLOAD);
    let v3 = m.roles().staged.unwrap();
    let out = m.run(&["rollback"]);
    assert_eq!(
        out,
        format!("Next boot: rollback deployment {}\n", short(&v1))
    );
    let roles = m.roles();
    assert!(roles.rollback_queued && roles.staged.is_none(), "{roles:?}");
    assert!(!m.exists(&v3));

    // pin keeps it downloaded (and pinned); finalize still leaves it.
    let (m, v2) = downloaded_v2(&images);
    m.run(&["pin", short(&v2)]);
    let st = m.status();
    assert_eq!(st["status"]["staged"]["pinned"], true);
    assert_eq!(st["status"]["staged"]["downloadOnly"], true);
    let before = state(&m);
    m.run(&["finalize"]);
    assert_unchanged("finalize of a pinned download", &m, &before);

    // gc (and its prune) keep it: it is staged, its image has a root.
    let (m, v2) = downloaded_v2(&images);
    m.run(&["gc"]);
    assert!(m.exists(&v2));
    assert_eq!(staged_download_only(&m), Some(true));
    let (ok, report) = m.fsck();
    assert!(ok, "{report}");

    // The recovery keeps it: a rollback that stopped after its marker
    // left a stale rollback marker, which the next locked command removes.
    let mut m = tracking(&images, "os:v2");
    m.boot(&images.registry.image_ref(TAG));
    retag(&images, "os:v3");
    m.run(DOWNLOAD);
    let v3 = m.roles().staged.unwrap();
    m.crash("rollback:after-marker", &["rollback"]);
    assert_eq!(staged_download_only(&m), Some(true));
    m.run(&["gc"]);
    assert!(!m.path("sysroot/state/rollback").exists());
    assert_eq!(m.roles().staged.as_deref(), Some(v3.as_str()));
    assert_eq!(staged_download_only(&m), Some(true));
}

/// Refusals: one line naming the rule, the machine unchanged, nothing
/// downloaded.
#[test]
fn refusals_name_the_rule_and_change_nothing() {
    let images = Images::new();

    // --from-downloaded with nothing downloaded: nothing staged, an
    // ordinary staged update, nothing ever deployed.
    let m = tracking(&images, "os:v2");
    let before = state(&m);
    assert_eq!(m.fails(RELEASE, &[]), NOTHING_DOWNLOADED);
    assert_unchanged("--from-downloaded, nothing staged", &m, &before);
    m.run(UPGRADE);
    let v2 = m.roles().staged.unwrap();
    let before = state(&m);
    assert_eq!(m.fails(RELEASE, &[]), NOTHING_DOWNLOADED);
    assert_unchanged("--from-downloaded, an update staged", &m, &before);
    let fresh = Machine::new();
    assert_eq!(fresh.fails(RELEASE, &[]), NOTHING_DOWNLOADED);

    // --download-only while an ordinary update is staged (pending, then
    // finalized): refused before anything is pulled.
    let staged = format!(
        "error: deployment {} is staged to boot next: --download-only does not replace it (`osctl upgrade` stages the update for the next boot instead)",
        short(&v2)
    );
    retag(&images, "os:v3");
    for what in ["pending", "finalized"] {
        if what == "finalized" {
            m.run(&["finalize"]);
        }
        let before = state(&m);
        let objects = m.osctl.objects();
        assert_eq!(m.fails(DOWNLOAD, &[]), staged, "{what}");
        assert_unchanged(what, &m, &before);
        assert_eq!(m.osctl.objects(), objects, "{what}: nothing pulled");
    }

    // --download-only while a rollback is queued.
    let mut m = tracking(&images, "os:v2");
    let v1 = m.booted.clone().unwrap();
    m.boot(&images.registry.image_ref(TAG));
    retag(&images, "os:v3");
    m.run(&["rollback"]);
    let before = state(&m);
    let objects = m.osctl.objects();
    assert_eq!(
        m.fails(DOWNLOAD, &[]),
        format!(
            "error: a rollback to deployment {} is queued for the next boot: --download-only does not cancel it (`osctl rollback --cancel` does)",
            short(&v1)
        )
    );
    assert_unchanged("--download-only, rollback queued", &m, &before);
    assert_eq!(m.osctl.objects(), objects, "nothing pulled");

    // Flags that contradict each other are usage errors (clap's exit 2).
    for (args, want) in [
        (
            &["--download-only", "--check"][..],
            "error: the argument '--download-only' cannot be used with '--check'",
        ),
        (
            &["--download-only", "--apply"],
            "error: the argument '--download-only' cannot be used with '--apply'",
        ),
        (
            &["--from-downloaded", "--check"],
            "error: the argument '--from-downloaded' cannot be used with '--check'",
        ),
        (
            &["--from-downloaded", "--download-only"],
            "error: the argument '--from-downloaded' cannot be used with '--download-only'",
        ),
    ] {
        let before = state(&m);
        let out = crate::util::booted_cmd(&m.osctl, m.booted.as_deref())
            .arg("upgrade")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            crate::util::error_lines(&stderr).first().copied(),
            Some(want),
            "{args:?}: {stderr}"
        );
        assert_unchanged(&format!("{args:?}"), &m, &before);
    }
}

/// The tracked tag moved back to the rollback's image (a release
/// withdrawn): there is nothing to download. The rollback stays the
/// rollback, with its health record (staging it download-only in place
/// made `rollback` refuse with "nothing but the booted deployment
/// exists"), and an earlier download the tag no longer points to is
/// dropped, as when the tag moves back to the booted image.
#[test]
fn a_download_of_the_rollback_image_leaves_the_rollback() {
    let images = Images::new();
    let reference = images.registry.image_ref(TAG);
    let mut m = tracking(&images, "os:v2");
    let v1 = m.booted.clone().unwrap();
    m.boot(&reference);
    assert_eq!(m.roles().rollback.as_deref(), Some(v1.as_str()));
    let already = format!(
        "{reference} is deployment {} on this machine already (the rollback): nothing downloaded (`osctl rollback` boots it)\n",
        short(&v1)
    );

    // The deployments, boot entries, status and fsck; the store's record
    // of what the reference was last pulled as moves, as after any pull.
    let deployments = |m: &Machine| {
        let mut s = state(m);
        s.files.retain(|path, _| {
            !path.starts_with("sysroot/composefs/") && !path.starts_with("sysroot/osctl/images/")
        });
        s
    };
    retag(&images, "os:v1");
    let before = deployments(&m);
    assert_eq!(m.run(DOWNLOAD), already);
    assert!(
        deployments(&m) == before,
        "the rollback or the deployments changed"
    );

    // An earlier download goes: the tag no longer points to it.
    retag(&images, "os:v3");
    m.run(DOWNLOAD);
    let v3 = m.roles().staged.unwrap();
    retag(&images, "os:v1");
    assert_eq!(
        m.run(DOWNLOAD),
        format!(
            "Dropped the downloaded deployment {}: {reference} no longer points to it\n{already}",
            short(&v3)
        )
    );
    assert!(!m.exists(&v3));
    // Its image goes with the next gc, as a dropped update's does.
    m.run(&["gc"]);
    assert!(
        deployments(&m) == before,
        "the rollback or the deployments changed"
    );

    assert_eq!(
        m.run(&["rollback"]),
        format!("Next boot: rollback deployment {}\n", short(&v1))
    );
    assert_eq!(next_boot(&m.osctl), Some(v1));
}

/// A download released without `--apply` (to go at the next shutdown), or
/// an update of the same image staged by hand: a download-only timer run
/// before the reboot finds the image it would download already booting
/// next. It says so and succeeds, the machine unchanged, instead of
/// failing on every run until the reboot ("is staged to boot next"); a
/// newer image is still refused (`refusals_name_the_rule_and_change_nothing`).
#[test]
fn a_download_of_what_boots_next_already_changes_nothing() {
    let images = Images::new();
    let reference = images.registry.image_ref(TAG);
    let (released, v2) = downloaded_v2(&images);
    released.run(RELEASE);
    let by_hand = tracking(&images, "os:v2");
    by_hand.run(UPGRADE);
    let boots_next = |id: &str| {
        format!(
            "{reference} already boots next (deployment {})\n",
            short(id)
        )
    };
    for (what, m) in [("released", &released), ("staged by hand", &by_hand)] {
        let v2 = m.roles().staged.unwrap();
        for when in ["pending", "finalized"] {
            if when == "finalized" {
                m.run(&["finalize"]);
            }
            let before = state(m);
            assert_eq!(m.run(DOWNLOAD), boots_next(&v2), "{what}, {when}");
            assert_unchanged(what, m, &before);
        }
    }
    assert_eq!(released.roles().staged.as_deref(), Some(v2.as_str()));
}
