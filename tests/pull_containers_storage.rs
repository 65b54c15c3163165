//! Local builds without a registry: buildah builds an OS image into a
//! scratch containers storage (`vfs`, `--root`/`--runroot` in a temp dir)
//! from a base made here as an OCI layout and copied into that storage by
//! skopeo (as `podman pull` would leave it: gzip layers in its manifest); osctl switches to it as
//! `containers-storage:[vfs@ROOT+RUNROOT]localhost/os:1`, upgrades after the
//! tag is rebuilt, and refuses what it cannot read by name.

use std::path::Path;
use std::process::Command;

use osctl_testutil::{Entry, write_layout};

use crate::util::machine::Machine;
use crate::util::store::{deploy_state, record_path};
use crate::util::{Osctl, os_spec};

/// A containers storage of its own, and a build context.
struct LocalStorage {
    dir: tempfile::TempDir,
}

impl LocalStorage {
    fn new() -> LocalStorage {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        LocalStorage { dir }
    }

    /// `[vfs@ROOT+RUNROOT]`, the storage part of a reference.
    fn spec(&self) -> String {
        format!(
            "[vfs@{}+{}]",
            self.dir.path().join("root").display(),
            self.dir.path().join("run").display()
        )
    }

    /// `containers-storage:[…]NAME`.
    fn reference(&self, name: &str) -> String {
        format!("containers-storage:{}{name}", self.spec())
    }

    fn buildah(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }

