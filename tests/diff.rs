//! `osctl diff`: files and Debian packages between two images, on scratch
//! machines with images from a real registry. Exact expected output, human
//! and JSON; the default arguments (booted → staged, booted → the cached
//! update); an image without a dpkg database; arguments that name nothing;
//! layer whiteouts, opaque directories, hard links and file names with a
//! newline or bytes that are not UTF-8; a cached update whose `oci:` tag
//! moved.

use osctl_testutil::{Entry, Layer, Registry, RegistryOptions};
use serde_json::{Value, json};

use crate::util::machine::Machine;
use crate::util::{Osctl, booted_cmd, error_lines, os_spec, push_tag, run_fails};

/// A dpkg status file with `packages` (name, version) installed, plus one
/// package that only left its configuration behind (not installed).
fn dpkg_status(packages: &[(&str, &str)]) -> Entry {
    let mut text = String::new();
    for (name, version) in packages {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\n\
             Architecture: amd64\nVersion: {version}\nDescription: {name}\n the package {name}\n\n"
        ));
    }
    text.push_str(
        "Package: leftover\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n",
    );
    Entry::file("var/lib/dpkg/status", text)
}

/// What `os:v1` adds to [`os_spec`].
fn v1_entries() -> Vec<Entry> {
    vec![
        Entry::file("etc/motd", "v1\n"),
        Entry::file("etc/removed.conf", "gone in v2\n"),
        Entry::file_with("etc/mode.conf", 0o644, 0, 0, "same\n"),
        Entry::file_with("etc/owner.conf", 0o644, 0, 0, "same\n"),
        Entry::file("etc/kind", "a file in v1\n"),
        Entry::file("usr/share/doc/old/README", "old\n"),
        Entry::symlink("usr/lib/link", "target-a"),
        Entry::file("usr/lib/tagged", "same\n").with_xattr("user.osctl", "1"),
        dpkg_status(&[
            ("bash", "5.2.15-2"),
            ("coreutils", "9.1-1"),
            ("downpkg", "2:1.0-1"),
            ("oldpkg", "1.0-1"),
            ("samever", "1.01"),
        ]),
    ]
}

/// What `os:v2` adds to [`os_spec`]: every kind of change from v1.
fn v2_entries() -> Vec<Entry> {
    vec![
        Entry::file("etc/motd", "v2\n"),
        Entry::file("etc/added.conf", "new in v2\n"),
        Entry::file_with("etc/mode.conf", 0o600, 0, 0, "same\n"),
        Entry::file_with("etc/owner.conf", 0o644, 1000, 1000, "same\n"),
        Entry::dir("etc/kind"),
        Entry::file("usr/share/doc/new/README", "new\n"),
        Entry::symlink("usr/lib/link", "target-b"),
        Entry::file("usr/lib/tagged", "same\n").with_xattr("user.osctl", "2"),
        dpkg_status(&[
            ("bash", "5.2.15-3"),
            ("coreutils", "9.1-1"),
            ("downpkg", "1:3.0-1"),
            ("newpkg", "0.1~rc1-1"),
            ("samever", "1.1"),
        ]),
    ]
}

/// Pushes `entries` on top of [`os_spec`] as `repo_tag`.
fn push(registry: &Registry, version: &str, entries: Vec<Entry>, repo_tag: &str) -> String {
    push_tag(registry, &os_spec(version, &["quiet"], entries), repo_tag)
}

const USR_FILES: &str = "\
/usr: 2 added, 2 removed, 5 changed
  M /usr/bin/tool (content)
  M /usr/lib/link (target)
  M /usr/lib/modules/6.12.0-osctl/vmlinuz (content)
  M /usr/lib/os-release (content)
  M /usr/lib/tagged (xattrs)
  + /usr/share/doc/new
  + /usr/share/doc/new/README
  - /usr/share/doc/old
  - /usr/share/doc/old/README
";

const ETC_FILES: &str = "\
/etc: 1 added, 1 removed, 4 changed
  + /etc/added.conf
  M /etc/kind (type)
  M /etc/mode.conf (mode)
  M /etc/motd (content)
  M /etc/owner.conf (owner)
  - /etc/removed.conf
";

const PACKAGES: &str = "\
Packages: 1 added, 1 removed, 1 upgraded, 1 downgraded
  added       newpkg 0.1~rc1-1
  removed     oldpkg 1.0-1
  upgraded    bash 5.2.15-2 → 5.2.15-3
  downgraded  downpkg 2:1.0-1 → 1:3.0-1
";

