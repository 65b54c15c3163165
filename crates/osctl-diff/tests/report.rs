//! Rendering: paths are escaped so a file name cannot forge a report line
//! and two different paths never print the same, in text and JSON alike.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

mod common;

use common::endpoint;
use osctl_diff::report::{render_human, render_json};
use osctl_diff::{FileChange, ImageDiff, Kind, PackageDiff, Packages, TreeDiff};

fn path(raw: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(raw))
}

/// (raw path, how both renderers show it)
const NAMES: &[(&[u8], &str)] = &[
    (b"/etc/plain", "/etc/plain"),
    (b"/etc/x\n  - /usr/bin/sudo", "/etc/x\\n  - /usr/bin/sudo"),
    (b"/etc/\xff\xfe", "/etc/\\xff\\xfe"),
    ("/etc/\u{fffd}".as_bytes(), "/etc/\u{fffd}"),
    (b"/etc/back\\slash", "/etc/back\\\\slash"),
    (b"/etc/tab\tcr\resc\x1b", "/etc/tab\\tcr\\resc\\x1b"),
    ("/etc/caf\u{e9}\u{85}".as_bytes(), "/etc/caf\u{e9}\\u{85}"),
];

#[test]
fn paths_are_escaped_in_text_and_json() {
    let diff = ImageDiff {
        trees: vec![TreeDiff {
            tree: "/etc",
            changes: NAMES
                .iter()
                .map(|(raw, _)| FileChange {
                    path: path(raw),
                    kind: Kind::Added,
                    what: Vec::new(),
                })
                .collect(),
        }],
        packages: Packages::Compared(PackageDiff::default()),
    };
    let (a, b) = (endpoint("A"), endpoint("B"));
    let mut want =
        "From: image A\nTo:   image B\n\n/etc: 7 added, 0 removed, 0 changed\n".to_string();
    for (_, shown) in NAMES {
        want.push_str(&format!("  + {shown}\n"));
    }
    want.push_str("Packages: 0 added, 0 removed, 0 upgraded, 0 downgraded\n");
    assert_eq!(render_human(&a, &b, &diff, true), want);

    let json: serde_json::Value = serde_json::from_str(&render_json(&a, &b, &diff)).unwrap();
    let got: Vec<&str> = json["files"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = NAMES.iter().map(|(_, shown)| *shown).collect();
    assert_eq!(got, want);
}
