//! `osctl container lint` as a build runs it: exit codes, the human and
//! JSON reports, the per-lint cap, `--list`, and bad input. What each lint
//! finds is osctl-lint's own test (crates/osctl-lint/tests/lints.rs).

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{assert_fails_naming, run_ok};

/// The lints and their levels, as the docs and scripts know them.
const LINT_NAMES: [(&str, &str); 18] = [
    ("kernel", "fatal"),
    ("initramfs-root-setup", "fatal"),
    ("kargs", "fatal"),
    ("api-directories", "fatal"),
    ("var-run", "fatal"),
    ("utf8", "warning"),
    ("etc-usretc", "warning"),
    ("panic-karg", "warning"),
    ("boot-empty", "warning"),
    ("writable-dirs", "warning"),
    ("var-content", "warning"),
    ("var-log", "warning"),
    ("run-tmp", "warning"),
    ("package-caches", "warning"),
    ("sysusers", "warning"),
    ("machine-id", "warning"),
    ("buildah-injected", "warning"),
    ("ca-bundle", "warning"),
];

fn put(root: &Path, path: &str, content: impl AsRef<[u8]>) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A rootfs that passes every lint.
fn clean_rootfs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "etc", "sysroot", "var/log",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    symlink("../run", r.join("var/run")).unwrap();
    put(r, "usr/lib/modules/6.12.0/vmlinuz", "kernel");
    // An uncompressed initramfs: the kernel unpacks those too.
    let inputs = ["init", "usr/lib/osctl/osctl-root-setup"].map(|n| {
        (
            cpio::NewcBuilder::new(n).mode(0o100755),
            Cursor::new(b"x".to_vec()),
        )
    });
    let initramfs = cpio::write_cpio(inputs.into_iter(), Vec::new()).unwrap();
    put(r, "usr/lib/modules/6.12.0/initramfs.img", initramfs);
    put(
        r,
        "usr/lib/bootc/kargs.d/10-panic.toml",
        "kargs = [\"panic=10\"]\n",
    );
    put(
        r,
        "etc/ssl/certs/ca-certificates.crt",
        "-----BEGIN CERTIFICATE-----\n",
    );
    tmp
}

fn lint(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osctl"))
        .args(["container", "lint", "--rootfs"])
        .arg(root)
        .args(args)
        .output()
        .expect("running osctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_clean_rootfs_passes_with_a_summary_line() {
    let tmp = clean_rootfs();
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_osctl"))
            .args(["container", "lint", "--fatal-warnings", "--rootfs"])
            .arg(tmp.path()),
    );
    assert_eq!(out, "18 lints: 0 fatal, 0 warnings\n");
}

#[test]
fn a_fatal_finding_fails_the_build_and_says_how_to_fix_it() {
    let tmp = clean_rootfs();
    fs::remove_dir(tmp.path().join("sysroot")).unwrap();
    let out = lint(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        "fatal api-directories: /dev, /proc, /sys, /run, /tmp, /etc, /var and /sysroot are directories (the root setup and systemd mount onto them)\n  \
         /sysroot: missing\n  \
         fix: mkdir -p /dev /proc /sys /run /tmp /etc /var /sysroot in the Containerfile\n\
         18 lints: 1 fatal, 0 warnings\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn warnings_fail_only_when_asked_and_are_capped() {
    let tmp = clean_rootfs();
    for i in 1..=7 {
        put(tmp.path(), &format!("var/log/build-{i}.log"), "x");
    }
    let out = lint(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..8],
        [
            "  /var/log/build-1.log",
            "  /var/log/build-2.log",
            "  /var/log/build-3.log",
            "  /var/log/build-4.log",
            "  /var/log/build-5.log",
            "  …and 2 more (--no-truncate shows all)",
            "  fix: remove them at the end of the RUN that wrote them (find /var/log -type f -delete)",
        ]
    );
    assert_eq!(lines.last(), Some(&"18 lints: 0 fatal, 1 warning"));

    let out = lint(tmp.path(), &["--no-truncate"]);
    assert!(stdout(&out).contains("  /var/log/build-7.log\n"), "{out:?}");
    assert!(!stdout(&out).contains("more (--no-truncate"), "{out:?}");

    let out = lint(tmp.path(), &["--fatal-warnings"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let out = lint(tmp.path(), &["--fatal-warnings", "--skip", "var-log"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out),
        "17 lints: 0 fatal, 0 warnings, skipped: var-log\n"
    );
}

#[test]
fn json_reports_every_lint_with_all_its_problems() {
    let tmp = clean_rootfs();
    for i in 1..=7 {
        put(tmp.path(), &format!("var/log/build-{i}.log"), "x");
    }
    fs::write(tmp.path().join("etc/machine-id"), "0123456789abcdef\n").unwrap();
    let out = lint(tmp.path(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fatal"], 0);
    assert_eq!(v["warnings"], 2);
    assert_eq!(v["skipped"], serde_json::json!([]));
    let lints = v["lints"].as_array().unwrap();
    let names: Vec<(&str, &str)> = lints
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["level"].as_str().unwrap()))
        .collect();
    assert_eq!(names, LINT_NAMES);
    let problems = |name: &str| {
        lints.iter().find(|l| l["name"] == name).unwrap()["problems"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(problems("var-log"), 7, "JSON is never truncated");
    assert_eq!(problems("machine-id"), 1);
    assert_eq!(problems("kernel"), 0);
    for l in lints {
        assert!(!l["summary"].as_str().unwrap().is_empty(), "{l}");
        assert!(!l["fix"].as_str().unwrap().is_empty(), "{l}");
    }
}

#[test]
fn list_prints_every_lint_in_both_formats() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osctl"));
    let text = run_ok(cmd.args(["container", "lint", "--list"]));
    let headers: Vec<&str> = text.lines().filter(|l| !l.starts_with("  ")).collect();
    let want: Vec<String> = LINT_NAMES
        .iter()
        .map(|(n, l)| format!("{n} ({l})"))
        .collect();
    assert_eq!(headers, want);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  fix: ")).count(),
        18
    );

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osctl"));
    let json: Value = serde_json::from_str(&run_ok(cmd.args([
        "container",
        "lint",
        "--list",
        "--format",
        "json",
    ])))
    .unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, LINT_NAMES.map(|(n, _)| n));
}

#[test]
fn bad_input_is_one_line_naming_it() {
    let out = lint(Path::new("/nonexistent/rootfs"), &[]);
    assert_fails_naming(
        &out,
        &["cannot open the rootfs /nonexistent/rootfs", "No such file"],
    );

    let tmp = clean_rootfs();
    let out = lint(tmp.path(), &["--skip", "api-dirs"]);
    assert_fails_naming(&out, &["--skip api-dirs: no such lint", "--list"]);
    assert_eq!(
        stdout(&out),
        "",
        "nothing is reported when the arguments are wrong"
    );
}
