//! Missing and damaged objects (issue 9, #18; gc on a damaged store, #21):
//! `fsck` names the images a bad object belongs to, `switch` refuses a
//! damaged image, a re-pull re-verifies before it says "up to date" and
//! fetches exactly the damaged layers, `image rm` + `image pull` does not
//! reuse a damaged layer, `fsck --repair` clears the damage for a re-pull,
//! and `gc` still runs (and says what is damaged) when it cannot sweep.

use std::path::{Path, PathBuf};

use crate::util::store::{fsck, link_target, object_of_size};
use crate::util::{Osctl, booted_cmd, os_spec};
use osctl_testutil::{BuiltImage, Entry, ImageSpec, Layer, write_layout};

/// Size of the file in the shared layer: no other object has it.
const SHARED_SIZE: u64 = 70_003;

/// The layer every test damages, shared by images "a" and "b".
fn shared_layer() -> Layer {
    Layer::new(vec![Entry::file(
        "usr/share/shared",
        vec![b's'; SHARED_SIZE as usize],
    )])
}

/// A bootable image: os_spec's layer (own to `version`) + the shared layer.
fn image(dir: &Path, version: &str) -> (String, BuiltImage) {
    let mut spec: ImageSpec = os_spec(version, &[], vec![]);
    spec.layers.push(shared_layer());
    let layout = dir.join(version);
    let built = write_layout(&layout, "v", &spec).unwrap();
    (format!("oci:{}:v", layout.display()), built)
}

fn shared_object(osctl: &Osctl) -> PathBuf {
    object_of_size(osctl, SHARED_SIZE)
}

fn truncate(path: &Path) {
    let data = std::fs::read(path).unwrap();
    std::fs::write(path, &data[..data.len() / 2]).unwrap();
}

/// `osctl fsck --repair`; its stdout. It must run to its end, and exit 1
/// exactly when it leaves images to pull again (like e2fsck, success means
/// nothing is left to do by hand).
fn repair(osctl: &Osctl) -> String {
    let out = osctl.run(&["fsck", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Repaired: "), "{text}{stderr}");
    let want = if text.contains("pull again: ") { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{text}{stderr}");
    text
}

fn pull_summary(osctl: &Osctl, reference: &str) -> String {
    osctl.pull(reference)
}

#[test]
fn a_deleted_object_is_named_by_fsck_and_fetched_again_by_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, built) = image(dir.path(), "1.0");
    let osctl = Osctl::new();
    osctl.pull(&a);
    let object = shared_object(&osctl);
    let object_hex = format!(
        "{}{}",
        object
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        object.file_name().unwrap().to_string_lossy()
    );
    std::fs::remove_file(&object).unwrap();

    // fsck names the image that needs the object.
    let (ok, report) = fsck(&osctl);
    assert!(!ok, "{report}");
    let about: Vec<&str> = report.lines().filter(|l| l.contains(&object_hex)).collect();
    assert!(!about.is_empty(), "{report}");
    for line in about {
        assert!(line.ends_with(&format!("(needed by {a})")), "{report}");
    }

    // switch pulls first, and the pull re-verifies the image: it fetches
    // the damaged layer again (with a warning) instead of staging an image
    // with a file missing. (The stage step's own check, for images staged
    // without a pull, is tested in osctl-store's tests/check_image.rs.)
    let out = booted_cmd(&osctl, None)
        .args(["switch", "--progress", "none", &a])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("image {a} is damaged"))
            && stderr.contains(&format!("layer 2 ({})", built.layer_digests[1]))
            && stderr.contains(&format!(
                "object {object_hex} (/usr/share/shared) is missing"
            )),
        "{stderr}"
    );
    osctl.fsck_clean();
    shared_object(&osctl);

    // Once repaired, a re-pull is "up to date" again.
    let out = pull_summary(&osctl, &a);
    assert!(
        out.starts_with(&format!("Image is up to date: {a}")),
        "{out}"
    );
}

#[test]
fn a_re_pull_of_a_damaged_image_fetches_only_the_damaged_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = image(dir.path(), "1.0");
    let osctl = Osctl::new();
    osctl.pull(&a);
    std::fs::remove_file(shared_object(&osctl)).unwrap();
    let out = pull_summary(&osctl, &a);
    assert!(
        out.starts_with(&format!("Pulled: {a}")) && out.contains("1 fetched, 1 already present"),
        "{out}"
    );
    osctl.fsck_clean();
}

#[test]
fn a_truncated_shared_object_is_not_reused_after_rm_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = image(dir.path(), "1.0");
    let (b, _) = image(dir.path(), "2.0");
    let osctl = Osctl::new();
    osctl.pull(&a);
    osctl.pull(&b);
    let object = shared_object(&osctl);
    truncate(&object);

    let (ok, report) = fsck(&osctl);
    assert!(!ok, "{report}");
    let mismatch: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("object-digest-mismatch"))
        .collect();
    assert_eq!(mismatch.len(), 1, "{report}");
    let mut owners = [a.clone(), b.clone()];
    owners.sort();
    assert!(
        mismatch[0].ends_with(&format!("(needed by {}, {})", owners[0], owners[1])),
        "{report}"
    );

    // b still holds the shared layer after `image rm a`; pulling a again
    // must fetch it again rather than reuse the damaged copy.
    osctl.ok(&["image", "rm", &a]);
    let out = pull_summary(&osctl, &a);
    assert!(out.contains("2 fetched, 0 already present"), "{out}");
    osctl.fsck_clean();
    assert_eq!(std::fs::metadata(&object).unwrap().len(), SHARED_SIZE);
}