    /// Copies the layout `oci:DIR:TAG` into the storage as
    /// `localhost/base:1` (the name a build's `FROM` gives).
    fn import_base(&self, layout: &str) -> &'static str {
        let status = Command::new("skopeo")
            .args(["copy", "-q", layout, &self.reference(BASE)])
            .status()
            .unwrap();
        assert!(status.success(), "skopeo copy {layout}");
        BASE
    }

    /// `buildah build` of a Containerfile `FROM BASE` that copies
    /// `files` (path in the image, content) in, tagged `tag`.
    fn build(&self, base: &str, files: &[(&str, &str)], tag: &str) {
        self.build_format(base, files, tag, "oci");
    }

    /// [`Self::build`] with buildah's `--format` (`oci` or `docker`).
    fn build_format(&self, base: &str, files: &[(&str, &str)], tag: &str, format: &str) {
        let ctx = tempfile::tempdir().unwrap();
        let mut containerfile = format!("FROM {base}\n");
        for (i, (path, content)) in files.iter().enumerate() {
            std::fs::write(ctx.path().join(format!("f{i}")), content).unwrap();
            containerfile.push_str(&format!("COPY f{i} /{path}\n"));
        }
        std::fs::write(ctx.path().join("Containerfile"), containerfile).unwrap();
        let out = self
            .buildah()
            .args(["build", "--isolation", "chroot", "--pull-never", "--quiet"])
            .args(["--format", format, "-t", tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The name of the base image in a [`LocalStorage`].
const BASE: &str = "localhost/base:1";

/// The OS base as an OCI layout (gzip layers), as `oci:DIR:base`.
fn base_layout(dir: &Path) -> String {
    let spec = os_spec("1.0", &["quiet"], vec![Entry::file("etc/motd", "base\n")]);
    write_layout(dir, "base", &spec).unwrap();
    format!("oci:{}:base", dir.display())
}

/// Every path under `dir` with its size (directories: 0), sorted: what a
/// refused command must leave exactly as it was.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                todo.push(e.path());
                out.push((rel, 0));
            } else {
                out.push((rel, meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn read(osctl: &Osctl, reference: &str, path: &str) -> String {
    let mnt = tempfile::tempdir().unwrap();
    osctl.ok(&["image", "mount", reference, mnt.path().to_str().unwrap()]);
    let content = std::fs::read_to_string(mnt.path().join(path));
    let status = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(status.success(), "umount {}", mnt.path().display());
    content.unwrap_or_else(|e| panic!("{path} in {reference}: {e}"))
}

#[test]
fn switch_and_upgrade_from_a_local_build() {
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build(
        base,
        &[
            ("usr/share/local/build", "build 1\n"),
            ("etc/motd", "local 1\n"),
        ],
        "localhost/os:1",
    );
    let reference = storage.reference("localhost/os:1");

    let mut machine = Machine::new();
    let first = machine.boot(&reference);
    let status = machine.status();
    assert_eq!(
        status["status"]["booted"]["image"]["image"],
        serde_json::json!({
            "image": format!("{}localhost/os:1", storage.spec()),
            "transport": "containers-storage",
            // The tests' policy accepts anything (local builds carry no
            // signatures).
            "signature": "insecure",
        })
    );
    for (path, want) in [
        ("usr/share/local/build", "build 1\n"),
        ("etc/motd", "local 1\n"),
        (
            "usr/lib/bootc/kargs.d/10-test.toml",
            "kargs = [\"quiet\"]\n",
        ),
    ] {
        assert_eq!(read(&machine.osctl, &reference, path), want, "{path}");
    }

    let out = machine.run(&["upgrade", "--check"]);
    assert!(out.contains("No update available"), "{out}");

    // The admin rebuilds the same tag: upgrade reads the origin's
    // reference (same storage) again and stages the new image.
    storage.build(
        base,
        &[
            ("usr/share/local/build", "build 2\n"),
            ("etc/motd", "local 2\n"),
        ],
        "localhost/os:1",
    );
    let out = machine.run(&["upgrade", "--check"]);
    assert!(out.contains("Update available"), "{out}");
    machine.run(&["upgrade", "--progress", "none"]);
    let roles = machine.roles();
    let staged = roles.staged.expect("upgrade staged the rebuilt image");
    assert_ne!(staged, first);
    assert_eq!(
        read(&machine.osctl, &reference, "usr/share/local/build"),
        "build 2\n"
    );
    // Its /etc is the rebuilt one.
    assert_eq!(
        std::fs::read_to_string(
            machine
                .osctl
                .sysroot()
                .join(format!("sysroot/state/deploy/{staged}/etc/motd"))
        )
        .unwrap(),
        "local 2\n"
    );
    // Nothing new since: upgrade stages nothing more.
    let out = machine.run(&["upgrade", "--progress", "none"]);
    assert_eq!(
        machine.roles().staged.as_deref(),
        Some(staged.as_str()),
        "{out}"
    );
    machine.osctl.fsck_clean();
}

#[test]
fn transport_option_forms_are_the_prefixed_form() {
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build(base, &[("etc/motd", "local\n")], "localhost/os:1");
    let reference = storage.reference("localhost/os:1");
    let unprefixed = format!("{}localhost/os:1", storage.spec());

    // image pull: both forms are one record under the prefixed reference.
    let osctl = Osctl::new();
    osctl.ok(&[
        "image",
        "pull",
        "--progress",
        "none",
        "--transport",
        "containers-storage",
        &unprefixed,
    ]);
    let out = osctl.pull(&reference);
    assert!(out.contains("0 fetched, 2 already present"), "{out}");
    let list = osctl.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["reference"], reference.as_str());

    // switch: the --transport form stages what the prefixed form names.
    let machine = Machine::new();
    let id = machine.switch(&reference);
    let again = machine.run(&[
        "switch",
        "--retain",
        "--progress",
        "none",
        "--transport",
        "containers-storage",
        &unprefixed,
    ]);
    assert_eq!(
        again,
        format!(
            "{reference} already boots next (deployment {})\n",
            &id[..12]
        )
    );
}

#[test]
fn what_cannot_be_read_is_refused_by_name() {
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build(base, &[("etc/motd", "local\n")], "localhost/os:1");
    let machine = Machine::new();
    machine.switch(&storage.reference("localhost/os:1"));
    let before = deploy_state(&machine.osctl);
    let list_before = machine.osctl.list();
    let files_before = files(machine.osctl.sysroot());

    let missing = storage.reference("localhost/nothing:1");
    // The base, copied in from a layout, keeps its gzip manifest.
    let pulled = storage.reference(base);
    let no_root = format!(
        "containers-storage:[vfs@{}+{}]localhost/os:1",
        layouts.path().join("no-root").display(),
        layouts.path().join("no-run").display()
    );
    // An existing directory that holds no storage (a typo in the path),
    // and the right storage under the wrong driver: skopeo would set up a
    // new, empty storage in either before finding no image.
    let empty = layouts.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_root = format!(
        "containers-storage:[vfs@{}+{}]localhost/os:1",
        empty.display(),
        layouts.path().join("no-run").display()
    );
    let storage_root = storage.dir.path().join("root");
    let wrong_driver = format!(
        "containers-storage:[overlay@{}+{}]localhost/os:1",
        storage_root.display(),
        storage.dir.path().join("run").display()
    );
    let storage_before = files(&storage_root);
    for (args, needles) in [
        (
            vec!["switch", empty_root.as_str()],
            vec![format!(
                "error: {empty_root}: its storage root {} holds no vfs storage (no vfs-images/ \
                 in it)",
                empty.display()
            )],
        ),
        (
            vec!["image", "pull", wrong_driver.as_str()],
            vec![format!(
                "error: pulling {wrong_driver}: {wrong_driver}: its storage root {} holds no \
                 overlay storage (no overlay-images/ in it)",
                storage_root.display()
            )],
        ),
        (
            vec!["switch", missing.as_str()],
            vec![
                format!("error: {missing}: cannot open the image: "),
                "does not resolve to an image".to_string(),
            ],
        ),
        (
            vec!["image", "pull", missing.as_str()],
            vec![format!(
                "error: pulling {missing}: {missing}: cannot open the image: "
            )],
        ),
        (
            vec!["switch", pulled.as_str()],
            vec![
                format!("error: {pulled}: layer 0 (sha256:"),
                "is recorded application/vnd.oci.image.layer.v1.tar+gzip in its manifest"
                    .to_string(),
            ],
        ),
        (
            vec!["switch", no_root.as_str()],
            vec![format!(
                "error: {no_root}: its storage root {} does not exist",
                layouts.path().join("no-root").display()
            )],
        ),
        (
            vec!["switch", "--transport", "registry", missing.as_str()],
            vec![format!(
                "error: image reference '{missing}' names transport 'containers-storage', \
                 but --transport says 'registry'"
            )],
        ),
        (
            vec!["image", "pull", "--transport", "oci", missing.as_str()],
            vec![format!(
                "error: image reference '{missing}' names transport 'containers-storage', \
                 but --transport says 'oci'"
            )],
        ),
        (
            vec!["switch", "--transport", "ftp", "localhost/os:1"],
            vec![
                "error: unknown transport 'ftp' (accepted: registry, oci, oci-archive, \
                 containers-storage)"
                    .to_string(),
            ],
        ),
    ] {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let line = machine.fails(&args, &needles);
        eprintln!("{line}");
        assert_eq!(deploy_state(&machine.osctl), before, "{args:?}");
        assert_eq!(machine.osctl.list(), list_before, "{args:?}");
        assert_eq!(files(machine.osctl.sysroot()), files_before, "{args:?}");
    }
    // skopeo was not let to create the storage a typo named.
    assert!(!layouts.path().join("no-root").exists());
    assert!(!layouts.path().join("no-run").exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert_eq!(files(&storage_root), storage_before);
    machine.osctl.fsck_clean();
}

/// A layer whose files changed on disk after the build (containers storage
/// keeps layers unpacked and reassembles the tar on each read) is refused:
/// containers storage checks each file against the checksums it recorded at
/// commit, before the proxy's and osctl's digest checks see the end of the
/// blob. The pull fails naming the layer, the reference and the file, and
/// the store's images are as before (`pull_fails`; the base layer it
/// verified stays for the next pull, as after any failed pull).
#[test]
fn a_layer_changed_in_storage_is_refused() {
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build(
        base,
        &[("usr/share/local/build", "build 1\n")],
        "localhost/os:1",
    );
    // vfs keeps each layer as a whole directory; change the file in the
    // one layer (the build's) that has it.
    let layers = storage.dir.path().join("root/vfs/dir");
    let changed: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path().join("usr/share/local/build"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    std::fs::write(&changed[0], "tampered\n").unwrap();

    let osctl = Osctl::new();
    let reference = storage.reference("localhost/os:1");
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", &reference])
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    // The store counts layers from 1.
    let last = layers.len();
    let digest = layers[last - 1]["digest"].as_str().unwrap();
    osctl.pull_fails(
        &[&reference],
        &[&format!(
            "error: pulling {reference}: layer {last} ({digest}) of {reference}: failed to \
             invoke method GetBlob: file integrity checksum failed for \"usr/share/local/build\""
        )],
    );
}

/// A storage whose lock another process holds (a stuck buildah, say):
/// skopeo waits for it, and so does osctl, but not silently — after a while
/// one warning names the reference and the likely cause; once the lock is
/// released the pull completes.
#[test]
fn a_locked_storage_is_waited_for_and_said() {
    use std::io::Read;
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build(base, &[("usr/share/local/build", "1\n")], "localhost/os:1");
    let reference = storage.reference("localhost/os:1");
    // The locks containers storage takes to read an image, held the way
    // it holds them (fcntl), by a process that waits for a line on stdin.
    let root = storage.dir.path().join("root");
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\n\
             fs = [open(p, 'r+') for p in sys.argv[1:]]\n\
             [fcntl.lockf(f, fcntl.LOCK_EX) for f in fs]\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()",
        ])
        .arg(root.join("storage.lock"))
        .arg(root.join("vfs-images/images.lock"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 7];
    holder.stdout.take().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"locked\n");

    let osctl = Osctl::new();
    let mut pull = osctl
        .cmd()
        .args(["image", "pull", "--quiet", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The lock goes once the warning is out (10 s after skopeo's proxy
    // started, however long that took), not after a fixed time.
    let (lines, heard) = std::sync::mpsc::channel::<String>();
    let stderr = std::io::BufReader::new(pull.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            // The test may have stopped listening: only the text matters.
            let _ = lines.send(line);
        }
        all
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match heard.recv_timeout(left) {
            Ok(line) if line.contains("still waiting") => break,
            Ok(_) => {}
            Err(e) => {
                drop(holder.stdin.take());
                let _ = pull.kill(); // it may have ended already: that is the failure
                panic!(
                    "no warning from the waiting pull ({e}):\n{}",
                    reader.join().unwrap()
                );
            }
        }
    }
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    let status = pull.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].ends_with(&format!(
            "{reference}: still waiting after 10 s for skopeo to open the image; another \
             buildah or podman may hold the containers storage lock"
        )),
        "{stderr}"
    );
}

/// Without skopeo there is no way to read containers storage: one line
/// naming the reference and what to install. (The host's default storage:
/// a named storage root must hold a storage before skopeo is started, and
/// without skopeo nothing can touch the default one.)
#[test]
fn without_skopeo_the_reference_is_named() {
    let reference = "containers-storage:localhost/os:1";
    let mut osctl = Osctl::new();
    let empty = tempfile::tempdir().unwrap();
    osctl.set_env("PATH", empty.path());
    osctl.pull_fails(
        &[reference],
        &[&format!(
            "error: pulling {reference}: {reference}: cannot start skopeo's image proxy: cannot \
             run skopeo (is the skopeo package installed?): "
        )],
    );
}

/// A Docker-format build (`buildah build --format docker`): the proxy
/// converts manifest and config to OCI; osctl records the converted
/// manifest's digest and reads the converted config, and the image holds
/// what the build wrote.
#[test]
fn docker_format_builds_are_read_as_converted() {
    let layouts = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let base = storage.import_base(&base_layout(layouts.path()));
    storage.build_format(
        base,
        &[("usr/share/local/build", "docker format\n")],
        "localhost/os:1",
        "docker",
    );
    let reference = storage.reference("localhost/os:1");
    let stored = Command::new("skopeo")
        .args(["inspect", "--raw", &reference])
        .output()
        .unwrap()
        .stdout;
    let stored_json: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        stored_json["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    let osctl = Osctl::new();
    osctl.pull(&reference);
    let list = osctl.list();
    assert_eq!(list.len(), 1, "{list:?}");
    let digest = list[0]["manifestDigest"].as_str().unwrap().to_string();
    // The record keeps the converted manifest, under its own digest.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path(&osctl, &reference)).unwrap()).unwrap();
    let kept = record["manifest"].as_str().unwrap();
    assert_eq!(osctl_testutil::sha256_digest(kept.as_bytes()), digest);
    assert_ne!(osctl_testutil::sha256_digest(&stored), digest);
    let kept: serde_json::Value = serde_json::from_str(kept).unwrap();
    assert_eq!(
        kept["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(kept["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        read(&osctl, &reference, "usr/share/local/build"),
        "docker format\n"
    );
    // Read again: the conversion is the same, so nothing is fetched.
    let again = osctl.pull(&reference);
    assert!(again.contains("already present"), "{again}");
    assert_eq!(osctl.list()[0]["manifestDigest"], digest.as_str());
    osctl.fsck_clean();
}
