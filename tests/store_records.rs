//! One bad record file must not take the store down (issue 9, #17), and the
//! ids in a record are never trusted as paths (#19): `fsck` names the file,
//! everything else works around it, and `image rm` or a re-pull of its
//! reference repairs it. A bad record keeps its image's GC roots.

use std::path::Path;

use crate::util::assert_fails_naming;
use crate::util::store::{fsck, layout_ref, object_of_size, record_path};
use crate::util::{Osctl, booted_cmd, os_spec, run_ok};
use osctl_testutil::{Entry, ImageSpec, Layer};
use serde_json::Value;

/// A file of this size is the store's only object of that size.
const MARK_SIZE: u64 = 50_017;

fn marked(tag: &str) -> ImageSpec {
    ImageSpec::new(vec![Layer::new(vec![
        Entry::file("usr/lib/os-release", format!("ID={tag}\n")),
        Entry::file("usr/share/mark", vec![b'm'; MARK_SIZE as usize]),
    ])])
}

/// Damages a record file in place.
type Corrupt = fn(&Path);

/// Ways a record file goes bad: (name, damage).
fn corruptions() -> [(&'static str, Corrupt); 3] {
    [
        ("truncated", |p| {
            let data = std::fs::read(p).unwrap();
            std::fs::write(p, &data[..data.len() / 2]).unwrap();
        }),
        ("mistyped", |p| {
            let mut v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            v["layers"] = Value::String("not a list".into());
            std::fs::write(p, v.to_string()).unwrap();
        }),
        ("empty", |p| std::fs::write(p, b"").unwrap()),
    ]
}

#[test]
fn a_corrupt_record_is_reported_and_worked_around() {
    for (how, corrupt) in corruptions() {
        let dir = tempfile::tempdir().unwrap();
        let osctl = Osctl::new();
        let broken = layout_ref(&dir.path().join("a"), "v1", &marked("a"));
        let other = layout_ref(&dir.path().join("b"), "v1", &os_spec("1.0", &[], vec![]));
        osctl.pull(&broken);
        osctl.pull(&other);
        let record = record_path(&osctl, &broken);
        corrupt(&record);
        let objects = osctl.objects();

        // image list: the other image, and a warning naming the file.
        let out = osctl.run(&["image", "list", "--format", "json"]);
        assert!(out.status.success(), "{how}: {out:?}");
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.len(), 1, "{how}");
        assert_eq!(list[0]["reference"], other.as_str());
        let warning = String::from_utf8_lossy(&out.stderr);
        assert!(
            warning.contains("WARN") && warning.contains(&record.display().to_string()),
            "{how}: {warning}"
        );
        // Captured, not at a terminal: plain text, no colour escapes.
        assert!(!warning.contains('\x1b'), "{how}: {warning:?}");

        // fsck reports the file, and does not abort.
        let (ok, report) = fsck(&osctl);
        assert!(!ok, "{how}: {report}");
        let problems: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("problem:"))
            .collect();
        assert_eq!(problems.len(), 1, "{how}: {report}");
        assert!(
            problems[0].contains(&format!("record {}:", record.display())),
            "{how}: {report}"
        );
        assert!(report.contains(" 1 problem(s)"), "{how}: {report}");

        // gc runs, and keeps what the unreadable record's image needs.
        assert_eq!(
            osctl.ok(&["gc"]),
            "Removed 0 unreferenced objects (0 B), pruned 0 stale refs\n",
            "{how}"
        );
        assert_eq!(osctl.objects(), objects, "{how}");
        object_of_size(&osctl, MARK_SIZE);

        // Unrelated pulls and switch work.
        let third = layout_ref(&dir.path().join("c"), "v1", &marked("c-unrelated"));
        osctl.pull(&third);
        run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &other]));

        // `image rm` of the reference clears it; the objects only it
        // needed go.
        let rm = osctl.ok(&["image", "rm", &broken]);
        assert!(
            rm.starts_with(&format!("Removed {broken} (")),
            "{how}: {rm}"
        );
        assert!(!record.exists(), "{how}");
        osctl.fsck_clean();

        // A re-pull writes a good record again.
        osctl.pull(&broken);
        assert_eq!(osctl.list().len(), 3, "{how}");
        corrupt(&record);
        let out = osctl.pull(&broken);
        assert!(out.contains(&format!("Pulled: {broken}")), "{how}: {out}");
        osctl.fsck_clean();
    }
}

