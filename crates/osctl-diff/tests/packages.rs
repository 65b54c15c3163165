//! Comparing two images' package sets: how packages are matched (plain
//! name or `name:arch`, decided over both images), which dpkg states count
//! as installed, and versions dpkg only warns about.

use osctl_diff::dpkg::parse_status;
use osctl_diff::packages::{PackageDiff, compare};

/// A status paragraph.
fn para(name: &str, arch: &str, state: &str, version: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok {state}\nArchitecture: {arch}\nVersion: {version}\n\n"
    )
}

fn status(packages: &[(&str, &str, &str, &str)]) -> String {
    packages
        .iter()
        .map(|&(n, a, s, v)| para(n, a, s, v))
        .collect()
}

/// The diff as one line per package, in report order.
fn lines(d: &PackageDiff) -> Vec<String> {
    let mut out = Vec::new();
    for (name, p) in &d.added {
        out.push(format!("added {name} {}", p.version));
    }
    for (name, p) in &d.removed {
        out.push(format!("removed {name} {}", p.version));
    }
    for c in &d.upgraded {
        out.push(format!("upgraded {} {} -> {}", c.name, c.from, c.to));
    }
    for c in &d.downgraded {
        out.push(format!("downgraded {} {} -> {}", c.name, c.from, c.to));
    }
    out
}

type Pkg = (&'static str, &'static str, &'static str, &'static str);

/// (case, FROM packages, TO packages, the diff's lines)
type Case = (
    &'static str,
    &'static [Pkg],
    &'static [Pkg],
    &'static [&'static str],
);

#[test]
fn packages_compare_over_both_images() {
    const I: &str = "installed";
    let cases: &[Case] = &[
        (
            "an architecture dropped",
            &[
                ("libc6", "amd64", I, "2.36-9"),
                ("libc6", "i386", I, "2.36-9"),
            ],
            &[("libc6", "amd64", I, "2.36-9")],
            &["removed libc6:i386 2.36-9"],
        ),
        (
            "an architecture added",
            &[("libc6", "amd64", I, "2.36-9")],
            &[
                ("libc6", "amd64", I, "2.36-9"),
                ("libc6", "i386", I, "2.36-9"),
            ],
            &["added libc6:i386 2.36-9"],
        ),
        (
            "an architecture dropped, the other upgraded",
            &[
                ("libc6", "amd64", I, "2.36-9"),
                ("libc6", "i386", I, "2.36-9"),
            ],
            &[("libc6", "amd64", I, "2.36-10")],
            &[
                "removed libc6:i386 2.36-9",
                "upgraded libc6:amd64 2.36-9 -> 2.36-10",
            ],
        ),
        (
            "one instance each side: the plain name",
            &[
                ("libc6", "amd64", I, "2.36-9"),
                ("zlib1g", "amd64", I, "1:1.2"),
            ],
            &[
                ("libc6", "amd64", I, "2.36-10"),
                ("zlib1g", "amd64", I, "1:1.2"),
            ],
            &["upgraded libc6 2.36-9 -> 2.36-10"],
        ),
        (
            "a package that became arch all",
            &[("tzdata", "amd64", I, "2024a-1")],
            &[("tzdata", "all", I, "2024b-1")],
            &["upgraded tzdata 2024a-1 -> 2024b-1"],
        ),
        (
            "states with files on disk count",
            &[
                ("a", "all", "triggers-pending", "1"),
                ("b", "all", "triggers-awaited", "1"),
                ("c", "all", "unpacked", "1"),
                ("d", "all", "half-configured", "1"),
                ("e", "all", "half-installed", "1"),
                ("f", "all", I, "1"),
            ],
            &[
                ("a", "all", I, "2"),
                ("b", "all", I, "1"),
                ("c", "all", I, "1"),
                ("d", "all", I, "1"),
                ("e", "all", I, "1"),
                ("f", "all", "triggers-pending", "1"),
            ],
            &["upgraded a 1 -> 2"],
        ),
        (
            "not-installed and config-files do not count",
            &[("a", "all", "config-files", "1"), ("b", "all", I, "1")],
            &[("a", "all", I, "1"), ("b", "all", "not-installed", "1")],
            &["added a 1", "removed b 1"],
        ),
        (
            "versions dpkg only warns about",
            &[
                ("a", "all", I, "1:2:3"),
                ("b", "all", I, "a1.0"),
                ("c", "all", I, "1.0-1_2"),
            ],
            &[
                ("a", "all", I, "1:2:4"),
                ("b", "all", I, "1.0"),
                ("c", "all", I, "1.0-1"),
            ],
            &[
                "upgraded a 1:2:3 -> 1:2:4",
                "downgraded b a1.0 -> 1.0",
                "downgraded c 1.0-1_2 -> 1.0-1",
            ],
        ),
    ];
    for &(case, from, to, want) in cases {
        let from = parse_status(&status(from)).unwrap();
        let to = parse_status(&status(to)).unwrap();
        let got = compare(&from, &to, "A", "B").unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(lines(&got), want, "{case}");
    }
}
