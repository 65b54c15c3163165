//! Debian version order: the tricky cases, each checked against
//! `dpkg --compare-versions` when the table was written.

use std::cmp::Ordering::{self, Equal, Greater, Less};

use osctl_diff::version::{Version, compare};

/// (a, b, how a compares to b)
const CASES: &[(&str, &str, Ordering)] = &[
    ("1.0", "1.0", Equal),
    ("1.0", "1.00", Equal),
    ("1.01", "1.1", Equal),
    ("0:1.0", "1.0", Equal),
    ("1.0-0", "1.0", Equal),
    ("1.0", "1.0-1", Less),
    ("1.0~rc1", "1.0", Less),
    ("1.0~rc1", "1.0~rc2", Less),
    ("1.0~~", "1.0~", Less),
    ("1.0~", "1.0", Less),
    ("1.0", "1.0a", Less),
    ("1.0a", "1.0+b1", Less),
    ("1.0", "1.0+b1", Less),
    ("1.0+b1", "1.0.1", Less),
    ("1.0.1", "1.0+1", Greater),
    ("1:1.0", "2.0", Greater),
    ("2:1.0", "10:0.1", Less),
    ("1.9", "1.10", Less),
    ("1.0-1", "1.0-1ubuntu1", Less),
    ("1.0-1~bpo12+1", "1.0-1", Less),
    ("1.0-1+deb12u1", "1.0-1", Greater),
    ("1.0-10", "1.0-9", Greater),
    ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
    ("1.2.3-a-b", "1.2.3-a-c", Less),
    ("1.2.3-a-b", "1.2.3-a", Greater),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
    ("1.0a", "1.0A", Greater),
    ("1.0.a", "1.0a", Greater),
    ("000000000000000000000000000000001", "1", Equal),
    // Versions dpkg accepts with a warning only.
    ("1:2:3", "1:2:4", Less),
    ("1:2:3", "1:2.3", Greater),
    ("a1.0", "1.0", Greater),
    ("1.0_1", "1.0", Greater),
    ("1.0-1_2", "1.0-1", Greater),
    (
        "99999999999999999999999999999999",
        "100000000000000000000000000000000",
        Less,
    ),
];

#[test]
fn order_matches_dpkg() {
    let mut wrong = Vec::new();
    for &(a, b, want) in CASES {
        let got = compare(a, b).unwrap();
        let back = compare(b, a).unwrap();
        if got != want || back != want.reverse() {
            wrong.push(format!(
                "{a} vs {b}: want {want:?}, got {got:?} (reverse {back:?})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn parts() {
    let cases: &[(&str, (u64, &str, &str))] = &[
        ("1.0", (0, "1.0", "")),
        ("2:1.0-3", (2, "1.0", "3")),
        ("1.2-3-4", (0, "1.2-3", "4")),
        ("1:2.36-9+deb12u4", (1, "2.36", "9+deb12u4")),
        ("0.9~beta1", (0, "0.9~beta1", "")),
        // What dpkg only warns about parses too: an installed package can
        // carry it.
        ("1:2:3", (1, "2:3", "")),
        ("a1.0", (0, "a1.0", "")),
        ("1.0_1", (0, "1.0_1", "")),
        ("1.0-1_2", (0, "1.0", "1_2")),
        ("2147483647:1", (2147483647, "1", "")),
    ];
    for &(text, (epoch, upstream, revision)) in cases {
        assert_eq!(
            Version::parse(text).unwrap(),
            Version {
                epoch,
                upstream,
                revision
            },
            "{text}"
        );
    }
}

/// dpkg's hard errors (parseversion); everything else it only warns about.
#[test]
fn refused_versions_name_the_rule() {
    let cases: &[(&str, &str)] = &[
        ("", "version \"\": the version is empty"),
        (":1.0", "version \":1.0\": the epoch is empty"),
        ("x:1.0", "version \"x:1.0\": the epoch is not a number"),
        ("-1:1.0", "version \"-1:1.0\": the epoch is not a number"),
        ("1:", "version \"1:\": nothing follows the epoch"),
        ("1:-1", "version \"1:-1\": the upstream version is empty"),
        ("-1", "version \"-1\": the upstream version is empty"),
        (
            "1.0-",
            "version \"1.0-\": the revision after the last '-' is empty",
        ),
        (
            "1.0 2",
            "version \"1.0 2\": the version has embedded spaces",
        ),
        (
            "2147483648:1",
            "version \"2147483648:1\": the epoch is too large",
        ),
        (
            "99999999999999999999:1",
            "version \"99999999999999999999:1\": the epoch is too large",
        ),
    ];
    for &(text, want) in cases {
        assert_eq!(
            Version::parse(text).unwrap_err().to_string(),
            want,
            "{text:?}"
        );
    }
}