/// The `changes` of the JSON report for v1 → v2.
fn json_files() -> Value {
    let c =
        |path: &str, kind: &str, what: &[&str]| json!({"path": path, "kind": kind, "what": what});
    json!([
        {"tree": "/usr", "added": 2, "removed": 2, "changed": 5, "changes": [
            c("/usr/bin/tool", "changed", &["content"]),
            c("/usr/lib/link", "changed", &["target"]),
            c("/usr/lib/modules/6.12.0-osctl/vmlinuz", "changed", &["content"]),
            c("/usr/lib/os-release", "changed", &["content"]),
            c("/usr/lib/tagged", "changed", &["xattrs"]),
            c("/usr/share/doc/new", "added", &[]),
            c("/usr/share/doc/new/README", "added", &[]),
            c("/usr/share/doc/old", "removed", &[]),
            c("/usr/share/doc/old/README", "removed", &[]),
        ]},
        {"tree": "/etc", "added": 1, "removed": 1, "changed": 4, "changes": [
            c("/etc/added.conf", "added", &[]),
            c("/etc/kind", "changed", &["type"]),
            c("/etc/mode.conf", "changed", &["mode"]),
            c("/etc/motd", "changed", &["content"]),
            c("/etc/owner.conf", "changed", &["owner"]),
            c("/etc/removed.conf", "removed", &[]),
        ]},
    ])
}

fn json_packages() -> Value {
    json!({
        "compared": true,
        "notCompared": null,
        "added": [{"name": "newpkg", "architecture": "amd64", "version": "0.1~rc1-1"}],
        "removed": [{"name": "oldpkg", "architecture": "amd64", "version": "1.0-1"}],
        "upgraded": [{"name": "bash", "architecture": "amd64", "from": "5.2.15-2", "to": "5.2.15-3"}],
        "downgraded": [{"name": "downpkg", "architecture": "amd64", "from": "2:1.0-1", "to": "1:3.0-1"}],
    })
}

