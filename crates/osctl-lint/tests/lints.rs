//! Each lint against a rootfs that breaks exactly its rule, and a clean
//! rootfs that passes them all. A case asserts the complete outcome: the
//! one lint that fires, its exact problems, and silence from every other.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use osctl_lint::{LINTS, Level, LintError, Rootfs};

const KVER: &str = "6.12.0-test";

/// A gzip-compressed newc initramfs holding `names`.
fn initramfs(names: &[&str]) -> Vec<u8> {
    let inputs = names.iter().map(|n| {
        (
            cpio::NewcBuilder::new(n).mode(0o100755),
            Cursor::new(b"x".to_vec()),
        )
    });
    let archive = cpio::write_cpio(inputs, Vec::new()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive).unwrap();
    gz.finish().unwrap()
}

fn write(root: &Path, path: &str, content: impl AsRef<[u8]>) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn mkdir(root: &Path, path: &str) {
    fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

fn remove(root: &Path, path: &str) {
    let path = root.join(path.trim_start_matches('/'));
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// A rootfs every lint accepts: what the bootable Debian example holds,
/// reduced to what the lints look at.
fn clean_rootfs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for d in [
        "/dev", "/proc", "/sys", "/run", "/tmp", "/sysroot", "/boot", "/var/log",
    ] {
        mkdir(r, d);
    }
    symlink("../run", r.join("var/run")).unwrap();
    symlink("var/home", r.join("home")).unwrap();
    write(r, &format!("/usr/lib/modules/{KVER}/vmlinuz"), "kernel");
    write(
        r,
        &format!("/usr/lib/modules/{KVER}/initramfs.img"),
        initramfs(&["init", "usr/lib/osctl/osctl-root-setup"]),
    );
    write(
        r,
        "/usr/lib/bootc/kargs.d/10-panic.toml",
        "kargs = [\"panic=10\"]\n",
    );
    write(
        r,
        "/etc/ssl/certs/ca-certificates.crt",
        "-----BEGIN CERTIFICATE-----\n",
    );
    write(r, "/etc/machine-id", "");
    write(
        r,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:998:998::/:/usr/sbin/nologin\n",
    );
    write(r, "/etc/group", "root:x:0:\napp:x:998:\n");
    write(
        r,
        "/usr/lib/sysusers.d/app.conf",
        "u app - \"An application\"\n",
    );
    // Package records and a declared state directory are not findings.
    write(r, "/var/lib/dpkg/status", "Package: base-files\n");
    write(
        r,
        "/usr/lib/tmpfiles.d/app.conf",
        "d /var/lib 0755 - - -\nd /var/lib/app 0750 app app -\n",
    );
    mkdir(r, "/var/lib/app");
    write(r, "/var/lib/apt/lists/lock", "");
    tmp
}

/// Every lint's problems on `root`, by name, leaving out lints that found
/// nothing.
fn findings(root: &Path) -> Vec<(&'static str, Vec<String>)> {
    let report = osctl_lint::run(&Rootfs::open(root).unwrap(), &[]).unwrap();
    report
        .outcomes
        .into_iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| (o.lint.name, o.problems))
        .collect()
}

type Breakage = fn(&Path);

