//! Helpers shared by the CLI integration tests: run the real `osctl` binary
//! on a scratch sysroot and look at what it left behind.
//!
//! The vocabulary: [`Osctl`] (a scratch sysroot; `ok`, `pull`,
//! `pull_fails`, `fsck_clean`), [`run_ok`] and [`run_fails`] for any
//! command, [`assert_fails_naming`] for the one way a command fails (exit
//! code 1, one `error:` line naming every needle), [`booted_cmd`] for a
//! simulated kernel command line, [`os_spec`] and the `push_*` helpers for
//! images. Per area: `machine` (deployments: `Images`, `Machine`, whole
//! machine states), `assess` (boot counting and health checks), `install`
//! (disks from outside), `store` (records and objects to damage), `disk`
//! (tools, loop devices, the GPT).

pub mod assess;
pub mod fleet;
pub mod install;
pub mod machine;
pub mod store;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use osctl_testutil::{Entry, ImageSpec, Layer, Registry, Tree, snapshot, write_layout};
use serde_json::Value;

/// stderr without the warnings osctl prints while a test hook
/// (`OSCTL_CMDLINE_FILE`, `OSCTL_REBOOT_COMMAND`, …) is active: the lines
/// a user would see.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("osctl: warning: test hook "))
        .collect()
}

/// Asserts that a command failed the way osctl reports an error: exit code
/// 1 (not a crash, not a usage error), exactly one line on stderr besides
/// the test-hook warnings ([`error_lines`]), starting with `error: ` and
/// containing every needle. Returns the line.
#[track_caller]
pub fn assert_fails_naming(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "must fail with exit code 1, got {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "error must be one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error should mention {n:?}: {stderr}");
    }
    lines[0].to_string()
}

/// Runs `cmd` and asserts it fails with one line naming every needle
/// ([`assert_fails_naming`]); returns the line.
#[track_caller]
pub fn run_fails(cmd: &mut Command, needles: &[&str]) -> String {
    let out = cmd.output().expect("running osctl");
    assert_fails_naming(&out, needles)
}

/// Asserts that `status` (JSON) validates against the schema committed in
/// docs/status.schema.json (generated from the status types; osctl-deploy's
/// `status_format` test keeps the two equal).
#[track_caller]
pub fn assert_valid_status(status: &Value) {
    static SCHEMA: std::sync::OnceLock<(boon::Schemas, boon::SchemaIndex)> =
        std::sync::OnceLock::new();
    let (schemas, index) = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.schema.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource("status.schema.json", doc).unwrap();
        let index = compiler
            .compile("status.schema.json", &mut schemas)
            .unwrap();
        (schemas, index)
    });
    if let Err(e) = schemas.validate(status, *index) {
        panic!("status does not validate against docs/status.schema.json:\n{e:#}\n{status:#}");
    }
}

/// The variable osctl (like podman) reads the signature policy's path from.
pub const POLICY_ENV: &str = "CONTAINERS_POLICY_JSON";