/// The manifest digest `status` shows for a deployment.
fn digest_of(m: &Machine, role: &str) -> String {
    m.status()["status"][role]["image"]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn booted_to_staged_by_default_human_and_json() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1 = push(&registry, "1.0", v1_entries(), "os:v1");
    let v2 = push(&registry, "2.0", v2_entries(), "os:v2");
    let mut m = Machine::new();
    let booted = m.boot(&v1);
    let staged = m.switch(&v2);
    let before = m.layout();

    let head = format!(
        "From: booted deployment {} ({v1})\nTo:   staged deployment {} ({v2})\n\n",
        &booted[..12],
        &staged[..12]
    );
    assert_eq!(
        m.run(&["diff"]),
        format!(
            "{head}/usr: 2 added, 2 removed, 5 changed\n/etc: 1 added, 1 removed, 4 changed\n{PACKAGES}"
        )
    );
    assert_eq!(
        m.run(&["diff", "--files"]),
        format!("{head}{USR_FILES}{ETC_FILES}{PACKAGES}")
    );
    // Another command holding the sysroot lock (a long `upgrade`, say)
    // does not stop diff: it reads like status and takes no lock.
    let lock = std::fs::File::open(m.path(osctl_deploy::layout::sysroot::LOCK)).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let mut child = booted_cmd(&m.osctl, m.booted.as_deref())
        .args(["diff", "--files"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A deadline only so that waiting for the lock fails instead of hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("osctl diff waited for the sysroot lock");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{head}{USR_FILES}{ETC_FILES}{PACKAGES}")
    );
    drop(lock);
    // The same two deployments named by id prefix: the roles are theirs.
    assert_eq!(
        m.run(&["diff", "--files", &booted[..8], &staged[..8]]),
        format!("{head}{USR_FILES}{ETC_FILES}{PACKAGES}")
    );

    let json: Value = serde_json::from_str(&m.run(&["diff", "--format", "json"])).unwrap();
    let want = json!({
        "from": {"role": "booted", "deployment": booted, "image": v1, "manifestDigest": digest_of(&m, "booted")},
        "to": {"role": "staged", "deployment": staged, "image": v2, "manifestDigest": digest_of(&m, "staged")},
        "files": json_files(),
        "packages": json_packages(),
    });
    assert_eq!(json, want);

    // Backwards: everything swaps sides.
    let back = m.run(&["diff", &staged, &booted]);
    assert_eq!(
        back,
        format!(
            "From: staged deployment {} ({v2})\nTo:   booted deployment {} ({v1})\n\n\
             /usr: 2 added, 2 removed, 5 changed\n/etc: 1 added, 1 removed, 4 changed\n\
             Packages: 1 added, 1 removed, 1 upgraded, 1 downgraded\n\
             \x20 added       oldpkg 1.0-1\n\
             \x20 removed     newpkg 0.1~rc1-1\n\
             \x20 upgraded    downpkg 1:3.0-1 → 2:1.0-1\n\
             \x20 downgraded  bash 5.2.15-3 → 5.2.15-2\n",
            &staged[..12],
            &booted[..12]
        )
    );
    assert_eq!(m.layout(), before, "diff changed the machine");
}

#[test]
fn cached_update_is_pulled_by_digest_and_compared() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let tracked = push(&registry, "1.0", v1_entries(), "os:stable");
    let mut m = Machine::new();
    let booted = m.boot(&tracked);
    // Nothing staged, no check yet: TO has no default.
    m.fails(&["diff"], &["nothing is staged", "recorded no update"]);

    push(&registry, "2.0", v2_entries(), "os:stable");
    m.run(&["upgrade", "--check"]);
    let update = m.status()["status"]["booted"]["cachedUpdate"]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    let by_digest = format!(
        "{}/os@{update}",
        registry
            .image_ref("os:stable")
            .rsplit_once("/os:")
            .unwrap()
            .0
    );
    let out = booted_cmd(&m.osctl, m.booted.as_deref())
        .args(["diff", "--progress", "none"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        error_lines(&String::from_utf8_lossy(&out.stderr)).join("\n"),
        format!(
            "The update `osctl upgrade --check` found is not in the store: pulling {by_digest} \
             (as `osctl image pull` would; `osctl upgrade` reuses it)"
        )
    );
    let head = format!(
        "From: booted deployment {} ({tracked})\nTo:   cached update {by_digest}\n\n",
        &booted[..12]
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{head}/usr: 2 added, 2 removed, 5 changed\n/etc: 1 added, 1 removed, 4 changed\n{PACKAGES}"
        )
    );
    // Now it is in the store: no pull, nothing on stderr.
    let out = booted_cmd(&m.osctl, m.booted.as_deref())
        .args(["diff", "--files"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(error_lines(&String::from_utf8_lossy(&out.stderr)).is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{head}{USR_FILES}{ETC_FILES}{PACKAGES}")
    );
}

#[test]
fn image_without_dpkg_database_is_compared_by_files_only() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let with = push(&registry, "1.0", v1_entries(), "os:dpkg");
    let mut bare = v2_entries();
    bare.pop(); // the dpkg status file
    let without = push(&registry, "2.0", bare, "os:nodpkg");
    let osctl = Osctl::new();
    osctl.pull(&with);
    osctl.pull(&without);

    let why = format!("no dpkg database in {without}: packages not compared");
    assert_eq!(
        osctl.ok(&["diff", "--files", &with, &without]),
        format!(
            "From: image {with}\nTo:   image {without}\n\n{USR_FILES}{ETC_FILES}Packages: {why}\n"
        )
    );
    let json: Value =
        serde_json::from_str(&osctl.ok(&["diff", "--format", "json", &with, &without])).unwrap();
    assert_eq!(
        json["packages"],
        json!({
            "compared": false, "notCompared": why,
            "added": [], "removed": [], "upgraded": [], "downgraded": [],
        })
    );
    assert_eq!(json["files"], json_files());
    assert_eq!(
        json["from"],
        json!({"role": "image", "deployment": null, "image": with,
        "manifestDigest": osctl.list().iter().find(|r| r["reference"] == with.as_str()).unwrap()["manifestDigest"]})
    );

    // Both without: both named.
    assert_eq!(
        osctl.ok(&["diff", &without, &without]),
        format!(
            "From: image {without}\nTo:   image {without}\n\n\
             /usr: 0 added, 0 removed, 0 changed\n/etc: 0 added, 0 removed, 0 changed\n\
             Packages: no dpkg database in {without} or {without}: packages not compared\n"
        )
    );
}

#[test]
fn an_argument_naming_nothing_is_refused_by_name() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1 = push(&registry, "1.0", v1_entries(), "os:v1");
    let mut m = Machine::new();
    m.boot(&v1);
    let before = m.layout();
    let objects = m.osctl.objects();
    let not_stored = |bad: &str| {
        format!(
            "error: '{bad}' is neither a deployment id (osctl status) nor an image in the store (osctl image list)"
        )
    };
    let with_v1 = ["diff", v1.as_str(), "nosuch/image:v9"];
    let cases: Vec<(&[&str], String)> = vec![
        (&["diff", "nosuch/image:v9"], not_stored("nosuch/image:v9")),
        (&["diff", "abcdef0123"], not_stored("abcdef0123")),
        (&with_v1, not_stored("nosuch/image:v9")),
        // Why a reference does not parse is kept, not replaced by "not
        // in the store".
        (
            &["diff", "NOT A REFERENCE"],
            "error: 'NOT A REFERENCE' is neither a deployment id (osctl status) nor an image \
             reference: invalid image reference 'NOT A REFERENCE': invalid reference format"
                .to_string(),
        ),
    ];
    for (args, want) in cases {
        let bad = args.last().unwrap();
        let line = m.fails(args, &[&format!("'{bad}' is neither a deployment id")]);
        assert_eq!(line, want, "{args:?}");
    }
    assert_eq!(m.layout(), before);
    assert_eq!(m.osctl.objects(), objects);

    // Without deployments, only stored images can be named.
    let bare = Osctl::new();
    bare.pull(&v1);
    run_fails(bare.cmd().args(["diff"]), &["nothing is deployed here"]);
    run_fails(
        bare.cmd().args(["diff", &v1, "nosuch/image:v9"]),
        &["'nosuch/image:v9' is neither a deployment id"],
    );
}

