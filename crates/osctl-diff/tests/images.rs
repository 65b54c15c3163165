//! `diff_images` on real images: layer tarballs written as `oci:` layouts,
//! pulled into a store, their trees rebuilt by `ImageTree` (whiteouts,
//! opaque directories and hard links included), compared and rendered.
//! Each case checks the exact `--files` report or the exact error.

use std::sync::Arc;

mod common;

use common::endpoint;
use osctl_diff::report::render_human;
use osctl_image::{FetchOptions, ImageRef};
use osctl_store::{Silent, Store};
use osctl_testutil::{Entry, ImageSpec, Layer};

const STATUS: &str = "Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n";

/// Pulls the two images (layer lists) into one store, compares them as
/// `A` and `B`, and returns the `--files` report or the error chain, with
/// the temporary directory shown as `TMP`.
async fn diff(from: Vec<Layer>, to: Vec<Layer>) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let sysroot = dir.path().join("root");
    std::fs::create_dir(&sysroot).unwrap();
    let store = Store::open_or_create(&sysroot).unwrap();
    let mut records = Vec::new();
    for (name, layers) in [("a", from), ("b", to)] {
        let layout = dir.path().join(name);
        osctl_testutil::write_layout(&layout, "v1", &ImageSpec::new(layers)).unwrap();
        let imgref = ImageRef::parse(&format!("oci:{}:v1", layout.display())).unwrap();
        let outcome = store
            .pull(&imgref, &FetchOptions::default(), Arc::new(Silent))
            .await
            .unwrap();
        records.push(outcome.record().clone());
    }
    let from = store.image_tree(&records[0]).unwrap();
    let to = store.image_tree(&records[1]).unwrap();
    let tmp = dir.path().display().to_string();
    match osctl_diff::diff_images(&from, "A", &to, "B") {
        Ok(d) => Ok(render_human(&endpoint("A"), &endpoint("B"), &d, true)),
        Err(e) => {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            Err(chain.replace(&tmp, "TMP"))
        }
    }
}

/// (case, FROM layers, TO layers, the report or the error)
type Case = (&'static str, Vec<Layer>, Vec<Layer>, Result<String, String>);

/// A report of two images without dpkg databases, trees given.
fn report(usr: &str, etc: &str) -> String {
    format!(
        "From: image A\nTo:   image B\n\n{usr}{etc}\
         Packages: no dpkg database in A or B: packages not compared\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn trees_and_dpkg_database_kinds() {
    let base = || {
        vec![
            Entry::dir("usr"),
            Entry::dir("usr/share"),
            Entry::file("usr/share/gone", "g\n"),
            Entry::dir("usr/share/d"),
            Entry::file("usr/share/d/old", "o\n"),
            Entry::file("usr/share/d/kept", "k\n"),
            Entry::dir("etc"),
            Entry::file("etc/a", "a\n"),
        ]
    };
    let dpkg = |status: Entry| {
        vec![
            Entry::dir("var"),
            Entry::dir("var/lib"),
            Entry::dir("usr"),
            Entry::dir("usr/lib"),
            Entry::dir("usr/lib/dpkg"),
            Entry::file("usr/lib/dpkg/status", STATUS),
            status,
        ]
    };
    let cases: Vec<Case> = vec![
        (
            "the roots' own metadata is compared",
            vec![Layer::new(base())],
            vec![
                Layer::new(base()),
                Layer::new(vec![Entry::dir_with("etc", 0o700, 0, 0)]),
            ],
            Ok(report(
                "/usr: 0 added, 0 removed, 0 changed\n",
                "/etc: 0 added, 0 removed, 1 changed\n  M /etc (mode)\n",
            )),
        ),
        (
            "whiteout, opaque directory, hard link",
            vec![Layer::new(base())],
            vec![
                Layer::new(base()),
                Layer::new(vec![
                    Entry::whiteout("usr/share/gone"),
                    Entry::opaque("usr/share/d"),
                    Entry::file("usr/share/d/kept", "k\n"),
                    Entry::file("usr/share/d/new", "n\n"),
                    Entry::hardlink("etc/b", "etc/a"),
                ]),
            ],
            Ok(report(
                "/usr: 1 added, 2 removed, 0 changed\n  \
                 + /usr/share/d/new\n  - /usr/share/d/old\n  - /usr/share/gone\n",
                "/etc: 1 added, 0 removed, 0 changed\n  + /etc/b\n",
            )),
        ),
        (
            "/etc is not a directory",
            vec![Layer::new(base())],
            vec![Layer::new(vec![Entry::file("etc", "x\n")])],
            Err("/etc in oci:TMP/b:v1: is not a directory \
                 (Directory entry \"etc\" is not a subdirectory)"
                .to_string()),
        ),
        (
            "a symlinked /var/lib/dpkg",
            vec![Layer::new(dpkg(Entry::dir("var/lib/dpkg")))],
            vec![Layer::new(dpkg(Entry::symlink(
                "var/lib/dpkg",
                "../../usr/lib/dpkg",
            )))],
            Err(
                "reading the dpkg database /var/lib/dpkg/status of B: /var/lib/dpkg is a \
                 symlink, not a directory (links in an image are not followed)"
                    .to_string(),
            ),
        ),
        (
            "a symlinked status file",
            vec![Layer::new(dpkg(Entry::dir("var/lib/dpkg")))],
            vec![Layer::new({
                let mut e = dpkg(Entry::dir("var/lib/dpkg"));
                e.push(Entry::symlink(
                    "var/lib/dpkg/status",
                    "/usr/lib/dpkg/status",
                ));
                e
            })],
            Err(
                "reading the dpkg database /var/lib/dpkg/status of B: /var/lib/dpkg/status \
                 is a symlink, not a regular file (links in an image are not followed)"
                    .to_string(),
            ),
        ),
    ];
    for (case, from, to, want) in cases {
        assert_eq!(diff(from, to).await, want, "{case}");
    }
}
