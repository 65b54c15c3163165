//! What an image may carry (docs/store.md): names, symlink targets and
//! nesting the kernel and osctl can handle pull, stage and mount; anything
//! beyond is refused at import with one line naming the image, the layer and
//! the limit — never a crash, never a broken image that `fsck` calls clean.

use crate::util::assert_fails_naming;
use crate::util::store::{deploy_state, layout_ref};
use crate::util::{Osctl, booted_cmd, os_spec, run_ok};
use osctl_testutil::{Entry, ImageSpec, Layer};

/// Deepest nesting osctl accepts (osctl_store::limits::MAX_DEPTH).
const MAX_DEPTH: usize = 256;

/// `d/d/…/d`, `n` components.
fn chain(n: usize) -> String {
    vec!["d"; n].join("/")
}

fn one_layer(entries: Vec<Entry>) -> ImageSpec {
    ImageSpec::new(vec![Layer::new(entries)])
}

#[test]
fn a_2000_deep_directory_chain_is_refused_not_a_crash() {
    // It used to abort the pull: "thread … has overflowed its stack", 134.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    osctl.pull(&layout_ref(
        &dir.path().join("base"),
        "v1",
        &one_layer(vec![Entry::file("etc/base", "x")]),
    ));
    let spec = one_layer(vec![
        Entry::file("usr/ok", "fine"),
        Entry::file(&format!("{}/f", chain(2000)), "deep"),
    ]);
    let built = osctl_testutil::write_layout(&dir.path().join("deep"), "v1", &spec).unwrap();
    let reference = format!("oci:{}:v1", dir.path().join("deep").display());
    osctl.pull_fails(
        &[&reference],
        &[
            &reference,
            &format!("layer 1 ({})", built.layer_digests[0]),
            "is nested 2001 directories deep",
            &format!("an image may nest at most {MAX_DEPTH}"),
        ],
    );
}

#[test]
fn the_deepest_allowed_tree_pulls_stages_mounts_and_checks() {
    // MAX_DEPTH components, under /etc so that staging copies all of it:
    // every recursive walk (EROFS build, tree export, fsck) runs at the limit.
    let dir = tempfile::tempdir().unwrap();
    let deepest = format!("etc/{}/f", chain(MAX_DEPTH - 2));
    let spec = os_spec("1.0", &[], vec![Entry::file(&deepest, "deep\n")]);
    let reference = layout_ref(dir.path(), "v1", &spec);
    let osctl = Osctl::new();
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &reference]));
    osctl.fsck_clean();
    let id = osctl.image_id(&reference);
    let staged = osctl
        .sysroot()
        .join("sysroot/state/deploy")
        .join(&id)
        .join(&deepest);
    assert_eq!(std::fs::read_to_string(staged).unwrap(), "deep\n");
    let mnt = tempfile::tempdir().unwrap();
    osctl.ok(&["image", "mount", &reference, mnt.path().to_str().unwrap()]);
    let read = std::fs::read_to_string(mnt.path().join(&deepest));
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    assert_eq!(read.unwrap(), "deep\n");
}

#[test]
fn names_and_symlink_targets_beyond_the_kernel_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    let too_long_name = format!("usr/{}", "n".repeat(256));
    let too_long_target = "t".repeat(4096);
    let cases: [(&str, Entry, &[&str]); 3] = [
        (
            "name",
            Entry::file(&too_long_name, "x"),
            &[
                "has a name of 256 bytes",
                "a file name may have at most 255",
            ],
        ),
        (
            "dirname",
            Entry::file(&format!("{too_long_name}/below"), "x"),
            &["has a name of 256 bytes"],
        ),
        (
            "target",
            Entry::symlink("usr/link", &too_long_target),
            &[
                "symlink 'usr/link' has a target of 4096 bytes",
                "at most 4095",
            ],
        ),
    ];
    for (tag, entry, needles) in cases {
        let spec = one_layer(vec![Entry::file("usr/ok", "fine"), entry]);
        let reference = layout_ref(&dir.path().join(tag), "v1", &spec);
        let mut all = vec![reference.as_str(), "layer 1 (sha256:"];
        all.extend_from_slice(needles);
        osctl.pull_fails(&[&reference], &all);
    }
}

