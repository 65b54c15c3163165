//! Reading dpkg status files: which paragraphs count (files on disk), and
//! the one-line refusals of what is not a status file.

use osctl_diff::dpkg::{Package, parse_status};

const STATUS: &str = "\
Package: bash
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 It is intended to conform to IEEE POSIX P1003.2/ISO 9945.2.

Package: oldconf
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u4

package: lower
status: hold ok installed
architecture: all
version: 1:0.1
\t
Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 3
";

fn pkg(name: &str, architecture: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        architecture: architecture.into(),
        version: version.into(),
    }
}

#[test]
fn present_packages_sorted_by_name_and_architecture() {
    let got = parse_status(STATUS).unwrap();
    let want = vec![
        pkg("bash", "amd64", "5.2.15-2+b2"),
        pkg("broken", "amd64", "3"),
        pkg("libc6", "amd64", "2.36-9+deb12u4"),
        pkg("libc6", "i386", "2.36-9+deb12u4"),
        pkg("lower", "all", "1:0.1"),
    ];
    assert_eq!(got, want);
}

/// Every state dpkg(1) lists: present unless not-installed or config-files.
#[test]
fn states_with_files_on_disk_count() {
    let cases = [
        ("not-installed", false),
        ("config-files", false),
        ("half-installed", true),
        ("unpacked", true),
        ("half-configured", true),
        ("triggers-awaited", true),
        ("triggers-pending", true),
        ("installed", true),
    ];
    for (state, present) in cases {
        let text =
            format!("Package: p\nStatus: install ok {state}\nArchitecture: all\nVersion: 1\n");
        let got = parse_status(&text).unwrap();
        let want = if present {
            vec![pkg("p", "all", "1")]
        } else {
            vec![]
        };
        assert_eq!(got, want, "{state}");
    }
}

#[test]
fn empty_status_has_no_packages() {
    for text in ["", "\n\n", "  \n"] {
        assert!(parse_status(text).unwrap().is_empty(), "{text:?}");
    }
}

#[test]
fn malformed_status_is_refused_naming_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            " continued\n",
            "line 1: a continuation line outside a field",
        ),
        (
            "Package: a\nthis is not a field\n",
            "line 2: neither a field (Name: value) nor a continuation line",
        ),
        (
            "Package: a\nBad Name: x\n",
            "line 2: \"Bad Name\" is not a field name",
        ),
        (
            "Package: a\nVersion: 1\nArchitecture: all\n",
            "line 1: the paragraph has no Status field",
        ),
        (
            "\nPackage: a\nStatus: installed\nVersion: 1\n",
            "line 3: Status \"installed\" is not \"want flag state\"",
        ),
        (
            "Status: install ok installed\nVersion: 1\nArchitecture: all\n",
            "line 1: the paragraph has no Package field",
        ),
        (
            "Package: a\nStatus: install ok installed\nArchitecture: all\n",
            "line 1: the paragraph has no Version field",
        ),
        (
            "Package: a\nStatus: install ok installed\nVersion:\nArchitecture: all\n",
            "line 1: the paragraph has no Version field",
        ),
        (
            "Package: a\nStatus: install ok installed\nVersion: 1\n",
            "line 1: the paragraph has no Architecture field",
        ),
        (
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n\
             Package: a\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n",
            "line 6: package a:all is installed twice",
        ),
    ];
    for &(text, want) in cases {
        assert_eq!(
            parse_status(text).unwrap_err().to_string(),
            want,
            "{text:?}"
        );
    }
}