#[test]
fn fsck_repair_then_a_re_pull_restores_exactly_the_damaged_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, built) = image(dir.path(), "1.0");
    let osctl = Osctl::new();
    osctl.pull(&a);
    let object = shared_object(&osctl);
    truncate(&object);

    let text = repair(&osctl);
    let rel = object
        .strip_prefix(osctl.store())
        .unwrap()
        .display()
        .to_string();
    for needle in [
        format!("removed damaged object {rel}"),
        format!("removed stream oci-layer-{}", built.diff_ids[1]),
        format!("pull again: {a}"),
        "Repaired: 1 objects and 1 streams removed; 1 image(s) to pull again".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} in:\n{text}");
    }
    assert!(!object.exists());
    assert!(
        !text.contains(&format!("oci-layer-{}", built.diff_ids[0])),
        "{text}"
    );

    let out = pull_summary(&osctl, &a);
    assert!(out.contains("1 fetched, 1 already present"), "{out}");
    osctl.fsck_clean();
    assert_eq!(std::fs::metadata(&object).unwrap().len(), SHARED_SIZE);
}

#[test]
fn gc_runs_and_reports_a_deleted_image_or_layer_stream() {
    type Damage = fn(&Osctl, &str, &BuiltImage);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "EROFS image object",
            |o, id, _| {
                std::fs::remove_file(link_target(&o.store().join("images").join(id))).unwrap()
            },
            "EROFS image",
        ),
        (
            "EROFS image link",
            |o, id, _| std::fs::remove_file(o.store().join("images").join(id)).unwrap(),
            "EROFS image",
        ),
        (
            "layer stream object",
            |o, _, built| {
                let link = o
                    .store()
                    .join(format!("streams/oci-layer-{}", built.diff_ids[1]));
                std::fs::remove_file(link_target(&link)).unwrap()
            },
            "stream oci-layer-",
        ),
    ];
    for (what, damage, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (a, built) = image(dir.path(), "1.0");
        let osctl = Osctl::new();
        osctl.pull(&a);
        let id = osctl.image_id(&a);
        damage(&osctl, &id, &built);
        let objects = osctl.objects();

        let out = osctl.run(&["gc"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: gc must run: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("damaged: {a}: {needle}"))
                && text.contains("Not removing objects while an image is damaged"),
            "{what}: {text}"
        );
        assert_eq!(osctl.objects(), objects, "{what}: nothing was removed");
        let (ok, report) = fsck(&osctl);
        assert!(!ok && report.contains(&a), "{what}: {report}");

        // A re-pull rebuilds what is missing; then gc sweeps as usual.
        let out = pull_summary(&osctl, &a);
        assert!(out.starts_with(&format!("Pulled: {a}")), "{what}: {out}");
        let gc = osctl.ok(&["gc"]);
        assert!(!gc.contains("damaged"), "{what}: {gc}");
        osctl.fsck_clean();
    }
}

#[test]
fn fsck_repair_names_a_deployment_whose_image_lost_an_object() {
    // A deployment keeps its image through its own roots after `image rm`;
    // when repair removes a damaged object that image names, the deployment
    // is incomplete until its image is pulled again, and repair must say so
    // (there is no record left to name instead).
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = image(dir.path(), "1.0");
    let osctl = Osctl::new();
    crate::util::run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &a]));
    let id = osctl.image_id(&a);
    osctl.ok(&["image", "rm", &a]);
    let object = shared_object(&osctl);
    truncate(&object);

    let text = repair(&osctl);
    assert!(!object.exists(), "{text}");
    assert!(
        text.contains(&format!("pull again: deployment {}", &id[..12]))
            && text.contains("; 1 image(s) to pull again"),
        "{text}"
    );

    // Pulling the image again makes the deployment whole.
    osctl.pull(&a);
    assert_eq!(std::fs::metadata(&object).unwrap().len(), SHARED_SIZE);
    osctl.fsck_clean();
}

/// Whether process `pid` waits for a flock on the inode `ino`
/// (`/proc/locks` lists a waiter as `N: -> FLOCK … PID MAJ:MIN:INODE …`).
fn waits_for_flock(pid: u32, ino: u64) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"->")
                && f.get(2) == Some(&"FLOCK")
                && f.get(5) == Some(&pid.to_string().as_str())
                && f.get(6)
                    .and_then(|d| d.rsplit(':').next())
                    .is_some_and(|i| i == ino.to_string())
        })
}

#[test]
fn fsck_repair_judges_damage_under_its_lock() {
    // Another osctl (a pull) holds the store open while repair starts, and
    // mends the damaged object before it exits, as a re-pull does. Repair
    // must judge the damage once it has the store to itself, not delete
    // what was damaged when it started looking.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = image(dir.path(), "1.0");
    let osctl = Osctl::new();
    osctl.pull(&a);
    let object = shared_object(&osctl);
    let good = std::fs::read(&object).unwrap();
    truncate(&object);

    // The other process's hold on the store: a shared flock on the
    // repository directory, as every open composefs repository has.
    let repo = std::fs::File::open(osctl.store()).unwrap();
    rustix::fs::flock(&repo, rustix::fs::FlockOperation::LockShared).unwrap();
    let mut repair = osctl
        .cmd()
        .args(["fsck", "--repair"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ino = std::fs::metadata(osctl.store()).unwrap().ino();
    while !waits_for_flock(repair.id(), ino) {
        if let Some(status) = repair.try_wait().unwrap() {
            panic!("repair ended ({status}) without waiting for the store");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The other process mends the object (same name, right content), then
    // lets go of the store.
    std::fs::write(&object, &good).unwrap();
    drop(repo);

    let out = repair.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(object.exists(), "repair removed the mended object:\n{text}");
    assert!(
        text.contains("Repaired: 0 objects and 0 streams removed; 0 image(s) to pull again"),
        "{text}"
    );
    osctl.fsck_clean();
}
