//! All five auth file locations, and their order: the first file holding an
//! entry for the registry supplies the credentials (crates/osctl-image
//! src/auth.rs):
//! 1. `$REGISTRY_AUTH_FILE`, 2. `/etc/osctl/auth.json`,
//! 3. `/etc/ostree/auth.json`, 4. `$XDG_RUNTIME_DIR/containers/auth.json`,
//! 5. `~/.docker/config.json`.
//!
//! The two `/etc` files are read at their real paths: osctl runs in a
//! private mount namespace (`unshare --mount`) in which `/etc` is an overlay
//! whose upper layer is a scratch directory, so the files appear where osctl
//! looks for them while the host's `/etc` is never written. The other three
//! point into the scratch sysroot (`HOME` is the sysroot in these tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Osctl, assert_fails_naming, push_spec};
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions, write_auth_json};

/// `cmd` run inside a mount namespace where `/etc` is `/etc` overlaid with
/// `upper` (`work` is overlayfs's scratch directory, on the same file system).
fn with_private_etc(cmd: &Command, upper: &Path, work: &Path) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t overlay osctl-test-etc -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(upper)
        .arg(work)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// The five files, in lookup order, as osctl sees them (`visible`) and
/// where the test writes them (`written`).
struct AuthFile {
    visible: PathBuf,
    written: PathBuf,
}

#[test]
fn every_auth_file_location_in_order() {
    let registry =
        Registry::start(RegistryOptions::default().with_auth("alice", "s3cret")).unwrap();
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::file("etc/authed", "yes\n")])]);
    let (reference, _) = push_spec(&registry, "private/os:v1", &spec);
    let addr = registry.addr();
    let host_etc = ["/etc/osctl", "/etc/ostree"].map(|d| Path::new(d).exists());
    let osctl = Osctl::new();
    let root = osctl.sysroot().to_path_buf();
    let (upper, work) = (root.join("etc-upper"), root.join("etc-work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();

    let runtime_dir = root.join("run-user");
    let files = [
        AuthFile {
            visible: root.join("env-auth.json"),
            written: root.join("env-auth.json"),
        },
        AuthFile {
            visible: "/etc/osctl/auth.json".into(),
            written: upper.join("osctl/auth.json"),
        },
        AuthFile {
            visible: "/etc/ostree/auth.json".into(),
            written: upper.join("ostree/auth.json"),
        },
        AuthFile {
            visible: runtime_dir.join("containers/auth.json"),
            written: runtime_dir.join("containers/auth.json"),
        },
        AuthFile {
            visible: root.join(".docker/config.json"),
            written: root.join(".docker/config.json"),
        },
    ];
    let run = |args: &[&str]| {
        let mut cmd = osctl.cmd();
        cmd.env("REGISTRY_AUTH_FILE", &files[0].visible)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .args(args);
        with_private_etc(&cmd, &upper, &work)
            .output()
            .expect("running osctl in a private mount namespace")
    };

    // Every file exists but holds no entry for this registry: anonymous, 401.
    for f in &files {
        write_auth_json(&f.written, "registry.example.invalid", "x", "y").unwrap();
    }
    let out = run(&["image", "pull", "--quiet", &reference]);
    // …and the error lists every file it consulted, at its real path.
    let mut needles = vec!["401"];
    needles.extend(files.iter().map(|f| f.visible.to_str().unwrap()));
    assert_fails_naming(&out, &needles);

    // From the last file to the first: a file with the right password wins
    // over every later one (which all hold a wrong one by then), and with a
    // wrong password it is the one the 401 names.
    for f in files.iter().rev() {
        write_auth_json(&f.written, &addr, "alice", "s3cret").unwrap();
        let out = run(&["image", "pull", "--quiet", &reference]);
        assert!(
            out.status.success(),
            "credentials from {} should win: {}",
            f.visible.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        write_auth_json(&f.written, &addr, "alice", "wrong").unwrap();
        let before = osctl.list();
        let out = run(&["image", "pull", "--progress", "none", &reference]);
        // No test hook is set here: stderr is the error line alone.
        let named = format!("credentials from {}", f.visible.display());
        let line = assert_fails_naming(&out, &["401", &named, &addr]);
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{line}\n"));
        assert_eq!(osctl.list(), before, "a failed pull changes nothing");
    }
    osctl.fsck_clean();
    // The files went to the overlay; the host's /etc is as it was.
    assert!(upper.join("osctl/auth.json").exists() && upper.join("ostree/auth.json").exists());
    assert_eq!(
        ["/etc/osctl", "/etc/ostree"].map(|d| Path::new(d).exists()),
        host_etc
    );
}