fn cases() -> Vec<(&'static str, Breakage, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let kdir = format!("/usr/lib/modules/{KVER}");
    vec![
        (
            "kernel",
            |r| remove(r, &format!("/usr/lib/modules/{KVER}/vmlinuz")),
            s(&["/usr/lib/modules: no <kver>/vmlinuz"]),
        ),
        (
            "kernel",
            |r| write(r, "/usr/lib/modules/6.13.0/vmlinuz", "k2"),
            vec![
                "/usr/lib/modules/6.12.0-test/vmlinuz: one of 2 kernels".into(),
                "/usr/lib/modules/6.13.0/vmlinuz: one of 2 kernels".into(),
            ],
        ),
        (
            "kernel",
            |r| remove(r, &format!("/usr/lib/modules/{KVER}/initramfs.img")),
            vec![format!("{kdir}/initramfs.img: missing")],
        ),
        (
            "initramfs-root-setup",
            |r| {
                write(
                    r,
                    &format!("/usr/lib/modules/{KVER}/initramfs.img"),
                    initramfs(&["init"]),
                )
            },
            vec![format!(
                "{kdir}/initramfs.img: no usr/lib/osctl/osctl-root-setup inside"
            )],
        ),
        (
            "initramfs-root-setup",
            |r| {
                write(
                    r,
                    &format!("/usr/lib/modules/{KVER}/initramfs.img"),
                    "not an initramfs",
                )
            },
            vec![format!(
                "{kdir}/initramfs.img: not a readable initramfs: neither a cpio archive nor a compressed one"
            )],
        ),
        (
            "kargs",
            |r| {
                write(
                    r,
                    "/usr/lib/osctl/kargs.d/20-bad.toml",
                    "karg = [\"quiet\"]\n",
                )
            },
            s(&[
                "/usr/lib/osctl/kargs.d/20-bad.toml: invalid kargs.d TOML at line 1, column 1: unknown field `karg`, expected `kargs` or `match-architectures`",
            ]),
        ),
        (
            "utf8",
            |r| {
                fs::write(
                    r.join("usr/lib")
                        .join(std::ffi::OsStr::from_bytes(b"bad\xff")),
                    "",
                )
                .unwrap()
            },
            s(&["/usr/lib/bad\u{FFFD}: name is not UTF-8"]),
        ),
        (
            "utf8",
            |r| {
                symlink(
                    std::ffi::OsStr::from_bytes(b"to\xfe"),
                    r.join("usr/lib/link"),
                )
                .unwrap()
            },
            s(&["/usr/lib/link: symlink target is not UTF-8"]),
        ),
        (
            "api-directories",
            |r| remove(r, "/sysroot"),
            s(&["/sysroot: missing"]),
        ),
        (
            "var-run",
            |r| {
                remove(r, "/var/run");
                mkdir(r, "/var/run");
            },
            s(&["/var/run: not a symlink to /run"]),
        ),
        (
            "etc-usretc",
            |r| mkdir(r, "/usr/etc"),
            s(&["/usr/etc: present beside /etc"]),
        ),
        (
            "panic-karg",
            |r| {
                write(
                    r,
                    "/usr/lib/bootc/kargs.d/10-panic.toml",
                    "kargs = [\"quiet\"]\n",
                )
            },
            s(&["no panic= in /usr/lib/bootc/kargs.d or /usr/lib/osctl/kargs.d"]),
        ),
        (
            "boot-empty",
            |r| write(r, "/boot/vmlinuz-6.12.0-test", "kernel"),
            s(&["/boot/vmlinuz-6.12.0-test"]),
        ),
        (
            "writable-dirs",
            |r| {
                remove(r, "/home");
                mkdir(r, "/home");
                mkdir(r, "/srv");
            },
            s(&[
                "/home: a directory of the image, read-only on the machine",
                "/srv: a directory of the image, read-only on the machine",
            ]),
        ),
        (
            "var-content",
            |r| {
                write(r, "/var/lib/app/seed.db", "data");
                write(r, "/var/opt/tool/x", "data");
                // Caches are exempt even where tmpfiles.d declares /var/cache.
                write(
                    r,
                    "/usr/lib/tmpfiles.d/var.conf",
                    "d /var/cache 0755 - - -\n",
                );
                write(r, "/var/cache/ldconfig/aux-cache", "x");
            },
            s(&[
                "/var/lib/app/seed.db: not created by tmpfiles.d",
                "/var/opt: not created by tmpfiles.d",
            ]),
        ),
        (
            "var-log",
            |r| {
                write(r, "/var/log/apt/history.log", "Start-Date: ...");
                // systemd's pointer to its docs is not a log.
                symlink(
                    "../../usr/share/doc/systemd/README.logs",
                    r.join("var/log/README"),
                )
                .unwrap();
            },
            s(&["/var/log/apt/history.log"]),
        ),
        (
            "run-tmp",
            |r| {
                write(r, "/tmp/build.sh", "#!/bin/sh");
                write(r, "/run/.containerenv", "");
                write(r, "/run/app/pid", "1");
                // Empty directories and symlinks, as base images ship in
                // /run, are fine.
                mkdir(r, "/run/lock");
                symlink("/dev/shm", r.join("run/shm")).unwrap();
            },
            s(&["/run/app/pid", "/tmp/build.sh"]),
        ),
        (
            "package-caches",
            |r| {
                write(r, "/var/cache/apt/archives/nginx_1.26_amd64.deb", "deb");
                write(r, "/var/cache/apt/archives/lock", "");
                write(
                    r,
                    "/var/lib/apt/lists/deb.debian.org_dists_trixie_InRelease",
                    "x",
                );
            },
            s(&[
                "/var/cache/apt/archives/nginx_1.26_amd64.deb",
                "/var/lib/apt/lists/deb.debian.org_dists_trixie_InRelease",
            ]),
        ),
        (
            "sysusers",
            |r| {
                write(
                    r,
                    "/etc/passwd",
                    "root:x:0:0::/root:/bin/sh\napp:x:998:998::/:/bin/false\nweb:x:997:997::/:/bin/false\n",
                );
                write(
                    r,
                    "/etc/group",
                    "root:x:0:\napp:x:998:\nweb:x:997:\nnogroup:x:65534:\n",
                );
            },
            s(&[
                "/etc/passwd: user web (997) has no sysusers.d entry",
                "/etc/group: group web (997) has no sysusers.d entry",
            ]),
        ),
        (
            "machine-id",
            |r| write(r, "/etc/machine-id", "4f1c3c5e0d1e4b7a9a1b2c3d4e5f6a7b\n"),
            s(&["/etc/machine-id: holds an id"]),
        ),
        (
            "buildah-injected",
            |r| {
                write(r, "/etc/hostname", "");
                write(r, "/etc/resolv.conf", "nameserver 192.0.2.1\n");
            },
            s(&["/etc/hostname: an empty placeholder"]),
        ),
        (
            "ca-bundle",
            |r| remove(r, "/etc/ssl/certs/ca-certificates.crt"),
            s(&[
                "none of /etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt, /etc/ssl/cert.pem",
            ]),
        ),
    ]
}