#[test]
fn names_and_symlink_targets_at_the_limits_work_in_the_kernel() {
    // A 255-byte name and a 4095-byte target are what Linux allows; the
    // mounted image must show them whole (a 256-byte name used to make the
    // directory unreadable: "Structure needs cleaning").
    let dir = tempfile::tempdir().unwrap();
    let name = "n".repeat(255);
    let target = "t".repeat(4095);
    let spec = one_layer(vec![
        Entry::file(&format!("usr/{name}"), "long name\n"),
        Entry::symlink("usr/link", &target),
    ]);
    let reference = layout_ref(dir.path(), "v1", &spec);
    let osctl = Osctl::new();
    osctl.pull(&reference);
    osctl.fsck_clean();
    let mnt = tempfile::tempdir().unwrap();
    osctl.ok(&["image", "mount", &reference, mnt.path().to_str().unwrap()]);
    let names: Result<Vec<String>, _> = std::fs::read_dir(mnt.path().join("usr")).map(|rd| {
        rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    });
    let file = std::fs::read_to_string(mnt.path().join("usr").join(&name));
    let link = std::fs::read_link(mnt.path().join("usr/link"));
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    let mut names = names.unwrap();
    names.sort();
    assert_eq!(names, ["link".to_string(), name]);
    assert_eq!(file.unwrap(), "long name\n");
    assert_eq!(link.unwrap().as_os_str().len(), 4095);
}

#[test]
fn switch_to_an_image_with_a_too_long_name_leaves_nothing_behind() {
    // It used to pull fine, then fail while staging and leave
    // state/deploy/.tmp-<id> behind.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    let good = layout_ref(&dir.path().join("good"), "v1", &os_spec("1.0", &[], vec![]));
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &good]));
    let before = deploy_state(&osctl);
    let bad_name = format!("etc/{}", "n".repeat(256));
    let bad = layout_ref(
        &dir.path().join("bad"),
        "v2",
        &os_spec("2.0", &[], vec![Entry::file(&bad_name, "x")]),
    );
    let out = booted_cmd(&osctl, None)
        .args(["switch", "--progress", "none", &bad])
        .output()
        .unwrap();
    assert_fails_naming(&out, &[&bad, "has a name of 256 bytes"]);
    assert_eq!(
        deploy_state(&osctl),
        before,
        "the refused switch changed state"
    );
    osctl.fsck_clean();
}

#[test]
fn switch_to_an_image_with_device_nodes_in_etc_or_var_changes_nothing() {
    // Staging used to create the image's nodes (0666) on the host, under
    // state/deploy/<id>/etc and state/var, before the image ever booted.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    let good = layout_ref(&dir.path().join("good"), "v1", &os_spec("1.0", &[], vec![]));
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &good]));
    for (tag, node, shown, kind) in [
        (
            "char",
            Entry::char_dev("etc/null-ish", 1, 3),
            "/etc/null-ish",
            "character",
        ),
        (
            "block",
            Entry::block_dev("var/lib/disk", 8, 0),
            "/var/lib/disk",
            "block",
        ),
    ] {
        let before = deploy_state(&osctl);
        let bad = layout_ref(
            &dir.path().join(tag),
            "v2",
            &os_spec("2.0", &[], vec![node]),
        );
        let out = booted_cmd(&osctl, None)
            .args(["switch", "--progress", "none", &bad])
            .output()
            .unwrap();
        assert_fails_naming(
            &out,
            &[
                &format!("{shown} in {bad}: a {kind} device node"),
                "an image may not carry device nodes in",
            ],
        );
        assert_eq!(
            deploy_state(&osctl),
            before,
            "{tag}: the refused switch changed state"
        );
        osctl.fsck_clean();
    }
}