#[test]
fn a_corrupt_record_of_a_deployed_image_keeps_its_objects() {
    // The deployment's own GC roots keep its image, whatever happens to
    // the record: corrupt it, remove it, gc — the image stays whole.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    let mut spec = os_spec("1.0", &[], vec![]);
    spec.layers[0].entries.push(Entry::file(
        "usr/share/mark",
        vec![b'm'; MARK_SIZE as usize],
    ));
    let reference = layout_ref(dir.path(), "v1", &spec);
    run_ok(booted_cmd(&osctl, None).args(["switch", "--progress", "none", &reference]));
    let id = osctl.image_id(&reference);
    let record = record_path(&osctl, &reference);
    std::fs::write(&record, b"{\"truncated").unwrap();
    osctl.ok(&["gc"]);
    osctl.ok(&["image", "rm", &reference]);
    osctl.ok(&["gc"]);
    object_of_size(&osctl, MARK_SIZE);
    assert!(osctl.store().join("images").join(&id).exists());
    osctl.fsck_clean();
    let status = run_ok(booted_cmd(&osctl, None).args(["status", "--format", "json"]));
    assert!(status.contains(&id), "{status}");
}

#[test]
fn ids_in_records_are_validated_where_they_are_read() {
    // A record naming `../../../evil.img` as its image made `image mount`
    // mount a file from outside the store, and fsck said nothing.
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, String); 5] = [
        ("imageId", "escape", "../../../evil.img".to_string()),
        ("imageId", "uppercase", "AB".repeat(32)),
        ("imageId", "short", "abc".to_string()),
        ("configDigest", "escape", "sha256:../../../x".to_string()),
        ("manifestDigest", "no-algorithm", "0".repeat(64)),
    ];
    for (field, how, value) in cases {
        let osctl = Osctl::new();
        let reference = layout_ref(
            &dir.path().join(format!("{field}-{how}")),
            "v1",
            &marked(how),
        );
        osctl.pull(&reference);
        let id = osctl.image_id(&reference);
        // An EROFS file outside the store, where the bad id points.
        std::fs::copy(
            crate::util::store::link_target(&osctl.store().join("images").join(&id)),
            osctl.sysroot().join("evil.img"),
        )
        .unwrap();
        let record = record_path(&osctl, &reference);
        let mut v: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        v[field] = Value::String(value.clone());
        std::fs::write(&record, v.to_string()).unwrap();

        let mnt = tempfile::tempdir().unwrap();
        let out = osctl.run(&["image", "mount", &reference, mnt.path().to_str().unwrap()]);
        let mounted = std::fs::read_dir(mnt.path()).unwrap().count() > 0;
        if mounted {
            let _ = std::process::Command::new("umount")
                .arg(mnt.path())
                .status();
        }
        assert!(!mounted, "{field}={value}: something was mounted");
        // Not assert_fails_naming: the skipped record is logged (a warning
        // line) before the error.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("no image {reference} in the store")),
            "{field}={value}: {stderr}"
        );
        let (ok, report) = fsck(&osctl);
        assert!(
            !ok && report.contains(&format!("record {}:", record.display()))
                && report.contains(&format!("'{}' is not a", value)),
            "{field}={value}: {report}"
        );
    }
}

#[test]
fn rm_of_an_unknown_reference_still_says_so() {
    let osctl = Osctl::new();
    let dir = tempfile::tempdir().unwrap();
    let reference = layout_ref(dir.path(), "v1", &marked("x"));
    osctl.pull(&reference);
    let missing = format!("oci:{}:nope", dir.path().display());
    let out = osctl.run(&["image", "rm", &missing]);
    assert_fails_naming(&out, &[&format!("no image {missing} in the store")]);
}

#[test]
fn gc_clears_what_an_interrupted_record_write_left() {
    // A crash between writing a record's temporary and renaming it over the
    // record leaves `.tmp-<pid>-<key>.json`; readers skip it, and nothing
    // but gc can ever remove it.
    let dir = tempfile::tempdir().unwrap();
    let osctl = Osctl::new();
    let reference = layout_ref(&dir.path().join("a"), "v1", &marked("a"));
    osctl.pull(&reference);
    let record = record_path(&osctl, &reference);
    let data = std::fs::read(&record).unwrap();
    let leftover = record.with_file_name(format!(
        ".tmp-4194303-{}",
        record.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&leftover, &data[..data.len() / 3]).unwrap();
    assert_eq!(osctl.list().len(), 1);
    osctl.fsck_clean();
    osctl.ok(&["gc"]);
    assert!(!leftover.exists(), "gc removed the temporary");
    assert!(record.exists());
    assert_eq!(osctl.list().len(), 1);
}