/// A signature policy that accepts any image (Debian's default), written
/// once per test binary run under the target's scratch directory: tests
/// use it instead of the host's /etc/containers/policy.json, so a host
/// with a strict policy runs them the same way.
pub fn accept_anything_policy() -> &'static Path {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("policy-accept-anything.json");
        // Another test process may write it at the same moment: a private
        // temporary file renamed over it, so no reader sees half of it.
        let tmp = dir.join(format!("policy-accept-anything.{}.tmp", std::process::id()));
        std::fs::write(&tmp, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

/// A scratch sysroot and the `osctl` binary under test.
pub struct Osctl {
    dir: tempfile::TempDir,
    /// Extra environment for every command (`Osctl::set_env`).
    env: Vec<(String, std::ffi::OsString)>,
}

impl Default for Osctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Osctl {
    pub fn new() -> Self {
        Osctl {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
        }
    }

    /// A scratch sysroot under `parent` (e.g. on a scratch filesystem).
    pub fn new_in(parent: &Path) -> Self {
        Osctl {
            dir: tempfile::tempdir_in(parent).expect("tempdir"),
            env: Vec::new(),
        }
    }

    pub fn sysroot(&self) -> &Path {
        self.dir.path()
    }

    /// `osctl --sysroot <scratch> …`, isolated from the host's auth,
    /// registries and signature policy configuration (the policy accepts
    /// anything unless the test sets `POLICY_ENV` itself).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_osctl"));
        c.arg("--sysroot").arg(self.sysroot());
        c.env("HOME", self.sysroot())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.sysroot().join("no-registries.conf"),
            )
            .env(POLICY_ENV, accept_anything_policy());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Sets `key` in the environment of every later command.
    pub fn set_env(&mut self, key: &str, value: impl Into<std::ffi::OsString>) {
        self.env.push((key.to_string(), value.into()));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running osctl")
    }

    /// Runs and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "osctl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[track_caller]
    pub fn pull(&self, reference: &str) -> String {
        self.ok(&["image", "pull", "--progress", "plain", reference])
    }

    /// `osctl image pull --authfile AUTHFILE REFERENCE`; returns stdout.
    #[track_caller]
    pub fn pull_with_authfile(&self, authfile: &Path, reference: &str) -> String {
        let authfile = authfile.to_str().expect("a UTF-8 auth file path");
        self.ok(&[
            "image",
            "pull",
            "--progress",
            "plain",
            "--authfile",
            authfile,
            reference,
        ])
    }

    pub fn list(&self) -> Vec<Value> {
        let out = self.ok(&["image", "list", "--format", "json"]);
        serde_json::from_str::<Value>(&out)
            .expect("image list JSON")
            .as_array()
            .expect("array")
            .clone()
    }

    /// The image id `image list` shows for `reference`.
    pub fn image_id(&self, reference: &str) -> String {
        self.list()
            .iter()
            .find(|i| i["reference"] == reference)
            .unwrap_or_else(|| panic!("{reference} not in image list"))["imageId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[track_caller]
    pub fn fsck_clean(&self) {
        let out = self.run(&["fsck"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(" 0 problem(s)"),
            "fsck not clean:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn store(&self) -> PathBuf {
        self.sysroot().join("sysroot/composefs")
    }

    /// Content objects in the store.
    pub fn objects(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(self.store().join("objects")) else {
            return 0;
        };
        rd.flatten()
            .map(|d| std::fs::read_dir(d.path()).map(|f| f.count()).unwrap_or(0))
            .sum()
    }

    /// Mounts `reference` and returns the mounted tree's snapshot.
    pub fn mounted_tree(&self, reference: &str) -> Tree {
        let mnt = tempfile::tempdir().unwrap();
        self.ok(&["image", "mount", reference, mnt.path().to_str().unwrap()]);
        let _guard = Unmount(mnt.path().to_path_buf());
        snapshot(mnt.path())
    }

    /// Runs a pull that must fail; asserts a one-line `error:` naming every
    /// `needle`, and that the store is exactly as it was (same image list,
    /// fsck clean). Returns the error line.
    #[track_caller]
    pub fn pull_fails(&self, args: &[&str], needles: &[&str]) -> String {
        let before = self.list();
        let mut full = vec!["image", "pull", "--progress", "none"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        // The needles must be in the error line itself, not in a warning
        // printed on the way.
        let line = assert_fails_naming(&out, needles);
        assert_eq!(
            self.list(),
            before,
            "image list changed after a failed pull"
        );
        self.fsck_clean();
        eprintln!("{line}");
        line
    }
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A small good image pushed as `<repo>:good`, so fault tests can show that
/// what was in the store before is still there after.
pub fn push_good(registry: &Registry, repo: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec::new(vec![Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/good", "still here\n"),
    ])]);
    write_layout(dir.path(), "good", &spec).unwrap();
    registry
        .push_oci_layout(dir.path(), "good", &format!("{repo}:good"))
        .unwrap();
    registry.image_ref(&format!("{repo}:good"))
}

/// Builds `spec` as a layout and pushes it; returns (reference, built image).
pub fn push_spec(
    registry: &Registry,
    repo_tag: &str,
    spec: &ImageSpec,
) -> (String, osctl_testutil::BuiltImage) {
    let dir = tempfile::tempdir().unwrap();
    let built = write_layout(dir.path(), "t", spec).unwrap();
    registry.push_oci_layout(dir.path(), "t", repo_tag).unwrap();
    (registry.image_ref(repo_tag), built)
}

/// An OS-like image: kernel + initramfs where bootc keeps them, os-release,
/// a kargs.d file, the given /etc entries, a /var seed file and a /usr
/// file that changes with `version`.
pub fn os_spec(version: &str, kargs: &[&str], etc: Vec<Entry>) -> ImageSpec {
    let kargs_toml = format!(
        "kargs = [{}]\n",
        kargs
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut base = vec![
        Entry::dir("usr"),
        Entry::dir("usr/lib"),
        Entry::file(
            "usr/lib/modules/6.12.0-osctl/vmlinuz",
            format!("kernel for {version}").repeat(50),
        ),
        Entry::file(
            "usr/lib/modules/6.12.0-osctl/initramfs.img",
            vec![b'i'; 3000],
        ),
        Entry::file(
            "usr/lib/os-release",
            format!("NAME=\"Test OS\"\nPRETTY_NAME=\"Test OS {version}\"\nVERSION_ID={version}\n"),
        ),
        Entry::file("usr/lib/bootc/kargs.d/10-test.toml", kargs_toml),
        Entry::file("usr/bin/tool", format!("#!/bin/sh\necho {version}\n")),
        Entry::dir("etc"),
        Entry::dir("var"),
        Entry::file("var/lib/seed", format!("seeded by {version}\n")),
    ];
    base.extend(etc);
    ImageSpec::new(vec![Layer::new(base)]).with_label("org.opencontainers.image.version", version)
}

/// `osctl` with a simulated kernel command line naming `booted` (or none).
pub fn booted_cmd(osctl: &Osctl, booted: Option<&str>) -> Command {
    let file = osctl.sysroot().join("cmdline");
    let line = match booted {
        Some(id) => format!("BOOT_IMAGE=/vmlinuz ro composefs={id}\n"),
        None => "BOOT_IMAGE=/vmlinuz ro\n".to_string(),
    };
    // Written beside and renamed over: an osctl of this machine that is
    // running now (a fleet agent) reads the file at any moment, and a
    // truncated one would read as "nothing booted".
    static TMP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = osctl
        .sysroot()
        .join(format!("cmdline.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, line).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let mut c = osctl.cmd();
    c.env("OSCTL_CMDLINE_FILE", &file);
    c.env("OSCTL_REBOOT_COMMAND", "true");
    c
}

/// Writes `spec` as a layout and pushes it as `repo_tag`; returns the reference.
pub fn push_tag(registry: &Registry, spec: &ImageSpec, repo_tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), "t", spec).unwrap();
    registry.push_oci_layout(dir.path(), "t", repo_tag).unwrap();
    registry.image_ref(repo_tag)
}

/// Runs `cmd`, asserts success (printing its output otherwise), returns stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running osctl");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The systemd-boot binary the image of [`bootable_os_spec`] carries
/// (not a real EFI program: install only copies it).
pub const IMAGE_SYSTEMD_BOOT: &[u8] = b"MZ systemd-boot from the test image\n";

/// An image `osctl install` accepts: [`os_spec`] plus the `/sysroot` and
/// `/boot` mount points, an `/etc/fstab`, and (with `efi`) systemd-boot at
/// `/usr/lib/systemd/boot/efi/systemd-bootx64.efi`.
pub fn bootable_os_spec(version: &str, kargs: &[&str], efi: bool) -> ImageSpec {
    let mut extra = vec![
        Entry::dir("sysroot"),
        Entry::dir("boot"),
        Entry::file(
            "etc/fstab",
            "# <file system> <mount point> <type> <options>\n",
        ),
    ];
    if efi {
        extra.push(Entry::file(
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            IMAGE_SYSTEMD_BOOT,
        ));
    }
    os_spec(version, kargs, extra)
}

/// Looking at disks from outside: tools, mtools, loop devices, the GPT.
pub mod disk {
    use std::path::Path;
    use std::process::Command;

    use serde_json::Value;

    /// Runs a tool, asserts success, returns stdout.
    #[track_caller]
    pub fn tool(cmd: &mut Command) -> Vec<u8> {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[track_caller]
    pub fn tool_text(cmd: &mut Command) -> String {
        String::from_utf8(tool(cmd)).unwrap()
    }

    /// An mtools command on the FAT filesystem `image` (`FILE@@OFFSET` or a node).
    pub fn mtools(program: &str, image: &str) -> Command {
        let mut c = Command::new(program);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .env("MTOOLSRC", "/dev/null")
            .arg("-i")
            .arg(image);
        c
    }

    #[track_caller]
    pub fn esp_file(esp: &str, path: &str) -> Vec<u8> {
        tool(mtools("mtype", esp).arg(format!("::{path}")))
    }

    /// Commands run on drop, last pushed first: unmounts, loop detaches.
    #[derive(Default)]
    pub struct Cleanup(Vec<Command>);

    impl Cleanup {
        pub fn push(&mut self, program: &str, args: &[&str]) {
            let mut c = Command::new(program);
            c.args(args);
            self.0.push(c);
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            while let Some(mut c) = self.0.pop() {
                let _ = c.output();
            }
        }
    }

    pub fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A loop device over `file` (read-only at an offset, or whole).
    pub fn attach(file: &Path, window: Option<(u64, u64)>, cleanup: &mut Cleanup) -> String {
        let mut cmd = Command::new("losetup");
        if let Some((offset, size)) = window {
            cmd.args([
                "-r",
                "-o",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
            ]);
        }
        let dev = tool_text(cmd.args(["--show", "-f"]).arg(file))
            .trim()
            .to_string();
        cleanup.push("losetup", &["-d", &dev]);
        dev
    }

    pub fn sha256(file: &Path) -> String {
        tool_text(Command::new("sha256sum").arg(file))
    }

    /// One partition as `sfdisk -J` shows it (start and size in bytes).
    #[derive(Debug)]
    pub struct Part {
        pub start: u64,
        pub size: u64,
        pub kind: String,
        pub uuid: String,
        pub name: String,
    }

    pub fn gpt(disk: &Path) -> Vec<Part> {
        let json: Value =
            serde_json::from_slice(&tool(Command::new("sfdisk").arg("-J").arg(disk))).unwrap();
        let table = &json["partitiontable"];
        assert_eq!(table["label"], "gpt");
        let sector = table["sectorsize"].as_u64().unwrap_or(512);
        table["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Part {
                start: p["start"].as_u64().unwrap() * sector,
                size: p["size"].as_u64().unwrap() * sector,
                kind: p["type"].as_str().unwrap().to_string(),
                uuid: p["uuid"].as_str().unwrap().to_lowercase(),
                name: p["name"].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }

    /// A sparse file of `size` bytes.
    pub fn sparse_file(path: &Path, size: u64) {
        std::fs::File::create(path).unwrap().set_len(size).unwrap();
    }
}