#[test]
fn a_clean_rootfs_passes_every_lint() {
    let tmp = clean_rootfs();
    assert_eq!(findings(tmp.path()), []);
}

#[test]
fn each_lint_fires_on_its_own_breakage_only() {
    for (name, breakage, want) in cases() {
        let tmp = clean_rootfs();
        breakage(tmp.path());
        assert_eq!(findings(tmp.path()), [(name, want)], "case {name}");
    }
}

#[test]
fn a_lint_that_cannot_check_says_so_and_the_others_still_run() {
    let tmp = clean_rootfs();
    // Staging would read it whole; lint refuses to judge a cut-short file.
    let big = format!("{}kargs = [\"quiet\"]\n", "# pad\n".repeat(20_000));
    write(tmp.path(), "/usr/lib/osctl/kargs.d/20-big.toml", big);
    write(tmp.path(), "/var/log/x.log", "x");
    let why = "could not check: /usr/lib/osctl/kargs.d/20-big.toml is larger than 65536 bytes";
    assert_eq!(
        findings(tmp.path()),
        [
            ("kargs", vec![why.to_owned()]),
            ("panic-karg", vec![why.to_owned()]),
            ("var-log", vec!["/var/log/x.log".to_owned()]),
        ]
    );
    let report = osctl_lint::run(&Rootfs::open(tmp.path()).unwrap(), &[]).unwrap();
    assert!(
        report.fails(false),
        "a fatal lint that could not check fails the build"
    );
}