/// Whiteouts, an opaque directory and a hard link in v2's second layer,
/// and names that could forge report lines or are not UTF-8: the exact
/// `--files` output.
#[test]
fn layers_and_odd_names_exact_files() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let v1 = push(
        &registry,
        "1.0",
        vec![
            Entry::file("usr/share/gone", "g\n"),
            Entry::file("usr/share/d/old", "o\n"),
            Entry::file("usr/share/d/kept", "k\n"),
            Entry::file("etc/a.conf", "a\n"),
        ],
        "odd:v1",
    );
    let mut spec = os_spec(
        "1.0",
        &["quiet"],
        vec![
            Entry::file("usr/share/gone", "g\n"),
            Entry::file("usr/share/d/old", "o\n"),
            Entry::file("usr/share/d/kept", "k\n"),
            Entry::file("etc/a.conf", "a\n"),
        ],
    );
    spec.layers.push(Layer::new(vec![
        Entry::whiteout("usr/share/gone"),
        Entry::opaque("usr/share/d"),
        Entry::file("usr/share/d/kept", "k\n"),
        Entry::file("usr/share/d/new", "n\n"),
        Entry::hardlink("etc/b.conf", "etc/a.conf"),
        Entry::raw(&b"etc/x\n  - sudo"[..], "forged\n"),
        Entry::raw(&b"etc/\xff\xfe"[..], "not utf-8\n"),
    ]));
    let v2 = push_tag(&registry, &spec, "odd:v2");
    let osctl = Osctl::new();
    osctl.pull(&v1);
    osctl.pull(&v2);
    assert_eq!(
        osctl.ok(&["diff", "--files", &v1, &v2]),
        format!(
            "From: image {v1}\nTo:   image {v2}\n\n\
             /usr: 1 added, 2 removed, 0 changed\n\
             \x20 + /usr/share/d/new\n\
             \x20 - /usr/share/d/old\n\
             \x20 - /usr/share/gone\n\
             /etc: 3 added, 0 removed, 0 changed\n\
             \x20 + /etc/b.conf\n\
             \x20 + /etc/x\\n  - sudo\n\
             \x20 + /etc/\\xff\\xfe\n\
             Packages: no dpkg database in {v1} or {v2}: packages not compared\n"
        )
    );
    let json: Value =
        serde_json::from_str(&osctl.ok(&["diff", "--format", "json", &v1, &v2])).unwrap();
    assert_eq!(
        json["files"][1]["changes"],
        json!([
            {"path": "/etc/b.conf", "kind": "added", "what": []},
            {"path": "/etc/x\\n  - sudo", "kind": "added", "what": []},
            {"path": "/etc/\\xff\\xfe", "kind": "added", "what": []},
        ])
    );
}

/// The cached update of an `oci:` layout whose tag moved after the check:
/// refused before anything is written, the store as it was.
#[test]
fn cached_update_whose_oci_tag_moved_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let tracked = format!("oci:{}:os", layout.display());
    let write = |version: &str, entries: Vec<Entry>| {
        osctl_testutil::write_layout(&layout, "os", &os_spec(version, &["quiet"], entries))
            .unwrap()
            .manifest_digest
    };
    write("1.0", v1_entries());
    let mut m = Machine::new();
    m.boot(&tracked);
    write("2.0", v2_entries());
    m.run(&["upgrade", "--check"]);
    let update = m.status()["status"]["booted"]["cachedUpdate"]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut v3 = v2_entries();
    v3.push(Entry::file("etc/v3", "3\n"));
    let moved = write("3.0", v3);
    let before = m.layout();
    let records = m.osctl.list();
    let objects = m.osctl.objects();
    let out = booted_cmd(&m.osctl, m.booted.as_deref())
        .args(["diff", "--progress", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        error_lines(&String::from_utf8_lossy(&out.stderr)),
        [
            format!(
                "The update `osctl upgrade --check` found is not in the store: pulling {tracked} \
                 (as `osctl image pull` would; `osctl upgrade` reuses it)"
            ),
            format!(
                "error: pulling the update {update} `osctl upgrade --check` recorded (run the \
                 check again): {tracked} now resolves to {moved}, not to {update}; nothing was \
                 pulled"
            ),
        ]
    );
    assert_eq!(m.layout(), before);
    assert_eq!(m.osctl.list(), records);
    assert_eq!(m.osctl.objects(), objects);
}