#[test]
fn names_cannot_forge_report_lines() {
    let tmp = clean_rootfs();
    write(tmp.path(), "/var/log/x\n18 lints: 0 fatal\x1b[2J", "x");
    assert_eq!(
        findings(tmp.path()),
        [(
            "var-log",
            vec!["/var/log/x\\n18 lints: 0 fatal\\u{1b}[2J".to_owned()]
        )]
    );
}

#[test]
fn every_lint_has_a_case() {
    let tested: BTreeSet<&str> = cases().iter().map(|(n, _, _)| *n).collect();
    let all: BTreeSet<&str> = LINTS.iter().map(|l| l.name).collect();
    assert_eq!(tested, all);
}

#[test]
fn fatal_findings_fail_the_build_and_warnings_only_when_asked() {
    let tmp = clean_rootfs();
    write(tmp.path(), "/var/log/x.log", "x");
    let report = osctl_lint::run(&Rootfs::open(tmp.path()).unwrap(), &[]).unwrap();
    assert_eq!(
        (report.failed(Level::Fatal), report.failed(Level::Warning)),
        (0, 1)
    );
    assert!(!report.fails(false));
    assert!(report.fails(true));

    remove(tmp.path(), "/sysroot");
    let report = osctl_lint::run(&Rootfs::open(tmp.path()).unwrap(), &[]).unwrap();
    assert!(report.fails(false));
}

#[test]
fn skip_leaves_a_lint_out_and_refuses_unknown_names() {
    let tmp = clean_rootfs();
    remove(tmp.path(), "/sysroot");
    let rootfs = Rootfs::open(tmp.path()).unwrap();
    let report = osctl_lint::run(&rootfs, &["api-directories".into()]).unwrap();
    assert_eq!(report.skipped, ["api-directories"]);
    assert!(!report.fails(true));
    assert_eq!(report.outcomes.len(), LINTS.len() - 1);

    let e = osctl_lint::run(&rootfs, &["api-dirs".into()])
        .err()
        .unwrap();
    assert!(matches!(e, LintError::UnknownLint(_)));
    assert_eq!(
        e.to_string(),
        "--skip api-dirs: no such lint (see osctl container lint --list)"
    );
}

#[test]
fn a_missing_rootfs_is_named_and_keeps_its_cause() {
    let e = Rootfs::open(Path::new("/nonexistent/rootfs"))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "cannot open the rootfs /nonexistent/rootfs");
    let source = std::error::Error::source(&e).unwrap();
    let io = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

/// docs/lints.md is the `--list` of record; this keeps it equal to the
/// table. `OSCTL_UPDATE_DOCS=1` rewrites it (osctl-testutil's generated_doc).
#[test]
fn docs_list_every_lint() {
    let mut want = String::from(
        "# `osctl container lint`: the lints\n\n\
         Generated from the lint table (`crates/osctl-lint/src/rules/mod.rs`) by its test;\n\
         `osctl container lint --list` prints the same. Names are stable: `--skip NAME`.\n\n\
         | name | level | what it checks, and why | fix |\n|---|---|---|---|\n",
    );
    for l in &LINTS {
        let level = match l.level {
            Level::Fatal => "fatal",
            Level::Warning => "warning",
        };
        let cell = |s: &str| s.replace('|', "\\|");
        want += &format!(
            "| `{}` | {level} | {} | {} |\n",
            l.name,
            cell(l.summary),
            cell(l.fix)
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/lints.md");
    osctl_testutil::generated_doc::update_if_asked(&path, &want);
    let have = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        have == want,
        "docs/lints.md is out of date: run OSCTL_UPDATE_DOCS=1 cargo test -p osctl-lint --test lints docs_list_every_lint"
    );
}
